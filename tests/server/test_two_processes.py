"""Two real `fivestep serve` processes on one PostgreSQL and one S3 endpoint, as behind a load balancer.

Nothing that matters may live in one process's memory: a token, a sign-in failure counter, a household's
version or a device revocation made through one process must hold on the other.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from server.demo import demo_id
from server.domain.id_numbers import check_character
from tests.fixtures.postgres import PostgresServer
from tests.fixtures.s3 import S3Server

pytestmark = pytest.mark.postgres

ROOT = Path(__file__).resolve().parents[2]
SECRET = "two-processes-test-secret"
START_DEADLINE = 20.0
STOP_DEADLINE = 10.0
LOGIN = "/api/v1/auth/login"
GRACEFUL_STATUSES = (0,)  # the CLI turns a graceful SIGTERM stop into exit 0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class Process:
    name: str
    popen: subprocess.Popen[bytes]
    base_url: str
    stderr_path: Path

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")[-4000:]


@dataclass
class Cluster:
    """The two processes and a client for each; `pick(i)` alternates like a round-robin balancer."""

    a: httpx.Client
    b: httpx.Client

    def pick(self, i: int) -> httpx.Client:
        return (self.a, self.b)[i % 2]


def _start(name: str, env: dict[str, str], tmp: Path) -> Process:
    port = _free_port()
    stderr_path = tmp / f"{name}.stderr"
    with stderr_path.open("wb") as err:
        popen = subprocess.Popen(
            [sys.executable, "-m", "server.cli", "serve", "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            cwd=ROOT,
            stdout=err,
            stderr=subprocess.STDOUT,
        )
    return Process(name, popen, f"http://127.0.0.1:{port}", stderr_path)


def _wait_healthy(process: Process, deadline: float) -> None:
    last = "no answer yet"
    while time.monotonic() < deadline:
        if process.popen.poll() is not None:
            pytest.fail(
                f"server {process.name} exited with {process.popen.returncode} before answering:\n"
                f"{process.stderr()}"
            )
        try:
            response = httpx.get(f"{process.base_url}/health", timeout=2.0)
            if response.status_code == 200:
                return
            last = f"{response.status_code} {response.text}"
        except httpx.TransportError as exc:
            last = repr(exc)
        time.sleep(0.1)
    pytest.fail(f"server {process.name} not healthy within {START_DEADLINE}s ({last}):\n{process.stderr()}")


def _terminate(process: Process) -> int | None:
    """SIGTERM and wait; the exit status, or None (after a SIGKILL) when it did not stop in time."""
    if process.popen.poll() is not None:
        return process.popen.returncode
    process.popen.send_signal(signal.SIGTERM)
    try:
        return process.popen.wait(timeout=STOP_DEADLINE)
    except subprocess.TimeoutExpired:
        process.popen.kill()
        process.popen.wait()
        return None


def _stop(process: Process) -> str | None:
    """SIGTERM, then wait; the problem as text when the stop was not graceful.

    Uvicorn re-raises a caught SIGTERM once its graceful shutdown is done, so the process currently ends
    "killed by SIGTERM" rather than with status 0; both count here, and
    `test_sigterm_exit_status_is_zero` pins the status itself.
    """
    code = _terminate(process)
    if code is None:
        return f"server {process.name} ignored SIGTERM for {STOP_DEADLINE}s:\n{process.stderr()}"
    if code not in GRACEFUL_STATUSES:
        return f"server {process.name} exited with {code} on SIGTERM:\n{process.stderr()}"
    return None


def _server_env(database_url: str, s3_server: S3Server, tmp: Path, *, log_level: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FIVESTEP_")}
    return env | {
        "FIVESTEP_DATABASE_URL": database_url,
        "FIVESTEP_BLOB_STORE": s3_server.url("twoproc"),
        "FIVESTEP_SECRET_KEY": SECRET,
        "FIVESTEP_LOG_LEVEL": log_level,
        "FIVESTEP_VAR_DIR": str(tmp / "var"),
    }


@pytest.fixture(scope="module")
def cluster(
    postgres_server: PostgresServer, s3_server: S3Server, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    tmp = tmp_path_factory.mktemp("two-processes")
    env = _server_env(postgres_server.new_database(), s3_server, tmp, log_level="WARNING")
    processes: list[Process] = []
    try:
        # Started together, so both also race to create the bucket.
        for name in ("A", "B"):
            processes.append(_start(name, env, tmp))
        deadline = time.monotonic() + START_DEADLINE
        for process in processes:
            _wait_healthy(process, deadline)
        with (
            httpx.Client(base_url=processes[0].base_url, timeout=10.0) as a,
            httpx.Client(base_url=processes[1].base_url, timeout=10.0) as b,
        ):
            yield Cluster(a, b)
    finally:
        problems = [p for p in (_stop(process) for process in processes) if p]
    assert not problems, "\n".join(problems)


def sign_in(client: httpx.Client, username: str, device: str, password: str = "demo") -> httpx.Response:
    return client.post(LOGIN, json={"username": username, "password": password, "device_id": device})


def bearer(client: httpx.Client, username: str, device: str) -> dict[str, str]:
    response = sign_in(client, username, device)
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['token']}"}


def id_number(first17: str) -> str:
    return first17 + check_character(first17)


def test_a_token_from_one_process_works_on_the_other_until_signed_out_anywhere(cluster: Cluster) -> None:
    headers = bearer(cluster.a, "demo-worker-1", "rr-tablet")
    for i in range(4):  # round robin: A, B, A, B
        me = cluster.pick(i).get("/api/v1/auth/me", headers=headers)
        assert me.status_code == 200, me.text
        assert me.json()["username"] == "demo-worker-1"

    assert cluster.b.post("/api/v1/auth/logout", headers=headers).status_code == 204

    for client in (cluster.a, cluster.b):
        after = client.get("/api/v1/auth/me", headers=headers)
        assert after.status_code == 401
        assert after.json()["error"]["code"] == "invalid_token"


def test_sign_in_failures_are_counted_across_processes(cluster: Cluster) -> None:
    for client in (cluster.a, cluster.b, cluster.a, cluster.b, cluster.a):  # 3 on A, 2 on B
        wrong = sign_in(client, "demo-worker-3", "throttle-tablet", password="guess")
        assert wrong.status_code == 401, wrong.text

    for client in (cluster.a, cluster.b):
        locked = sign_in(client, "demo-worker-3", "throttle-tablet")
        assert locked.status_code == 429, locked.text
        assert int(locked.headers["retry-after"]) > 0
        assert locked.json()["error"]["code"] == "too_many_requests"


def test_a_household_written_through_one_process_is_versioned_on_both(cluster: Cluster) -> None:
    headers = bearer(cluster.a, "demo-admin", "admin-desk")
    registry_no = f"TP-{uuid.uuid4().hex[:8]}"
    created = cluster.a.post(
        "/api/v1/households",
        headers=headers,
        json={
            "registry_no": registry_no,
            "community_id": str(demo_id("node", "C01")),
            "address": "和平路 12号",
            "members": [
                {
                    "name": "王秀英",
                    "relation": "applicant",
                    "id_number": id_number("13010219600101002"),
                    "sex": "female",
                }
            ],
        },
    )
    assert created.status_code == 201, created.text
    household = created.json()
    url = f"/api/v1/households/{household['id']}"

    read = cluster.b.get(url, headers=headers)
    assert read.status_code == 200, read.text
    assert read.json()["registry_no"] == registry_no
    assert read.json()["version"] == household["version"]
    assert len(read.json()["members"]) == 1

    patched = cluster.b.patch(
        url, headers=headers, json={"version": household["version"], "address": "解放街 3号"}
    )
    assert patched.status_code == 200, patched.text
    assert patched.json()["version"] == household["version"] + 1

    stale = cluster.a.patch(
        url, headers=headers, json={"version": household["version"], "address": "建设巷 7号"}
    )
    assert stale.status_code == 409, stale.text
    error: dict[str, Any] = stale.json()["error"]
    assert error["code"] == "stale_version"
    assert error["details"] == {"current_version": household["version"] + 1}
    assert cluster.a.get(url, headers=headers).json()["address"] == "解放街 3号"


def test_a_device_revoked_through_one_process_is_refused_by_the_other(cluster: Cluster) -> None:
    worker = bearer(cluster.b, "demo-worker-2", "lost-tablet")
    admin = bearer(cluster.a, "demo-admin", "admin-desk-2")
    user_id = str(demo_id("user", "demo-worker-2"))

    devices = cluster.a.get("/api/v1/admin/devices", headers=admin, params={"user_id": user_id})
    assert devices.status_code == 200, devices.text
    (device,) = [d for d in devices.json() if d["device_id"] == "lost-tablet"]
    assert cluster.b.get("/api/v1/auth/me", headers=worker).status_code == 200

    revoked = cluster.a.post(f"/api/v1/admin/devices/{device['id']}/revoke", headers=admin)
    assert revoked.status_code == 200, revoked.text
    assert revoked.json()["revoked_at"] is not None

    assert cluster.b.get("/api/v1/auth/me", headers=worker).status_code == 401
    again = sign_in(cluster.b, "demo-worker-2", "lost-tablet")
    assert again.status_code == 403, again.text
    assert again.json()["error"]["code"] == "device_revoked"
    # The same user on another device is unaffected.
    assert sign_in(cluster.b, "demo-worker-2", "new-tablet").status_code == 200


def test_both_processes_reach_the_shared_blob_store(cluster: Cluster) -> None:
    for client in (cluster.a, cluster.b):
        health = client.get("/health")
        assert health.status_code == 200, health.text
        assert health.json() == {"status": "ok", "database": "ok", "blob_store": "ok"}


def test_an_upload_begun_on_one_process_is_finished_on_the_other(cluster: Cluster) -> None:
    from tests.images import jpeg_with_gps
    from tests.tus import TUS, metadata, sha256

    photo = jpeg_with_gps(seed=99)
    headers = bearer(cluster.a, "demo-worker-1", "upload-tablet")
    created = cluster.a.post(
        "/api/v1/uploads",
        headers=TUS | headers | {"Upload-Length": str(len(photo)), "Upload-Metadata": metadata(photo)},
    )
    assert created.status_code == 201, created.text
    location = created.headers["location"]
    offset = 0
    for i, end in enumerate((20_000, 45_000, len(photo))):  # A, B, A: pieces staged in S3 by both
        client = cluster.pick(i)
        assert int(client.head(location, headers=TUS | headers).headers["upload-offset"]) == offset
        sent = client.patch(
            location,
            content=photo[offset:end],
            headers=TUS
            | headers
            | {"Content-Type": "application/offset+octet-stream", "Upload-Offset": str(offset)},
        )
        assert sent.status_code == 204, sent.text
        offset = end
    for client in (cluster.a, cluster.b):
        got = client.get(f"/api/v1/photos/{sha256(photo)}", headers=headers)
        assert got.status_code == 200, got.text
        assert httpx.get(got.json()["thumbnail"]["url"]).status_code == 200  # presigned on S3


@dataclass
class Stopped:
    status: int | None
    seconds: float
    output: str


@pytest.fixture(scope="module")
def stopped_on_sigterm(
    postgres_server: PostgresServer, s3_server: S3Server, tmp_path_factory: pytest.TempPathFactory
) -> Stopped:
    """A third process, at INFO so its lifespan's "stopped" line shows, stopped with SIGTERM."""
    tmp = tmp_path_factory.mktemp("sigterm")
    process = _start("C", _server_env(postgres_server.new_database(), s3_server, tmp, log_level="INFO"), tmp)
    try:
        _wait_healthy(process, time.monotonic() + START_DEADLINE)
    except BaseException:
        _terminate(process)
        raise
    started = time.monotonic()
    status = _terminate(process)
    return Stopped(status, time.monotonic() - started, process.stderr())


def test_sigterm_stops_a_process_gracefully(stopped_on_sigterm: Stopped) -> None:
    assert stopped_on_sigterm.status is not None, f"ignored SIGTERM:\n{stopped_on_sigterm.output}"
    assert stopped_on_sigterm.status in GRACEFUL_STATUSES, stopped_on_sigterm.output
    # The lifespan's shutdown ran (store closed, database pools disposed): not a bare kill.
    assert '"msg": "stopped"' in stopped_on_sigterm.output, stopped_on_sigterm.output
    assert '"level": "error"' not in stopped_on_sigterm.output, stopped_on_sigterm.output


def test_sigterm_exit_status_is_zero(stopped_on_sigterm: Stopped) -> None:
    assert stopped_on_sigterm.status == 0, stopped_on_sigterm.output
