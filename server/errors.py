"""Domain errors and the handlers that turn every failure into `{"error": {code, message, details}}`.

No stack trace or exception text from a library ever reaches a client: a library's message can carry
SQL parameters, which are personal data here.
"""

from __future__ import annotations

import logging
import re
import traceback
import uuid
from typing import Any

from litestar import MediaType, Request, Response
from litestar.exceptions import HTTPException, SerializationException, ValidationException
from litestar.status_codes import HTTP_500_INTERNAL_SERVER_ERROR
from sqlalchemy.exc import DBAPIError, OperationalError

from media.stores import BlobStoreUnavailable
from schemas.errors import ErrorBody, ErrorInfo, FieldProblem

log = logging.getLogger("fivestep.errors")


class DomainError(Exception):
    status = 400
    code = "bad_request"
    retry_after: int | None = None
    """Seconds; sent as Retry-After when set."""

    def __init__(
        self, message: str, *, code: str | None = None, details: Any = None, retry_after: int | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.details = details
        if code:
            self.code = code
        if retry_after is not None:
            self.retry_after = retry_after
            self.details = details or {"retry_after_seconds": retry_after}


class Unauthorized(DomainError):
    status, code = 401, "unauthorized"


class Forbidden(DomainError):
    status, code = 403, "forbidden"


class NotFound(DomainError):
    """Also answers for what exists but lies outside the caller's jurisdiction: existence must not leak."""

    status, code = 404, "not_found"


class Conflict(DomainError):
    status, code = 409, "conflict"


class Invalid(DomainError):
    status, code = 422, "validation_error"


def stated_reason(reason: str | None, min_length: int, message: str) -> str:
    """``reason`` stripped, or ``422 reason_required`` (with ``message``) when fewer than ``min_length``
    characters are left: a schema's minimum length counts spaces, and "  " says nothing."""
    stripped = (reason or "").strip()
    if len(stripped) < min_length:
        raise Invalid(
            message,
            code="reason_required",
            details=[{"field": "reason", "message": f"at least {min_length} characters besides spaces"}],
        )
    return stripped


def id_in_use(kind: str, id_: uuid.UUID) -> Conflict:
    """``409 duplicate_id``: a create names a client-made id that another record already has."""
    return Conflict(f"Another {kind} already has the id {id_}.", code="duplicate_id")


def created_otherwise(
    kind: str, id_: uuid.UUID, advice: str = "send the difference as an update"
) -> Conflict:
    """``409 created_otherwise``: a create sent again under its id carries content its creation did not
    store. It is refused, never merged: its values would be lost silently."""
    return Conflict(f"The {kind} {id_} was created with other content; {advice}.", code="created_otherwise")


class TooManyRequests(DomainError):
    """Raised with ``retry_after``."""

    status, code = 429, "too_many_requests"


class TryLater(DomainError):
    """Nothing is wrong with the request, and nothing it brought was lost: ask again in a moment (raised
    with its own code and ``retry_after``)."""

    status, code = 503, "unavailable"


def error_response(
    status: int, code: str, message: str, details: Any = None, **headers: str
) -> Response[Any]:
    body = ErrorBody(ErrorInfo(code=code, message=message, details=details))
    return Response(body, status_code=status, media_type=MediaType.JSON, headers=headers or None)


def on_domain_error(_: Request[Any, Any, Any], exc: DomainError) -> Response[Any]:
    headers = {"Retry-After": str(exc.retry_after)} if exc.retry_after is not None else {}
    return error_response(exc.status, exc.code, exc.message, exc.details, **headers)


HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    429: "too_many_requests",
    503: "unavailable",
}
_AT = re.compile(r" - at `\$(?P<path>[^`]*)`$")


def on_http_exception(request: Request[Any, Any, Any], exc: HTTPException) -> Response[Any]:
    if isinstance(exc, ValidationException):
        return _validation_response(exc)
    if isinstance(exc.__cause__, SerializationException):  # the body could not be decoded at all
        return error_response(400, "malformed_json", "The request body is not valid JSON.")
    code = HTTP_CODES.get(exc.status_code, "http_error")
    headers = dict(exc.headers or {})
    return error_response(exc.status_code, code, exc.detail, None, **headers)


def _validation_response(exc: ValidationException) -> Response[Any]:
    """Litestar raises one ValidationException for bad JSON, wrong types and bad parameters alike."""
    extra = exc.extra if isinstance(exc.extra, list) else []
    problems = [_field_problem(item) for item in extra if isinstance(item, dict)]
    message = "; ".join(f"{p.field}: {p.message}" for p in problems) or exc.detail
    return error_response(422, "validation_error", message, problems)


