"""Sync benchmark: first sync, incremental pull, push and 8 concurrent devices, on SQLite and PostgreSQL.

    python -m bench sync [--households 2000] [--skip-postgres] [--http-visits 100]

The app runs in-process behind Litestar's TestClient (the whole HTTP stack, no sockets); on PostgreSQL the
8 devices also push over loopback HTTP to one and to two real `fivestep serve` processes. The worker's
community gets N extra households, each with 3 members, a visit with 20 observations and one photo
reference (about 25 rows a household: 50,000 for the default 2,000), stamped into the change feed one
sequence per household, as if each had been one transaction. Floors, measured in the same run:
- pull: a plain SELECT of the same rows plus msgspec encoding of them;
- push: raw INSERTs of as many rows, committed in the same batches;
- 8 devices' visits (PostgreSQL): the same answers, visit versions and feed stamps written by plain SQL from
  8 sessions at once in one process, in the push's batches of 10 visits, a transaction a batch
  (`visit_floor`).
PostgreSQL is the tests' throwaway cluster (fsync off): figures are for the software, not the disk.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import random
import secrets
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any, cast

import httpx
import msgspec
from litestar.testing import TestClient
from sqlalchemy import Table, func, insert, select, text, update

from bench.photos import Server
from bench.report import save, table
from bench.threads import seconds_all_at_once
from schemas.config import Settings
from server.app import create_app
from server.db.bulk_insert import BulkInsert
from server.db.engine import Database
from server.db.models import (
    Household,
    Member,
    Observation,
    PhotoRef,
    SyncChange,
    SyncNumbering,
    SyncState,
    User,
    Visit,
    VisitTeamMember,
)
from server.demo import demo_id
from server.gc_freeze import freeze_startup_objects
from sync.client import Device, httpx_transport
from tests.fixtures.databases import prepare
from tests.helpers import login, node_id
from tests.visit_flow import GPS, Signed, assign, complete_answers, observation

ITEMS = ("a", "b", "c", "d", "e", "f", "g", "h", "i", "j", "k", "l", "m", "n", "o", "p", "q", "r", "s", "t")


# -- data ------------------------------------------------------------------------------------------


async def seed_scope(url: str, households: int) -> None:
    """Bulk-load a big community and its feed rows (Core inserts: fast, and the feed stamped by hand)."""
    db = Database(url)
    community = node_id("C01")
    async with db.write_session() as session:
        creator = (await session.execute(select(User.id).where(User.username == "demo-admin"))).scalar_one()
        seq = int((await session.execute(select(SyncState.seq))).scalar_one())
        now = dt.datetime.now(dt.UTC)
        for start in range(0, households, 250):
            rows: dict[str, list[dict[str, Any]]] = {k: [] for k in ("h", "m", "v", "o", "p", "c")}
            for i in range(start, min(start + 250, households)):
                seq += 1
                _household_rows(rows, i, community, creator, now, seq)
            await session.execute(insert(Household), rows["h"])
            await session.execute(insert(Member), rows["m"])
            await session.execute(insert(Visit), rows["v"])
            await session.execute(insert(Observation), rows["o"])
            await session.execute(insert(PhotoRef), rows["p"])
            await session.execute(insert(SyncChange), rows["c"])
        await session.execute(update(SyncState).values(seq=seq))
        await session.commit()
    # A database in service has planner statistics; one just bulk-loaded has none until autovacuum
    # comes by, and without them PostgreSQL scans whole tables for a page's id lists.
    async with db.engine.connect() as connection:
        await connection.execute(text("ANALYZE"))
        await connection.commit()
    await db.dispose()


def _household_rows(
    rows: dict[str, list[dict[str, Any]]],
    i: int,
    community: uuid.UUID,
    creator: uuid.UUID,
    now: dt.datetime,
    seq: int,
) -> None:
    hid, vid = demo_id("household", f"BENCH-{i:05d}"), uuid.uuid4()
    rows["h"].append(
        {
            "id": hid,
            "registry_no": f"BENCH-{i:05d}",
            "community_id": community,
            "address": f"测试路{i}号",
            "lat": 38.04,
            "lon": 114.51,
            "status": "active",
            "monthly_benefit_fen": 80000,
            "version": 1,
            "field_versions": {},
            "last_writers": {},
            "created_at": now,
            "updated_at": now,
        }
    )
    for k in range(3):
        rows["m"].append(
            {
                "id": uuid.uuid4(),
                "household_id": hid,
                "name": f"成员{i}-{k}",
                "relation": "self" if k == 0 else "child",
                "id_number": "11010519491231002X",
                "version": 1,
                "field_versions": {},
                "last_writers": {},
                "created_at": now,
            }
        )
    rows["v"].append(
        {
            "id": vid,
            "household_id": hid,
            "purpose": "scheduled_recheck",
            "status": "in_progress",
            "due_date": now.date(),
            "templates": [{"code": "step.ask", "version": 1}],
            "rules": "default",
            "created_by": creator,
            "answer_count": 20,
            "version": 1,
            "created_at": now,
            "updated_at": now,
        }
    )
    first_obs = None
    for n, item in enumerate(ITEMS):
        oid = uuid.uuid4()
        first_obs = first_obs or oid
        rows["o"].append(
            {
                "id": oid,
                "visit_id": vid,
                "ordinal": n,
                "template_code": "step.ask",
                "template_version": 1,
                "item": item,
                "value": n,
                "lat": GPS["lat"],
                "lon": GPS["lon"],
                "accuracy_m": 5.0,
                "provider": "gps",
                "mock_location": False,
                "received_at": now,
                "author_id": creator,
            }
        )
    sha = uuid.uuid5(hid, "photo").hex * 2
    rows["p"].append({"observation_id": first_obs, "sha256": sha, "visit_id": vid, "kind": "photo"})
    scope = str(community)
    feed = [("household", hid), ("visit", vid)] + [("member", m["id"]) for m in rows["m"][-3:]]
    feed += [("observation", o["id"]) for o in rows["o"][-20:]] + [("photo", sha)]
    rows["c"] += [
        {"entity": e, "entity_id": str(x), "scope": scope, "seq": seq, "deleted": False} for e, x in feed
    ]


# -- measurements ----------------------------------------------------------------------------------


class Page(msgspec.Struct):
    """A pull page as a client that stores changes as they come reads it: the paging fields decoded,
    each change kept as its raw JSON (a device writes it to its database; the bench only counts it)."""

    cursor: str
    has_more: bool
    changes: list[msgspec.Raw]


def pull_all(
    client: TestClient[Any],
    auth: dict[str, str],
    cursor: str | None,
    limit: int = 2000,
    *,
    parse: bool = False,
) -> tuple[int, str]:
    """Every page from `cursor` on; `parse` also decodes each change into dicts, as a Python client would."""
    body: dict[str, Any] = {
        "client_id": str(uuid.uuid4()),
        "cursor": cursor,
        "schema_version": 1,
        "limit": limit,
    }
    count = 0
    while True:
        content = client.post("/api/v1/sync/pull", json=body, headers=auth).content
        page = msgspec.json.decode(content, type=Page)
        if parse:
            msgspec.json.decode(content)
        count += len(page.changes)
        body["cursor"] = page.cursor
        if not page.has_more:
            return count, page.cursor


async def pull_floor(url: str) -> float:
    """SELECT the rows a first sync of C01 ships, and encode them: the least any pull can cost.

    Whole tables (the demo's other communities are a few dozen rows): households, members, visits with
    their teams, observations, and the photo references a photo record is made of."""
    db = Database(url)
    tables = (Household, Member, Visit, VisitTeamMember, Observation, PhotoRef)
    started = time.perf_counter()
    async with db.read_session() as session:
        for model in tables:
            result = await session.execute(select(*model.__table__.columns))
            keys = list(result.keys())
            msgspec.json.encode([dict(zip(keys, r, strict=True)) for r in result])
    elapsed = time.perf_counter() - started
    await db.dispose()
    return elapsed


async def insert_floor(url: str, rows: int, batch: int) -> float:
    db = Database(url)
    await _exec(db, "CREATE TABLE IF NOT EXISTS bench_floor (id TEXT PRIMARY KEY, body TEXT)")
    started = time.perf_counter()
    for start in range(0, rows, batch):
        async with db.write_session() as session:
            values = [{"id": str(uuid.uuid4()), "body": "x" * 200} for _ in range(min(batch, rows - start))]
            await session.execute(text("INSERT INTO bench_floor (id, body) VALUES (:id, :body)"), values)
            await session.commit()
    elapsed = time.perf_counter() - started
    await db.dispose()
    return elapsed


async def visit_floor(url: str, devices: int, visits_each: int) -> float:
    """Completed visits per second written by plain SQL from ``devices`` sessions at once in one process
    (as one server process), committed in the push's batches of 10 visits: a transaction a batch that
    bumps its visits' versions, inserts their 20 answers each with their GPS fixes (one INSERT of column
    arrays, as the server writes them on PostgreSQL: server/db/bulk_insert.py) and stamps them and
    the visits in the change feed, numbered at COMMIT. None of the rest of a push: no sign-in, decoding,
    checks, merging, audit rows, mutation log or answer. The seeded visits are used, each device its own;
    one unmeasured batch each first, as the HTTP rows push one."""
    db = Database(url)
    async with db.read_session() as session:
        author = (await session.execute(select(User.id).where(User.username == "demo-worker-1"))).scalar_one()
        seeded = select(Visit.id).join(Household).where(Household.registry_no.like("BENCH-%"))
        wanted = devices * (visits_each + BATCH)
        visit_ids = list((await session.execute(seeded.order_by(Visit.id).limit(wanted))).scalars())
    scope = str(node_id("C01"))
    visits, answers_table, numbering = (
        cast(Table, model.__table__) for model in (Visit, Observation, SyncNumbering)
    )
    write_answers = BulkInsert(answers_table, [c.name for c in answers_table.columns])

    async def batch(visit_ids: list[uuid.UUID]) -> None:
        now = dt.datetime.now(dt.UTC)
        async with db.write_session() as session:
            bumped = (
                visits.update()
                .where(visits.c.id.in_(visit_ids))
                .values(version=visits.c.version + 1, answer_count=visits.c.answer_count + len(ITEMS))
                .returning(visits.c.id, visits.c.answer_count)
            )
            # The answers' ordinals, as the server numbers them: the visit's count after each answer.
            counts: dict[uuid.UUID, int] = dict((await session.execute(bumped)).tuples().all())
            answers = [
                _floor_answer(v, counts[v] - len(ITEMS) + 1 + n, n, author, now)
                for v in visit_ids
                for n in range(len(ITEMS))
            ]
            # Stamped as the server stamps them: one row carrying the stamps, written by the trigger of
            # migration 0019 with the number it takes while PostgreSQL commits.
            keys = sorted(
                [("observation", str(a["id"])) for a in answers] + [("visit", str(v)) for v in visit_ids]
            )
            request = {
                "placeholder": -1 - secrets.randbits(62),
                "scopes": "",
                "entities": [entity for entity, _ in keys],
                "entity_ids": [entity_id for _, entity_id in keys],
                "stamp_scopes": [scope] * len(keys),
                "stamps_deleted": [False] * len(keys),
            }
            # The answers in one statement of column arrays, the cheapest way the server knows.
            await session.run_sync(lambda s: write_answers.run(s, answers))
            await session.execute(numbering.insert().values(**request))
            await session.commit()

    async def device(mine: list[uuid.UUID]) -> None:
        for start in range(0, len(mine), BATCH):
            await batch(mine[start : start + BATCH])

    shares = [visit_ids[d::devices] for d in range(devices)]
    await asyncio.gather(*(batch(share[:BATCH]) for share in shares))
    started = time.perf_counter()
    await asyncio.gather(*(device(share[BATCH:]) for share in shares))
    elapsed = time.perf_counter() - started
    await db.dispose()
    return devices * visits_each / elapsed


BATCH = 10
"""Visits a push carries in the benches (`_push_visits`, bench/visit_cpu.py), and the floor's transaction."""


