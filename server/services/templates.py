"""Checklist templates: the shipped ones loaded into the database, drafts, publishing, retiring.

A published template never changes; visits pin (code, version) and validate against it for life, so
published bodies are cached per process without any risk of staleness.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from typing import cast

import msgspec
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from schemas.checklists import Label, StatusName, Template, TemplateOut, TemplateSummary
from server.db.models import ChecklistTemplate, TemplateStatus
from server.db.types import utcnow
from server.domain.templates import Paths, etag, paths, problems, shipped
from server.errors import Conflict, Invalid, NotFound
from server.services import audit
from server.services.actor import SYSTEM, Actor

log = logging.getLogger("fivestep.templates")
_published: dict[tuple[str, int], tuple[Template, Paths]] = {}


async def install_shipped(session: AsyncSession) -> int:
    """Insert shipped templates missing from the database as published. A shipped file whose content
    differs from the stored published version is refused: published templates are immutable, so the
    file needs a new version number."""
    added = 0
    for template in shipped():
        row = await _row(session, template.code, template.version)
        if row is None:
            session.add(_new_row(template, TemplateStatus.published))
            audit.record(
                session, SYSTEM, "template.install", "template", f"{template.code}@{template.version}"
            )
            added += 1
        elif row.etag != etag(template) and row.status != TemplateStatus.draft:
            raise RuntimeError(
                f"shipped template {template.code} v{template.version} differs from the published one; "
                "give the changed file a new version"
            )
    await session.commit()
    return added


def _new_row(template: Template, status: TemplateStatus) -> ChecklistTemplate:
    now = utcnow()
    return ChecklistTemplate(
        id=uuid.uuid4(),
        code=template.code,
        version=template.version,
        kind=template.kind,
        status=status,
        body=msgspec.to_builtins(template),
        etag=etag(template),
        published_at=now if status == TemplateStatus.published else None,
    )


async def _row(
    session: AsyncSession, code: str, version: int, *, lock: bool = False
) -> ChecklistTemplate | None:
    query = select(ChecklistTemplate).where(
        ChecklistTemplate.code == code, ChecklistTemplate.version == version
    )
    if lock:
        query = query.with_for_update()
    return (await session.execute(query)).scalar_one_or_none()


def _decode(row: ChecklistTemplate) -> Template:
    return msgspec.convert(row.body, Template)


async def pinned(session: AsyncSession, code: str, version: int) -> Template:
    """A published (or retired) template version, as visits pin it."""
    return (await pinned_with_paths(session, code, version))[0]


async def pinned_with_paths(session: AsyncSession, code: str, version: int) -> tuple[Template, Paths]:
    """A pinned template and its items by path. Published versions never change: cached for good."""
    key = (code, version)
    if key not in _published:
        row = await _row(session, code, version)
        if row is None or row.status == TemplateStatus.draft:
            raise NotFound(f"No published template {code} v{version}.")
        template = _decode(row)
        _published[key] = (template, paths(template))
    return _published[key]


async def latest_published(session: AsyncSession, code: str) -> ChecklistTemplate:
    row = (
        await session.execute(
            select(ChecklistTemplate)
            .where(ChecklistTemplate.code == code, ChecklistTemplate.status == TemplateStatus.published)
            .order_by(ChecklistTemplate.version.desc())
            .limit(1)
        )
    ).scalar_one_or_none()
    if row is None:
        raise Invalid(f"No published template {code!r}.", code="template_unavailable")
    return row


def summary(row: ChecklistTemplate) -> TemplateSummary:
    return TemplateSummary(
        code=row.code,
        version=row.version,
        kind=row.kind,
        status=cast(StatusName, row.status),
        title=msgspec.convert(row.body["title"], Label),
        etag=row.etag,
    )


async def list_templates(
    session: AsyncSession, actor: Actor, *, include_drafts: bool
) -> Sequence[TemplateSummary]:
    query = select(ChecklistTemplate).order_by(ChecklistTemplate.code, ChecklistTemplate.version)
    if not (include_drafts and actor.is_admin):
        query = query.where(ChecklistTemplate.status != TemplateStatus.draft)
    return [summary(row) for row in (await session.execute(query)).scalars()]


async def get(session: AsyncSession, actor: Actor, code: str, version: int) -> TemplateOut:
    row = await _row(session, code, version)
    if row is None or (row.status == TemplateStatus.draft and not actor.is_admin):
        raise NotFound(f"No template {code} v{version}.")
    return TemplateOut(
        code=row.code,
        version=row.version,
        status=cast(StatusName, row.status),
        etag=row.etag,
        template=_decode(row),
    )


def _check(template: Template) -> None:
    if found := problems(template):
        raise Invalid("; ".join(found), code="template_invalid", details=found)


async def create_draft(session: AsyncSession, actor: Actor, template: Template) -> TemplateOut:
    actor.require_administers_everything("the checklist templates")
    _check(template)
    row = _new_row(template, TemplateStatus.draft)
    session.add(row)
    audit.record(session, actor, "template.create", "template", f"{template.code}@{template.version}")
    try:
        await session.commit()
    except IntegrityError:
        await session.rollback()
        raise Conflict(
            f"{template.code} v{template.version} exists; use a new version.", code="duplicate"
        ) from None
    return await get(session, actor, template.code, template.version)


async def update_draft(
    session: AsyncSession, actor: Actor, code: str, version: int, template: Template
) -> TemplateOut:
    actor.require_administers_everything("the checklist templates")
    row = await _row(session, code, version, lock=True)
    if row is None:
        raise NotFound(f"No template {code} v{version}.")
    if row.status != TemplateStatus.draft:
        raise Conflict(
            f"{code} v{version} is {row.status}: published templates never change; create version {version + 1}.",
            code="template_immutable",
        )
    if (template.code, template.version) != (code, version):
        raise Invalid("The body's code and version must match the URL.", code="template_mismatch")
    _check(template)
    row.body, row.etag, row.kind = msgspec.to_builtins(template), etag(template), template.kind
    audit.record(session, actor, "template.update", "template", f"{code}@{version}")
    await session.commit()
    return await get(session, actor, code, version)


async def set_status(
    session: AsyncSession, actor: Actor, code: str, version: int, status: TemplateStatus
) -> TemplateOut:
    actor.require_administers_everything("the checklist templates")
    row = await _row(session, code, version, lock=True)
    if row is None:
        raise NotFound(f"No template {code} v{version}.")
    allowed = {
        TemplateStatus.published: TemplateStatus.draft,
        TemplateStatus.retired: TemplateStatus.published,
    }
    if row.status != allowed[status]:
        raise Conflict(
            f"{code} v{version} is {row.status}; it cannot become {status}.", code="invalid_transition"
        )
    row.status = status
    now = utcnow()
    if status == TemplateStatus.published:
        row.published_at = now
    else:
        row.retired_at = now
    audit.record(
        session, actor, f"template.{status.value}", "template", f"{code}@{version}", {"status": status.value}
    )
    await session.commit()
    return await get(session, actor, code, version)
