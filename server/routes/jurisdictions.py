"""The part of the district > subdistrict > community tree you work in."""

from __future__ import annotations

from typing import cast

from litestar import Controller, get
from litestar.di import Provide
from sqlalchemy import select

from schemas.jurisdictions import JurisdictionOut, LevelName
from server.db.models import Jurisdiction
from server.dependencies import CurrentActor, DbSession, provide_actor
from server.services.actor import under


class JurisdictionController(Controller):
    path = "/api/v1/jurisdictions"
    tags = ["jurisdictions"]
    dependencies = {"actor": Provide(provide_actor)}

    @get("/", summary="Your node and everything under it, parents first")
    async def list_jurisdictions(self, db_session: DbSession, actor: CurrentActor) -> list[JurisdictionOut]:
        rows = (
            await db_session.execute(select(Jurisdiction).where(under(actor)).order_by(Jurisdiction.path))
        ).scalars()
        return [
            JurisdictionOut(
                id=j.id,
                parent_id=j.parent_id,
                level=cast(LevelName, j.level),
                code=j.code,
                name=j.name,
                path=j.path,
            )
            for j in rows
        ]
