"""Distill steps: a smaller student of the candidate, judged by the compress stage as the `student` variant.

Two DVC stages run this module (docs/DECISIONS.md, 46):

- `--step teacher` (stage `teacher_logits`): the candidate's logits on every window of the augmented train
  split and of its transfer set (`compress.transfer_copies` perturbed copies of each row, tasks/transfer.py,
  and the user's unlabelled text in `compress.transfer_text`), computed once and saved as safetensors
  (`paths.teacher_logits`): each example's piece ids and its logits (one row per piece for NER, one per text
  for classifiers), in float16 (half the size; the rounding, < 0.01 at logit 10, is far below what a
  temperature-softened target resolves).
- `--step student` (stage `distill`): the student is the candidate with `compress.student_layers` of its
  encoder layers (`compress.student_layer_choice`: evenly spaced with the last, 6 -> 3 keeps 1, 3, 5, as
  DistilBERT does; or the first ones, 0, 1, 2), embeddings and head copied. It trains through the same
  skeleton as the candidate (tasks/trainer.py, `student_recipe`'s hooks; tasks/engine.py: grouped batches,
  AdamW, warmup, resumable checkpoints in `paths.student_checkpoints`) with loss
  `alpha * CE(gold) + (1 - alpha) * T^2 * KL(teacher || student)`;
  the kind says where the KL is summed (NER: labelled first pieces; classifiers: texts, per-class sigmoid
  KL for label sets). Transfer rows have no gold labels: only the KL term. The best dev epoch is saved as a
  transformers folder in `paths.student`.

With `compress.student_layers: 0` (the default) both steps only write empty outputs, so `dvc repro` and the
flow run the same DAG whether distillation is on or off.
"""

from __future__ import annotations

import json
import re
import shutil
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

from tasks.io import atomic_write_text, empty_folder, swap_in_folder, write_json
from tasks.params import Params, TrainParams
from tasks.stage import run_stage

# torch, the engine and the kinds are imported where they are used: with distillation off (the default),
# both stages only write empty outputs, and their start-up stays about a second instead of ten.
if TYPE_CHECKING:
    import torch

    from tasks import engine
    from tasks.kinds.base import TrainingKind

OFF_MARKER = "DISTILLATION_OFF"  # the student folder's only file when distillation is off
LAYER_KEY = re.compile(r"(^|\.)encoder\.layer\.(\d+)\.")  # BERT-style encoders: <base>.encoder.layer.<i>.


class DistillError(RuntimeError):
    """The student cannot be built or trained as asked; the message names the key or file."""


# ------------------------------------------------------------------ the student


