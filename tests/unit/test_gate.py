"""The gate's decision table: floors, champion comparison overall and per entity type."""

import pytest

from flows.gate import decide
from tasks.params import GateParams

GATE = GateParams(min_f1=0.3, max_regression=0.02, max_entity_regression=0.10, min_entity_support=20,
                  max_latency_ms_p95=100, min_name_invariance=0.8, min_functionality=0.5)
PASSING = {"latency": {"p95_ms": 20.0},
           "behaviour": {"name_invariance": {"cases": 10, "passed": 9, "pass_rate": 0.9},
                         "minimum_functionality": {"cases": 10, "passed": 6, "pass_rate": 0.6}}}
CHECKS_BEFORE_CHAMPION = 4  # floor, latency, name invariance, minimum functionality


def metrics(f1: float, **per_type: tuple[float, int]) -> dict:
    scores = {t: {"f1": score, "support": support} for t, (score, support) in per_type.items()}
    return {"f1": f1, "per_type": scores, **PASSING}


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
    assert ("no champion yet" in decision.reasons[CHECKS_BEFORE_CHAMPION]) is (current is None)
    if failing:
        assert any(failing in reason for reason in decision.reasons)


def test_every_check_is_a_reason_line():
    decision = decide(metrics(0.5, person=(0.6, 40), loc=(0.2, 3)),
                      champion(0.45, person=(0.5, 40), loc=(0.3, 3)), GATE)
    assert len(decision.reasons) == CHECKS_BEFORE_CHAMPION + 3  # + overall, person, the low-support note
    assert "vs champion v3 on the same test set: F1 0.5000 vs 0.4500 (+0.0500" in decision.reasons[4]
    assert "loc (3)" in decision.reasons[6]


def test_a_champion_that_cannot_score_this_test_set_rejects():
    decision = decide(metrics(0.9), {"version": 2, "incomparable": "tag 'B-x' is not a label"}, GATE)
    assert not decision.promote and "cannot be scored on this test set" in decision.reasons[4]


def test_markdown_shows_verdict_and_reasons():
    text = decide(metrics(0.1), None, GATE).as_markdown()
    assert "REJECT" in text and "floor gate.min_f1 0.3000" in text


@pytest.mark.parametrize(
    ("change", "promote", "reason"),
    [
        ({"latency": {"p95_ms": 150.0}}, False, "latency p95 150.0 ms per sentence > gate.max_latency_ms_p95"),
        ({"latency": {}}, False, "latency was not measured"),
        ({"behaviour": {**PASSING["behaviour"], "name_invariance": {"cases": 10, "passed": 7, "pass_rate": 0.7}}},
         False, "name_invariance pass rate 70.00% (7/10) < gate.min_name_invariance 80.00%"),
        ({"behaviour": {**PASSING["behaviour"], "name_invariance": {"cases": 0, "passed": 0, "pass_rate": None}}},
         True, "name_invariance: no cases in this test set"),
        ({"behaviour": {"name_invariance": PASSING["behaviour"]["name_invariance"]}}, False,
         "minimum_functionality was not measured"),
    ],
    ids=["slow", "latency-missing", "not-invariant", "no-names-in-test", "functionality-missing"],
)
def test_latency_and_behaviour_floors(change, promote, reason):
    decision = decide({**metrics(0.5), **change}, None, GATE)
    assert decision.promote is promote
    assert any(reason in line for line in decision.reasons), decision.reasons
