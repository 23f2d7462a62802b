"""The device's tus 1.0 client: one file sent in checksummed chunks, resumed from the server's offset.

What the reference device uses to send its photos (docs/uploads.md). Only a chunk is ever in memory. Every
answer the client cannot act on is raised: ``NetworkError`` (nothing is known; ask again later from the
same upload URL), ``ServerError`` (a status the caller decides about, e.g. 503 with Retry-After) or
``Refused`` (the server will never take this file: not an image, wrong SHA-256, ...).
"""

from __future__ import annotations

import base64
import hashlib
import mimetypes
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, NamedTuple, Protocol

import msgspec

from sync.errors import NetworkError, NotTheServers, ServerError, network_errors

UPLOADS = "/api/v1/uploads"
TUS = {"Tus-Resumable": "1.0.0"}
CHUNK_SIZE = 1024 * 1024
"""Small enough that a drop on a weak link loses little (a checksummed chunk is kept whole or not at all)."""

# 410 codes that mean "this upload is gone, start a new one"; any other 410 code is a refusal of the file.
_START_AGAIN = frozenset({"upload_expired", "staging_lost"})
_SMALLEST_CHUNK = 4 * 1024
"""Below a proxy's body limit, as far as a chunk is halved for one (nginx's default is 1 MiB)."""
_RESTARTS = 3
"""Creations per call: an upload that keeps expiring under us is a server problem, not ours to loop on."""


class Reply(NamedTuple):
    status: int
    headers: Mapping[str, str]
    """Lower-case names."""
    body: bytes


class RawTransport(Protocol):
    def __call__(self, method: str, path: str, headers: dict[str, str], content: bytes = b"") -> Reply:
        """Send one request; raise NetworkError if the request or its answer was lost."""
        ...