def _floor_answer(
    visit_id: uuid.UUID, ordinal: int, n: int, author: uuid.UUID, now: dt.datetime
) -> dict[str, Any]:
    """One answer row as a push writes it: value, GPS fix, device time, author."""
    return {
        "id": uuid.uuid4(),
        "visit_id": visit_id,
        "ordinal": ordinal,
        "template_code": "step.ask",
        "template_version": 1,
        "item": ITEMS[n],
        "row_id": None,
        "value": f"answer {n}",
        "base": None,
        "note": None,
        "lat": GPS["lat"],
        "lon": GPS["lon"],
        "accuracy_m": 5.0,
        "fix_time": now,
        "provider": "gps",
        "mock_location": False,
        "device_time": now,
        "received_at": now,
        "author_id": author,
        "device_id": None,
    }


async def _exec(db: Database, sql: str) -> None:
    async with db.write_session() as session:
        await session.execute(text(sql))
        await session.commit()


async def count(url: str, model: Any) -> int:
    db = Database(url)
    async with db.read_session() as session:
        total = int((await session.execute(select(func.count()).select_from(model))).scalar_one())
    await db.dispose()
    return total


def push_updates(client: TestClient[Any], auth: dict[str, str], households: int, n: int, batch: int) -> float:
    cid = str(uuid.uuid4())
    mutations = [
        {
            "op": "household.update.v1",
            "seq": i + 1,
            "mutation_id": str(uuid.uuid4()),
            "household_id": str(demo_id("household", f"BENCH-{i % households:05d}")),
            "base_version": 1,
            "changes": {"address": {"old": None, "new": f"新地址{i}"}},
        }
        for i in range(n)
    ]
    started = time.perf_counter()
    for start in range(0, n, batch):
        body = {"client_id": cid, "schema_version": 1, "mutations": mutations[start : start + batch]}
        answer = client.post("/api/v1/sync/push", json=body, headers=auth).json()
        assert answer["last_mutation_seq"] == min(start + batch, n), answer
    return time.perf_counter() - started


