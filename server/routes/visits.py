"""Visits: assignment, answers, outcome proposal, submission, review, amendment, history, deadlines."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Annotated

from litestar import Controller, get, post, put
from litestar.di import Provide
from litestar.params import FromPath, FromQuery, JSONBody, QueryParameter

from schemas.visits import (
    FollowUpOut,
    ObservationBatch,
    ObservationOut,
    OverdueVisit,
    Proposal,
    ReviewDecision,
    TeamChange,
    TransitionOut,
    VisitCreate,
    VisitOut,
    VisitPage,
    VisitStatus,
)
from server.dependencies import CurrentActor, DbSession, Rules, provide_actor, provide_rules
from server.domain.id_numbers import mask_text
from server.routes.params import Limit, ReviewLevel
from server.services import follow_ups, reviews, visit_teams, visits


class VisitController(Controller):
    path = "/api/v1/visits"
    tags = ["visits"]
    dependencies = {"actor": Provide(provide_actor), "rules": Provide(provide_rules, sync_to_thread=False)}

    @get("/", summary="Visits in your jurisdiction, keyset-paginated by due date")
    async def list_visits(
        self,
        db_session: DbSession,
        actor: CurrentActor,
        rules: Rules,
        community_id: FromQuery[uuid.UUID | None] = None,
        status: FromQuery[VisitStatus | None] = None,
        review_level: ReviewLevel = None,
        due_from: FromQuery[dt.date | None] = None,
        due_to: FromQuery[dt.date | None] = None,
        mine: Annotated[bool, QueryParameter(description="only visits whose team includes you")] = False,
        cursor: FromQuery[str | None] = None,
        limit: Limit = 100,
    ) -> VisitPage:
        return await visits.list_page(
            db_session,
            actor,
            rules,
            community_id=community_id,
            status=status,
            review_level=review_level,
            due_from=due_from,
            due_to=due_to,
            mine=mine,
            cursor=cursor,
            limit=limit,
        )

    @get("/overdue", summary="Visits and reviews past their deadline, in your jurisdiction")
    async def list_overdue(
        self, db_session: DbSession, actor: CurrentActor, community_id: FromQuery[uuid.UUID | None] = None
    ) -> list[OverdueVisit]:
        return await visits.overdue(db_session, actor, community_id)

    @get("/follow-ups", summary="Feedback owed to real-name objectors and reporters, petitions' deadlines")
    async def list_follow_ups(
        self,
        db_session: DbSession,
        actor: CurrentActor,
        rules: Rules,
        community_id: FromQuery[uuid.UUID | None] = None,
    ) -> list[FollowUpOut]:
        return await follow_ups.pending(db_session, actor, rules, community_id)

    @post("/", summary="Assign a visit to a team of at least two field workers")
    async def create_visit(
        self, db_session: DbSession, actor: CurrentActor, rules: Rules, data: JSONBody[VisitCreate]
    ) -> VisitOut:
        return await visits.create(db_session, actor, data, rules)

    @put("/{visit_id:uuid}/team", summary="Change an open visit's team (someone ill, on leave, gone)")
    async def change_team(
        self,
        db_session: DbSession,
        actor: CurrentActor,
        rules: Rules,
        visit_id: FromPath[uuid.UUID],
        data: JSONBody[TeamChange],
    ) -> VisitOut:
        return await visit_teams.change(db_session, actor, visit_id, data, rules)

    @get("/{visit_id:uuid}", summary="One visit")
    async def get_visit(
        self, db_session: DbSession, actor: CurrentActor, rules: Rules, visit_id: FromPath[uuid.UUID]
    ) -> VisitOut:
        visit, household = await visits.get(db_session, actor, visit_id)
        return await visits.visit_out(db_session, visit, household, rules)

    @post(
        "/{visit_id:uuid}/observations",
        status_code=200,
        summary="Append answers (idempotent by observation id)",
    )
    async def add_observations(
        self,
        db_session: DbSession,
        actor: CurrentActor,
        rules: Rules,
        visit_id: FromPath[uuid.UUID],
        data: JSONBody[ObservationBatch],
    ) -> list[ObservationOut]:
        return await visits.answer(db_session, actor, visit_id, data.observations, rules)

    @get("/{visit_id:uuid}/observations", summary="Every answer ever given, in arrival order")
    async def list_observations(
        self, db_session: DbSession, actor: CurrentActor, visit_id: FromPath[uuid.UUID]
    ) -> list[ObservationOut]:
        await visits.get(db_session, actor, visit_id)
        return [visits.observation_out(o) for o in await visits.observations(db_session, visit_id)]

    @put("/{visit_id:uuid}/proposal", summary="Propose the outcome (no change, raise, reduce, stop, ...)")
    async def propose(
        self,
        db_session: DbSession,
        actor: CurrentActor,
        rules: Rules,
        visit_id: FromPath[uuid.UUID],
        data: JSONBody[Proposal],
    ) -> VisitOut:
        return await visits.propose(db_session, actor, visit_id, data, rules)

    @post(
        "/{visit_id:uuid}/submit",
        status_code=200,
        summary="Submit for review; refused with every missing item",
    )
    async def submit(
        self, db_session: DbSession, actor: CurrentActor, rules: Rules, visit_id: FromPath[uuid.UUID]
    ) -> VisitOut:
        return await visits.submit(db_session, actor, visit_id, rules)

    @post("/{visit_id:uuid}/review", status_code=200, summary="Approve, return with comments, or reject")
    async def review(
        self,
        db_session: DbSession,
        actor: CurrentActor,
        rules: Rules,
        visit_id: FromPath[uuid.UUID],
        data: JSONBody[ReviewDecision],
    ) -> VisitOut:
        return await reviews.decide(db_session, actor, visit_id, data, rules)

    @post("/{visit_id:uuid}/amend", status_code=201, summary="Start a new revision of an approved visit")
    async def amend(
        self, db_session: DbSession, actor: CurrentActor, rules: Rules, visit_id: FromPath[uuid.UUID]
    ) -> VisitOut:
        return await visits.amend(db_session, actor, visit_id, rules)

    @get("/{visit_id:uuid}/timeline", summary="Every transition: who, at which level, what, why, when")
    async def timeline(
        self, db_session: DbSession, actor: CurrentActor, visit_id: FromPath[uuid.UUID]
    ) -> list[TransitionOut]:
        return [
            TransitionOut(
                at=t.at,
                actor_id=t.actor_id,
                actor=name,
                action=t.action,
                from_status=t.from_status,
                to_status=t.to_status,
                level=t.level,
                level_code=t.level_code,
                reason=None if t.reason is None else mask_text(t.reason),  # typed by people: may hold one
                rules=t.rules,
                county_home_visit_on=t.county_home_visit_on,
            )
            for t, name in await visits.timeline(db_session, actor, visit_id)
        ]
