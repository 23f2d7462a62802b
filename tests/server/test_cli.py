"""The command line: help for every command, migrate, create-user, reset-password, and serve answering on
its port."""

from __future__ import annotations

import hashlib
import json
import os
import platform
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from server.services import sync_admin
from server.services.actor import SYSTEM
from sync.client import Device, httpx_transport
from sync.errors import NetworkError
from tests.helpers import Client, run_db
from tests.images import jpeg_with_gps


def fivestep(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "server.cli", *args],
        cwd=cwd,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize(
    "command",
    [
        [],
        ["serve"],
        ["migrate"],
        ["cleanup-uploads"],
        ["create-user"],
        ["reset-password"],
        ["sync-admin"],
        ["device"],
        ["device", "sync"],
    ],
)
def test_every_command_has_help(command: list[str], tmp_path: Path) -> None:
    done = fivestep(*command, "--help", cwd=tmp_path)
    assert done.returncode == 0
    assert "usage: fivestep" in done.stdout


_HERE = {"PYTHONPATH": str(Path(__file__).resolve().parents[2])}
"""The worktree's code, whichever install the interpreter has."""


def test_device_commands_start_without_the_servers_database_layer(tmp_path: Path) -> None:
    """A tablet's command answers in 0.3 s instead of 0.55: SQLAlchemy (a quarter of a second to import)
    is loaded only by the server's commands that use it."""
    probe = "import sys, server.cli; print(sorted({m.split('.')[0] for m in sys.modules} & {'sqlalchemy', 'litestar', 'PIL'}))"
    done = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=tmp_path,
        env={**os.environ, **_HERE},
        capture_output=True,
        text=True,
    )
    assert (done.returncode, done.stdout.strip()) == (0, "[]"), done.stderr


def test_a_device_command_piped_into_a_reader_that_stops_early_ends_quietly(tmp_path: Path) -> None:
    """`fivestep device status | head -2`: the reader closes the pipe; no traceback, exit 0."""
    command = [sys.executable, "-m", "server.cli", "device", "--db", str(tmp_path / "d.sqlite"), "status"]
    reading, writing = os.pipe()
    os.close(
        reading
    )  # closed before the command starts: its first write finds no reader, whatever the timing
    try:
        run = subprocess.Popen(
            command, cwd=tmp_path, env={**os.environ, **_HERE}, stdout=writing, stderr=subprocess.PIPE
        )
    finally:
        os.close(writing)
    assert run.stderr is not None
    errors = run.stderr.read().decode()
    assert (run.wait(timeout=60), errors) == (0, "")


def test_a_device_edit_of_a_household_the_device_does_not_hold_is_refused_not_queued(tmp_path: Path) -> None:
    """A mistyped id (or one of another community) would only reach a supervisor as a quarantined edit."""
    db = str(tmp_path / "d.sqlite")
    edit = fivestep(
        "device", "--db", db, "edit", str(uuid.uuid4()), "address=解放街3号", cwd=tmp_path, env=_HERE
    )
    assert edit.returncode == 1 and edit.stderr.startswith("device: no household"), edit.stdout + edit.stderr
    status = fivestep("device", "--db", db, "status", cwd=tmp_path, env=_HERE)
    assert json.loads(status.stdout)["pending"] == 0


@pytest.mark.parametrize(
    ("typed", "said"),
    [
        (["address"], "device: write each edit as FIELD=VALUE, e.g. address=解放街3号 (not 'address')"),
        (["adress=解放街3号"], "device: not an edit of a household: Object contains unknown field `adress`"),
        (
            ["lat=北纬38度"],
            "device: not an edit of a household: Expected `float | null`, got `str` - at `$.lat`",
        ),
        (["address="], "device: not an edit of a household: Expected `str` of length >= 1"),
        (["version=9"], "device: the version is not edited"),
    ],
)
def test_a_device_edit_the_server_would_refuse_is_refused_at_once_not_queued(
    typed: list[str], said: str, tmp_path: Path
) -> None:
    """`edit H address` (no value) used to queue the address cleared; a mistyped field or a value that is
    no latitude was queued too: each refused by the server, and quarantined for a supervisor to look at."""
    db = str(tmp_path / "d.sqlite")
    edit = fivestep("device", "--db", db, "edit", str(uuid.uuid4()), *typed, cwd=tmp_path, env=_HERE)
    assert (edit.returncode, edit.stdout) == (1, "")
    (line,) = edit.stderr.splitlines()
    assert line.startswith(said), line
    if not typed[0].startswith("address"):
        assert "(fields: address, lat, lon, status, recheck_class, monthly_benefit_fen)" in line
    status = fivestep("device", "--db", db, "status", cwd=tmp_path, env=_HERE)
    assert json.loads(status.stdout)["pending"] == 0


