"""Fuzz the running API from its OpenAPI schema with schemathesis, as each role, by hand (`./dev fuzz`).

Not part of the suite: a run takes 2-3 minutes a role. It serves the demo data on a fresh embedded
database (or on a throwaway PostgreSQL cluster with --postgres), signs in as a field worker, a reviewer
and an admin, and lets schemathesis (installed into a virtual environment of its own, since it pins its
own Hypothesis) generate requests for every operation. Sign-out and device revocation are left out: they
would end the fuzzer's own session. It fails when any response is a 5xx, when the server logged an
unhandled error, or when a request left its database connection to the garbage collector.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ROLES = ("demo-worker-1", "demo-reviewer-community", "demo-admin")
# What the server's log must never hold after a run.
BAD_SIGNS = ("unhandled", "garbage collector", "Traceback")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="./dev fuzz")
    parser.add_argument("--postgres", action="store_true", help="a throwaway PostgreSQL cluster")
    parser.add_argument("--examples", type=int, default=30, help="examples per operation and phase")
    parser.add_argument("--venv", default=str(ROOT / ".venv-fuzz"), help="where schemathesis is installed")
    args = parser.parse_args(argv)
    st = _schemathesis(Path(args.venv))
    with tempfile.TemporaryDirectory() as folder, _database(args.postgres, Path(folder)) as url:
        log = Path(folder) / "server.log"
        with _server(url, Path(folder), log) as base:
            failed = [role for role in ROLES if not _fuzz(st, base, role, args.examples, Path(folder))]
        found = [line for line in log.read_text().splitlines() if any(s in line for s in BAD_SIGNS)]
    for line in found[:20]:
        print(f"server log: {line[:300]}")
    print(f"fuzz: {len(failed)} role(s) with failures {failed}; {len(found)} bad line(s) in the server log")
    return 1 if failed or found else 0


def _schemathesis(venv: Path) -> Path:
    st = venv / "bin" / "st"
    if not st.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(venv / "bin" / "pip"), "install", "--quiet", "schemathesis>=4,<5"], check=True)
    return st


@contextlib.contextmanager
def _database(postgres: bool, folder: Path) -> Iterator[str]:
    if not postgres:
        yield f"sqlite+aiosqlite:///{folder / 'fuzz.db'}"
        return
    import asyncio

    from tests.fixtures.databases import prepare
    from tests.fixtures.postgres import _throwaway_cluster

    with contextlib.contextmanager(_throwaway_cluster)() as server:
        url = server.new_database(template=None)
        asyncio.run(prepare(url))  # migrated, with the demo data
        yield url


@contextlib.contextmanager
def _server(url: str, folder: Path, log: Path) -> Iterator[str]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("FIVESTEP_")} | {
        "FIVESTEP_DATABASE_URL": url,
        "FIVESTEP_BLOB_STORE": str(folder / "blobs"),
        "FIVESTEP_VAR_DIR": str(folder),
        "FIVESTEP_SECRET_KEY": "fuzz",
    }
    demo = ["--demo"] if url.startswith("sqlite") else []
    command = [sys.executable, "-m", "server.cli", "serve", *demo, "--port", str(port)]
    with log.open("wb") as out:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
        base = f"http://127.0.0.1:{port}"
        try:
            _wait_until_healthy(base, process)
            yield base
        finally:
            process.terminate()
            process.wait(timeout=30)


def _wait_until_healthy(base: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with {process.returncode}")
        with contextlib.suppress(OSError), urllib.request.urlopen(f"{base}/health", timeout=2) as response:
            if response.status == 200:
                return
        time.sleep(0.5)
    raise RuntimeError("the server did not become healthy in 120 s")


def _fuzz(st: Path, base: str, username: str, examples: int, folder: Path) -> bool:
    """One role's run, from `folder`: schemathesis keeps a cache in its working directory."""
    body = json.dumps({"username": username, "password": "demo", "device_id": f"fuzz-{username}"}).encode()
    request = urllib.request.Request(
        f"{base}/api/v1/auth/login", data=body, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        token = json.load(response)["token"]
    print(f"fuzz: {username}", flush=True)
    run = subprocess.run(
        [
            str(st),
            "run",
            f"{base}/schema/openapi.json",
            "--header",
            f"Authorization: Bearer {token}",
            "--checks",
            "not_a_server_error",
            "--max-examples",
            str(examples),
            "--request-timeout",
            "20",
            "--exclude-path-regex",
            "logout|revoke",
        ],
        check=False,
        cwd=folder,
    )
    return run.returncode == 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
