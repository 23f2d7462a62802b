"""Sign in and out."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, get, post
from litestar.di import Provide
from litestar.params import JSONBody

from schemas.auth import LoginRequest, LoginResponse, PasswordChange, UserOut
from server.dependencies import AppSettings, CurrentActor, DbSession, provide_actor
from server.services import auth
from server.services.users import actor_out


class AuthController(Controller):
    path = "/api/v1/auth"
    tags = ["auth"]

    @post("/login", status_code=200, summary="Sign in from a device; returns a bearer token")
    async def login(
        self,
        request: Request[Any, Any, Any],
        data: JSONBody[LoginRequest],
        db_session: DbSession,
        settings: AppSettings,
    ) -> LoginResponse:
        session = await auth.login(
            db_session,
            settings,
            data.username,
            data.password,
            data.device_id,
            request.state.get("request_id"),
        )
        return LoginResponse(
            token=session.token, expires_at=session.expires_at, user=actor_out(session.actor)
        )

    @post(
        "/logout", status_code=204, dependencies={"actor": Provide(provide_actor)}, summary="End this session"
    )
    async def logout(self, db_session: DbSession, actor: CurrentActor) -> None:
        await auth.logout(db_session, actor)

    @get("/me", dependencies={"actor": Provide(provide_actor)}, summary="Who this token belongs to")
    async def me(self, actor: CurrentActor) -> UserOut:
        return actor_out(actor)

    @post(
        "/password",
        status_code=204,
        dependencies={"actor": Provide(provide_actor)},
        summary="Change your own password with your current one; your other sessions end",
    )
    async def change_password(
        self,
        db_session: DbSession,
        settings: AppSettings,
        actor: CurrentActor,
        data: JSONBody[PasswordChange],
    ) -> None:
        await auth.change_password(db_session, settings, actor, data.old_password, data.new_password)
