"""End-to-end photo ingest: 12 MP JPEGs through tus over loopback into a real `fivestep serve` process.

For each store (a local folder, then S3 served by moto on loopback) a fresh server with the demo data is
started and measured three ways:

- **one client**: photos sent one after another (creation, then one PATCH with the whole file; the PATCH
  answers once the photo is verified, EXIF read, both derivatives made, hashed and stored), in ms/photo;
  against the **floor** measured in this run: a plain full decode of the same file (`Image.open().load()`);
- **8 clients** at once, in photos per second, with the CPU the server and the clients used meanwhile and
  the share of the cores they kept busy (the clients' files are made and hashed before the clock starts);
- **20 photos at once**, the server's peak resident memory (VmHWM of the server process).

Also measured in this run, in the bench's own process: the **pipeline alone** (`media.pipeline.process_image`,
everything the server does to a photo's bytes but receive and store them) on as many threads as the server
has image workers, in photos per second: what 8 clients could reach if HTTP, the database, the store and
the clients themselves cost nothing. The 8 clients' figure is also given as a share of it.

Every photo is a distinct file (a JPEG comment with a counter), so content addressing never skips work.
`python -m bench photos [--quick]`; results in bench/results/photos.json.
"""

from __future__ import annotations

import argparse
import base64
import functools
import hashlib
import io
import logging
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from itertools import count
from pathlib import Path
from typing import Any, NamedTuple

import httpx
from PIL import Image, ImageDraw

from bench.report import save, table
from bench.threads import seconds_all_at_once

ROOT = Path(__file__).resolve().parents[1]
SIZE = (4000, 3000)  # 12 MP
QUALITY = 90
TUS = {"Tus-Resumable": "1.0.0"}
_serial = count()


def make_photo(seed: int = 1) -> bytes:
    """A 12 MP JPEG of about 2.6 MB: smooth shapes under sensor-like noise (cheap to make, dear to encode)."""
    rng = random.Random(seed)
    small = Image.linear_gradient("L").resize((500, 375)).convert("RGB")
    draw = ImageDraw.Draw(small)
    for _ in range(60):
        x, y = rng.randrange(500), rng.randrange(375)
        box = (x, y, x + rng.randrange(20, 200), y + rng.randrange(20, 200))
        draw.ellipse(box, fill=(rng.randrange(256), rng.randrange(256), rng.randrange(256)))
    base = small.resize(SIZE, Image.Resampling.BICUBIC)
    noisy = Image.blend(base, Image.effect_noise(SIZE, 40).convert("RGB"), 0.12)
    buffer = io.BytesIO()
    noisy.save(buffer, "JPEG", quality=QUALITY)
    return buffer.getvalue()


def variant(photo: bytes) -> bytes:
    """The same image as a different file: a JPEG comment (COM segment) right after the SOI marker."""
    text = f"fivestep bench {os.getpid()} {next(_serial)}".encode()
    return photo[:2] + b"\xff\xfe" + (len(text) + 2).to_bytes(2, "big") + text + photo[2:]


def pipeline_alone(photo: bytes, threads: int, per_thread: int = 8) -> float:
    """Photos per second of the image pipeline on ``threads`` threads at once, distinct files from memory."""
    from media.pipeline import process_image

    process_image(variant(photo))  # the first call imports and sets up what the others reuse
    files = [[variant(photo) for _ in range(per_thread)] for _ in range(threads)]

    def work(batch: list[bytes]) -> None:
        for data in batch:
            process_image(data)

    seconds = seconds_all_at_once([functools.partial(work, batch) for batch in files])
    return threads * per_thread / seconds


def floor_ms(photo: bytes, runs: int = 7) -> float:
    """Median time of a plain full decode of the file."""
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        with Image.open(io.BytesIO(photo)) as im:
            im.load()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


# -- the server -------------------------------------------------------------------------------------


