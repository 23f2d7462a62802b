"""Telling a JPEG cut short from a whole one when the cut file still ends with an end-of-image marker.

libjpeg decodes such a file without an error: where the entropy-coded data stops, it hits the marker,
leaves every further block at zero (uniform grey in a sequential scan) and only warns; Pillow silences
the warning and keeps no count that Python could read. Neither check below decodes anything twice:

- **A single-scan (sequential) file**, what cameras write: the decoder reads the file through
  ``EndWithheld``, which shows its final end-of-image marker as zero bytes. A whole file's scan data is
  complete before them (the decoder only prefetches a few of them and then finds all its rows done,
  which Pillow accepts); a cut file's scan runs on into them and out of data with rows still to decode,
  and Pillow reports the file as truncated, as it does for a file cut without a marker.
- **A progressive (or otherwise multi-scan) file** must see its end-of-image marker before it outputs
  anything, so it is read as it is; its scan headers, found by walking the file's markers, must bring
  every coefficient of every component to full precision. A file cut before its last scan does not.
  One cut inside its last scan still passes: that scan only refines coefficients already there, so every
  pixel is present, at slightly lower fidelity after the cut (docs/uploads.md).
"""

from __future__ import annotations

import io
import re
import struct
from collections.abc import Iterator
from typing import BinaryIO

from media.formats import ImageRejected

_EOI_BYTES = b"\xff\xd9"
_PADDING = 64  # zero bytes in its place: more than libjpeg's bit buffer ever reads ahead (57 bits)
_CHUNK = 256 << 10
# A marker in entropy-coded data: 0xFF followed by neither a stuffed zero, a restart marker nor more fill.
_MARKER = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")
_SOS, _EOI = 0xDA, 0xD9
_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}  # frame headers; C4 DHT, C8 JPG, CC DAC
_HUFFMAN_DCT = frozenset({0xC0, 0xC1, 0xC2})  # baseline, extended, progressive: what the checks know
_STANDALONE = frozenset({0x01, *range(0xD0, 0xD8)})  # TEM and RSTn: no length follows
_ALL_COEFFICIENTS = frozenset(range(64))


class EndWithheld:
    """A file as the JPEG decoder reads it: after ``withhold_end()``, its final end-of-image marker reads
    as ``_PADDING`` zero bytes. Before that (while Pillow reads the headers) it is the file as it is."""

    def __init__(self, file: BinaryIO) -> None:
        self._file = file
        self._end: int | None = None  # where the withheld marker began
        self._position = 0

    def withhold_end(self) -> None:
        position = self._file.tell()
        size = self._file.seek(0, io.SEEK_END)
        self._file.seek(max(0, size - 2))
        if size >= 4 and self._file.read(2) == _EOI_BYTES:
            self._end = size - 2
        self._position = self._file.seek(position)

    def read(self, size: int | None = -1) -> bytes:
        if self._end is None:
            return self._file.read(-1 if size is None else size)
        length = self._end + _PADDING
        stop = length if size is None or size < 0 else min(length, self._position + size)
        data = b""
        if self._position < self._end:
            self._file.seek(self._position)
            data = self._file.read(min(stop, self._end) - self._position)
        data += bytes(max(0, stop - max(self._position, self._end)))
        self._position += len(data)
        return data

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if self._end is None:
            return self._file.seek(offset, whence)
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._position, io.SEEK_END: self._end + _PADDING}[whence]
        self._position = max(0, base + offset)
        return self._position

    def tell(self) -> int:
        return self._file.tell() if self._end is None else self._position


def check_scans(file: EndWithheld) -> None:
    """Before decoding: a single-scan file gets its end withheld (above); a multi-scan one is refused
    as ``truncated`` unless its scans bring every coefficient to full precision."""
    position = file.tell()
    scans = _Scans()
    try:
        for marker, payload in _segments(file):
            if marker in _SOF:
                if marker not in _HUFFMAN_DCT:
                    return  # lossless, arithmetic-coded, hierarchical: rare, and decoded as they are
                scans.frame(payload)
            elif marker == _SOS:
                scans.scan(payload)
                if scans.complete():
                    if scans.count == 1:
                        file.withhold_end()
                    return
    finally:
        file.seek(position)
    raise ImageRejected("truncated", "the image data ends early: scans of it are missing")


class _Scans:
    """Which coefficients of which component the scans seen so far bring to full precision."""

    def __init__(self) -> None:
        self.done: dict[int, set[int]] = {}
        self.count = 0

    def frame(self, payload: bytes) -> None:
        components = payload[5] if len(payload) > 5 else 0
        self.done = {payload[6 + 3 * i]: set() for i in range(components) if 6 + 3 * i < len(payload)}

    def scan(self, payload: bytes) -> None:
        self.count += 1
        components = payload[0] if payload else 0
        tail = 1 + 2 * components
        if len(payload) < tail + 3 or payload[tail + 2] & 0x0F:  # a low bit above 0: not final yet
            return
        start, end = payload[tail], min(payload[tail + 1], 63)
        for i in range(components):
            band = self.done.get(payload[1 + 2 * i])
            if band is not None:
                band.update(range(start, end + 1))

    def complete(self) -> bool:
        return bool(self.done) and all(band == _ALL_COEFFICIENTS for band in self.done.values())


def _segments(file: EndWithheld) -> Iterator[tuple[int, bytes]]:
    """The file's marker segments up to its end-of-image marker, as (marker, payload); the entropy-coded
    data after each scan header is searched for the next marker a chunk at a time, never read whole."""
    position = 2  # after SOI
    while (found := _marker_at(file, position)) is not None:
        position, marker = found
        if marker == _EOI:
            return
        if marker in _STANDALONE:
            position += 2
            continue
        file.seek(position + 2)
        head = file.read(2)
        if len(head) < 2:
            return
        length = struct.unpack(">H", head)[0]
        yield marker, file.read(max(0, length - 2))
        position += 2 + length
        if marker == _SOS:
            after = _next_marker(file, position)
            if after is None:
                return
            position = after


def _marker_at(file: EndWithheld, position: int) -> tuple[int, int] | None:
    """The marker at ``position``, fill bytes (0xFF) before it skipped."""
    file.seek(position)
    while len(pair := file.read(2)) == 2 and pair[0] == 0xFF:
        if pair[1] != 0xFF:
            return position, pair[1]
        position += 1
        file.seek(position)
    return None


def _next_marker(file: EndWithheld, start: int) -> int | None:
    offset = start
    while True:
        file.seek(offset)
        chunk = file.read(_CHUNK)
        if len(chunk) < 2:
            return None
        match = _MARKER.search(chunk)
        if match is not None:
            return offset + match.start()
        offset += len(chunk) - 1  # a marker may straddle two chunks