def concurrent_visits(
    client: TestClient[Any], devices: int, visits_each: int, households: int
) -> tuple[float, int]:
    """Each device pushes completed visits (20 answers with GPS fixes each) at the same time."""
    plans = [_device_plan(client, d, visits_each, households, f"bench-{d}") for d in range(devices)]
    return _pushed_at_once(plans), devices * visits_each


def visits_over_http(url: str, tmp: Path, processes: int, visits_each: int, households: int) -> float:
    """Completed visits per second from 8 devices (threads of this process, a connection each) over
    loopback HTTP to `fivestep serve --workers <processes>` on the database. Each device first pushes one
    unmeasured batch, as `bench visit-cpu` does: a fresh server's first requests compile its statements
    and fill its pools, which would otherwise weigh on a short run, the more so with two processes."""
    server = Server(str(tmp / "blobs"), tmp, 1, database_url=url, name="serve", workers=processes)
    clients = [httpx.Client(base_url=server.base, timeout=120) for _ in range(8)]
    try:
        visits = _WARM_UP + visits_each
        plans = [_device_plan(clients[d], d, visits, households, f"http-{d}") for d in range(8)]
        devices = [(client, auth, str(uuid.uuid4()), batches) for client, auth, batches in plans]
        seconds_all_at_once([_push_visits(c, a, cid, b[:_WARM_UP]) for c, a, cid, b in devices])
        measured: list[Callable[[], object]] = [
            _push_visits(c, a, cid, b[_WARM_UP:], first_seq=_WARM_UP + 1) for c, a, cid, b in devices
        ]
        return 8 * visits_each / seconds_all_at_once(measured)
    finally:
        for client in clients:
            client.close()
        server.stop()


