"""How an item's current answer folds from its observations: photos added side by side are all kept."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from sync.answer_merge import current, merged

SHAS = [c * 64 for c in "0123456789abcdef"]


def photos(*shas: str, **views: str) -> dict[str, Any]:
    return {
        "photos": [{"sha256": s, "view": views[s[:1]]} if s[:1] in views else {"sha256": s} for s in shas]
    }


def shas_of(value: Any) -> set[str]:
    return {p["sha256"] for p in (value or {}).get("photos", [])}


A, B, C, D = SHAS[:4]


def test_two_members_photographing_the_same_item_offline_both_count() -> None:
    # Both start from the first photo; one adds the kitchen, the other the bedroom.
    first = photos(A)
    value = current([(first, {"photos": []}), (photos(A, B), first), (photos(A, C), first)])
    assert shas_of(value) == {A, B, C}


def test_a_photo_removed_on_one_tablet_stays_removed_while_the_other_adds() -> None:
    base = photos(A, B)
    value = current([(base, None), (photos(A), base), (photos(A, B, C), base)])
    assert shas_of(value) == {A, C}


def test_without_a_base_the_latest_answer_wins() -> None:
    assert current([(photos(A, B), None), (photos(C), None)]) == photos(C)
    assert current([(["x", "y"], None), (["z"], None)]) == ["z"]


def test_clearing_an_item_clears_it() -> None:
    assert current([(photos(A), {"photos": []}), (None, photos(A))]) is None


def test_a_view_relabelled_on_one_tablet_is_kept_with_the_others_addition() -> None:
    base = photos(A)
    relabelled = {"photos": [{"sha256": A, "view": "kitchen"}]}
    value = current([(base, None), (photos(A, B), base), (relabelled, base)])
    assert value == {"photos": [{"sha256": A, "view": "kitchen"}, {"sha256": B}]}


def test_multiple_choice_selections_merge_and_scalars_do_not() -> None:
    assert sorted(current([(["tv"], []), (["tv", "car"], ["tv"]), (["tv", "pet"], ["tv"])])) == [
        "car",
        "pet",
        "tv",
    ]
    assert current([(3, None), (4, 3), (5, 3)]) == 5


def test_a_reason_for_no_photo_given_beside_a_photo_from_the_other_tablet() -> None:
    empty: dict[str, Any] = {"photos": []}
    value = current([(photos(A), empty), ({"photos": [], "not_taken_reason": "door closed"}, empty)])
    assert value == {"photos": [{"sha256": A}], "not_taken_reason": "door closed"}


def test_a_reason_without_a_photo_list_keeps_the_other_tablets_photo_in_either_order() -> None:
    empty: dict[str, Any] = {"photos": []}
    reason, photo = {"not_taken_reason": "door closed"}, photos(B)
    for first, second in ((reason, photo), (photo, reason)):
        assert current([(first, empty), (second, empty)]) == {
            "photos": [{"sha256": B}],
            "not_taken_reason": "door closed",
        }


def test_a_gps_fix_is_never_mixed_from_two_fixes() -> None:
    base = {"lat": 1.0, "lon": 1.0, "accuracy_m": 5.0}
    mine, theirs = {"lat": 2.0, "lon": 2.0, "accuracy_m": 5.0}, {"lat": 3.0, "lon": 3.0, "accuracy_m": 50.0}
    assert current([(base, None), (theirs, base), (mine, base)]) == mine


def test_a_signer_is_listed_once_whatever_each_tablet_recorded() -> None:
    away = {"signatures": [{"signer_name": "X", "member_id": "m1", "not_signed_reason": "away"}]}
    refused = {"signatures": [{"signer_name": "X", "member_id": "m1", "not_signed_reason": "refused"}]}
    signed = {"signatures": [{"signer_name": "X", "member_id": "m1", "sha256": A}]}
    assert current([(away, None), (refused, away), (signed, away)]) == signed
    assert current([(away, None), (signed, away), (refused, away)]) == refused


def test_clearing_beside_an_addition_keeps_the_addition_in_either_order() -> None:
    start = photos(A)
    for order in ([(None, start), (photos(A, B), start)], [(photos(A, B), start), (None, start)]):
        assert current([(start, None), *order]) == photos(B)
    assert current([(start, None), (None, start)]) is None  # nothing left: unanswered again


def test_the_same_photo_added_on_both_tablets_takes_the_later_label() -> None:
    empty: dict[str, Any] = {"photos": []}
    kitchen, bedroom = photos(A, **{A[:1]: "kitchen"}), photos(A, **{A[:1]: "bedroom"})
    assert current([(kitchen, empty), (bedroom, empty)]) == bedroom


entries = st.sets(st.sampled_from(SHAS), max_size=6)


@given(
    base=entries,
    adds=st.lists(entries, min_size=1, max_size=4),
    shapes=st.lists(st.sampled_from(["list", "no_list_when_empty", "clear"]), min_size=4, max_size=4),
    order=st.randoms(),
)
def test_concurrent_answers_from_one_base_keep_every_addition_in_any_arrival_order(
    base: set[str], adds: list[set[str]], shapes: list[str], order: Any
) -> None:
    """Each tablet keeps or drops some of the base and adds its own, or clears the item; whatever order
    the server gets them in, the result is the base less every removal plus every addition."""
    kept = [
        sorted(base & keep) + sorted(extra - base) for keep, extra in zip(adds, reversed(adds), strict=True)
    ]
    answers: list[Any] = []
    for shas, shape in zip(kept, shapes, strict=False):
        if shape == "clear":
            answers.append(None)
        elif shape == "no_list_when_empty" and not shas:
            answers.append({"not_taken_reason": "no access"})
        else:
            answers.append(photos(*shas))
    shuffled = answers[:]
    order.shuffle(shuffled)
    start = photos(*sorted(base))
    value = current([(start, None)] + [(a, start) for a in shuffled])
    removed = set().union(*(base - shas_of(a) for a in answers))
    added = set().union(*(shas_of(a) - base for a in answers))
    assert shas_of(value) == (base - removed) | added


@given(steps=st.lists(entries, min_size=1, max_size=6))
def test_one_tablet_alone_always_sees_exactly_what_it_sent(steps: list[set[str]]) -> None:
    """Each answer made on top of the current value (as a lone device does) is the new value, order too."""
    value: Any = None
    for step in steps:
        answer = photos(*sorted(step, reverse=True))
        value = merged(value, answer, value if value is not None else {"photos": []})
        assert value == answer
