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
    assert "vs champion v3 on the same test set: strict entity F1 0.5000 vs 0.4500 (+0.0500" in decision.reasons[4]
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


def classifier(macro_f1: float, version: int | None = None, **per_class: tuple[float, int]) -> dict:
    scores = {c: {"f1": score, "support": support} for c, (score, support) in per_class.items()}
    found = {"task": "sequence-classification", "f1": macro_f1, "per_class": scores, "latency": {"p95_ms": 5.0}}
    return found if version is None else {"version": version, **found}


def test_a_classifier_is_gated_on_macro_f1_and_each_class_without_ner_behaviour_checks():
    better = decide(classifier(0.70, negative=(0.6, 40), positive=(0.8, 90)),
                    classifier(0.65, 2, negative=(0.55, 40), positive=(0.75, 90)), GATE)
    assert better.promote, better.reasons
    assert "candidate macro-F1 0.7000 >= floor gate.min_f1 0.3000" in better.reasons[0]
    assert any("vs champion v2 on the same test set: macro-F1 0.7000 vs 0.6500" in r for r in better.reasons)
    assert any(r.startswith("negative: F1 0.6000 vs champion 0.5500") for r in better.reasons)
    assert not any("name_invariance" in r and "not measured" in r for r in better.reasons)

    # Better on macro-F1 overall, but one class collapsed: rejected, and that class is the reason.
    collapsed = decide(classifier(0.66, negative=(0.30, 40), positive=(0.95, 90), neutral=(0.7, 3)),
                       classifier(0.65, 2, negative=(0.55, 40), positive=(0.75, 90), neutral=(0.6, 3)), GATE)
    assert not collapsed.promote
    failing = [r for r in collapsed.reasons if r.startswith("negative:")]
    assert failing and "-0.2500" in failing[0]
    assert any("not compared per class" in r and "neutral (3)" in r for r in collapsed.reasons)
