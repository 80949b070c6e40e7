"""Distillation (tasks/distill.py): a 1-layer student cut from a tiny 2-layer tagger, its loss, its training
on the teacher's stored logits, resuming, the off switch, and the compress stage judging it."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from tasks import checkpoints, compress, distill, engine, variants
from tasks.engine import IGNORE_INDEX
from tasks.io import write_jsonl
from tasks.kinds import kind_for
from tasks.kinds.ner.training import NerTraining
from tasks.kinds.saved import load_saved_model
from tasks.kinds.textclass.training import TextClassTraining
from tasks.metrics import EvalReport, Headline, Latency
from tasks.params import ParamsError, load_params
from tests.helpers import ROOT, evaluate_params, synthetic, train_ner, train_params

TYPES = ["person", "geo-loc"]
DISTILL = {"variants": ["student"], "student_layers": 1, "student_layer_choice": "spread", "distill_alpha": 0.5,
           "temperature": 2.0, "distill_epochs": 2, "distill_learning_rate": 5e-3, "transfer_copies": 1,
           "transfer_replace_prob": 0.2}


@pytest.fixture(scope="module")
def candidate(tiny_base: Path, tmp_path_factory) -> Path:
    """A tiny 2-layer tagger (the teacher) and its data folder (train/dev/test.jsonl)."""
    root = tmp_path_factory.mktemp("distill")
    data = root / "augmented"
    for split, (count, seed) in {"train": (32, 1), "dev": (12, 2), "test": (12, 3)}.items():
        write_jsonl(data / f"{split}.jsonl", synthetic(count, seed))
    train_ner(train_params(tiny_base, learning_rate=5e-3), TYPES, data, root / "model", root / "train.json",
              root / "curve.csv")
    return root


def stage_params(root: Path, out: str = "run", **rules):
    """The project's params with paths under `root` (candidate and data shared, outputs under `out`)."""
    params = load_params(ROOT / "params.yaml")
    paths = params.paths.model_copy(update={
        "model": str(root / "model"), "augmented": str(root / "augmented"),
        "teacher_logits": str(root / "teacher.safetensors"), "student": str(root / out / "student"),
        "student_checkpoints": str(root / out / "ckpt"), "student_metrics": str(root / out / "distill.json"),
        "variants": str(root / out / "variants"), "compression": str(root / out / "compression.json")})
    return params.model_copy(update={
        "task": params.task.model_copy(update={"labels": TYPES}), "paths": paths,
        "train": train_params(Path("unused"), checkpoint_every_steps=5), "evaluate": evaluate_params(),
        "compress": params.compress.model_copy(update={**DISTILL, **rules})})


@pytest.fixture(scope="module")
def distilled(candidate: Path) -> Path:
    """The teacher's logits, then an uninterrupted distillation (the reference of the resume test)."""
    params = stage_params(candidate)
    distill.teacher_logits(params, kind_for(params))
    distill.train_student(params, kind_for(params))
    return candidate


def test_kept_layers_are_evenly_spaced_and_end_with_the_last() -> None:
    assert distill.kept_layers(6, 3) == [1, 3, 5]
    assert distill.kept_layers(2, 1) == [1]
    assert distill.kept_layers(12, 6) == [1, 3, 5, 7, 9, 11]
    assert distill.kept_layers(6, 4) == [0, 2, 3, 5]
    assert distill.kept_layers(6, 3, "bottom") == [0, 1, 2]  # the top layers dropped
    for keep in (0, 6):
        with pytest.raises(distill.DistillError, match=f"compress.student_layers {keep}: .* 6 encoder layers"):
            distill.kept_layers(6, keep)


@pytest.mark.slow  # trains a model (tests/unit/conftest.py)
def test_the_student_keeps_k_layers_with_the_teachers_weights(candidate: Path) -> None:
    teacher = load_saved_model(candidate / "model", device="cpu")
    student = distill.make_student(teacher, 1)

    assert student.config.num_hidden_layers == 1 and len(student.bert.encoder.layer) == 1
    assert teacher.config.num_hidden_layers == 2 and len(teacher.bert.encoder.layer) == 2  # untouched
    theirs, ours = teacher.state_dict(), student.state_dict()
    for name, tensor in ours.items():
        source = name.replace("encoder.layer.0.", "encoder.layer.1.")  # 2 -> 1 keeps the last layer
        assert torch.equal(tensor, theirs[source]), name
    assert any("embeddings" in name for name in ours) and "classifier.weight" in ours
    bottom = distill.make_student(teacher, 1, "bottom").state_dict()  # the first layer instead
    assert all(torch.equal(tensor, theirs[name]) for name, tensor in bottom.items())


