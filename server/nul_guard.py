"""Refuse NUL characters anywhere in a request, before a handler sees it.

PostgreSQL text and JSON columns cannot hold U+0000 (SQLite can), so a NUL in a name, a note or a query
parameter used to reach the database and fail there as a 500 on PostgreSQL only. No field of ours has a
use for it: it is refused at the edge with one code, the same on both databases. JSON can carry it only as
the escape ``\\u0000`` (a raw control byte is already a JSON syntax error); an escaped backslash before
``u0000`` is ordinary text and passes.
"""

from __future__ import annotations

import re
from typing import Any

from litestar import Request

from server.errors import Invalid

# \u0000 preceded by an even number of backslashes (zero included): an escape, not literal text.
_ESCAPED_NUL = re.compile(rb"(?<!\\)(?:\\\\)*\\u0000")
_JSON = re.compile(r"^application/(?:[\w.+-]+\+)?json\b", re.IGNORECASE)


class NulCharacter(Invalid):
    code = "nul_character"


async def refuse_nul(request: Request[Any, Any, Any]) -> None:
    """Litestar before_request hook."""
    if "\x00" in request.scope["path"] or b"%00" in request.scope["query_string"]:
        raise NulCharacter("The URL contains a NUL character (%00), which no value may hold.")
    if _JSON.match(request.headers.get("content-type", "")):
        body = await request.body()  # Litestar keeps it: the handler's decoding reads the same bytes
        if _ESCAPED_NUL.search(body):
            raise NulCharacter("The JSON body contains a NUL character (\\u0000), which no text may hold.")
