"""One JSON line per request, with its id; no query strings or personal data."""

from __future__ import annotations

import json

import pytest

from server.request_log import JsonFormatter
from tests.helpers import Client, login


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
