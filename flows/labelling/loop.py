"""select -> push -> (people label in Label Studio) -> pull: the labelling loop's steps, each a plain function
(the CLI, flows/cli/label.py, and the Prefect flow `select_for_labelling`, flows/orchestration/label.py, call them)."""

from __future__ import annotations

import gzip
import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from flows.labelling.selection import Candidate, choose, exclude, text_key, uncertainty_of
from flows.labelling.spans import SpanError, labelling_config, spans_to_tags, tags_to_spans
from flows.labelling.studio import Studio

CAPTURE_BUCKET_ENV = "FLOWTUNE_CAPTURE_BUCKET"
DEFAULT_CAPTURE_BUCKET = "flowtune-capture"


def project_title(params) -> str:
    return params.label.project or f"flowtune-{params.registry.model_name}"


def is_multi_label(params) -> bool:
    return bool(getattr(params.task, "multi_label", False))


# ---------------------------------------------------------------- candidates


def candidates_from_file(predictor, path: Path) -> list[Candidate]:
    """Every item of a file the model's predictor reads (NER CoNLL/JSONL, textclass CSV/JSONL); gold ignored."""
    items, ids, _ = predictor.read_input(Path(path))
    return [Candidate(i, list(item) if not isinstance(item, str) else item, origin=str(path))
            for item, i in zip(items, ids, strict=True)]


def capture_lines(client, bucket: str, model: str, days: int,
                  now: datetime | None = None) -> Iterator[tuple[str, dict]]:
    """(object key:line, record) of the captured requests of the last `days` days, from serve's layout
    `<bucket>/<model>/<yyyy-mm-dd>/<HH>-<id>.jsonl.gz`."""
    now = now or datetime.now(UTC)
    for day in sorted({(now - timedelta(days=d)).strftime("%Y-%m-%d") for d in range(days + 1)}):
        paginator = client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=bucket, Prefix=f"{model}/{day}/"):
            for entry in sorted(page.get("Contents", []), key=lambda e: e["Key"]):
                body = client.get_object(Bucket=bucket, Key=entry["Key"])["Body"].read()
                for number, line in enumerate(gzip.decompress(body).decode().splitlines(), start=1):
                    if line.strip():
                        yield f"{entry['Key']}:{number}", json.loads(line)


def capture_item(record: dict, kind: str) -> list[str] | str | None:
    """The request's item (NER tokens, textclass text) from a captured record; None when redacted."""
    value = record.get("input")
    if isinstance(value, dict):
        value = value.get("tokens", value.get("text"))
    if value is None:
        return None
    if kind == "ner":
        return value.split() if isinstance(value, str) else [str(token) for token in value]
    return value if isinstance(value, str) else " ".join(value)


def candidates_from_capture(settings, model: str, kind: str, days: int) -> tuple[list[Candidate], int]:
    """Candidates from the captured traffic of the last `days` days; (candidates, redacted records skipped)."""
    from tasks.settings import s3_client

    bucket = os.environ.get(CAPTURE_BUCKET_ENV, DEFAULT_CAPTURE_BUCKET)
    found, redacted = [], 0
    for where, record in capture_lines(s3_client(settings), bucket, model, days):
        item = capture_item(record, kind)
        if item is None:
            redacted += 1
            continue
        found.append(Candidate(where, item, origin=where))
    return found, redacted


def predict(predictor, candidates: list[Candidate], measure: str, multi_label: bool) -> list[Candidate]:
    """The champion's answer and uncertainty on each candidate (its pre-annotation, its rank)."""
    answers = predictor.predict([c.item for c in candidates], [c.id for c in candidates]) if candidates else []
    for candidate, answer in zip(candidates, answers, strict=True):
        candidate.answer = answer
        candidate.uncertainty = round(uncertainty_of(answer, measure, multi_label), 6)
    return candidates


# ---------------------------------------------------------------- what must not be chosen


def source_rows(params, kind, source: str | None = None) -> list:
    """The labelled rows there are: the source folder's files (batches included) and the imported splits
    (paths.raw; dev and test above all, which no new label may repeat)."""
    from flows.batches import DataError, existing_batches, source_folder

    rows: list = []
    try:
        folder = source_folder(params, source)
        for path in existing_batches(folder, kind):
            rows += kind.source_reader(params.ingest)(path)
    except DataError:
        pass  # the builtin set: its rows are in paths.raw
    for split in ("train", "dev", "test"):
        path = Path(params.paths.raw) / f"{split}.jsonl"
        if path.is_file():
            rows += kind.read(path)
    return rows