def test_a_device_sync_without_a_server_says_it_is_retrying_then_why_it_gave_up(
    client: Client, tmp_path: Path
) -> None:
    """Eight retries wait about two minutes: silent, `fivestep device sync` looked hung."""
    db = tmp_path / "d.sqlite"
    _signed_in(client, db)
    with socket.socket() as bound:  # bound but never listening: refused, and no other test can take it
        bound.bind(("127.0.0.1", 0))
        db.with_suffix(".server").write_text(f"http://127.0.0.1:{bound.getsockname()[1]}")
        sync = fivestep("device", "--db", str(db), "sync", "--retries", "2", cwd=tmp_path, env=_HERE)
    assert sync.returncode == 1, sync.stdout + sync.stderr
    assert sync.stderr.count("trying again in") == 2 and sync.stdout == ""
    assert sync.stderr.count("no answer from the server") == 3, sync.stderr
    assert sync.stderr.splitlines()[-1].startswith("device: no answer from the server"), sync.stderr


def test_a_sign_in_to_a_mistyped_server_keeps_the_server_the_device_syncs_with(
    client: Client, tmp_path: Path
) -> None:
    """`login --server` used to remember the server before signing in: after one mistyped URL (no answer
    there), the next `device sync` went to it with the right server's session."""
    db = tmp_path / "d.sqlite"
    _signed_in(client, db)
    db.with_suffix(".server").write_text("http://127.0.0.1:8000")
    with socket.socket() as bound:
        bound.bind(("127.0.0.1", 0))
        wrong = f"http://127.0.0.1:{bound.getsockname()[1]}"
        device = ("device", "--db", str(db))
        login = fivestep(
            *device,
            "login",
            "demo-worker-1",
            "--server",
            wrong,
            "--password",
            "demo",
            cwd=tmp_path,
            env=_HERE,
        )
        assert login.returncode == 1 and login.stderr.startswith("device: no answer from the server")
    assert db.with_suffix(".server").read_text() == "http://127.0.0.1:8000"
    schemeless = fivestep(
        *device,
        "login",
        "demo-worker-1",
        "--server",
        "localhost:8123",
        "--password",
        "demo",
        cwd=tmp_path,
        env=_HERE,
    )
    assert (schemeless.returncode, schemeless.stderr) == (
        1,
        "device: --server takes the server's URL, e.g. http://127.0.0.1:8000 (not 'localhost:8123')\n",
    )


def test_a_device_database_that_cannot_be_opened_or_a_visit_it_lacks_is_one_line_not_a_traceback(
    tmp_path: Path,
) -> None:
    folder = fivestep("device", "--db", str(tmp_path), "status", cwd=tmp_path, env=_HERE)
    assert folder.returncode == 1 and "Traceback" not in folder.stderr, folder.stderr
    assert folder.stderr.startswith(f"device: cannot open the device database {tmp_path} ("), folder.stderr
    visit = str(uuid.uuid4())
    answer = fivestep(
        "device",
        "--db",
        str(tmp_path / "d.sqlite"),
        "answer",
        visit,
        "step.look",
        "home_photos",
        cwd=tmp_path,
        env=_HERE,
    )
    # It used to print "unanswered", exit 0: a mistyped visit id looked like an empty answer.
    assert (answer.returncode, answer.stdout) == (1, "")
    assert answer.stderr == f"device: no visit {visit} on this device (sync first?)\n"


