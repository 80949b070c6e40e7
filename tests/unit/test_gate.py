"""The gate's decision table: floors, champion comparison overall and per entity type."""

import pytest

from flows.gate import decide
from tasks.params import GateParams

GATE = GateParams(min_f1=0.3, max_regression=0.02, max_entity_regression=0.10, min_entity_support=20)


def metrics(f1: float, **per_type: tuple[float, int]) -> dict:
    return {"f1": f1, "per_type": {t: {"f1": score, "support": support} for t, (score, support) in per_type.items()}}


def champion(f1: float, **per_type: tuple[float, int]) -> dict:
    return {"version": 3, **metrics(f1, **per_type)}


@pytest.mark.parametrize(
    ("candidate", "current", "promote", "failing"),
    [
        (metrics(0.35), None, True, None),
        (metrics(0.30), None, True, None),  # the floor is inclusive
        (metrics(0.29), None, False, "floor"),
        (metrics(0.50, person=(0.6, 40)), champion(0.45, person=(0.5, 40)), True, None),
        (metrics(0.40, person=(0.5, 40)), champion(0.45, person=(0.5, 40)), False, "vs champion"),
        (metrics(0.44, person=(0.5, 40)), champion(0.45, person=(0.5, 40)), True, None),  # within max_regression
        (metrics(0.45, person=(0.5, 40)), champion(0.45, person=(0.5, 40)), True, None),  # tie
        (metrics(0.50, person=(0.3, 40)), champion(0.45, person=(0.5, 40)), False, "person"),
        (metrics(0.50, person=(0.3, 5)), champion(0.45, person=(0.5, 5)), True, None),  # too few to compare
        (metrics(0.50), champion(0.45, product=(0.4, 25)), False, "product"),  # type no longer predicted
        (metrics(0.10), champion(0.05), False, "floor"),
    ],
    ids=["no-champion", "on-floor", "below-floor", "better", "worse", "slightly-worse", "tie", "entity-regressed",
         "entity-low-support", "entity-missing", "below-floor-with-champion"],
)
def test_decide(candidate, current, promote, failing):
    decision = decide(candidate, current, GATE)
    assert decision.promote is promote
    assert decision.reasons[0].startswith(f"candidate strict entity F1 {candidate['f1']:.4f}")
    assert ("no champion yet" in decision.reasons[1]) is (current is None)
    if failing:
        assert any(failing in reason for reason in decision.reasons)


def test_every_check_is_a_reason_line():
    decision = decide(metrics(0.5, person=(0.6, 40), loc=(0.2, 3)),
                      champion(0.45, person=(0.5, 40), loc=(0.3, 3)), GATE)
    assert len(decision.reasons) == 4  # floor, overall, person, the low-support note
    assert "vs champion v3 on the same test set: F1 0.5000 vs 0.4500 (+0.0500" in decision.reasons[1]
    assert "loc (3)" in decision.reasons[3]


def test_a_champion_that_cannot_score_this_test_set_rejects():
    decision = decide(metrics(0.9), {"version": 2, "incomparable": "tag 'B-x' is not a label"}, GATE)
    assert not decision.promote and "cannot be scored on this test set" in decision.reasons[1]


def test_markdown_shows_verdict_and_reasons():
    text = decide(metrics(0.1), None, GATE).as_markdown()
    assert "REJECT" in text and "floor gate.min_f1 0.3000" in text
