"""/health answers 200 when the database and blob store answer, 503 naming what is down."""

from __future__ import annotations

import shutil
from pathlib import Path

from schemas.config import Settings
from tests.helpers import Client


def test_health_is_ok_with_both_parts_up(client: Client) -> None:
    response = client.get("/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "database": "ok", "blob_store": "ok"}


def test_health_is_503_when_the_blob_store_is_gone(client: Client, app_settings: Settings) -> None:
    root = Path(app_settings.blob_store)
    shutil.rmtree(root)
    root.write_text("not a folder any more")
    response = client.get("/health")
    assert response.status_code == 503
    body = response.json()
    assert body["database"] == "ok" and body["blob_store"].startswith("error")


def test_openapi_schema_and_ui_are_served(client: Client) -> None:
    schema = client.get("/schema/openapi.json").json()
    assert "/api/v1/auth/login" in schema["paths"]
    assert client.get("/schema/swagger").status_code == 200
