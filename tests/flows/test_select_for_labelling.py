"""The Prefect flow `flowtune-select-for-labelling` on a real (throw-away) Prefect server: a tiny tagger ranks a
file's sentences, the flow run completes and returns the counts, and the selection file holds the chosen items
with the tagger's answers (the pre-annotations `label push` sends)."""

from __future__ import annotations

import json
from pathlib import Path

from flows.labelling.loop import read_selection
from flows.orchestration.label import select_for_labelling
from tests.unit.test_predictors import TAGS, saved


def test_the_flow_selects_and_returns_its_counts(tiny_base: Path, tmp_path: Path, monkeypatch):
    monkeypatch.setenv("FLOWTUNE_LABEL_STUDIO_PORT", "9")  # no Label Studio: queued items are simply not known
    tagger = saved(tiny_base, tmp_path / "tagger", "AutoModelForTokenClassification", TAGS,
                   {"max_length": 16, "task_kind": "ner"})
    texts = ["Alice met Bob", "alice  MET bob", "stocks fell today", "rain in Oslo again"]
    (tmp_path / "pool.jsonl").write_text("".join(json.dumps({"tokens": t.split()}) + "\n" for t in texts))
    out = tmp_path / "selected.jsonl"

    state = select_for_labelling(from_file=str(tmp_path / "pool.jsonl"), model=str(tagger), n=2, out=str(out),
                                 return_state=True)
    assert state.is_completed()
    assert state.result() == {"chosen": 2, "pool": 4, "excluded": 1, "file": str(out)}
    chosen = read_selection(out)
    assert all(len(c.answer["scores"]) == len(c.item) and c.uncertainty > 0 for c in chosen)
    assert json.loads(out.with_suffix(".meta.json").read_text())["labels"] == TAGS
