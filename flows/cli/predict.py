"""`flowtune predict`: tag sentences (NER) or classify texts with a registered model or a model folder.

What differs per kind (the input readers, the prediction, the writers, the score on gold labels) is the saved
model's predictor (`tasks.kinds.saved.predictor_for`: the kind its config records); a registry reference is
resolved and downloaded through flows/cli/registry.py.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
from pathlib import Path

from flows.cli.registry import one_line_errors
from tasks.kinds.saved import DEFAULT_MAX_LENGTH


def cmd_predict(args: argparse.Namespace) -> int:
    from flows.ops.storage import model_folder  # here: botocore loads only for a command that needs storage
    from tasks.kinds.saved import predictor_for

    with tempfile.TemporaryDirectory() as tmp, one_line_errors("predict"):
        model_dir = model_folder(args.model, Path(tmp) / "model", args.variant)
        return predict(args, predictor_for(model_dir, args.batch_size, args.max_length), Path(tmp))


def predict(args: argparse.Namespace, predictor, scratch: Path) -> int:
    """Read the input, answer, write the answers; when the input carried gold labels, say on stderr how the
    model did on them."""
    items, ids, gold = read_items(args, predictor, scratch)
    answers = predictor.predict(items, ids)
    with output_stream(args) as out:
        predictor.write(answers, args.format, out)
    if gold is not None:
        print(predictor.score(gold, answers), file=sys.stderr)
    return 0


def read_items(args, predictor, scratch: Path) -> tuple[list, list, list | None]:
    """(items, ids, gold) of --input FILE ('-' = that file on stdin, in the kind's format), else of the text
    arguments or stdin lines (no gold)."""
    if not args.input:
        lines = args.text or sys.stdin.read().splitlines()
        return (*predictor.read_lines(lines), None)
    if args.input != "-":
        return predictor.read_input(Path(args.input))
    path = scratch / f"stdin{predictor.stdin_suffix}"
    path.write_text(sys.stdin.read(), encoding="utf-8")
    return predictor.read_input(path)


def output_stream(args):
    return open(args.output, "w", encoding="utf-8") if args.output else contextlib.nullcontext(sys.stdout)


def add_predict_parser(sub) -> None:
    pred = sub.add_parser("predict", help="tag sentences (NER) or classify texts with a registered model or a "
                                          "model folder")
    pred.add_argument("--model", required=True, help="a model folder, or NAME / NAME@VERSION / NAME:ALIAS")
    pred.add_argument("--variant", help="a compressed variant of the model (int8, onnx, onnx-int8, student: those the "
                                        "version holds, see `registry show`) instead of its fp32 weights")
    pred.add_argument("--input", help="NER: a CoNLL or .jsonl file of tokenized sentences ('-' = CoNLL on stdin); "
                                      "classifier: a .csv or .jsonl file with a `text` column (`label` optional; "
                                      "'-' = .jsonl on stdin)")
    pred.add_argument("--format", choices=["conll", "jsonl"],
                      help="output format: conll (NER default; a classifier writes label<TAB>probability<TAB>text) "
                           "or jsonl")
    pred.add_argument("--output", help="write here instead of stdout")
    pred.add_argument("--batch-size", type=int, default=32, help="sentences (texts) per forward pass")
    pred.add_argument("--max-length", type=int, help="sub-word pieces per window (default: what the model was "
                      f"trained with, as its config.json records; {DEFAULT_MAX_LENGTH} for older models)")
    pred.add_argument("text", nargs="*", help="whitespace-tokenized sentences, or texts for a classifier "
                                              "(default without --input: stdin lines)")
    pred.set_defaults(func=cmd_predict)
