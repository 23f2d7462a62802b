"""Devices for the sync tests: the reference client over the in-process app."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Protocol, TypedDict, Unpack

import pytest

from sync.client import Device, httpx_transport
from sync.tus_client import RawTransport
from tests.helpers import Client


class DeviceOptions(TypedDict, total=False):
    """The keyword arguments of `Device` after its path and transport."""

    push_batch: int
    pull_limit: int
    clock_offset_s: float
    uploads: RawTransport | None
    photo_dir: str | Path | None
    upload_chunk: int


class MakeDevice(Protocol):
    def __call__(
        self, username: str, name: str | None = None, **options: Unpack[DeviceOptions]
    ) -> Device: ...


@pytest.fixture
def make_device(client: Client, tmp_path: Path) -> Iterator[MakeDevice]:
    made: list[Device] = []

    def make(username: str, name: str | None = None, **options: Unpack[DeviceOptions]) -> Device:
        device = Device(
            tmp_path / f"{name or username}-{len(made)}.sqlite", httpx_transport(client), **options
        )
        device.login(username, "demo")
        made.append(device)
        return device

    yield make
    for device in made:
        device.close()
