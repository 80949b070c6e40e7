"""Label audit of tagged sentences: cleanlab's token-classification scores over out-of-sample per-word
probabilities (tasks/audit.py cross-fits them). A sentence's score is cleanlab's label quality in [0, 1]
(lower: more likely mislabelled; by default the softmin of its words' self-confidence), and its suggested
tags are the models' tag per word, repaired into valid IOB2 (an I-X that starts an entity becomes B-X)."""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np

from tasks.iob import to_iob2
from tasks.kinds.base import ranked
from tasks.kinds.ner.records import NerRecord


def label_issues(records: Sequence[NerRecord], distributions: Sequence[np.ndarray], labels: Sequence[str]
                 ) -> list[dict]:
    """Every sentence, most suspect first: {"id", "tokens", "given", "suggested", "score", "flagged"}; flagged:
    cleanlab's own filter finds an issue in at least one of its words."""
    from cleanlab.token_classification.filter import find_label_issues
    from cleanlab.token_classification.rank import get_label_quality_scores

    label2id = {label: i for i, label in enumerate(labels)}
    scored = [i for i, record in enumerate(records) if record.tokens]  # an empty sentence has nothing to judge
    given = [np.array([label2id[tag] for tag in records[i].tags]) for i in scored]
    probabilities = [distributions[i] for i in scored]
    scores = np.ones(len(records))
    flagged: set[int] = set()
    if scored:
        with warnings.catch_warnings():  # "too few examples in class X": a label train hardly uses
            warnings.simplefilter("ignore", UserWarning)
            scores[scored] = get_label_quality_scores(given, probabilities)[0]
            if len(np.unique(np.concatenate(given))) > 1:  # cleanlab's filter needs two classes in use
                flagged = {scored[sentence] for sentence, _ in find_label_issues(given, probabilities)}
    findings = []
    for i, record in enumerate(records):
        suggested = to_iob2([labels[k] for k in distributions[i].argmax(axis=1)], "iob1") if record.tokens else []
        findings.append({"id": record.id, "tokens": list(record.tokens), "given": list(record.tags),
                         "suggested": suggested, "score": float(scores[i]), "flagged": i in flagged})
    return ranked(findings)
