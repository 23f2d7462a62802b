"""Resident identity numbers (GB 11643-1999): 17 digits and a check character, masked for display."""

from __future__ import annotations

import datetime as dt
import re
import string
from typing import Any

import msgspec

from server.domain.calendar import china_today

WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
CHECK = "10X98765432"


def check_character(first17: str) -> str:
    return CHECK[sum(int(c) * w for c, w in zip(first17, WEIGHTS, strict=True)) % 11]


EARLIEST_BIRTH = dt.date(1900, 1, 1)
"""No one alive was born earlier: an older date in positions 7-14 is a typo."""


def problem(id_number: str, *, today: dt.date | None = None) -> str | None:
    """Why the number is not valid, or None when it is. `today` defaults to today in China Standard Time."""
    value = id_number.upper()
    if len(value) != 18 or not value[:17].isdigit() or not (value[17].isdigit() or value[17] == "X"):
        return "must be 17 digits and a check digit (0-9 or X)"
    try:
        born = birth_date(value)
    except ValueError:
        return "has no valid birth date in positions 7-14"
    if not EARLIEST_BIRTH <= born <= (today or china_today()):
        return f"birth date {born} in positions 7-14 is in the future or before {EARLIEST_BIRTH.year}"
    if check_character(value[:17]) != value[17]:
        return "check digit does not match"
    return None


def sex_of(id_number: str) -> str:
    """The 17th character, the end of the sequence number: odd for men, even for women."""
    return "male" if int(id_number[16]) % 2 else "female"


def contradictions(id_number: str, *, sex: str | None, born: dt.date | None) -> dict[str, str]:
    """Field -> why, for a sex or birth date that a valid ID number says otherwise (None: not given)."""
    found = {}
    if born is not None and born != birth_date(id_number):
        found["birth_date"] = f"the ID number says born {birth_date(id_number)}"
    if sex is not None and sex != sex_of(id_number):
        found["sex"] = f"the ID number says {sex_of(id_number)}"
    return found


def normalise(id_number: str) -> str:
    return id_number.strip().upper()


SHOWN = 3
"""Characters a mask keeps: the first three (province and prefecture), which the address gives away anyway."""


def mask(id_number: str) -> str:
    """`110101199003071234` -> `110***************`: the first three characters only.

    A record shows the mask beside the member's birth date and sex, and the address tells the county:
    of the 18 characters only the sequence number (15-17, the last of them odd for men) and the check
    digit are news. The check digit gives back any one hidden digit, so each of those four characters a
    mask shows cuts what is left: the last three (as this used to show) left nothing to guess, the last
    four (the most research.md allows on a public notice, where no birth date stands beside it) the same.
    Hiding all four leaves 500 numbers fitting a birth date, a sex and a county. The same holds for the
    old 15-digit form (its last three are the whole sequence) and hides a disability certificate's
    category and grade (characters 19-20)."""
    if len(id_number) < 7:
        return "*" * len(id_number)
    return id_number[:SHOWN] + "*" * (len(id_number) - SHOWN)


ID_SHAPED = re.compile(
    r"(?<![0-9])"
    r"(?:[0-9]{17}[0-9Xx](?:[1-7][1-4])?|[0-9]{15}"
    r"|[0-9]{6}(?P<s>[ \u3000-])[0-9]{8}(?P=s)[0-9]{3}[0-9Xx]"
    r"|[0-9]{6}(?P<t>[ \u3000-])[0-9]{6}(?P=t)[0-9]{3})"
    r"(?![0-9])",
    re.ASCII,
)
"""An identity number written into text: 18 characters (any check digit: a typo still gives away 17
digits) or the old 15-digit form, between non-digits (letters too: `ID`, `sfz` for 身份证, unless
`_in_a_hex_word`); or a second-generation disability certificate's
number, which is the ID number followed by the disability's category (1-7) and grade (1-4); or either
form in the groups a card prints it in (area, birth date, sequence and check: 6-8-4, or 6-6-3), split by
one kind of separator (a space, a hyphen or a full-width space). Full-width digits are made ASCII before
matching."""
_DIGIT = "[0-9\uff10-\uff19]"  # ASCII or full-width
_MAY_HOLD_ONE = re.compile(f"{_DIGIT}{{6}}(?:{_DIGIT}{{9}}|[ \u3000-]{_DIGIT}{{6}})")
"""Fifteen digits in a row, or six, a separator and six: all text holding an ID number has one, and most
text has neither (one search, about 1 µs for a line of Chinese text)."""
# The same in UTF-8, for JSON documents read as stored: ASCII digits alone unless a full-width digit is
# there, as matching both forms at every byte takes three times as long.
_SEPARATOR_UTF8 = rb"(?: |-|\xe3\x80\x80)"
_DIGIT_UTF8 = rb"(?:[0-9]|\xef\xbc[\x90-\x99])"
_MAY_HOLD_ONE_ASCII = re.compile(rb"[0-9]{6}(?:[0-9]{9}|" + _SEPARATOR_UTF8 + rb"[0-9]{6})")
_MAY_HOLD_ONE_UTF8 = re.compile(
    _DIGIT_UTF8 + b"{6}(?:" + _DIGIT_UTF8 + b"{9}|" + _SEPARATOR_UTF8 + _DIGIT_UTF8 + b"{6})"
)
_FULL_WIDTH_DIGIT_UTF8 = re.compile(rb"\xef\xbc[\x90-\x99]")
_FULL_WIDTH = str.maketrans("０１２３４５６７８９Ｘｘ", "0123456789Xx")


