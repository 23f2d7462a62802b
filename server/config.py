"""Load `Settings` from FIVESTEP_* environment variables, failing with one line that names the variable."""

from __future__ import annotations

import os
import secrets
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import msgspec

from schemas.config import Settings
from schemas.rules import RulePack
from server.domain.calendar import load_calendar

PREFIX = "FIVESTEP_"
ROLES = ("field_worker", "reviewer", "approver", "admin")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


class ConfigError(ValueError):
    """Bad configuration; the message is one line naming the variable."""


def env_name(field: str) -> str:
    return PREFIX + field.upper()


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    env = os.environ if environ is None else environ
    raw: dict[str, Any] = {}
    for name, type_ in typing.get_type_hints(Settings).items():
        value = env.get(env_name(name))
        if value is not None and value.strip():
            raw[name] = _parse(name, type_, value.strip())
    try:
        settings = msgspec.convert(raw, Settings, strict=False)
    except msgspec.ValidationError as exc:  # pragma: no cover - _parse already checked each type
        raise ConfigError(str(exc)) from exc
    _check(settings)
    return settings


def _parse(name: str, type_: Any, value: str) -> Any:
    if typing.get_origin(type_) is tuple:
        return tuple(part.strip() for part in value.split(",") if part.strip())
    target = {int: int, float: float, bool: bool, str: str}.get(type_, str)
    try:
        return msgspec.convert(value, target, strict=False)
    except msgspec.ValidationError:
        kind = {int: "a whole number", float: "a number", bool: "true or false"}.get(target, "text")
        raise ConfigError(f"{env_name(name)}: expected {kind}, got {value!r}") from None


def _check(s: Settings) -> None:
    if not s.database_url.startswith(("sqlite+aiosqlite://", "postgresql+asyncpg://")):
        raise ConfigError(
            f"{env_name('database_url')}: must start with sqlite+aiosqlite:// or postgresql+asyncpg://"
        )
    if s.is_s3_store:
        _check_s3_url(s.blob_store)
    if s.log_level.upper() not in LOG_LEVELS:
        raise ConfigError(f"{env_name('log_level')}: must be one of {', '.join(LOG_LEVELS)}")
    if not (0 < s.blob_timeout_seconds < 3600):
        raise ConfigError(f"{env_name('blob_timeout_seconds')}: must be between 0 and 3600 seconds")
    if not 1 <= s.signed_url_ttl_seconds <= 7 * 24 * 3600:
        raise ConfigError(f"{env_name('signed_url_ttl_seconds')}: must be between 1 second and 7 days")
    if s.rules_file and not Path(s.rules_file).is_file():
        raise ConfigError(f"{env_name('rules_file')}: no such file {s.rules_file!r}")
    if s.rules_file and (problem := _rules_problem(Path(s.rules_file))):
        raise ConfigError(f"{env_name('rules_file')}: {problem}")
    for name in ("reveal_roles", "original_roles"):
        for role in getattr(s, name):
            if role not in ROLES:
                raise ConfigError(f"{env_name(name)}: unknown role {role!r}; roles are {', '.join(ROLES)}")
    if not 1 <= s.port <= 65535:
        raise ConfigError(f"{env_name('port')}: must be between 1 and 65535")
    for name in (
        "token_ttl_hours",
        "blob_threads",
        "login_max_failures",
        "login_lockout_seconds",
        "max_upload_bytes",
        "upload_expiry_hours",
        "image_workers",
        "workers",
    ):
        if getattr(s, name) <= 0:
            raise ConfigError(f"{env_name(name)}: must be positive")
    if not s.is_embedded_database and not s.secret_key:
        raise ConfigError(
            f"{env_name('secret_key')}: required with PostgreSQL, so every server process signs alike"
        )


def _check_s3_url(url: str) -> None:
    parts = urlsplit(url)
    bucket = parts.path.strip("/")
    try:
        port = parts.port
    except ValueError:
        port = -1
    if not (parts.hostname and parts.username and parts.password and bucket) or "/" in bucket or port == -1:
        raise ConfigError(f"{env_name('blob_store')}: expected s3://ACCESS:SECRET@host:port/bucket")


def resolve_secret(s: Settings) -> str:
    """The signing secret: configured, or generated once into var_dir for the embedded mode."""
    if s.secret_key:
        return s.secret_key
    path = Path(s.var_dir) / "secret_key"
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_urlsafe(48))
    return path.read_text().strip()


def _rules_problem(path: Path) -> str | None:
    """Why the rule pack at `path` cannot be used: it is read on the first visit request, and a pack that
    fails there would make every such request fail, long after the start said nothing."""
    try:
        rules = msgspec.yaml.decode(path.read_bytes(), type=RulePack)
    except msgspec.DecodeError as exc:  # ValidationError too
        return " ".join(str(exc).split())
    if not rules.review_levels:
        return "needs at least one review level"
    for code in rules.calendars:
        try:
            load_calendar(code)
        except ValueError:
            return f"calendar {code!r} is not shipped (server/data/calendars)"
    if unpaired := set(rules.templates) ^ set(rules.visit_due_working_days):
        return f"purposes {sorted(unpaired)} need both templates and visit_due_working_days"
    return None
