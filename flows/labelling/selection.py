"""Which items to label next: random, the champion's least certain, or least certain without near-duplicates.

Uncertainty, higher = less certain:
- NER: MNLP (Shen et al. 2017, "Deep Active Learning for NER"): the mean over tokens of the log of each token's
  predicted-tag probability, negated. The mean (not the sum) keeps long sentences from winning by length.
- textclass: `margin` (1 - (p1 - p2), the top two classes) or `entropy` of the class probabilities; multi-label:
  the mean over classes of the yes/no entropy (entropy) or of 1 - |2p - 1| (margin).
Diversity (uncertainty+diversity): candidates are taken in uncertainty order, and one is skipped when its token
set's Jaccard similarity to a chosen item reaches `duplicate_jaccard` (a near-duplicate), or when its cluster
(greedy leader clustering at `cluster_jaccard`) already has `max_per_cluster` chosen items.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

STRATEGIES = ("random", "uncertainty", "uncertainty+diversity")


@dataclass
class Candidate:
    """One item that could be labelled: NER tokens or a text, with the champion's answer for it."""

    id: str
    item: list[str] | str
    answer: dict = field(default_factory=dict)
    origin: str = ""  # the capture object or input file it came from
    uncertainty: float = 0.0

    @property
    def text(self) -> str:
        return self.item if isinstance(self.item, str) else " ".join(self.item)

    @property
    def key(self) -> str:
        return text_key(self.text)


def text_key(text: str) -> str:
    """The identity of a text for "already labelled / queued / in dev or test": case and spacing ignored."""
    return " ".join(text.split()).casefold()


def mnlp(scores: Sequence[float]) -> float:
    """NER uncertainty: -(1/n) sum log p(tag_i); 0 for a sentence without tokens (nothing to learn)."""
    if not scores:
        return 0.0
    return -sum(math.log(max(p, 1e-12)) for p in scores) / len(scores)


def class_uncertainty(probabilities: dict[str, float], measure: str, multi_label: bool = False) -> float:
    """textclass uncertainty of one answer's class probabilities, by `measure` (margin | entropy)."""
    values = list(probabilities.values())
    if not values:
        return 0.0
    if multi_label:  # one yes/no decision per class
        per_class = [binary_entropy(p) if measure == "entropy" else 1 - abs(2 * p - 1) for p in values]
        return sum(per_class) / len(per_class)
    if measure == "entropy":
        return -sum(p * math.log(p) for p in values if p > 0)
    top = sorted(values, reverse=True) + [0.0]
    return 1 - (top[0] - top[1])


def binary_entropy(p: float) -> float:
    return -sum(q * math.log(q) for q in (p, 1 - p) if q > 0)


def uncertainty_of(answer: dict, measure: str = "margin", multi_label: bool = False) -> float:
    """The uncertainty of a predictor's answer, NER (`scores`) or textclass (`probabilities`)."""
    if "scores" in answer:
        return mnlp(answer["scores"])
    return class_uncertainty(answer.get("probabilities", {}), measure, multi_label)


def jaccard(a: frozenset[str], b: frozenset[str]) -> float:
    return len(a & b) / len(a | b) if a or b else 1.0


def token_set(text: str) -> frozenset[str]:
    return frozenset(text_key(text).split())


def exclude(candidates: Iterable[Candidate], excluded: set[str]) -> tuple[list[Candidate], int]:
    """Candidates whose text is not in `excluded` (labelled, queued, dev/test), each text once; (kept, dropped)."""
    kept, seen, dropped = [], set(excluded), 0
    for candidate in candidates:
        if candidate.key in seen:
            dropped += 1
            continue
        seen.add(candidate.key)
        kept.append(candidate)
    return kept, dropped


def choose(candidates: Sequence[Candidate], n: int, strategy: str, seed: int = 0, duplicate_jaccard: float = 0.8,
           cluster_jaccard: float = 0.5, max_per_cluster: int = 2) -> list[Candidate]:
    """`n` candidates by `strategy` (their `uncertainty` already set); most uncertain first, random in order."""
    if strategy not in STRATEGIES:
        raise ValueError(f"label.strategy {strategy!r}: expected one of {', '.join(STRATEGIES)}")
    if strategy == "random":
        return random.Random(seed).sample(list(candidates), min(n, len(candidates)))
    ranked = sorted(candidates, key=lambda c: (-c.uncertainty, c.id))
    if strategy == "uncertainty":
        return ranked[:n]
    return diverse(ranked, n, duplicate_jaccard, cluster_jaccard, max_per_cluster)


def diverse(ranked: Sequence[Candidate], n: int, duplicate_jaccard: float, cluster_jaccard: float,
            max_per_cluster: int) -> list[Candidate]:
    """Greedy in rank order: no two chosen items at `duplicate_jaccard` or more, at most `max_per_cluster`
    from each leader cluster (a candidate joins the first leader it is `cluster_jaccard`-similar to)."""
    chosen: list[tuple[Candidate, frozenset[str]]] = []
    leaders: list[tuple[frozenset[str], list[int]]] = []  # leader's token set, [count chosen in its cluster]
    for candidate in ranked:
        if len(chosen) >= n:
            break
        tokens = token_set(candidate.text)
        if any(jaccard(tokens, other) >= duplicate_jaccard for _, other in chosen):
            continue
        cluster = next((count for leader, count in leaders if jaccard(tokens, leader) >= cluster_jaccard), None)
        if cluster is None:
            leaders.append((tokens, cluster := [0]))
        if cluster[0] >= max_per_cluster:
            continue
        cluster[0] += 1
        chosen.append((candidate, tokens))
    return [candidate for candidate, _ in chosen]
