"""The evaluation gate: a pure decision with its reasons."""

from __future__ import annotations

from dataclasses import dataclass, field

from tasks.params import GateParams


@dataclass(frozen=True)
class Decision:
    """Whether the candidate may be registered and become champion, and why."""

    promote: bool
    reasons: list[str] = field(default_factory=list)

    def as_markdown(self) -> str:
        verdict = "**PROMOTE**" if self.promote else "**REJECT**"
        return "\n".join([f"# Gate decision: {verdict}", "", *[f"- {reason}" for reason in self.reasons]])


def decide(candidate: dict, champion: dict | None, params: GateParams) -> Decision:
    """Decide on a candidate from its evaluation metrics (keys: f1, ...).

    Invariant: promote is True only when every check passed; every check adds one reason line.
    """
    f1 = float(candidate["f1"])
    passed = f1 >= params.min_f1
    reasons = [f"candidate strict entity F1 {f1:.4f} {'>=' if passed else '<'} floor gate.min_f1 {params.min_f1:.4f}"]
    if champion is None:
        reasons.append("no champion yet: the absolute floor decides")
    else:
        reasons.append(
            f"current champion v{champion.get('version')} recorded F1 {float(champion['f1']):.4f} "
            "(informational: champion re-evaluation on the same test set is not gated yet)"
        )
    return Decision(promote=passed, reasons=reasons)
