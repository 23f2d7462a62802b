"""Query parameters several controllers share, with the bounds that keep them inside the columns' range."""

from __future__ import annotations

from typing import Annotated

from litestar.params import QueryParameter

Limit = Annotated[int, QueryParameter(ge=1, le=500, description="Page size")]
ReviewLevel = Annotated[
    int | None,
    QueryParameter(ge=1, le=9, description="only visits waiting at this review level (1 = community)"),
]
