"""Compress step: build the params' variants of the candidate (tasks/variants.py), score and time each one
beside the fp32 model, and keep those that pass.

Every model of the table is evaluated by the kind's own evaluation on the same test split (same scores,
same batch-1 latency, same throughput at `evaluate.batch_size`), in this one process and on the CPU, so
the speedups are ratios of one run on one machine. A variant passes when it loses at most
`compress.max_score_drop` of the headline score and is at least `compress.min_speedup` times faster
(latency p50; the distilled `student`, a smaller model the distill stage trained in `paths.student`, may
lose up to `compress.max_student_score_drop`); a variant that claims the fp32 model's outputs (onnx) must
also reproduce at least `compress.min_agreement` of its test predictions. The passing variants land in `paths.variants`
(replaced whole), the table in `paths.compression`; registration publishes the passing ones inside the
version (flows/orchestration/lineage.py).
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from tasks.io import empty_folder, swap_in_folder
from tasks.metrics import FP32, CompressionReport, EvalReport, VariantRow
from tasks.params import STUDENT, CompressParams, Params, VariantError
from tasks.progress import Progress
from tasks.stage import run_stage

# torch, the variant builders and the kinds are imported where they are used: with no variants asked,
# the stage writes its empty outputs in a second instead of paying seconds of imports.
if TYPE_CHECKING:
    import torch

PROBE_ROWS = 32  # test rows whose logits are compared with the fp32 model's
# CPU features that decide what int8 kernels can do (docs/BENCHMARKS.md logs them with every result).
INT8_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_tile", "amx_int8", "amx_bf16")


def compress(params: Params, kind) -> CompressionReport:
    """Build, measure and judge every variant; write the passing ones and the table."""
    import torch

    from tasks import variants
    from tasks.kinds.saved import head_class

    paths = params.paths
    model_dir, test, out = Path(paths.model), Path(paths.augmented) / "test.jsonl", Path(paths.variants)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{out.name}.", dir=out.parent) as tmp:
        scratch, built = Path(tmp), Path(tmp) / "variants"
        built.mkdir()
        # Each variant is evaluated on the test split (minutes on CPU): a line per variant done, at most every ~10 s.
        progress = Progress("compress: models", 1 + len(params.compress.variants), "models")
        baseline = measure(params, kind, model_dir, scratch / f"{FP32}.jsonl")
        probe = probe_batch(kind, model_dir, test, params.train.max_length)
        reference = logits(model_dir, probe)
        rows = [judge(FP32, baseline, baseline, None, None, params.compress)]
        progress.advance(note=f"{FP32} measured")
        exported = _export_once(model_dir, scratch, params.compress.variants)
        for name in params.compress.variants:
            source = Path(paths.student) if name == STUDENT else model_dir
            folder = variants.build(name, source, built / name, exported, auto_class=head_class(model_dir))
            report = measure(params, kind, folder, scratch / f"{name}.jsonl")
            agreement = prediction_agreement(scratch / f"{FP32}.jsonl", scratch / f"{name}.jsonl")
            difference = float((logits(folder, probe) - reference).abs().max()) if probe else None
            row = judge(name, report, baseline, agreement, difference, params.compress)
            if not row.passed:
                shutil.rmtree(folder)
            rows.append(row)
            progress.advance(note=f"{name} {'passed' if row.passed else 'refused'}")
        progress.finish()
        swap_in_folder(built, out)
    report = CompressionReport(score_name=baseline.headline.name, unit=baseline.unit,
                               batch_size=params.evaluate.batch_size, threads=torch.get_num_threads(),
                               cpu_flags=cpu_flags(), rows=rows)
    report.write(Path(paths.compression))
    return report


def nothing_to_compress(params: Params) -> CompressionReport:
    """`compress.variants: []`: an empty variants folder and a table without rows. The fp32 model is not
    evaluated again: with nothing to compare it with, its row would only repeat the evaluate stage. The
    kind's headline and unit are read from its params module, without importing the kind (torch)."""
    from tasks.kinds import headline_of

    out = Path(params.paths.variants)
    out.mkdir(parents=True, exist_ok=True)
    empty_folder(out)
    score_name, unit = headline_of(params.task.kind)
    report = CompressionReport(score_name=score_name, unit=unit, batch_size=params.evaluate.batch_size,
                               threads=0, cpu_flags=cpu_flags(), rows=[])
    report.write(Path(params.paths.compression))
    return report


def measure(params: Params, kind, model_dir: Path, predictions: Path) -> EvalReport:
    """The kind's evaluation of one model folder on the CPU."""
    report, _ = kind.evaluate(params.evaluate, model_dir, Path(params.paths.augmented) / "test.jsonl", predictions,
                              params.train.max_length, device="cpu")
    return report