def known_keys(params, kind, source: str | None = None) -> tuple[set[str], set[str]]:
    """(text keys, record ids) of the labelled rows."""
    sentences = [kind.as_sentence(row) for row in source_rows(params, kind, source)]
    return {text_key(s.text) for s in sentences}, {s.id for s in sentences}


def held_out_keys(params, kind, source: str | None = None) -> dict[str, str]:
    """Text key -> "<split> row <id>" of every dev and test row (the imported splits, and the source folder's
    official dev/test files): a pulled label for one of them would leak it into training."""
    from flows.batches import DataError, source_folder
    from tasks.io import InputFormatError
    from tasks.sources import source_files

    held: dict[str, str] = {}
    files = [(split, Path(params.paths.raw) / f"{split}.jsonl", kind.read) for split in ("dev", "test")]
    try:
        official = source_files(source_folder(params, source), kind.source_suffixes).official
        files += [(split, official[split], kind.source_reader(params.ingest)) for split in ("dev", "test")
                  if split in official]
    except (DataError, InputFormatError):
        pass  # the builtin set, or a folder without data yet: its rows are in paths.raw
    for split, path, read in files:
        if path.is_file():
            for row in read(path):
                sentence = kind.as_sentence(row)
                held.setdefault(text_key(sentence.text), f"{split} row {sentence.id}")
    return held


def queued_keys(studio: Studio, title: str) -> set[str]:
    """Text keys of the project's tasks (labelled or not); none when the project does not exist yet."""
    project = studio.find_project(title)
    if project is None:
        return set()
    return {task["data"].get("key") or text_key(task["data"]["text"]) for task in studio.export(project["id"], True)}


# ---------------------------------------------------------------- select


@dataclass
class Selection:
    chosen: list[Candidate]
    pool: int
    excluded: int
    redacted: int = 0


def select(candidates: list[Candidate], predictor, params, excluded: set[str], n: int | None = None,
           redacted: int = 0) -> Selection:
    """Drop excluded and repeated texts, predict, choose by `label.strategy`."""
    label = params.label
    kept, dropped = exclude(candidates, excluded)
    predict(predictor, kept, label.uncertainty_measure, is_multi_label(params))
    chosen = choose(kept, n or label.n_items, label.strategy, label.seed, label.duplicate_jaccard,
                    label.cluster_jaccard, label.max_per_cluster)
    return Selection(chosen, len(candidates), dropped, redacted)