def test_a_device_that_never_synced_says_so_instead_of_listing_nothing(
    client: Client, tmp_path: Path
) -> None:
    """`device households` before any sync printed nothing and exited 0: a newcomer who skipped a step
    saw an empty community."""
    db = tmp_path / "d.sqlite"
    for command in ("households", "visits"):
        listed = fivestep("device", "--db", str(db), command, cwd=tmp_path, env=_HERE)
        assert (listed.returncode, listed.stdout) == (1, "")
        assert listed.stderr == (
            "device: nothing on this device yet: run `fivestep device login USERNAME`, "
            "then `fivestep device sync`\n"
        )
    _signed_in(client, db)
    listed = fivestep("device", "--db", str(db), "households", cwd=tmp_path, env=_HERE)
    assert listed.stderr == "device: nothing on this device yet: run `fivestep device sync`\n"
    # A rebuild cut off midway (a reset, then the network went) has no cursor either: it lists what it showed.
    answered: list[int] = []  # once set: the pulls still answered before the network goes away

    def network(path: str, body: dict[str, Any], token: str | None) -> tuple[int, Any]:
        if path.endswith("/pull") and answered:
            if answered[0] == 0:
                raise NetworkError("the network went away")
            answered[0] -= 1
        return httpx_transport(client)(path, body, token)

    device = Device(db, network)
    device.sync()
    shown = len(device.view("household"))
    run_db(client, lambda session: sync_admin.new_epoch(session, SYSTEM))
    answered.append(1)  # the reset answer; the rebuild's first page is lost
    with pytest.raises(NetworkError):
        device.sync()
    assert device.cursor is None
    device.close()
    listed = fivestep("device", "--db", str(db), "households", cwd=tmp_path, env=_HERE)
    assert listed.returncode == 0 and len(listed.stdout.splitlines()) == shown > 0


def _signed_in(client: Client, db: Path) -> None:
    """The device database of a tablet that signed in (to the in-process app) as demo-worker-1."""
    device = Device(db, httpx_transport(client))
    device.login("demo-worker-1", "demo")
    device.close()


def test_a_device_that_never_signed_in_is_told_so_at_once(tmp_path: Path) -> None:
    """It used to try the server for two minutes (8 retries), then say it had no answer: a newcomer who
    skipped `device login` waited for nothing, and was never told to sign in."""
    db = tmp_path / "d.sqlite"
    with socket.socket() as bound:
        bound.bind(("127.0.0.1", 0))
        db.with_suffix(".server").write_text(f"http://127.0.0.1:{bound.getsockname()[1]}")
        started = time.monotonic()
        sync = fivestep("device", "--db", str(db), "sync", cwd=tmp_path, env=_HERE)
    assert time.monotonic() - started < 30
    assert (sync.returncode, sync.stdout) == (1, "")
    assert sync.stderr.splitlines() == [
        "device: not signed in, or the session has ended: run `fivestep device login USERNAME` "
        "(edits made meanwhile stay queued)"
    ]


def test_a_device_is_told_to_sign_in_again_not_shown_the_servers_json() -> None:
    from sync.device_cli import _explained
    from sync.errors import ServerError

    ended = ServerError(401, {"error": {"code": "unauthorized", "message": "Send the session token"}})
    assert "fivestep device login" in _explained(ended)
    refused = ServerError(409, {"error": {"code": "out_of_order", "message": "expected seq 3"}})
    assert _explained(refused) == "the server refused (409 out_of_order): expected seq 3"


def test_migrate_then_create_user_then_sign_in(tmp_path: Path) -> None:
    migrated = fivestep("migrate", cwd=tmp_path)
    assert migrated.returncode == 0, migrated.stderr
    assert "revision" in migrated.stdout
    assert (tmp_path / "var" / "fivestep.db").exists()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_serve_demo_in_a_fresh_folder_then_create_user(tmp_path: Path) -> None:
    """What a newcomer does: serve with demo data in an empty folder, sign in, add a user."""
    server, base = _started(tmp_path, "--demo")
    try:
        login = httpx.post(
            f"{base}/api/v1/auth/login",
            json={"username": "demo-worker-1", "password": "demo", "device_id": "cli"},
        )
        assert login.status_code == 200
        _drive_a_device(base, tmp_path)
    finally:
        server.terminate()
        assert server.wait(timeout=15) == 0  # a graceful stop on SIGTERM
    assert '"msg": "stopped"' in (server.stderr.read() if server.stderr else "")
    assert (tmp_path / "var" / "fivestep.db").exists() and (tmp_path / "var" / "blobs").is_dir()
    # The database holds ID numbers and health unmasked, the store photos with their GPS: the owner's alone.
    private = [
        tmp_path / "var" / "fivestep.db",
        *(p for p in (tmp_path / "var" / "blobs").rglob("*") if p.is_file()),
    ]
    assert len(private) > 3 and [p for p in private if p.stat().st_mode & 0o077] == []
    created = fivestep(
        "create-user", "new-worker", "--role", "field_worker", "--jurisdiction", "C02",
        cwd=tmp_path, env={"FIVESTEP_NEW_PASSWORD": "long-enough-password"},
    )  # fmt: skip
    assert created.returncode == 0, created.stderr
    assert "created new-worker (field_worker)" in created.stdout
    duplicate = fivestep(
        "create-user", "new-worker", "--role", "field_worker", "--jurisdiction", "C02",
        cwd=tmp_path, env={"FIVESTEP_NEW_PASSWORD": "long-enough-password"},
    )  # fmt: skip
    assert duplicate.returncode == 1 and "taken" in duplicate.stderr
    wrong_level = fivestep(
        "create-user", "x-worker", "--role", "field_worker", "--jurisdiction", "S01",
        cwd=tmp_path, env={"FIVESTEP_NEW_PASSWORD": "long-enough-password"},
    )  # fmt: skip
    assert wrong_level.returncode == 1 and "community" in wrong_level.stderr
    purged = fivestep("sync-admin", "purge-tombstones", cwd=tmp_path)
    assert purged.returncode == 0 and "devices behind sequence" in purged.stdout
    epoch = fivestep("sync-admin", "new-epoch", cwd=tmp_path)
    assert epoch.returncode == 0 and "every device will rebuild" in epoch.stdout


