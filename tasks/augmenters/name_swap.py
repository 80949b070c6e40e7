"""Name swap for NER records: replace entity mentions by other train mentions of the same type.

Mention replacement (Dai and Adel, 2020): a copy of a train sentence in which some mentions of the chosen
types (`augment.name_swap.types`, e.g. person) become another mention of that type taken from the train
split, tagged B-/I- for its own length. The words around a name then teach the model that it is a name,
whatever the name: the behaviour check `name_invariance` (tasks/kinds/ner/evaluate.py) measures exactly
that. Only train mentions are used, so no dev or test name enters train.

Random choices depend only on (seed, record id, copy index, attempt), never on a record's position, and
the pool of mentions is built once from the whole train split (`mention_pool`) and handed to every shard:
shards of the input give exactly the records one run over all of it gives.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from tasks.augmenters.seeded import ACCEPTED, DUPLICATE, UNCHANGED, seeded_copies
from tasks.iob import entity_spans
from tasks.progress import track
from tasks.sentence import Sentence

NO_MENTION = "no_mention"  # no mention of a chosen type with another name to put in its place
OUTCOMES = (ACCEPTED, NO_MENTION, UNCHANGED, DUPLICATE)

Pool = Mapping[str, Sequence[tuple[str, ...]]]  # entity type -> distinct mentions (token tuples), sorted


@dataclass(frozen=True)
class NameSwapParams:
    """Invariant (checked): 0 < swap_prob <= 1, copies >= 0, max_attempts >= 1, at least one type."""

    types: tuple[str, ...]  # entity types whose mentions are swapped
    swap_prob: float  # probability that each mention of those types is swapped
    copies: int  # new records wanted per source record
    seed: int
    max_attempts: int  # tries per copy to get a changed sentence that is not a duplicate

    def __post_init__(self) -> None:
        if not self.types:
            raise ValueError("name_swap needs at least one entity type")
        if not 0 < self.swap_prob <= 1:
            raise ValueError(f"swap_prob must be in (0, 1], got {self.swap_prob}")
        if self.copies < 0 or self.max_attempts < 1:
            raise ValueError(f"need copies >= 0 and max_attempts >= 1, got {self.copies} and {self.max_attempts}")


def mention_pool(records: Sequence[Sentence], types: Sequence[str]) -> dict[str, list[tuple[str, ...]]]:
    """Every distinct mention of each type in `records`, sorted (the same pool whatever the input order)."""
    wanted = set(types)
    pool: dict[str, set[tuple[str, ...]]] = {t: set() for t in types}
    for record in records:
        for entity, start, end in entity_spans(record.tags):
            if entity in wanted:
                pool[entity].add(record.tokens[start:end])
    return {t: sorted(mentions) for t, mentions in pool.items()}


def swappable_mentions(record: Sentence, pool: Pool) -> list[tuple[str, int, int]]:
    """(type, start, end) of each mention that has at least one other name of its type in the pool."""
    return [(entity, start, end) for entity, start, end in entity_spans(record.tags)
            if any(m != record.tokens[start:end] for m in pool.get(entity, ()))]


def swap_once(record: Sentence, mentions: Sequence[tuple[str, int, int]], pool: Pool, draws: Sequence[int],
              threshold: int) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Tokens and tags with each mention swapped when its draw is under `threshold` (swap_prob * 2**32).

    `draws` holds two 32-bit integers per mention: whether to swap, and which name. A draw that lands on
    the mention's own name takes the next one in the pool, so a swap always changes the words.
    Invariant: valid IOB2; tokens outside the swapped mentions are the source's, with their tags.
    """
    tokens, tags, position = [], [], 0
    for j, (entity, start, end) in enumerate(mentions):
        tokens += record.tokens[position:start]
        tags += record.tags[position:start]
        names, own = pool[entity], record.tokens[start:end]
        name = own
        if draws[2 * j] < threshold:
            pick = draws[2 * j + 1] * len(names) >> 32
            name = names[pick] if names[pick] != own else names[(pick + 1) % len(names)]
        tokens += name
        tags += [f"B-{entity}"] + [f"I-{entity}"] * (len(name) - 1)
        position = end
    return tuple(tokens + list(record.tokens[position:])), tuple(tags + list(record.tags[position:]))


def name_swap_copies(record: Sentence, pool: Pool, params: NameSwapParams,
                     name: str = "name_swap") -> tuple[list[Sentence], list[str]]:
    """Up to `params.copies` new records from one source, and one outcome per copy.

    Invariants: every new record differs from the source and from the other copies (tasks/augmenters/
    seeded.py); only mentions of `params.types` change, each into a whole other train mention.
    """
    mentions = swappable_mentions(record, {t: pool.get(t, ()) for t in params.types})
    if not mentions:
        return [], [NO_MENTION] * params.copies
    threshold = round(params.swap_prob * 2**32)

    def edit(draws: Sequence[int]) -> tuple[tuple[str, ...], tuple[str, ...]]:
        return swap_once(record, mentions, pool, draws, threshold)

    return seeded_copies(record, edit, 2 * len(mentions), copies=params.copies, seed=params.seed,
                         max_attempts=params.max_attempts, name=name)


class NameSwap:
    """Label-preserving mention replacement (seeded) from a pool of train mentions (`mention_pool`)."""

    name = "name_swap"

    def __init__(self, pool: Pool, types: Sequence[str], swap_prob: float, copies: int, seed: int, *,
                 max_attempts: int) -> None:
        self.params = NameSwapParams(tuple(types), swap_prob, copies, seed, max_attempts)
        self.pool = {t: list(pool.get(t, ())) for t in types}

    def augment(self, records: Sequence[Sentence]) -> tuple[list[Sentence], Counter]:
        """Return only NEW records and counts by outcome (every key of OUTCOMES present).

        Invariant: sum(counts.values()) == len(records) * copies.
        """
        counts = dict.fromkeys(OUTCOMES, 0)
        augmented: list[Sentence] = []
        for record in track(records, f"augment: {self.name}, sentences", unit="sentences"):
            new_records, outcomes = name_swap_copies(record, self.pool, self.params, self.name)
            augmented += new_records
            for outcome in outcomes:
                counts[outcome] += 1
        return augmented, Counter(counts)
