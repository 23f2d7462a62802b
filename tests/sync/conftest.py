"""Devices for the sync tests: the reference client over the in-process app."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from sync.client import Device, httpx_transport
from tests.helpers import Client

MakeDevice = Callable[..., Device]


@pytest.fixture
def make_device(client: Client, tmp_path: Path) -> Iterator[MakeDevice]:
    made: list[Device] = []

    def make(username: str, name: str | None = None, **options: object) -> Device:
        device = Device(
            tmp_path / f"{name or username}-{len(made)}.sqlite", httpx_transport(client), **options
        )  # type: ignore[arg-type]
        device.login(username, "demo")
        made.append(device)
        return device

    yield make
    for device in made:
        device.close()
