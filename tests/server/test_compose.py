"""compose.yaml and the Dockerfile agree with each other and with the real configuration loader.

Docker is not needed: the Compose file is parsed, its `${...}` interpolations are applied the way
Compose applies them, and the fivestep service's environment goes through `load_settings`.
"""

from __future__ import annotations

import asyncio
import json
import re
import shlex
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import msgspec
import pytest
import yaml

from media.stores.s3 import S3BlobStore
from schemas.config import Settings
from server.config import env_name, load_settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "compose.yaml"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"

SETTINGS_ENV_NAMES = frozenset(env_name(f.name) for f in msgspec.structs.fields(Settings))
TEST_SECRET = "compose-test-secret-key"
# Values that differ from every default, to show an override reaches every place that needs it.
OVERRIDES = {
    "FIVESTEP_SECRET_KEY": TEST_SECRET,
    "POSTGRES_PASSWORD": "pg-override-pw",
    "MINIO_ROOT_PASSWORD": "minio-override-pw",
}

# Compose interpolation: $$ (a literal $), ${NAME}, ${NAME:-default}, ${NAME-default},
# ${NAME:?error}, ${NAME?error}, and bare $NAME.
_INTERPOLATION = re.compile(
    r"\$(?:(?P<escaped>\$)"
    r"|\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}"
    r"|(?P<bare>[A-Za-z_][A-Za-z0-9_]*))"
)


class MissingVariableError(Exception):
    def __init__(self, name: str, message: str) -> None:
        super().__init__(f"{name}: {message}")
        self.name = name


def interpolate(value: str, env: Mapping[str, str]) -> str:
    def substitute(match: re.Match[str]) -> str:
        if match["escaped"]:
            return "$"
        name = match["braced"] or match["bare"]
        op, arg = match["op"], match["arg"] or ""
        current = env.get(name)
        if op == ":-":
            return current or arg
        if op == "-":
            return arg if current is None else current
        if op in (":?", "?"):
            if current is None or (op == ":?" and not current):
                raise MissingVariableError(name, arg)
            return current
        return current or ""

    return _INTERPOLATION.sub(substitute, value)


def resolve(node: Any, env: Mapping[str, str]) -> Any:
    if isinstance(node, str):
        return interpolate(node, env)
    if isinstance(node, dict):
        return {key: resolve(value, env) for key, value in node.items()}
    if isinstance(node, list):
        return [resolve(item, env) for item in node]
    return node


def raw_compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(data, dict)
    return data


def services(env: Mapping[str, str] | None = None) -> dict[str, dict[str, Any]]:
    data = raw_compose() if env is None else resolve(raw_compose(), env)
    result = data["services"]
    assert isinstance(result, dict)
    return result


def environment(service: Mapping[str, Any]) -> dict[str, str]:
    """A service's environment, in either the mapping or the list form."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        pairs = (item.split("=", 1) if "=" in item else (item, "") for item in env)
        return {name: value for name, value in pairs}
    return {name: "" if value is None else str(value) for name, value in env.items()}


def as_command(value: str | list[str] | None) -> list[str]:
    if value is None:
        return []
    return shlex.split(value) if isinstance(value, str) else [str(part) for part in value]


def container_port(mapping: str | int | dict[str, Any]) -> int:
    if isinstance(mapping, dict):
        return int(mapping["target"])
    return int(str(mapping).split("/")[0].rsplit(":", 1)[-1])


def published_port(mapping: str | int) -> int:
    parts = str(mapping).split("/")[0].split(":")
    return int(parts[-2] if len(parts) > 1 else parts[-1])


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with line continuations joined and comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    result = []
    for line in text.splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            keyword, _, rest = stripped.partition(" ")
            result.append((keyword.upper(), rest.strip()))
    return result


def dockerfile_values(keyword: str) -> list[str]:
    return [rest for kw, rest in dockerfile_instructions() if kw == keyword]


def bucket_created_by_init(service: Mapping[str, Any]) -> tuple[str, str]:
    """(alias, bucket) of the `mc mb` in minio-init's entrypoint and command."""
    script = " ".join(as_command(service.get("entrypoint")) + as_command(service.get("command")))
    made = re.search(r"\bmc mb (?:--[\w-]+ )*([\w.-]+)/([\w.-]+)", script)
    assert made, f"no `mc mb ALIAS/BUCKET` in minio-init: {script!r}"
    return made[1], made[2]


