"""The near-duplicate search of a visit's evidence, against how many photos are stored.

    python -m bench near-duplicates [--stored 10000 50000 200000] [--skip-postgres]

A reviewer opening a visit's evidence is told of any stored photo whose dHash lies within 10 bits of one
of the visit's (`server/services/integrity.py`). The harness stores photos with random hashes (each named
by an answer as a photo, as the search requires), plus near copies of some of them, and times the search
for a visit of 20 photos on SQLite and PostgreSQL:

- **band search**: the server's `_near_duplicates`, which reads only the hashes sharing a band within 2
  bits of one of the visit's (multi-index hashing, media/phash.py);
- **floor**: a SELECT of the rows the band search returns, by their primary key: what reading the
  candidates costs when nothing is spent finding them;
- **full comparison**: every stored hash read and compared with each of the 20, as the search did before
  migration 0020 (kept here as the reference: it grows with the photos stored).

Each figure is the best of five runs. The two searches must find the same copies: the harness checks it.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import random
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, cast

from sqlalchemy import Table, delete, exists, select

from bench.report import save, table
from bench.sync import postgres
from media.phash import to_hex
from server.db.bulk_insert import BulkInsert
from server.db.engine import Database
from server.db.models import Observation, Photo, PhotoRef, User, Visit
from server.domain.integrity import NEAR_DUPLICATE_BITS
from server.services.integrity import _near_duplicates
from tests.fixtures.databases import prepare

VISIT_PHOTOS = 20
COPIES = 5
"""Stored copies of the visit's photos (a few bits flipped): what the search must find."""
CHUNK = 5000


async def seed(url: str, stored: int, rng: random.Random) -> list[Photo]:
    """`stored` photos with random hashes, each named as a photo by an answer of one demo visit, plus
    COPIES near copies of the visit's own photos; returns the visit's photos (not stored)."""
    db = Database(url)
    try:
        async with db.write_session() as session:
            visit_id = (await session.execute(select(Visit.id).limit(1))).scalar_one()
            author = (await session.execute(select(User.id).limit(1))).scalar_one()
            await session.run_sync(_clear)
            mine = [_photo(rng.getrandbits(64), author) for _ in range(VISIT_PHOTOS)]
            hashes = [rng.getrandbits(64) for _ in range(stored)]
            hashes[:COPIES] = [_flipped(int(p.dhash, 16), rng) for p in mine[:COPIES]]
            for start in range(0, stored, CHUNK):
                part = [_photo(h, author) for h in hashes[start : start + CHUNK]]
                await session.run_sync(_write, part, visit_id, author, start)
            await session.commit()
        return mine
    finally:
        await db.dispose()


def _clear(session: Any) -> None:
    for model in (PhotoRef, Photo):
        session.execute(delete(model))
    session.execute(delete(Observation).where(Observation.template_code == "bench.photos"))


def _photo(value: int, author: uuid.UUID) -> Photo:
    sha = f"{random.getrandbits(256):064x}"
    return Photo(
        sha256=sha, format="jpeg", byte_size=1, width=1, height=1, dhash=to_hex(value), original_key=sha,
        display_key=sha, display_width=1, display_height=1, thumb_key=sha, thumb_width=1, thumb_height=1,
        uploaded_by=author,
    )  # fmt: skip


def _flipped(value: int, rng: random.Random) -> int:
    for bit in rng.sample(range(64), rng.randint(1, NEAR_DUPLICATE_BITS)):
        value ^= 1 << bit
    return value


_PHOTOS = BulkInsert(cast(Table, Photo.__table__), [c.name for c in Photo.__table__.columns])
_OBSERVATIONS = BulkInsert(
    cast(Table, Observation.__table__),
    [
        "id",
        "visit_id",
        "ordinal",
        "template_code",
        "template_version",
        "item",
        "value",
        "received_at",
        "author_id",
    ],
)
_REFS = BulkInsert(cast(Table, PhotoRef.__table__), ["observation_id", "sha256", "visit_id", "kind"])


