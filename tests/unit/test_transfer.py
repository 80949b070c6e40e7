"""The transfer set (tasks/transfer.py): perturbed copies of train sentences that only the teacher labels."""

from __future__ import annotations

from collections import Counter

import pytest

from tasks.sentence import Sentence
from tasks.transfer import new_texts, perturbed_copies


def sentences(count: int) -> list[Sentence]:
    """Up to 50 distinct 8-word sentences over 50 words, each word about equally frequent."""
    return [Sentence(f"s{i}", tuple(f"w{(i * 7 + j * 3) % 50}" for j in range(8)), ("O",) * 8) for i in range(count)]


def test_each_copy_keeps_its_sources_length_and_names_it() -> None:
    train = sentences(20)

    copies = perturbed_copies(train, copies=2, replace_prob=0.25, seed=13)

    sources = {s.id: s for s in train}
    # A draw repeats the original word 1 time in 50: a copy left equal to its source is left out.
    assert 36 <= len(copies) < 40
    rounds = [int(c.id.rsplit("transfer", 1)[1]) for c in copies]
    assert rounds == sorted(rounds) and set(rounds) == {1, 2}  # copy 1 of every row, then copy 2
    for copy in copies:
        source = sources[copy.meta["source_id"]]
        assert copy.id.startswith(f"{source.id}~transfer")
        assert len(copy.tokens) == len(source.tokens) and copy.tags == ("O",) * len(copy.tokens)
        assert copy.tokens != source.tokens and copy.meta["augmenter"] == "transfer"


def test_words_are_replaced_at_the_asked_rate_by_train_words() -> None:
    train = sentences(50)
    vocabulary = {word for s in train for word in s.tokens}
    sources = {s.id: s for s in train}

    copies = perturbed_copies(train, copies=4, replace_prob=0.25, seed=13)

    changed = sum(a != b for c in copies for a, b in zip(c.tokens, sources[c.meta["source_id"]].tokens, strict=True))
    # Drawn with p = 0.25 (one word at least), and a draw repeats the original word 1 time in 50.
    assert len(copies) > 190 and changed / (len(copies) * 8) == pytest.approx(0.25, abs=0.04)
    assert {word for c in copies for word in c.tokens} <= vocabulary


def test_copies_are_reproducible_and_do_not_depend_on_row_order() -> None:
    train = sentences(30)

    first = perturbed_copies(train, copies=1, replace_prob=0.3, seed=13)
    again = perturbed_copies(list(reversed(train)), copies=1, replace_prob=0.3, seed=13)
    other_seed = perturbed_copies(train, copies=1, replace_prob=0.3, seed=14)

    assert {c.id: c.tokens for c in first} == {c.id: c.tokens for c in again}
    assert [c.tokens for c in first] != [c.tokens for c in other_seed]


def test_no_copy_repeats_a_train_sentence_or_another_copy() -> None:
    # Two-word sentences over three words: most draws land on a train sentence or an earlier copy.
    train = [Sentence(f"s{i}", tokens, ("O", "O")) for i, tokens in
             enumerate([("a", "b"), ("b", "c"), ("c", "a"), ("a", "a")])]

    copies = perturbed_copies(train, copies=3, replace_prob=0.5, seed=1)

    texts = [c.tokens for c in copies]
    assert len(set(texts)) == len(texts)
    assert not set(texts) & {s.tokens for s in train}
    assert Counter(len(t) for t in texts) == Counter({2: len(texts)})


def test_no_copies_when_asked_for_none() -> None:
    assert perturbed_copies(sentences(5), copies=0, replace_prob=0.5, seed=1) == []
    assert perturbed_copies([], copies=2, replace_prob=0.5, seed=1) == []


def test_the_users_texts_join_the_set_once_each_and_only_when_new() -> None:
    train = [Sentence("t0", ("a", "b"), ("B-x", "O"), {"label": "pos"}), Sentence("t1", ("c",), ("O",))]
    copies = [Sentence("t1~transfer1", ("d",), ("O",))]
    texts = [Sentence(f"mine.txt:{i}", tokens, ("O",) * len(tokens))
             for i, tokens in enumerate([("a", "b"), ("d",), ("e", "f"), (), ("e", "f"), ("g",)], start=1)]

    added = new_texts(texts, train, copies)

    # A train sentence, a copy, an empty text and a repeat are left out; the rest keep their order.
    assert [(s.id, s.tokens, s.tags) for s in added] == [
        ("transfer-text:mine.txt:3", ("e", "f"), ("O", "O")), ("transfer-text:mine.txt:6", ("g",), ("O",))]
    assert added[0].meta == {"label": "pos", "source_id": "mine.txt:3", "augmenter": "transfer-text"}
    assert new_texts([], train, copies) == [] and new_texts(texts, [], []) == []
