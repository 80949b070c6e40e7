"""Evaluate step: score the trained model on the test split with the kind's evaluation, write eval.json
(a `tasks.metrics.EvalReport` for every kind), the predictions and the confusion plot's rows, and the drift
monitor's reference profile of the model (tasks/reference.py).

NER (tasks/kinds/ner/evaluate.py): strict IOB2 entity F1 with seqeval, per entity type, behaviour, slices;
text classification (tasks/kinds/textclass/evaluate.py): macro-F1, per class, calibration. Both measure
latency on this machine and the model's size on disk (tasks/metrics.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from tasks.kinds import model_kind_for
from tasks.metrics import EvalReport, Incomparable, LabelSetMismatch, write_confusion_plot
from tasks.params import EvaluateParams, Params, ParamsError
from tasks.reference import write_reference
from tasks.stage import run_stage

if TYPE_CHECKING:
    from tasks.kinds.base import ModelKind


def run(params: EvaluateParams, model_dir: Path, test_path: Path, metrics_path: Path, predictions_path: Path,
        max_length: int, confusion_path: Path | None = None, *, kind: ModelKind) -> EvalReport:
    """Predict the test split with the saved model, write the kind's report (eval.json), its predictions JSONL
    and (with `confusion_path`) the gold/predicted pairs of the confusion plot."""
    report, pairs = kind.evaluate(params, Path(model_dir), Path(test_path), Path(predictions_path), max_length)
    if confusion_path:
        write_confusion_plot(confusion_path, pairs)
    report.write(metrics_path)
    return report


def step(params: Params, args) -> str:
    if args.model_dir:
        if args.out is None:
            raise ParamsError("--model-dir needs --out FILE (where to write its metrics)")
        return score_other_model(params, args.model_dir, args.out)
    paths = params.paths
    report = run(params.evaluate, Path(paths.model), Path(paths.augmented) / "test.jsonl",
                 Path(paths.eval_metrics), Path(paths.predictions), params.train.max_length, Path(paths.confusion),
                 kind=model_kind_for(params))
    made = write_reference(params, Path(paths.model), Path(paths.drift_reference))
    return f"{summary(report)}; drift reference {'made' if made else 'not made (see the warning)'}"


def summary(report: EvalReport) -> str:
    """One line: the headline score and how many rows it covers."""
    return f"{report.headline.name} {report.headline.value:.4f} on {report.count} {report.units}"


def score_other_model(params: Params, model_dir: Path, out: Path) -> str:
    """Score a model that is not this pipeline's output (the registry's champion) on this run's test
    split with this checkout's code, so the gate compares candidate and champion by the same code.

    `out` gets the report, or `{"incomparable": reason}` (`tasks.metrics.Incomparable`) when the model's
    labels differ from the data's; predictions go beside it. Any other error fails the command.
    """
    try:
        report = run(params.evaluate, model_dir, Path(params.paths.augmented) / "test.jsonl", out,
                     out.with_name(out.stem + "-predictions.jsonl"), params.train.max_length,
                     kind=model_kind_for(params))
    except LabelSetMismatch as exc:
        Incomparable(incomparable=str(exc)).write(out)
        return f"incomparable: {exc}"
    return f"{model_dir}: {summary(report)}"


def add_arguments(parser) -> None:
    parser.add_argument("--model-dir", type=Path, help="score this model folder instead of the pipeline's "
                        "(written to --out, not to the pipeline's outputs)")
    parser.add_argument("--out", type=Path, help="with --model-dir: the metrics file to write")


def main(argv: list[str] | None = None) -> None:
    run_stage("evaluate", step, argv, add_arguments=add_arguments)


if __name__ == "__main__":
    main()
