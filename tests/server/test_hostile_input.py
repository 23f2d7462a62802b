"""Hostile values in every field of valid requests: never a 500, always the API's JSON error.

Each write endpoint gets a valid body; then each leaf of that body in turn is replaced by a value that
passes JSON decoding but that a database or a careless check may choke on: NUL characters (PostgreSQL text
cannot hold them), integers past 64 bits, text longer than its column, deep nesting, wrong types, a time
without a zone where a time goes; and each
text leaf at exactly the maximum length the OpenAPI document gives it, which must be stored. Every
query and path parameter of the OpenAPI document gets the same in text form, and tus creation its
metadata. Both databases.
"""

from __future__ import annotations

import base64
import re
import urllib.parse
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from server.db.models import SyncClient
from tests.helpers import NEW_USER_PASSWORD, Client, household_id, login, node_id, run_db
from tests.helpers import new_user as make_user
from tests.server.test_households import valid_id
from tests.visit_flow import GPS, TEAM, assign

DEEP: list[Any] = []
for _ in range(40):
    DEEP = [DEEP]

HOSTILE: list[Any] = [
    "\x00",
    "x" * 70_000,
    2**63,
    10**40,
    1e308,
    -1,
    None,
    [],
    {},
    "2026-02-30",
    DEEP,
]
ZONELESS = "2026-11-30T08:00:00"
"""Sent where a time is: a time without a zone, which UTC columns refuse."""