def softmax(values: list[float], temperature: float) -> list[float]:
    exps = [math.exp(v / temperature) for v in values]
    return [e / sum(exps) for e in exps]


def kl(teacher: list[float], student: list[float], temperature: float) -> float:
    p, q = softmax(teacher, temperature), softmax(student, temperature)
    return sum(a * math.log(a / b) for a, b in zip(p, q, strict=True))


def test_the_loss_is_the_formula_on_a_hand_example() -> None:
    # One sentence of three pieces: [CLS] (ignored), then two labelled first pieces (gold 1 and 2).
    student = [[0.0, 0.0, 0.0, 0.0, 0.0], [1.0, 2.0, 0.5, 0.0, -1.0], [0.2, -0.3, 1.5, 0.0, 0.0]]
    teacher = [[9.0, 9.0, 9.0, 9.0, 9.0], [0.5, 3.0, -1.0, 0.0, 0.0], [0.0, 0.0, 2.5, 1.0, -2.0]]
    labels = torch.tensor([[IGNORE_INDEX, 1, 2]])
    alpha, temperature = 0.3, 2.0
    ce = sum(-math.log(softmax(student[i], 1.0)[gold]) for i, gold in ((1, 1), (2, 2)))
    soft = kl(teacher[1], student[1], temperature) + kl(teacher[2], student[2], temperature)
    expected = alpha * ce + (1 - alpha) * temperature**2 * soft

    gold = torch.ones(1, 3, 1)
    paired = torch.cat([torch.tensor([student]), torch.tensor([teacher]), gold], dim=-1)
    loss = distill.distillation_loss(NerTraining(TYPES), alpha, temperature)(paired, labels)

    assert float(loss) == pytest.approx(expected, rel=1e-5)
    assert float(distill.distillation_loss(NerTraining(TYPES), 1.0, temperature)(paired, labels)) == pytest.approx(ce)

    # The same sentence as a transfer row (gold column 0): its labels only mark where the teacher term sums.
    transfer = torch.cat([paired, paired.clone().index_fill_(-1, torch.tensor([10]), 0.0)])
    both = distill.distillation_loss(NerTraining(TYPES), alpha, temperature)(transfer, labels.repeat(2, 1))
    assert float(both) == pytest.approx(expected + (1 - alpha) * temperature**2 * soft, rel=1e-5)


def test_paired_logits_mark_the_rows_only_the_teacher_labels() -> None:
    class Tagger(torch.nn.Module):
        def forward(self, input_ids, attention_mask):
            from types import SimpleNamespace

            return SimpleNamespace(logits=torch.zeros(*input_ids.shape, 3))

    targets = {(101, 7, 102): torch.full((3, 3), 1.0), (101, 8, 102): torch.full((3, 3), 2.0)}
    runner = distill.paired_logits(Tagger(), targets, teacher_only={(101, 8, 102)})
    batch = engine.collate([engine.Example(0, [101, 7, 102], []), engine.Example(1, [101, 8, 102], [])], 0)

    paired = runner(**batch).logits

    assert paired.shape == (2, 3, 7)
    assert paired[0, :, 3:6].eq(1.0).all() and paired[1, :, 3:6].eq(2.0).all()
    assert paired[0, :, 6].eq(1.0).all() and paired[1, :, 6].eq(0.0).all()


def test_transfer_windows_equal_to_gold_ones_are_left_out() -> None:
    examples = [engine.Example(0, [101, 5, 102], []), engine.Example(1, [101, 6, 102], []),
                engine.Example(2, [101, 5, 102], []), engine.Example(3, [101, 9, 102], [])]

    kept, teacher_only = distill.split_gold(examples, gold_rows=2)

    assert [e.sentence for e in kept] == [0, 1, 3]
    assert teacher_only == {(101, 9, 102)}