ID_SIZED = 10**14
"""The smallest number of 15 digits: an amount in fen that large is a trillion yuan, a count absurd."""


def mask_text(text: str) -> str:
    """``text`` with every identity number written into it masked (free-text answers and notes: the
    checklists say never to record one, and nothing stops a worker typing it)."""
    if not _MAY_HOLD_ONE.search(text):  # the common case, cheaply: most text has no such run
        return text
    pieces, last = [], 0
    plain = text.translate(_FULL_WIDTH)  # same positions: one character for one
    for found in ID_SHAPED.finditer(plain):
        if _in_a_hex_word(plain, found.start(), found.end()):
            continue
        pieces += [text[last : found.start()], mask(text[found.start() : found.end()])]
        last = found.end()
    return "".join(pieces) + text[last:] if pieces else text


_WORD = frozenset(string.ascii_letters + string.digits)
_HEX = frozenset(string.hexdigits)


def _in_a_hex_word(text: str, start: int, end: int) -> bool:
    """Whether text[start:end] is a run of digits inside a hexadecimal word (a SHA-256, a key), which has
    long runs of digits too: a word whose every letter is a hex digit. A number with other letters glued
    to it (`ID110…`, `sfz110…`) is an ID number; one glued to `a`-`f` alone (`D110…`) is left as a hash."""
    first, last = start, end
    while first > 0 and text[first - 1] in _WORD:
        first -= 1
    while last < len(text) and text[last] in _WORD:
        last += 1
    return (first, last) != (start, end) and all(c in _HEX for c in text[first:last])


def mask_within(value: Any) -> Any:
    """``value`` with every identity number in it masked, at any depth of dicts and lists: whatever lies
    under an ``id_number`` key (a string, a number, an ``{"old", "new"}`` change), any written into text
    or a key, and any number of 15 digits or more."""
    if isinstance(value, dict):
        return {
            mask_text(k): _masked_entirely(v) if k == "id_number" else mask_within(v)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [mask_within(v) for v in value]
    if isinstance(value, str):
        return mask_text(value)
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= ID_SIZED:
        return mask(str(value))  # an ID number typed as a number: 15 digits are no count or amount
    return value


def mask_field(field: str | None, value: Any) -> Any:
    """``field``'s value as anyone without a reveal may see it: an ID number masked whatever its shape,
    anything else with the ID numbers found in it masked."""
    return _masked_entirely(value) if field == "id_number" else mask_within(value)


def mask_json_text(text: bytes) -> bytes:
    """A stored JSON document (an answer, as pulled without being decoded) with the ID numbers in it
    masked; decoded only when it may hold one."""
    wide = _FULL_WIDTH_DIGIT_UTF8.search(text) is not None
    if not (_MAY_HOLD_ONE_UTF8 if wide else _MAY_HOLD_ONE_ASCII).search(text):
        return text
    return msgspec.json.encode(mask_within(msgspec.json.decode(text)))


def _masked_entirely(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _masked_entirely(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_masked_entirely(v) for v in value]
    if isinstance(value, bool) or value is None:
        return value
    return mask(str(value))


def birth_date(id_number: str) -> dt.date:
    return dt.date(int(id_number[6:10]), int(id_number[10:12]), int(id_number[12:14]))