def leaves(value: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """The path of every leaf (and every container, which is replaced whole as well)."""
    if path:
        yield path
    if isinstance(value, dict):
        for key, child in value.items():
            yield from leaves(child, (*path, key))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            yield from leaves(child, (*path, index))


def replaced(value: Any, path: tuple[Any, ...], new: Any) -> Any:
    if not path:
        return new
    head, rest = path[0], path[1:]
    if isinstance(value, dict):
        return {**value, head: replaced(value[head], rest, new)}
    copy = list(value)
    copy[head] = replaced(copy[head], rest, new)
    return copy


def assert_no_server_error(
    client: Client, request: Request, spec: dict[str, Any], *, swept: frozenset[tuple[Any, ...]] = frozenset()
) -> None:
    """Each leaf of the body in turn poisoned (but those in ``swept``, poisoned by another case), each
    time in a valid body: new ids, the current version, so the request goes as deep as a valid one would
    instead of stopping at "already done". A body is made anew only once one was taken (a 4xx took
    nothing, so its ids and version still hold). Each text leaf is also sent at exactly its documented
    maximum length: valid input that a column, or a value derived from it (an audit row's `code@version`),
    may still be too short for. ``spec`` is the app's OpenAPI document (built once by the caller: a third
    of a second each time)."""
    method, url, fresh, headers = request
    body_schema = _body_schema(spec, method, url)
    valid = fresh()
    for path in leaves(valid):
        if path in swept:
            continue
        at_a_time = [ZONELESS] if _is_a_time(_at(valid, path)) else []
        for new in [*HOSTILE, *at_a_time, *_longest(body_schema, valid, path)]:
            response = client.request(method, url, json=replaced(valid, path, new), headers=headers)
            assert response.status_code < 500, (
                path,
                repr(new)[:80],
                response.status_code,
                response.text[:300],
            )
            if response.status_code >= 400:
                assert "code" in response.json()["error"], response.text
            else:
                valid = fresh()


def _at(value: Any, path: tuple[Any, ...]) -> Any:
    for step in path:
        value = value[step]
    return value


def _is_a_time(value: Any) -> bool:
    return isinstance(value, str) and len(value) > 10 and value[4] == "-" and value[10] == "T"


def _body_schema(spec: dict[str, Any], method: str, url: str) -> tuple[dict[str, Any], Any]:
    """The OpenAPI document and the operation's body schema."""
    for template, item in spec["paths"].items():
        if re.fullmatch(re.sub(r"{\w+}", "[^/]+", template), url.split("?")[0]):
            return spec, item[method.lower()]["requestBody"]["content"]["application/json"]["schema"]
    raise AssertionError(f"no documented operation for {method} {url}")


def _longest(documented: tuple[dict[str, Any], Any], body: Any, path: tuple[Any, ...]) -> list[str]:
    """The leaf's valid text padded to the maximum length its schema gives, if it is text and has one."""
    spec, schema = documented
    value = body
    for step in path:
        schema = _alternative(spec, schema, value)
        schema = (
            schema.get("properties", {}).get(step, {}) if isinstance(step, str) else schema.get("items", {})
        )
        value = value[step]
    options = [schema, *_alternatives(spec, schema)]
    limits = [o["maxLength"] for o in options if "maxLength" in o]
    if not isinstance(value, str) or not limits:
        return []
    return [value[: limits[0]] + "a" * (limits[0] - len(value))]


def _alternative(spec: dict[str, Any], schema: Any, value: Any) -> Any:
    """The branch of a oneOf/anyOf that `value` was made for: a mutation by its `op`, else by its keys."""
    for option in _alternatives(spec, schema):
        properties = option.get("properties", {})
        if isinstance(value, dict) and set(value) <= set(properties):
            tag = _deref(spec, properties.get("op", {}))
            if "op" not in value or value["op"] in (tag.get("const"), *tag.get("enum", ())):
                return option
        if isinstance(value, list) and "items" in option:
            return option
    return _deref(spec, schema)


def _alternatives(spec: dict[str, Any], schema: Any) -> list[Any]:
    schema = _deref(spec, schema)
    options = schema.get("oneOf") or schema.get("anyOf")
    return [o for option in options for o in _alternatives(spec, option)] if options else [schema]


def _deref(spec: dict[str, Any], schema: Any) -> Any:
    while isinstance(schema, dict) and "$ref" in schema:
        schema = spec["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    return schema


Request = tuple[str, str, Callable[[], Any], dict[str, str]]
"""Method, URL, a maker of fresh valid bodies, headers."""
Case = Callable[[Client], Request]


def new_id() -> str:
    return str(uuid.uuid4())


def login_body(client: Client) -> Request:
    body = {"username": "demo-worker-1", "password": "demo", "device_id": "tablet-x"}
    return "POST", "/api/v1/auth/login", lambda: body, {}


def household_patch(client: Client) -> Request:
    headers = login(client, "demo-worker-1")
    url = f"/api/v1/households/{household_id('DB-C01-0001')}"

    def fresh() -> Any:
        version = client.get(url, headers=headers).json()["version"]
        return {"version": version, "address": "解放街1号", "lat": 38.0, "monthly_benefit_fen": 12000}

    return "PATCH", url, fresh, headers


def member_patch(client: Client) -> Request:
    headers = login(client, "demo-worker-1")
    member_id = first_member(client, headers)["id"]
    url = f"/api/v1/members/{member_id}"

    def fresh() -> Any:
        version = first_member(client, headers)["version"]
        return {"version": version, "health": "良好", "employment": "无", "birth_date": "1960-01-01"}

    return "PATCH", url, fresh, headers


def first_member(client: Client, headers: dict[str, str]) -> Any:
    return client.get(f"/api/v1/households/{household_id('DB-C01-0001')}", headers=headers).json()["members"][
        0
    ]


def household_create(client: Client) -> Request:
    headers = login(client, "demo-worker-1")
    serial = iter(range(10**6))

    def fresh() -> Any:
        number = next(serial)
        return {
            "registry_no": f"DB-X-{number:06d}",
            "community_id": str(node_id("C01")),
            "address": "新街1号",
            "members": [
                {
                    "name": "张三",
                    "relation": "户主",
                    "id_number": valid_id(f"1101051949{number:07d}"),
                    "health": "好",
                }
            ],
        }

    return "POST", "/api/v1/households", fresh, headers


def observation_body() -> dict[str, Any]:
    return {
        "id": new_id(),
        "template": "step.look",
        "item": "home_photos",
        "value": {"photos": [{"sha256": "a" * 64, "view": "kitchen"}]},
        "note": "厨房",
        "gps": GPS,
        "device_time": "2026-11-30T08:00:00Z",
    }


def observations(client: Client) -> Request:
    visit = assign(client)
    url = f"/api/v1/visits/{visit['id']}/observations"
    return "POST", url, lambda: {"observations": [observation_body()]}, login(client, "demo-worker-1")


def push_of(client: Client, mutation: Callable[[], dict[str, Any]]) -> Request:
    """A push of one mutation (seq 1) from a new client each time."""

    def fresh() -> Any:
        body = {"client_id": new_id(), "schema_version": 1, "device_now": "2026-11-30T08:00:00Z"}
        head = {"seq": 1, "mutation_id": new_id(), "device_time": "2026-11-30T08:00:00Z"}
        return body | {"mutations": [head | mutation()]}

    return "POST", "/api/v1/sync/push", fresh, login(client, "demo-worker-1")


def push(client: Client) -> Request:
    update = {
        "op": "household.update.v1",
        "household_id": str(household_id("DB-C01-0001")),
        "base_version": 1,
        "changes": {"address": {"old": None, "new": "新地址"}},
    }
    return push_of(client, lambda: update)


def push_member_update(client: Client) -> Request:
    member = first_member(client, login(client, "demo-worker-1"))
    changes = {"health": "好", "relation": "子", "employment": "无"}
    update = {
        "op": "member.update.v1",
        "member_id": member["id"],
        "base_version": member["version"],
        "changes": {field: {"old": None, "new": value} for field, value in changes.items()},
    }
    return push_of(client, lambda: update)


def push_answer(client: Client) -> Request:
    visit = assign(client)
    return push_of(
        client,
        lambda: {"op": "visit.answer.v1", "visit_id": visit["id"], "observations": [observation_body()]},
    )


def handover(client: Client) -> Request:
    """A deactivated worker's queue, handed over by a colleague: each body at the client's next seq, so it
    goes as deep as a real one (kept as a quarantined conflict) instead of stopping at a replay."""
    leaver = f"fuzz-leaver-{new_id()[:8]}"
    leaver_id = make_user(client, leaver)
    client_id = new_id()
    worker = login(client, leaver, password=NEW_USER_PASSWORD)
    first = {"client_id": client_id, "schema_version": 1, "mutations": []}
    assert client.post("/api/v1/sync/push", json=first, headers=worker).status_code == 200
    admin = login(client, "demo-admin", device="desk")
    answer = client.patch(f"/api/v1/admin/users/{leaver_id}", json={"active": False}, headers=admin)
    assert answer.status_code == 200, answer.text
    update = push(client)[2]

    def fresh() -> Any:
        async def last_seq(session: AsyncSession) -> int:
            return (await session.get_one(SyncClient, uuid.UUID(client_id))).last_mutation_seq

        body = update() | {"client_id": client_id}
        body["mutations"][0]["seq"] = run_db(client, last_seq) + 1
        return body

    return "POST", "/api/v1/sync/handover", fresh, login(client, "demo-worker-2")


def pull(client: Client) -> Request:
    headers = login(client, "demo-worker-1")
    body = lambda: {"client_id": new_id(), "cursor": None, "schema_version": 1, "limit": 10}  # noqa: E731
    return "POST", "/api/v1/sync/pull", body, headers


def calendar_day(client: Client) -> Request:
    headers = login(client, "demo-admin")
    return "PUT", "/api/v1/calendar/days/2027-01-04", lambda: {"kind": "holiday", "name": "测试"}, headers


def new_user(client: Client) -> Request:
    headers = login(client, "demo-admin")
    body = {
        "password": "long-enough-password",
        "display_name": "测试",
        "role": "field_worker",
        "jurisdiction_id": str(node_id("C01")),
    }
    return "POST", "/api/v1/admin/users", lambda: body | {"username": f"fuzz-{new_id()[:8]}"}, headers


def account(client: Client) -> tuple[str, dict[str, str]]:
    """A new field worker's admin URL, and the admin's headers."""
    method, url, body, headers = new_user(client)
    made = client.request(method, url, json=body(), headers=headers)
    assert made.status_code == 201, made.text
    return f"{url}/{made.json()['id']}", headers


def user_patch(client: Client) -> Request:
    url, headers = account(client)
    return "PATCH", url, lambda: {"active": False}, headers


def password_reset(client: Client) -> Request:
    url, headers = account(client)
    return "POST", f"{url}/password", lambda: {"password": "another-long-password"}, headers


def password_change(client: Client) -> Request:
    headers = login(client, "demo-reviewer-subdistrict", device="hostile-desk")
    return "POST", "/api/v1/auth/password", lambda: {"old_password": "demo", "new_password": "x" * 8}, headers


def visit_create(client: Client) -> Request:
    headers = login(client, "demo-reviewer-community", device="desk")
    team = [client.get("/api/v1/auth/me", headers=login(client, u, device=u)).json()["id"] for u in TEAM]
    body = {
        "household_id": str(household_id("DB-C01-0002")),
        "purpose": "new_application",
        "team": team,
        "due_date": "2027-01-29",
    }
    return "POST", "/api/v1/visits", lambda: body | {"id": new_id()}, headers


def proposal(client: Client) -> Request:
    visit = assign(client)
    body = {"outcome": "raise", "amount_fen": 50000, "reason": "家庭收入减少"}
    return "PUT", f"/api/v1/visits/{visit['id']}/proposal", lambda: body, login(client, TEAM[0])


def reveal(client: Client) -> Request:
    headers = login(client, "demo-reviewer-community", device="desk")
    url = f"/api/v1/members/{first_member(client, headers)['id']}/reveal-id"
    return "POST", url, lambda: {"reason": "verify at re-check"}, headers


def template_create(client: Client) -> Request:
    headers = login(client, "demo-admin", device="desk")
    shipped = client.get("/api/v1/templates/step.ask/1", headers=headers).json()["template"]
    body = shipped | {"sections": shipped["sections"][:1]}
    return "POST", "/api/v1/templates", lambda: body | {"code": f"step.fuzz_{new_id()[:8]}"}, headers


CASES: list[Case] = [
    visit_create,
    proposal,
    reveal,
    template_create,
    login_body,
    household_patch,
    member_patch,
    household_create,
    observations,
    push,
    push_member_update,
    push_answer,
    handover,
    pull,
    calendar_day,
    new_user,
    user_patch,
    password_reset,
    password_change,
]


PUSH_HEAD = frozenset(
    [("client_id",), ("schema_version",), ("device_now",), ("mutations",), ("mutations", 0)]
    + [("mutations", 0, key) for key in ("seq", "mutation_id", "device_time")]
)
"""A push's envelope and the head every mutation has: swept by `push`, and only the fields of their own op
by the pushes of other mutations (each request of those costs 25-35 ms, a new client each time)."""
SWEPT: dict[Case, frozenset[tuple[Any, ...]]] = {push_member_update: PUSH_HEAD, push_answer: PUSH_HEAD}


def test_hostile_values_in_any_field_get_a_4xx(client: Client, subtests: pytest.Subtests) -> None:
    spec = client.app.openapi_schema.to_schema()
    for case in CASES:  # one app per database for all of them: each case builds its own valid request
        with subtests.test(case=case.__name__):
            assert_no_server_error(client, case(client), spec, swept=SWEPT.get(case, frozenset()))


TEXT: list[str] = [
    "\x00",
    "a\x00",
    "x" * 5000,
    "-1",
    "0",
    "99999999999999999999999",
    "2026-02-30",
    "' OR 1=1 --",
]


def filled_paths(client: Client) -> Iterator[tuple[str, str, dict[str, str], list[str]]]:
    """(method, path template, a valid value per path parameter, query parameter names) of every route."""
    headers = login(client, "demo-worker-1")
    household = client.get(f"/api/v1/households/{household_id('DB-C01-0001')}", headers=headers).json()
    valid = {
        "household_id": household["id"],
        "member_id": household["members"][0]["id"],
        "visit_id": assign(client)["id"],
        "code": "step.look",
        "version": "1",
        "name": "visits",
        "day": "2027-01-04",
        "sha256": "a" * 64,
    }
    spec = client.app.openapi_schema.to_schema()
    for path, item in spec["paths"].items():
        if path.startswith("/schema") or "{key" in path:
            continue
        for method, operation in item.items():
            if method.upper() not in ("GET", "POST", "PUT", "PATCH", "DELETE"):
                continue
            parameters = operation.get("parameters", [])
            names = [p["name"] for p in parameters if p["in"] == "path"]
            query = [p["name"] for p in parameters if p["in"] == "query"]
            yield method.upper(), path, {n: valid.get(n, str(uuid.uuid4())) for n in names}, query


def url_for(path: str, values: dict[str, str], query: dict[str, str] | None = None) -> str:
    url = re.sub(r"{(\w+)}", lambda m: urllib.parse.quote(values[m.group(1)], safe=""), path)
    return url + ("?" + urllib.parse.urlencode(query) if query else "")


def test_hostile_path_and_query_parameters_get_a_4xx(client: Client) -> None:
    admin = login(client, "demo-admin", device="desk")
    for method, path, valid, query in filled_paths(client):
        for name in [*valid, *query]:
            for text in TEXT:
                values = valid | ({name: text} if name in valid else {})
                url = url_for(path, values, {name: text} if name in query else None)
                response = client.request(method, url, headers=admin)
                assert response.status_code < 500, (
                    method,
                    url[:120],
                    response.status_code,
                    response.text[:300],
                )


def test_hostile_tus_metadata_gets_a_4xx(client: Client) -> None:
    worker = login(client, "demo-worker-1") | {"Tus-Resumable": "1.0.0"}
    for key in ("sha256", "filename", "content_type", "x" * 300):
        for text in [t for t in TEXT if t != "x" * 5000] + ["x" * 2000]:
            values = {"sha256": "b" * 64, "filename": "p.jpg", "content_type": "image/jpeg", key: text}
            metadata = ",".join(f"{k} {base64.b64encode(v.encode()).decode()}" for k, v in values.items())
            response = client.post(
                "/api/v1/uploads", headers=worker | {"Upload-Length": "10", "Upload-Metadata": metadata}
            )
            assert response.status_code < 500, (key, text[:20], response.status_code, response.text[:300])


def test_non_ascii_bytes_in_tus_headers_get_a_4xx(client: Client) -> None:
    # HTTP headers arrive as latin-1 text: a byte past 0x7f is a character base64 decoding refuses with
    # a plain ValueError, not the binascii.Error that a wrong ASCII character raises. httpx takes str and
    # bytes values in one mapping (each is normalised alone); its type hint wants all of one kind.
    worker = login(client, "demo-worker-1") | {"Tus-Resumable": "1.0.0"}
    created = client.post(
        "/api/v1/uploads",
        headers=worker | {"Upload-Length": "10", "Upload-Metadata": "sha256 \xe9AAA".encode("latin-1")},  # type: ignore[arg-type]
    )
    assert created.status_code == 422, created.text
    assert created.json()["error"]["code"] == "bad_metadata"
    metadata = "sha256 " + base64.b64encode(b"b" * 64).decode()
    location = client.post(
        "/api/v1/uploads", headers=worker | {"Upload-Length": "10", "Upload-Metadata": metadata}
    ).headers["location"]
    patched = client.patch(
        location,
        content=b"x",
        headers=worker  # type: ignore[arg-type]
        | {
            "Content-Type": "application/offset+octet-stream",
            "Upload-Offset": "0",
            "Upload-Checksum": "sha1 \xe9AAA".encode("latin-1"),
        },
    )
    assert patched.status_code == 400, patched.text
    assert patched.json()["error"]["code"] == "bad_checksum"


def test_a_code_or_sha256_with_a_trailing_line_break_is_refused(client: Client) -> None:
    """Python's `$` matches before a final line break: `<sha256>\\n` named a photo that can never arrive."""
    visit = assign(client)
    worker = login(client, TEAM[0])
    photo = {"photos": [{"sha256": "a" * 64 + "\n", "view": "kitchen"}]}
    for template, item, value in [("step.look", "home_photos", photo), ("step.look\n", "home_photos", None)]:
        answer = {"id": str(uuid.uuid4()), "template": template, "item": item, "value": value, "gps": GPS}
        response = client.post(
            f"/api/v1/visits/{visit['id']}/observations", json={"observations": [answer]}, headers=worker
        )
        assert response.status_code == 422, (template, response.text)
