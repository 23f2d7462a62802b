"""One JSON line per request, with its id; no query strings or personal data."""

from __future__ import annotations

import json

import pytest

from server.domain.id_numbers import mask
from server.request_log import JsonFormatter
from tests.helpers import Client, login
from tests.server.test_households import valid_id


def test_each_request_logs_one_json_line_without_query_or_body(
    client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    headers = login(client, "demo-worker-1")
    caplog.clear()
    with caplog.at_level("INFO", logger="fivestep"):
        client.get("/api/v1/households?status=active&limit=7", headers={**headers, "X-Request-ID": "req-42"})
    lines = [json.loads(JsonFormatter().format(r)) for r in caplog.records if r.name == "fivestep.request"]
    [line] = lines
    assert line["request_id"] == "req-42"
    assert line["path"] == "/api/v1/households" and line["status"] == 200
    assert line["user_id"] and isinstance(line["duration_ms"], float)
    assert "limit=7" not in json.dumps(lines) and "status=active" not in json.dumps(lines)


def test_an_id_number_typed_into_a_path_is_logged_masked(
    client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    """A person looking someone up by their ID number in the wrong place (a photo's URL, say) gets a
    404, and the log line does not keep the number."""
    headers = login(client, "demo-worker-1")
    full = valid_id("13010219800101123")
    caplog.clear()
    with caplog.at_level("INFO", logger="fivestep"):
        assert client.get(f"/api/v1/photos/{full}", headers=headers).status_code == 404
        assert client.get(f"/api/v1/photos/{full}/original?reason=lookup", headers=headers).status_code == 404
    lines = [json.loads(JsonFormatter().format(r)) for r in caplog.records if r.name == "fivestep.request"]
    assert [line["path"] for line in lines] == [
        f"/api/v1/photos/{mask(full)}",
        f"/api/v1/photos/{mask(full)}/original",
    ]
    assert full not in json.dumps(lines)
