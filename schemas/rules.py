"""The rule pack: what varies by locality (review levels, deadlines, which forms a visit needs).

Every decision stores the code and version of the rule pack it was made under.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from schemas.checklists import Label

Purpose = Literal["new_application", "scheduled_recheck", "tip", "data_match"]
Days = Annotated[int, msgspec.Meta(ge=1, le=366)]


class ReviewLevel(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    code: str
    label: Label
    role: Literal["reviewer", "approver"]
    node_level: Literal["community", "subdistrict", "district"]
    """The reviewer acts from a node of this level that contains the household."""
    deadline_working_days: int
    after_publicity: bool = False
    """Refuse approval at this level until the 7-day publicity period (公示) has ended."""


class RulePack(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    code: str
    version: int
    calendars: list[str]
    """Holiday calendars shipped in server/data/calendars (their codes), one per year; the deployment's
    own overrides (the calendar_days table) apply on top."""
    review_levels: list[ReviewLevel]
    visit_due_working_days: dict[Purpose, int]
    templates: dict[Purpose, list[str]]
    """Template codes a visit of each purpose must complete; pinned at their published versions."""
    publicity_calendar_days: int = 7
    publicity_template: str = "step.publicize"
    publicity_start_item: str = "notice_posted_on"
    publicity_end_item: str = "notice_removed_on"
    """The publicity template's date the notice was taken down: before the period's last day, the publicity
    was cut short and the file is held back."""
    outcome_template: str = "form.recheck"
    outcome_item: str = "outcome_proposed"
    outcome_amount_item: str = "proposed_amount_fen"
    """The signed form's proposed outcome and monthly amount (top-level items of `outcome_template`), which
    the visit's proposal must agree with to be submitted."""
    objection_action_item: str = "objections.action"
    appraisal_actions: list[str] = msgspec.field(default_factory=lambda: ["democratic_appraisal", "both"])
    appraisal_held_item: str = "appraisal_held"
    """An objection settled (its outcome no longer pending) by one of `appraisal_actions` needs the
    publicity template's `appraisal_held` to be true: the appraisal it claims must be on record."""
    objection_outcome_item: str = "objections.outcome"
    """The publicity template's item (inside its objection repeat group) whose `pending` value holds the file
    back at the `after_publicity` level: an objection forces re-investigation or 民主评议 first."""
    petition_acceptance_days: Days = 15
    """Calendar days from a petition's receipt to the written notice of acceptance (信访工作条例 Art 23)."""
    petition_conclusion_days: Days = 60
    """Calendar days from acceptance (or receipt, while no acceptance is on record) to the petition's
    conclusion (信访工作条例 Art 34; an extension of up to 30 days is not tracked)."""