def settings_from_compose(env: Mapping[str, str]) -> Settings:
    return load_settings(environment(services(env)["fivestep"]))


# --- the interpolation helper itself, so the tests below cannot pass by a broken substitute ---


def test_interpolation_follows_compose_rules() -> None:
    env = {"SET": "value", "EMPTY": ""}
    assert interpolate("${SET:-d}|${EMPTY:-d}|${UNSET:-d}|${EMPTY-d}|${UNSET-d}", env) == "value|d|d||d"
    assert interpolate("$$HOME ${SET:?x} $SET", env) == "$HOME value value"
    with pytest.raises(MissingVariableError):
        interpolate("${EMPTY:?needed}", env)
    with pytest.raises(MissingVariableError):
        interpolate("${UNSET?needed}", env)


# --- compose.yaml ---


def test_compose_has_no_version_key_and_the_four_services() -> None:
    data = raw_compose()
    assert "version" not in data
    assert {"postgres", "minio", "minio-init", "fivestep"} <= set(data["services"])


def test_postgres_is_major_version_16() -> None:
    image = services()["postgres"]["image"]
    name, _, tag = image.partition(":")
    assert name in ("postgres", "docker.io/library/postgres")
    assert re.split(r"[.-]", tag)[0] == "16", image


def test_every_fivestep_variable_is_a_settings_field() -> None:
    names: set[str] = set()
    for service in services().values():
        names |= {name for name in environment(service) if name.startswith("FIVESTEP_")}
    assert names, "no FIVESTEP_* variables found at all"
    assert names <= SETTINGS_ENV_NAMES, f"not Settings fields: {sorted(names - SETTINGS_ENV_NAMES)}"
    # Variables interpolated from the host that look like settings must be settings too.
    interpolated = {m["braced"] or m["bare"] for m in _INTERPOLATION.finditer(COMPOSE.read_text())} - {None}
    fivestep_interpolated = {name for name in interpolated if name.startswith("FIVESTEP_")}
    assert fivestep_interpolated <= SETTINGS_ENV_NAMES, sorted(fivestep_interpolated - SETTINGS_ENV_NAMES)


def test_compose_refuses_to_start_without_a_secret_key() -> None:
    with pytest.raises(MissingVariableError) as caught:
        services({})
    assert caught.value.name == "FIVESTEP_SECRET_KEY"
    with pytest.raises(MissingVariableError):
        services({"FIVESTEP_SECRET_KEY": ""})


@pytest.mark.parametrize(
    "host_env",
    [{"FIVESTEP_SECRET_KEY": TEST_SECRET}, OVERRIDES],
    ids=["defaults", "overridden-passwords"],
)
def test_fivestep_environment_loads_and_matches_the_other_services(host_env: dict[str, str]) -> None:
    resolved = services(host_env)
    settings = settings_from_compose(host_env)

    assert settings.secret_key == TEST_SECRET
    assert settings.host == "0.0.0.0"  # a container must listen beyond loopback
    assert settings.public_url == "http://localhost:8000"

    postgres_env = environment(resolved["postgres"])
    db = urlsplit(settings.database_url)
    assert db.scheme == "postgresql+asyncpg"
    assert db.hostname == "postgres"
    assert db.port == 5432
    assert db.username == postgres_env["POSTGRES_USER"] == "fivestep"
    assert db.password == postgres_env["POSTGRES_PASSWORD"]
    assert db.path.strip("/") == postgres_env["POSTGRES_DB"] == "fivestep"

    minio_env = environment(resolved["minio"])
    init_env = environment(resolved["minio-init"])
    store = urlsplit(settings.blob_store)
    assert store.scheme == "s3"
    assert store.hostname == "minio"
    assert store.port == 9000
    assert store.username == minio_env["MINIO_ROOT_USER"] == init_env["MINIO_ROOT_USER"]
    assert store.password == minio_env["MINIO_ROOT_PASSWORD"] == init_env["MINIO_ROOT_PASSWORD"]
    assert parse_qs(store.query) == {"secure": ["false"], "region": ["us-east-1"]}
    alias, bucket = bucket_created_by_init(resolved["minio-init"])
    assert store.path.strip("/") == bucket == "fivestep"
    assert alias == "local"

    if host_env is OVERRIDES:
        assert db.password == OVERRIDES["POSTGRES_PASSWORD"]
        assert store.password == OVERRIDES["MINIO_ROOT_PASSWORD"]


