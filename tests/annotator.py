"""A simulated annotator: answers a Label Studio project's open tasks from gold labels, through Label Studio's
own API (POST /api/tasks/<id>/annotations), as a person in its UI would. For the labelling loop's integration
test and benchmarks; `gold` maps a text (case and spacing ignored) to its IOB2 tags (NER) or its label(s)."""

from __future__ import annotations

from collections.abc import Sequence

from flows.labelling.selection import text_key
from flows.labelling.spans import tags_to_spans
from flows.labelling.studio import Studio


def result_of(text: str, gold: Sequence[str] | str, kind: str) -> list[dict]:
    """Label Studio's annotation result for a gold label of `text`."""
    if kind == "ner":
        return [{"from_name": "label", "to_name": "text", "type": "labels", "value": span}
                for span in tags_to_spans(text.split(" "), gold)]
    choices = [gold] if isinstance(gold, str) else list(gold)
    return [{"from_name": "label", "to_name": "text", "type": "choices", "value": {"choices": choices}}]


def annotate(studio: Studio, project_id: int, gold: dict[str, Sequence[str] | str], kind: str = "ner",
             cancel: Sequence[str] = ()) -> dict[str, int]:
    """Annotate every open task whose text has a gold label; skip (cancel) those in `cancel`. Counts by outcome."""
    counts = {"annotated": 0, "cancelled": 0, "no_gold": 0}
    skipped = {text_key(t) for t in cancel}
    by_key = {text_key(text): label for text, label in gold.items()}
    for task in studio.export(project_id, all_tasks=True):
        if task.get("annotations"):
            continue
        key = text_key(task["data"]["text"])
        if key in skipped:
            studio.call("POST", f"tasks/{task['id']}/annotations", json={"result": [], "was_cancelled": True})
            counts["cancelled"] += 1
        elif key in by_key:
            studio.annotate(task["id"], result_of(task["data"]["text"], by_key[key], kind))
            counts["annotated"] += 1
        else:
            counts["no_gold"] += 1
    return counts
