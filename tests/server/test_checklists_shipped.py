"""The shipped checklist templates: the nine of research.md section 7, structurally sound, bilingual, and
shaped the way the server's submission guards rely on (anonymous neighbours, photo views, explained income
differences, no ID numbers, the re-check outcomes)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import msgspec
import pytest

from schemas.checklists import (
    Date,
    Gps,
    Item,
    Money,
    MultiChoice,
    Photo,
    Repeat,
    Signature,
    SingleChoice,
    Template,
    Text,
    YesNo,
)
from server.domain.templates import TemplateError, all_items, parse, problems, shipped

EXPECTED = [
    ("step.check", "step"),
    ("step.visit", "step"),
    ("step.ask", "step"),
    ("step.look", "step"),
    ("step.publicize", "step"),
    ("form.home_visit", "form"),
    ("form.employment_income", "form"),
    ("form.schooling", "form"),
    ("form.recheck", "form"),
]
CODES = [code for code, _ in EXPECTED]
CJK = re.compile(r"[\u4e00-\u9fff]")


@pytest.fixture(scope="module")
def templates() -> dict[str, Template]:
    return {t.code: t for t in shipped()}


def items_of(template: Template) -> dict[str, Item]:
    return dict(all_items(template))


def labels(node: Any, where: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every label in a template's plain form: any mapping with exactly the keys zh and en."""
    if isinstance(node, dict):
        if set(node) == {"zh", "en"}:
            yield where, node
            return
        for key, value in node.items():
            yield from labels(value, f"{where}.{key}")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            code = value.get("code") or value.get("value") if isinstance(value, dict) else None
            yield from labels(value, f"{where}[{code or index}]")


# -- the set ----------------------------------------------------------------------------------------


def test_exactly_the_nine_templates_in_order_all_version_1() -> None:
    loaded = shipped()
    assert [(t.code, t.kind) for t in loaded] == EXPECTED
    assert {t.version for t in loaded} == {1}


@pytest.mark.parametrize("code", CODES)
def test_no_structural_problems(templates: dict[str, Template], code: str) -> None:
    assert problems(templates[code]) == []


@pytest.mark.parametrize("code", CODES)
def test_every_label_has_chinese_and_english(templates: dict[str, Template], code: str) -> None:
    found = list(labels(msgspec.to_builtins(templates[code])))
    assert len(found) > 20
    for where, label in found:
        zh, en = label["zh"], label["en"]
        assert isinstance(zh, str) and zh.strip() and CJK.search(zh), f"{code}{where}: zh {zh!r}"
        assert isinstance(en, str) and en.strip() and re.search("[A-Za-z]", en), f"{code}{where}: en {en!r}"


@pytest.mark.parametrize("code", CODES)
def test_every_condition_names_a_possible_answer(templates: dict[str, Template], code: str) -> None:
    """Catches YAML's own traps too: an unquoted `yes` is the boolean true, not the option "yes"."""
    paths = items_of(templates[code])
    for path, item in paths.items():
        cond = item.required_if
        if cond is None:
            continue
        scope = path.rsplit(".", 1)[0] + "." if "." in path else ""
        target = paths[scope + cond.item]
        if cond.differs_from is not None:
            assert type(paths[scope + cond.differs_from]) is type(target), path
            continue
        wanted = [cond.equals] if cond.one_of is None else cond.one_of
        assert wanted, path
        for value in wanted:
            if isinstance(target, YesNo):
                assert isinstance(value, bool), f"{path}: {value!r}"
            elif isinstance(target, SingleChoice):
                assert value in {o.value for o in target.options}, f"{path}: {value!r}"
            else:
                pytest.fail(f"{path}: condition on a {type(target).__name__} item")


@pytest.mark.parametrize("code", CODES)
def test_red_flag_items_name_their_rule_and_say_they_are_prompts(
    templates: dict[str, Template], code: str
) -> None:
    for path, item in all_items(templates[code]):
        if item.rule is None:
            continue
        assert re.fullmatch(r"red_flag\.[a-z_]+", item.rule), f"{path}: {item.rule}"
        assert item.help is not None, f"{path} has a rule but no help"


