"""Distillation's transfer set: perturbed copies of the train rows that only the teacher labels.

The candidate has seen every train sentence (and its augmented copies) for several epochs, so its logits
there are close to the gold labels and tell a student little more than the gold labels do. On text it has
not seen, its soft targets carry what it learned ("dark knowledge": how sure it is, which classes it
confuses). The transfer set is that text, made from train itself, as Tang et al. (2019, "Distilling
task-specific knowledge from BERT into simple neural networks") and TinyBERT (Jiao et al. 2020) do: each
copy replaces each word, with probability `replace_prob`, by a word drawn from the train split's own
vocabulary by frequency. A replaced word may be an entity name of another sentence or a common word, so the
copies put the teacher's decisions in new contexts.

The copies keep their source's length, but not its labels: the student learns them from the teacher's
logits alone (tasks/distill.py: their rows carry no gold term). Their tags are all "O" only so that every
kind marks the positions a teacher term sums over exactly as on gold rows (NER: each word's first piece).
A copy is a function of its source sentence, the copy index and the seed, so the teacher_logits stage and
the distill stage build the same set.

A user who has unlabelled in-domain text (`compress.transfer_text`) adds it to the set: real text the
teacher has not seen is the transfer set the method was made for, and the copies are its stand-in.
"""

from __future__ import annotations

import itertools
import random
from collections import Counter
from collections.abc import Sequence

from tasks.sentence import Sentence

TRANSFER_ID = "{source}~transfer{copy}"  # a copy's id names its source row
TEXT_ID = "transfer-text:{source}"  # a user's text: its id names file and line


def perturbed_copies(sentences: Sequence[Sentence], copies: int, replace_prob: float, seed: int) -> list[Sentence]:
    """`copies` perturbed copies of each sentence (copy by copy, in the sentences' order); copies that equal a
    train sentence are left out (the teacher's logits there are the near-gold ones the set exists to avoid)."""
    if copies == 0 or not sentences:
        return []
    words, weights = vocabulary(sentences)
    seen = {sentence.tokens for sentence in sentences}
    result = []
    for copy, sentence in itertools.product(range(1, copies + 1), sentences):
        rng = random.Random(f"{seed}/{copy}/{sentence.id}")  # independent of the other rows and their order
        tokens = replaced_words(sentence.tokens, replace_prob, words, weights, rng)
        if tokens in seen:
            continue
        seen.add(tokens)
        meta = {**sentence.meta, "source_id": sentence.id, "augmenter": "transfer"}
        result.append(Sentence(TRANSFER_ID.format(source=sentence.id, copy=copy), tokens, ("O",) * len(tokens), meta))
    return result


def new_texts(texts: Sequence[Sentence], train: Sequence[Sentence], copies: Sequence[Sentence]) -> list[Sentence]:
    """The user's unlabelled texts that are neither empty nor a train row, a copy or an earlier text, as
    transfer rows. Their meta is the first train row's (a classifier's label only marks the one position its
    teacher term sums over), with `source_id` naming the file and line."""
    if not texts or not train:
        return []
    seen = {sentence.tokens for sentence in [*train, *copies]}
    result = []
    for text in texts:
        if text.tokens and text.tokens not in seen:
            seen.add(text.tokens)
            meta = {**train[0].meta, "source_id": text.id, "augmenter": "transfer-text"}
            result.append(Sentence(TEXT_ID.format(source=text.id), text.tokens, ("O",) * len(text.tokens), meta))
    return result


def count_texts(rows: Sequence) -> int:
    """How many transfer rows (of any kind: they keep their ids) came from the user's text."""
    prefix = TEXT_ID.format(source="")
    return sum(1 for row in rows if row.id.startswith(prefix))


def vocabulary(sentences: Sequence[Sentence]) -> tuple[list[str], list[int]]:
    """The split's distinct words, in a fixed order, and how often each occurs."""
    counts = Counter(word for sentence in sentences for word in sentence.tokens)
    words = sorted(counts)
    return words, [counts[word] for word in words]


def replaced_words(tokens: tuple[str, ...], replace_prob: float, words: list[str], weights: list[int],
                   rng: random.Random) -> tuple[str, ...]:
    """Each word replaced with probability `replace_prob` by a vocabulary word drawn by frequency; at least one
    word is drawn (a draw may still repeat the word it replaces: `perturbed_copies` leaves such copies out)."""
    if not tokens:
        return tokens
    chosen = [i for i in range(len(tokens)) if rng.random() < replace_prob] or [rng.randrange(len(tokens))]
    drawn = rng.choices(words, weights, k=len(chosen))
    result = list(tokens)
    for index, word in zip(chosen, drawn, strict=True):
        result[index] = word
    return tuple(result)
