"""The OpenAPI document describes errors the way they are sent.

Litestar documents an operation's errors with a body of its own, `{status_code, detail, extra}`, and a
bad field as a 400. This API answers every error with `{"error": {code, message, details}}`
(`server/errors.py`), a refused field with 422 and unreadable JSON with 400. A client generated from the
document would parse every error wrongly, so the render plugins below rewrite each operation's error
responses before the document is served: the ranges `4XX` and `5XX` with that body, and no other error
entry. Litestar builds the document once and hands every plugin the same dictionary, so the rewrite
runs once; running it again changes nothing.
"""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Request
from litestar.openapi.plugins import JsonRenderPlugin, ScalarRenderPlugin, SwaggerRenderPlugin

from schemas.errors import ErrorBody, FieldProblem

_REF = "#/components/schemas/{name}"
_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
_RANGES = {
    "4XX": "Refused: `error.code` says why (`validation_error` with `details` naming each refused field, "
    "`malformed_json`, `unauthorized`, `forbidden`, `not_found`, a conflict's own code, ...).",
    "5XX": "Not done on our side (`internal_error`, `unavailable` with Retry-After): the same request "
    "may be sent again.",
}


def document_errors(openapi: dict[str, Any]) -> dict[str, Any]:
    """`openapi` (a rendered OpenAPI document) with every operation's errors in the shape sent."""
    (_, components) = msgspec.json.schema_components([ErrorBody, FieldProblem], ref_template=_REF)
    openapi.setdefault("components", {}).setdefault("schemas", {}).update(components)
    body = {"application/json": {"schema": {"$ref": _REF.format(name="ErrorBody")}}}
    for path_item in openapi.get("paths", {}).values():
        for method in _METHODS:
            operation = path_item.get(method)
            if operation is None:
                continue
            responses = operation.setdefault("responses", {})
            for status in [s for s in responses if s[:1] in ("4", "5")]:
                del responses[status]
            for status, description in _RANGES.items():
                responses[status] = {"description": description, "content": body}
    return openapi


class JsonWithErrors(JsonRenderPlugin):
    def render(self, request: Request[Any, Any, Any], openapi_schema: dict[str, Any]) -> bytes:
        return super().render(request, document_errors(openapi_schema))


class ScalarWithErrors(ScalarRenderPlugin):
    def render(self, request: Request[Any, Any, Any], openapi_schema: dict[str, Any]) -> bytes:
        return super().render(request, document_errors(openapi_schema))


class SwaggerWithErrors(SwaggerRenderPlugin):
    def render(self, request: Request[Any, Any, Any], openapi_schema: dict[str, Any]) -> bytes:
        return super().render(request, document_errors(openapi_schema))