class Server:
    """A real `fivestep serve` process on a free loopback port (SQLite with the demo data unless told)."""

    def __init__(
        self,
        store: str,
        tmp: Path,
        image_workers: int,
        *,
        database_url: str | None = None,
        name: str = "server",
        workers: int = 1,
        root: Path = ROOT,
    ) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.base = f"http://127.0.0.1:{self.port}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("FIVESTEP_")} | {
            "FIVESTEP_DATABASE_URL": database_url or f"sqlite+aiosqlite:///{tmp / 'bench.db'}",
            "FIVESTEP_BLOB_STORE": store,
            "FIVESTEP_VAR_DIR": str(tmp),
            "FIVESTEP_SECRET_KEY": "bench-secret",
            "FIVESTEP_LOG_LEVEL": "WARNING",
            "FIVESTEP_IMAGE_WORKERS": str(image_workers),
            "PYTHONPATH": str(root),  # never this process's path: it may name another checkout
        }
        demo = [] if database_url else ["--demo"]  # a given database comes loaded and migrated
        self.log = (tmp / f"{name}.log").open("wb")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "server.cli",
                "serve",
                *demo,
                "--port",
                str(self.port),
                "--workers",
                str(workers),
            ],
            cwd=root,  # the code served: another checkout's, to measure it against this one
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        self._wait()

    def _wait(self) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode}")
            try:
                if httpx.get(f"{self.base}/health", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise RuntimeError("server did not become healthy")

    def memory_mb(self, field: str) -> float:
        """VmRSS (now) or VmHWM (peak so far) of the server process, in MB."""
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
        raise RuntimeError(f"{field} not in /proc status")

    def cpu_seconds(self) -> float:
        """User + system CPU time the server process has used so far."""
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(20)
        self.log.close()


def sign_in(base: str, device: str) -> dict[str, str]:
    response = httpx.post(
        f"{base}/api/v1/auth/login",
        json={"username": "demo-worker-1", "password": "demo", "device_id": device},
    )
    response.raise_for_status()
    return {"Authorization": f"Bearer {response.json()['token']}"}


class Upload(NamedTuple):
    """A photo as a tablet holds it before sending: its bytes and the tus metadata naming their SHA-256."""

    data: bytes
    metadata: str


def upload(data: bytes) -> Upload:
    """Hashing the file is the tablet's own work: done before any clock starts, as the devices' push
    bodies are (`bench.sync.push_bodies`), so 8 clients on the server's two cores do not take from it."""
    fields = {"sha256": hashlib.sha256(data).hexdigest(), "filename": "p.jpg"}
    return Upload(data, ",".join(f"{k} {base64.b64encode(v.encode()).decode()}" for k, v in fields.items()))


def ingest(client: httpx.Client, auth: dict[str, str], photo: Upload) -> float:
    """One photo through tus (creation, one PATCH); seconds until the server answered it stored."""
    started = time.perf_counter()
    created = client.post(
        "/api/v1/uploads",
        headers=TUS | auth | {"Upload-Length": str(len(photo.data)), "Upload-Metadata": photo.metadata},
    )
    assert created.status_code == 201, created.text
    done = client.patch(
        created.headers["location"],
        content=photo.data,
        headers=TUS | auth | {"Content-Type": "application/offset+octet-stream", "Upload-Offset": "0"},
    )
    assert done.status_code == 204, done.text
    return time.perf_counter() - started


class Run(NamedTuple):
    """The clients' photos, timed from the moment every client is ready to send until the last is stored."""

    seconds: float
    server_cpu: float  # CPU seconds of the server process over those seconds
    bench_cpu: float  # and of this process: the clients' sending, never their files' preparation


def in_parallel(server: Server, auths: list[dict[str, str]], photo: bytes, per_client: int) -> Run:
    """Each client sends ``per_client`` photos, all clients at once."""
    barrier = threading.Barrier(len(auths) + 1)
    errors: list[BaseException] = []

    def work(auth: dict[str, str]) -> None:
        files = [upload(variant(photo)) for _ in range(per_client)]
        with httpx.Client(base_url=server.base, timeout=120) as client:
            barrier.wait()
            try:
                for data in files:
                    ingest(client, auth, data)
            except BaseException as exc:
                errors.append(exc)

    threads = [threading.Thread(target=work, args=(auth,)) for auth in auths]
    for thread in threads:
        thread.start()
    barrier.wait()  # every client has made and hashed its files: none of that is counted below
    started, server_cpu, bench_cpu = time.perf_counter(), server.cpu_seconds(), _own_cpu()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return Run(time.perf_counter() - started, server.cpu_seconds() - server_cpu, _own_cpu() - bench_cpu)


def measure(
    store_name: str,
    spec: str,
    tmp: Path,
    photo: bytes,
    floor: float,
    sequential: int,
    per_client: int,
    workers: int,
) -> dict[str, Any]:
    server = Server(spec, tmp, workers)
    try:
        auths = [sign_in(server.base, f"bench-{i}") for i in range(20)]
        idle = server.memory_mb("VmRSS")
        burst = in_parallel(server, auths, photo, 1).seconds
        peak = server.memory_mb("VmHWM")
        with httpx.Client(base_url=server.base, timeout=120) as client:
            ingest(client, auths[0], upload(variant(photo)))  # warm-up
            times = [ingest(client, auths[0], upload(variant(photo))) for _ in range(sequential)]
        eight = in_parallel(server, auths[:8], photo, per_client)
    finally:
        server.stop()
    ms = statistics.median(times) * 1000
    return {
        "store": store_name,
        "ms_per_photo": ms,
        "photos_per_s_1_client": 1000 / ms,
        "floor_decode_ms": floor,
        "ratio_to_floor": ms / floor,
        "photos_per_s_8_clients": 8 * per_client / eight.seconds,
        "server_cpu_ms_per_photo": eight.server_cpu / (8 * per_client) * 1000,
        "bench_cpu_ms_per_photo": eight.bench_cpu / (8 * per_client) * 1000,
        # of the two cores, the share the server and the clients kept busy
        "cores_busy": (eight.server_cpu + eight.bench_cpu) / eight.seconds / len(os.sched_getaffinity(0)),
        "burst_20_s": burst,
        "rss_idle_mb": idle,
        "rss_peak_mb": peak,
    }


def _own_cpu() -> float:
    """CPU seconds of this process: the clients (and moto, for the S3 run) compete for the same cores."""
    times = os.times()
    return times.user + times.system


@contextmanager
def moto_s3() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    for name, value in {
        "AWS_ACCESS_KEY_ID": "bench",
        "AWS_SECRET_ACCESS_KEY": "bench",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        os.environ.setdefault(name, value)
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto logs every request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        yield f"s3://bench:bench@{host}:{port}/bench?secure=false&region=us-east-1"
    finally:
        server.stop()


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench photos")
    parser.add_argument("--quick", action="store_true", help="fewer photos (a smoke run)")
    parser.add_argument("--stores", default="local,s3", help="comma-separated: local, s3")
    parser.add_argument("--image-workers", type=int, default=2, help="FIVESTEP_IMAGE_WORKERS of the server")
    args = parser.parse_args(argv)
    sequential, per_client = (3, 1) if args.quick else (12, 5)
    photo = make_photo()
    floor = floor_ms(photo)
    print(f"photo: {SIZE[0]}x{SIZE[1]} JPEG, {len(photo) / 1e6:.2f} MB; plain decode (floor) {floor:.1f} ms")
    alone = pipeline_alone(photo, args.image_workers)
    print(
        f"the pipeline alone on {args.image_workers} threads (no HTTP, store or database): {alone:.1f} photos/s"
    )
    rows = []
    for store in args.stores.split(","):
        with tempfile.TemporaryDirectory(prefix="fivestep-bench-") as tmp:
            if store == "local":
                rows.append(
                    measure(
                        "local",
                        str(Path(tmp) / "blobs"),
                        Path(tmp),
                        photo,
                        floor,
                        sequential,
                        per_client,
                        args.image_workers,
                    )
                )
            else:
                with moto_s3() as spec:
                    rows.append(
                        measure(
                            "s3 (moto)",
                            spec,
                            Path(tmp),
                            photo,
                            floor,
                            sequential,
                            per_client,
                            args.image_workers,
                        )
                    )
        rows[-1]["pipeline_alone_photos_per_s"] = alone
        rows[-1]["share_of_pipeline_alone"] = rows[-1]["photos_per_s_8_clients"] / alone
        print(table(rows[-1:]), flush=True)
    print()
    print(table(rows))
    path = save("photos", {"photo_bytes": len(photo), "cpus": os.cpu_count(), "results": rows})
    print(f"\nwritten to {path.relative_to(ROOT)}")
    return 0