def _drive_a_device(base: str, tmp_path: Path) -> None:
    """The README's device walk-through: sign in, sync, edit offline, sync, see the edit confirmed."""
    device = ("device", "--db", str(tmp_path / "tablet.sqlite"))
    mistyped = fivestep(
        *device, "login", "demo-worker-1", "--server", base, "--password", "dem0", cwd=tmp_path
    )
    # It used to say "not signed in, or the session has ended: run `fivestep device login`", on stdout.
    assert (mistyped.returncode, mistyped.stdout) == (1, ""), mistyped.stdout
    assert mistyped.stderr.splitlines() == [
        "device: the server refused (401 invalid_credentials): Wrong username or password."
    ]
    signed_in = fivestep(
        *device, "login", "demo-worker-1", "--server", base, "--password", "demo", cwd=tmp_path
    )
    assert signed_in.returncode == 0 and "signed in" in signed_in.stdout, signed_in.stderr
    first = fivestep(*device, "sync", cwd=tmp_path)
    assert first.returncode == 0 and "pulled" in first.stdout, first.stderr
    listed = fivestep(*device, "households", cwd=tmp_path).stdout.splitlines()
    household = listed[0].split()[0]
    cleared = fivestep(*device, "edit", household, "address", cwd=tmp_path)  # used to queue address=""
    assert cleared.returncode == 1 and "FIELD=VALUE" in cleared.stderr, cleared.stdout
    queued = fivestep(*device, "edit", household, "address=命令行改的地址", cwd=tmp_path)
    assert queued.returncode == 0 and "queued household.update.v1 seq 1" in queued.stdout
    visits = fivestep(*device, "visits", cwd=tmp_path).stdout.splitlines()
    visit = next(line.split()[0] for line in visits if " assigned " in line)
    (tmp_path / "kitchen.jpg").write_bytes(jpeg_with_gps(seed=5))
    wrong = fivestep(*device, "photo", visit, "step.look", "housing_ownership", "kitchen.jpg", cwd=tmp_path)
    assert wrong.returncode == 1 and "not a photo item" in wrong.stderr, wrong.stdout
    photo = fivestep(
        *device, "photo", visit, "step.look", "home_photos", "kitchen.jpg", "--view", "kitchen",
        "--gps", "38.041,114.512,6", cwd=tmp_path,
    )  # fmt: skip
    assert photo.returncode == 0 and "with visit.answer.v1 seq 2" in photo.stdout, photo.stdout
    status = json.loads(fivestep(*device, "status", cwd=tmp_path).stdout)
    assert (status["signed_in_as"], status["server"]) == ("demo-worker-1", base)
    assert (status["pending"], status["photos_to_send"]) == (2, 1)  # what only the tablet holds
    second = fivestep(*device, "sync", cwd=tmp_path)
    assert second.returncode == 0 and "2 edits confirmed, 1 photos sent" in second.stdout, second.stdout
    assert "命令行改的地址" in fivestep(*device, "households", cwd=tmp_path).stdout
    status = json.loads(fivestep(*device, "status", cwd=tmp_path).stdout)
    assert (status["pending"], status["photos_to_send"]) == (0, 0)
    assert "kitchen.jpg" in (photos := fivestep(*device, "photos", cwd=tmp_path).stdout)
    assert "stored  server: present" in photos, photos
    answer = fivestep(*device, "answer", visit, "step.look", "home_photos", cwd=tmp_path).stdout
    assert json.loads(answer) == {
        "photos": [
            {"sha256": hashlib.sha256((tmp_path / "kitchen.jpg").read_bytes()).hexdigest(), "view": "kitchen"}
        ]
    }
    # The tablet's next user: signed in to the server the last one used (it used to try 127.0.0.1:8000).
    colleague = fivestep(*device, "login", "demo-worker-2", "--password", "demo", cwd=tmp_path)
    assert colleague.returncode == 0, colleague.stderr
    assert colleague.stdout.startswith(f"signed in to {base} as demo-worker-2"), colleague.stdout


