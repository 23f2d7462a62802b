"""Shared pytest setup: real backing services and an app per test on each database."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from litestar import Litestar
from litestar.testing import TestClient
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from schemas.config import Settings
from server.db.models import ScopeExit, SyncChange, SyncNumbering
from server.security import passwords
from tests.apps import started
from tests.helpers import run_db

# Passwords hashed in tests cost 1 MiB of scrypt instead of 16 (the same code, about 2 ms instead of 30 a
# sign-in): the suite signs in thousands of times. A server started as a process (`fivestep serve`) and
# the sign-in memory test keep the real cost.
passwords.N = 2**10

pytest_plugins = ["tests.fixtures.databases", "tests.fixtures.postgres", "tests.fixtures.s3"]

# CI runs a bounded profile; `HYPOTHESIS_PROFILE=soak` runs the long one by hand.
settings.register_profile("ci", max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("dev", max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("soak", max_examples=1000, deadline=None, suppress_health_check=list(HealthCheck))
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev"))


@pytest.fixture
def app_settings(database_url: str, tmp_path: Path) -> Settings:
    return Settings(
        database_url=database_url,
        blob_store=str(tmp_path / "blobs"),
        var_dir=str(tmp_path),
        secret_key="test-secret-key",
        auto_migrate=False,
        log_level="WARNING",
    )


@pytest.fixture
def client(app_settings: Settings) -> Iterator[TestClient[Litestar]]:
    with started(app_settings) as test_client:
        yield test_client
        assert run_db(test_client, _unnumbered) == (0, 0), "a commit left feed stamps without their number"


async def _unnumbered(session: AsyncSession) -> tuple[int, int]:
    """Feed rows still carrying a transaction's placeholder (a negative seq), and numbering requests left.

    Checked after every test with an app: a stamp committed with its placeholder would never reach a
    device (pulls read forward from a cursor), whatever path wrote it."""
    stamps = 0
    for table in (SyncChange, ScopeExit):
        query = select(func.count()).select_from(table).where(table.seq < 0)
        stamps += int((await session.execute(query)).scalar_one())
    requests = int((await session.execute(select(func.count()).select_from(SyncNumbering))).scalar_one())
    return stamps, requests
