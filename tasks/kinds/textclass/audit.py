"""Label audit of labelled texts: cleanlab's label quality scores over out-of-sample class probabilities
(tasks/audit.py cross-fits them). A text's score is cleanlab's self-confidence, the probability the
models give its label (lower: more likely mislabelled); its suggestion is the models' most probable class."""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np

from tasks.kinds.base import ranked
from tasks.kinds.textclass.records import TextExample


def label_issues(examples: Sequence[TextExample], distributions: Sequence[np.ndarray], labels: Sequence[str],
                 multi_label: bool) -> list[dict]:
    """Every text, most suspect first: {"id", "text", "given", "suggested", "score", "flagged"}; flagged:
    cleanlab's `filter.find_label_issues` (confident learning) counts it as an issue."""
    if multi_label:  # checked before anything else: the audit calls this with no rows before training
        raise ValueError("label audit: multi-label classification is not supported yet (one label per text); "
                         "set task.multi_label: false or audit a single-label copy of the data")
    if not examples:
        return []
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores

    label2id = {label: i for i, label in enumerate(labels)}
    given = np.array([label2id[example.label] for example in examples])
    probabilities = np.vstack(distributions) if distributions else np.zeros((0, len(labels)))
    with warnings.catch_warnings():  # "too few examples in class X": a class train hardly uses
        warnings.simplefilter("ignore", UserWarning)
        scores = get_label_quality_scores(given, probabilities)
        # cleanlab's filter needs two classes in use
        flagged = find_label_issues(given, probabilities) if len(set(given)) > 1 else np.zeros(len(given), bool)
    suggested = probabilities.argmax(axis=1)
    return ranked([{"id": example.id, "text": example.text, "given": example.label,
                    "suggested": labels[suggested[i]], "score": float(scores[i]), "flagged": bool(flagged[i])}
                   for i, example in enumerate(examples)])
