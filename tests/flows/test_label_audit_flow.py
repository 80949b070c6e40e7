"""The label-audit flow on a real Prefect server (tests/flows/conftest.py): `python -m tasks.audit` runs as a
subprocess of the flow over a cleaned train split with planted errors (a tiny encoder), the report lands under
label.audit_report, and the flow run carries the top rows as a table artifact."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from flows.orchestration.audit import ARTIFACT_KEY, label_audit
from tasks.kinds.ner.records import NerRecord
from tests.unit.test_label_audit import planted_ner

ROOT = Path(__file__).resolve().parents[2]


def write_records(path: Path, records: list[NerRecord]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps({"id": r.id, "tokens": list(r.tokens), "tags": list(r.tags)}) + "\n"
                            for r in records))


def audit_params(folder: Path, base: Path) -> Path:
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["task"]["labels"] = ["geo-loc", "person"]
    params["paths"]["clean"] = str(folder / "clean")
    params["train"].update(base_model=str(base), max_length=16, batch_size=8, learning_rate=5e-3, num_threads=1,
                           log_every_steps=0)
    params["label"].update(audit_folds=3, audit_epochs=3, audit_top=5, audit_report=str(folder / "audit.json"))
    path = folder / "params.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


@pytest.mark.slow
def test_the_flow_publishes_the_most_suspect_rows_as_a_table(tmp_path: Path, tiny_base: Path):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    records, planted = planted_ner(60, every=12)  # 5 planted errors
    write_records(tmp_path / "clean/train.jsonl", records)
    state = label_audit(params_file=str(audit_params(tmp_path, tiny_base)), return_state=True)
    assert state.is_completed(), state.message
    result = state.result()
    assert result["rows"] == 60 and result["top"] == 5 and Path(result["csv"]).is_file()
    top = json.loads((tmp_path / "audit.json").read_text())["top"]
    assert sum(item["id"] in planted for item in top) >= 4

    with get_client(sync_client=True) as client:
        flow_run = ArtifactFilterFlowRunId(any_=[state.state_details.flow_run_id])
        artifacts = client.read_artifacts(artifact_filter=ArtifactFilter(flow_run_id=flow_run))
    table = next(a for a in artifacts if a.key == ARTIFACT_KEY)
    rows = json.loads(table.data) if isinstance(table.data, str) else table.data
    assert [row["id"] for row in rows] == [item["id"] for item in top]
    assert set(rows[0]) == {"rank", "id", "sentence", "given", "suggested", "score"}
    assert len(rows[0]["given"].split()) == len(rows[0]["sentence"].split())


@pytest.mark.slow
def test_a_missing_train_split_fails_the_run_naming_what_to_run(tmp_path: Path, tiny_base: Path):
    state = label_audit(params_file=str(audit_params(tmp_path, tiny_base)), return_state=True)
    assert state.is_failed()
    assert "train.jsonl not found" in state.message and "dvc repro clean" in state.message
