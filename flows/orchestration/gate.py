"""The evaluation gate: a pure decision with its reasons.

The champion's metrics passed in here come from re-evaluating the champion model on the candidate's
own test set (flows/orchestration/pipeline.py), never from the numbers recorded when it was registered: a test
set changes between runs, and scores on different sets do not compare.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tasks.metrics import EvalReport, Incomparable
from tasks.params import GateParams


@dataclass(frozen=True)
class Champion:
    """The registered champion as the gate sees it: its version and its report on the candidate's test
    split, or why it could not be scored there."""

    version: int
    report: EvalReport | Incomparable


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


def decide(candidate: EvalReport, champion: Champion | None, params: GateParams) -> Decision:
    """Decide on a candidate from its evaluation report and the champion's report on the same test set
    (with its version), or None when there is no champion.

    Invariant: promote is True only when every check passed; every check adds one reason line.
    """
    checks = [floor_check(candidate, params), latency_check(candidate, params)]
    checks += behaviour_checks(candidate, params) or [(True, "no behavioural floors (gate.min_behaviour is empty)")]
    if champion is None:
        checks.append((True, "no champion yet: the absolute floor decides"))
    elif isinstance(champion.report, Incomparable):
        checks.append((False, f"champion v{champion.version} cannot be scored on this test set: "
                              f"{champion.report.incomparable} (use a new registry.model_name for a new label set)"))
    else:
        checks.append(overall_check(candidate, champion.report, champion.version, params))
        checks += group_checks(candidate, champion.report, params)
    return Decision(promote=all(ok for ok, _ in checks), reasons=[reason for _, reason in checks],
                    champion_version=None if champion is None else champion.version)


def floor_check(candidate: EvalReport, params: GateParams) -> tuple[bool, str]:
    score = candidate.headline
    ok = score.value >= params.min_f1
    return ok, f"candidate {score.name} {score.value:.4f} {'>=' if ok else '<'} floor gate.min_f1 {params.min_f1:.4f}"


def latency_check(candidate: EvalReport, params: GateParams) -> tuple[bool, str]:
    p95 = candidate.latency.p95_ms if candidate.latency else None
    if p95 is None:
        return False, "latency was not measured (evaluate.latency_sentences); gate.max_latency_ms_p95 needs it"
    ok = p95 <= params.max_latency_ms_p95
    return ok, f"latency p95 {p95:.1f} ms per {candidate.unit} {'<=' if ok else '>'} gate.max_latency_ms_p95 " \
               f"{params.max_latency_ms_p95:.1f}"


def behaviour_checks(candidate: EvalReport, params: GateParams) -> list[tuple[bool, str]]:
    """Behavioural pass rates against their floors (gate.min_behaviour); a check without cases cannot fail."""
    measured = candidate.behaviour.checks() if candidate.behaviour else {}
    checks = []
    for check, floor in params.min_behaviour.items():
        result = measured.get(check)
        if result is None:
            checks.append((False, f"{check} was not measured; gate.min_behaviour.{check} needs it"))
        elif result.pass_rate is None:
            checks.append((True, f"{check}: no cases in this test set"))
        else:
            ok = result.pass_rate >= floor
            checks.append((ok, f"{check} pass rate {result.pass_rate:.2%} ({result.passed}/{result.cases}) "
                               f"{'>=' if ok else '<'} gate.min_behaviour.{check} {floor:.2%}"))
    return checks


def overall_check(candidate: EvalReport, champion: EvalReport, version: int,
                  params: GateParams) -> tuple[bool, str]:
    ours, theirs = candidate.headline.value, champion.headline.value
    change = ours - theirs
    ok = change >= -params.max_regression
    return ok, (
        f"vs champion v{version} on the same test set: {candidate.headline.name} {ours:.4f} vs {theirs:.4f} "
        f"({change:+.4f}; gate.max_regression allows -{params.max_regression:.4f})"
    )


def group_checks(candidate: EvalReport, champion: EvalReport, params: GateParams) -> list[tuple[bool, str]]:
    """Per group (entity type, class) with at least gate.min_entity_support gold cases: no drop beyond the bound."""
    checks, skipped = [], []
    for name, theirs in sorted(champion.groups.items()):
        if theirs.support < params.min_entity_support:
            skipped.append(f"{name} ({theirs.support})")
            continue
        ours = candidate.groups[name].f1 if name in candidate.groups else 0.0
        change = ours - theirs.f1
        ok = change >= -params.max_entity_regression
        checks.append((ok, f"{name}: F1 {ours:.4f} vs champion {theirs.f1:.4f} ({change:+.4f}; "
                           f"gate.max_entity_regression allows -{params.max_entity_regression:.4f})"))
    if skipped:
        checks.append((True, f"not compared per {champion.group} (support below gate.min_entity_support "
                             f"{params.min_entity_support}): {', '.join(skipped)}"))
    return checks
