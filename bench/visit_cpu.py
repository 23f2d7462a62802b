"""CPU a completed visit costs on the sync push path: server and PostgreSQL, in milliseconds a visit.

    python -m bench visit-cpu [--rounds 3] [--visits 50] [--code old=/path/to/checkout --code new=.]

Throughput on a shared 2-core machine moves by 30% between identical runs; the CPU time each side spends
on a visit moves far less, so two versions of the code can be told apart by it. The harness seeds one
PostgreSQL database like `python -m bench sync` does (2,000 households in C01) and then, for each round
and each checkout named by `--code`, in turn (ABBA: the order flips every round, so a machine getting
slower or faster over the run weighs on both alike):

1. clones the seeded database (every run starts from the same rows), downgrades the clone to that
   checkout's own newest migration if it is older (old code must run on its own schema: a trigger
   changed since would measure neither), and starts `fivestep serve` from that checkout on it (a
   checkout with newer migrations upgrades its clone itself);
2. assigns each of 8 devices its visits and fills in 20 answers of each (`bench.sync.answered_visit`; not
   measured), and has each device push one batch first, also not measured: the server's first push
   compiles and caches its statements;
3. encodes each device's remaining push bodies (`bench.sync.push_bodies`: a tablet's own work, kept
   off the cores being measured), reads user + system CPU of the server's processes and of the cluster's
   (every PostgreSQL process, and those it reaped meanwhile) from `/proc`, has the 8 devices push their
   remaining visits at once (batches of 10 `visit.answer.v1` mutations of 20 observations with GPS
   fixes), and reads them again.

`--profile DIR` samples the server with py-spy during each measured push (collapsed stacks, one file a
run; `py-spy` must be on PATH or next to the interpreter). Profiling slows the server: its runs' CPU
figures are not comparable with unprofiled ones.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import httpx
from alembic.script import ScriptDirectory

from bench.photos import ROOT, Server
from bench.report import save, table
from bench.sync import BATCH, answered_visit, push_bodies, seed_scope, send_pushes
from bench.threads import seconds_all_at_once
from server.db.engine import Database
from server.db.migrate import MIGRATIONS, downgrade
from tests.fixtures.databases import prepare
from tests.fixtures.postgres import PostgresServer, _throwaway_cluster
from tests.helpers import login
from tests.visit_flow import TEAM, Signed

SEEDED = "visit_cpu_seeded"
TICK = os.sysconf("SC_CLK_TCK")

Plan = tuple[httpx.Client, dict[str, str], list[dict[str, Any]]]


@dataclass
class Code:
    label: str
    root: Path


# -- CPU from /proc --------------------------------------------------------------------------------


def _stat(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:  # it ended meanwhile
        return None
    return text.rsplit(")", 1)[1].split()  # after the command name, which may hold spaces


def _processes() -> dict[int, int]:
    """pid -> parent pid, for every process."""
    parents = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (fields := _stat(int(entry.name))) is not None:
            parents[int(entry.name)] = int(fields[1])
    return parents


def _tree(root: int) -> list[int]:
    parents, tree = _processes(), [root]
    for pid in tree:
        tree += [child for child, parent in parents.items() if parent == pid]
    return tree


def cpu_seconds(root: int) -> float:
    """User + system CPU of a process and all its descendants, plus what its reaped children used (a
    PostgreSQL backend or an autovacuum worker that ended within the window still counts)."""
    ticks = 0
    for pid in _tree(root):
        fields = _stat(pid)
        if fields is not None:
            ticks += int(fields[11]) + int(fields[12])
            if pid == root:
                ticks += int(fields[13]) + int(fields[14])
    return ticks / TICK


def postmaster(port: int) -> int:
    """Our cluster's postmaster, found by its port: other clusters may run on this machine."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if (
            argv[0].endswith(b"postgres")
            and b"-p" in argv
            and argv[argv.index(b"-p") + 1] == str(port).encode()
        ):
            return int(entry.name)
    raise RuntimeError(f"no postmaster on port {port}")


# -- the visits ------------------------------------------------------------------------------------


def plans(base: str, devices: int, visits_each: int, first: int) -> list[Plan]:
    """Each device's visits, assigned to the demo team and answered (20 answers each), ready to push."""
    with httpx.Client(base_url=base, timeout=120) as setup:
        signed_in = Signed(setup)
        result = []
        for d in range(devices):
            client = httpx.Client(base_url=base, timeout=120)
            auth = login(client, TEAM[d % 2], device=f"visit-cpu-{d}")
            registry = [f"BENCH-{first + d * visits_each + v:05d}" for v in range(visits_each)]
            result.append((client, auth, [answered_visit(setup, r, signed_in) for r in registry]))
    return result


def pushes(plans: list[Plan], start: int, stop: int | None) -> list[Callable[[], object]]:
    """Each device's push of visits [start:stop] of its plan, its bodies encoded now (`push_bodies`)."""
    calls: list[Callable[[], object]] = []
    for client, auth, visits in plans:
        cid = str(uuid.uuid5(uuid.NAMESPACE_OID, auth["Authorization"]))  # one client id a device
        bodies = push_bodies(cid, visits[start:stop], first_seq=start + 1)
        calls.append(partial(send_pushes, client, auth, bodies))
    return calls


# -- one run ---------------------------------------------------------------------------------------


@dataclass
class Options:
    devices: int
    visits: int
    workers: int
    profile: Path | None