def _sync_an_edit(base: str, tmp_path: Path) -> None:
    """The walk-through's core, each command a new connection (so either process may answer it): sign
    in, sync, edit offline, sync, the edit confirmed. (The whole walk-through runs against one process in
    test_serve_demo_in_a_fresh_folder_then_create_user: its commands are the same code.)"""
    device = ("device", "--db", str(tmp_path / "tablet.sqlite"))
    login = fivestep(*device, "login", "demo-worker-1", "--server", base, "--password", "demo", cwd=tmp_path)
    assert login.returncode == 0, login.stderr
    assert fivestep(*device, "sync", cwd=tmp_path).returncode == 0
    household = fivestep(*device, "households", cwd=tmp_path).stdout.split()[0]
    assert fivestep(*device, "edit", household, "address=两个进程改的地址", cwd=tmp_path).returncode == 0
    synced = fivestep(*device, "sync", cwd=tmp_path)
    assert synced.returncode == 0 and "1 edits confirmed" in synced.stdout, synced.stdout
    assert "两个进程改的地址" in fivestep(*device, "households", cwd=tmp_path).stdout


@pytest.mark.parametrize("database", ["sqlite", "postgres"])
def test_serve_with_two_workers_shares_one_port(
    database: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """`--workers 2`: two processes behind one port, prepared once (migration, checklists, demo seed,
    the generated secret), each answering; a device syncs and edits through them; SIGTERM stops all."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FIVESTEP_")}
    if database == "postgres":
        env["FIVESTEP_DATABASE_URL"] = request.getfixturevalue("postgres_server").new_database(template=None)
        env["FIVESTEP_SECRET_KEY"] = "two-workers-test-secret"
        assert fivestep("migrate", cwd=tmp_path, env=env).returncode == 0
    server, base = _started(tmp_path, "--demo", "--workers", "2", env=env)
    try:
        assert len(_spawned_children(server.pid)) == 2
        for _ in range(6):  # fresh connections: the kernel spreads them over both processes
            assert httpx.get(f"{base}/health").status_code == 200
        _sync_an_edit(base, tmp_path)
    finally:
        server.terminate()
        assert server.wait(timeout=30) == 0
    log = server.stderr.read() if server.stderr else ""
    assert log.count('"msg": "started"') == 2 and log.count('"msg": "stopped"') == 2


def _started(cwd: Path, *args: str, env: dict[str, str] | None = None) -> tuple[subprocess.Popen[str], str]:
    """`fivestep serve ARGS` on a free port, once it answers /health; the process and its base URL."""
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "server.cli", "serve", *args, "--port", str(port)],
        cwd=cwd,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(server, base)
    except BaseException:
        server.kill()
        raise
    return server, base


def _wait_healthy(server: subprocess.Popen[str], base: str) -> None:
    deadline = time.monotonic() + 40
    while True:
        try:
            if httpx.get(f"{base}/health").status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline and server.poll() is None, (
            server.stderr.read() if server.stderr else ""
        )
        time.sleep(0.2)


def _spawned_children(parent: int) -> list[int]:
    """Worker processes of `parent` (multiprocessing's resource tracker is not one)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            cmdline = (stat.parent / "cmdline").read_bytes()
        except (OSError, IndexError, ValueError):
            continue
        if ppid == parent and b"spawn_main" in cmdline:
            found.append(int(stat.parent.name))
    return found


def test_serve_with_an_unreachable_database_says_so_and_exits(tmp_path: Path) -> None:
    with socket.socket() as probe:  # a port nobody listens on, held so no other test takes it
        probe.bind(("127.0.0.1", 0))
        url = f"postgresql+asyncpg://fivestep:secret@127.0.0.1:{probe.getsockname()[1]}/fivestep"
        env = {"FIVESTEP_DATABASE_URL": url, "FIVESTEP_SECRET_KEY": "k" * 32}
        served = fivestep("serve", "--port", "1", cwd=tmp_path, env=env)
    assert served.returncode != 0
    assert "fivestep: cannot reach the database: " in served.stderr
    assert "fivestep: preparing the database failed" in served.stderr
    assert "Traceback" not in served.stderr
    assert "secret" not in served.stderr  # the password in the URL


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc keeps freed memory; others differ")
def test_sign_ins_leave_the_servers_memory_where_it_was(tmp_path: Path) -> None:
    """scrypt needs 16 MB of scratch memory a sign-in; the server hands it back rather than keep it."""
    server, base = _started(tmp_path, "--demo")
    try:
        assert httpx.get(f"{base}/health").status_code == 200  # the request path's first-use costs
        before = _settled_rss_mb(server.pid)
        for n in range(4):
            login = httpx.post(
                f"{base}/api/v1/auth/login",
                json={"username": "demo-worker-1", "password": "demo", "device_id": f"rss-{n}"},
            )
            assert login.status_code == 200
        assert _settled_rss_mb(server.pid) - before < 8  # 16 MB more when it was kept
    finally:
        server.terminate()
        server.wait(timeout=15)


def _settled_rss_mb(pid: int) -> float:
    """The lowest RSS over half a second: what the server keeps, not what a request still holds for a
    moment after its answer went out (memory kept for good stays in every reading)."""
    readings = []
    for _ in range(6):
        readings.append(_rss_mb(pid))
        time.sleep(0.1)
    return min(readings)


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def test_reset_password_lets_a_locked_out_admin_back_in_and_ends_their_sessions(tmp_path: Path) -> None:
    """The last admin who lost their password has no admin to reset it through the API."""
    server, base = _started(tmp_path, "--demo")
    try:

        def sign_in(password: str) -> httpx.Response:
            body = {"username": "demo-admin", "password": password, "device_id": "desk-1"}
            return httpx.post(f"{base}/api/v1/auth/login", json=body)

        token = sign_in("demo").json()["token"]
        reset = fivestep(
            "reset-password", "demo-admin", cwd=tmp_path, env={"FIVESTEP_NEW_PASSWORD": "a-new-one!"}
        )
        assert reset.returncode == 0, reset.stderr
        assert "new password set for demo-admin" in reset.stdout
        me = httpx.get(f"{base}/api/v1/auth/me", headers={"Authorization": f"Bearer {token}"})
        assert me.status_code == 401
        assert sign_in("demo").status_code == 401 and sign_in("a-new-one!").status_code == 200

        short = fivestep("reset-password", "demo-admin", "--password", "short", cwd=tmp_path)
        assert (short.returncode, short.stderr) == (1, "fivestep: a password is 8 to 256 characters\n")
        nobody = fivestep("reset-password", "nobody", "--password", "long enough", cwd=tmp_path)
        assert (nobody.returncode, nobody.stderr) == (1, "fivestep: no user named 'nobody'\n")
        assert sign_in("a-new-one!").status_code == 200

        # Typed as sign-in reads it; a deactivated account stays so unless told.
        admin = {"Authorization": f"Bearer {sign_in('a-new-one!').json()['token']}"}
        worker = httpx.get(f"{base}/api/v1/admin/users?role=field_worker", headers=admin).json()["items"][0]
        httpx.patch(f"{base}/api/v1/admin/users/{worker['id']}", json={"active": False}, headers=admin)
        env = {"FIVESTEP_NEW_PASSWORD": "worker-pass"}
        kept_out = fivestep("reset-password", f" {worker['username'].upper()} ", cwd=tmp_path, env=env)
        assert kept_out.returncode == 0 and "is deactivated: add --reactivate" in kept_out.stderr
        body = {"username": worker["username"], "password": "worker-pass", "device_id": "tab-9"}
        assert httpx.post(f"{base}/api/v1/auth/login", json=body).status_code == 401
        let_in = fivestep("reset-password", worker["username"], "--reactivate", cwd=tmp_path, env=env)
        assert let_in.returncode == 0 and let_in.stderr == "", let_in.stderr
        assert httpx.post(f"{base}/api/v1/auth/login", json=body).status_code == 200
    finally:
        server.terminate()
        server.wait(timeout=15)
