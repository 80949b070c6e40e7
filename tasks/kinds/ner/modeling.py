"""Token classification helpers: encoding, windowing, prediction (batching: tasks/engine.py).

Words are the unit of labelling; sub-word pieces are an implementation detail of the encoder. Every
helper here keeps one rule: a word's label and prediction live on its first piece, and every word
gets exactly one prediction, however long its sentence (long sentences are split into windows,
never truncated).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from seqeval.metrics import f1_score
from seqeval.scheme import IOB2

from tasks.engine import IGNORE_INDEX, Example, autocast, collate, model_device
from tasks.progress import Progress

SPECIAL_TOKENS_PER_WINDOW = 2  # [CLS] ... [SEP]
def first_piece_positions(word_ids: Sequence[int | None]) -> list[tuple[int, int]]:
    """(position, word index) of the first piece of each word; specials (None) are skipped."""
    positions = []
    previous: int | None = None
    for position, word in enumerate(word_ids):
        if word is not None and word != previous:
            positions.append((position, word))
        previous = word
    return positions


def align_labels(
    word_ids: Sequence[int | None], word_labels: Sequence[int], continuation: Sequence[int] | None = None
) -> list[int]:
    """Give each piece a label id: a word's first piece gets the word's label, specials IGNORE_INDEX.

    Later pieces of a word get IGNORE_INDEX, or, when `continuation` is given (label id -> the id its
    word continues with: B-X -> I-X, others unchanged), that continuation label, which is the
    "label all tokens" variant. Either way predictions are read from first pieces only.

    Invariant: the result has len(word_ids) entries, and without `continuation` exactly one
    non-ignored entry per distinct word in `word_ids`, so the loss counts each word once, like the
    word-level metric does.
    """
    labels = [IGNORE_INDEX] * len(word_ids)
    first = dict(first_piece_positions(word_ids))
    for position, word in enumerate(word_ids):
        if word is None:
            continue
        if position in first:
            labels[position] = word_labels[word]
        elif continuation is not None:
            labels[position] = continuation[word_labels[word]]
    return labels


def continuation_ids(labels: Sequence[str]) -> list[int]:
    """For each label id, the id a word's later pieces carry: B-X -> I-X, every other label itself."""
    index = {label: i for i, label in enumerate(labels)}
    return [index.get("I-" + label[2:], i) if label.startswith("B-") else i for i, label in enumerate(labels)]


def word_windows(piece_counts: Sequence[int], max_pieces: int) -> list[tuple[int, int]]:
    """Split words into consecutive (start, end_exclusive) windows of at most max_pieces - 2 pieces.

    Invariant: the windows cover every word exactly once, in order. A word with more pieces than fit
    gets a window of its own (its pieces are truncated later; its first piece survives, so it is
    still predicted).
    """
    budget = max_pieces - SPECIAL_TOKENS_PER_WINDOW
    if budget < 1:
        raise ValueError(
            f"max_pieces must leave room for at least one piece besides CLS/SEP, got {max_pieces}"
        )
    windows: list[tuple[int, int]] = []
    start, used = 0, 0
    for word, count in enumerate(piece_counts):
        if word > start and used + count > budget:
            windows.append((start, word))
            start, used = word, 0
        used += count
    if len(piece_counts) > start:
        windows.append((start, len(piece_counts)))
    return windows


def encode_words(tokenizer, sentences: Sequence[Sequence[str]]) -> list[list[list[int]]]:
    """Piece ids per word per sentence, from one fast-tokenizer call over the whole dataset.

    A word the tokenizer reduces to nothing (e.g. a lone zero-width or control character) becomes
    [UNK], so it still has a first piece to carry its label and prediction.
    """
    if not sentences:
        return []
    encoded = tokenizer(
        [list(words) for words in sentences],
        is_split_into_words=True,
        add_special_tokens=False,
        truncation=False,
        verbose=False,  # sentences longer than the model limit are windowed below, not truncated
    )
    result = []
    for index, words in enumerate(sentences):
        pieces: list[list[int]] = [[] for _ in words]
        for piece_id, word in zip(encoded["input_ids"][index], encoded.word_ids(index), strict=True):
            if word is not None:
                pieces[word].append(piece_id)
        result.append([p or [tokenizer.unk_token_id] for p in pieces])
    return result


def build_examples(
    tokenizer,
    word_pieces: Sequence[Sequence[Sequence[int]]],
    max_length: int,
    word_labels: Sequence[Sequence[int]] | None = None,
    continuation: Sequence[int] | None = None,
) -> list[Example]:
    """Cut every sentence into windows of at most max_length pieces (CLS and SEP included)."""
    budget = max_length - SPECIAL_TOKENS_PER_WINDOW
    examples = []
    for sentence, pieces in enumerate(word_pieces):
        for start, end in word_windows([len(p) for p in pieces], max_length):
            ids: list[int] = []
            word_ids: list[int | None] = []
            for word in range(start, end):
                kept = pieces[word][: budget - len(ids)]  # only a lone oversized word is cut here
                ids += kept
                word_ids += [word] * len(kept)
            labels = None
            word_ids = [None, *word_ids, None]
            if word_labels is not None:
                labels = align_labels(word_ids, word_labels[sentence], continuation)
            input_ids = [tokenizer.cls_token_id, *ids, tokenizer.sep_token_id]
            examples.append(Example(sentence, input_ids, word_ids, labels))
    return examples


