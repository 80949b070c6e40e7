"""A benchmark's official splits keep their dev and test sentences through the data stages.

A CoNLL-2003-shaped folder (4 columns `token POS chunk NER`, `-DOCSTART-` lines, IOB1 tags, a dateline
that repeats in train and test, a headline repeated inside test) goes through ingest, validate, clean,
validate_clean, augment and validate_augmented, by their command-line entry points in a scratch project,
with only the documented params changes: `ingest.source` (the folder), `ingest.tag_scheme: iob1`,
`task.labels`, `validate.reference_profile: null` (not WNUT-16's types) and `augment.methods: []`.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tasks import augment, clean, ingest, validate
from tasks.kinds.ner.records import load_jsonl
from tests.helpers import ROOT

DATELINE = [("LONDON", "NNP", "I-NP", "I-LOC"), ("1996-08-30", "CD", "I-NP", "O")]
HEADLINE = [("SOCCER", "NN", "I-NP", "O"), ("-", ":", "O", "O"), ("RESULTS", "NNS", "I-NP", "O")]


def sentence(i: int, split: str) -> list[tuple[str, str, str, str]]:
    """A distinct sentence in IOB1: single entities start with I-, B- only between two adjacent ORGs."""
    return [("Peter", "NNP", "I-NP", "I-PER"), (f"{split}son{i}", "NNP", "I-NP", "I-PER"),
            ("joined", "VBD", "I-VP", "O"), ("Acme", "NNP", "I-NP", "I-ORG"), (f"Bank{i}", "NNP", "I-NP", "B-ORG"),
            ("in", "IN", "I-PP", "O"), ("Paris", "NNP", "I-NP", "I-LOC"), (".", ".", "O", "O")]


def conll2003(path: Path, sentences: list[list[tuple[str, ...]]]) -> None:
    """Two documents, each opened by a -DOCSTART- line; sentences separated by blank lines."""
    half = len(sentences) // 2
    documents = [sentences[:half], sentences[half:]]
    path.write_text("".join("-DOCSTART- -X- -X- O\n\n" + "".join(
        "".join(" ".join(row) + "\n" for row in rows) + "\n" for rows in document) for document in documents))


def benchmark(folder: Path) -> dict[str, int]:
    """Write train/dev/test files; their sentence counts."""
    folder.mkdir()
    splits = {"train": [sentence(i, "train") for i in range(16)] + [DATELINE],
              "dev": [sentence(i, "dev") for i in range(6)],
              "test": [sentence(i, "test") for i in range(10)] + [HEADLINE, DATELINE, HEADLINE]}
    for split, sentences in splits.items():
        conll2003(folder / f"{split}.txt", sentences)
    return {split: len(sentences) for split, sentences in splits.items()}


def project(folder: Path, source: Path) -> None:
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["task"]["labels"] = ["PER", "LOC", "ORG", "MISC"]
    params["ingest"].update(source=str(source), tag_scheme="iob1")
    params["validate"]["reference_profile"] = None
    params["clean"]["decontaminate_train"] = True  # the default, named because this test is about it
    params["augment"]["methods"] = []
    (folder / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def sentences(folder: Path, split: str) -> list[tuple[str, ...]]:
    return [r.tokens for r in load_jsonl(folder / f"{split}.jsonl")]


def test_official_test_split_keeps_its_sentence_count_through_the_data_stages(tmp_path: Path, monkeypatch):
    counts = benchmark(tmp_path / "conll2003")
    project(tmp_path, tmp_path / "conll2003")
    monkeypatch.chdir(tmp_path)
    ingest.main([])
    validate.main(["--data", "raw"])
    clean.main([])
    validate.main(["--data", "clean"])
    augment.main([])
    validate.main(["--data", "augmented"])

    data = tmp_path / "data"
    for split in ("dev", "test"):
        kept = [sentences(data / stage, split) for stage in ("raw", "clean", "augmented")]
        assert [len(tokens) for tokens in kept] == [counts[split]] * 3, split
    dateline = tuple(token for token, *_ in DATELINE)
    assert dateline in sentences(data / "raw", "train") and dateline in sentences(data / "clean", "test")
    assert dateline not in sentences(data / "clean", "train")
    report = json.loads((data / "reports" / "clean.json").read_text())
    assert report["split_by"] == "source"
    assert report["splits"]["train"][clean.DECONTAMINATED] == 1
    assert report["splits"]["test"]["duplicates_kept"] == 1  # the repeated headline: counted, not dropped
    raw_contract = json.loads((data / "reports" / "contract_raw.json").read_text())
    assert raw_contract["unexpected"]["no_leakage"] == 1  # a warning on raw data (validate.soft.raw)
    assert json.loads((data / "reports" / "contract_augmented.json").read_text())["success"]
    first_test = load_jsonl(data / "augmented" / "test.jsonl")[0]
    assert first_test.tags[:5] == ("B-PER", "I-PER", "O", "B-ORG", "B-ORG")  # IOB1 read as IOB2


def test_a_malformed_line_of_an_official_split_is_named_by_file_and_line(tmp_path: Path, monkeypatch):
    benchmark(tmp_path / "conll2003")
    broken = tmp_path / "conll2003" / "test.txt"
    lines = broken.read_text().split("\n")
    lines[3] = "Peter NNP I-PER"  # a token line missing its chunk column
    broken.write_text("\n".join(lines))
    project(tmp_path, tmp_path / "conll2003")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit, match=r"ingest: error: .*test\.txt:4: 3 columns, but line 3 has 4"):
        ingest.main([])
