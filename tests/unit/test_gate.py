"""The gate's decision table: floors, champion comparison overall and per group (entity type, class), for
both task kinds' reports."""

from pathlib import Path

import pytest

from flows.orchestration.gate import Champion, decide
from tasks.metrics import Behaviour, EvalReport, Headline, Incomparable, Latency
from tasks.params import GateParams

GATE = GateParams(min_f1=0.3, max_regression=0.02, max_entity_regression=0.10, min_entity_support=20,
                  max_latency_ms_p95=100, min_behaviour={"name_invariance": 0.8, "minimum_functionality": 0.5})
CLASSIFIER_GATE = GATE.model_copy(update={"min_behaviour": {}})  # as params-sentiment.yaml: no behavioural floors
PASSING = Behaviour(name_invariance={"cases": 10, "passed": 9, "pass_rate": 0.9},
                    minimum_functionality={"cases": 10, "passed": 6, "pass_rate": 0.6})
CHECKS_BEFORE_CHAMPION = 4  # floor, latency, name invariance, minimum functionality
OLD_FORMAT = Path(__file__).parents[1] / "fixtures" / "eval_json_before_report"


def metrics(f1: float, **per_type: tuple[float, int]) -> EvalReport:
    """An NER report: strict entity F1, per entity type, with behavioural checks."""
    groups = {t: {"precision": score, "recall": score, "f1": score, "support": support}
              for t, (score, support) in per_type.items()}
    return EvalReport(task="token-classification", title="named-entity recognition",
                      predicts="IOB2 entity tags, one per word",
                      headline=Headline(name="strict entity F1", value=f1, precision=f1, recall=f1),
                      unit="sentence", count=100, group="entity type", groups=groups, behaviour=PASSING,
                      latency=Latency(p95_ms=20.0))


def champion(f1: float, **per_type: tuple[float, int]) -> Champion:
    return Champion(3, metrics(f1, **per_type))


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
    assert decision.reasons[0].startswith(f"candidate strict entity F1 {candidate.headline.value:.4f}")
    assert ("no champion yet" in decision.reasons[CHECKS_BEFORE_CHAMPION]) is (current is None)
    assert decision.champion_version == (None if current is None else 3)
    if failing:
        assert any(failing in reason for reason in decision.reasons)


def test_every_check_is_a_reason_line():
    decision = decide(metrics(0.5, person=(0.6, 40), loc=(0.2, 3)),
                      champion(0.45, person=(0.5, 40), loc=(0.3, 3)), GATE)
    assert len(decision.reasons) == CHECKS_BEFORE_CHAMPION + 3  # + overall, person, the low-support note
    assert "vs champion v3 on the same test set: strict entity F1 0.5000 vs 0.4500 (+0.0500" in decision.reasons[4]
    assert "not compared per entity type" in decision.reasons[6] and "loc (3)" in decision.reasons[6]


def test_a_champion_that_cannot_score_this_test_set_rejects():
    decision = decide(metrics(0.9), Champion(2, Incomparable(incomparable="tag 'B-x' is not a label")), GATE)
    assert not decision.promote and "cannot be scored on this test set" in decision.reasons[4]
    assert "champion v2" in decision.reasons[4] and "tag 'B-x' is not a label" in decision.reasons[4]
    assert decision.champion_version == 2


def test_markdown_shows_verdict_and_reasons():
    text = decide(metrics(0.1), None, GATE).as_markdown()
    assert "REJECT" in text and "floor gate.min_f1 0.3000" in text


@pytest.mark.parametrize(
    ("change", "promote", "reason"),
    [
        ({"latency": Latency(p95_ms=150.0)}, False, "latency p95 150.0 ms per sentence > gate.max_latency_ms_p95"),
        ({"latency": Latency()}, False, "latency was not measured"),
        ({"latency": None}, False, "latency was not measured"),
        ({"behaviour": Behaviour(name_invariance={"cases": 10, "passed": 7, "pass_rate": 0.7},
                                minimum_functionality=PASSING.minimum_functionality)},
         False, "name_invariance pass rate 70.00% (7/10) < gate.min_behaviour.name_invariance 80.00%"),
        ({"behaviour": Behaviour(name_invariance={"cases": 0, "passed": 0, "pass_rate": None},
                                minimum_functionality=PASSING.minimum_functionality)},
         True, "name_invariance: no cases in this test set"),
        ({"behaviour": Behaviour(name_invariance=PASSING.name_invariance)}, False,
         "minimum_functionality was not measured"),
    ],
    ids=["slow", "latency-missing", "latency-absent", "not-invariant", "no-names-in-test", "functionality-missing"],
)
def test_latency_and_behaviour_floors(change, promote, reason):
    candidate = EvalReport.model_validate({**dict(metrics(0.5)), **change})
    decision = decide(candidate, None, GATE)
    assert decision.promote is promote
    assert any(reason in line for line in decision.reasons), decision.reasons