def test_the_blob_store_url_opens_and_presigns_for_the_published_minio_port() -> None:
    settings = settings_from_compose({"FIVESTEP_SECRET_KEY": TEST_SECRET})
    assert settings.blob_public_endpoint == "localhost:9000"
    published = {published_port(mapping) for mapping in services()["minio"]["ports"]}
    assert int(settings.blob_public_endpoint.rsplit(":", 1)[1]) in published

    async def presign() -> tuple[str, str, str]:
        store = S3BlobStore.from_url(settings.blob_store, public_endpoint=settings.blob_public_endpoint)
        try:
            url = await store.signed_url("evidence/photo.jpg", expires_in=60)
            return store.endpoint, store.bucket, url
        finally:
            await store.close()

    endpoint, bucket, url = asyncio.run(presign())
    assert endpoint == "minio:9000"
    assert bucket == "fivestep"
    assert url.startswith("http://localhost:9000/fivestep/evidence/photo.jpg?")


def test_fivestep_publishes_the_port_the_image_serves() -> None:
    service = services()["fivestep"]
    exposed = {int(port.split("/")[0]) for value in dockerfile_values("EXPOSE") for port in value.split()}
    served = {int(port) for port in re.findall(r"fivestep serve[^\"]*--port (\d+)", DOCKERFILE.read_text())}
    targets = {container_port(mapping) for mapping in service["ports"]}
    assert exposed == served == targets == {8000}
    assert "8000:8000" in [str(mapping) for mapping in service["ports"]]
    checked = " ".join(as_command(service["healthcheck"]["test"]))
    assert "http://127.0.0.1:8000/health" in checked


def test_depends_on_conditions() -> None:
    all_services = services()
    assert all_services["fivestep"]["depends_on"] == {
        "postgres": {"condition": "service_healthy"},
        "minio": {"condition": "service_healthy"},
        "minio-init": {"condition": "service_completed_successfully"},
    }
    assert all_services["minio-init"]["depends_on"] == {"minio": {"condition": "service_healthy"}}
    # service_healthy waits forever on a service without a healthcheck.
    for name, service in all_services.items():
        depends = service.get("depends_on") or {}
        for dependency, spec in depends.items() if isinstance(depends, dict) else []:
            if spec.get("condition") == "service_healthy":
                assert "healthcheck" in all_services[dependency], f"{name} waits on {dependency}"


def test_healthchecks_have_a_test() -> None:
    with_checks = {name: s["healthcheck"] for name, s in services().items() if "healthcheck" in s}
    assert {"postgres", "minio", "fivestep"} <= set(with_checks)
    for name, check in with_checks.items():
        test = check.get("test")
        assert test, f"{name}: healthcheck without a test"
        if isinstance(test, list):
            assert test[0] in ("CMD", "CMD-SHELL"), f"{name}: {test!r}"
            assert len(test) > 1, f"{name}: {test!r}"
    assert as_command(with_checks["postgres"]["test"])[1:] == [
        "pg_isready",
        "-U",
        "fivestep",
        "-d",
        "fivestep",
    ]
    assert as_command(with_checks["minio"]["test"])[1:] == ["mc", "ready", "local"]


def test_service_details() -> None:
    data = raw_compose()
    all_services = data["services"]
    fivestep = all_services["fivestep"]
    assert fivestep["build"] == "."
    assert fivestep["stop_grace_period"] == "30s"
    assert fivestep["restart"] == "unless-stopped"
    assert all_services["minio-init"]["restart"] == "no"  # a string: a bare `no` would be YAML false
    assert all_services["minio-init"]["image"].split(":")[0] == "minio/mc"
    minio = all_services["minio"]
    assert minio["image"].split(":")[0] == "minio/minio"
    assert as_command(minio["command"]) == ["server", "/data", "--console-address", ":9001"]
    assert {container_port(mapping) for mapping in minio["ports"]} == {9000, 9001}
    # Every named volume a service mounts is declared at the top level.
    declared = set(data.get("volumes") or {})
    for name, service in all_services.items():
        for mount in service.get("volumes") or []:
            source = mount.split(":")[0] if isinstance(mount, str) else mount.get("source", "")
            if source and not source.startswith((".", "/", "~")):
                assert source in declared, f"{name} mounts undeclared volume {source!r}"
    assert {"postgres", "minio"} <= {
        name
        for name, service in all_services.items()
        for mount in service.get("volumes") or []
        if isinstance(mount, str) and mount.split(":")[0] in declared
    }