def write_selection(path: Path, chosen: Sequence[Candidate]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text("".join(json.dumps({"id": c.id, "item": c.item, "answer": c.answer, "origin": c.origin,
                                           "uncertainty": c.uncertainty}, ensure_ascii=False) + "\n" for c in chosen))
    os.replace(partial, path)
    return path


def read_selection(path: Path) -> list[Candidate]:
    from tasks.io import InputFormatError

    if not path.is_file():
        raise InputFormatError(f"{path}: no selection (run `flowtune label select` first, or pass --file)")
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [Candidate(r["id"], r["item"], r.get("answer", {}), r.get("origin", ""), r.get("uncertainty", 0.0))
            for r in rows]


# ---------------------------------------------------------------- push


def pre_annotation(candidate: Candidate, model_version: str) -> dict:
    """The champion's answer as a Label Studio prediction (shown to the annotator as a starting point)."""
    answer = candidate.answer
    if "tags" in answer:
        result = [{"from_name": "label", "to_name": "text", "type": "labels", "value": span}
                  for span in tags_to_spans(candidate.item, answer["tags"])]
    else:
        labels = [label for label in str(answer.get("label", "")).split("|") if label]
        result = [{"from_name": "label", "to_name": "text", "type": "choices", "value": {"choices": labels}}]
    return {"model_version": model_version, "score": round(1 - min(candidate.uncertainty, 1.0), 6), "result": result}


def task_of(candidate: Candidate, model_version: str, review: dict | None = None) -> dict:
    """A Label Studio task: the text (NER: tokens joined by spaces), our key and id, the pre-annotation; `review`
    (extra data, e.g. why an audit flagged a labelled row) for review tasks."""
    data = {"text": candidate.text, "key": candidate.key, "flowtune_id": candidate.id, **(review or {})}
    if not isinstance(candidate.item, str):
        data["tokens"] = list(candidate.item)
    task = {"data": data}
    if candidate.answer:
        task["predictions"] = [pre_annotation(candidate, model_version)]
    return task


def push(studio: Studio, title: str, label_config: str, candidates: Sequence[Candidate], model_version: str,
         review: dict[str, dict] | None = None) -> tuple[int, int, bool]:
    """Queue candidates in the project (created once); a text already queued is not imported again.
    (imported, skipped as queued, project created). `review`: extra task data by candidate id."""
    project, created = studio.ensure_project(title, label_config)
    queued = set() if created else queued_keys(studio, title)
    fresh, seen = [], set(queued)
    for candidate in candidates:
        if candidate.key not in seen:
            seen.add(candidate.key)
            fresh.append(candidate)
    tasks = [task_of(c, model_version, (review or {}).get(c.id)) for c in fresh]
    studio.import_tasks(project["id"], tasks)
    return len(fresh), len(candidates) - len(fresh), created


# ---------------------------------------------------------------- review (the label audit's suspects)

REVIEW_NOTE = "review_note"  # the task data key the review project's header shows
REVIEW_MODEL_VERSION = "current label"  # a review task's pre-annotation is the row's label as the data has it


def review_title(params) -> str:
    """The review project: the selection project's title with `-review` (a queue of its own, docs/DECISIONS.md)."""
    return f"{project_title(params)}-review"


def review_config(label_config: str) -> str:
    """The selection project's labelling interface with the audit's note shown above the text."""
    return label_config.replace("<View>", f'<View><Header value="${REVIEW_NOTE}"/>', 1)


def read_audit_report(path: Path) -> list[dict]:
    """The `top` items of a `label audit` report (tasks/audit.py: id, tokens or text, given, suggested, score)."""
    from tasks.io import InputFormatError

    if not path.is_file():
        raise InputFormatError(f"{path}: no label audit report (run `flowtune label audit` first, or pass --report)")
    try:
        top = json.loads(path.read_text(encoding="utf-8"))["top"]
        if not all({"id", "given", "suggested", "score"} <= set(item) for item in top):
            raise ValueError("an item lacks id, given, suggested or score")
    except (ValueError, KeyError, TypeError) as exc:
        raise InputFormatError(f"{path}: not a label audit report ({exc}); expected JSON with a 'top' list of "
                               '{"id", "tokens"|"text", "given", "suggested", "score"}') from None
    return top


def suspicion(item: dict, rank: int, total: int) -> str:
    """The note an annotator reads on a review task: why the row is there and what the audit suggests."""
    if "tokens" in item:
        spans = tags_to_spans(item["tokens"], item["suggested"])
        suggested = ", ".join(f"{s['text']!r} {s['labels'][0]}" for s in spans) or "no entity"
    else:
        suggested = " | ".join(item["suggested"]) if isinstance(item["suggested"], list) else item["suggested"]
    return (f"Label audit: the labels below may be wrong (rank {rank} of {total}, cleanlab label quality "
            f"{item['score']:.3f}; lower is more suspect). Cross-fitted models suggest: {suggested}. Correct the "
            "labels, or submit them unchanged if they are right.")


def review_candidates(items: Sequence[dict]) -> tuple[list[Candidate], dict[str, dict]]:
    """Audit items as candidates whose answer is the row's current label (the pre-annotation), and the review
    data of each by id: the note, the suggested label, the audit's score."""
    candidates, review = [], {}
    for rank, item in enumerate(items, 1):
        tagged = "tokens" in item
        given = item["given"]
        answer = {"tags": list(given)} if tagged else {"label": "|".join(given) if isinstance(given, list) else given}
        candidates.append(Candidate(str(item["id"]), list(item["tokens"]) if tagged else item["text"], answer,
                                    "label audit", round(1 - float(item["score"]), 6)))
        review[str(item["id"])] = {REVIEW_NOTE: suspicion(item, rank, len(items)), "given": given,
                                   "suggested": item["suggested"], "audit_score": item["score"]}
    return candidates, review


def push_review(studio: Studio, params, items: Sequence[dict], labels: Sequence[str]) -> tuple[int, int, bool]:
    """The audit's suspects into the review project (created once), each with its current label as the
    pre-annotation and the suspicion as a note; a text already queued there is not imported again."""
    candidates, review = review_candidates(items)
    return push(studio, review_title(params), review_config(config_for(params, labels)), candidates,
                REVIEW_MODEL_VERSION, review)


def audit_labels(items: Sequence[dict]) -> list[str]:
    """The labels an audit report's items use (given and suggested), for a project when task.labels is []."""
    seen: list[str] = []
    for item in items:
        for value in (item["given"], item["suggested"]):
            for label in ([value] if isinstance(value, str) else value):
                if label not in seen:
                    seen.append(label)
    return seen


def config_for(params, model_labels: Sequence[str]) -> str:
    labels = params.task.labels or list(model_labels)
    return labelling_config(params.task.kind, labels, is_multi_label(params))


# ---------------------------------------------------------------- pull


@dataclass
class Pulled:
    rows: list[dict] = field(default_factory=list)
    refused: dict[int, str] = field(default_factory=dict)  # task id -> why
    empty: int = 0
    already: int = 0
    disagreements: list[int] = field(default_factory=list)
    agreement: dict[str, float] = field(default_factory=dict)  # label -> share of annotation pairs that agree
    tasks: dict[str, int] = field(default_factory=dict)  # row id -> the task it came from
    unchanged: int = 0  # review: labels confirmed as they are (or as corrected before): nothing to write


def annotation_value(annotation: dict, task: dict, kind: str, labels: Sequence[str], multi_label: bool):
    """An annotation as our label: NER tags (tuple), textclass the label string ('|'-joined when multi-label)."""
    result = annotation.get("result") or []
    if kind == "ner":
        spans = [r["value"] for r in result if r.get("type") == "labels"]
        return tuple(spans_to_tags(task["data"]["text"].split(" "), spans, labels))
    choices = [c for r in result if r.get("type") == "choices" for c in r["value"].get("choices", [])]
    unknown = sorted(set(choices) - set(labels))
    if unknown:
        raise SpanError(f"choices {unknown} are not classes of task.labels {list(labels)}")
    if not multi_label and len(choices) != 1:
        raise SpanError(f"{len(choices)} choices for a single-label task")
    return "|".join(sorted(choices))


def is_empty(annotation: dict, kind: str) -> bool:
    """A skipped task, or a classification with no choice. (An NER result without spans is a sentence with no
    entity, all O: a real label.)"""
    return bool(annotation.get("was_cancelled")) or (kind != "ner" and not annotation.get("result"))


def label_units(value, kind: str) -> dict[str, set]:
    """Per label, what an annotation says about it (NER: its entity token ranges; textclass: present or not)."""
    from flows.labelling.spans import entity_types_of

    if kind != "ner":
        return {label: {True} for label in value.split("|") if label}
    units: dict[str, set] = {}
    for span in tags_to_spans([str(i) for i in range(len(value))], value):
        units.setdefault(span["labels"][0], set()).add((span["start"], span["end"]))
    for entity in entity_types_of(value):
        units.setdefault(entity, set())
    return units


def collect(tasks: Sequence[dict], kind: str, labels: Sequence[str], multi_label: bool, project_id: int,
            known_ids: set[str], known: set[str], held_out: dict[str, str] | None = None) -> Pulled:
    """The new labelled rows of exported tasks, with what was refused, empty, already imported or disputed.
    `held_out`: text key -> where, of the dev and test rows; a task repeating one is refused (the contract's
    no_leakage), never imported, until it is deleted in Label Studio."""
    pulled, pairs, agreed = Pulled(), {}, {}
    for task in tasks:
        record_id = f"labelstudio-{project_id}-{task['id']}"
        key = text_key(task["data"]["text"])
        if record_id in known_ids:
            pulled.already += 1
            continue
        if key in (held_out or {}) and any(not is_empty(a, kind) for a in task.get("annotations", [])):
            pulled.refused[task["id"]] = (f"breaks the data contract's no_leakage check (repeats the {held_out[key]},"
                                          " case and spacing ignored); expected a sentence that is not in dev or "
                                          "test: delete the task in Label Studio")
            continue
        if key in known:
            pulled.already += 1
            continue
        value = agreed_value(task, kind, labels, multi_label, pulled, pairs, agreed)
        if value is not None:
            pulled.rows.append(row_of(record_id, task, value, kind, multi_label))
            pulled.tasks[record_id] = task["id"]
    pulled.agreement = {label: round(agreed[label] / pairs[label], 4) for label in sorted(pairs)}
    return pulled


def agreed_value(task: dict, kind: str, labels: Sequence[str], multi_label: bool, pulled: Pulled, pairs: dict,
                 agreed: dict):
    """The label a task's annotations agree on; None when it is empty, refused or disputed (counted in `pulled`;
    each annotation pair counted in `pairs`, `agreed` per label)."""
    annotations = [a for a in task.get("annotations", []) if not is_empty(a, kind)]
    if not annotations:
        pulled.empty += bool(task.get("annotations"))
        return None
    try:
        values = [annotation_value(a, task, kind, labels, multi_label) for a in annotations]
    except SpanError as exc:
        pulled.refused[task["id"]] = str(exc)
        return None
    for a, b in zip(values, values[1:], strict=False):
        units_a, units_b = label_units(a, kind), label_units(b, kind)
        for label in set(units_a) | set(units_b):
            pairs[label] = pairs.get(label, 0) + 1
            agreed[label] = agreed.get(label, 0) + (units_a.get(label) == units_b.get(label))
    if len(set(values)) > 1:
        pulled.disagreements.append(task["id"])
        return None
    return values[0]


def label_value(label, kind: str):
    """A row's label in `annotation_value`'s shape: NER tags as a tuple, a class (or '|'-joined classes)."""
    if kind == "ner":
        return tuple(label)
    return "|".join(sorted(label)) if isinstance(label, list | tuple) else str(label)


def collect_review(tasks: Sequence[dict], kind: str, labels: Sequence[str], multi_label: bool,
                   corrected: dict[str, object]) -> Pulled:
    """Corrections from the review project's annotated tasks: rows with the id of the row they replace (the task's
    `flowtune_id`). A label equal to the row's current one (its latest correction, `corrected` by id, else the
    `given` label the task was pushed with) is counted unchanged and not written: a second pull writes nothing."""
    pulled, pairs, agreed = Pulled(), {}, {}
    for task in tasks:
        tokens = task["data"].get("tokens")
        if tokens is not None and task["data"]["text"].split(" ") != list(tokens):
            pulled.refused[task["id"]] = (f"its row's tokens {tokens[:8]!r} do not survive as Label Studio's text (a "
                                          "token with a space, or an empty one); expected tokens without spaces: "
                                          "correct this row in the source file")
            continue
        value = agreed_value(task, kind, labels, multi_label, pulled, pairs, agreed)
        if value is None:
            continue
        record_id = str(task["data"]["flowtune_id"])
        current = corrected.get(record_id, label_value(task["data"].get("given", ()), kind))
        if value == current:
            pulled.unchanged += 1
            continue
        pulled.rows.append(row_of(record_id, task, value, kind, multi_label))
        pulled.tasks[record_id] = task["id"]
    pulled.agreement = {label: round(agreed[label] / pairs[label], 4) for label in sorted(pairs)}
    return pulled


def row_of(record_id: str, task: dict, value, kind: str, multi_label: bool) -> dict:
    if kind == "ner":
        return {"id": record_id, "tokens": task["data"]["text"].split(" "), "tags": list(value)}
    label = value.split("|") if multi_label and value else value
    return {"id": record_id, "text": task["data"]["text"], "label": label if multi_label else value}


def write_batch(rows: Sequence[dict], folder: Path, project_id: int, params, prefix: str = "labelstudio") -> Path:
    """The new rows as a JSONL batch file (the source's text/label columns for textclass), to `data add`."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    path = folder / f"{prefix}-{project_id}-{stamp}.jsonl"
    text_column = getattr(params.ingest, "text_column", "text")
    label_column = getattr(params.ingest, "label_column", "label")
    with path.open("w", encoding="utf-8") as out:
        for row in rows:
            if "text" in row:
                row = {"id": row["id"], text_column: row["text"], label_column: row["label"]}
            out.write(json.dumps(row, ensure_ascii=False) + "\n")
    return path
