"""Compressed variants (tasks/variants.py) and the compress stage (tasks/compress.py), on a tiny trained tagger
and a tiny classifier: each variant builds, loads the way prediction code loads models, and agrees with the
fp32 model as it should; the stage's table and verdicts follow its thresholds."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tasks import compress, variants
from tasks.io import write_jsonl
from tasks.kinds.ner.records import NerRecord
from tasks.kinds.saved import head_class, load_saved_model
from tasks.metrics import CompressionReport
from tasks.params import load_params
from tests.helpers import ROOT, evaluate_params, kind, train_ner, train_params

TYPES = ["person", "geo-loc"]
SENTENCES = [
    (["john", "lives", "in", "paris"], ["B-person", "O", "O", "B-geo-loc"]),
    (["mary", "smith", "visited", "new", "york"], ["B-person", "I-person", "O", "B-geo-loc", "I-geo-loc"]),
    (["we", "love", "london"], ["O", "O", "B-geo-loc"]),
    (["bob", "says", "hi"], ["B-person", "O", "O"]),
    (["alice", "flew", "to", "berlin", "today"], ["B-person", "O", "O", "B-geo-loc", "O"]),
    (["ask", "peter", "parker"], ["O", "B-person", "I-person"]),
]


@pytest.fixture(scope="module")
def trained(tiny_base: Path, tmp_path_factory) -> Path:
    """A tiny tagger trained for two epochs and its data folder (train/dev/test.jsonl)."""
    root = tmp_path_factory.mktemp("compress")
    data = root / "augmented"
    for split, rows in (("train", SENTENCES * 3), ("dev", SENTENCES[:3]), ("test", SENTENCES)):
        write_jsonl(data / f"{split}.jsonl", [NerRecord(f"{split}:{i}", tuple(t), tuple(g))
                                             for i, (t, g) in enumerate(rows)])
    train_ner(train_params(tiny_base), TYPES, data, root / "model", root / "train.json", root / "curve.csv")
    return root


@pytest.fixture(scope="module")
def built(trained: Path) -> dict[str, Path]:
    """Every variant of the tiny tagger (the two onnx ones from one export, as the stage builds them)."""
    exported = trained / "export.onnx"
    variants.export_onnx(load_saved_model(trained / "model", device="cpu"), exported)
    head = head_class(trained / "model")
    return {name: variants.build(name, trained / "model", trained / "built" / name, exported, auto_class=head)
            for name in variants.FROM_CANDIDATE}


def padded_batch(model_dir: Path) -> dict[str, torch.Tensor]:
    from transformers import AutoTokenizer

    encoded = AutoTokenizer.from_pretrained(model_dir)(["john lives in paris today", "hi"], padding=True,
                                                       return_tensors="pt")
    return {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"]}


@pytest.mark.slow
@pytest.mark.parametrize("name", variants.FROM_CANDIDATE)
def test_each_variant_builds_and_loads_like_a_model_folder(trained: Path, built: dict[str, Path], name: str) -> None:
    folder = built[name]

    assert variants.variant_of(folder) == name and variants.variant_of(trained / "model") is None
    assert (folder / "config.json").is_file() and (folder / "tokenizer.json").is_file()
    assert not list(folder.glob("*.safetensors"))  # the variant's own weights only
    batch = padded_batch(folder)
    with torch.inference_mode():
        reference = load_saved_model(trained / "model", device="cpu")(**batch).logits
        logits = load_saved_model(folder)(**batch).logits
    assert logits.shape == reference.shape
    # The fp32 export reproduces the model on a padded batch (the TorchScript exporter did not: 0.3 off);
    # the int8 ones stay close.
    tolerance = 1e-4 if name in variants.EXACT else 0.5
    assert float((logits - reference).abs().max()) < tolerance


@pytest.mark.slow
def test_the_tagger_predicts_with_a_variant_as_with_the_model(trained: Path, built: dict[str, Path]) -> None:
    from transformers import AutoTokenizer

    from tasks.kinds.ner.modeling import predict_tags

    folder = built["onnx"]
    sentences = [tokens for tokens, _ in SENTENCES]
    tokenizer = AutoTokenizer.from_pretrained(folder)
    expected = predict_tags(load_saved_model(trained / "model", device="cpu"), tokenizer, sentences, 4, 16)
    assert predict_tags(load_saved_model(folder), tokenizer, sentences, 4, 16) == expected


@pytest.mark.slow
def test_an_unknown_variant_is_refused_by_name(trained: Path, tmp_path: Path) -> None:
    with pytest.raises(variants.VariantError, match="unknown variant 'fp16'"):
        variants.build("fp16", trained / "model", tmp_path / "x", auto_class=head_class(trained / "model"))
    folder = variants.build("int8", trained / "model", tmp_path / "int8", auto_class=head_class(trained / "model"))
    (folder / variants.MARKER).write_text(json.dumps({"variant": "fp8"}))
    with pytest.raises(variants.VariantError, match="variant.json: unknown variant 'fp8'"):
        load_saved_model(folder)


def stage_params(root: Path, **rules):
    params = load_params(ROOT / "params.yaml")
    paths = params.paths.model_copy(update={"model": str(root / "model"), "augmented": str(root / "augmented"),
                                            "variants": str(root / "out" / "variants"),
                                            "compression": str(root / "out" / "compression.json")})
    return params.model_copy(update={
        "paths": paths, "evaluate": evaluate_params(latency_sentences=5),
        "train": params.train.model_copy(update={"max_length": 16}),
        "compress": params.compress.model_copy(update=rules)})


@pytest.mark.slow
def test_the_stage_keeps_the_variants_that_pass_and_tables_them_all(trained: Path) -> None:
    params = stage_params(trained, variants=["int8", "onnx"], min_speedup=0.01, max_score_drop=1.0)

    report = compress.compress(params, kind())

    assert report == CompressionReport.read(Path(params.paths.compression))
    assert [row.variant for row in report.rows] == ["fp32", "int8", "onnx"]
    fp32, int8, onnx = report.rows
    assert fp32.score_drop == 0 and fp32.speedup == 1.0 and fp32.agreement is None
    assert onnx.agreement == 1.0 and onnx.max_logit_diff < 1e-4 and onnx.passed
    assert all(row.p50_ms and row.size_mb > 0 and row.rows_per_second for row in report.rows)
    assert report.published == ["int8", "onnx"]
    assert sorted(p.name for p in Path(params.paths.variants).iterdir()) == ["int8", "onnx"]
    assert report.score_name == "strict entity F1" and report.threads == torch.get_num_threads()
    assert "| onnx |" in report.as_markdown()


@pytest.mark.slow
def test_a_variant_that_misses_a_threshold_is_not_kept_and_says_why(trained: Path) -> None:
    params = stage_params(trained, variants=["int8"], min_speedup=1000.0, max_score_drop=1.0)

    report = compress.compress(params, kind())

    assert report.published == [] and not report.rows[1].passed
    assert "< compress.min_speedup 1000.0x" in report.rows[1].reasons[0]
    assert list(Path(params.paths.variants).iterdir()) == []  # nothing publishable left behind
    assert not list(Path(params.paths.variants).parent.glob(".variants.*"))  # no scratch folder either


@pytest.mark.parametrize(("params_file", "headline"), [("params.yaml", ("strict entity F1", "sentence")),
                                                        ("params-sentiment.yaml", ("macro-F1", "text"))])
def test_no_variants_asked_empties_the_folder_without_evaluating_or_importing_torch(
        tmp_path: Path, params_file: str, headline: tuple[str, str]) -> None:
    """`compress.variants: []`: an empty folder and a table without rows, in about a second (no torch, no kind,
    no second evaluation of the candidate, which is not even there)."""
    import yaml

    raw = yaml.safe_load((ROOT / params_file).read_text())
    raw["compress"]["variants"] = []
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    params = load_params(tmp_path / "params.yaml")
    stale = tmp_path / params.paths.variants / "int8"  # left by an earlier run that built variants
    stale.mkdir(parents=True)
    (stale / "model.safetensors").write_bytes(b"old")
    code = ("import sys; from tasks import compress; compress.main([]); "
            "print(sorted(m for m in ('torch', 'transformers', 'tasks.kinds.ner.kind') if m in sys.modules))")
    ran = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})

    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.strip().splitlines() == ["compress: no variants asked (compress.variants: [])", "[]"]
    report = CompressionReport.read(tmp_path / params.paths.compression)
    assert report.rows == [] and report.published == [] and (report.score_name, report.unit) == headline
    assert list((tmp_path / params.paths.variants).iterdir()) == []


def test_a_variant_that_breaks_the_fp32_predictions_fails_the_parity_rule() -> None:
    from tasks.metrics import EvalReport, Headline, Latency

    def report(score: float, p50: float) -> EvalReport:
        return EvalReport(task="t", title="t", predicts="t", unit="text", count=10, group="class", groups={},
                          headline=Headline(name="F1", value=score, precision=score, recall=score),
                          latency=Latency(p50_ms=p50))

    rules = load_params(ROOT / "params.yaml").compress
    row = compress.judge("onnx", report(0.80, 5.0), report(0.80, 10.0), 0.98, 1.7, rules)
    assert not row.passed and row.speedup == 2.0
    assert row.reasons == ["reproduces 0.9800 of the fp32 predictions < compress.min_agreement 0.999 "
                           "(max |logit difference| 1.7)"]
    # The same numbers pass for a quantized variant, which is judged by its score, not by exactness ...
    assert compress.judge("onnx-int8", report(0.80, 5.0), report(0.80, 10.0), 0.98, 1.7, rules).passed
    # ... unless the score drops too much.
    dropped = compress.judge("int8", report(0.78, 5.0), report(0.80, 10.0), 0.98, 1.7, rules)
    assert dropped.reasons == ["F1 drops 0.0200 > compress.max_score_drop 0.01"]


@pytest.mark.slow
def test_int8_keeps_the_down_projections_in_fp32(built: dict[str, Path]) -> None:
    """The FFN output layers and the classifier read GELU outliers: int8 there cost 3-4.5 F1 points."""
    import onnx

    layers = json.loads((built["int8"] / variants.MARKER).read_text())["quantized_layers"]
    assert "bert.encoder.layer.0.intermediate.dense" in layers and "bert.encoder.layer.0.attention.self.query" in layers
    assert "bert.encoder.layer.0.output.dense" not in layers and "classifier" not in layers
    graph = onnx.load(str(built["onnx-int8"] / variants.ONNX_FILE)).graph
    kinds = [node.op_type for node in graph.node]
    # 2 layers x (q, k, v, attention output, FFN intermediate) int8; 2 FFN outputs + the classifier stay fp32
    assert kinds.count("MatMulInteger") == 10 and kinds.count("MatMul") >= 3


@pytest.mark.slow
def test_every_variant_of_a_text_classifier_builds_and_answers_like_it(tiny_base: Path, tmp_path: Path) -> None:
    """The sequence-classification head exports too (its int8 quantization once failed on the exporter's
    recorded shapes), and each variant's class probabilities follow the fp32 model's."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model_dir = tmp_path / "classifier"
    AutoModelForSequenceClassification.from_pretrained(tiny_base, num_labels=3).save_pretrained(model_dir)
    AutoTokenizer.from_pretrained(tiny_base).save_pretrained(model_dir)
    batch = padded_batch(model_dir)
    with torch.inference_mode():
        reference = load_saved_model(model_dir, device="cpu")(**batch).logits
        for name in variants.FROM_CANDIDATE:
            folder = variants.build(name, model_dir, tmp_path / name, auto_class=head_class(model_dir))
            logits = load_saved_model(folder)(**batch).logits
            assert logits.shape == reference.shape == (2, 3)
            assert float((logits - reference).abs().max()) < (1e-4 if name in variants.EXACT else 0.5), name
