"""Configuration comes from FIVESTEP_* variables; a bad one stops the start with one line naming it."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from server.config import ConfigError, load_settings


def test_defaults_are_the_embedded_mode() -> None:
    settings = load_settings({})
    assert settings.database_url.startswith("sqlite+aiosqlite:///./var/")
    assert settings.blob_store == "./var/blobs"
    assert (settings.host, settings.port) == ("127.0.0.1", 8000)


def test_values_are_parsed_by_type() -> None:
    settings = load_settings(
        {
            "FIVESTEP_PORT": "9001",
            "FIVESTEP_AUTO_MIGRATE": "false",
            "FIVESTEP_REVEAL_ROLES": "approver, admin",
        }
    )
    assert settings.port == 9001 and settings.auto_migrate is False
    assert settings.reveal_roles == ("approver", "admin")
    assert load_settings({"FIVESTEP_PORT": " 8001 ", "FIVESTEP_HOST": ""}).port == 8001


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"FIVESTEP_PORT": "eighty"}, "FIVESTEP_PORT"),
        ({"FIVESTEP_PORT": "70000"}, "FIVESTEP_PORT"),
        ({"FIVESTEP_DATABASE_URL": "mysql://db"}, "FIVESTEP_DATABASE_URL"),
        ({"FIVESTEP_BLOB_STORE": "s3://bucket-without-credentials"}, "FIVESTEP_BLOB_STORE"),
        ({"FIVESTEP_REVEAL_ROLES": "field_worker,janitor"}, "FIVESTEP_REVEAL_ROLES"),
        ({"FIVESTEP_DATABASE_URL": "postgresql+asyncpg://u@h/db"}, "FIVESTEP_SECRET_KEY"),
        ({"FIVESTEP_TOKEN_TTL_HOURS": "0"}, "FIVESTEP_TOKEN_TTL_HOURS"),
        ({"FIVESTEP_LOG_LEVEL": "verbose"}, "FIVESTEP_LOG_LEVEL"),
        ({"FIVESTEP_BLOB_STORE": "s3://a:b@minio:abc/bucket"}, "FIVESTEP_BLOB_STORE"),
        ({"FIVESTEP_BLOB_STORE": "s3://a:b@minio:9000/two/parts"}, "FIVESTEP_BLOB_STORE"),
        ({"FIVESTEP_BLOB_TIMEOUT_SECONDS": "-1"}, "FIVESTEP_BLOB_TIMEOUT_SECONDS"),
        ({"FIVESTEP_BLOB_TIMEOUT_SECONDS": "nan"}, "FIVESTEP_BLOB_TIMEOUT_SECONDS"),
        ({"FIVESTEP_LOGIN_LOCKOUT_SECONDS": "0"}, "FIVESTEP_LOGIN_LOCKOUT_SECONDS"),
        ({"FIVESTEP_SIGNED_URL_TTL_SECONDS": "0"}, "FIVESTEP_SIGNED_URL_TTL_SECONDS"),
        ({"FIVESTEP_RULES_FILE": "/no/such/rules.yaml"}, "FIVESTEP_RULES_FILE"),
    ],
)
def test_bad_values_name_the_variable(env: dict[str, str], named: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(env)
    message = str(caught.value)
    assert message.startswith(named) and "\n" not in message


def test_serve_with_bad_configuration_exits_with_one_line(tmp_path: object) -> None:
    env = {**os.environ, "FIVESTEP_PORT": "eighty"}
    done = subprocess.run(
        [sys.executable, "-m", "server.cli", "serve"], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "fivestep: configuration error: FIVESTEP_PORT: expected a whole number, got 'eighty'"
    ]


GOOD_RULES = (Path(__file__).parents[2] / "server/data/rules/default.yaml").read_text()


@pytest.mark.parametrize(
    ("broken", "says"),
    [
        ("code: [unclosed\n", "flow sequence"),
        (GOOD_RULES.replace("version: 1", "version: one"), "version"),
        (GOOD_RULES.replace("calendars: [cn-2025, cn-2026]", "calendars: [cn-2025, cn-2062]"), "cn-2062"),
        (GOOD_RULES.replace("  tip: 5\n", ""), "tip"),
        (re.sub(r"review_levels:\n(?:  .*\n)+", "review_levels: []\n", GOOD_RULES), "review level"),
    ],
)
def test_a_broken_rule_pack_stops_the_start(tmp_path: Path, broken: str, says: str) -> None:
    """A rule pack that cannot be used (a typo, a calendar not shipped, a purpose with checklists but no
    due days, no review level) passed the start and then made every visit request a 500."""
    rules = tmp_path / "rules.yaml"
    rules.write_text(broken)
    with pytest.raises(ConfigError) as caught:
        load_settings({"FIVESTEP_RULES_FILE": str(rules)})
    message = str(caught.value)
    assert message.startswith("FIVESTEP_RULES_FILE") and says in message and "\n" not in message, message


def test_the_shipped_rule_pack_passes(tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(GOOD_RULES)
    assert load_settings({"FIVESTEP_RULES_FILE": str(rules)}).rules_file == str(rules)