def test_red_flags_cover_the_look_and_ask_lists(templates: dict[str, Template]) -> None:
    look = {i.rule for _, i in all_items(templates["step.look"]) if i.rule}
    assert {
        "red_flag.renovation",
        "red_flag.appliances",
        "red_flag.valuables",
        "red_flag.pets",
        "red_flag.vehicle",
        "red_flag.business",
        "red_flag.ghost_household",
        "red_flag.living_standard",
    } <= look
    assert items_of(templates["step.look"])["pets_kept"].rule == "red_flag.pets"


@pytest.mark.parametrize("code", CODES)
def test_no_id_number_is_ever_asked(templates: dict[str, Template], code: str) -> None:
    template = templates[code]
    for path, item in all_items(template):
        assert "id_number" not in path, path
        for option in getattr(item, "options", []):
            assert "id_number" not in option.value, f"{path}: {option.value}"


# -- 问 ask: anonymous neighbours ----------------------------------------------------------------------


def test_neighbours_are_at_least_three_and_anonymous(templates: dict[str, Template]) -> None:
    items = items_of(templates["step.ask"])
    group = items["neighbours"]
    assert isinstance(group, Repeat) and group.min_rows == 3
    children = {i.code: i for i in group.items}
    assert not [c for c in children if "name" in c or "phone" in c]
    position = children["position"]
    assert isinstance(position, SingleChoice) and position.required
    assert [o.value for o in position.options] == ["upstairs", "downstairs", "next_door", "opposite", "other"]
    asked = [
        "who_lives_here",
        "members_away",
        "occupancy",
        "wedding_or_funeral",
        "income_change",
        "vehicle_use",
        "death_or_move_unreported",
        "lifestyle",
        "renovation_or_purchase",
    ]
    assert all(children[c].required for c in asked)


# -- 看 look: photo views, location, signatures --------------------------------------------------------


def test_home_photos_have_the_named_views(templates: dict[str, Template]) -> None:
    items = items_of(templates["step.look"])
    photos = items["home_photos"]
    assert isinstance(photos, Photo) and photos.required and photos.min_count == 4
    assert {v.code: v.required for v in photos.views} == {
        "exterior_door_number": True,
        "living_room": True,
        "kitchen": True,
        "bedroom": True,
        "red_flag_item": False,
        "team_with_household": False,
    }
    location = items["home_location"]
    assert isinstance(location, Gps) and location.required


@pytest.mark.parametrize(
    ("code", "item", "signers"),
    [
        ("step.look", "investigator_signatures", "investigators"),
        ("step.look", "member_signatures", "members_present"),
        ("form.home_visit", "investigator_signatures", "investigators"),
        ("form.home_visit", "member_signatures", "members_present"),
        ("form.employment_income", "investigator_signatures", "investigators"),
        ("form.employment_income", "member_signatures", "members_present"),
        ("form.recheck", "household_signatures", "members_present"),
        ("form.recheck", "reviewer_signatures", "investigators"),
        ("form.recheck", "committee_cadre_signature", "any"),
    ],
)
def test_required_signatures(templates: dict[str, Template], code: str, item: str, signers: str) -> None:
    signature = items_of(templates[code])[item]
    assert isinstance(signature, Signature) and signature.required and signature.signers == signers


# -- Forms A and B: every difference between declared and verified income is explained ----------------


def assert_explained(group: Repeat, declared: str, verified: str, explanation: str) -> None:
    children = {i.code: i for i in group.items}
    assert isinstance(children[declared], Money) and children[declared].required
    assert isinstance(children[verified], Money) and children[verified].required
    text = children[explanation]
    assert isinstance(text, Text) and not text.required
    assert text.required_if is not None
    assert (text.required_if.item, text.required_if.differs_from) == (verified, declared)


def test_form_a_income_rows(templates: dict[str, Template]) -> None:
    items = items_of(templates["form.home_visit"])
    income = items["income"]
    assert isinstance(income, Repeat)
    category = items["income.category"]
    assert isinstance(category, SingleChoice) and category.required
    assert [o.value for o in category.options] == [
        "wages",
        "business_net",
        "property_net",
        "transfer_pension",
        "transfer_unemployment",
        "transfer_support",
        "transfer_other",
        "agriculture",
        "other",
    ]
    assert_explained(income, "declared_fen", "verified_fen", "difference_explanation")


