"""Administration: users and devices. Admins only, within their own jurisdiction."""

from __future__ import annotations

import uuid

from litestar import Controller, get, post
from litestar.di import Provide
from litestar.params import FromPath, FromQuery, JSONBody

from schemas.auth import DeviceOut, UserCreate, UserOut
from server.db.models import Device
from server.dependencies import CurrentActor, DbSession, provide_actor
from server.errors import Forbidden
from server.services import auth, users
from server.services.actor import Actor


async def provide_admin(actor: CurrentActor) -> Actor:
    if not actor.is_admin:
        raise Forbidden("Administrators only.")
    return actor


def device_out(d: Device) -> DeviceOut:
    return DeviceOut(
        id=d.id,
        user_id=d.user_id,
        device_id=d.device_key,
        created_at=d.created_at,
        last_seen_at=d.last_seen_at,
        revoked_at=d.revoked_at,
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

    @get("/devices", summary="Devices of users in your jurisdiction")
    async def list_devices(
        self, db_session: DbSession, admin: CurrentActor, user_id: FromQuery[uuid.UUID | None] = None
    ) -> list[DeviceOut]:
        return [device_out(d) for d in await users.list_devices(db_session, admin, user_id)]

    @post("/devices/{device_id:uuid}/revoke", status_code=200, summary="End every session of a device")
    async def revoke_device(
        self, db_session: DbSession, admin: CurrentActor, device_id: FromPath[uuid.UUID]
    ) -> DeviceOut:
        return device_out(await auth.revoke_device(db_session, admin, device_id))
