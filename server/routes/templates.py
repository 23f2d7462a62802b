"""Checklist templates: published ones for everyone (with ETags), drafts and lifecycle for admins."""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Controller, Request, Response, get, post, put
from litestar.di import Provide
from litestar.params import FromPath, JSONBody, PathParameter, QueryParameter

from schemas.checklists import MAX_TEMPLATE_VERSION, Template, TemplateOut, TemplateSummary
from server.db.models import TemplateStatus
from server.dependencies import CurrentActor, DbSession, provide_actor
from server.services import templates

# Past the column's range a lookup would fail in the database instead of answering 404.
Version = Annotated[int, PathParameter(ge=1, le=MAX_TEMPLATE_VERSION)]


class TemplateController(Controller):
    path = "/api/v1/templates"
    tags = ["checklists"]
    dependencies = {"actor": Provide(provide_actor)}

    @get("/", summary="Templates: published and retired (admins may ask for drafts too)")
    async def list_templates(
        self,
        db_session: DbSession,
        actor: CurrentActor,
        drafts: Annotated[bool, QueryParameter(description="include drafts (admins)")] = False,
    ) -> list[TemplateSummary]:
        return list(await templates.list_templates(db_session, actor, include_drafts=drafts))

    @get("/{code:str}/{version:int}", summary="One template version; answers 304 to a matching If-None-Match")
    async def get_template(
        self,
        request: Request[Any, Any, Any],
        db_session: DbSession,
        actor: CurrentActor,
        code: FromPath[str],
        version: Version,
    ) -> Response[TemplateOut | None]:
        found = await templates.get(db_session, actor, code, version)
        tag = f'"{found.etag}"'
        headers = {"ETag": tag, "Cache-Control": "private, no-cache"}
        if tag in {t.strip() for t in request.headers.get("if-none-match", "").split(",")}:
            return Response(None, status_code=304, headers=headers)
        return Response(found, headers=headers)

    @post("/", summary="Create a draft template (admins)")
    async def create_template(
        self, db_session: DbSession, actor: CurrentActor, data: JSONBody[Template]
    ) -> TemplateOut:
        return await templates.create_draft(db_session, actor, data)

    @put("/{code:str}/{version:int}", summary="Replace a draft (published templates never change)")
    async def update_template(
        self,
        db_session: DbSession,
        actor: CurrentActor,
        code: FromPath[str],
        version: Version,
        data: JSONBody[Template],
    ) -> TemplateOut:
        return await templates.update_draft(db_session, actor, code, version, data)

    @post(
        "/{code:str}/{version:int}/publish", status_code=200, summary="Publish a draft: immutable from now on"
    )
    async def publish(
        self, db_session: DbSession, actor: CurrentActor, code: FromPath[str], version: Version
    ) -> TemplateOut:
        return await templates.set_status(db_session, actor, code, version, TemplateStatus.published)

    @post("/{code:str}/{version:int}/retire", status_code=200, summary="Retire: no new visits pin it")
    async def retire(
        self, db_session: DbSession, actor: CurrentActor, code: FromPath[str], version: Version
    ) -> TemplateOut:
        return await templates.set_status(db_session, actor, code, version, TemplateStatus.retired)
