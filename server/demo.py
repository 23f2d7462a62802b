"""Demo data for `fivestep serve --demo`: one district, its people and households. Idempotent.

Every row has a fixed id derived from its name, so a second run finds what the first one made and
adds only what is missing. Names are invented; ID numbers are made up but carry valid check digits.
"""

from __future__ import annotations

import datetime as dt
import random
import uuid
from typing import TypeVar

from sqlalchemy.ext.asyncio import AsyncSession

from server.db.engine import Database
from server.db.models import Base, Household, Jurisdiction, Level, Member, User
from server.domain.id_numbers import check_character
from server.security.passwords import hash_password
from server.services import audit, edits
from server.services.actor import SYSTEM

B = TypeVar("B", bound=Base)
NAMESPACE = uuid.UUID("6f1f2a4e-5b7d-4c1e-9a53-0d9f3c2b7e11")
PASSWORD = "demo"
HOUSEHOLDS_PER_COMMUNITY = 8

TREE = {
    ("D01", "新华区 Xinhua District"): {
        ("S01", "东风街道 Dongfeng Subdistrict"): [("C01", "幸福社区 Xingfu"), ("C02", "光明社区 Guangming")],
        ("S02", "和平街道 Heping Subdistrict"): [("C03", "建设社区 Jianshe"), ("C04", "团结社区 Tuanjie")],
    }
}
USERS = [  # username, display name, role, node code
    ("demo-worker-1", "王芳 Wang Fang", "field_worker", "C01"),
    ("demo-worker-2", "李强 Li Qiang", "field_worker", "C01"),
    ("demo-worker-3", "张伟 Zhang Wei", "field_worker", "C03"),
    ("demo-reviewer-community", "刘洋 Liu Yang", "reviewer", "C01"),
    ("demo-reviewer-subdistrict", "陈静 Chen Jing", "reviewer", "S01"),
    ("demo-approver-district", "杨明 Yang Ming", "approver", "D01"),
    ("demo-admin", "赵敏 Zhao Min", "admin", "D01"),
]
SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗"
GIVEN = ["秀英", "桂兰", "建国", "志强", "丽娟", "海燕", "国庆", "淑珍", "文博", "子涵", "雨桐", "浩然"]
STREETS = ["和平路", "解放街", "建设巷", "胜利路", "人民街"]


def demo_id(kind: str, name: str) -> uuid.UUID:
    return uuid.uuid5(NAMESPACE, f"{kind}:{name}")


def fake_id_number(rng: random.Random, born: dt.date, sex: str) -> str:
    serial = rng.randrange(0, 50) * 2 + (1 if sex == "male" else 0)  # 17th digit odd for men
    first17 = f"130102{born:%Y%m%d}{rng.randrange(0, 10)}{serial:02d}"[:17]
    return first17 + check_character(first17)


async def seed(db: Database) -> None:
    async with db.write_session() as session:
        nodes = await _jurisdictions(session)
        added = await _users(session, nodes)
        for code, node in nodes.items():
            if node.level == Level.community:
                added += await _households(session, code, node)
        if added:
            audit.record(session, SYSTEM, "demo.seed", "demo", "demo", {"rows_added": added})
        await session.commit()
    from server.demo_visits import seed_visits  # after the people and households it needs

    await seed_visits(db)


async def _get_or_add(session: AsyncSession, row: B) -> tuple[B, int]:
    existing = await session.get(type(row), row.id)  # type: ignore[attr-defined]
    if existing is not None:
        return existing, 0
    session.add(row)
    return row, 1


async def _jurisdictions(session: AsyncSession) -> dict[str, Jurisdiction]:
    nodes: dict[str, Jurisdiction] = {}

    async def add(code: str, name: str, level: Level, parent: Jurisdiction | None) -> Jurisdiction:
        path = (parent.path if parent else "/") + code + "/"
        node, _ = await _get_or_add(
            session,
            Jurisdiction(
                id=demo_id("node", code),
                parent_id=parent and parent.id,
                level=level,
                code=code,
                name=name,
                path=path,
            ),
        )
        nodes[code] = node
        return node

    for (d_code, d_name), subdistricts in TREE.items():
        district = await add(d_code, d_name, Level.district, None)
        for (s_code, s_name), communities in subdistricts.items():
            sub = await add(s_code, s_name, Level.subdistrict, district)
            for c_code, c_name in communities:
                await add(c_code, c_name, Level.community, sub)
    await session.flush()
    return nodes


async def _users(session: AsyncSession, nodes: dict[str, Jurisdiction]) -> int:
    added = 0
    for username, display, role, code in USERS:
        if await session.get(User, demo_id("user", username)) is not None:
            continue
        session.add(
            User(
                id=demo_id("user", username),
                username=username,
                display_name=display,
                role=role,
                jurisdiction_id=nodes[code].id,
                password_hash=hash_password(PASSWORD),
            )
        )
        added += 1
    return added


async def _households(session: AsyncSession, code: str, community: Jurisdiction) -> int:
    rng = random.Random(code)  # the same demo data on every machine
    added = 0
    for n in range(1, HOUSEHOLDS_PER_COMMUNITY + 1):
        registry_no = f"DB-{code}-{n:04d}"
        household_id = demo_id("household", registry_no)
        if await session.get(Household, household_id) is not None:
            continue
        household = Household(
            id=household_id,
            registry_no=registry_no,
            community_id=community.id,
            address=f"{rng.choice(STREETS)}{rng.randrange(1, 300)}号{rng.randrange(1, 6)}单元"
            f"{rng.randrange(1, 7)}0{rng.randrange(1, 4)}室",
            lat=38.04 + rng.uniform(-0.02, 0.02),
            lon=114.51 + rng.uniform(-0.02, 0.02),
            status=rng.choice(["active", "active", "active", "applicant", "phase_out"]),
            recheck_class=rng.choice(["A", "B", "C"]),
            monthly_benefit_fen=rng.randrange(300, 900) * 100,
        )
        members = [_member(rng, household_id, registry_no, i) for i in range(rng.randrange(1, 5))]
        session.add(household)
        await session.flush()
        session.add_all(members)
        edits.stamp_created(session, SYSTEM, [household, *members])
        added += 1
    return added


def _member(rng: random.Random, household_id: uuid.UUID, registry_no: str, i: int) -> Member:
    sex = rng.choice(["male", "female"])
    born = dt.date(1940, 1, 1) + dt.timedelta(days=rng.randrange(0, 365 * 70))
    if i > 1:  # children are younger
        born = dt.date(2005, 1, 1) + dt.timedelta(days=rng.randrange(0, 365 * 15))
    return Member(
        id=demo_id("member", f"{registry_no}:{i}"),
        household_id=household_id,
        name=rng.choice(SURNAMES) + rng.choice(GIVEN),
        relation=["applicant", "spouse", "child", "child"][i],
        id_number=fake_id_number(rng, born, sex),
        sex=sex,
        birth_date=born,
        health=rng.choice(["healthy", "chronic", "serious_illness"]),
        work_capacity=rng.choice(["full", "partial", "none"]),
        employment=rng.choice(["unemployed_registered", "flexible", "retired", "student", None]),
    )
