"""Households and their members, within the caller's jurisdiction."""

from __future__ import annotations

import uuid

from litestar import Controller, get, patch, post
from litestar.di import Provide
from litestar.params import FromPath, FromQuery, JSONBody

from schemas.households import (
    HouseholdIn,
    HouseholdOut,
    HouseholdPage,
    HouseholdPatch,
    HouseholdStatus,
    JobReferralsOut,
    MemberIn,
    MemberOut,
    MemberPatch,
    RecordVersionOut,
    RevealedId,
    RevealRequest,
)
from server.dependencies import AppSettings, CurrentActor, DbSession, provide_actor
from server.routes.params import Limit
from server.services import households, referrals


class HouseholdController(Controller):
    path = "/api/v1/households"
    tags = ["households"]
    dependencies = {"actor": Provide(provide_actor)}

    @get("/", summary="Households in your jurisdiction, keyset-paginated")
    async def list_households(
        self,
        db_session: DbSession,
        actor: CurrentActor,
        community_id: FromQuery[uuid.UUID | None] = None,
        status: FromQuery[HouseholdStatus | None] = None,
        cursor: FromQuery[str | None] = None,
        limit: Limit = 100,
    ) -> HouseholdPage:
        return await households.list_page(
            db_session, actor, community_id=community_id, status=status, cursor=cursor, limit=limit
        )

    @get("/{household_id:uuid}", summary="One household with its members (ID numbers masked)")
    async def get_household(
        self, db_session: DbSession, actor: CurrentActor, household_id: FromPath[uuid.UUID]
    ) -> HouseholdOut:
        return await households.get_out(db_session, actor, household_id)

    @post("/", summary="Register a household")
    async def create_household(
        self, db_session: DbSession, actor: CurrentActor, data: JSONBody[HouseholdIn]
    ) -> HouseholdOut:
        return await households.create(db_session, actor, data)

    @patch("/{household_id:uuid}", summary="Change fields; `version` must be the current one")
    async def patch_household(
        self,
        db_session: DbSession,
        actor: CurrentActor,
        household_id: FromPath[uuid.UUID],
        data: JSONBody[HouseholdPatch],
    ) -> HouseholdOut:
        return await households.patch(db_session, actor, household_id, data)

    @post("/{household_id:uuid}/members", summary="Add a member")
    async def add_member(
        self,
        db_session: DbSession,
        actor: CurrentActor,
        household_id: FromPath[uuid.UUID],
        data: JSONBody[MemberIn],
    ) -> MemberOut:
        return await households.add_member(db_session, actor, household_id, data)

    @get(
        "/{household_id:uuid}/history", summary="Every version of the household (re-check class history too)"
    )
    async def household_history(
        self, db_session: DbSession, actor: CurrentActor, household_id: FromPath[uuid.UUID]
    ) -> list[RecordVersionOut]:
        return await households.history(db_session, actor, "household", household_id)

    @get(
        "/{household_id:uuid}/job-referrals",
        summary="Job referrals across the household's visits and each member's unjustified refusals (Art 45)",
    )
    async def job_referrals(
        self, db_session: DbSession, actor: CurrentActor, household_id: FromPath[uuid.UUID]
    ) -> JobReferralsOut:
        return await referrals.of_household(db_session, actor, household_id)


class MemberController(Controller):
    path = "/api/v1/members"
    tags = ["households"]
    dependencies = {"actor": Provide(provide_actor)}

    @patch("/{member_id:uuid}", summary="Change a member's fields; `version` must be the current one")
    async def patch_member(
        self,
        db_session: DbSession,
        actor: CurrentActor,
        member_id: FromPath[uuid.UUID],
        data: JSONBody[MemberPatch],
    ) -> MemberOut:
        return await households.patch_member(db_session, actor, member_id, data)

    @get("/{member_id:uuid}/history", summary="Every version of the member (ID numbers masked)")
    async def member_history(
        self, db_session: DbSession, actor: CurrentActor, member_id: FromPath[uuid.UUID]
    ) -> list[RecordVersionOut]:
        return await households.history(db_session, actor, "member", member_id)

    @post(
        "/{member_id:uuid}/reveal-id",
        status_code=200,
        summary="Read a full ID number (audited, with a reason)",
    )
    async def reveal_id(
        self,
        db_session: DbSession,
        actor: CurrentActor,
        settings: AppSettings,
        member_id: FromPath[uuid.UUID],
        data: JSONBody[RevealRequest],
    ) -> RevealedId:
        number = await households.reveal_id_number(
            db_session, actor, member_id, data.reason, settings.reveal_roles
        )
        return RevealedId(member_id=member_id, id_number=number)
