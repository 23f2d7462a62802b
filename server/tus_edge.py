"""What the tus endpoints need before Litestar routes a request: X-HTTP-Method-Override.

tus 1.0 core: a client whose environment cannot send PATCH or DELETE (an old proxy, a browser sandbox;
tus-js-client's ``overridePatchMethod``) sends POST with the real method in ``X-HTTP-Method-Override``, and
the server MUST take that header's value as the method. Litestar picks a handler by the method before any
middleware of its own runs, so this wraps the app's ASGI handler instead (``install``).

Scoped to the tus paths (``/api/v1/uploads`` and ``/api/v1/uploads/{id}``): the direct-upload JSON API under
``/api/v1/uploads/direct`` is not tus.
"""

from __future__ import annotations

from litestar import Litestar
from litestar.enums import ScopeType
from litestar.types import ASGIApp, HTTPScope, Method, Receive, Scope, Send

from server.routes.uploads import BASE

OVERRIDABLE: dict[str, Method] = {"PATCH": "PATCH", "DELETE": "DELETE", "HEAD": "HEAD"}
_NOT_TUS = "direct"


def install(app: Litestar) -> None:
    """Wrap ``app`` so the tus rules apply before routing."""
    app.asgi_handler = tus_edge(app.asgi_handler)


def tus_edge(app: ASGIApp) -> ASGIApp:
    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == ScopeType.HTTP and is_tus_path(scope["path"]):
            _apply_method_override(scope)
        await app(scope, receive, send)

    return middleware


def is_tus_path(path: str) -> bool:
    """The creation URL or an upload's URL (one more segment, not the direct-upload API's)."""
    if not path.startswith(BASE):
        return False
    rest = path.rstrip("/")[len(BASE) :]
    if rest == "":
        return True
    segment = rest.removeprefix("/")
    return rest.startswith("/") and "/" not in segment and segment != _NOT_TUS


def _apply_method_override(scope: HTTPScope) -> None:
    if scope["method"] != "POST":
        return
    for name, value in scope["headers"]:
        if name == b"x-http-method-override":
            method = OVERRIDABLE.get(value.decode("latin-1").strip().upper())
            if method is not None:
                scope["method"] = method
            return
