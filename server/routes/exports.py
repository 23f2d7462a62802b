"""CSV and GeoJSON exports of visits and observations, with the visit list's filters."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import AsyncIterator
from typing import Literal

from litestar import Controller, get
from litestar.datastructures import State
from litestar.di import Provide
from litestar.params import FromPath, FromQuery
from litestar.response import Stream

from schemas.visits import VisitStatus
from server.dependencies import CurrentActor, provide_actor
from server.routes.params import ReviewLevel
from server.services import exports
from server.services.exports import OBSERVATION_COLUMNS, VISIT_COLUMNS, Filters
from server.services.rules import today

MEDIA = {"csv": "text/csv; charset=utf-8", "geojson": "application/geo+json"}


class ExportController(Controller):
    path = "/api/v1/exports"
    tags = ["exports"]
    dependencies = {"actor": Provide(provide_actor)}

    @get(
        "/{name:str}",
        summary="visits or observations, as csv or geojson (no ID numbers, names or addresses)",
    )
    async def export(
        self,
        state: State,
        actor: CurrentActor,
        name: FromPath[Literal["visits.csv", "visits.geojson", "observations.csv", "observations.geojson"]],
        community_id: FromQuery[uuid.UUID | None] = None,
        status: FromQuery[VisitStatus | None] = None,
        review_level: ReviewLevel = None,
        due_from: FromQuery[dt.date | None] = None,
        due_to: FromQuery[dt.date | None] = None,
    ) -> Stream:
        kind, fmt = name.split(".")
        filters = Filters(community_id, status, review_level, due_from, due_to)
        await exports.start(state.db, actor, kind, fmt, filters)
        rows = (exports.visit_rows if kind == "visits" else exports.observation_rows)(
            state.db, actor, filters
        )
        body: AsyncIterator[bytes]
        if fmt == "csv":
            body = exports.as_csv(rows, VISIT_COLUMNS if kind == "visits" else OBSERVATION_COLUMNS)
        else:
            body = exports.as_geojson(rows)
        filename = f"fivestep-{kind}-{today().isoformat()}.{fmt}"  # China's date, not the server's
        return Stream(
            body, media_type=MEDIA[fmt], headers={"Content-Disposition": f'attachment; filename="{filename}"'}
        )
