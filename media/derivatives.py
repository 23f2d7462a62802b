"""Served copies of a photo: upright, sRGB, downscaled JPEGs that carry no metadata at all.

The original (with its EXIF, GPS included) is evidence and stays in the store untouched; what the web
and tablets display is re-encoded here. Metadata decision: derivatives carry no EXIF, XMP, comments or
ICC profile. Instead of keeping the ICC profile, pixels are converted to sRGB when the source has one,
so wide-gamut phone photos (Display P3) still look right and the served copy says nothing about the
device. JPEG has no alpha, palettes or 16-bit samples, so those are flattened on white / scaled to 8 bits.
"""

from __future__ import annotations

import io

import msgspec
from PIL import Image, ImageCms, ImageMath, ImageOps

from media.exif import read_orientation

DISPLAY_LONG_SIDE = 1600
THUMBNAIL_LONG_SIDE = 320
JPEG_QUALITY = 85

# The transposition that makes each EXIF orientation upright (what ImageOps.exif_transpose uses).
_UPRIGHT = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_SIXTEEN_BIT_GREY = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I"})


class Derivative(msgspec.Struct, frozen=True):
    """One encoded copy: JPEG bytes and their pixel size."""

    data: bytes
    width: int
    height: int

    @property
    def byte_size(self) -> int:
        return len(self.data)

    @property
    def content_type(self) -> str:
        return "image/jpeg"


def fit_size(size: tuple[int, int], long_side: int) -> tuple[int, int]:
    """``size`` scaled so its longer side is ``long_side``; never enlarged."""
    width, height = size
    scale = long_side / max(width, height)
    if scale >= 1:
        return width, height
    return max(1, round(width * scale)), max(1, round(height * scale))


def draft_for(im: Image.Image, long_side: int) -> None:
    """Let a JPEG decode at 1/2, 1/4 or 1/8 scale when that still leaves ``long_side`` pixels.

    Must run before ``load()``; formats other than JPEG ignore it. Orientation does not matter here:
    the long side is the same before and after a quarter turn.
    """
    im.draft("RGB", fit_size(im.size, long_side))


def apply_orientation(im: Image.Image) -> tuple[Image.Image, int]:
    """``im`` turned upright per its EXIF orientation, and the orientation that was applied (1 if none).

    ``ImageOps.exif_transpose`` also rewrites the EXIF block, which has crashed on malformed EXIF in some
    Pillow releases; the pixel transposition alone is safe, and the EXIF is dropped from derivatives anyway.
    """
    orientation = read_orientation(im)
    if orientation is None or orientation == 1:
        return im, 1
    try:
        return ImageOps.exif_transpose(im), orientation
    # See the docstring: fall back to transposing the pixels ourselves.
    except Exception:
        try:
            return im.transpose(_UPRIGHT[orientation]), orientation
        # Nothing more to try: leave the pixels as stored.
        except Exception:
            return im, 1


def render_copies(upright: Image.Image) -> tuple[Image.Image, Image.Image]:
    """The display copy and the thumbnail of a loaded, already oriented image, as sRGB RGB images."""
    icc_profile = upright.info.get("icc_profile")
    display = _to_srgb(_downscale(_flatten(upright), DISPLAY_LONG_SIDE), icc_profile)
    return display, _downscale(display, THUMBNAIL_LONG_SIDE)


def to_derivative(im: Image.Image) -> Derivative:
    """Encode a rendered copy (metadata-free JPEG)."""
    return Derivative(data=encode_jpeg(im), width=im.width, height=im.height)


def encode_jpeg(im: Image.Image, quality: int = JPEG_QUALITY) -> bytes:
    """JPEG bytes of an RGB image with no metadata.

    Pillow writes EXIF, XMP and ICC only when passed as arguments, none of which we pass, but it falls back
    to ``im.info`` for the comment; a copy with an empty ``info`` leaves it nothing to carry over.
    """
    bare = im.copy()
    bare.info = {}
    buffer = io.BytesIO()
    # Baseline with optimised Huffman tables: smaller than progressive here (87 vs 89 KB for a display
    # copy) and 13 ms instead of 32 ms to encode.
    bare.save(buffer, format="JPEG", quality=quality, optimize=True)
    return buffer.getvalue()


def _downscale(im: Image.Image, long_side: int) -> Image.Image:
    size = fit_size(im.size, long_side)
    if size == im.size:
        return im
    # A shrink by at most 2x (the display copy of a draft-decoded JPEG) is bilinear: a mean difference of
    # 0.6/255 from Lanczos on a 12 MP photo's 2000x1500 draft, at about 60% of bicubic's time (the single
    # dearest step of ingest after decoding).
    if size[0] * 2 >= im.width:
        return im.resize(size, Image.Resampling.BILINEAR)
    # A bigger shrink (the thumbnail, 1600 -> 320 px) box-reduces by the whole factor first and leaves
    # bicubic only the remainder: 1.2 ms here against 6 ms when it first halved (reducing_gap=2), and
    # 0.65/255 from Lanczos against 0.54.
    return im.resize(size, Image.Resampling.BICUBIC, reducing_gap=1.0)


def _flatten(im: Image.Image) -> Image.Image:
    """Pixels JPEG can hold: RGB, L or CMYK; transparency composited on white."""
    if im.mode in _SIXTEEN_BIT_GREY:
        im = _eight_bit_grey(im)
    if im.has_transparency_data:  # an alpha channel, or a PNG tRNS colour key even in RGB or L
        rgba = im.convert("RGBA")
        background = Image.new("RGB", im.size, "white")
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    if im.mode in ("RGB", "L", "CMYK"):
        return im
    return im.convert("RGB")


def _eight_bit_grey(im: Image.Image) -> Image.Image:
    """16-bit grey scaled to 8 bits (L), or LA when a tRNS colour key makes one 16-bit value transparent.

    Pillow's own conversion of these modes to RGBA clips every sample above 255 to white.
    """
    wide = im.convert("I")
    grey = wide.point(lambda value: value / 256).convert("L")
    grey.info.pop("transparency", None)  # a 16-bit sample value: it would mean nothing to 8-bit pixels
    key = im.info.get("transparency")
    if isinstance(key, int):
        opaque: Image.Image = ImageMath.lambda_eval(lambda args: (args["wide"] != key) * 255, wide=wide)
        grey.putalpha(opaque.convert("L"))
    return grey


def _to_srgb(im: Image.Image, icc_profile: object) -> Image.Image:
    """RGB pixels in sRGB: converted through the embedded profile when there is a usable one."""
    if isinstance(icc_profile, bytes) and icc_profile:
        try:
            source = ImageCms.ImageCmsProfile(io.BytesIO(icc_profile))
            # A profile per call: lcms profile handles are not documented as safe to share between threads.
            srgb = ImageCms.createProfile("sRGB")
            converted = ImageCms.profileToProfile(im, source, srgb, outputMode="RGB")
        # An untrusted profile that lcms cannot parse, or one that does not match the pixels: ignore it.
        except Exception:
            converted = None
        if converted is not None:
            return converted
    return im if im.mode == "RGB" else im.convert("RGB")
