"""Every data-contract check of each kind ends its failure with the params change that fixes or accepts it,
naming keys that exist; `validate.soft.all` applies a soft list at every checkpoint."""

from __future__ import annotations

import re
from importlib import import_module
from typing import Literal, get_args, get_origin

import pytest
from pydantic import BaseModel, ValidationError

from tasks.params import Checkpoint, hint_for

KINDS = ("ner", "textclass")
KEY_IN_BACKTICKS = re.compile(r"`([a-z_]+(?:\.[a-z_]+)+)(?::[^`]*)?`")


def kind_params(kind: str):
    return import_module(f"tasks.kinds.{kind}.params")


def key_exists(model: type[BaseModel], dotted: str) -> bool:
    """Whether `dotted` (e.g. `validate.soft.raw`) is a key of the params schema `model`: a field by its YAML
    name, a field of a nested section, or a key a mapping field allows (a Literal key type)."""
    node, parts = model, dotted.split(".")
    while parts:
        part = parts.pop(0)
        if isinstance(node, type) and issubclass(node, BaseModel):
            field = next((f for name, f in node.model_fields.items() if (f.alias or name) == part), None)
            if field is None:
                return False
            node = field.annotation
        elif get_origin(node) is dict and get_origin(get_args(node)[0]) is Literal:
            if part not in get_args(get_args(node)[0]):
                return False
            node = get_args(node)[1]
        else:
            return False
    return True


@pytest.mark.parametrize("kind", KINDS)
def test_every_check_of_the_kind_has_exactly_one_hint(kind: str):
    module = kind_params(kind)
    assert set(module.HINTS) == set(module.CHECKS)


@pytest.mark.parametrize("checkpoint", get_args(Checkpoint))
@pytest.mark.parametrize("kind", KINDS)
def test_each_hint_is_one_line_naming_existing_params_keys(kind: str, checkpoint: str):
    module = kind_params(kind)
    for check in module.CHECKS:
        hint = hint_for(module.HINTS, check, checkpoint)
        keys = KEY_IN_BACKTICKS.findall(hint)
        assert "\n" not in hint and keys, f"{kind} {check}: {hint!r} names no params key"
        missing = [key for key in keys if not key_exists(module.SCHEMA, key)]
        assert missing == [], f"{kind} {check} names keys the params schema lacks: {missing}"


def test_the_key_check_itself_tells_missing_keys_apart():
    schema = kind_params("ner").SCHEMA
    assert key_exists(schema, "validate.soft.all") and key_exists(schema, "clean.decontaminate_train")
    assert not key_exists(schema, "validate.soft.everywhere") and not key_exists(schema, "clean.bio_repairs")
    assert not key_exists(kind_params("textclass").SCHEMA, "ingest.tag_scheme")


@pytest.mark.parametrize("kind", KINDS)
def test_the_hints_name_the_fixes_the_issue_asks_for(kind: str):
    hints = kind_params(kind).HINTS
    assert "`clean.decontaminate_train: true`" in hints["no_leakage"]
    assert "no_leakage in `validate.soft.{checkpoint}`" in hints["no_leakage"]
    assert "`validate.max_duplicate_share`" in hints["duplicate_share"]
    if kind == "ner":
        assert "`ingest.tag_scheme: iob1`" in hints["iob2_valid"]
        assert "`validate.soft.raw`" in hints["iob2_valid"] and "`clean.bio_repair`" in hints["iob2_valid"]


# ------------------------------------------------------------------ validate.soft.all


def validate_section(kind: str, soft: dict):
    module = kind_params(kind)
    section = module.SCHEMA.model_fields["validate_"].annotation
    common = dict(min_sentences=1, max_tokens_per_sentence=10, max_subword_pieces=None, max_duplicate_share=0.1,
                  soft=soft)
    own = {"ner": dict(reference_profile=None, entity_share_ratio=(0.3, 3.0)), "textclass": dict(class_share=(0, 1))}
    return section.model_validate({**common, **own[kind]})


@pytest.mark.parametrize("kind", KINDS)
def test_soft_all_is_merged_into_every_checkpoint(kind: str):
    params = validate_section(kind, {"all": ["no_leakage"], "raw": ["duplicate_share", "no_leakage"]})
    assert params.soft_checks("raw") == ["no_leakage", "duplicate_share"]
    assert params.soft_checks("clean") == params.soft_checks("augmented") == ["no_leakage"]


@pytest.mark.parametrize("kind", KINDS)
def test_soft_all_names_are_checked_like_the_per_checkpoint_lists(kind: str):
    with pytest.raises(ValidationError, match=r"soft\.all: unknown check\(s\) 'no_leak'; this kind's checks: row"):
        validate_section(kind, {"all": ["no_leak"]})
    with pytest.raises(ValidationError, match=r"soft\.everywhere"):
        validate_section(kind, {"everywhere": ["no_leakage"]})
