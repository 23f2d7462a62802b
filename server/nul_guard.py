"""Refuse NUL characters anywhere in a request, before a handler sees it.

PostgreSQL text and JSON columns cannot hold U+0000 (SQLite can), so a NUL in a name, a note or a query
parameter used to reach the database and fail there as a 500 on PostgreSQL only. No field of ours has a
use for it: it is refused at the edge with one code, the same on both databases. JSON can carry it only as
the escape ``\\u0000`` (a raw control byte is already a JSON syntax error); an escaped backslash before
``u0000`` is ordinary text and passes.

The body is read here only for handlers that read it anyway (a ``data`` or ``body`` parameter), whatever
its Content-Type says (Litestar decodes JSON without looking at it), and within the same size limit:
Litestar keeps the bytes, so the handler gets them without a second read. Streamed bodies (tus PATCH)
are never touched. The hook is the app's: a controller or route that sets a ``before_request`` of its
own replaces it there (Litestar takes the closest layer's), so none does.
"""

from __future__ import annotations

import re
from typing import Any

from litestar import Request

from server.errors import Invalid

# \u0000 preceded by an even number of backslashes (zero included): an escape, not literal text.
_ESCAPED_NUL = re.compile(rb"(?<!\\)(?:\\\\)*\\u0000")
_BODY_PARAMETERS = ("data", "body")


class NulCharacter(Invalid):
    code = "nul_character"


async def refuse_nul(request: Request[Any, Any, Any]) -> None:
    """Litestar before_request hook."""
    if "\x00" in request.scope["path"] or b"%00" in request.scope["query_string"]:
        raise NulCharacter("The URL contains a NUL character (%00), which no value may hold.")
    if _reads_body(request):
        body = await request.body()  # Litestar keeps it: the handler's decoding reads the same bytes
        # The substring test first: a plain bytes search, while the regex costs a millisecond a 30 KB push.
        if b"\\u0000" in body and _ESCAPED_NUL.search(body):
            raise NulCharacter("The JSON body contains a NUL character (\\u0000), which no text may hold.")


def _reads_body(request: Request[Any, Any, Any]) -> bool:
    parameters = request.route_handler.parsed_fn_signature.parameters
    return any(name in parameters for name in _BODY_PARAMETERS)
