"""Synonym swap for NER records: replace some `O`-tagged words by a WordNet synonym, never an entity token.

A word is swapped only when it is tagged `O`, is a plain word (letters only, 3 or more, so no mention, URL,
hashtag, number or punctuation), is not a stopword, has a plain casing pattern (lower, Title or UPPER) and
has a synonym in the table. Each synonym is one word, so tokens and tags stay aligned and the tags are the
source's tags unchanged. Random choices depend only on (seed, record id, copy index, attempt), never on a
record's position: shards of the input give exactly the records one run over all of it gives.

The synonym table (tasks/augmenters/wordnet.py) maps a lowercase word to the single-word synonyms of its
dominant part of speech, from WordNet 3.0; a custom mapping may replace it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import compress
from pathlib import Path

from tasks.augmenters.seeded import ACCEPTED, DUPLICATE, UNCHANGED, seeded_copies
from tasks.augmenters.wordnet import MIN_WORD_LENGTH, clean_table, load_synonym_table
from tasks.progress import track
from tasks.sentence import Sentence

NO_ELIGIBLE_WORD = "no_eligible_word"  # no O-tagged word with a synonym: nothing to swap
OUTCOMES = (ACCEPTED, NO_ELIGIBLE_WORD, UNCHANGED, DUPLICATE)

# Function words and tweet fillers: swapping them changes grammar, not content, and WordNet's entries for
# them are mostly misleading homographs ("will" -> "testament", "can" -> "tin", "may" -> "May").
STOPWORDS = frozenset("""
a about above after again against ago all almost also although always am among an and another any anybody
anyone anything anyway anywhere are around as at away back be became because become been before being below
beside besides between beyond both but by can cannot could did do does doing done down during each either
else enough even ever every everybody everyone everything everywhere few for from further get gets getting
got gotten had has have having he her here hers herself him himself his how however i if in inside instead
into is it its itself just least less let like lot lots many may maybe me might mine more most much must my
myself near neither never next no nobody none noone nor not nothing now nowhere of off often on once one only
onto or other others otherwise ought our ours ourselves out outside over own per perhaps please quite rather
really same several shall she should since so some somebody someone something sometimes somewhere still such
than that the their theirs them themselves then there therefore these they this those though through thus
till to together too toward towards under unless until up upon us very via was we well were what whatever
when whenever where wherever whether which while who whoever whole whom whose why will with within without
would yet you your yours yourself yourselves
gonna gotta wanna lol lmao omg rofl haha hahaha yeah yes yep nope okay
""".split())


@dataclass(frozen=True)
class SynonymParams:
    """The knobs of a synonym swap. Invariant (checked): 0 < swap_prob <= 1, copies >= 0, max_attempts >= 1.

    No defaults: the stage takes every value from params.yaml (`augment.synonym`, whose schema also asks
    copies >= 1); the core itself accepts copies=0 (no new records).
    """

    swap_prob: float  # probability that each eligible word is swapped
    copies: int  # new records wanted per source record
    seed: int
    max_attempts: int  # tries per copy to get a changed sentence that is not a duplicate

    def __post_init__(self) -> None:
        if not 0 < self.swap_prob <= 1:
            raise ValueError(f"swap_prob must be in (0, 1], got {self.swap_prob}")
        if self.copies < 0 or self.max_attempts < 1:
            raise ValueError(f"need copies >= 0 and max_attempts >= 1, got {self.copies} and {self.max_attempts}")


# ---------------------------------------------------------------------------------------------- word rules


def casing(word: str) -> str | None:
    """'lower', 'title' or 'upper' for a word in that casing pattern; None for mixed case (iPhone, McDonald)."""
    if word.islower():
        return "lower"
    if word.isupper():
        return "upper"
    if word[:1].isupper() and word[1:].islower():
        return "title"
    return None


def apply_casing(word: str, pattern: str) -> str:
    """`word` in the casing pattern `pattern` ('lower', 'title' or 'upper')."""
    if pattern == "upper":
        return word.upper()
    if pattern == "title":
        return word[:1].upper() + word[1:].lower()
    return word.lower()


def is_swappable(token: str, tag: str) -> bool:
    """Whether a token may be replaced at all (the table decides whether it has a synonym).

    Invariant: False for every entity token (any tag but `O`). Letters only rules out @mentions, #hashtags,
    URLs, numbers, words with digits, punctuation and contractions in one test; short words and stopwords
    are function words or tweet slang; mixed case (iPhone) often marks a name that was not annotated.
    """
    return (tag == "O" and len(token) >= MIN_WORD_LENGTH and token.isalpha()
            and casing(token) is not None and token.lower() not in STOPWORDS)


# ------------------------------------------------------------------------------------------ the swapping


def cased_synonyms(token: str, table: Mapping[str, Sequence[str]]) -> tuple[str, ...]:
    """The synonyms that may replace an O-tagged `token`, in its casing pattern; () when it must stay."""
    if not is_swappable(token, "O"):
        return ()
    pattern = casing(token)
    return tuple(apply_casing(s, pattern) for s in table.get(token.lower(), ()))


class SynonymChoices(dict[str, tuple[str, ...]]):
    """token -> `cased_synonyms(token, table)`, computed on a token's first lookup.

    Tokens repeat a lot in a corpus: a dict hit is far cheaper than the word rules.
    """

    def __init__(self, table: Mapping[str, Sequence[str]]) -> None:
        super().__init__()
        self.table = table

    def __missing__(self, token: str) -> tuple[str, ...]:
        choices = self[token] = cased_synonyms(token, self.table)
        return choices


def swap_candidates(record: Sentence, choices: Mapping[str, tuple[str, ...]]) -> list[tuple[int, tuple[str, ...]]]:
    """(position, cased synonyms) of every O-tagged token that may be swapped. Invariant: no entity token."""
    # map() and compress() loop in C over every token; the Python loop sees only the few with synonyms.
    options = list(map(choices.__getitem__, record.tokens))
    tags = record.tags
    return [(i, options[i]) for i in compress(range(len(options)), options) if tags[i] == "O"]


def swap_once(tokens: tuple[str, ...], candidates: Sequence[tuple[int, tuple[str, ...]]],
              draws: Sequence[int], threshold: int) -> tuple[str, ...]:
    """Tokens with each candidate position swapped when its draw is under `threshold` (swap_prob * 2**32).

    `draws` holds two 32-bit integers per candidate: whether to swap, and which synonym.
    Invariant: same length as `tokens`; only candidate positions can change.
    """
    new = list(tokens)
    for j, (i, options) in enumerate(candidates):
        if draws[2 * j] < threshold:
            new[i] = options[draws[2 * j + 1] * len(options) >> 32]
    return tuple(new)


def synonym_copies(record: Sentence, choices: Mapping[str, tuple[str, ...]], params: SynonymParams,
                   name: str = "synonym") -> tuple[list[Sentence], list[str]]:
    """Up to `params.copies` new records from one source, and one outcome per copy.

    Invariants: every new record has the source's tags, differs from the source and from the other
    copies, and changes only swappable O-tagged tokens; copy k is `<id>~<name>k` whether or not an
    earlier copy was dropped, so ids never shift between runs.
    """
    if len(record.tokens) != len(record.tags):
        raise ValueError(f"record {record.id!r}: {len(record.tokens)} tokens but {len(record.tags)} tags; "
                         "the validate step should have stopped it")
    candidates = swap_candidates(record, choices)
    if not candidates:
        return [], [NO_ELIGIBLE_WORD] * params.copies
    threshold = round(params.swap_prob * 2**32)

    def edit(draws: Sequence[int]) -> tuple[tuple[str, ...], tuple[str, ...]]:
        return swap_once(record.tokens, candidates, draws, threshold), record.tags

    return seeded_copies(record, edit, 2 * len(candidates), copies=params.copies, seed=params.seed,
                         max_attempts=params.max_attempts, name=name)


class SynonymSwap:
    """Label-preserving synonym swap (seeded; the WordNet table is loaded by the constructor, not at import)."""

    name = "synonym"

    def __init__(self, swap_prob: float, copies: int, seed: int,
                 synonyms: Mapping[str, Sequence[str]] | None = None, *, max_attempts: int,
                 cache_path: Path | None = None) -> None:
        """`synonyms=None` loads the WordNet table (file cache at `cache_path` if given); a given mapping
        (tests, custom lexicons) is cleaned with the same rules as the WordNet table."""
        self.params = SynonymParams(swap_prob, copies, seed, max_attempts)
        self.table = load_synonym_table(cache_path=cache_path) if synonyms is None else clean_table(synonyms)
        self.choices = SynonymChoices(self.table)

    def augment(self, records: Sequence[Sentence]) -> tuple[list[Sentence], Counter]:
        """Return only NEW records (never the inputs) and counts by outcome (every key of OUTCOMES present).

        Invariants: sum(counts.values()) == len(records) * copies; the output for a record depends only on
        (seed, record id, record content), so running shards and concatenating their outputs (and adding
        their counts) equals one run over all records.
        """
        counts = dict.fromkeys(OUTCOMES, 0)  # stable keys for reports
        augmented: list[Sentence] = []
        for record in track(records, f"augment: {self.name}, sentences", unit="sentences"):
            new_records, outcomes = synonym_copies(record, self.choices, self.params, self.name)
            augmented += new_records
            for outcome in outcomes:
                counts[outcome] += 1
        return augmented, Counter(counts)
