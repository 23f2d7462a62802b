"""docs/configuration.md documents every setting, with its real default, so the docs cannot drift."""

from __future__ import annotations

import re
from pathlib import Path

import msgspec
import pytest

from schemas.config import Settings
from server.cli import main
from server.config import env_name

DOCS = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"
ROW = re.compile(r"^\| `(FIVESTEP_[A-Z0-9_]+)` \| (.*?) \| (.+) \|$", re.MULTILINE)


def documented_rows() -> dict[str, tuple[str, str]]:
    """Table rows of the settings table: variable -> (default cell, meaning cell)."""
    rows: dict[str, tuple[str, str]] = {}
    for name, default, meaning in ROW.findall(DOCS.read_text()):
        assert name not in rows, f"{name} has two rows"
        rows[name] = (default, meaning)
    return rows


def rendered_default(value: object) -> str:
    """A default the way the table writes it."""
    if value == "":
        return "*(empty)*"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, tuple):
        return f"`{','.join(value)}`"
    return f"`{value}`"


def test_every_setting_has_a_row_with_its_real_default() -> None:
    rows = documented_rows()
    fields = msgspec.structs.fields(Settings)
    assert len(fields) > 10
    for field in fields:
        name = env_name(field.name)
        assert name in DOCS.read_text(), f"{name} is not mentioned in {DOCS.name}"
        assert name in rows, f"{name} has no row in the settings table"
        default, meaning = rows[name]
        assert default == rendered_default(field.default), f"{name}: documented default {default}"
        assert len(meaning) > 20, f"{name}: no real explanation"


def test_no_row_documents_a_setting_that_does_not_exist() -> None:
    real = {env_name(field.name) for field in msgspec.structs.fields(Settings)}
    assert set(documented_rows()) <= real


def test_the_documented_error_line_is_the_real_one(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("FIVESTEP_PORT", "abc")
    assert main(["serve"]) == 2
    line = capsys.readouterr().err.strip()
    assert line.startswith("fivestep: configuration error: FIVESTEP_PORT:")
    text = DOCS.read_text()
    assert f"$ FIVESTEP_PORT=abc fivestep serve\n{line}\n$ echo $?\n2\n" in text
    assert "exit code 2" in text