def test_form_a_members_are_referenced_not_identified(templates: dict[str, Template]) -> None:
    items = items_of(templates["form.home_visit"])
    members = items["members"]
    assert isinstance(members, Repeat) and members.min_rows >= 1
    ref = items["members.member_ref"]
    assert isinstance(ref, Text) and ref.required
    assert not [i.code for i in members.items if "id" in i.code.split("_")]


def test_form_b_member_income(templates: dict[str, Template]) -> None:
    members = items_of(templates["form.employment_income"])["members"]
    assert isinstance(members, Repeat)
    assert_explained(members, "declared_income_fen", "verified_income_fen", "income_difference_explanation")


# -- 亮 publicize ---------------------------------------------------------------------------------------


def test_publicize_items(templates: dict[str, Template]) -> None:
    items = items_of(templates["step.publicize"])
    posted = items["notice_posted_on"]
    assert isinstance(posted, Date) and posted.required
    photo = items["notice_photo"]
    assert isinstance(photo, Photo) and photo.required
    assert {v.code: v.required for v in photo.views}["posted_notice"] is True
    objections = items["objections"]
    assert isinstance(objections, Repeat) and objections.min_rows == 0
    assert {"content", "received_on", "action", "outcome"} <= {i.code for i in objections.items}


# -- re-check ------------------------------------------------------------------------------------------


def test_recheck_outcomes_and_changes(templates: dict[str, Template]) -> None:
    items = items_of(templates["form.recheck"])
    outcome = items["outcome_proposed"]
    assert isinstance(outcome, SingleChoice) and outcome.required
    assert [o.value for o in outcome.options] == [
        "no_change",
        "increase",
        "reduce",
        "stop",
        "add_member",
        "remove_member",
        "phase_out",
    ]
    for changed in ("members", "income", "property", "health", "address"):
        assert items[f"{changed}_changed"].required
    income = items["income_changes"]
    assert isinstance(income, Repeat)
    assert_explained(income, "declared_fen", "verified_fen", "difference_explanation")


def test_multi_choices_that_must_be_answered_need_a_selection(templates: dict[str, Template]) -> None:
    """An empty list counts as unanswered, so a required multi-choice must ask for at least one."""
    for template in templates.values():
        for path, item in all_items(template):
            if isinstance(item, MultiChoice) and (item.required or item.required_if):
                assert item.min_selected >= 1, f"{template.code}:{path}"


# -- parse refuses broken templates --------------------------------------------------------------------

MINIMAL = """
code: step.example
version: 1
kind: step
title: {zh: 示例, en: Example}
sections:
  - code: main
    title: {zh: 主要, en: Main}
    items:
"""


def test_parse_refuses_a_duplicate_item_code() -> None:
    raw = MINIMAL + (
        "      - {type: yes_no, code: seen, label: {zh: 看到, en: Seen}}\n"
        "      - {type: text, code: seen, label: {zh: 又一个, en: Again}}\n"
    )
    with pytest.raises(TemplateError, match="item 'seen' appears twice"):
        parse(raw.encode())


def test_parse_refuses_a_condition_on_an_unknown_item() -> None:
    raw = MINIMAL + (
        "      - {type: yes_no, code: seen, label: {zh: 看到, en: Seen}}\n"
        "      - type: text\n"
        "        code: details\n"
        "        label: {zh: 详情, en: Details}\n"
        "        required_if: {item: ghost, equals: true}\n"
    )
    with pytest.raises(TemplateError, match="details: required_if names unknown item 'ghost'"):
        parse(raw.encode())


def test_parse_accepts_the_minimal_template() -> None:
    raw = MINIMAL + "      - {type: yes_no, code: seen, label: {zh: 看到, en: Seen}}\n"
    assert [p for p, _ in all_items(parse(raw.encode()))] == ["seen"]
