"""`flowtune registry ...` and `flowtune predict` as a user runs them, against a real SeaweedFS registry."""

from __future__ import annotations

import json
import re
import subprocess
import uuid
from pathlib import Path

import pytest

from flows.registry import Registry
from tasks import evaluate
from tasks.settings import Settings, s3_client
from tests.helpers import ROOT, clean_env, client_env_file, evaluate_params, kind, synthetic, train_ner, train_params

pytestmark = [pytest.mark.integration, pytest.mark.slow]  # trains and publishes models (~2 min in all)


@pytest.fixture(scope="module")
def published(tmp_path_factory, local_services: Settings, tiny_base: Path):
    """Three versions of one tiny model (v2 champion after v1), its test file and its evaluation report; and
    `<name>-old`, a version whose metadata holds an eval.json of the layout before EvalReport."""
    work = tmp_path_factory.mktemp("registry-cli")
    data = work / "data"
    from tasks.io import write_jsonl

    write_jsonl(data / "train.jsonl", synthetic(32, 1))
    write_jsonl(data / "dev.jsonl", synthetic(8, 2))
    test_records = synthetic(12, 3)
    write_jsonl(data / "test.jsonl", test_records)
    (work / "test.conll").write_text("".join(
        "".join(f"{t}\t{g}\n" for t, g in zip(r.tokens, r.tags, strict=True)) + "\n" for r in test_records))
    model = work / "model"
    train_ner(train_params(tiny_base, epochs=2, learning_rate=5e-3), ["person", "geo-loc"], data, model,
              work / "t.json", work / "c.csv")
    report = evaluate.run(evaluate_params(), model, data / "test.jsonl", work / "e.json", work / "p.jsonl", 16,
                          kind=kind())
    metrics = report.model_dump(mode="json")
    registry = Registry(s3_client(local_services), local_services.registry_bucket, local_services.registry_prefix)
    name = f"cli-{uuid.uuid4().hex[:8]}"
    for index in range(3):  # three versions: each with a file of its own (same weights would be one version)
        (model / "revision.txt").write_text(f"{index}\n")
        registry.publish(name, model, {"metrics": metrics, "registered_at": "2026-11-23T12:00:00"})
    registry.set_alias(name, "champion", 1)
    registry.set_alias(name, "champion", 2)
    old = json.loads((ROOT / "tests/fixtures/eval_json_before_report/ner.json").read_text())
    registry.publish(f"{name}-old", model, {"metrics": old, "registered_at": "2026-11-01T12:00:00"})
    (work / ".env").write_text(client_env_file(local_services))
    return work, name, metrics


def flowtune(work: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(ROOT / ".venv/bin/flowtune"), *args], cwd=work, env=clean_env(), capture_output=True,
                          text=True, timeout=300)


def test_list_shows_versions_scores_and_aliases(published) -> None:
    work, name, metrics = published
    result = flowtune(work, "registry", "list", name)
    assert result.returncode == 0, result.stderr
    rows = result.stdout.splitlines()[2:]
    assert [row.split()[0] for row in rows] == ["v1", "v2", "v3"]
    assert "champion" in rows[1] and "champion" not in rows[0] + rows[2]
    assert f"{metrics['f1']:.4f}" in rows[0]
    assert name in flowtune(work, "registry", "list").stdout


def test_promote_then_rollback_restores_each_previous_champion(published) -> None:
    work, name, _ = published
    assert "alias champion -> v3 (was v2)" in flowtune(work, "registry", "promote", f"{name}@3").stdout
    assert "rolled back v3 -> v2" in flowtune(work, "registry", "rollback", name).stdout
    assert "rolled back v2 -> v1" in flowtune(work, "registry", "rollback", name).stdout
    last = flowtune(work, "registry", "rollback", name)
    assert last.returncode == 1 and "no earlier version to roll back to" in last.stderr
    flowtune(work, "registry", "promote", f"{name}@2")  # leave v2 as champion for the other tests


def test_show_is_readable_and_errors_name_what_is_wrong(published) -> None:
    work, name, metrics = published
    shown = flowtune(work, "registry", "show", f"{name}:champion")
    assert shown.returncode == 0, shown.stderr
    assert f"{name} v2" in shown.stdout and f"strict entity F1 {metrics['f1']:.4f}" in shown.stdout
    assert json.loads(flowtune(work, "registry", "show", f"{name}@1", "--json").stdout)["version"] == 1
    missing = flowtune(work, "registry", "show", f"{name}@9")
    assert missing.returncode == 1 and "has no published version 9" in missing.stderr
    bad = flowtune(work, "registry", "show", "../etc")
    assert bad.returncode == 1 and "invalid model name" in bad.stderr


def one_line_error(result: subprocess.CompletedProcess, command: str) -> str:
    """The command failed as a user-fixable error should: exit 1, one line on stderr, no traceback."""
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"flowtune {command}: error: "), result.stderr
    return lines[0]