def classifier(macro_f1: float, **per_class: tuple[float, int]) -> EvalReport:
    """A text classifier's report: macro-F1, per class, calibration, no behavioural checks."""
    groups = {c: {"precision": score, "recall": score, "f1": score, "support": support}
              for c, (score, support) in per_class.items()}
    return EvalReport(task="sequence-classification", title="text classification", predicts="one class per text",
                      headline=Headline(name="macro-F1", value=macro_f1, precision=macro_f1, recall=macro_f1),
                      unit="text", count=130, group="class", groups=groups, calibration={"ece": 0.05},
                      latency=Latency(p95_ms=5.0))


@pytest.mark.parametrize(
    ("candidate", "current", "promote", "failing"),
    [
        (classifier(0.35), None, True, None),
        (classifier(0.29), None, False, "candidate macro-F1 0.2900 < floor"),
        (classifier(0.70, negative=(0.6, 40), positive=(0.8, 90)),
         classifier(0.65, negative=(0.55, 40), positive=(0.75, 90)), True, None),
        (classifier(0.60, negative=(0.6, 40)), classifier(0.65, negative=(0.6, 40)), False,
         "vs champion v2 on the same test set: macro-F1 0.6000 vs 0.6500 (-0.0500"),
        (classifier(0.66, negative=(0.30, 40), positive=(0.95, 90)),
         classifier(0.65, negative=(0.55, 40), positive=(0.75, 90)), False, "negative: F1 0.3000 vs champion 0.5500"),
        (classifier(0.66, negative=(0.30, 3)), classifier(0.65, negative=(0.55, 3)), True,
         "not compared per class (support below gate.min_entity_support 20): negative (3)"),
        (classifier(0.66), classifier(0.65, neutral=(0.5, 30)), False, "neutral: F1 0.0000 vs champion 0.5000"),
    ],
    ids=["no-champion", "below-floor", "better", "worse", "class-regressed", "class-low-support", "class-missing"],
)
def test_decide_on_classifiers(candidate, current, promote, failing):
    decision = decide(candidate, None if current is None else Champion(2, current), CLASSIFIER_GATE)
    assert decision.promote is promote, decision.reasons
    assert decision.reasons[0].startswith(f"candidate macro-F1 {candidate.headline.value:.4f}")
    # no behavioural floors: one line says so, and nothing is "not measured"
    assert decision.reasons[2] == "no behavioural floors (gate.min_behaviour is empty)"
    assert ("no champion yet" in decision.reasons[3]) is (current is None)
    if failing:
        assert any(failing in reason for reason in decision.reasons), decision.reasons


def test_a_classifier_is_gated_on_macro_f1_and_each_class_without_ner_behaviour_checks():
    better = decide(classifier(0.70, negative=(0.6, 40), positive=(0.8, 90)),
                    Champion(2, classifier(0.65, negative=(0.55, 40), positive=(0.75, 90))), CLASSIFIER_GATE)
    assert better.promote, better.reasons
    assert "candidate macro-F1 0.7000 >= floor gate.min_f1 0.3000" in better.reasons[0]
    assert "latency p95 5.0 ms per text <= gate.max_latency_ms_p95" in better.reasons[1]
    assert any("vs champion v2 on the same test set: macro-F1 0.7000 vs 0.6500" in r for r in better.reasons)
    assert any(r.startswith("negative: F1 0.6000 vs champion 0.5500") for r in better.reasons)
    assert not any("name_invariance" in r and "not measured" in r for r in better.reasons)

    # Better on macro-F1 overall, but one class collapsed: rejected, and that class is the reason.
    collapsed = decide(classifier(0.66, negative=(0.30, 40), positive=(0.95, 90), neutral=(0.7, 3)),
                       Champion(2, classifier(0.65, negative=(0.55, 40), positive=(0.75, 90), neutral=(0.6, 3))),
                       CLASSIFIER_GATE)
    assert not collapsed.promote
    failing = [r for r in collapsed.reasons if r.startswith("negative:")]
    assert failing and "-0.2500" in failing[0]
    assert any("not compared per class" in r and "neutral (3)" in r for r in collapsed.reasons)


def test_a_floor_on_a_check_the_evaluation_did_not_run_fails_the_gate():
    """gate.min_behaviour names checks by the kind's names; a floor the report cannot meet is a failure, not a
    silent pass (e.g. a classifier run with NER's floors)."""
    decision = decide(classifier(0.70), None, GATE)
    assert not decision.promote
    assert "name_invariance was not measured; gate.min_behaviour.name_invariance needs it" in decision.reasons
    with pytest.raises(ValueError, match=r"pass-rate floors must lie in \[0, 1\]: name_invariance"):
        GateParams(**{**GATE.model_dump(), "min_behaviour": {"name_invariance": 80}})


@pytest.mark.parametrize("name", ["ner.json", "textclass.json", "multilabel.json"])
def test_an_eval_json_from_before_the_report_still_compares(name):
    """A champion registered before EvalReport: its recorded eval.json, as the gate would read it."""
    old = EvalReport.read(OLD_FORMAT / name)
    decision = decide(old, Champion(1, old), GATE)
    headline = f"{old.headline.name} {old.headline.value:.4f}"
    assert decision.reasons[0].startswith(f"candidate {headline} ")
    assert any(r.startswith(f"vs champion v1 on the same test set: {headline} vs ") for r in decision.reasons)
    assert any(f"not compared per {old.group}" in r for r in decision.reasons)  # the fixtures' supports are < 20
