"""`flowtune predict`: tag sentences (NER) or classify texts with a registered model or a model folder.

The input readers (CoNLL / JSONL sentences, CSV / JSONL texts, or plain lines) and the prediction
writers live here; a registry reference is resolved and downloaded through flows/registry_cli.py.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
from pathlib import Path

from flows.registry_cli import model_folder, one_line_errors

# Windows for a model saved before flowtune recorded its training `max_length` (tasks/saving.py save_best).
DEFAULT_MAX_LENGTH = 128


def read_sentences(args) -> tuple[list, bool]:
    """Records to tag and whether they carry gold tags: --input FILE (CoNLL, or JSONL by its .jsonl
    extension; '-' = CoNLL on stdin), or whitespace-tokenized text lines."""
    from tasks.kinds.ner.records import NerRecord

    if not args.input:
        lines = args.text or sys.stdin.read().splitlines()
        words = [line.split() for line in lines if line.strip()]
        return [NerRecord(f"line:{i + 1}", tuple(w), ("O",) * len(w)) for i, w in enumerate(words)], False
    if args.input != "-":
        return read_input_file(Path(args.input))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "stdin.conll"
        path.write_text(sys.stdin.read(), encoding="utf-8")
        return read_input_file(path)


def read_input_file(path: Path) -> tuple[list, bool]:
    """A tagged file goes through the validating readers; a tokens-only one (CoNLL with one column,
    JSONL rows without `tags`) is read as sentences to tag."""
    from tasks.io import InputFormatError, nonblank_lines, read_jsonl_objects
    from tasks.kinds.ner.records import read_records, read_untagged

    if not path.is_file():
        raise InputFormatError(f"{path}: input file not found")
    if path.suffix == ".jsonl":
        rows = read_jsonl_objects(path, '{"tokens": ["..."]}')  # errors name the line
        if rows and "tags" in rows[0][1]:
            return read_records(path, "jsonl"), True
        return read_untagged(path, "jsonl"), False
    first = next((line for _, line in nonblank_lines(path) if not line.startswith("-DOCSTART-")), "")
    if len(first.split()) > 1:
        return read_records(path, "conll"), True
    return read_untagged(path, "conll"), False


def write_predictions(records, predicted, fmt: str, out) -> None:
    for record, tags in zip(records, predicted, strict=True):
        if fmt == "jsonl":
            out.write(json.dumps({"id": record.id, "tokens": list(record.tokens), "tags": tags}, ensure_ascii=False)
                      + "\n")
        else:
            out.write("".join(f"{token}\t{tag}\n" for token, tag in zip(record.tokens, tags, strict=True)) + "\n")


def cmd_predict(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory() as tmp, one_line_errors("predict"):
        model_dir = model_folder(args.model, Path(tmp) / "model", args.variant)
        if args.max_length is None:
            args.max_length = trained_max_length(model_dir)
        if is_sequence_classifier(model_dir):
            return predict_classes(args, model_dir)
        return predict_entities(args, model_dir)


def trained_max_length(model_dir: Path) -> int:
    """The window length the model was trained with (config.json's `flowtune` block), else the old default."""
    from tasks.saving import FLOWTUNE_CONFIG_KEY

    config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    return int(config.get(FLOWTUNE_CONFIG_KEY, {}).get("max_length", DEFAULT_MAX_LENGTH))


def is_sequence_classifier(model_dir: Path) -> bool:
    """What the saved model is, from its config: a text classifier or (otherwise) a tagger."""
    from transformers import AutoConfig

    architectures = AutoConfig.from_pretrained(model_dir).architectures or []
    return any(name.endswith("ForSequenceClassification") for name in architectures)


def output_stream(args):
    return open(args.output, "w", encoding="utf-8") if args.output else contextlib.nullcontext(sys.stdout)


def predict_entities(args: argparse.Namespace, model_dir: Path) -> int:
    from transformers import AutoModelForTokenClassification, AutoTokenizer

    from tasks.kinds.ner.modeling import predict_tags
    from tasks.variants import load_model

    records, tagged = read_sentences(args)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = load_model(model_dir, AutoModelForTokenClassification)
    predicted = predict_tags(model, tokenizer, [r.tokens for r in records], args.batch_size, args.max_length)
    with output_stream(args) as out:
        write_predictions(records, predicted, args.format or "conll", out)
    if tagged:  # the input had gold tags: say how the model did on them
        from tasks.kinds.ner.evaluate import score

        scores = score([r.tags for r in records], predicted)
        print(f"gold tags in the input: strict F1 {scores['f1']:.4f}, precision {scores['precision']:.4f}, "
              f"recall {scores['recall']:.4f} on {scores['sentences']} sentences", file=sys.stderr)
    return 0


def read_texts(args, label_separator: str | None = None) -> tuple[list, bool]:
    """Texts to classify and whether they carry gold labels: --input FILE (.csv or .jsonl with a `text`
    column, `label` optional: with a `label_separator` (a multi-label model), labels joined by it or a JSON
    list), or one text per argument / stdin line."""
    from tasks.kinds.textclass.data import TextExample, read_text_examples

    if not args.input:
        lines = args.text or sys.stdin.read().splitlines()
        return [TextExample(f"line:{i + 1}", line.strip(), "") for i, line in enumerate(lines) if line.strip()], False
    path = Path(args.input)
    labelled = has_column(path, "label")
    return read_text_examples(path, "text", "label" if labelled else None, label_separator), labelled


def has_column(path: Path, column: str) -> bool:
    """Whether the first row of a .csv/.jsonl input has `column` (a missing or malformed file is the
    reader's to report)."""
    import csv

    from tasks.io import InputFormatError, nonblank_lines

    if not path.is_file():
        return False
    try:
        first = next((line for _, line in nonblank_lines(path)), None)
    except InputFormatError:
        return False
    if first is None:
        return False
    if path.suffix.lower() == ".csv":
        header = next(csv.reader([first]), [])
        return column in [name.strip() for name in header]
    try:
        return column in json.loads(first)
    except (json.JSONDecodeError, TypeError, RecursionError):
        return False


def predict_classes(args: argparse.Namespace, model_dir: Path) -> int:
    from tasks.io import InputFormatError
    from tasks.kinds.textclass.modeling import SavedClassifier

    classifier = SavedClassifier.load(model_dir)
    examples, labelled = read_texts(args, classifier.label_separator)
    labels = classifier.labels
    unknown = sorted({label for e in examples for label in e.labels} - set(labels)) if labelled else []
    if unknown:
        raise InputFormatError(f"{args.input}: labels {unknown} are not classes of the model ({labels})")
    probabilities, predicted = classifier.classify(examples, args.batch_size, args.max_length)
    with output_stream(args) as out:
        for example, row, chosen in zip(examples, probabilities, predicted, strict=True):
            if args.format == "jsonl":
                scores = {label: round(float(p), 6) for label, p in zip(labels, row, strict=True)}
                out.write(json.dumps({"id": example.id, "text": example.text, "label": chosen,
                                      "probabilities": scores}, ensure_ascii=False) + "\n")
            else:  # the label (multi-label: labels joined by |) and its probability (each label's)
                shown = "|".join(f"{float(row[labels.index(c)]):.4f}" for c in chosen.split("|") if c)
                out.write(f"{chosen or '(none)'}\t{shown or '-'}\t{example.text}\n")
    if labelled:
        result = classifier.metrics([e.label for e in examples], probabilities)
        print(f"gold labels in the input: macro-F1 {result['f1']:.4f}, accuracy {result['accuracy']:.4f} on "
              f"{result['examples']} texts", file=sys.stderr)
    return 0


def add_predict_parser(sub) -> None:
    pred = sub.add_parser("predict", help="tag sentences (NER) or classify texts with a registered model or a "
                                          "model folder")
    pred.add_argument("--model", required=True, help="a model folder, or NAME / NAME@VERSION / NAME:ALIAS")
    pred.add_argument("--variant", help="a compressed variant of the model (int8, onnx, onnx-int8, student: those the "
                                        "version holds, see `registry show`) instead of its fp32 weights")
    pred.add_argument("--input", help="NER: a CoNLL or .jsonl file of tokenized sentences ('-' = CoNLL on stdin); "
                                      "classifier: a .csv or .jsonl file with a `text` column (`label` optional)")
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
