"""The photo pipeline on real files made by Pillow: claims, upright metadata-free copies, hashes, refusals."""

from __future__ import annotations

import asyncio
import errno
import functools
import hashlib
import io
import pickle
import random
import struct
import subprocess
import sys
import textwrap
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from fractions import Fraction
from pathlib import Path
from typing import Literal

import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import ExifTags, Image, ImageCms, features
from PIL.TiffImagePlugin import IFDRational

from media import phash
from media.exif import ExifClaims
from media.formats import ImageFormat, ImageRejected
from media.pipeline import ProcessedImage, Sha256Mismatch, process_image, process_image_async
from tests.media import images

REPO_ROOT = Path(__file__).resolve().parents[2]
REJECT_CODES = {"not_an_image", "unsupported_format", "truncated", "too_many_pixels"}
LATITUDE, LONGITUDE, ALTITUDE = -33.856784, 151.215297, 42.5  # Sydney, 42.5 m above sea level


def rejection(data: bytes | Path) -> str:
    with pytest.raises(ImageRejected) as caught:
        process_image(data)
    return caught.value.code


def assert_upright(data: bytes) -> None:
    """The red mark is top-left and the blue one bottom-right, as in the upright scene."""
    im = Image.open(io.BytesIO(data)).convert("RGB")
    top_left = im.getpixel((im.width * 7 // 100, im.height * 7 // 100))
    bottom_right = im.getpixel((im.width * 93 // 100, im.height * 93 // 100))
    assert close(top_left, images.RED), top_left
    assert close(bottom_right, images.BLUE), bottom_right


def close(pixel: object, colour: tuple[int, int, int], tolerance: int = 40) -> bool:
    assert isinstance(pixel, tuple)
    return all(abs(got - want) <= tolerance for got, want in zip(pixel, colour, strict=True))


# --- a tablet photo: 12 MP, held upright (orientation 6), with GPS, time, device --------------------------


@pytest.fixture(scope="module")
def tablet_jpeg() -> bytes:
    upright = images.mark_corners(images.photo_like((3000, 4000), seed=1))
    return images.encode(
        images.stored_for_orientation_6(upright),
        "JPEG",
        quality=90,
        exif=images.evidence_exif(latitude=LATITUDE, longitude=LONGITUDE, altitude=ALTITUDE).tobytes(),
        comment=b"case 4411 visit notes",
        xmp=b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:Description>FieldTab secret</rdf:Description></x:xmpmeta>',
    )


@pytest.fixture(scope="module")
def tablet(tablet_jpeg: bytes) -> ProcessedImage:
    return process_image(tablet_jpeg)


def test_tablet_photo_claims_read_back(tablet: ProcessedImage) -> None:
    claims = tablet.exif
    assert claims.captured_at == datetime(2026, 3, 14, 9, 26, 53, tzinfo=timezone(timedelta(hours=11)))
    assert claims.captured_at.utcoffset() == timedelta(hours=11)
    assert claims.has_offset
    assert claims.latitude == pytest.approx(LATITUDE, abs=1e-6)
    assert claims.longitude == pytest.approx(LONGITUDE, abs=1e-6)
    assert claims.altitude == pytest.approx(ALTITUDE)
    assert (claims.make, claims.model, claims.software) == ("Acme", "FieldTab 9", "FieldCam 2.1")
    assert claims.orientation == 6


def test_tablet_photo_identity_and_upright_size(tablet: ProcessedImage, tablet_jpeg: bytes) -> None:
    assert tablet.sha256 == hashlib.sha256(tablet_jpeg).hexdigest()
    assert tablet.format is ImageFormat.JPEG
    assert (tablet.width, tablet.height) == (3000, 4000)  # stored 4000x3000, displayed portrait
    assert tablet.dhash_hex == phash.to_hex(tablet.dhash)
    assert len(tablet.dhash_hex) == 16


def test_derivatives_are_upright_jpegs_with_the_right_long_side(tablet: ProcessedImage) -> None:
    for derivative, size in ((tablet.display, (1200, 1600)), (tablet.thumbnail, (240, 320))):
        im = Image.open(io.BytesIO(derivative.data))
        assert im.format == "JPEG"
        assert im.size == size == (derivative.width, derivative.height)
        assert derivative.byte_size == len(derivative.data)
        assert derivative.content_type == "image/jpeg"
        assert_upright(derivative.data)


@pytest.mark.parametrize("name", ["display", "thumbnail"])
def test_derivatives_carry_no_metadata(tablet: ProcessedImage, name: str) -> None:
    data = getattr(tablet, name).data
    im = Image.open(io.BytesIO(data))
    exif = im.getexif()
    assert len(exif) == 0
    assert exif.get_ifd(ExifTags.IFD.GPSInfo) == {}
    assert not {"exif", "xmp", "icc_profile", "comment"} & im.info.keys()
    for trace in (b"Exif\x00\x00", b"Acme", b"FieldTab", b"case 4411", b"xmpmeta"):
        assert trace not in data


def test_a_lower_pixel_limit_applies(tablet_jpeg: bytes) -> None:
    with pytest.raises(ImageRejected) as caught:
        process_image(tablet_jpeg, max_pixels=10_000_000)
    assert caught.value.code == "too_many_pixels"


def test_max_pixels_cannot_exceed_pillows_own_limit(tablet_jpeg: bytes) -> None:
    assert Image.MAX_IMAGE_PIXELS is not None
    with pytest.raises(ValueError, match="max_pixels"):
        process_image(tablet_jpeg, max_pixels=Image.MAX_IMAGE_PIXELS + 1)


# --- every accepted format, every orientation --------------------------------------------------------------


def small_scene() -> Image.Image:
    return images.mark_corners(Image.new("RGB", (160, 120), (128, 128, 128)))


@pytest.mark.parametrize(
    ("pillow_format", "expected", "params"),
    [
        ("JPEG", ImageFormat.JPEG, {"quality": 90}),
        ("PNG", ImageFormat.PNG, {}),
        ("WEBP", ImageFormat.WEBP, {"quality": 90}),
        ("HEIF", ImageFormat.HEIF, {"quality": 90}),  # tiny on purpose: HEIC encoding is slow
    ],
)
def test_each_accepted_format_comes_out_upright_as_jpeg(
    pillow_format: str, expected: ImageFormat, params: dict[str, int]
) -> None:
    exif = images.evidence_exif(latitude=LATITUDE, longitude=LONGITUDE, altitude=ALTITUDE).tobytes()
    data = images.encode(images.stored_for_orientation_6(small_scene()), pillow_format, exif=exif, **params)
    result = process_image(data)
    assert result.format is expected
    assert (result.width, result.height) == (160, 120)
    assert result.exif.orientation == 6  # pillow-heif applies it while decoding; the claim is kept
    assert result.exif.latitude == pytest.approx(LATITUDE, abs=1e-6)
    for derivative in (result.display, result.thumbnail):
        assert derivative.data.startswith(b"\xff\xd8\xff")
        assert (derivative.width, derivative.height) == (160, 120)  # never upscaled
        assert_upright(derivative.data)


# For each orientation, the transposition that stores an upright scene the way a camera would.
STORE_FOR = {
    1: None,
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_90,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_270,
}


@pytest.mark.parametrize("orientation", sorted(STORE_FOR))
def test_every_orientation_is_applied(orientation: int) -> None:
    method = STORE_FOR[orientation]
    stored = small_scene() if method is None else small_scene().transpose(method)
    exif = images.evidence_exif(orientation=orientation).tobytes()
    result = process_image(images.encode(stored, "JPEG", quality=90, exif=exif))
    assert (result.width, result.height) == (160, 120)
    assert result.exif.orientation == orientation
    assert_upright(result.display.data)


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "LA", "P", "L", "1", "I;16"])
def test_png_pixel_modes_become_rgb(mode: str) -> None:
    scene = small_scene()
    if mode == "I;16":
        source = scene.convert("L").convert("I").point(lambda value: value * 257).convert("I;16")
    else:
        source = scene.convert(mode)
    if "A" in mode:
        alpha = Image.new("L", scene.size, 255)
        alpha.paste(0, (0, 60, 160, 120))  # bottom half fully transparent
        source.putalpha(alpha)
    display = Image.open(io.BytesIO(process_image(images.encode(source, "PNG")).display.data))
    assert display.mode == "RGB"
    assert display.size == (160, 120)
    top_left = display.getpixel((10, 10))
    if mode in ("L", "LA", "1", "I;16"):
        assert isinstance(top_left, tuple)
        assert max(top_left) - min(top_left) <= 4  # grey stays grey
        if mode == "I;16":
            assert 30 < top_left[0] < 120  # 16-bit samples scaled down, not clipped to white
    else:
        assert close(top_left, images.RED)
    if "A" in mode:
        assert close(display.getpixel((80, 110)), (255, 255, 255), tolerance=8)  # transparency on white


@pytest.mark.parametrize("mode", ["RGB", "I;16"])
def test_png_colour_key_transparency_is_flattened_on_white(mode: str) -> None:
    scene = small_scene()
    if mode == "I;16":  # 16-bit grey: the key is a 16-bit sample value
        source = scene.convert("L").convert("I").point(lambda value: value * 257).convert("I;16")
        data = images.encode(source, "PNG", transparency=128 * 257)  # the grey background
        red = scene.convert("L").getpixel((10, 10))
        assert isinstance(red, int)
        marked: tuple[int, int, int] = (red, red, red)
    else:
        data = images.encode(scene, "PNG", transparency=(128, 128, 128))  # the grey background
        marked = images.RED
    display = Image.open(io.BytesIO(process_image(data).display.data))
    assert close(display.getpixel((80, 60)), (255, 255, 255), tolerance=8)
    assert close(display.getpixel((10, 10)), marked, tolerance=8)


@pytest.mark.parametrize("icc_profile", ["srgb", "garbage"])
def test_icc_profile_is_converted_away(icc_profile: str) -> None:
    profile = (
        ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
        if icc_profile == "srgb"
        else b"not an ICC profile at all"
    )
    im = Image.new("RGB", (80, 60), (200, 100, 50))
    result = process_image(images.encode(im, "JPEG", quality=95, icc_profile=profile))
    display = Image.open(io.BytesIO(result.display.data))
    assert "icc_profile" not in display.info
    assert close(display.getpixel((40, 30)), (200, 100, 50), tolerance=6)


# --- refusals ---------------------------------------------------------------------------------------------


@functools.cache
def png_bomb(width: int, height: int) -> bytes:
    return images.png_bomb(width, height)


@pytest.mark.parametrize("warning_filter", ["ignore", "error"])
@pytest.mark.parametrize(
    ("width", "height"),
    [(8000, 7000), (10_000, 10_000), (20_000, 20_000)],
    ids=["over-our-limit", "over-pillow-warning", "over-pillow-error"],
)
def test_pixel_bombs_are_refused_before_decoding(
    width: int, height: int, warning_filter: Literal["ignore", "error"]
) -> None:
    bomb = png_bomb(width, height)
    assert len(bomb) < 100_000
    with warnings.catch_warnings():
        # Pillow warns at open between its limit and twice it; as an error it must give the same answer.
        warnings.simplefilter(warning_filter, Image.DecompressionBombWarning)
        started = time.perf_counter()
        code = rejection(bomb)
        elapsed = time.perf_counter() - started
    assert code == "too_many_pixels"
    assert elapsed < 0.2, f"{elapsed:.3f} s: the pixels were decoded"


@pytest.mark.parametrize(
    "coded", [(8000, 7000), (64, 0xA900_0040)], ids=["over-our-limit", "over-libheifs-own-limit"]
)
def test_a_small_heic_crop_of_a_huge_coded_image_is_refused_before_decoding(coded: tuple[int, int]) -> None:
    # 48x40 is coded as 64x64 and cropped by a clap property: pillow-heif reports the size after the crop,
    # libheif allocates the coded size (ispe) first. Past libheif's own limit it raised RuntimeError (a 500).
    heic = images.encode(images.photo_like((48, 40), seed=5), "HEIF", quality=30)
    at = heic.index(b"ispe") + 8  # after the box type, version and flags
    assert struct.unpack(">II", heic[at : at + 8]) == (64, 64)
    bomb = heic[:at] + struct.pack(">II", *coded) + heic[at + 8 :]
    assert Image.open(io.BytesIO(bomb)).size == (48, 40)
    assert rejection(bomb) == "too_many_pixels"


def test_refusing_bombs_does_not_allocate_their_pixels(tmp_path: Path) -> None:
    """In a fresh process, so the peak-memory figure belongs to this check alone."""
    paths = []
    for width, height in ((8000, 7000), (20_000, 20_000)):
        path = tmp_path / f"bomb-{width}.png"
        path.write_bytes(png_bomb(width, height))
        paths.append(str(path))
    script = textwrap.dedent(
        """
        import resource, sys, warnings
        from pathlib import Path
        from media.formats import ImageRejected
        from media.pipeline import process_image
        warnings.simplefilter("ignore")
        peak = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        for name in sys.argv[1:]:
            data = Path(name).read_bytes()
            before = peak()
            try:
                process_image(data)
            except ImageRejected as exc:
                print(exc.code, peak() - before)
        """
    )
    run = subprocess.run(
        [sys.executable, "-c", script, *paths],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    lines = run.stdout.splitlines()
    assert len(lines) == 2, run.stdout + run.stderr
    for line in lines:
        code, grown_kib = line.split()
        assert code == "too_many_pixels"
        assert int(grown_kib) < 16 * 1024  # decoding would take 56 MB and 400 MB


def small_files() -> dict[str, bytes]:
    scene = images.photo_like((160, 120), seed=5)
    return {
        "JPEG": images.encode(scene, "JPEG", quality=90),
        "PNG": images.encode(scene, "PNG"),
        "WEBP": images.encode(scene, "WEBP", quality=90),
        "HEIF": images.encode(scene, "HEIF", quality=50),
    }


SMALL_FILES = small_files()


@pytest.mark.parametrize("keep", [0.5, 0.9])
@pytest.mark.parametrize("pillow_format", sorted(SMALL_FILES))
def test_truncated_files(pillow_format: str, keep: float) -> None:
    data = SMALL_FILES[pillow_format]
    assert rejection(data[: int(len(data) * keep)]) == "truncated"


def scan_starts(data: bytes) -> list[int]:
    """Where each scan header of a Pillow-made JPEG starts (its markers cannot occur inside scan data)."""
    return [i for i in range(len(data) - 1) if data[i : i + 2] == b"\xff\xda"]


CAMERA_SIZED = images.photo_like((1200, 900), seed=8)


@pytest.mark.parametrize("keep", [0.05, 0.3, 0.6, 0.95, 0.9999])
def test_a_baseline_jpeg_cut_short_and_given_an_end_marker_is_truncated(keep: float) -> None:
    data = images.encode(CAMERA_SIZED, "JPEG", quality=90)
    process_image(data)  # whole, it passes
    assert rejection(data[: int(len(data) * keep)] + b"\xff\xd9") == "truncated"


@pytest.mark.parametrize("where", ["first scan", "middle scan", "before the last scan"])
def test_a_progressive_jpeg_cut_before_its_last_scan_and_given_an_end_marker_is_truncated(
    where: str,
) -> None:
    data = images.encode(CAMERA_SIZED, "JPEG", quality=90, progressive=True)
    process_image(data)
    starts = scan_starts(data)
    assert len(starts) > 3
    scan = {"first scan": 0, "middle scan": len(starts) // 2, "before the last scan": len(starts) - 2}[where]
    cut = (starts[scan] + starts[scan + 1]) // 2
    assert rejection(data[:cut] + b"\xff\xd9") == "truncated"


def test_whole_jpegs_pass_with_restart_markers_or_bytes_after_their_end() -> None:
    """What cameras also write: restart markers in the scan, a trailer after the end-of-image marker."""
    with_restarts = images.encode(CAMERA_SIZED, "JPEG", quality=90, restart_marker_rows=1)
    assert b"\xff\xd0" in with_restarts
    process_image(with_restarts)
    assert rejection(with_restarts[: len(with_restarts) // 2] + b"\xff\xd9") == "truncated"
    process_image(images.encode(CAMERA_SIZED, "JPEG", quality=90) + b"trailer\x00" * 20)


def test_jpeg_cut_inside_its_header_is_truncated() -> None:
    assert rejection(SMALL_FILES["JPEG"][:200]) == "truncated"


def test_random_bytes_named_jpg_are_not_an_image(tmp_path: Path) -> None:
    path = tmp_path / "IMG_0001.jpg"
    path.write_bytes(random.Random(3).randbytes(50_000))
    assert rejection(path) == "not_an_image"


MINIMAL_PDF = (
    b"%PDF-1.4\n1 0 obj << /Type /Catalog /Pages 2 0 R >> endobj\n"
    b"2 0 obj << /Type /Pages /Kids [] /Count 0 >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n"
)


@pytest.mark.parametrize(
    "data",
    [MINIMAL_PDF, b"", b"hello, this is text\n", b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom"],
    ids=["pdf", "empty", "text", "mp4-video"],
)
def test_documents_and_other_files_are_not_an_image(data: bytes) -> None:
    # A PDF is a document rather than an image format we happen to refuse: see media/formats.py.
    assert rejection(data) == "not_an_image"


OTHER_FORMATS = [
    "GIF",
    "BMP",
    "TIFF",
    "ICO",
    pytest.param(
        "AVIF", marks=pytest.mark.skipif(not features.check("avif"), reason="Pillow built without AVIF")
    ),
    pytest.param(
        "JPEG2000",
        marks=pytest.mark.skipif(not features.check("jpg_2000"), reason="Pillow built without JPEG 2000"),
    ),
]


@pytest.mark.parametrize("pillow_format", OTHER_FORMATS)
def test_other_image_formats_are_unsupported(pillow_format: str) -> None:
    assert (
        rejection(images.encode(images.photo_like((64, 48), seed=2), pillow_format)) == "unsupported_format"
    )


def test_svg_is_an_unsupported_format() -> None:
    svg = b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"/>'
    assert rejection(svg) == "unsupported_format"


@given(data=st.data())
@pytest.mark.parametrize("pillow_format", sorted(SMALL_FILES))
def test_damaged_files_are_processed_or_rejected_never_crash(pillow_format: str, data: st.DataObject) -> None:
    original = SMALL_FILES[pillow_format]
    damaged = bytearray(original[: data.draw(st.integers(0, len(original)), label="keep")])
    for offset, value in data.draw(
        st.lists(st.tuples(st.integers(0, len(original)), st.integers(0, 255))), "flips"
    ):
        if offset < len(damaged):
            damaged[offset] = value
    try:
        result = process_image(bytes(damaged))
    except ImageRejected as exc:
        assert exc.code in REJECT_CODES
    else:
        assert result.display.data.startswith(b"\xff\xd8\xff")


# --- malformed EXIF ---------------------------------------------------------------------------------------


def test_exif_that_crashes_exif_transpose_still_comes_out_upright() -> None:
    # Orientation 6 plus XResolution stored as text: Pillow 13's exif_transpose raises TypeError when it
    # re-serialises this block. The pipeline falls back to its own transposition.
    exif = images.raw_exif([(0x0112, 3, 1, b"\x00\x06"), (0x011A, 2, 4, b"abc\x00")])
    stored = images.stored_for_orientation_6(small_scene())
    result = process_image(images.encode(stored, "JPEG", quality=90, exif=exif))
    assert result.exif == ExifClaims(orientation=6)
    assert (result.width, result.height) == (160, 120)
    assert_upright(result.display.data)


@pytest.mark.filterwarnings("ignore:Corrupt EXIF data")
def test_garbage_exif_gives_empty_claims() -> None:
    exif = b"Exif\x00\x00MM\x00*\x00\x00\x00\x08" + random.Random(4).randbytes(200)
    result = process_image(images.encode(small_scene(), "JPEG", exif=exif))
    assert result.exif.captured_at is None
    assert result.exif.latitude is None
    assert_upright(result.display.data)


def test_implausible_exif_values_are_dropped() -> None:
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = 9
    exif[ExifTags.Base.Make] = "  Acme\x00\x00"
    exif[ExifTags.IFD.Exif] = {
        ExifTags.Base.DateTimeOriginal: "0000:00:00 00:00:00",
        ExifTags.Base.OffsetTimeOriginal: "+08:00",
    }
    exif[ExifTags.IFD.GPSInfo] = {
        ExifTags.GPS.GPSLatitudeRef: "N",
        ExifTags.GPS.GPSLatitude: (IFDRational(1, 0), IFDRational(0, 1), IFDRational(0, 1)),
        ExifTags.GPS.GPSLongitudeRef: "E",
        ExifTags.GPS.GPSLongitude: (Fraction(10), Fraction(0), Fraction(0)),
        ExifTags.GPS.GPSAltitude: Fraction(5),
    }
    result = process_image(images.encode(small_scene(), "JPEG", exif=exif.tobytes()))
    assert result.exif == ExifClaims(make="Acme")


@pytest.mark.parametrize(
    ("latitude", "longitude", "altitude"),
    [(48.8584, -2.2945, 35.0), (-1.5, 36.8, -12.0)],
    ids=["north-west", "south-east-below-sea-level"],
)
def test_hemispheres_and_capture_time_without_offset(
    latitude: float, longitude: float, altitude: float
) -> None:
    exif = images.evidence_exif(
        latitude=latitude, longitude=longitude, altitude=altitude, orientation=1, offset=None
    )
    claims = process_image(images.encode(small_scene(), "JPEG", exif=exif.tobytes())).exif
    assert claims.latitude == pytest.approx(latitude, abs=1e-6)
    assert claims.longitude == pytest.approx(longitude, abs=1e-6)
    assert claims.altitude == pytest.approx(altitude)
    assert claims.captured_at == datetime(2026, 3, 14, 9, 26, 53)
    assert claims.captured_at.tzinfo is None
    assert not claims.has_offset


def test_coordinates_without_hemisphere_are_dropped() -> None:
    exif = images.evidence_exif(orientation=1)
    gps = exif[ExifTags.IFD.GPSInfo]
    exif[ExifTags.IFD.GPSInfo] = {
        tag: value for tag, value in gps.items() if tag != ExifTags.GPS.GPSLongitudeRef
    }
    claims = process_image(images.encode(small_scene(), "JPEG", exif=exif.tobytes())).exif
    assert (claims.latitude, claims.longitude, claims.altitude) == (None, None, None)


# --- perceptual hash --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def scene() -> Image.Image:
    return images.photo_like((1024, 768), seed=7)


def dhash_of(im: Image.Image, **params: object) -> int:
    return process_image(images.encode(im, "JPEG", **params)).dhash


def test_reencoding_barely_changes_the_hash(scene: Image.Image) -> None:
    assert phash.hamming(dhash_of(scene, quality=95), dhash_of(scene, quality=60)) <= 4


def test_a_ten_percent_crop_stays_close(scene: Image.Image) -> None:
    # 10% of the area trimmed evenly from the edges (each side keeps 94.9%). dHash is crop-sensitive: on
    # these synthetic scenes this measured 1-11 over 12 seeds, while trimming 5% from every edge (19% of
    # the area) measured 5-17, so that larger crop is not held to this bound.
    keep = 0.9**0.5
    left, top = round(scene.width * (1 - keep) / 2), round(scene.height * (1 - keep) / 2)
    cropped = scene.crop((left, top, scene.width - left, scene.height - top))
    assert phash.hamming(dhash_of(scene, quality=90), dhash_of(cropped, quality=90)) <= 12


def test_a_different_photo_is_far(scene: Image.Image) -> None:
    other = images.photo_like((1024, 768), seed=8)
    assert phash.hamming(dhash_of(scene, quality=90), dhash_of(other, quality=90)) > 20


def test_hash_is_taken_after_orientation(scene: Image.Image) -> None:
    stored = images.stored_for_orientation_6(scene)
    upright = dhash_of(scene, quality=90)
    tagged = dhash_of(stored, quality=90, exif=images.evidence_exif(orientation=6).tobytes())
    untagged = dhash_of(stored, quality=90)
    assert phash.hamming(upright, tagged) <= 2
    assert phash.hamming(upright, untagged) > 20


def test_dhash_opened_agrees_with_the_pipeline(scene: Image.Image) -> None:
    stored = images.stored_for_orientation_6(scene)
    data = images.encode(stored, "JPEG", quality=90, exif=images.evidence_exif(orientation=6).tobytes())
    assert phash.hamming(phash.dhash_opened(Image.open(io.BytesIO(data))), process_image(data).dhash) <= 2


def test_hash_text_form() -> None:
    assert phash.to_hex(0) == "0" * 16
    assert phash.from_hex(phash.to_hex(2**64 - 1)) == 2**64 - 1
    assert phash.hamming("00000000000000ff", 0) == 8
    with pytest.raises(ValueError, match="64-bit"):
        phash.to_hex(2**64)
    with pytest.raises(ValueError, match="16 hex digits"):
        phash.from_hex("abc")


# --- running it from async code and across processes ------------------------------------------------------


def test_async_variant_runs_in_the_given_executor() -> None:
    data = SMALL_FILES["JPEG"]
    with ThreadPoolExecutor(max_workers=1) as pool:
        result = asyncio.run(process_image_async(data, executor=pool))
        with pytest.raises(ImageRejected) as caught:
            asyncio.run(process_image_async(MINIMAL_PDF, executor=pool))
    assert result == process_image(data)
    assert caught.value.code == "not_an_image"


def test_concurrent_calls_give_the_same_results_as_sequential_ones() -> None:
    jobs = [SMALL_FILES[name] for name in ("JPEG", "PNG", "WEBP", "HEIF")] * 3
    with ThreadPoolExecutor(max_workers=4) as pool:
        concurrent = list(pool.map(process_image, jobs))
    assert concurrent == [process_image(data) for data in jobs]


def test_results_and_rejections_pickle_for_a_process_pool() -> None:
    result = process_image(SMALL_FILES["PNG"])
    assert pickle.loads(pickle.dumps(result)) == result
    error = pickle.loads(pickle.dumps(ImageRejected("truncated", "cut short")))
    assert (error.code, error.message, str(error)) == ("truncated", "cut short", "truncated: cut short")


def test_a_file_that_is_not_the_announced_one_is_refused_before_it_is_parsed(
    tablet_jpeg: bytes, tmp_path: Path
) -> None:
    path = tmp_path / "upload"
    path.write_bytes(tablet_jpeg)
    right = hashlib.sha256(tablet_jpeg).hexdigest()
    assert process_image(path, expected_sha256=right).sha256 == right
    with pytest.raises(Sha256Mismatch) as wrong:
        process_image(path, expected_sha256="0" * 64)
    assert wrong.value.actual == right
    path.write_bytes(b"%PDF-1.7 not announced, and not an image either")
    with pytest.raises(Sha256Mismatch):  # not "unsupported_format": the file was never looked at
        process_image(path, expected_sha256=right)


class _FailingDisk(io.BytesIO):
    """A file whose second half cannot be read (EIO, as from a dying disk). Hashing reads it through
    ``getbuffer`` and succeeds, so the failure comes while Pillow parses or decodes it."""

    def read(self, size: int | None = -1) -> bytes:
        end = len(self.getbuffer()) if size is None or size < 0 else self.tell() + size
        if end > len(self.getbuffer()) // 2:
            raise OSError(errno.EIO, "Input/output error")
        return super().read(size)


@pytest.mark.parametrize("pillow_format", sorted(SMALL_FILES))
def test_a_read_error_is_not_reported_as_a_damaged_photo(pillow_format: str) -> None:
    """A failing disk on our side raises its own OSError: refusing the photo as truncated would have the
    server discard a good upload."""
    data = SMALL_FILES[pillow_format]
    assert process_image(io.BytesIO(data)).sha256 == hashlib.sha256(data).hexdigest()
    with pytest.raises(OSError) as caught:
        process_image(_FailingDisk(data))
    assert caught.value.errno == errno.EIO
    assert not isinstance(caught.value, ImageRejected)
