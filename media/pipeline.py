"""Ingest one uploaded photo: check it, read its claims, hash it and make the served JPEG copies.

``process_image`` is synchronous and CPU-bound (Pillow releases the GIL while decoding, resizing and
encoding); the server runs it in its own bounded pool through ``process_image_async``.

Pixel limit: checked from the header, right after ``Image.open`` and before any pixel is decoded.
``Image.MAX_IMAGE_PIXELS`` is left alone (it is process-global and other threads use Pillow too).
Pillow's own check still runs inside ``Image.open``: above that limit it warns, above twice it raises.
Both are reported as ``too_many_pixels``; since ``max_pixels`` may not exceed Pillow's limit, any image
Pillow warns about is one we refuse, so the warning is in effect an error. (Filtering the warning with
``warnings.catch_warnings`` is not thread-safe on Python 3.11, hence this arrangement.)
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import io
import struct
from collections.abc import Iterator
from concurrent.futures import Executor
from pathlib import Path
from typing import BinaryIO, cast

import msgspec
from PIL import Image

from media import phash
from media.derivatives import (
    DISPLAY_LONG_SIDE,
    Derivative,
    apply_orientation,
    draft_for,
    render_copies,
    to_derivative,
)
from media.exif import ExifClaims, read_exif_claims
from media.formats import SNIFF_BYTES, ImageFormat, ImageRejected, detect_format
from media.jpeg_integrity import EndWithheld, check_scans

DEFAULT_MAX_PIXELS = 50_000_000  # 8 K x 6 K; tablet and phone cameras stay well under it

_QUARTER_TURNS = frozenset({5, 6, 7, 8})  # orientations that swap width and height
# What a damaged or cut-short file raises while Pillow or pillow-heif parses or decodes it (seen when
# fuzzing: OSError incl. UnidentifiedImageError, EOFError, ValueError; SyntaxError and struct.error are
# Pillow's own "bad file" signals).
_DECODE_ERRORS = (OSError, SyntaxError, EOFError, ValueError, struct.error)


class ProcessedImage(msgspec.Struct, frozen=True):
    """Everything ingest learns about one photo. ``width``/``height`` are of the original, upright."""

    sha256: str
    format: ImageFormat
    width: int
    height: int
    exif: ExifClaims
    dhash: int
    dhash_hex: str
    display: Derivative
    thumbnail: Derivative


class Sha256Mismatch(Exception):
    """The file is not the one announced: its SHA-256 is ``actual``."""

    def __init__(self, actual: str) -> None:
        super().__init__(actual)
        self.actual = actual


def process_image(
    data: bytes | Path | io.BufferedIOBase,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    expected_sha256: str | None = None,
) -> ProcessedImage:
    """Validate and process one photo (bytes, a file, or an open binary file read from its start).

    Raises ImageRejected, or Sha256Mismatch (before anything parses the file) when it is not the
    ``expected_sha256``. A file that cannot be read raises OSError, never ImageRejected: a failing disk
    on our side must not get a good photo refused and its upload discarded.
    """
    _check_limit(max_pixels)
    if isinstance(data, bytes):
        return _process(io.BytesIO(data), max_pixels, expected_sha256)
    if isinstance(data, io.BufferedIOBase):
        return _process(data, max_pixels, expected_sha256)
    with data.open("rb") as file:  # read as decoded, never whole: a 12 MP photo is 3 MB more per worker
        return _process(file, max_pixels, expected_sha256)


def _process(file: io.BufferedIOBase, max_pixels: int, expected_sha256: str | None) -> ProcessedImage:
    sha256 = hashlib.file_digest(file, "sha256").hexdigest()
    if expected_sha256 is not None and sha256 != expected_sha256:
        raise Sha256Mismatch(sha256)
    file.seek(0)
    image_format = detect_format(file.read(SNIFF_BYTES))
    if image_format is ImageFormat.HEIF:
        for coded_size in _heif_coded_sizes(file):
            _check_pixels(coded_size, max_pixels)
    file.seek(0)
    source = _ReadErrors(file)
    reader = EndWithheld(cast(BinaryIO, source))
    with source.blamed(), _open(cast(BinaryIO, reader), image_format) as im:
        _check_pixels(im.size, max_pixels)
        stored_size = im.size
        draft_for(im, DISPLAY_LONG_SIDE)  # decode no more than the display copy needs
        if image_format is ImageFormat.JPEG:  # libjpeg decodes a cut file ending in EOI without an error
            check_scans(reader)
        _decode(im)
        claims = read_exif_claims(im)
        upright, orientation = apply_orientation(im)
        display, thumbnail = render_copies(upright)
    # Hashing the 320 px copy costs nothing and matches hashing the full image within a bit or two.
    dhash = phash.dhash(thumbnail)
    width, height = stored_size
    if orientation in _QUARTER_TURNS:
        width, height = height, width
    return ProcessedImage(
        sha256=sha256,
        format=image_format,
        width=width,
        height=height,
        exif=claims,
        dhash=dhash,
        dhash_hex=phash.to_hex(dhash),
        display=to_derivative(display),
        thumbnail=to_derivative(thumbnail),
    )


async def process_image_async(
    data: bytes | Path, *, executor: Executor, max_pixels: int = DEFAULT_MAX_PIXELS
) -> ProcessedImage:
    """``process_image`` in ``executor`` (a thread or process pool), awaited from the asyncio event loop."""
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(executor, functools.partial(process_image, data, max_pixels=max_pixels))


class _ReadErrors:
    """The file as Pillow reads it, noting any error of the read itself.

    Pillow lets a read's OSError through from its decoders, and an OSError is also how it says a file is
    damaged, so ``_open`` and ``_decode`` would report a failing disk as a truncated photo. ``blamed``
    puts the blame back where it belongs: the read's own error is raised instead of the refusal.
    """

    def __init__(self, file: io.BufferedIOBase) -> None:
        self._file = file
        self._error: OSError | None = None

    def read(self, size: int | None = -1) -> bytes:
        try:
            return self._file.read(size)
        except OSError as exc:
            self._error = exc
            raise

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        return self._file.seek(offset, whence)

    def tell(self) -> int:
        return self._file.tell()

    @contextlib.contextmanager
    def blamed(self) -> Iterator[None]:
        try:
            yield
        except ImageRejected as exc:
            if self._error is not None:
                raise self._error from exc
            raise


def _check_limit(max_pixels: int) -> None:
    pillow_limit = Image.MAX_IMAGE_PIXELS
    if max_pixels < 1 or (pillow_limit is not None and max_pixels > pillow_limit):
        raise ValueError(f"max_pixels must be between 1 and Image.MAX_IMAGE_PIXELS ({pillow_limit})")


def _open(file: BinaryIO, image_format: ImageFormat) -> Image.Image:
    """Open (header only) with just the plugin for the sniffed format, so no other parser sees the bytes."""
    try:
        return Image.open(file, formats=[image_format.pillow_name])
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageRejected("too_many_pixels", "the image has too many pixels") from exc
    except _DECODE_ERRORS as exc:
        # The signature matched, so this is a cut-short or damaged file rather than a different format.
        raise ImageRejected(
            "truncated", f"the {image_format.pillow_name} header is incomplete or damaged"
        ) from exc


def _check_pixels(size: tuple[int, int], max_pixels: int) -> None:
    width, height = size
    if width * height > max_pixels:
        raise ImageRejected(
            "too_many_pixels", f"{width}x{height} is {width * height} pixels; the limit is {max_pixels}"
        )


def _decode(im: Image.Image) -> None:
    try:
        im.load()
    except _DECODE_ERRORS as exc:
        raise ImageRejected("truncated", "the image data ends early or is damaged") from exc


# ISO-BMFF boxes that lead to the item properties, and the bytes of FullBox header each has after its own.
_HEIF_PATH = {b"meta": 4, b"iprp": 0, b"ipco": 0}


def _heif_coded_sizes(file: io.BufferedIOBase) -> list[tuple[int, int]]:
    """Width and height of every image item of a HEIF file as coded (its ``ispe`` properties).

    The size pillow-heif reports is the primary image's after its crop (``clap``), but libheif decodes the
    whole coded image (every tile of a grid) before cropping it: a tiny crop of a huge image would pass a
    check of the reported size alone. A malformed box ends the walk; opening the file judges it.
    """
    end = file.seek(0, io.SEEK_END)
    sizes: list[tuple[int, int]] = []
    pending = [(0, end, 0)]
    while pending:
        position, stop, depth = pending.pop()
        while position + 8 <= stop:
            file.seek(position)
            header = file.read(16)
            if len(header) < 8:
                break
            box_size, kind = struct.unpack(">I4s", header[:8])
            head = 8
            if box_size == 1 and len(header) == 16:
                box_size, head = struct.unpack(">Q", header[8:16])[0], 16
            elif box_size == 0:
                box_size = stop - position
            if box_size < head or position + box_size > stop:
                break
            if kind in _HEIF_PATH and depth < len(_HEIF_PATH):
                pending.append((position + head + _HEIF_PATH[kind], position + box_size, depth + 1))
                if depth == 0:
                    break  # a file has one meta box: what follows it (the image data) is not walked
            elif kind == b"ispe" and box_size >= head + 12:
                file.seek(position + head + 4)  # after version and flags
                width, height = struct.unpack(">II", file.read(8))
                sizes.append((width, height))
            position += box_size
    return sizes