def test_the_classifiers_teacher_term_is_softmax_kl_or_per_class_sigmoid_kl() -> None:
    student, teacher, temperature = [0.5, -1.0, 2.0], [1.5, 0.0, -0.5], 3.0
    pair = torch.tensor([student + teacher])
    single = TextClassTraining(["a", "b", "c"]).soft_loss(pair[:, :3], pair[:, 3:], torch.tensor([[2]]), temperature)
    assert float(single) == pytest.approx(kl(teacher, student, temperature), rel=1e-5)

    def sigmoid(x: float) -> float:
        return 1 / (1 + math.exp(-x / temperature))

    # Each class a yes/no distribution: KL of Bernoulli(p_teacher) and Bernoulli(p_student), summed.
    expected = sum(p * math.log(p / q) + (1 - p) * math.log((1 - p) / (1 - q))
                   for p, q in ((sigmoid(t), sigmoid(s)) for s, t in zip(student, teacher, strict=True)))
    multi = TextClassTraining(["a", "b", "c"], multi_label=True).soft_loss(pair[:, :3], pair[:, 3:],
                                                                        torch.tensor([[1, 0, 1]]), temperature)
    assert float(multi) == pytest.approx(expected, rel=1e-4)


def mean_distillation_loss(model: torch.nn.Module, params) -> float:
    """The distillation loss per labelled piece of `model` on the train split, with the stored teacher logits."""
    from transformers import AutoTokenizer

    training = kind_for(params).training(Path(params.paths.augmented) / "train.jsonl")
    tokenizer = AutoTokenizer.from_pretrained(params.paths.model)
    rows = training.read(Path(params.paths.augmented) / "train.jsonl")
    data = distill.student_data(params, kind_for(params), training, tokenizer, rows, params.train)
    runner = distill.paired_logits(model.eval(), data.targets, data.teacher_only)
    loss = distill.distillation_loss(training, params.compress.distill_alpha, params.compress.temperature)
    batch = engine.collate(data.examples, tokenizer.pad_token_id)
    labels = batch.pop("labels")
    with torch.no_grad():
        return float(loss(runner(**batch).logits, labels)) / int((labels != IGNORE_INDEX).sum())


@pytest.mark.slow  # trains a model (tests/unit/conftest.py)
def test_distillation_trains_a_student_that_fits_the_teacher_better(distilled: Path) -> None:
    params = stage_params(distilled)
    metrics = load_json(Path(params.paths.student_metrics))
    before = distill.make_student(load_saved_model(distilled / "model", device="cpu"), 1)
    after = load_saved_model(Path(params.paths.student), device="cpu")

    assert metrics["enabled"] and metrics["kept_layers"] == [1] and metrics["epochs_run"] == 2
    assert metrics["transfer_rows"] == 32  # one copy of each train sentence; none equals a train sentence
    assert metrics["transfer_text_rows"] == 0  # no compress.transfer_text
    assert after.config.num_hidden_layers == 1 and after.config.flowtune == {"max_length": 16, "task_kind": "ner"}
    assert mean_distillation_loss(after, params) < mean_distillation_loss(before, params)
    assert list(Path(params.paths.student_checkpoints).iterdir()) == []  # state cleared once saved


def load_json(path: Path) -> dict:
    import json

    return json.loads(path.read_text(encoding="utf-8"))


@pytest.mark.slow  # trains a model (tests/unit/conftest.py)
def test_an_interrupted_distillation_resumes_from_its_checkpoint(distilled: Path, monkeypatch) -> None:
    params = stage_params(distilled, out="crashed")
    original_save = engine.save_checkpoint

    def save_then_crash(target, loop, progress, identity):
        original_save(target, loop, progress, identity)
        if progress.global_step == 5:
            raise KeyboardInterrupt("simulated crash")

    monkeypatch.setattr(engine, "save_checkpoint", save_then_crash)
    with pytest.raises(KeyboardInterrupt):
        distill.train_student(params, kind_for(params))
    saved = torch.load(Path(params.paths.student_checkpoints) / checkpoints.CHECKPOINT_FILE, weights_only=True)
    assert (saved["progress"]["epoch"], saved["progress"]["step_in_epoch"]) == (1, 5)
    monkeypatch.setattr(engine, "save_checkpoint", original_save)

    resumed = distill.train_student(params, kind_for(params))

    reference = load_json(Path(stage_params(distilled).paths.student_metrics))
    assert resumed["dev_f1"] == pytest.approx(reference["dev_f1"], abs=1e-9)
    assert resumed["optimizer_steps"] == reference["optimizer_steps"]
    ours = load_saved_model(Path(params.paths.student), device="cpu").state_dict()
    theirs = load_saved_model(Path(stage_params(distilled).paths.student), device="cpu").state_dict()
    assert all(torch.allclose(ours[k], theirs[k], atol=1e-6) for k in theirs)