def judge(name: str, report: EvalReport, baseline: EvalReport, agreement: float | None,
          logit_difference: float | None, rules: CompressParams) -> VariantRow:
    """The variant's row of the table: its numbers against the fp32 ones, and whether it may be published."""
    from tasks.variants import EXACT

    drop = baseline.headline.value - report.headline.value
    speedup = _ratio(_p50(baseline), _p50(report))
    reasons = []
    if name != FP32:
        key, limit = (("max_student_score_drop", rules.max_student_score_drop) if name == STUDENT
                      else ("max_score_drop", rules.max_score_drop))
        if drop > limit:
            reasons.append(f"{report.headline.name} drops {drop:.4f} > compress.{key} {limit}")
        if speedup is None or speedup < rules.min_speedup:
            reasons.append(f"speedup {'unmeasured' if speedup is None else f'{speedup:.2f}x'} < compress.min_speedup "
                           f"{rules.min_speedup}x")
        if name in EXACT and (agreement is None or agreement < rules.min_agreement):
            reasons.append(f"reproduces {_share(agreement)} of the fp32 predictions < compress.min_agreement "
                           f"{rules.min_agreement} (max |logit difference| {logit_difference})")
    latency = report.latency
    return VariantRow(variant=name, score=report.headline.value, score_drop=round(drop, 6),
                      p50_ms=latency.p50_ms if latency else None, p95_ms=latency.p95_ms if latency else None,
                      speedup=None if speedup is None else round(speedup, 3),
                      rows_per_second=_round(latency.batch_sentences_per_second if latency else None),
                      size_mb=report.model_size_mb or 0.0, agreement=agreement,
                      max_logit_diff=None if logit_difference is None else round(logit_difference, 6),
                      passed=not reasons, reasons=reasons)


def prediction_agreement(reference: Path, other: Path) -> float | None:
    """Share of the reference's predictions (each tag of a sentence, or each text's label) that `other`
    repeats; both are the evaluation's predictions JSONL of the same test split."""
    same = total = 0
    for left, right in zip(_predicted(reference), _predicted(other), strict=True):
        left, right = (left, right) if isinstance(left, list) else ([left], [right])
        same += sum(a == b for a, b in zip(left, right, strict=True))
        total += len(left)
    return round(same / total, 6) if total else None


def probe_batch(kind, model_dir: Path, test: Path, max_length: int) -> dict[str, torch.Tensor] | None:
    """A padded batch of the first test rows, as the tokenizer encodes their words (for logit parity)."""
    from transformers import AutoTokenizer

    texts = [" ".join(kind.as_sentence(row).tokens) for row in kind.read(test)[:PROBE_ROWS]]
    if not texts:
        return None
    encoded = AutoTokenizer.from_pretrained(model_dir)(texts, padding=True, truncation=True, max_length=max_length,
                                                       return_tensors="pt")
    return {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"]}


def logits(model_dir: Path, batch: dict[str, torch.Tensor] | None) -> torch.Tensor:
    import torch

    from tasks.kinds.saved import load_saved_model

    if batch is None:
        return torch.empty(0)
    with torch.inference_mode():
        return load_saved_model(model_dir, device="cpu")(**batch).logits.float()


def cpu_flags() -> list[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    return [flag for flag in INT8_FLAGS if flag in flags]


def _export_once(model_dir: Path, scratch: Path, wanted: Sequence[str]) -> Path | None:
    if not any(name.startswith("onnx") for name in wanted):
        return None
    from tasks import variants
    from tasks.kinds.saved import load_saved_model

    path = scratch / "export.onnx"
    variants.export_onnx(load_saved_model(model_dir, device="cpu"), path)
    return path


def _predicted(path: Path) -> list:
    return [json.loads(line)["predicted"] for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _p50(report: EvalReport) -> float | None:
    return report.latency.p50_ms if report.latency else None


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    return numerator / denominator if numerator and denominator else None


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


def _share(value: float | None) -> str:
    return "an unmeasured share" if value is None else f"{value:.4f}"


def step(params: Params, args) -> str:
    if not params.compress.variants:
        nothing_to_compress(params)
        return "no variants asked (compress.variants: [])"
    from tasks.kinds import model_kind_for

    report = compress(params, model_kind_for(params))
    if not report.rows:
        return "no variants asked (compress.variants: [])"
    fp32 = report.rows[0]
    judged = [f"{r.variant} {r.score:.4f} {r.speedup or 0:.2f}x {'passed' if r.passed else 'failed'}"
              for r in report.rows[1:]]
    return f"fp32 {report.score_name} {fp32.score:.4f} p50 {fp32.p50_ms} ms; " + ("; ".join(judged) or "no variants")


def main(argv: list[str] | None = None) -> None:
    run_stage("compress", step, argv, user_errors=(VariantError,))


if __name__ == "__main__":
    main()