_WARM_UP = 10
"""Visits each device pushes (one batch) before the measured run over HTTP."""


def _device_plan(
    client: Any, d: int, visits_each: int, households: int, device: str
) -> tuple[Any, dict[str, str], list[dict[str, Any]]]:
    """Device `d`'s visits, assigned and answered (20 answers each), ready to push in batches of 10."""
    auth = login(client, ("demo-worker-1", "demo-worker-2")[d % 2], device=device)
    signed_in = Signed(client)
    # Round the seeded households: more visits than households give some households a second visit.
    registry = [f"BENCH-{(d * visits_each + v) % households:05d}" for v in range(visits_each)]
    return client, auth, [answered_visit(client, r, signed_in) for r in registry]


def answered_visit(client: Any, registry_no: str, signed_in: Signed) -> dict[str, Any]:
    """The household's visit assigned to the demo team, and its first 20 answers outside repeat groups
    with their GPS fixes: the body of a `visit.answer.v1` (also `bench visit-cpu`'s). Not backdated:
    pushing answers checks no publicity date."""
    visit = assign(client, registry_no, created_days_ago=0, signed_in=signed_in)
    filled = complete_answers(client, visit, signed_in.admin, signed_in=signed_in)
    answers = [a for a in filled if a.row_id is None][:20]
    return {"visit_id": visit["id"], "observations": [observation(a) for a in answers]}


def _pushed_at_once(plans: list[tuple[Any, dict[str, str], list[dict[str, Any]]]]) -> float:
    """Seconds for every device (a thread each) to push its plan, all starting together."""
    return seconds_all_at_once([_push_visits(c, a, str(uuid.uuid4()), b) for c, a, b in plans])


def push_bodies(client_id: str, visits: list[dict[str, Any]], first_seq: int = 1) -> list[bytes]:
    """A device's queue as the push bodies it sends, `BATCH` visits each, encoded before any clock starts.

    Building and encoding a body is the device's work: on these benches the devices share the server's
    two cores, and a load generator must not take from what it measures (a tablet's CPU is its own)."""
    bodies = []
    for start in range(0, len(visits), BATCH):
        mutations = [
            {"op": "visit.answer.v1", "seq": first_seq + start + k, "mutation_id": str(uuid.uuid4()), **v}
            for k, v in enumerate(visits[start : start + BATCH])
        ]
        bodies.append(_ENCODE({"client_id": client_id, "schema_version": 1, "mutations": mutations}))
    return bodies


_ENCODE = msgspec.json.Encoder().encode


