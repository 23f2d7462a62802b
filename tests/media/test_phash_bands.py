"""The near-duplicate search looks hashes up by band: it must find every hash a full comparison finds."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from media.phash import BANDS, HASH_BITS, SEARCHABLE_BITS, band_neighbours, bands
from server.domain.integrity import NEAR_DUPLICATE_BITS

hashes = st.integers(min_value=0, max_value=(1 << HASH_BITS) - 1)


def found_by_bands(query: int, stored: int) -> bool:
    return any(b in band_neighbours(q) for q, b in zip(bands(query), bands(stored), strict=True))


@given(hashes, st.sets(st.integers(min_value=0, max_value=HASH_BITS - 1), max_size=SEARCHABLE_BITS))
def test_every_hash_within_the_searchable_distance_shares_a_near_band(query: int, flipped: set[int]) -> None:
    stored = query
    for bit in flipped:
        stored ^= 1 << bit
    assert found_by_bands(query, stored)


def test_the_search_reaches_the_near_duplicate_threshold() -> None:
    assert NEAR_DUPLICATE_BITS <= SEARCHABLE_BITS


def test_twelve_bits_spread_over_the_bands_may_be_missed_which_is_why_the_threshold_stays_below() -> None:
    query = 0
    stored = sum(1 << (16 * band + bit) for band in range(BANDS) for bit in range(3))  # 3 bits a band
    assert not found_by_bands(query, stored)


def test_the_bands_rebuild_the_hash() -> None:
    value = 0x0123_4567_89AB_CDEF
    assert bands(value) == (0x0123, 0x4567, 0x89AB, 0xCDEF)
    assert len(set(band_neighbours(0x0123))) == 137
