"""The labelling loop's logic without Label Studio: span <-> token mapping and its refusals, the selection
strategies and exclusions, pre-annotations, and what `pull` makes of exported tasks (a fake Studio stands in
for the HTTP client; tests/integration/test_labelling_loop.py runs the real one)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from flows.labelling.loop import (
    capture_item,
    collect,
    pre_annotation,
    push,
    read_selection,
    select,
    task_of,
    write_selection,
)
from flows.labelling.selection import Candidate, choose, class_uncertainty, exclude, mnlp, text_key
from flows.labelling.spans import SpanError, labelling_config, spans_to_tags, tags_to_spans, token_offsets
from flows.labelling.studio import Studio, StudioError
from tasks.params import load_params

TYPES = ["person", "loc"]
TOKENS = ["Alice", "met", "Bob", "in", "New", "York"]
TAGS = ["B-person", "O", "B-person", "O", "B-loc", "I-loc"]


# ------------------------------------------------------------------ spans


def test_offsets_are_those_of_the_tokens_joined_by_spaces():
    text = " ".join(TOKENS)
    assert [text[s:e] for s, e in token_offsets(TOKENS)] == TOKENS


def test_tags_to_spans_and_back_round_trip():
    spans = tags_to_spans(TOKENS, TAGS)
    assert [(s["text"], s["labels"]) for s in spans] == [("Alice", ["person"]), ("Bob", ["person"]),
                                                         ("New York", ["loc"])]
    assert spans_to_tags(TOKENS, spans, TYPES) == TAGS


def test_adjacent_entities_of_one_type_stay_two():
    tags = ["B-person", "B-person", "O", "O", "O", "O"]
    assert spans_to_tags(TOKENS, tags_to_spans(TOKENS, tags), TYPES) == tags


def test_a_dangling_i_tag_starts_an_entity():
    assert [s["text"] for s in tags_to_spans(TOKENS, ["O", "I-loc", "O", "O", "O", "O"])] == ["met"]


@pytest.mark.parametrize(("span", "reason"), [
    ({"start": 1, "end": 5, "text": "lice", "labels": ["person"]}, "token boundaries"),
    ({"start": 0, "end": 7, "text": "Alice m", "labels": ["person"]}, "token boundaries"),
    ({"start": 0, "end": 5, "text": "Alice", "labels": ["animal"]}, "not one of"),
    ({"start": 0, "end": 5, "text": "Alice", "labels": ["person", "loc"]}, "not one of"),
])
def test_spans_that_cannot_be_tags_are_refused(span, reason):
    with pytest.raises(SpanError, match=reason):
        spans_to_tags(TOKENS, [span], TYPES)


def test_overlapping_spans_are_refused():
    spans = [{"start": 0, "end": 9, "labels": ["person"]}, {"start": 6, "end": 13, "labels": ["person"]}]
    with pytest.raises(SpanError, match="overlaps"):
        spans_to_tags(TOKENS, spans, TYPES)


def test_labelling_configs():
    ner = labelling_config("ner", ["person", "loc"])
    assert '<Labels name="label" toName="text">' in ner and '<Label value="loc"/>' in ner
    assert '<Label value="person"/>' in labelling_config("ner", ["O", "B-person", "I-person"])
    assert 'choice="single"' in labelling_config("textclass", ["neg", "pos"])
    assert 'choice="multiple"' in labelling_config("textclass", ["a", "b"], multi_label=True)


# ------------------------------------------------------------------ selection


def test_mnlp_is_the_negated_mean_log_probability():
    assert mnlp([1.0, 1.0]) == 0
    assert mnlp([0.5, 0.5]) == pytest.approx(math.log(2))
    assert mnlp([0.9] * 2) == pytest.approx(mnlp([0.9] * 20))  # length-normalized
    assert mnlp([]) == 0


def test_class_uncertainty_margin_and_entropy():
    assert class_uncertainty({"a": 0.5, "b": 0.5}, "margin") == pytest.approx(1.0)
    assert class_uncertainty({"a": 1.0, "b": 0.0}, "margin") == pytest.approx(0.0)
    assert class_uncertainty({"a": 0.5, "b": 0.5}, "entropy") > class_uncertainty({"a": 0.9, "b": 0.1}, "entropy")
    assert class_uncertainty({"a": 0.5, "b": 0.99}, "margin", multi_label=True) > \
        class_uncertainty({"a": 0.01, "b": 0.99}, "margin", multi_label=True)


def cands(*texts_and_u):
    return [Candidate(f"c{i}", text.split(), uncertainty=u) for i, (text, u) in enumerate(texts_and_u)]


def test_uncertainty_takes_the_least_certain_first():
    chosen = choose(cands(("a b", 0.1), ("c d", 0.9), ("e f", 0.5)), 2, "uncertainty")
    assert [c.text for c in chosen] == ["c d", "e f"]


def test_random_is_seeded():
    pool = cands(*((f"w{i} x", 0.0) for i in range(20)))
    assert [c.id for c in choose(pool, 5, "random", seed=3)] == [c.id for c in choose(pool, 5, "random", seed=3)]
    assert len(choose(pool, 50, "random")) == 20


def test_diversity_skips_near_duplicates_and_caps_clusters():
    pool = cands(("the cat sat on the mat", 0.9), ("The cat sat on the  mat !", 0.8),  # a near-duplicate
                 ("the cat sat on a rug", 0.7), ("the cat sat on a chair", 0.6),  # same cluster as the first
                 ("stocks fell sharply today", 0.5))
    chosen = choose(pool, 4, "uncertainty+diversity", duplicate_jaccard=0.8, cluster_jaccard=0.4, max_per_cluster=2)
    assert [c.id for c in chosen] == ["c0", "c2", "c4"]


def test_unknown_strategy_is_named():
    with pytest.raises(ValueError, match="label.strategy 'best'"):
        choose([], 1, "best")


def test_exclude_drops_known_texts_and_repeats_case_and_spacing_ignored():
    pool = cands(("Alice met Bob", 0), ("alice  met bob", 0), ("a dev sentence", 0), ("new one", 0))
    kept, dropped = exclude(pool, {text_key("A dev sentence")})
    assert [c.text for c in kept] == ["Alice met Bob", "new one"] and dropped == 2


def test_capture_items_by_kind_and_redaction():
    assert capture_item({"input": "Alice met Bob"}, "ner") == ["Alice", "met", "Bob"]
    assert capture_item({"input": {"tokens": ["a", "b"]}}, "ner") == ["a", "b"]
    assert capture_item({"input": {"text": "great film"}}, "textclass") == "great film"
    assert capture_item({"output": {}}, "ner") is None  # redacted: no input kept


class FixedPredictor:
    """Answers with a per-text probability (unit tests; the real predictors are tested in test_predictors)."""

    labels = ["O", "B-person", "I-person"]

    def __init__(self, probability: dict[str, float]):
        self.probability = probability

    def predict(self, items, ids):
        return [{"id": i, "tokens": list(item), "tags": ["O"] * len(item),
                 "scores": [self.probability[" ".join(item)]] * len(item)} for item, i in zip(items, ids, strict=True)]


def test_select_excludes_then_ranks_by_the_champions_uncertainty():
    params = load_params("params.yaml")
    params = params.model_copy(update={"label": params.label.model_copy(update={"strategy": "uncertainty"})})
    pool = [Candidate(str(i), text.split()) for i, text in enumerate(["sure thing", "hmm maybe", "in dev", "eh"])]
    predictor = FixedPredictor({"sure thing": 0.99, "hmm maybe": 0.4, "in dev": 0.1, "eh": 0.6})
    result = select(pool, predictor, params, {text_key("in dev")}, n=2)
    assert [c.text for c in result.chosen] == ["hmm maybe", "eh"] and result.excluded == 1
    assert result.chosen[0].uncertainty == pytest.approx(-math.log(0.4), abs=1e-6)


def test_selection_file_round_trips(tmp_path: Path):
    chosen = [Candidate("a", ["x", "y"], {"tags": ["O", "O"], "scores": [0.5, 0.5]}, "f", 0.69)]
    assert read_selection(write_selection(tmp_path / "s.jsonl", chosen)) == chosen


# ------------------------------------------------------------------ push


def test_ner_task_carries_spans_of_the_champions_tags():
    candidate = Candidate("s1", TOKENS, {"tags": TAGS, "scores": [0.9] * 6}, uncertainty=0.1)
    task = task_of(candidate, "wnut16-ner:champion")
    assert task["data"]["text"] == "Alice met Bob in New York" and task["data"]["key"] == text_key(candidate.text)
    result = task["predictions"][0]["result"]
    assert [r["value"]["text"] for r in result] == ["Alice", "Bob", "New York"]
    assert task["predictions"][0]["model_version"] == "wnut16-ner:champion"


def test_textclass_pre_annotation_is_a_choice():
    candidate = Candidate("t", "great film", {"label": "pos", "probabilities": {"neg": 0.2, "pos": 0.8}})
    assert pre_annotation(candidate, "m")["result"][0]["value"] == {"choices": ["pos"]}


def test_review_tasks_carry_extra_data():
    task = task_of(Candidate("r1", "a text", {}), "m", review={"audit": "label issue, quality 0.1"})
    assert task["data"]["audit"] == "label issue, quality 0.1" and "predictions" not in task


class FakeStudio:
    """In memory: projects by title and their tasks."""

    def __init__(self):
        self.projects: dict[str, dict] = {}
        self.tasks: dict[int, list[dict]] = {}

    def find_project(self, title):
        return self.projects.get(title)

    def ensure_project(self, title, label_config):
        if title in self.projects:
            return self.projects[title], False
        self.projects[title] = {"id": len(self.projects) + 1, "title": title, "label_config": label_config}
        return self.projects[title], True

    def import_tasks(self, project_id, tasks):
        self.tasks.setdefault(project_id, []).extend(tasks)
        return len(tasks)

    def export(self, project_id, all_tasks=False):
        return self.tasks.get(project_id, [])


def test_push_creates_the_project_once_and_never_queues_a_text_twice():
    studio = FakeStudio()
    first = [Candidate("a", ["x", "y"]), Candidate("b", ["z"])]
    assert push(studio, "p", "<View/>", first, "m") == (2, 0, True)
    assert push(studio, "p", "<View/>", [Candidate("c", ["X", "y"]), Candidate("d", ["w"])], "m") == (1, 1, False)
    assert len(studio.tasks[1]) == 3


# ------------------------------------------------------------------ pull


def ner_task(task_id: int, *results: list[dict], cancelled: bool = False) -> dict:
    return {"id": task_id, "data": {"text": " ".join(TOKENS), "key": text_key(" ".join(TOKENS))},
            "annotations": [{"result": r, "was_cancelled": cancelled} for r in results]}


def span(start, end, label):
    return {"type": "labels", "value": {"start": start, "end": end, "labels": [label]}}


def test_collect_maps_refuses_counts_and_reports_disagreement():
    good = [span(0, 5, "person"), span(10, 13, "person"), span(17, 25, "loc")]
    tasks = [
        ner_task(1, good),
        ner_task(2, [span(1, 5, "person")]),  # off a token boundary
        ner_task(3, [span(0, 5, "animal")]),  # unknown label
        ner_task(4, [], cancelled=True),  # a skipped task: an empty submission
        ner_task(5, good, [span(0, 5, "person")]),  # two annotators differ
        ner_task(6, []),  # no entity at all: a real label, all O
    ]
    tasks[5]["data"]["text"] = "nothing here at all"
    pulled = collect(tasks, "ner", TYPES, False, 7, set(), set())
    assert [row["tags"] for row in pulled.rows] == [TAGS, ["O"] * 4]
    assert [row["id"] for row in pulled.rows] == ["labelstudio-7-1", "labelstudio-7-6"]
    assert set(pulled.refused) == {2, 3} and "token boundaries" in pulled.refused[2] and "animal" in pulled.refused[3]
    assert pulled.empty == 1 and pulled.disagreements == [5]
    assert pulled.agreement == {"loc": 0.0, "person": 0.0}


def test_collect_agreement_counts_labels_that_agree():
    a = [span(0, 5, "person"), span(17, 25, "loc")]
    b = [span(0, 5, "person")]
    pulled = collect([ner_task(1, a, b)], "ner", TYPES, False, 1, set(), set())
    assert pulled.agreement == {"loc": 0.0, "person": 1.0}


def test_collect_skips_what_was_imported_before():
    good = [span(0, 5, "person")]
    by_id = collect([ner_task(1, good)], "ner", TYPES, False, 7, {"labelstudio-7-1"}, set())
    by_text = collect([ner_task(1, good)], "ner", TYPES, False, 7, set(), {text_key(" ".join(TOKENS))})
    assert by_id.already == by_text.already == 1 and not by_id.rows and not by_text.rows


def test_collect_textclass_choices():
    def task(task_id, *choices):
        return {"id": task_id, "data": {"text": f"text {task_id}"},
                "annotations": [{"result": [{"type": "choices", "value": {"choices": list(c)}}] if c else []}
                                for c in choices]}
    pulled = collect([task(1, ["pos"]), task(2, ["meh"]), task(3, []), task(4, ["neg"], ["neg"])], "textclass",
                     ["neg", "pos"], False, 2, set(), set())
    assert [(r["text"], r["label"]) for r in pulled.rows] == [("text 1", "pos"), ("text 4", "neg")]
    assert list(pulled.refused) == [2] and pulled.empty == 1 and pulled.agreement == {"neg": 1.0}
    multi = collect([task(5, ["pos", "neg"])], "textclass", ["neg", "pos"], True, 2, set(), set())
    assert multi.rows[0]["label"] == ["neg", "pos"]


# ------------------------------------------------------------------ errors


def test_a_studio_that_does_not_answer_is_one_line_naming_the_url():
    studio = Studio("http://127.0.0.1:9", "0" * 40)
    with pytest.raises(StudioError, match=r"http://127.0.0.1:9 does not answer.*services up --with label-studio"):
        studio.find_project("p")


def test_label_section_is_described():
    from tasks.params import LabelParams

    assert all(field.description for field in LabelParams.model_fields.values())
    assert json.dumps(LabelParams.model_json_schema())  # serializable for the docs reference


def test_a_real_classifier_ranks_by_margin_and_pre_annotates_a_choice(tiny_base: Path, tmp_path: Path):
    from flows.labelling.loop import candidates_from_file
    from tasks.kinds.saved import predictor_for
    from tests.unit.test_predictors import CLASSES, saved

    folder = saved(tiny_base, tmp_path / "clf", "AutoModelForSequenceClassification", CLASSES,
                   {"max_length": 16, "task_kind": "textclass"})
    (tmp_path / "pool.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in ["good", "bad", "meh"]))
    params = load_params("params-sentiment.yaml")
    params = params.model_copy(update={"label": params.label.model_copy(update={"strategy": "uncertainty"})})
    predictor = predictor_for(folder)
    result = select(candidates_from_file(predictor, tmp_path / "pool.jsonl"), predictor, params, set(), n=3)
    margins = [c.uncertainty for c in result.chosen]
    assert margins == sorted(margins, reverse=True) and all(0 <= m <= 1 for m in margins)
    expected = class_uncertainty(result.chosen[0].answer["probabilities"], "margin")
    assert result.chosen[0].uncertainty == pytest.approx(expected, abs=1e-6)
    choice = task_of(result.chosen[0], "clf")["predictions"][0]["result"][0]["value"]["choices"]
    assert choice == [result.chosen[0].answer["label"]]
