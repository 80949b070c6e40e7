"""Pure helpers of tasks.kinds.ner.modeling (and the engine's batching) on handwritten data, plus prediction on a tiny
random BERT."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoTokenizer, BertConfig, BertForTokenClassification

from tasks.basemodel import resolve_base_model
from tasks.engine import IGNORE_INDEX, Example, collate, length_grouped_batches
from tasks.kinds.ner.modeling import (
    align_labels,
    build_examples,
    encode_words,
    predict_tags,
    word_windows,
)


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(resolve_base_model("minilm"))


def tiny_model(tokenizer, labels: list[str]) -> BertForTokenClassification:
    torch.manual_seed(0)
    config = BertConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        vocab_size=tokenizer.vocab_size,
        num_labels=len(labels),
        id2label=dict(enumerate(labels)),
        label2id={label: i for i, label in enumerate(labels)},
    )
    return BertForTokenClassification(config)


def test_align_labels_marks_first_piece_only() -> None:
    # [CLS] new york ##er ##s [SEP]: word 1 spans three pieces.
    word_ids = [None, 0, 1, 1, 1, None]
    assert align_labels(word_ids, [1, 2]) == [IGNORE_INDEX, 1, 2, IGNORE_INDEX, IGNORE_INDEX, IGNORE_INDEX]


def test_align_labels_window_uses_sentence_word_indices() -> None:
    # A window that starts at word 3 of its sentence: labels are looked up by sentence index.
    word_ids = [None, 3, 4, 4, None]
    assert align_labels(word_ids, [0, 0, 0, 5, 6]) == [IGNORE_INDEX, 5, 6, IGNORE_INDEX, IGNORE_INDEX]


def test_align_labels_specials_only() -> None:
    assert align_labels([None, None], []) == [IGNORE_INDEX, IGNORE_INDEX]


def test_word_windows_short_sentence_is_one_window() -> None:
    assert word_windows([1, 2, 1], max_pieces=16) == [(0, 3)]


def test_word_windows_long_sentence_covers_each_word_once() -> None:
    counts = [1, 2, 3, 1, 1, 2, 1, 3, 1, 1]
    windows = word_windows(counts, max_pieces=6)  # 4 pieces per window
    covered = [w for start, end in windows for w in range(start, end)]
    assert covered == list(range(len(counts)))
    assert all(sum(counts[s:e]) <= 4 for s, e in windows)
    assert len(windows) > 1


def test_word_windows_huge_word_gets_its_own_window() -> None:
    assert word_windows([1, 50, 1], max_pieces=8) == [(0, 1), (1, 2), (2, 3)]


def test_word_windows_empty_sentence() -> None:
    assert word_windows([], max_pieces=8) == []


def test_build_examples_truncates_a_huge_word_but_keeps_it(tokenizer) -> None:
    pieces = [[7], list(range(1000, 1020)), [8]]
    examples = build_examples(tokenizer, [pieces], max_length=8, word_labels=[[1, 2, 3]])
    assert [e.word_ids[1] for e in examples] == [0, 1, 2]
    assert all(len(e.input_ids) <= 8 for e in examples)
    assert examples[1].labels == [IGNORE_INDEX, 2] + [IGNORE_INDEX] * 6


def test_encode_words_gives_every_word_a_piece(tokenizer) -> None:
    pieces = encode_words(tokenizer, [["hello", "\u200b", "worldwidewebbing"]])
    assert len(pieces[0]) == 3
    assert all(len(p) >= 1 for p in pieces[0])


def test_collate_pads_to_longest_in_batch() -> None:
    examples = [
        Example(0, [101, 5, 102], [None, 0, None], [IGNORE_INDEX, 1, IGNORE_INDEX]),
        Example(1, [101, 5, 6, 7, 102], [None, 0, 1, 2, None], [IGNORE_INDEX, 1, 2, 0, IGNORE_INDEX]),
    ]
    batch = collate(examples, pad_id=0)
    assert batch["input_ids"].shape == (2, 5)
    assert batch["input_ids"][0].tolist() == [101, 5, 102, 0, 0]
    assert batch["attention_mask"][0].tolist() == [1, 1, 1, 0, 0]
    assert batch["labels"][0].tolist()[3:] == [IGNORE_INDEX, IGNORE_INDEX]


def test_length_grouped_batches_is_a_seeded_partition() -> None:
    lengths = [5, 50, 6, 48, 7, 49, 8, 47]
    batches = length_grouped_batches(lengths, batch_size=2, seed=1)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    assert batches == length_grouped_batches(lengths, batch_size=2, seed=1)
    # Sorted inside the chunk: each batch pairs neighbours in length.
    assert all(abs(lengths[b[0]] - lengths[b[-1]]) <= 2 for b in batches)


def test_predict_tags_one_tag_per_word_beyond_max_length(tokenizer) -> None:
    labels = ["O", "B-person", "I-person"]
    model = tiny_model(tokenizer, labels)
    long_sentence = [f"word{i}" for i in range(40)]  # far more than 16 pieces
    sentences = [["hi"], long_sentence, ["new", "york", "city"]]
    tags = predict_tags(model, tokenizer, sentences, batch_size=2, max_length=16)
    assert [len(t) for t in tags] == [1, 40, 3]
    assert all(tag in labels for row in tags for tag in row)
    assert model.training  # the caller's mode is restored
