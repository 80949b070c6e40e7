"""A batch file's row that repeats an official dev or test row is leakage, named by both records' ids: the
data contract covers the batches of a source folder like any train row (issue #35, item 4). Both kinds."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tasks import ingest, validate
from tasks.kinds.ner.kind import Ner
from tasks.kinds.ner.params import NerValidateParams
from tasks.params import load_params
from tasks.validate import ContractError
from tests.helpers import ROOT, kind

NER_CONTRACT = NerValidateParams(min_sentences=3, max_tokens_per_sentence=50, max_subword_pieces=None,
                                 max_duplicate_share=0.10, reference_profile=None, entity_share_ratio=(0.33, 3.0),
                                 soft={})
TEXT_PARAMS = load_params(ROOT / "params-sentiment.yaml")
TEXT_CONTRACT = TEXT_PARAMS.validate_.model_copy(update={"min_sentences": 3, "class_share": (0.2, 0.8)})


def conll(path: Path, sentences: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"Alice\tB-person\nvisits\tO\n{place}\tB-geo-loc\n\n" for place in sentences))


def test_a_batch_sentence_repeating_a_dev_sentence_is_named_as_leakage(tmp_path: Path):
    source = tmp_path / "bench"
    for split in ("train", "dev", "test"):
        conll(source / f"{split}.conll", [f"{split}-place{i}" for i in range(4)])
    conll(source / "batches" / "2026-12.conll", ["new-place", "dev-place2"])  # its 2nd sentence is a dev one
    ner_params = load_params(ROOT / "params.yaml").ingest
    ingest.run(ner_params.model_copy(update={"source": str(source)}), tmp_path / "raw", kind())
    with pytest.raises(ContractError, match=r"no_leakage .*\n.*dev\.conll:9: also_in_train='2026-12\.conll:5'"):
        validate.run(NER_CONTRACT, tmp_path / "raw", tmp_path / "report.json", kind=Ner(["person", "geo-loc"]))


def test_a_text_batch_repeating_a_test_text_is_named_as_leakage(tmp_path: Path):
    source = tmp_path / "bench"
    source.mkdir()
    words = {"positive": "lovely", "negative": "awful", "neutral": "ordinary"}
    for split in ("train", "dev", "test"):
        (source / f"{split}.csv").write_text("text,label\n" + "".join(
            f"a {word} {split} day {i},{label}\n" for label, word in words.items() for i in range(3)))
    (source / "batches").mkdir()
    (source / "batches" / "more.jsonl").write_text("".join(json.dumps(row) + "\n" for row in [
        {"text": "a lovely new day", "label": "positive"}, {"text": "an awful test day", "label": "negative"},
        {"text": "a ordinary test day 1", "label": "neutral"}]))  # line 3 repeats test.csv line 9
    text_kind = kind("sequence-classification")
    ingest.run(TEXT_PARAMS.ingest.model_copy(update={"source": str(source)}), tmp_path / "raw", text_kind)
    with pytest.raises(ContractError, match=r"no_leakage .*\n.*test:9: also_in_train='more:3'"):
        validate.run(TEXT_CONTRACT, tmp_path / "raw", tmp_path / "report.json", checkpoint="clean", kind=text_kind)
