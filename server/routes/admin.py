"""Administration: users and devices. Admins only, within their own jurisdiction."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from litestar import Controller, get, patch, post
from litestar.di import Provide
from litestar.params import FromPath, FromQuery, JSONBody
from sqlalchemy.ext.asyncio import AsyncSession

from schemas.auth import DeviceOut, PasswordReset, RoleName, UserCreate, UserOut, UserPage, UserPatch
from server.db.models import Device, SyncClient
from server.dependencies import CurrentActor, DbSession, provide_actor
from server.errors import Forbidden
from server.routes.params import Limit
from server.services import auth, sync_clients, users
from server.services.actor import Actor


async def provide_admin(actor: CurrentActor) -> Actor:
    if not actor.is_admin:
        raise Forbidden("Administrators only.")
    return actor


async def devices_out(session: AsyncSession, devices: Sequence[Device]) -> list[DeviceOut]:
    synced = await sync_clients.latest_by_device(session, [d.id for d in devices])
    return [_device_out(d, synced.get(d.id)) for d in devices]


def _device_out(d: Device, client: SyncClient | None) -> DeviceOut:
    return DeviceOut(
        id=d.id,
        user_id=d.user_id,
        device_id=d.device_key,
        created_at=d.created_at,
        last_seen_at=d.last_seen_at,
        revoked_at=d.revoked_at,
        last_sync_at=client.last_seen_at if client else None,
        clock_offset_ms=client.clock_offset_ms if client else None,
    )


class AdminController(Controller):
    path = "/api/v1/admin"
    tags = ["admin"]
    dependencies = {"actor": Provide(provide_actor), "admin": Provide(provide_admin)}

    @post("/users", summary="Create a user bound to a node of your jurisdiction")
    async def create_user(
        self, db_session: DbSession, admin: CurrentActor, data: JSONBody[UserCreate]
    ) -> UserOut:
        return await users.create_user(db_session, admin, data)

    @get("/users", summary="Users bound to nodes of your jurisdiction, keyset-paginated (no passwords)")
    async def list_users(
        self,
        db_session: DbSession,
        admin: CurrentActor,
        jurisdiction_id: FromQuery[uuid.UUID | None] = None,
        role: FromQuery[RoleName | None] = None,
        active: FromQuery[bool | None] = None,
        cursor: FromQuery[str | None] = None,
        limit: Limit = 100,
    ) -> UserPage:
        return await users.list_page(
            db_session,
            admin,
            jurisdiction_id=jurisdiction_id,
            role=role,
            active=active,
            cursor=cursor,
            limit=limit,
        )

    @patch(
        "/users/{user_id:uuid}",
        summary="Deactivate a user (every session ends, sign-ins refused) or reactivate them",
    )
    async def patch_user(
        self,
        db_session: DbSession,
        admin: CurrentActor,
        user_id: FromPath[uuid.UUID],
        data: JSONBody[UserPatch],
    ) -> UserOut:
        return await users.set_active(db_session, admin, user_id, data.active)

    @post(
        "/users/{user_id:uuid}/password",
        status_code=200,
        summary="Set a user's new password; every session of theirs ends",
    )
    async def reset_password(
        self,
        db_session: DbSession,
        admin: CurrentActor,
        user_id: FromPath[uuid.UUID],
        data: JSONBody[PasswordReset],
    ) -> UserOut:
        return await users.reset_password(db_session, admin, user_id, data.password)

    @get("/devices", summary="Devices of users in your jurisdiction")
    async def list_devices(
        self, db_session: DbSession, admin: CurrentActor, user_id: FromQuery[uuid.UUID | None] = None
    ) -> list[DeviceOut]:
        return await devices_out(db_session, await users.list_devices(db_session, admin, user_id))

    @post("/devices/{device_id:uuid}/revoke", status_code=200, summary="End every session of a device")
    async def revoke_device(
        self, db_session: DbSession, admin: CurrentActor, device_id: FromPath[uuid.UUID]
    ) -> DeviceOut:
        (revoked,) = await devices_out(db_session, [await auth.revoke_device(db_session, admin, device_id)])
        return revoked