class Refused(Exception):
    """The server refused the file for good (``code`` as in docs/uploads.md: not_an_image, ...)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code


class LocalFileDamaged(Exception):
    """The device's own copy is missing, shorter than when it was taken, or no longer the file it was
    (the server found another SHA-256): nothing the server can mend."""

    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


class LocalFile(NamedTuple):
    path: Path
    sha256: str
    length: int
    filename: str
    content_type: str

    @classmethod
    def of(cls, path: Path) -> LocalFile:
        content_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        return cls(path, file_sha256(path), path.stat().st_size, path.name, content_type)


def httpx_raw_transport(client: Any) -> RawTransport:
    """A raw transport over an httpx.Client (a real server, or Litestar's TestClient in-process)."""

    def send(method: str, path: str, headers: dict[str, str], content: bytes = b"") -> Reply:
        with network_errors():
            response = client.request(method, path, headers=headers, content=content or None)
        return Reply(
            response.status_code, {k.lower(): v for k, v in response.headers.items()}, response.content
        )

    return send


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        while block := stream.read(CHUNK_SIZE):
            digest.update(block)
    return digest.hexdigest()


def send_file(
    transport: RawTransport,
    token: str,
    file: LocalFile,
    url: str | None,
    remember_url: Callable[[str | None], None],
    *,
    chunk_size: int = CHUNK_SIZE,
) -> None:
    """Make sure the server holds ``file``, resuming the upload at ``url`` if there is one.

    ``remember_url`` is called with a new upload's URL before its first byte is sent (so a crash or a lost
    answer resumes it instead of starting over) and with None when the upload is gone.
    Returns when the server has stored (and processed) the file.
    """
    auth = TUS | {"Authorization": f"Bearer {token}"}
    _check_local(file)
    try:
        _send(transport, auth, file, url, remember_url, chunk_size)
    except Refused as exc:
        # Every chunk is checksummed, so the bytes arrived as the device read them: its copy changed since
        # the photo was taken (the SHA-256 is of the file as it was then). Taking the photo again mends it.
        if exc.code == "sha256_mismatch":
            raise LocalFileDamaged("file_damaged") from exc
        raise


def _send(
    transport: RawTransport,
    auth: dict[str, str],
    file: LocalFile,
    url: str | None,
    remember_url: Callable[[str | None], None],
    chunk_size: int,
) -> None:
    for _ in range(_RESTARTS):
        offset = None if url is None else _offset(transport, auth, url)
        if url is None or offset is None:
            url, offset = _create(transport, auth, file)
            remember_url(url)
        if _send_rest(transport, auth, file, url, offset, chunk_size):
            return
        url = None
        remember_url(None)
    raise ServerError(410, f"the server dropped the upload of {file.filename} {_RESTARTS} times")


def _check_local(file: LocalFile) -> None:
    try:
        size = file.path.stat().st_size
    except FileNotFoundError:
        raise LocalFileDamaged("file_missing") from None
    if size != file.length:
        raise LocalFileDamaged("file_damaged")


def _create(transport: RawTransport, auth: dict[str, str], file: LocalFile) -> tuple[str, int]:
    metadata = {"sha256": file.sha256, "filename": file.filename, "content_type": file.content_type}
    headers = auth | {
        "Upload-Length": str(file.length),
        "Upload-Metadata": ",".join(
            f"{k} {base64.b64encode(v.encode()).decode()}" for k, v in metadata.items()
        ),
    }
    reply = transport("POST", UPLOADS, headers)
    if reply.status != 201:
        raise _failure(reply)
    # Content addressing: a file the server already holds is created complete (offset = length).
    return reply.headers["location"], int(reply.headers["upload-offset"])


def _offset(transport: RawTransport, auth: dict[str, str], url: str) -> int | None:
    """The server's offset, or None when the upload is gone (expired, cleaned up, lost its bytes)."""
    reply = transport("HEAD", url, auth)
    if reply.status == 200:
        return int(reply.headers["upload-offset"])
    if reply.status == 404:
        return None
    # A HEAD answer has no body to say whether a 410 is an expiry or a refusal, nor which refusal a 422 (HEAD
    # finishing the upload) is; an empty PATCH does (the server checks an upload is usable before its offset).
    if reply.status in (410, 422) and _is_gone(_patch(transport, auth, url, 0, b"")):
        return None
    raise _failure(reply)


def _send_rest(
    transport: RawTransport, auth: dict[str, str], file: LocalFile, url: str, offset: int, chunk_size: int
) -> bool:
    """Send from ``offset`` to the end; False when the upload turned out to be gone (start again)."""
    with file.path.open("rb") as stream:
        while offset < file.length:
            stream.seek(offset)
            chunk = stream.read(chunk_size)
            if not chunk:  # shorter than it was: never send empty PATCHes forever
                raise LocalFileDamaged("file_damaged")
            reply = _patch(transport, auth, url, offset, chunk)
            if reply.status == 413 and not _from_the_server(reply) and chunk_size > _SMALLEST_CHUNK:
                chunk_size //= 2  # a proxy's body limit below a chunk: smaller chunks pass it
            elif reply.status == 204:
                offset = int(reply.headers["upload-offset"])
            elif reply.status == 409 and _code(reply) == "offset_mismatch":
                offset = int(_details(reply)["upload_offset"])  # resume where the server is
            elif reply.status in (404, 410) and _is_gone(reply):
                return False
            elif reply.status == 460:
                raise NetworkError("a chunk arrived damaged (checksum mismatch); send it again")
            else:
                raise _failure(reply)
    return True


def _patch(transport: RawTransport, auth: dict[str, str], url: str, offset: int, chunk: bytes) -> Reply:
    checksum = base64.b64encode(hashlib.sha256(chunk).digest()).decode()
    headers = auth | {
        "Content-Type": "application/offset+octet-stream",
        "Upload-Offset": str(offset),
        "Upload-Checksum": f"sha256 {checksum}",
    }
    return transport("PATCH", url, headers, chunk)


def _is_gone(reply: Reply) -> bool:
    """True if the upload is gone and a new one may start; raises Refused when the file was refused."""
    if reply.status == 404 or _code(reply) in _START_AGAIN:
        return True
    raise _failure(reply)


def _failure(reply: Reply) -> Exception:
    if not _from_the_server(reply):
        # A proxy's page (nginx's 413 while its body limit is too small, a 404 while misrouted), a
        # captive portal's: the server's answer, if any, is lost. Refusing the file on it would be for good.
        return NotTheServers(f"HTTP {reply.status}: the answer is not the server's (not JSON)")
    if reply.status in (410, 422):  # 410 with any code but an expiry's: the file was refused earlier
        return Refused(_code(reply) or "refused", _message(reply))
    error = _error(reply)
    return ServerError(reply.status, {"error": error} if error else reply.body.decode(errors="replace"))


def _from_the_server(reply: Reply) -> bool:
    """The server answers errors in JSON; a bodiless answer (HEAD) cannot say, and passes."""
    if not reply.body:
        return True
    try:
        msgspec.json.decode(reply.body)
    except msgspec.DecodeError:
        return False
    return True


def _error(reply: Reply) -> dict[str, Any]:
    try:
        body = msgspec.json.decode(reply.body) if reply.body else {}
    except msgspec.DecodeError:
        return {}
    error = body.get("error") if isinstance(body, dict) else None
    return error if isinstance(error, dict) else {}


def _code(reply: Reply) -> str | None:
    code = _error(reply).get("code")
    return code if isinstance(code, str) else None


def _message(reply: Reply) -> str:
    return str(_error(reply).get("message", ""))


def _details(reply: Reply) -> dict[str, Any]:
    details = _error(reply).get("details")
    return details if isinstance(details, dict) else {}