def _write(session: Any, photos: list[Photo], visit_id: uuid.UUID, author: uuid.UUID, start: int) -> None:
    now = dt.datetime.now(dt.UTC)
    # The columns' defaults come at a flush, which these rows skip: set here.
    defaults = {"created_at": now, "captured_has_offset": False}
    _PHOTOS.run(session, [{c: getattr(p, c) for c in _PHOTOS.columns} | defaults for p in photos])
    observations = [
        {
            "id": uuid.uuid4(), "visit_id": visit_id, "ordinal": 1_000_000 + start + n,
            "template_code": "bench.photos", "template_version": 1, "item": "photo",
            "value": {"photos": [{"sha256": p.sha256}]}, "received_at": now, "author_id": author,
        }
        for n, p in enumerate(photos)
    ]  # fmt: skip
    _OBSERVATIONS.run(session, observations)
    refs = [
        {"observation_id": o["id"], "sha256": p.sha256, "visit_id": visit_id, "kind": "photo"}
        for o, p in zip(observations, photos, strict=True)
    ]
    _REFS.run(session, refs)


async def full_comparison(session: Any, photos: list[Photo]) -> dict[str, list[tuple[str, int]]]:
    """The search as it was before migration 0020: every stored hash read and compared."""
    mine = [(p.sha256, int(p.dhash, 16)) for p in photos]
    named_as_photo = exists().where(PhotoRef.sha256 == Photo.sha256, PhotoRef.kind == "photo")
    query = select(Photo.sha256, Photo.dhash).where(Photo.sha256.not_in([s for s, _ in mine]), named_as_photo)
    found: dict[str, list[tuple[str, int]]] = {}
    for other, dhash in await session.execute(query):
        theirs = int(dhash, 16)
        for sha, own in mine:
            bits = (own ^ theirs).bit_count()
            if bits <= NEAR_DUPLICATE_BITS:
                found.setdefault(sha, []).append((other, bits))
    return found


async def floor(session: Any, shas: list[str]) -> None:
    await session.execute(select(Photo.sha256, Photo.dhash).where(Photo.sha256.in_(shas)))


async def best_of_five(url: str, run: Callable[[Any], Awaitable[Any]]) -> tuple[float, Any]:
    db = Database(url)
    try:
        best, result = float("inf"), None
        for _ in range(5):
            async with db.read_session() as session:
                started = time.perf_counter()
                result = await run(session)
                best = min(best, time.perf_counter() - started)
        return best, result
    finally:
        await db.dispose()


async def measure(database: str, url: str, stored: int) -> dict[str, Any]:
    mine = await seed(url, stored, random.Random(stored))
    band_s, found = await best_of_five(url, lambda s: _near_duplicates(s, mine))
    full_s, everything = await best_of_five(url, lambda s: full_comparison(s, mine))
    if {k: sorted(v) for k, v in found.items()} != {k: sorted(v) for k, v in everything.items()}:
        raise AssertionError("the band search and the full comparison found different copies")
    shas = [other for near in found.values() for other, _ in near]
    floor_s, _ = await best_of_five(url, lambda s: floor(s, shas))
    return {
        "database": database,
        "stored_photos": stored,
        "copies_found": len(shas),
        "band_search_ms": round(band_s * 1000, 1),
        "floor_ms": round(floor_s * 1000, 2),
        "band_x_floor": round(band_s / floor_s, 1),
        "full_comparison_ms": round(full_s * 1000, 1),
        "full_x_band": round(full_s / band_s, 1),
    }


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench near-duplicates")
    parser.add_argument("--stored", type=int, nargs="+", default=[10_000, 50_000, 200_000])
    parser.add_argument("--skip-postgres", action="store_true")
    args = parser.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        sqlite = f"sqlite+aiosqlite:///{Path(folder) / 'near.db'}"
        asyncio.run(prepare(sqlite))
        rows += [asyncio.run(measure("sqlite", sqlite, n)) for n in args.stored]
    if not args.skip_postgres:
        with postgres() as url:
            asyncio.run(prepare(url))
            rows += [asyncio.run(measure("postgresql", url, n)) for n in args.stored]
    print(table(rows))
    print(f"results: {save('near-duplicates', {'runs': rows})}")
    return 0
