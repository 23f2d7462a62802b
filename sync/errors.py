"""What the device client raises when a request does not end as hoped."""

from __future__ import annotations

from typing import Any


class NetworkError(Exception):
    """The request or its answer was lost: nothing is known about whether the server acted on it."""


class ServerError(Exception):
    def __init__(self, status: int, body: Any) -> None:
        super().__init__(f"HTTP {status}: {body}")
        self.status, self.body = status, body