def kept_layers(total: int, keep: int, choice: str = "spread") -> list[int]:
    """`keep` of `total` layers: `spread` evenly spaced, ending with the last (6 -> 3: [1, 3, 5]; 2 -> 1: [1]),
    as DistilBERT; `bottom` the first ones (6 -> 3: [0, 1, 2]), the top layers dropped, which Sajjad et al.
    (2023, "On the effect of dropping layers of pre-trained transformer models") found the best choice."""
    if not 0 < keep < total:
        raise DistillError(f"compress.student_layers {keep}: the candidate has {total} encoder layers, keep 1 to "
                           f"{total - 1}")
    if choice == "bottom":
        return list(range(keep))
    return [(j + 1) * total // keep - 1 for j in range(keep)]


def make_student(teacher: torch.nn.Module, keep: int, choice: str = "spread") -> torch.nn.Module:
    """A model of the teacher's class with `keep` encoder layers (`kept_layers`' choice): the kept layers, the
    embeddings and the head are the teacher's weights (a copy; the teacher is untouched)."""
    kept = kept_layers(teacher.config.num_hidden_layers, keep, choice)
    config = teacher.config.__class__.from_dict(teacher.config.to_dict())
    config.num_hidden_layers = keep
    student = type(teacher)(config)
    state = renumbered_layers(teacher.state_dict(), kept)
    try:
        student.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise DistillError(f"cannot cut {type(teacher).__name__} to {keep} layers: {exc}") from None
    return student.eval()


def renumbered_layers(state: dict[str, torch.Tensor], kept: Sequence[int]) -> dict[str, torch.Tensor]:
    """The teacher's weights with layer kept[j] renamed layer j and the other layers left out."""
    new_index = {old: new for new, old in enumerate(kept)}
    result = {}
    for name, tensor in state.items():
        match = LAYER_KEY.search(name)
        if match is None:
            result[name] = tensor.clone()
        elif int(match.group(2)) in new_index:
            renamed = f"{match.group(1)}encoder.layer.{new_index[int(match.group(2))]}."
            result[name[: match.start()] + renamed + name[match.end():]] = tensor.clone()
    return result


def student_params(params: Params) -> TrainParams:
    """The candidate's training settings with distillation's epochs and learning rate; one process, no LoRA
    (the student is small and trains in full) and no compilation."""
    return params.train.model_copy(update={
        "epochs": params.compress.distill_epochs, "learning_rate": params.compress.distill_learning_rate,
        "processes": 1, "compile": False, "lora": params.train.lora.model_copy(update={"enabled": False})})


# ------------------------------------------------------------------ the loss


def distillation_loss(kind: TrainingKind[Any], alpha: float, temperature: float) -> engine.Loss:
    """`alpha * CE(gold) + (1 - alpha) * T^2 * KL(teacher || student)`, summed like the kind's loss (the
    engine divides by labelled pieces). T^2 keeps the teacher term's gradients at the scale of the gold
    term's whatever T (Hinton et al. 2015). It takes `paired_logits`' output: student and teacher logits
    side by side on the class axis, then one column that is 1 on rows with gold labels (train) and 0 on
    transfer rows, whose labels only mark the positions the KL sums over."""

    def loss(paired: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        classes = (paired.shape[-1] - 1) // 2
        student, teacher, gold = paired.float().split([classes, classes, 1], dim=-1)
        gold_rows = gold.reshape(len(gold), -1)[:, 0] > 0
        hard = kind.loss(student[gold_rows], labels[gold_rows]) if alpha else student.new_zeros(())
        soft = kind.soft_loss(student, teacher, labels, temperature) if alpha < 1 else student.new_zeros(())
        return alpha * hard + (1 - alpha) * temperature**2 * soft

    return loss


def paired_logits(student: torch.nn.Module, targets: dict[tuple[int, ...], torch.Tensor],
                  teacher_only: set[tuple[int, ...]]) -> torch.nn.Module:
    """The student behind the engine's calling convention, with each row's teacher logits beside its own and
    a last column saying whether the row has gold labels (not in `teacher_only`, the transfer windows).

    The engine calls `runner(input_ids, attention_mask).logits` and hands that to the loss; the teacher's
    logits of a window are a function of its pieces alone, so they are looked up by the row's piece ids (two
    identical windows, e.g. an augmented copy, have identical targets) and padded like the batch.
    """
    import torch

    class PairedLogits(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.student, self.targets = student, targets

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, **_: torch.Tensor):
            logits = self.student(input_ids=input_ids, attention_mask=attention_mask).logits
            teacher = torch.zeros_like(logits, dtype=torch.float32)
            gold = torch.ones_like(logits[..., :1], dtype=torch.float32)
            for row, (ids, mask) in enumerate(zip(input_ids.tolist(), attention_mask.sum(1).tolist(), strict=True)):
                key = tuple(ids[:mask])
                target = self.targets[key]
                teacher[row, : len(target)] = target.to(teacher.device, torch.float32)  # pieces, or a text's classes
                if key in teacher_only:
                    gold[row] = 0
            return SimpleNamespace(logits=torch.cat([logits.float(), teacher, gold], dim=-1))

    return PairedLogits()


# ------------------------------------------------------------------ teacher logits (stage teacher_logits)


def write_empty_safetensors(path: Path, metadata: dict[str, str]) -> None:
    """A safetensors file with no tensor, only `metadata`: the format's 8-byte header length and its JSON
    header (what `safetensors.torch.save_file({}, ...)` writes, without importing torch)."""
    header = json.dumps({"__metadata__": metadata}, separators=(",", ":")).encode()
    header += b" " * (-len(header) % 8)  # the format pads the header to a multiple of 8 bytes
    path.write_bytes(struct.pack("<Q", len(header)) + header)


def teacher_logits(params: Params, kind) -> str:
    """Write the candidate's logits on every window of augmented train and its transfer set (or an empty file
    when distillation is off)."""
    out = Path(params.paths.teacher_logits)
    out.parent.mkdir(parents=True, exist_ok=True)
    if params.compress.student_layers == 0:
        write_empty_safetensors(out, {"distillation": "off"})
        return "distillation off (compress.student_layers: 0): empty teacher logits"
    from safetensors.torch import save_file
    train_file = Path(params.paths.augmented) / "train.jsonl"
    training = kind.training(train_file)
    rows = training.read(train_file)
    training.check_labels(rows)
    transfer = transfer_rows(params, kind, rows)
    model_dir = Path(params.paths.model)
    teacher, tokenizer = checked_teacher(model_dir, training.labels)
    # Unlabelled windows are the labelled ones (labels never move a window edge): only train.max_length counts.
    examples = training.encode(tokenizer, [*rows, *transfer], params.train, with_labels=False).examples
    logits = predict_logits(teacher, examples, params.evaluate.batch_size, tokenizer.pad_token_id)
    staging = out.with_name(f".{out.name}.tmp")
    save_file(pack(examples, logits), staging, metadata={"labels": json.dumps(training.labels)})
    staging.replace(out)
    from tasks.transfer import count_texts

    return (f"{len(examples)} windows of {train_file} and {len(transfer)} transfer rows ({count_texts(transfer)} "
            f"from compress.transfer_text) -> {out}")


def transfer_rows(params: Params, kind, rows: Sequence[Any]) -> list[Any]:
    """The transfer set of the train rows, as rows of the kind (tasks/transfer.py): their perturbed copies,
    then the user's unlabelled texts (`compress.transfer_text`) that are new."""
    from tasks.transfer import new_texts, perturbed_copies

    rules = params.compress
    sentences = [kind.as_sentence(row) for row in rows]
    copies = perturbed_copies(sentences, rules.transfer_copies, rules.transfer_replace_prob, params.augment.seed)
    texts = new_texts(unlabelled_texts(rules.transfer_text, kind), sentences, copies) if rules.transfer_text else []
    return [kind.from_sentence(sentence) for sentence in [*copies, *texts]]


def unlabelled_texts(path: str, kind) -> list:
    """The sentences of the `compress.transfer_text` file; a missing or empty one is an error naming the key."""
    from tasks.io import InputFormatError

    try:
        texts = kind.read_unlabelled(Path(path))
    except InputFormatError as exc:
        raise DistillError(f"compress.transfer_text: {exc}") from None
    if not texts:
        raise DistillError(f"compress.transfer_text: {path} holds no text")
    return texts


def checked_teacher(model_dir: Path, labels: list[str]):
    """The candidate and its tokenizer; its labels must be the kind's, in the same order."""
    from transformers import AutoTokenizer

    from tasks.kinds.saved import load_saved_model

    teacher = load_saved_model(model_dir)
    known = [teacher.config.id2label[i] for i in range(teacher.config.num_labels)]
    if known != labels:
        raise DistillError(f"{model_dir / 'config.json'}: labels {known} are not the train split's {labels}; "
                           "rerun the train stage")
    return teacher, AutoTokenizer.from_pretrained(model_dir)


def predict_logits(model: torch.nn.Module, examples: Sequence[engine.Example], batch_size: int,
                   pad_id: int) -> list[torch.Tensor]:
    """Each example's logits (per piece, or one row for a text), fp32 on the CPU, in example order."""
    import torch

    from tasks import engine
    from tasks.progress import Progress

    order = sorted(range(len(examples)), key=lambda i: len(examples[i].input_ids))  # little padding
    result: list[torch.Tensor] = [torch.empty(0)] * len(examples)
    device = engine.model_device(model)
    with torch.inference_mode(), Progress("distill: teacher logits, windows", len(order), "windows") as progress:
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            batch = engine.to_device(engine.collate([examples[i] for i in chunk], pad_id), device)
            logits = model(**batch).logits.float().cpu()
            for row, index in enumerate(chunk):
                result[index] = logits[row, : len(examples[index].input_ids)] if logits.dim() == 3 else logits[row]
            progress.advance(len(chunk))
    return result


def pack(examples: Sequence[engine.Example], logits: Sequence[torch.Tensor]) -> dict[str, torch.Tensor]:
    """Flat tensors: every example's piece ids and logit rows end to end, with the offsets of each."""
    import torch

    rows = [value.reshape(-1, value.shape[-1]) for value in logits]
    return {"input_ids": torch.tensor([i for e in examples for i in e.input_ids], dtype=torch.int32),
            "id_offsets": offsets([len(e.input_ids) for e in examples]),
            "logits": torch.cat(rows).to(torch.float16),
            "logit_offsets": offsets([len(value) for value in rows])}


def offsets(lengths: Sequence[int]) -> torch.Tensor:
    import torch

    return torch.tensor([0, *torch.tensor(lengths, dtype=torch.int64).cumsum(0).tolist()], dtype=torch.int64)


def read_targets(path: Path, examples: Sequence[engine.Example], token_level: bool
                 ) -> dict[tuple[int, ...], torch.Tensor]:
    """The teacher's logits by piece ids; the file must hold exactly these examples (same split, same
    tokenizer and windows), else it belongs to other inputs."""
    from safetensors import safe_open

    if not path.is_file():
        raise DistillError(f"{path}: no teacher logits; run the teacher_logits stage first")
    with safe_open(str(path), framework="pt") as handle:
        tensors = {name: handle.get_tensor(name) for name in handle.keys()}
    ids, id_offsets = tensors.get("input_ids"), tensors.get("id_offsets")
    stored = [] if ids is None else [tuple(ids[a:b].tolist()) for a, b in zip(id_offsets, id_offsets[1:], strict=False)]
    if stored != [tuple(e.input_ids) for e in examples]:
        raise DistillError(f"{path}: computed for other train windows ({len(stored)} stored, {len(examples)} now); "
                           "rerun the teacher_logits stage")
    cuts = tensors["logit_offsets"].tolist()
    logits = tensors["logits"]
    return {key: logits[a:b] if token_level else logits[a] for key, a, b in zip(stored, cuts, cuts[1:], strict=False)}


# ------------------------------------------------------------------ training (stage distill)


def train_student(params: Params, kind) -> dict:
    """Train and save the student (or write the off marker); returns what `paths.student_metrics` gets."""
    paths = params.paths
    if params.compress.student_layers == 0:
        return write_off(params)
    from tasks import trainer

    data_dir = Path(paths.augmented)
    outputs = trainer.Outputs(Path(paths.student), Path(paths.student_metrics),
                              checkpoint_dir=Path(paths.student_checkpoints))
    return trainer.fit(student_recipe(params, kind, kind.training(data_dir / "train.jsonl")), data_dir, outputs)


def student_recipe(params: Params, kind, training: TrainingKind[Any]):
    """The training skeleton's hooks for the student (tasks/trainer.py): the model is the candidate cut to
    `compress.student_layers`, the data its train rows and their transfer set with the teacher's logits, the
    loss `distillation_loss`, the runner `paired_logits`; one process, and checkpoints of this distillation."""
    from tasks import trainer

    rules = params.compress

    # Defined here, not at module level: importing the trainer imports torch, which the off switch avoids.
    class StudentRecipe(trainer.Recipe):
        distributed = False  # the student trains in one process (student_params)
        teacher_layers = 0  # set when the model is built

        def model(self):
            teacher, tokenizer = checked_teacher(Path(params.paths.model), training.labels)
            self.teacher_layers = teacher.config.num_hidden_layers
            return make_student(teacher.cpu(), rules.student_layers, rules.student_layer_choice), tokenizer

        def data(self, tokenizer, rows):
            return student_data(params, kind, training, tokenizer, rows, self.settings)

        def loss(self):
            return distillation_loss(training, rules.distill_alpha, rules.temperature)

        def runner(self, model, data):
            return paired_logits(model, data.targets, data.teacher_only)

        def seed_dropout(self, processes):
            """Not reseeded: the student's dropout follows the RNG as cutting the student left it, as it
            always has, so a distillation gives the same student as before the shared skeleton (DECISIONS 64)."""

        def identity(self, files, processes):
            return run_identity(params, self.settings, training.labels, [*files, Path(params.paths.teacher_logits)])

        def metrics(self, base, score, data):
            kept = kept_layers(self.teacher_layers, rules.student_layers, rules.student_layer_choice)
            return {"enabled": True, "teacher_layers": self.teacher_layers, "kept_layers": kept,
                    "transfer_rows": data.transfer_rows, "transfer_text_rows": data.transfer_text_rows, **base}

    return StudentRecipe(training, student_params(params))


@dataclass(frozen=True)
class StudentData:
    """What the student trains on: the windows of train then of its transfer set, the teacher's logits per
    window, the windows only the teacher labels, and how many transfer rows they came from."""

    examples: list[engine.Example]
    targets: dict[tuple[int, ...], torch.Tensor]
    teacher_only: set[tuple[int, ...]]
    transfer_rows: int
    transfer_text_rows: int  # of the transfer rows, those from the user's text


def student_data(params: Params, kind, training: TrainingKind[Any], tokenizer, rows: Sequence[Any],
                 settings: TrainParams) -> StudentData:
    """The train rows and their transfer set, encoded, with the teacher logits the teacher_logits stage stored."""
    transfer = transfer_rows(params, kind, rows)
    encoded = training.encode(tokenizer, [*rows, *transfer], settings, with_labels=True).examples
    token_level = bool(encoded and encoded[0].word_ids)
    targets = read_targets(Path(params.paths.teacher_logits), encoded, token_level)
    examples, teacher_only = split_gold(encoded, len(rows))
    from tasks.transfer import count_texts

    return StudentData(examples, targets, teacher_only, len(transfer), count_texts(transfer))


def split_gold(examples: Sequence[engine.Example], gold_rows: int
               ) -> tuple[list[engine.Example], set[tuple[int, ...]]]:
    """The examples to train on, and the windows that only the teacher labels (those of rows from `gold_rows`
    on, the transfer set). A transfer window whose pieces equal a gold one (an uncased tokenizer reads
    "Paris" and "paris" alike) is left out: its piece ids could not say which labels it has."""
    gold = {tuple(e.input_ids) for e in examples if e.sentence < gold_rows}
    kept = [e for e in examples if e.sentence < gold_rows or tuple(e.input_ids) not in gold]
    return kept, {tuple(e.input_ids) for e in kept if e.sentence >= gold_rows}


def run_identity(params: Params, settings: TrainParams, labels: list[str], files: list[Path]) -> str:
    """A checkpoint resumes only the same distillation: training settings, labels, the split files and the
    teacher's logits (which stand for the candidate the student is cut from), and the distillation keys."""
    rules = params.compress
    keys = {"student_layers": [rules.student_layers, rules.student_layer_choice], "alpha": rules.distill_alpha,
            "temperature": rules.temperature,
            "transfer": [rules.transfer_copies, rules.transfer_replace_prob, params.augment.seed, rules.transfer_text]}
    from tasks import checkpoints

    return checkpoints.fingerprint(settings, labels, files) + "/" + json.dumps(keys, sort_keys=True)


def write_off(params: Params) -> dict:
    """Distillation off: a student folder holding only a marker, and metrics saying so."""
    paths = params.paths
    student = Path(paths.student)
    staging = student.with_name(f".{student.name}.off")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    atomic_write_text(staging / OFF_MARKER, "distillation is off: compress.student_layers is 0\n")
    swap_in_folder(staging, student)
    empty_folder(Path(paths.student_checkpoints))
    metrics = {"enabled": False}
    write_json(Path(paths.student_metrics), metrics)
    return metrics


# ------------------------------------------------------------------ command line


def step(params: Params, args) -> str:
    from tasks.kinds import model_kind_for

    # Off, neither step needs the kind (whose modules import torch and transformers): resolve it only when on.
    kind = model_kind_for(params) if params.compress.student_layers else None
    if args.step == "teacher":
        return teacher_logits(params, kind)
    metrics = train_student(params, kind)
    if not metrics["enabled"]:
        return "distillation off (compress.student_layers: 0)"
    return (f"student with layers {metrics['kept_layers']} of {metrics['teacher_layers']}: best epoch "
            f"{metrics['best_epoch']} dev score {metrics['dev_f1']} -> {params.paths.student}")


def main(argv: list[str] | None = None) -> None:
    run_stage("distill", step, argv, user_errors=(DistillError,),
              add_arguments=lambda parser: parser.add_argument(
                  "--step", choices=("teacher", "student"), required=True,
                  help="teacher: the candidate's logits on train (stage teacher_logits); student: train it (distill)"))


if __name__ == "__main__":
    main()
