"""The one error body every 4xx and 5xx answer carries."""

from __future__ import annotations

from typing import Any

import msgspec


class ErrorInfo(msgspec.Struct, kw_only=True):
    code: str
    """Machine-readable, stable: clients switch on it."""
    message: str
    """For people; may change between releases."""
    details: Any = None


class ErrorBody(msgspec.Struct):
    error: ErrorInfo


class FieldProblem(msgspec.Struct):
    field: str
    message: str
