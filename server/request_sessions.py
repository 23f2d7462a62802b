"""A request's database session is closed when its response starts, or when the request ends without one.

Why not a dependency with ``yield``: Litestar (2.25) closes those only once every dependency of the
handler has been resolved. When a later one fails, as the sign-in's 401 in ``provide_actor`` does, the
session's generator is left to the garbage collector, and so is its pooled connection. On SQLite a write
request's session holds the database's single write lock from its first statement, so until the
collector ran every other write waited out the busy timeout and failed (found by fuzzing the API).

So the providers open sessions with ``open_session``, which registers them on the request, and the
middleware below closes them. It closes them as the response starts, as Litestar did with the generator
(services commit before they return; whatever is left is rolled back), so a client that gets an answer
can count on the lock being free.
"""

from __future__ import annotations

import logging
from typing import Any

from litestar.connection import ASGIConnection
from litestar.enums import ScopeType
from litestar.types import ASGIApp, Message, Receive, Scope, Send
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

log = logging.getLogger("fivestep.request")
_OPEN = "fivestep.db_sessions"  # key in the request's scope state


def open_session(
    connection: ASGIConnection[Any, Any, Any, Any], maker: async_sessionmaker[AsyncSession]
) -> AsyncSession:
    """A new session that the request will close, however it ends."""
    session = maker()
    connection.scope.setdefault("state", {}).setdefault(_OPEN, []).append(session)
    return session


async def close_sessions(scope: Scope) -> None:
    """Close the sessions the request opened. A connection that cannot even roll back is dropped by the
    pool; the response still goes out, since everything it reports was committed before."""
    for session in scope.get("state", {}).pop(_OPEN, ()):
        try:
            await session.close()
        except Exception as exc:  # the answer must not be lost to a dead connection
            log.warning("closing a request's database session failed: %s", type(exc).__name__)


def session_closing_middleware(app: ASGIApp) -> ASGIApp:
    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:
            await app(scope, receive, send)
            return

        async def send_after_closing(message: Message) -> None:
            if message["type"] == "http.response.start":
                await close_sessions(scope)
            await send(message)

        try:
            await app(scope, receive, send_after_closing)
        finally:
            await close_sessions(scope)

    return middleware
