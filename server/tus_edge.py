"""What the tus endpoints need around Litestar's routing: X-HTTP-Method-Override, and Tus-Resumable on
every answer.

tus 1.0 core: a client whose environment cannot send PATCH or DELETE (an old proxy, a browser sandbox;
tus-js-client's ``overridePatchMethod``) sends POST with the real method in ``X-HTTP-Method-Override``, and
the server MUST take that header's value as the method. Every answer carries ``Tus-Resumable``, also the
404 and 405 that routing gives before any handler (or a controller's exception handler) runs. Litestar picks
a handler by the method before any middleware of its own runs, so this wraps the app's ASGI handler
instead (``install``).

Scoped to the tus paths (``/api/v1/uploads`` and ``/api/v1/uploads/{id}``): the direct-upload JSON API under
``/api/v1/uploads/direct`` is not tus.
"""

from __future__ import annotations

from litestar import Litestar
from litestar.enums import ScopeType
from litestar.types import ASGIApp, HTTPScope, Message, Method, Receive, Scope, Send

from server.domain import tus
from server.routes.uploads import BASE

OVERRIDABLE: dict[str, Method] = {"PATCH": "PATCH", "DELETE": "DELETE", "HEAD": "HEAD"}
_NOT_TUS = "direct"


def install(app: Litestar) -> None:
    """Wrap ``app`` so the tus rules apply before routing."""
    app.asgi_handler = tus_edge(app.asgi_handler)


def tus_edge(app: ASGIApp) -> ASGIApp:
    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP or not is_tus_path(scope["path"]):
            await app(scope, receive, send)
            return
        scope = _with_method_override(scope)

        async def send_tus(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = _tus_headers(list(message.get("headers", [])))
            await send(message)

        await app(scope, receive, send_tus)

    return middleware


def _tus_headers(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    names = {name.lower() for name, _ in headers}
    if b"tus-resumable" not in names:
        headers.append((b"tus-resumable", tus.VERSION.encode()))
    if (b"content-length", b"0") in headers:  # Litestar names a media type even for an empty body
        headers = [(name, value) for name, value in headers if name.lower() != b"content-type"]
    return headers


def is_tus_path(path: str) -> bool:
    """The creation URL or an upload's URL (one more segment, not the direct-upload API's)."""
    if not path.startswith(BASE):
        return False
    rest = path.rstrip("/")[len(BASE) :]
    if rest == "":
        return True
    segment = rest.removeprefix("/")
    return rest.startswith("/") and "/" not in segment and segment != _NOT_TUS


def _with_method_override(scope: HTTPScope) -> HTTPScope:
    """The scope the app sees. A copy when the method is overridden: the server keeps the original's
    POST, so it still sends the body of the answer (an error's JSON). Told HEAD, uvicorn would send the
    headers of a 404 with its Content-Length but not the body, and the client would wait for it."""
    if scope["method"] != "POST":
        return scope
    for name, value in scope["headers"]:
        if name == b"x-http-method-override":
            method = OVERRIDABLE.get(value.decode("latin-1").strip().upper())
            if method is None:
                return scope
            overridden = scope.copy()
            overridden["method"] = method
            return overridden
    return scope