def test_unknown_models_versions_and_aliases_are_one_line_errors(published) -> None:
    work, name, _ = published
    for command, args in (("registry show", ["registry", "show", "nosuch"]),
                          ("registry pull", ["registry", "pull", "nosuch:champion"]),
                          ("predict", ["predict", "--model", "nosuch", "some text"])):
        assert "no model named 'nosuch' in the registry" in one_line_error(flowtune(work, *args), command)
    assert "has no published version 9" in one_line_error(flowtune(work, "registry", "pull", f"{name}@9"),
                                                           "registry pull")
    assert f"model {name!r} has no alias 'staging'" in one_line_error(
        flowtune(work, "predict", "--model", f"{name}:staging", "x"), "predict")


def test_storage_down_or_wrong_keys_are_one_line_errors(published, free_port) -> None:
    work, name, _ = published
    env_file = (work / ".env").read_text()
    down = work / "down"
    down.mkdir()
    (down / ".env").write_text(re.sub(r"FLOWTUNE_S3_ENDPOINT_URL=\S+", f"FLOWTUNE_S3_ENDPOINT_URL=http://127.0.0.1:"
                                      f"{free_port()}", env_file))
    wrong = work / "wrong-keys"
    wrong.mkdir()
    (wrong / ".env").write_text(re.sub(r"FLOWTUNE_S3_SECRET_ACCESS_KEY=\S+", "FLOWTUNE_S3_SECRET_ACCESS_KEY=wrong",
                                       env_file))
    for folder, problem in ((down, "is unreachable"), (wrong, "rejected the credentials")):
        for command, args in (("registry show", ["registry", "show", name]),
                              ("registry pull", ["registry", "pull", name]),
                              ("predict", ["predict", "--model", name, "some text"])):
            assert problem in one_line_error(flowtune(folder, *args), command)
    assert "wrong" not in flowtune(wrong, "registry", "show", name).stderr  # the key itself is never printed


def test_a_malformed_input_file_is_a_one_line_error(published) -> None:
    work, name, _ = published
    (work / "broken.jsonl").write_text('{"tokens": ["a"]}\n{"tokens": ["b"\n')
    message = one_line_error(flowtune(work, "predict", "--model", f"{name}:champion", "--input", "broken.jsonl"),
                             "predict")
    assert "broken.jsonl:2: not valid JSON" in message


def test_show_reads_metrics_registered_before_the_report(published) -> None:
    work, name, _ = published
    old = json.loads((ROOT / "tests/fixtures/eval_json_before_report/ner.json").read_text())
    shown = flowtune(work, "registry", "show", f"{name}-old@1")
    assert shown.returncode == 0, shown.stderr
    assert f"strict entity F1 {old['f1']:.4f}  precision {old['precision']:.4f}" in shown.stdout
    assert f"on {old['sentences']} sentences" in shown.stdout
    person = old["per_type"]["person"]
    assert any(line.split() == ["person", f"{person['precision']:.4f}", f"{person['recall']:.4f}",
                                f"{person['f1']:.4f}", str(person["support"])] for line in shown.stdout.splitlines())
    assert f"{old['f1']:.4f}" in flowtune(work, "registry", "list", f"{name}-old").stdout


def test_pull_verifies_and_writes_a_loadable_model(published) -> None:
    work, name, _ = published
    result = flowtune(work, "registry", "pull", f"{name}@1", "--dest", "pulled")
    assert result.returncode == 0 and "checksums verified" in result.stdout
    assert (work / "pulled" / "model.safetensors").is_file() and (work / "pulled" / "config.json").is_file()


def test_predict_from_the_champion_reproduces_the_recorded_scores(published) -> None:
    work, name, metrics = published
    result = flowtune(work, "predict", "--model", f"{name}:champion", "--input", "test.conll", "--format", "jsonl",
                      "--output", "pred.jsonl")
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in (work / "pred.jsonl").read_text().splitlines()]
    assert len(rows) == 12 and all(len(r["tags"]) == len(r["tokens"]) for r in rows)
    assert f"strict F1 {metrics['f1']:.4f}" in result.stderr  # the same model on the same file: the same score


def test_predict_tags_untagged_conll_from_stdin(published) -> None:
    work, name, _ = published
    command = [str(ROOT / ".venv/bin/flowtune"), "predict", "--model", f"{name}:champion", "--input", "-"]
    result = subprocess.run(command, input="john\nwent\nto\nparis\n\nhi\n", cwd=work, env=clean_env(),
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    sentences = [block.splitlines() for block in result.stdout.strip().split("\n\n")]
    assert [[line.split("\t")[0] for line in s] for s in sentences] == [["john", "went", "to", "paris"], ["hi"]]
    assert "strict F1" not in result.stderr  # no gold tags, no score
