"""Name swap: mentions replaced by other train mentions of the same type, with valid tags, seeded, shardable."""

from __future__ import annotations

import pytest

from tasks import augment
from tasks.augmenters.name_swap import ACCEPTED, NO_MENTION, OUTCOMES, NameSwap, mention_pool
from tasks.iob import entity_spans, iob2_errors
from tasks.kinds.ner.params import NerAugmentParams
from tasks.params import ParamsError, load_params
from tasks.sentence import Sentence
from tests.helpers import ROOT, set_params


def sentence(spec: str, rid: str) -> Sentence:
    """'met John/B-person Smith/I-person today' -> a sentence; a token without /TAG is O."""
    tokens, tags = [], []
    for item in spec.split():
        token, sep, tag = item.rpartition("/")
        tokens.append(token if sep else item)
        tags.append(tag if sep else "O")
    return Sentence(rid, tuple(tokens), tuple(tags))


TRAIN = [
    sentence("met John/B-person Smith/I-person in Paris/B-geo-loc today", "s1"),
    sentence("Ann/B-person says hi to Bob/B-person", "s2"),
    sentence("Madonna/B-person live at Wembley/B-facility", "s3"),
    sentence("no names here at all", "s4"),
    sentence("Paris/B-geo-loc is lovely", "s5"),
]


def swap(records, copies: int = 1, seed: int = 13, swap_prob: float = 1.0, types=("person",)):
    return NameSwap(mention_pool(TRAIN, types), types, swap_prob, copies, seed, max_attempts=3).augment(records)


def test_the_pool_holds_each_distinct_train_mention_of_the_chosen_types_sorted() -> None:
    assert mention_pool(TRAIN, ["person", "geo-loc"]) == {
        "person": [("Ann",), ("Bob",), ("John", "Smith"), ("Madonna",)],
        "geo-loc": [("Paris",)],
    }


def test_each_person_becomes_another_train_name_with_tags_for_its_length() -> None:
    new, counts = swap(TRAIN)
    assert counts[ACCEPTED] == 3 and counts[NO_MENTION] == 2 and set(counts) == set(OUTCOMES)
    names = set(mention_pool(TRAIN, ["person"])["person"])
    for record in new:
        source = next(s for s in TRAIN if s.id == record.meta["source_id"])
        assert record.id == f"{source.id}~name_swap0" and record.meta["augmenter"] == "name_swap"
        assert not iob2_errors(record.tags)
        old_spans, new_spans = entity_spans(source.tags), entity_spans(record.tags)
        assert [t for t, _, _ in new_spans] == [t for t, _, _ in old_spans]  # same types, same order
        for (entity, start, end), (_, old_start, old_end) in zip(new_spans, old_spans, strict=True):
            mention, old = record.tokens[start:end], source.tokens[old_start:old_end]
            if entity == "person":
                assert mention in names and mention != old  # swap_prob 1: every name changes
            else:
                assert mention == old  # other types are never touched
    john = next(r for r in new if r.meta["source_id"] == "s1")
    assert john.tokens[0] == "met" and john.tokens[-3:] == ("in", "Paris", "today")


def test_a_name_alone_in_the_pool_has_nothing_to_become() -> None:
    only = [sentence("Madonna/B-person sings", "a")]
    new, counts = NameSwap(mention_pool(only, ["person"]), ["person"], 1.0, 2, 13, max_attempts=3).augment(only)
    assert new == [] and counts[NO_MENTION] == 2


def test_copies_differ_and_the_output_depends_only_on_seed_and_record() -> None:
    new, _ = swap(TRAIN, copies=3)
    assert len({r.tokens for r in new}) == len(new) >= 6
    assert swap(TRAIN, copies=3)[0] == new
    assert swap(TRAIN, copies=3, seed=14)[0] != new
    # Shards (with the pool of the whole split, as the stage builds it) give what one run gives.
    halves = swap(TRAIN[:2], copies=3)[0] + swap(TRAIN[2:], copies=3)[0]
    assert halves == new


def test_the_stage_hands_every_shard_the_pool_of_the_whole_train_split() -> None:
    params = load_params(ROOT / "params.yaml").augment.model_copy(update={"methods": ["name_swap"]})
    whole, _ = augment.generate("name_swap", params, TRAIN)
    shared = augment.shared_input("name_swap", params, TRAIN)
    pieces = [augment.augment_shard("name_swap", type(params), params.model_dump_json(), shared, part)
              for part in (TRAIN[:1], TRAIN[1:3], TRAIN[3:])]
    assert [r for records, _ in pieces for r in records] == whole and whole


def test_name_swap_is_an_ner_method_only(tmp_path) -> None:
    assert "name_swap" in NerAugmentParams.model_fields
    (tmp_path / "params.yaml").write_text((ROOT / "params-sentiment.yaml").read_text())
    set_params(tmp_path, augment={"methods": ["name_swap"]})
    with pytest.raises(ParamsError, match=r"augment\.methods"):
        load_params(tmp_path / "params.yaml")
