"""Seeded copies of a record, shared by the augmenters that edit words in place (synonym swap, name swap).

Every random choice depends only on (seed, record id, copy index, attempt), never on a record's position
in the input, so sharding the input cannot change any output.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Callable, Sequence

from tasks.sentence import Sentence

ACCEPTED = "accepted"
UNCHANGED = "unchanged"  # every attempt changed nothing (each place changes with probability swap_prob)
DUPLICATE = "duplicate"  # no attempt gave a new sentence, and a changed one repeated an earlier copy

# One attempt's edit: 32-bit draws -> (tokens, tags) of the candidate copy.
Edit = Callable[[Sequence[int]], tuple[tuple[str, ...], tuple[str, ...]]]


def random_words(seed: int, record_id: str, copy: int, attempt: int, count: int) -> tuple[int, ...]:
    """`count` uniform 32-bit integers for one attempt at one copy of one record.

    Invariant: depends only on (seed, record id, copy index, attempt), never on the record's position in
    the input, so sharding the input cannot change any output. SHAKE-128 rather than `random.Random`:
    seeding a Mersenne Twister per record costs more than the whole swap, and `random`'s algorithms may
    change between Python versions while SHAKE-128 output is fixed by its standard.
    """
    key = f"{seed}\x00{record_id}\x00{copy}\x00{attempt}".encode()
    return struct.unpack(f"<{count}I", hashlib.shake_128(key).digest(4 * count))


def seeded_copies(record: Sentence, edit: Edit, draws_per_attempt: int, *, copies: int, seed: int,
                  max_attempts: int, name: str) -> tuple[list[Sentence], list[str]]:
    """Up to `copies` new records made by `edit`, and one outcome per copy.

    Invariants: every new record differs from the source and from the other copies; copy k is
    `<id>~<name>k` whether or not an earlier copy was dropped, so ids never shift between runs.
    """
    seen = {record.tokens}
    new_records, outcomes = [], []
    for k in range(copies):
        outcome = UNCHANGED
        for attempt in range(max_attempts):
            tokens, tags = edit(random_words(seed, record.id, k, attempt, draws_per_attempt))
            if tokens not in seen:
                outcome = ACCEPTED
                break
            if tokens != record.tokens:
                outcome = DUPLICATE
        outcomes.append(outcome)
        if outcome == ACCEPTED:
            seen.add(tokens)
            meta = {**record.meta, "augmenter": name, "source_id": record.id}
            new_records.append(Sentence(f"{record.id}~{name}{k}", tokens, tags, meta))
    return new_records, outcomes