@pytest.mark.slow  # trains a model (tests/unit/conftest.py)
def test_teacher_logits_of_other_windows_are_refused(distilled: Path) -> None:
    params = stage_params(distilled)
    with pytest.raises(distill.DistillError, match="teacher.safetensors: computed for other train windows"):
        distill.read_targets(Path(params.paths.teacher_logits), [engine.Example(0, [101, 102], [])], True)


def test_off_writes_empty_outputs_and_needs_student_out_of_the_variants(tmp_path: Path) -> None:
    params = stage_params(tmp_path, variants=[], student_layers=0)
    kind = kind_for(params)

    assert "off" in distill.teacher_logits(params, kind)
    assert distill.train_student(params, kind) == {"enabled": False}
    assert [p.name for p in Path(params.paths.student).iterdir()] == [distill.OFF_MARKER]
    assert Path(params.paths.teacher_logits).stat().st_size < 100
    for variants_, layers in (([], 3), (["student"], 0)):
        raw = load_yaml(ROOT / "params.yaml")
        raw["compress"].update(variants=variants_, student_layers=layers)
        (tmp_path / "params.yaml").write_text(dump_yaml(raw))
        with pytest.raises(ParamsError, match="compress.student_layers"):
            load_params(tmp_path / "params.yaml")


def test_a_transfer_set_needs_a_teacher_term(tmp_path: Path) -> None:
    raw = load_yaml(ROOT / "params.yaml")
    raw["compress"].update(distill_alpha=1, transfer_copies=2)
    (tmp_path / "params.yaml").write_text(dump_yaml(raw))
    with pytest.raises(ParamsError, match="compress.transfer_copies 2 needs compress.distill_alpha below 1"):
        load_params(tmp_path / "params.yaml")
    raw["compress"].update(transfer_copies=0)
    (tmp_path / "params.yaml").write_text(dump_yaml(raw))
    assert load_params(tmp_path / "params.yaml").compress.distill_alpha == 1  # plain fine-tuning of the student


@pytest.mark.slow  # trains a model (tests/unit/conftest.py)
def test_a_taggers_transfer_text_is_read_by_its_format(candidate: Path, tmp_path: Path) -> None:
    params = stage_params(candidate)
    kind = kind_for(params)
    rows = kind.read(candidate / "augmented" / "train.jsonl")
    copies = distill.transfer_rows(params, kind, rows)
    files = {"mine.txt": "Anna flew to Oslo\n\nBob went home\n",
             "mine.jsonl": '{"tokens": ["Anna", "flew", "to", "Oslo"]}\n{"id": "x", "tokens": ["Bob", "went", "home"]}'
                           '\n',
             "mine.conll": "Anna\tB-person\nflew\tO\nto\tO\nOslo\tB-geo-loc\n\nBob\tO\nwent\tO\nhome\tO\n"}
    for name, text in files.items():
        (tmp_path / name).write_text(text)
        with_text = params.model_copy(update={"compress": params.compress.model_copy(update={
            "transfer_text": str(tmp_path / name)})})
        added = distill.transfer_rows(with_text, kind, rows)[len(copies):]
        assert [r.tokens for r in added] == [("Anna", "flew", "to", "Oslo"), ("Bob", "went", "home")], name
        assert all(set(r.tags) == {"O"} for r in added)  # a file's own tags are not used: the teacher labels


