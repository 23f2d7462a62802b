"""How a typed username is read, and which names a new account may have.

Sign-in reads a name stripped and in lower case, so " Wang-Fang" signs in as "wang-fang". A new account's
name must besides look like no other account's: a name holding characters that show nothing (a zero-width
space, a direction mark, a line break), spaces (one or two look alike), or characters another form of
which spells the same (full-width "ｄｅｍｏ" for "demo", "ﬁ" for "fi") would let an admin create a second
"demo-admin" that the user list, the audit log and a colleague's screen all show as the first.
"""

from __future__ import annotations

import unicodedata

MAX_LENGTH = 64
"""The column's length, and the wire's (schemas/auth.py): checked again once read, since lower case can
be longer than the name typed ("İ" is two characters in lower case)."""


def read_username(typed: str) -> str:
    return typed.strip().lower()


def size_problem(name: str) -> str | None:
    """Why `name` (as read) does not fit an account at all: blank, or too long once in lower case."""
    if not name:
        return "is blank"
    if len(name) > MAX_LENGTH:  # PostgreSQL refused it with a 500; SQLite stored it
        return f"is longer than {MAX_LENGTH} characters in lower case"
    return None


def lookalike_problem(name: str) -> str | None:
    """Why `name` (as read) could pass for another account's, or None when it cannot."""
    if any(char.isspace() or unicodedata.category(char).startswith("C") for char in name):
        return "holds spaces or invisible characters"
    if unicodedata.normalize("NFKC", name) != name:
        return "holds full-width or compatibility characters: type their plain form"
    return None