def run_once(pg: PostgresServer, pg_pid: int, code: Code, tmp: Path, opts: Options, n: int) -> dict[str, Any]:
    url = pg.new_database(template=SEEDED)
    asyncio.run(_schema_of(code.root, url))
    server = Server(
        str(tmp / "blobs"),
        tmp,
        1,
        database_url=url,
        name=f"{code.label}-{n}",
        workers=opts.workers,
        root=code.root,
    )
    devices: list[Plan] = []
    try:
        devices = plans(server.base, opts.devices, BATCH + opts.visits, first=0)
        seconds_all_at_once(pushes(devices, 0, BATCH))  # warm-up, not measured
        measured = pushes(devices, BATCH, None)
        profiler = _profiler(server, opts.profile, f"{code.label}-{n}")
        own, srv, db = os.times(), cpu_seconds(server.process.pid), cpu_seconds(pg_pid)
        elapsed = seconds_all_at_once(measured)
        srv, db = cpu_seconds(server.process.pid) - srv, cpu_seconds(pg_pid) - db
        bench = sum(os.times()[:2]) - sum(own[:2])
        if profiler is not None:
            profiler.send_signal(signal.SIGINT)
            profiler.wait(60)
    finally:
        for client, _, _ in devices:
            client.close()
        server.stop()
        asyncio.run(pg._admin(f'DROP DATABASE IF EXISTS "{url.rsplit("/", 1)[1]}"'))
    visits = opts.devices * opts.visits
    per_visit = {"server_ms": srv, "postgres_ms": db, "devices_ms": bench}
    result: dict[str, Any] = {
        "code": code.label,
        "run": n,
        "visits": visits,
        "visits_per_s": visits / elapsed,
    }
    result |= {k: 1000 * v / visits for k, v in per_visit.items()}
    result["server_and_postgres_ms"] = result["server_ms"] + result["postgres_ms"]
    return result


async def _schema_of(root: Path, url: str) -> None:
    """Downgrade the clone (seeded at this checkout's newest migration) to the checkout's own: older code
    must run on the schema its migrations make, triggers included, not on a newer one. (A checkout with
    newer migrations upgrades its clone itself when its server starts.)"""
    head = ScriptDirectory(str(root / "server" / "db" / MIGRATIONS.name)).get_current_head()
    ours = ScriptDirectory(str(MIGRATIONS))
    if (
        head is None
        or head == ours.get_current_head()
        or head not in {s.revision for s in ours.walk_revisions()}
    ):
        return
    db = Database(url)
    try:
        await downgrade(db, head)
    finally:
        await db.dispose()


def _profiler(server: Server, folder: Path | None, name: str) -> subprocess.Popen[bytes] | None:
    if folder is None:
        return None
    folder.mkdir(parents=True, exist_ok=True)
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    command = [spy, "record", "--pid", str(server.process.pid), "-r", "250", "--format", "raw"]
    process = subprocess.Popen([*command, "-o", str(folder / f"{name}.txt")], stderr=subprocess.DEVNULL)
    time.sleep(1)  # attached before the push starts
    return process


# -- the whole comparison --------------------------------------------------------------------------


@contextmanager
def seeded_cluster(households: int) -> Iterator[tuple[PostgresServer, int]]:
    with contextmanager(_throwaway_cluster)() as pg:
        url = pg.new_database(template=None)
        asyncio.run(prepare(url))
        asyncio.run(seed_scope(url, households))
        asyncio.run(pg._admin(f'ALTER DATABASE "{url.rsplit("/", 1)[1]}" RENAME TO "{SEEDED}"'))
        yield pg, postmaster(int(pg.admin_dsn.rsplit(":", 1)[1].split("/")[0]))


def summary(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for label in dict.fromkeys(r["code"] for r in runs):
        mine = [r for r in runs if r["code"] == label]
        row: dict[str, Any] = {"code": label, "runs": len(mine)}
        for key in ("server_ms", "postgres_ms", "server_and_postgres_ms", "visits_per_s"):
            values = [r[key] for r in mine]
            row[key] = f"{statistics.median(values):.2f} ({min(values):.2f}-{max(values):.2f})"
        rows.append(row)
    return rows


def _code(text: str) -> Code:
    label, _, path = text.rpartition("=")
    root = Path(path).resolve()
    if not (root / "server" / "cli.py").exists():
        raise argparse.ArgumentTypeError(f"{root} is not a fivestep checkout")
    return Code(label or root.name, root)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench visit-cpu")
    parser.add_argument("--code", type=_code, action="append", help="LABEL=CHECKOUT (repeat to compare)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--devices", type=int, default=8)
    parser.add_argument("--visits", type=int, default=50, help="measured visits a device pushes")
    parser.add_argument("--workers", type=int, default=1, help="server processes (fivestep serve --workers)")
    parser.add_argument("--households", type=int, default=2000)
    parser.add_argument("--profile", type=Path, help="folder for py-spy's collapsed stacks of each run")
    args = parser.parse_args(argv)
    if args.devices * (BATCH + args.visits) > args.households:
        parser.error("each visit needs a household of its own: raise --households")
    codes: list[Code] = args.code or [Code("this", ROOT)]
    opts = Options(args.devices, args.visits, args.workers, args.profile)
    runs = []
    with tempfile.TemporaryDirectory() as folder, seeded_cluster(args.households) as (pg, pg_pid):
        for n in range(args.rounds):
            for code in codes if n % 2 == 0 else codes[::-1]:
                runs.append(run_once(pg, pg_pid, code, Path(folder), opts, n + 1))
                print(table(runs[-1:]), flush=True)
    print(table(runs))
    print()
    print(table(summary(runs)))
    meta = {"devices": args.devices, "visits": args.visits, "workers": args.workers, "cpus": os.cpu_count()}
    print(
        f"results: {save('visit-cpu', meta | {'codes': {c.label: str(c.root) for c in codes}, 'runs': runs})}"
    )
    return 0