@pytest.mark.slow  # trains a model (tests/unit/conftest.py)
def test_a_bad_transfer_text_is_an_error_naming_the_key_and_line(candidate: Path, tmp_path: Path) -> None:
    params = stage_params(candidate)
    kind = kind_for(params)
    (tmp_path / "bad.jsonl").write_text('{"tokens": ["a"]}\n{"tokens": "a b"}\n')
    (tmp_path / "empty.txt").write_text("\n\n")
    (tmp_path / "eng.txt").write_text("-DOCSTART- -X- -X- O\n\nEU NNP B-NP B-ORG\nrejects VBZ B-VP O\n")  # CoNLL-2003
    for name, problem in (("missing.txt", "input file not found"), ("bad.jsonl", "bad.jsonl:2: expected 'tokens'"),
                          ("empty.txt", "holds no text"), ("eng.txt", "this is CoNLL.*name it .conll")):
        with_text = params.model_copy(update={"compress": params.compress.model_copy(update={
            "transfer_text": str(tmp_path / name)})})
        with pytest.raises(distill.DistillError, match=f"compress.transfer_text: .*{problem}"):
            distill.teacher_logits(with_text, kind)


def test_transfer_text_lives_under_the_external_folder_and_needs_a_teacher(tmp_path: Path) -> None:
    raw = load_yaml(ROOT / "params.yaml")
    raw["compress"].update(transfer_text="notes/unlabelled.txt")
    (tmp_path / "params.yaml").write_text(dump_yaml(raw))
    with pytest.raises(ParamsError, match="compress.transfer_text 'notes/unlabelled.txt': put the file under "
                                          "paths.external"):
        load_params(tmp_path / "params.yaml")
    raw["compress"].update(transfer_text="data/external/unlabelled.txt", transfer_copies=0, distill_alpha=1)
    (tmp_path / "params.yaml").write_text(dump_yaml(raw))
    with pytest.raises(ParamsError, match="compress.transfer_text 'data/external/unlabelled.txt' needs "
                                          "compress.distill_alpha below 1"):
        load_params(tmp_path / "params.yaml")
    raw["compress"].update(distill_alpha=0.5)
    (tmp_path / "params.yaml").write_text(dump_yaml(raw))
    assert load_params(tmp_path / "params.yaml").compress.transfer_text == "data/external/unlabelled.txt"


def test_off_stages_start_without_torch(tmp_path: Path) -> None:
    """Off (the default), both stages run in every pipeline run: they write their empty outputs without
    importing torch, transformers or the kind (a second each instead of about ten), in the same format."""
    (tmp_path / "params.yaml").write_text((ROOT / "params.yaml").read_text())
    code = ("import sys; from tasks import distill; distill.main(['--step', 'teacher']); "
            "distill.main(['--step', 'student']); "
            "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))")
    ran = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.strip().splitlines()[-1] == "[]"
    params = load_params(tmp_path / "params.yaml")
    with safe_open(str(tmp_path / params.paths.teacher_logits), framework="numpy") as handle:
        assert list(handle.keys()) == [] and handle.metadata() == {"distillation": "off"}
    assert [p.name for p in (tmp_path / params.paths.student).iterdir()] == [distill.OFF_MARKER]


def load_yaml(path: Path) -> dict:
    import yaml

    return yaml.safe_load(path.read_text(encoding="utf-8"))


def dump_yaml(data: dict) -> str:
    import yaml

    return yaml.safe_dump(data)


def report(score: float, p50: float) -> EvalReport:
    return EvalReport(task="t", title="t", predicts="t", unit="text", count=10, group="class", groups={},
                      headline=Headline(name="F1", value=score, precision=score, recall=score),
                      latency=Latency(p50_ms=p50))


def test_compress_judges_the_student_by_its_own_score_drop() -> None:
    rules = load_params(ROOT / "params.yaml").compress.model_copy(update=DISTILL | {"max_student_score_drop": 0.03})
    assert compress.judge("student", report(0.78, 5.0), report(0.80, 10.0), 0.9, 2.0, rules).passed
    failed = compress.judge("student", report(0.76, 5.0), report(0.80, 10.0), 0.9, 2.0, rules)
    assert failed.reasons == ["F1 drops 0.0400 > compress.max_student_score_drop 0.03"]
    # The same drop fails a quantized variant (compress.max_score_drop 0.01).
    assert not compress.judge("int8", report(0.78, 5.0), report(0.80, 10.0), 0.9, 2.0, rules).passed


