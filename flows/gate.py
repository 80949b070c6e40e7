"""The evaluation gate: a pure decision with its reasons.

The champion's metrics passed in here come from re-evaluating the champion model on the candidate's
own test set (flows/pipeline.py), never from the numbers recorded when it was registered: a test
set changes between runs, and scores on different sets do not compare.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tasks.params import SEQUENCE_CLASSIFICATION, GateParams


@dataclass(frozen=True)
class Decision:
    """Whether the candidate may be registered and become champion, and why."""

    promote: bool
    reasons: list[str] = field(default_factory=list)
    # The champion version the candidate was compared against (None: there was none). Registration moves
    # the alias only if it still points there (compare-and-swap).
    champion_version: int | None = None

    def as_markdown(self) -> str:
        verdict = "**PROMOTE**" if self.promote else "**REJECT**"
        return "\n".join([f"# Gate decision: {verdict}", "", *[f"- {reason}" for reason in self.reasons]])


def decide(candidate: dict, champion: dict | None, params: GateParams) -> Decision:
    """Decide on a candidate from its evaluation metrics (keys: f1 = the task's headline score, per_type
    or per_class, latency, behaviour for NER) and the champion's
    metrics on the same test set (plus its version), or None when there is no champion.

    Invariant: promote is True only when every check passed; every check adds one reason line.
    """
    checks = [floor_check(candidate, params), latency_check(candidate, params)]
    if is_classifier(candidate):
        checks.append((True, "behavioural checks (name invariance, minimum functionality) apply to NER only"))
    else:
        checks += behaviour_checks(candidate, params)
    if champion is None:
        checks.append((True, "no champion yet: the absolute floor decides"))
    elif "incomparable" in champion:
        checks.append((False, f"champion v{champion.get('version')} cannot be scored on this test set: "
                              f"{champion['incomparable']} (use a new registry.model_name for a new label set)"))
    else:
        checks.append(overall_check(candidate, champion, params))
        checks += entity_checks(candidate, champion, params)
    return Decision(promote=all(ok for ok, _ in checks), reasons=[reason for _, reason in checks],
                    champion_version=None if champion is None else champion.get("version"))


def is_classifier(metrics: dict) -> bool:
    return metrics.get("task") == SEQUENCE_CLASSIFICATION


def headline(metrics: dict) -> str:
    """What `f1` means in these metrics: the task's headline score."""
    return "macro-F1" if is_classifier(metrics) else "strict entity F1"


def per_group(metrics: dict) -> dict[str, dict]:
    """Per entity type (NER) or per class (classification): precision, recall, F1 and support."""
    return metrics.get("per_class" if is_classifier(metrics) else "per_type", {})


def floor_check(candidate: dict, params: GateParams) -> tuple[bool, str]:
    f1 = float(candidate["f1"])
    ok = f1 >= params.min_f1
    return ok, f"candidate {headline(candidate)} {f1:.4f} {'>=' if ok else '<'} floor gate.min_f1 {params.min_f1:.4f}"


def latency_check(candidate: dict, params: GateParams) -> tuple[bool, str]:
    p95 = candidate.get("latency", {}).get("p95_ms")
    if p95 is None:
        return False, "latency was not measured (evaluate.latency_sentences); gate.max_latency_ms_p95 needs it"
    ok = p95 <= params.max_latency_ms_p95
    return ok, f"latency p95 {p95:.1f} ms per sentence {'<=' if ok else '>'} gate.max_latency_ms_p95 " \
               f"{params.max_latency_ms_p95:.1f}"


def behaviour_checks(candidate: dict, params: GateParams) -> list[tuple[bool, str]]:
    """Behavioural pass rates against their floors; a check without cases cannot fail."""
    floors = {"name_invariance": params.min_name_invariance, "minimum_functionality": params.min_functionality}
    param_names = {"name_invariance": "min_name_invariance", "minimum_functionality": "min_functionality"}
    checks = []
    for check, floor in floors.items():
        result = candidate.get("behaviour", {}).get(check)
        if result is None:
            checks.append((False, f"{check} was not measured; gate.{param_names[check]} needs it"))
        elif result["pass_rate"] is None:
            checks.append((True, f"{check}: no cases in this test set"))
        else:
            ok = result["pass_rate"] >= floor
            checks.append((ok, f"{check} pass rate {result['pass_rate']:.2%} ({result['passed']}/{result['cases']}) "
                               f"{'>=' if ok else '<'} gate.{param_names[check]} {floor:.2%}"))
    return checks


def overall_check(candidate: dict, champion: dict, params: GateParams) -> tuple[bool, str]:
    change = float(candidate["f1"]) - float(champion["f1"])
    ok = change >= -params.max_regression
    return ok, (
        f"vs champion v{champion.get('version')} on the same test set: {headline(candidate)} "
        f"{float(candidate['f1']):.4f} vs "
        f"{float(champion['f1']):.4f} ({change:+.4f}; gate.max_regression allows -{params.max_regression:.4f})"
    )


def entity_checks(candidate: dict, champion: dict, params: GateParams) -> list[tuple[bool, str]]:
    """Per entity type (or class) with at least gate.min_entity_support gold cases: no drop beyond the bound."""
    checks, skipped = [], []
    for entity, theirs in sorted(per_group(champion).items()):
        if theirs["support"] < params.min_entity_support:
            skipped.append(f"{entity} ({theirs['support']})")
            continue
        ours = per_group(candidate).get(entity, {}).get("f1", 0.0)
        change = ours - theirs["f1"]
        ok = change >= -params.max_entity_regression
        checks.append((ok, f"{entity}: F1 {ours:.4f} vs champion {theirs['f1']:.4f} ({change:+.4f}; "
                           f"gate.max_entity_regression allows -{params.max_entity_regression:.4f})"))
    if skipped:
        kind = "class" if is_classifier(champion) else "type"
        checks.append((True, f"not compared per {kind} (support below gate.min_entity_support "
                             f"{params.min_entity_support}): {', '.join(skipped)}"))
    return checks
