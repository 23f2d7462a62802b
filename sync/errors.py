"""What the device client raises when a request does not end as hoped."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


class NetworkError(Exception):
    """The request or its answer was lost: nothing is known about whether the server acted on it."""


class ServerError(Exception):
    def __init__(self, status: int, body: Any) -> None:
        super().__init__(f"HTTP {status}: {body}")
        self.status, self.body = status, body

    @property
    def error(self) -> dict[str, Any]:
        """The server's `error` object (code, message, details); empty when the body holds none."""
        error = self.body.get("error") if isinstance(self.body, dict) else None
        return error if isinstance(error, dict) else {}

    @property
    def code(self) -> str | None:
        code = self.error.get("code")
        return code if isinstance(code, str) else None


class NotTheServers(NetworkError):
    """An answer that is not the server's (a proxy's HTML error page, a captive portal's): whatever the
    server answered, if it was reached, is lost."""


class QueueBehindServer(ServerError):
    """The server waits for a mutation this device dropped once a pull had confirmed it: the server's
    database was restored from a backup taken before it. A pull tells the server (its cursor is of the
    old epoch), after which the queue resumes where the device holds it."""

    def __init__(self, seq: int) -> None:
        super().__init__(409, f"the server expects mutation {seq}, which this device no longer holds")
        self.seq = seq


class UnsendableEdit(ValueError):
    """An edit the device must not queue: the server would refuse the whole push that carries it (a NUL
    character in any text), so every later edit would wait behind it for good."""


class PushHeldBack(Exception):
    """The server could not apply the mutation at ``seq`` now (`stopped: transient`: a lock wait, a
    lost database connection): what came before it is in, it and the rest wait on the device."""

    def __init__(self, seq: int) -> None:
        super().__init__(
            f"the server could not take edit seq {seq} now (a passing fault); it and the rest wait"
        )
        self.seq = seq


class PayloadTooLarge(ServerError):
    """413: the request was larger than the server, or a proxy on the way, takes (nginx's default body
    limit is 1 MiB). Sent again as it is, it would never pass: a push sends fewer mutations at once."""

    def __init__(self, body: Any) -> None:
        super().__init__(413, body)
        self.args = ("the request is larger than the server, or a proxy on the way, takes (HTTP 413)",)


class NotSignedIn(ServerError):
    """The device has no session (it never signed in): nothing was sent. A 401, as the server would
    answer, but at once, also when the server cannot be reached."""

    def __init__(self) -> None:
        super().__init__(401, None)
        self.args = ("this device has not signed in",)


class DeviceOfAnotherUser(Exception):
    """A sign-in as another user while the tablet still holds edits (or photo files) of the user signed in
    before, which only it holds: that user must sync them first."""


class SyncBusy(Exception):
    """Another sync of the same device database is running (another process, or another thread)."""


@contextmanager
def network_errors() -> Iterator[None]:
    """An HTTP client's transport failure (httpx and httpcore raise their own kinds) as a NetworkError."""
    try:
        yield
    except Exception as exc:
        if type(exc).__module__.startswith(("httpx", "httpcore")):
            raise NetworkError(str(exc)) from exc
        raise