# --- Dockerfile ---


def exec_form(keyword: str) -> list[str]:
    """The JSON array of an exec-form instruction; Docker silently runs bad JSON as a shell string."""
    (value,) = dockerfile_values(keyword)
    if keyword == "HEALTHCHECK":
        value = value[value.index("CMD ") + len("CMD ") :]
    parsed = json.loads(value)
    assert isinstance(parsed, list)
    assert all(isinstance(part, str) for part in parsed)
    return parsed


def test_dockerfile_builds_a_non_root_image_that_migrates_then_serves() -> None:
    text = DOCKERFILE.read_text()
    assert dockerfile_values("FROM") == ["python:3.11-slim"]
    users = dockerfile_values("USER")
    assert users, "the image must not run as root"
    assert users[-1] not in ("root", "0")
    assert "8000" in " ".join(dockerfile_values("EXPOSE")).split()
    entrypoint = exec_form("ENTRYPOINT")
    assert entrypoint[:2] == ["/bin/sh", "-c"]
    script = entrypoint[2]
    assert "fivestep migrate" in script
    assert "fivestep serve" in script
    assert script.index("fivestep migrate &&") < script.index("exec fivestep serve")
    assert "--host 0.0.0.0" in script
    healthcheck = exec_form("HEALTHCHECK")
    assert healthcheck[:2] == ["python", "-c"]
    assert "urllib.request" in healthcheck[2]
    assert "http://127.0.0.1:8000/health" in healthcheck[2]
    assert "curl" not in text
    assert "pip install ." in text
    for package in ("server", "schemas", "sync", "media"):
        assert re.search(rf"^COPY {package}\b", text, re.MULTILINE), package
    assert re.search(r"^COPY pyproject\.toml README\.md", text, re.MULTILINE)
    assert (ROOT / "README.md").is_file()  # pyproject.toml's readme, copied into the build


def run_entrypoint(tmp_path: Path, args: list[str], *, migrate_fails: bool = False) -> list[str]:
    """Run the image's entrypoint with a stand-in `fivestep` that records how it was called."""
    log = tmp_path / "calls"
    fake = tmp_path / "bin" / "fivestep"
    fake.parent.mkdir(parents=True)
    fail = 'if [ "$1" = migrate ]; then exit 3; fi\n' if migrate_fails else ""
    fake.write_text(f'#!/bin/sh\nprintf "<%s>" "$@" >> "{log}"\necho >> "{log}"\n{fail}')
    fake.chmod(0o755)
    entrypoint = exec_form("ENTRYPOINT")
    env = {"PATH": f"{fake.parent}:/usr/bin:/bin"}
    done = subprocess.run([*entrypoint, *args], env=env, check=False, timeout=30)
    calls = log.read_text().splitlines() if log.exists() else []
    return [*calls, f"exit {done.returncode}"]


@pytest.mark.skipif(not Path("/bin/sh").exists(), reason="needs /bin/sh")
def test_entrypoint_migrates_then_serves_or_runs_the_given_command(tmp_path: Path) -> None:
    assert run_entrypoint(tmp_path / "a", []) == [
        "<migrate>",
        "<serve><--host><0.0.0.0><--port><8000>",
        "exit 0",
    ]
    assert run_entrypoint(tmp_path / "b", [], migrate_fails=True) == ["<migrate>", "exit 3"]
    assert run_entrypoint(tmp_path / "c", ["create-user", "ann lee", "--role", "admin"]) == [
        "<create-user><ann lee><--role><admin>",
        "exit 0",
    ]


def test_dockerignore_keeps_local_state_out_of_the_build_context() -> None:
    ignored = {line.strip() for line in DOCKERIGNORE.read_text().splitlines()}
    assert {".venv", "var", ".git", "tests", "bench", "**/__pycache__"} <= ignored