def send_pushes(client: Any, auth: dict[str, str], bodies: list[bytes]) -> None:
    """Push each body in turn; every visit must be applied."""
    headers = {**auth, "content-type": "application/json"}
    for body in bodies:
        answer = msgspec.json.decode(client.post("/api/v1/sync/push", content=body, headers=headers).content)
        assert all(r["status"] == "applied" for r in answer["results"]), answer


def _push_visits(
    client: Any, auth: dict[str, str], cid: str, batches: list[dict[str, Any]], first_seq: int = 1
) -> Callable[[], None]:
    """The push of `batches` (visits), its bodies encoded now: call it to send them."""
    return partial(send_pushes, client, auth, push_bodies(cid, batches, first_seq))


def _best_of_three(run: Callable[[], object]) -> float:
    times = []
    for _ in range(3):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return min(times)


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


# -- one database ----------------------------------------------------------------------------------


def run(name: str, url: str, tmp: Path, households: int) -> dict[str, Any]:
    asyncio.run(prepare(url))
    asyncio.run(seed_scope(url, households))
    settings = Settings(
        database_url=url,
        blob_store=str(tmp / "blobs"),
        var_dir=str(tmp),
        secret_key="bench",
        auto_migrate=False,
        log_level="WARNING",
    )
    result: dict[str, Any] = {"database": name}
    app = create_app(settings)
    freeze_startup_objects()  # as `fivestep serve` does; the floors run in this process after it too
    with TestClient(app) as client:
        auth = login(client, "demo-worker-1", device="bench")
        rss_before = rss_mb()
        rows, cursor = pull_all(client, auth, None)  # the first time round, for the memory it takes
        result |= {"first_sync_rows": rows, "rss_growth_mb": rss_mb() - rss_before}
        # Best of three for the pull and for its floor alike: single runs of either move by 20-30% here.
        first = _best_of_three(lambda: pull_all(client, auth, None))
        floor = min(asyncio.run(pull_floor(url)) for _ in range(3))
        result |= {"first_sync_s": first, "first_sync_floor_s": floor, "first_sync_x_floor": first / floor}
        result["first_sync_parsed_s"] = _best_of_three(lambda: pull_all(client, auth, None, parse=True))
        device = Device(tmp / f"{name}-device.sqlite", httpx_transport(client), pull_limit=2000)
        device.login("demo-worker-1", "demo")
        started = time.perf_counter()
        device.sync()
        result["device_first_sync_s"] = time.perf_counter() - started
        push_s = push_updates(client, auth, households, 1000, 100)
        result |= {"push_1000_s": push_s, "push_per_s": 1000 / push_s}
        push_floor = asyncio.run(insert_floor(url, 1000, 100))
        result |= {"push_floor_s": push_floor, "push_x_floor": push_s / push_floor}
        started = time.perf_counter()
        incremental, _ = pull_all(client, auth, cursor)
        result |= {"incremental_rows": incremental, "incremental_s": time.perf_counter() - started}
        elapsed, visits = concurrent_visits(client, 8, 25, households)
        result |= {"visits_8_devices": visits, "visits_per_s": visits / elapsed}
    return result


@contextmanager
def postgres() -> Iterator[str]:
    from tests.fixtures.postgres import _throwaway_cluster

    with contextmanager(_throwaway_cluster)() as server:
        yield server.new_database(template=None)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench sync")
    parser.add_argument("--households", type=int, default=2000)
    parser.add_argument("--skip-postgres", action="store_true")
    parser.add_argument(
        "--http-visits", type=int, default=100, help="measured visits each of the 8 devices pushes over HTTP"
    )
    args = parser.parse_args(argv)
    random.seed(1)
    results = []
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        results.append(run("sqlite", f"sqlite+aiosqlite:///{tmp / 'bench.db'}", tmp, args.households))
        if not args.skip_postgres:
            with postgres() as url:
                results.append(run("postgresql", url, tmp, args.households))
                # The same 8 devices over real HTTP, to one server process and to two sharing the database.
                for processes in (1, 2):
                    results[-1][f"visits_per_s_http_{processes}_process"] = visits_over_http(
                        url, tmp, processes, args.http_visits, args.households
                    )
                floor = asyncio.run(visit_floor(url, 8, args.http_visits))
                results[-1]["visits_floor_per_s"] = floor
                for processes in (1, 2):
                    http = results[-1][f"visits_per_s_http_{processes}_process"]
                    results[-1][f"visits_http_{processes}_process_x_floor"] = floor / http
    print(table(results))
    print(
        f"results: {save('sync', {'households': args.households, 'cpus': os.cpu_count(), 'runs': results})}"
    )
    return 0