def predict_label_ids(
    model: torch.nn.Module,
    examples: Sequence[Example],
    word_counts: Sequence[int],
    batch_size: int,
    pad_id: int,
    progress: Progress | None = None,
) -> list[list[int]]:
    """Label id per word per sentence: argmax at each word's first piece, windows stitched back. `progress`
    counts the windows done."""
    return predict_words(model, examples, word_counts, batch_size, pad_id, progress)[0]


def batched_logits(model: torch.nn.Module, examples: Sequence[Example], batch_size: int, pad_id: int):
    """(examples, logits) per batch, in eval mode without gradients (the model's mode restored after). Longest
    first: similar lengths share a batch (little padding) and memory peaks early."""
    order = sorted(range(len(examples)), key=lambda i: -len(examples[i].input_ids))
    device = model_device(model)
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for start in range(0, len(order), batch_size):
                chunk = [examples[i] for i in order[start : start + batch_size]]
                batch = {k: v.to(device) for k, v in collate(chunk, pad_id).items() if k != "labels"}
                with autocast(device):
                    logits = model(**batch).logits
                yield chunk, logits  # outside autocast: the caller's softmax and argmax run as before
    finally:
        model.train(was_training)


def predict_words(
    model: torch.nn.Module,
    examples: Sequence[Example],
    word_counts: Sequence[int],
    batch_size: int,
    pad_id: int,
    progress: Progress | None = None,
) -> tuple[list[list[int]], list[list[float]]]:
    """Label id and its probability (the softmax's maximum) per word per sentence, read at each word's first
    piece, windows stitched back. `progress` counts the windows done."""
    predictions = [[-1] * count for count in word_counts]
    probabilities = [[0.0] * count for count in word_counts]
    for chunk, logits in batched_logits(model, examples, batch_size, pad_id):
        best = logits.argmax(dim=-1).cpu().tolist()
        top = logits.float().softmax(dim=-1).max(dim=-1).values.cpu().tolist()
        for example, row, row_top in zip(chunk, best, top, strict=True):
            for position, word in first_piece_positions(example.word_ids):
                predictions[example.sentence][word] = row[position]
                probabilities[example.sentence][word] = row_top[position]
        if progress is not None:
            progress.advance(len(chunk))
    return predictions, probabilities


def word_distributions(
    model: torch.nn.Module,
    examples: Sequence[Example],
    word_counts: Sequence[int],
    batch_size: int,
    pad_id: int,
) -> list[np.ndarray]:
    """The softmax over every label per word, per sentence: an array [words, labels] each (the label audit
    needs the whole distribution, not only the predicted tag's probability), read at each word's first piece,
    windows stitched back. Rows are float64: cleanlab sums them."""
    classes = model.config.num_labels
    rows = [np.zeros((count, classes)) for count in word_counts]
    for chunk, logits in batched_logits(model, examples, batch_size, pad_id):
        probabilities = logits.float().softmax(dim=-1).cpu().double().numpy()
        for example, piece_rows in zip(chunk, probabilities, strict=True):
            for position, word in first_piece_positions(example.word_ids):
                rows[example.sentence][word] = piece_rows[position]
    return rows


def predict_tags(
    model: torch.nn.Module, tokenizer, sentences: Sequence[Sequence[str]], batch_size: int, max_length: int,
    what: str = "",
) -> list[list[str]]:
    """One predicted tag per word for each sentence, in input order (long sentences are windowed). With
    `what`, progress lines name it and count the windows (tasks/progress.py)."""
    return predict_tags_and_scores(model, tokenizer, sentences, batch_size, max_length, what)[0]


def predict_tags_and_scores(
    model: torch.nn.Module, tokenizer, sentences: Sequence[Sequence[str]], batch_size: int, max_length: int,
    what: str = "",
) -> tuple[list[list[str]], list[list[float]]]:
    """`predict_tags`, and each tag's probability."""
    examples = build_examples(tokenizer, encode_words(tokenizer, sentences), max_length)
    progress = Progress(f"{what}, windows", len(examples), "windows") if what else None
    ids, scores = predict_words(model, examples, [len(s) for s in sentences], batch_size, tokenizer.pad_token_id,
                                progress)
    if progress is not None:
        progress.finish()
    id2label = model.config.id2label
    return [[id2label[i] for i in row] for row in ids], scores


def strict_f1(gold: Sequence[Sequence[str]], predicted: Sequence[Sequence[str]]) -> float:
    """Entity-level micro F1, seqeval strict IOB2 (an entity counts only if type and span match)."""
    return float(f1_score(list(gold), list(predicted), mode="strict", scheme=IOB2, zero_division=0))
