"""Column types that behave the same on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
from typing import Any

import msgspec
from sqlalchemy import JSON, ColumnElement, DateTime, Dialect, Text, cast, type_coerce
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.types import TypeDecorator


class UTCDateTime(TypeDecorator[dt.datetime]):
    """Stores UTC; always hands back an aware datetime.

    SQLite has no time zones and returns naive values, so the zone is stripped on the way in
    (after converting to UTC) and re-attached on the way out. PostgreSQL uses timestamptz.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(dt.UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: dt.datetime | None, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


JSONType: Any = JSON().with_variant(JSONB(), "postgresql")

LogJSON: Any = JSON()
"""A JSON column kept as its text on PostgreSQL too (`json`, not `jsonb`), for rows written on every push
and read back only when an edit comes again: the mutation log. `jsonb` parses each value into its binary
form on the way in, which for a visit's 7 KB of answers cost PostgreSQL about as much as the row's other
work, and nothing here queries inside the value."""


class RawJSON(TypeDecorator[msgspec.Raw]):
    """A JSON column's text (`raw_json(column)`), wrapped for msgspec to copy onto the wire as it is.

    For rows that go straight out (a pull page): decoding a value only to encode it again is most of what a
    JSON column costs.
    """

    impl = Text
    cache_ok = True

    def process_result_value(self, value: str | None, dialect: Dialect) -> msgspec.Raw | None:
        return None if value is None else msgspec.Raw(value)


def raw_json(column: ColumnElement[Any]) -> ColumnElement[msgspec.Raw]:
    # Cast in SQL: PostgreSQL's driver decodes jsonb itself, and SQLite gives a column declared JSON numeric
    # affinity (a stored 1 comes back as an int; CAST makes it its text, '1').
    return type_coerce(cast(column, Text), RawJSON())


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)
