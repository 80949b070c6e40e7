"""`flowtune registry ...` and `flowtune predict`: the registry and its models from the command line."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
from pathlib import Path

from tasks.settings import Settings


def open_registry():
    from tasks.registry import Registry
    from tasks.settings import s3_client

    settings = Settings()
    return Registry(s3_client(settings), settings.registry_bucket, settings.registry_prefix)


def print_table(header: list[str], rows: list[list]) -> None:
    """A plain aligned text table (readable in a terminal and in logs)."""
    cells = [header] + [[("" if c is None else str(c)) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    for index, row in enumerate(cells):
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
        if index == 0:
            print("  ".join("-" * w for w in widths))


def version_row(registry, name: str, version: int, aliases: dict[str, int]) -> list:
    metadata = registry.manifest(name, version)["metadata"]
    metrics, training = metadata.get("metrics", {}), metadata.get("training", {})
    f1 = metrics.get("f1")
    return [f"v{version}", None if f1 is None else f"{f1:.4f}", ",".join(a for a, v in aliases.items() if v == version),
            (metadata.get("registered_at") or "")[:19], training.get("device"),
            (metadata.get("git") or {}).get("commit", "")[:10] if metadata.get("git") else None]


def cmd_list(registry, args) -> None:
    if not args.name:
        names = registry.models()
        rows = [[name, len(registry.versions(name)), registry.get_alias(name, "champion")] for name in names]
        print_table(["model", "versions", "champion"], rows)
        return
    aliases = registry.aliases(args.name)
    rows = [version_row(registry, args.name, v, aliases) for v in registry.versions(args.name)]
    print_table(["version", "F1 (headline)", "aliases", "registered (UTC)", "trained on", "commit"], rows)


def cmd_show(registry, args) -> None:
    name, version = registry.resolve(args.ref)
    manifest = registry.manifest(name, version)
    if args.json:
        print(json.dumps(manifest, indent=2))
        return
    metadata = manifest["metadata"]
    metrics = metadata.get("metrics", {})
    aliases = [a for a, v in registry.aliases(name).items() if v == version]
    size = sum(f["size"] for f in manifest["files"].values())
    print(f"{name} v{version}   aliases: {', '.join(aliases) or '-'}   "
          f"{len(manifest['files'])} files, {size / 1e6:.1f} MB")
    print(f"registered {metadata.get('registered_at')}   flow run {(metadata.get('flow_run') or {}).get('url')}")
    print(f"git {(metadata.get('git') or {}).get('commit')}   training {metadata.get('training', {}).get('device')}, "
          f"{metadata.get('training', {}).get('train_seconds')} s")
    if metrics:
        from flows.gate import headline, is_classifier, per_group

        print(f"\n{headline(metrics)} {metrics['f1']:.4f}  precision {metrics['precision']:.4f}  "
              f"recall {metrics['recall']:.4f}")
        rows = [[t, f"{m['precision']:.4f}", f"{m['recall']:.4f}", f"{m['f1']:.4f}", m["support"]]
                for t, m in sorted(per_group(metrics).items())]
        print_table(["class" if is_classifier(metrics) else "entity", "precision", "recall", "F1", "support"], rows)
    gate = metadata.get("gate")
    if gate:
        print(f"\ngate: {'promote' if gate['promote'] else 'reject'}")
        for reason in gate["reasons"]:
            print(f"  - {reason}")


def cmd_promote(registry, args) -> None:
    name, version = registry.resolve(args.ref)
    before = registry.get_alias(name, args.alias)
    registry.set_alias(name, args.alias, version, expected=before)  # fails if someone moved it meanwhile
    print(f"{name}: alias {args.alias} -> v{version} (was {'v' + str(before) if before else 'unset'})")


def cmd_rollback(registry, args) -> None:
    from tasks.registry import split_ref

    name, _ = split_ref(args.name)
    before = registry.get_alias(name, args.alias)
    version = registry.rollback(name, args.alias, expected=before)
    print(f"{name}: alias {args.alias} rolled back v{before} -> v{version}")


def cmd_pull(registry, args) -> None:
    name, version = registry.resolve(args.ref)
    registry.download(name, version, Path(args.dest))
    print(f"{name} v{version} -> {args.dest} (checksums verified)")


ACTIONS = {"list": cmd_list, "show": cmd_show, "promote": cmd_promote, "rollback": cmd_rollback,
           "pull": cmd_pull, "fetch": cmd_pull}


def cmd_registry(args: argparse.Namespace) -> int:
    from tasks.registry import RegistryError

    try:
        ACTIONS[args.action](open_registry(), args)
    except RegistryError as exc:
        sys.exit(f"flowtune registry {args.action}: error: {exc}")
    return 0


def add_registry_parser(sub) -> None:
    reg = sub.add_parser("registry", help="list, show, promote, roll back or pull registered models")
    actions = reg.add_subparsers(dest="action", required=True)
    listing = actions.add_parser("list", help="models, or the versions of one model")
    listing.add_argument("name", nargs="?")
    show = actions.add_parser("show", help="one version: metrics, lineage, gate decision")
    show.add_argument("ref", help="NAME, NAME@VERSION or NAME:ALIAS (default alias: champion)")
    show.add_argument("--json", action="store_true", help="the raw manifest")
    promote = actions.add_parser("promote", help="point an alias (default champion) at a version")
    promote.add_argument("ref", help="NAME@VERSION")
    promote.add_argument("--alias", default="champion")
    rollback = actions.add_parser("rollback", help="point an alias back at its previous version")
    rollback.add_argument("name")
    rollback.add_argument("--alias", default="champion")
    for action in ("pull", "fetch"):
        pull = actions.add_parser(action, help="download a version (checksums verified)" if action == "pull"
                                  else "same as pull")
        pull.add_argument("ref", help="NAME, NAME@VERSION or NAME:ALIAS")
        pull.add_argument("--dest", default="model")
    reg.set_defaults(func=cmd_registry)


def read_sentences(args) -> tuple[list, bool]:
    """Records to tag and whether they carry gold tags: --input FILE (CoNLL, or JSONL by its .jsonl
    extension; '-' = CoNLL on stdin), or whitespace-tokenized text lines."""
    from tasks.records import NerRecord

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
    from tasks.records import InputFormatError, NerRecord, read_records

    if not path.is_file():
        raise InputFormatError(f"{path}: input file not found")
    text = path.read_text(encoding="utf-8-sig")
    first = next((line for line in text.splitlines() if line.strip() and not line.startswith("-DOCSTART-")), "")
    jsonl = path.suffix == ".jsonl"
    tagged = "tags" in json.loads(first) if jsonl and first else len(first.split()) > 1
    if tagged:
        return read_records(path, "jsonl" if jsonl else "conll"), True
    if jsonl:
        rows = [json.loads(line) for line in text.splitlines() if line.strip()]
        return [NerRecord(str(r.get("id", f"{path.name}:{i + 1}")), tuple(r["tokens"]), ("O",) * len(r["tokens"]))
                for i, r in enumerate(rows)], False
    sentences = [block.split("\n") for block in text.replace("\r\n", "\n").split("\n\n") if block.strip()]
    return [NerRecord(f"{path.name}:{i + 1}", tuple(w.strip() for w in lines if w.strip()),
                      ("O",) * sum(1 for w in lines if w.strip())) for i, lines in enumerate(sentences)], False


def write_predictions(records, predicted, fmt: str, out) -> None:
    for record, tags in zip(records, predicted, strict=True):
        if fmt == "jsonl":
            out.write(json.dumps({"id": record.id, "tokens": list(record.tokens), "tags": tags}, ensure_ascii=False)
                      + "\n")
        else:
            out.write("".join(f"{token}\t{tag}\n" for token, tag in zip(record.tokens, tags, strict=True)) + "\n")


def cmd_predict(args: argparse.Namespace) -> int:
    from tasks.records import InputFormatError

    with tempfile.TemporaryDirectory() as tmp:
        model_dir = Path(args.model)
        if not model_dir.is_dir():
            registry = open_registry()
            name, version = registry.resolve(args.model)
            model_dir = registry.download(name, version, Path(tmp))
        try:
            if is_sequence_classifier(model_dir):
                return predict_classes(args, model_dir)
            return predict_entities(args, model_dir)
        except InputFormatError as exc:
            sys.exit(f"flowtune predict: error: {exc}")


def is_sequence_classifier(model_dir: Path) -> bool:
    """What the saved model is, from its config: a text classifier or (otherwise) a tagger."""
    from transformers import AutoConfig

    architectures = AutoConfig.from_pretrained(model_dir).architectures or []
    return any(name.endswith("ForSequenceClassification") for name in architectures)


def output_stream(args):
    return open(args.output, "w", encoding="utf-8") if args.output else contextlib.nullcontext(sys.stdout)


def predict_entities(args: argparse.Namespace, model_dir: Path) -> int:
    from transformers import AutoModelForTokenClassification, AutoTokenizer

    from tasks.modeling import predict_tags

    records, tagged = read_sentences(args)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForTokenClassification.from_pretrained(model_dir).eval()
    predicted = predict_tags(model, tokenizer, [r.tokens for r in records], args.batch_size, args.max_length)
    with output_stream(args) as out:
        write_predictions(records, predicted, args.format or "conll", out)
    if tagged:  # the input had gold tags: say how the model did on them
        from tasks.evaluate import score

        scores = score([r.tags for r in records], predicted)
        print(f"gold tags in the input: strict F1 {scores['f1']:.4f}, precision {scores['precision']:.4f}, "
              f"recall {scores['recall']:.4f} on {scores['sentences']} sentences", file=sys.stderr)
    return 0


def read_texts(args, multi_label: bool = False) -> tuple[list, bool]:
    """Texts to classify and whether they carry gold labels: --input FILE (.csv or .jsonl with a `text`
    column, `label` optional: for a multi-label model, labels joined by | or a JSON list), or one text
    per argument / stdin line."""
    from tasks.textdata import TextExample, read_text_examples

    if not args.input:
        lines = args.text or sys.stdin.read().splitlines()
        return [TextExample(f"line:{i + 1}", line.strip(), "") for i, line in enumerate(lines) if line.strip()], False
    path = Path(args.input)
    labelled = has_column(path, "label")
    return read_text_examples(path, "text", "label" if labelled else None, "|" if multi_label else None), labelled


def has_column(path: Path, column: str) -> bool:
    """Whether the first row of a .csv/.jsonl input has `column` (a missing file is the reader's to report)."""
    import csv

    if not path.is_file():
        return False
    with open(path, newline="", encoding="utf-8") as handle:
        if path.suffix.lower() == ".csv":
            return column in (csv.DictReader(handle).fieldnames or [])
        first = next((line for line in handle if line.strip()), "{}")
    try:
        return column in json.loads(first)
    except json.JSONDecodeError:
        return False  # the reader names the line


def predict_classes(args: argparse.Namespace, model_dir: Path) -> int:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from tasks.records import InputFormatError
    from tasks.textclass import classification_metrics, encode_texts, is_multi_label, predict_proba, predicted_labels

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    multi_label = is_multi_label(model)
    examples, labelled = read_texts(args, multi_label)
    labels = [model.config.id2label[i] for i in range(model.config.num_labels)]
    unknown = sorted({label for e in examples for label in e.labels} - set(labels)) if labelled else []
    if unknown:
        raise InputFormatError(f"{args.input}: labels {unknown} are not classes of the model ({labels})")
    encoded, _ = encode_texts(tokenizer, examples, args.max_length)
    probabilities = predict_proba(model, encoded, args.batch_size, tokenizer.pad_token_id)
    predicted = predicted_labels(probabilities, labels, multi_label)
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
        result = classification_metrics([e.label for e in examples], probabilities, labels, multi_label)
        print(f"gold labels in the input: macro-F1 {result['f1']:.4f}, accuracy {result['accuracy']:.4f} on "
              f"{result['examples']} texts", file=sys.stderr)
    return 0


def add_predict_parser(sub) -> None:
    pred = sub.add_parser("predict", help="tag sentences (NER) or classify texts with a registered model or a "
                                          "model folder")
    pred.add_argument("--model", required=True, help="a model folder, or NAME / NAME@VERSION / NAME:ALIAS")
    pred.add_argument("--input", help="NER: a CoNLL or .jsonl file of tokenized sentences ('-' = CoNLL on stdin); "
                                      "classifier: a .csv or .jsonl file with a `text` column (`label` optional)")
    pred.add_argument("--format", choices=["conll", "jsonl"],
                      help="output format: conll (NER default; a classifier writes label<TAB>probability<TAB>text) "
                           "or jsonl")
    pred.add_argument("--output", help="write here instead of stdout")
    pred.add_argument("--batch-size", type=int, default=32)
    pred.add_argument("--max-length", type=int, default=128, help="sub-word pieces per window")
    pred.add_argument("text", nargs="*", help="whitespace-tokenized sentences, or texts for a classifier "
                                              "(default without --input: stdin lines)")
    pred.set_defaults(func=cmd_predict)
