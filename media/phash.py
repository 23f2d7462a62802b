"""A 64-bit difference hash (dHash) to spot the same scene sent twice, re-encoded or slightly cropped.

Each of the 64 bits says whether a pixel of a 9x8 greyscale thumbnail is brighter than its right-hand
neighbour. Same algorithm as the ``imagehash`` package's ``dhash``, without its numpy/scipy weight.
Measured on phone photos: re-encodes differ by 0-2 bits, small crops by 6-9, different photos by ~28-35.
Hash the image as it is displayed: orient it first (``derivatives.apply_orientation``).
"""

from __future__ import annotations

from PIL import Image

from media.derivatives import apply_orientation

HASH_BITS = 64
_WIDTH, _HEIGHT = 9, 8


def dhash(im: Image.Image) -> int:
    """The dHash of ``im``'s pixels as they are, as an unsigned 64-bit int. Orient ``im`` first."""
    grey = im.convert("L").resize((_WIDTH, _HEIGHT), Image.Resampling.LANCZOS)
    pixels = grey.tobytes()
    value = 0
    for row in range(_HEIGHT):
        start = row * _WIDTH
        for column in range(_WIDTH - 1):
            value = (value << 1) | (pixels[start + column] > pixels[start + column + 1])
    return value


def dhash_opened(im: Image.Image) -> int:
    """The dHash of a just-opened image as displayed: decoded small, then oriented.

    Consumes ``im``: a JPEG is switched to 1/8-scale decoding (``draft`` must precede ``load``), which is
    plenty for 9x8 pixels and about 8x faster than a full decode.
    """
    im.draft("L", (_WIDTH, _HEIGHT))  # a no-op for formats other than JPEG
    im.load()
    oriented, _ = apply_orientation(im)
    return dhash(oriented)


def to_hex(value: int) -> str:
    """The hash as 16 lowercase hex digits (storable as text; a signed BIGINT would need an offset)."""
    if not 0 <= value < 1 << HASH_BITS:
        raise ValueError(f"not a {HASH_BITS}-bit hash: {value}")
    return f"{value:016x}"


def from_hex(text: str) -> int:
    """Parse 16 hex digits written by ``to_hex``."""
    if len(text) != HASH_BITS // 4:
        raise ValueError(f"a dHash is {HASH_BITS // 4} hex digits, got {text!r}")
    return int(text, 16)


def hamming(a: int | str, b: int | str) -> int:
    """Number of differing bits between two hashes, each given as an int or as hex."""
    left = from_hex(a) if isinstance(a, str) else a
    right = from_hex(b) if isinstance(b, str) else b
    return (left ^ right).bit_count()


BANDS = 4
"""Multi-index hashing (Norouzi, Punjani and Fleet): the 64 bits cut into four bands of 16. Two hashes
within 4 * BAND_RADIUS + 3 bits of each other (11 and below: the near-duplicate threshold is 10) differ in
at most BAND_RADIUS bits in at least one band, as four bands each differing in more would add up to
more. So a search indexed by band values finds every near hash by looking up, in each band, the values
within BAND_RADIUS of the query's: 137 values a band, each matching about one stored hash in 65,536."""
_BAND_BITS = HASH_BITS // BANDS
BAND_RADIUS = 2
SEARCHABLE_BITS = BANDS * (BAND_RADIUS + 1) - 1
"""The widest Hamming distance a band search is sure to find."""


def bands(value: int) -> tuple[int, ...]:
    """The hash's four 16-bit bands, most significant first."""
    mask = (1 << _BAND_BITS) - 1
    return tuple((value >> (_BAND_BITS * (BANDS - 1 - i))) & mask for i in range(BANDS))


def band_neighbours(band: int) -> list[int]:
    """Every 16-bit value within BAND_RADIUS bits of ``band``, itself included (137 values)."""
    found = [band]
    for first in range(_BAND_BITS):
        once = band ^ (1 << first)
        found.append(once)
        found.extend(once ^ (1 << second) for second in range(first + 1, _BAND_BITS))
    return found
