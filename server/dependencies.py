"""Dependency providers: one database session per request, and the signed-in actor."""

from __future__ import annotations

from typing import Any

from litestar import Request
from litestar.datastructures import State
from litestar.di import NamedDependency
from sqlalchemy.ext.asyncio import AsyncSession

from schemas.config import Settings
from schemas.rules import RulePack
from server.db.engine import Database
from server.errors import Unauthorized
from server.request_sessions import open_session
from server.services import auth
from server.services.actor import Actor
from server.services.rules import load_rules

READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

# Explicit markers for handler signatures (Litestar 3 drops inferred dependencies).
DbSession = NamedDependency[AsyncSession]
CurrentActor = NamedDependency[Actor]
AppSettings = NamedDependency[Settings]


async def provide_session(state: State, request: Request[Any, Any, Any]) -> AsyncSession:
    """Reads get a deferred transaction; writes an immediate one (SQLite's single writer queues them).

    Services commit explicitly before they return, so the client never hears "done" for a write that
    could still fail at commit; anything left uncommitted is rolled back when the request's session is
    closed (server/request_sessions.py says why that is not a dependency with ``yield``).
    """
    db: Database = state.db
    read_only = request.method in READ_METHODS or request.route_handler.opt.get("read_only", False)
    return open_session(request, db.read_session if read_only else db.write_session)


async def provide_actor(request: Request[Any, Any, Any], db_session: DbSession) -> Actor:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("Send the session token as 'Authorization: Bearer <token>'.", code="missing_token")
    actor = await auth.authenticate(db_session, token.strip())
    request.state.user_id = str(actor.user_id)  # for the request log line
    return Actor(**{**_fields(actor), "request_id": request.state.get("request_id")})


def _fields(actor: Actor) -> dict[str, Any]:
    return {name: getattr(actor, name) for name in actor.__slots__}


def provide_settings(state: State) -> Settings:
    settings: Settings = state.settings
    return settings


def provide_rules(settings: AppSettings) -> RulePack:
    return load_rules(settings.rules_file)


Rules = NamedDependency[RulePack]
