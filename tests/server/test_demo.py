"""The demo seed is idempotent and holds what the README promises."""

from __future__ import annotations

import asyncio
from pathlib import Path

from sqlalchemy import func, select

from server.db.engine import Database
from server.db.models import Household, Jurisdiction, Member, User, Visit
from server.demo import seed
from server.demo_visits import LOOKED_FROM_AWAY
from server.domain.id_numbers import problem
from tests.fixtures.databases import prepare
from tests.helpers import Client, login


async def _counts(url: str) -> dict[str, int]:
    db = Database(url)
    try:
        async with db.read_session() as s:
            return {
                model.__tablename__: (await s.execute(select(func.count()).select_from(model))).scalar_one()
                for model in (Jurisdiction, User, Household, Member, Visit)
            }
    finally:
        await db.dispose()


async def _reseed_and_read(url: str) -> tuple[list[str], list[str]]:
    db = Database(url)
    try:
        await seed(db)
        async with db.read_session() as s:
            users = sorted((await s.execute(select(User.username))).scalars())
            ids = list((await s.execute(select(Member.id_number))).scalars())
        return users, ids
    finally:
        await db.dispose()


def test_seed_twice_adds_nothing_the_second_time(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'demo.db'}"
    asyncio.run(prepare(url))
    first = asyncio.run(_counts(url))
    users, ids = asyncio.run(_reseed_and_read(url))
    assert asyncio.run(_counts(url)) == first
    assert first["jurisdictions"] == 1 + 2 + 4
    assert users == sorted(
        ["demo-worker-1", "demo-worker-2", "demo-worker-3", "demo-reviewer-community",
         "demo-reviewer-subdistrict", "demo-approver-district", "demo-admin"]
    )  # fmt: skip
    assert ids and all(problem(i) is None for i in ids)
    assert first["visits"] == 8


async def _visit_states(url: str) -> dict[str, tuple[str, int]]:
    db = Database(url)
    try:
        async with db.read_session() as s:
            rows = await s.execute(
                select(Household.registry_no, Visit.status, Visit.review_level).join(
                    Household, Household.id == Visit.household_id
                )
            )
            return {registry_no: (status, level) for registry_no, status, level in rows}
    finally:
        await db.dispose()


def test_demo_has_a_days_work_in_every_state(sqlite_template: Path) -> None:
    states = asyncio.run(_visit_states(f"sqlite+aiosqlite:///{sqlite_template}"))
    assert sorted(states.values()) == sorted(
        [
            ("assigned", 0),
            ("assigned", 0),
            ("in_progress", 0),
            ("in_review", 1),
            ("in_review", 2),
            ("in_review", 3),
            ("returned", 0),
            ("approved", 0),
        ]
    )


def test_the_demo_shows_the_integrity_checks_on_the_file_waiting_for_its_reviewer(client: Client) -> None:
    """A newcomer reviewing the demo sees what a flag looks like: DB-C01-0004's look step was answered
    from 1.7 km away; the other files were answered at their households and show none."""
    reviewer = login(client, "demo-reviewer-community")
    listed = client.get("/api/v1/visits", headers=reviewer).json()
    checks = {}
    for visit in listed["items"]:
        evidence = client.get(f"/api/v1/visits/{visit['id']}/evidence", headers=reviewer).json()
        checks[visit["registry_no"]] = {(f["check"], f["template"]) for f in evidence["checks"]}
    assert checks.pop(LOOKED_FROM_AWAY) == {("far_from_home", "step.look")}
    assert len(checks) >= 7 and all(found == set() for found in checks.values()), checks