@pytest.mark.slow  # trains a model (tests/unit/conftest.py)
def test_the_compress_stage_publishes_the_student_as_a_variant(distilled: Path) -> None:
    params = stage_params(distilled, min_speedup=0.01, max_student_score_drop=1.0)

    table = compress.compress(params, kind_for(params))

    assert [row.variant for row in table.rows] == ["fp32", "student"] and table.published == ["student"]
    folder = Path(params.paths.variants) / "student"
    assert variants.variant_of(folder) == "student"
    model = load_saved_model(folder, device="cpu")
    assert model.config.num_hidden_layers == 1 and not model.training


@pytest.mark.slow  # trains a model (tests/unit/conftest.py)
@pytest.mark.parametrize("multi_label", [False, True])
def test_a_classifier_distills_on_texts(tiny_base: Path, tmp_path: Path, multi_label: bool) -> None:
    from tasks import train
    from tasks.kinds.textclass import records as textdata
    from tasks.kinds.textclass.params import TextclassTrainParams
    from tasks.kinds.textclass.records import TextExample

    def texts(count: int, seed: int) -> list[TextExample]:
        rows = []
        for i in range(count):
            person, place = i % 2 == 0, (i // 2) % 2 == 0
            words = ["john" if person else "someone", "paris" if place else "somewhere", "today"]
            label = ("|".join(name for name, on in (("person", person), ("place", place)) if on) if multi_label
                     else "person" if person else "place")
            rows.append(TextExample(f"{seed}:{i}", " ".join(words), label))
        return rows

    for split, (count, seed) in {"train": (24, 1), "dev": (8, 2), "test": (8, 3)}.items():
        textdata.write_examples(tmp_path / "augmented" / f"{split}.jsonl", texts(count, seed))
    common = train_params(tiny_base, learning_rate=5e-3).model_dump(exclude={"label_all_pieces"})
    settings = TextclassTrainParams(**common, class_weight="none")
    labels = ["person", "place"]
    train.fit(TextClassTraining(labels, multi_label), settings, tmp_path / "augmented",
              train.Outputs(tmp_path / "model", tmp_path / "train.json", tmp_path / "curve.csv"))
    base = load_params(ROOT / "params-sentiment.yaml")
    params = stage_params(tmp_path).model_copy(update={
        "task": base.task.model_copy(update={"labels": labels, "multi_label": multi_label}),
        "train": settings, "evaluate": base.evaluate})
    params = base.model_copy(update={name: getattr(params, name) for name in ("task", "paths", "train", "compress")})
    kind = kind_for(params)

    # 24 train texts and their copies, less those that equal a train text (3 words over a vocabulary of 5).
    train_texts = textdata.load_examples(tmp_path / "augmented" / "train.jsonl")
    copies = len(distill.transfer_rows(params, kind, train_texts))
    assert 0 < copies < 24
    # The user's unlabelled texts add the new ones: here two (a train text and a blank line are not new).
    (tmp_path / "external").mkdir()
    (tmp_path / "external" / "mine.txt").write_text(f"mary went home\n\n{train_texts[0].text}\nno one knows\n")
    params = params.model_copy(update={"compress": params.compress.model_copy(update={
        "transfer_text": str(tmp_path / "external" / "mine.txt")})})
    rows = distill.transfer_rows(params, kind, train_texts)
    transfer = len(rows)
    assert transfer == copies + 2 and [r.text for r in rows[-2:]] == ["mary went home", "no one knows"]
    assert {r.label for r in rows[-2:]} == {train_texts[0].label}  # a stand-in: it only marks the text's position
    assert distill.teacher_logits(params, kind).startswith(f"{24 + transfer} windows")
    assert f"{transfer} transfer rows (2 from compress.transfer_text)" in distill.teacher_logits(params, kind)
    metrics = distill.train_student(params, kind)

    assert metrics["kept_layers"] == [1] and metrics["dev_f1"] is not None
    assert (metrics["transfer_rows"], metrics["transfer_text_rows"]) == (transfer, 2)
    student = load_saved_model(Path(params.paths.student), device="cpu")
    assert student.config.num_hidden_layers == 1 and student.config.problem_type == (
        "multi_label_classification" if multi_label else "single_label_classification")
    # (That training lowers the loss is the tagger's test: a tiny classifier on 24 texts barely learns.)