def _field_problem(item: dict[str, Any]) -> FieldProblem:
    key = str(item.get("key") or item.get("source") or "body")
    return field_problem(str(item.get("message", "invalid")), key)


def field_problem(message: str, key: str = "body") -> FieldProblem:
    """A decoder's message as a problem naming its field: msgspec says "Expected `str`, got `int` - at
    `$.username`", and the field is found by that path."""
    match = _AT.search(message)
    if match:
        key = match.group("path").lstrip(".") or key
        message = message[: match.start()]
    return FieldProblem(field=key, message=message)


def on_unexpected(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    # Frames only, never the message or locals: they may hold personal data.
    frames = traceback.extract_tb(exc.__traceback__)
    where = [f"{f.filename.rsplit('/', 1)[-1]}:{f.lineno}:{f.name}" for f in frames[-8:]]
    log.error("unhandled %s at %s", type(exc).__name__, " < ".join(reversed(where)))
    return error_response(
        HTTP_500_INTERNAL_SERVER_ERROR, "internal_error", "Something went wrong on our side."
    )


def on_too_deep(request: Request[Any, Any, Any], exc: RecursionError) -> Response[Any]:
    """msgspec reads JSON nested up to about 1000 levels deep and raises RecursionError beyond: a body
    no client of ours sends, refused like any body that cannot be read. Any other recursion is a bug."""
    if "while deserializing" in str(exc):
        return error_response(400, "malformed_json", "The request body is nested too deeply to be read.")
    return on_unexpected(request, exc)


def retry_later(code: str, message: str, seconds: int) -> Response[Any]:
    """503: nothing was done and the same request may be sent again after `seconds`, said in the
    Retry-After header and in the body (a client's transport may not pass headers on)."""
    return error_response(
        503, code, message, {"retry_after_seconds": seconds}, **{"Retry-After": str(seconds)}
    )


def on_database_busy(request: Request[Any, Any, Any], exc: DBAPIError) -> Response[Any]:
    """The database is locked, restarting or unreachable: nothing was done, and a retry is safe."""
    log.warning("database unavailable: %s", type(exc.orig).__name__)
    return retry_later("unavailable", "The database is busy or unreachable; retry shortly.", 2)


# PostgreSQL's "try again" states: a deadlock or serialisation failure rolled the transaction back, or a
# lock or statement timed out. asyncpg's errors for them reach us as a plain DBAPIError, not an
# OperationalError, and were answered 500 although nothing was done and a retry is safe.
_RETRYABLE_SQLSTATES = frozenset({"40001", "40P01", "55P03", "57014"})
# The server shutting down, restarting or not yet accepting connections, and the connection's own
# failures (class 08): the transaction was lost with the connection. One cut off in its COMMIT may have
# landed: a retry then meets its own write, as after any lost answer (creates carry the client's id).
_LOST_CONNECTION_SQLSTATES = frozenset({"57P01", "57P02", "57P03"})


def on_database_error(request: Request[Any, Any, Any], exc: DBAPIError) -> Response[Any]:
    """A database error that is no refusal of ours: 503 when the database asks for a retry or the
    connection to it was lost (SQLAlchemy has then discarded it from the pool), else a bug."""
    sqlstate = getattr(exc.orig, "sqlstate", None) or ""
    lost = exc.connection_invalidated or sqlstate in _LOST_CONNECTION_SQLSTATES or sqlstate.startswith("08")
    if lost or sqlstate in _RETRYABLE_SQLSTATES:
        return on_database_busy(request, exc)
    return on_unexpected(request, exc)


def on_blob_store_down(request: Request[Any, Any, Any], exc: BlobStoreUnavailable) -> Response[Any]:
    """The blob store cannot be reached: what was accepted stays accepted (an upload keeps its offset and
    its staged bytes), and the same request can simply be sent again."""
    log.warning("blob store unavailable: %s", type(exc.__cause__ or exc).__name__)
    return retry_later("blob_store_unavailable", "Photo storage is unreachable right now; retry shortly.", 5)


EXCEPTION_HANDLERS: dict[Any, Any] = {
    DomainError: on_domain_error,
    HTTPException: on_http_exception,
    OperationalError: on_database_busy,
    DBAPIError: on_database_error,
    BlobStoreUnavailable: on_blob_store_down,
    RecursionError: on_too_deep,
    Exception: on_unexpected,
}
