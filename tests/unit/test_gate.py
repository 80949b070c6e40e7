import pytest

from flows.gate import decide
from tasks.params import GateParams

FLOOR = GateParams(min_f1=0.3)


@pytest.mark.parametrize(
    ("f1", "champion", "promote"),
    [
        (0.35, None, True),
        (0.30, None, True),  # the floor is inclusive
        (0.29, None, False),
        (0.35, {"version": 1, "f1": 0.5}, True),
        (0.10, {"version": 1, "f1": 0.05}, False),
    ],
    ids=["above-floor", "on-floor", "below-floor", "champion-informational", "below-floor-with-champion"],
)
def test_decide(f1, champion, promote):
    decision = decide({"f1": f1}, champion, FLOOR)
    assert decision.promote is promote
    assert decision.reasons[0].startswith(f"candidate strict entity F1 {f1:.4f}")
    assert ("no champion yet" in decision.reasons[1]) is (champion is None)


def test_markdown_shows_verdict_and_reasons():
    text = decide({"f1": 0.1}, None, FLOOR).as_markdown()
    assert "REJECT" in text and "floor gate.min_f1 0.3000" in text
