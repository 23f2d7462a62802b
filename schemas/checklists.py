"""The checklist template format: versioned data (YAML files in server/data/checklists/), not code.

A template is a list of sections holding items. Each item has a `type` (the tag of a union below), a
`code` unique within its template, labels in Chinese and English, `required`, and optionally a
`required_if` on another item's answer. Repeat groups hold child items answered once per row.

Answers travel as JSON values whose shape depends on the item type:

| type            | answer                                                                  |
|-----------------|-------------------------------------------------------------------------|
| yes_no          | true / false                                                            |
| integer         | a whole number within [min, max]                                        |
| money           | integer fen (1/100 yuan), never a float                                 |
| text            | a string within max_length                                              |
| single_choice   | one option value                                                        |
| multi_choice    | a list of distinct option values                                        |
| date            | "YYYY-MM-DD"                                                            |
| photo           | {"photos": [{"sha256", "view"}], "not_taken_reason": str or null}       |
| gps             | {"lat", "lon", "accuracy_m"}                                            |
| signature       | {"sha256", "signer_name", "signer_role", "user_id"/"member_id", ...}    |
| repeat          | rows are answered item by item, each row keyed by a client-made row id  |

Every answer may carry a free-text note, and a photo item may be answered "not taken (reason)".
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec

# `(?!\n)` after `$`: msgspec matches with Python's `re`, whose `$` also matches before a final line break.
Code = Annotated[str, msgspec.Meta(pattern=r"^[a-z][a-z0-9_]*$(?!\n)", max_length=64)]
TemplateCode = Annotated[
    str, msgspec.Meta(pattern=r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*$(?!\n)", max_length=64)
]


class Label(msgspec.Struct, forbid_unknown_fields=True):
    zh: str
    en: str


class Condition(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """`required_if`: the item is required when another item's answer matches.

    Exactly one of `equals`, `one_of`, `differs_from` is given. Inside a repeat group, `item` names a
    sibling in the same row. `differs_from` names a third item: required when the two answers differ
    (an unexplained difference between declared and verified income).
    """

    item: Code
    equals: Any = None
    one_of: list[Any] | None = None
    differs_from: Code | None = None


class Option(msgspec.Struct, forbid_unknown_fields=True):
    value: Code
    label: Label


class PhotoView(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    code: Code
    label: Label
    required: bool = True


class ItemBase(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, tag_field="type"):
    code: Code
    label: Label
    help: Label | None = None
    required: bool = False
    required_if: Condition | None = None
    rule: str | None = None
    """A local rule this item checks (e.g. "red_flag.vehicle@hebei-2024"): a prompt for follow-up, never
    an automatic disqualification."""


class YesNo(ItemBase, tag="yes_no"):
    pass


class Integer(ItemBase, tag="integer"):
    min: int | None = None
    max: int | None = None
    unit: Label | None = None


class Money(ItemBase, tag="money"):
    """Integer fen. `period` says what the amount is per."""

    min: int = 0
    max: int | None = None
    period: Literal["once", "month", "year"] = "month"


class Text(ItemBase, tag="text"):
    max_length: int = 2000
    multiline: bool = False


class SingleChoice(ItemBase, tag="single_choice"):
    options: list[Option]


class MultiChoice(ItemBase, tag="multi_choice"):
    options: list[Option]
    min_selected: int = 0


class Date(ItemBase, tag="date"):
    pass


class Photo(ItemBase, tag="photo"):
    min_count: int = 1
    views: list[PhotoView] = []
    """Named views (e.g. exterior with door number, kitchen); required views must each appear."""


class Gps(ItemBase, tag="gps"):
    max_accuracy_m: float | None = None


class Signature(ItemBase, tag="signature"):
    signers: Literal["investigators", "members_present", "any"] = "any"
    """`investigators`: every team member signs. `members_present`: each member present signs or a
    reason is given. Checked at submission by the "wrong procedure" guard."""


class Repeat(ItemBase, tag="repeat"):
    """Rows of child items. Groups are not nested: an answer carries one row id."""

    items: list[Item]
    min_rows: int = 0
    max_rows: int | None = None
    row_label: Label | None = None


Item = YesNo | Integer | Money | Text | SingleChoice | MultiChoice | Date | Photo | Gps | Signature | Repeat


class Section(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    code: Code
    title: Label
    items: list[Item]


MAX_TEMPLATE_VERSION = 2**31 - 1  # the column is a 32-bit integer
TemplateVersion = Annotated[int, msgspec.Meta(ge=1, le=MAX_TEMPLATE_VERSION)]


class Template(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    code: TemplateCode
    """`step.check`, `step.visit`, `step.ask`, `step.look`, `step.publicize`, `form.home_visit`, ..."""
    version: TemplateVersion
    kind: Literal["step", "form"]
    title: Label
    description: Label | None = None
    sections: list[Section]


# -- templates on the wire --------------------------------------------------------------------------


StatusName = Literal["draft", "published", "retired"]


class TemplateSummary(msgspec.Struct, kw_only=True):
    code: str
    version: int
    kind: str
    status: StatusName
    title: Label
    etag: str


class TemplateOut(msgspec.Struct, kw_only=True):
    code: str
    version: int
    status: StatusName
    etag: str
    template: Template


# -- answer shapes of the structured item types ----------------------------------------------------

Sha256 = Annotated[str, msgspec.Meta(pattern=r"^[0-9a-f]{64}$(?!\n)")]  # 65 characters with a line break


class PhotoTaken(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    sha256: Sha256
    view: str | None = None


class PhotoAnswer(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    photos: list[PhotoTaken] = []
    not_taken_reason: str | None = None


class GpsAnswer(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    lat: Annotated[float, msgspec.Meta(ge=-90, le=90)]
    lon: Annotated[float, msgspec.Meta(ge=-180, le=180)]
    accuracy_m: Annotated[float, msgspec.Meta(ge=0)] | None = None


class SignatureEntry(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    signer_name: str
    user_id: str | None = None
    """For an investigator: their user id."""
    member_id: str | None = None
    """For a household member: their member id."""
    sha256: Sha256 | None = None
    """The signature image (a blob like a photo)."""
    not_signed_reason: str | None = None


class SignatureAnswer(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    signatures: list[SignatureEntry]


class RowRemoved(msgspec.Struct, forbid_unknown_fields=True):
    """The answer to a repeat group's own code for a row: that row was deleted on the device."""

    removed: bool
