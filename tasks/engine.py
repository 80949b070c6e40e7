"""The fine-tuning loop: one process or many (torchrun + DDP), CPU or CUDA, resumable.

Batching. Every optimizer step takes one *global batch* of `batch_size x gradient_accumulation_steps
x processes` windows, drawn by length-grouped shuffling (similar lengths together, so dynamic padding
wastes little). Each process takes its share of the global batch (`batch[rank::world]`) and splits
it, sorted by length, into `gradient_accumulation_steps` micro-batches (similar lengths together).

Loss. The task kind hands the loop its loss (`Loss`: summed over the labelled positions of a batch),
so the loop never asks what it is training. The loss of a step is that sum over the global batch
divided by the number of labelled pieces in the global batch (counted on the host, no communication).
Each micro-batch backpropagates its share of that sum, so the gradient is the same whether a global
batch runs in one piece, in micro-batches, or across processes (DDP averages over processes, which
the loss undoes by a factor `world`): two processes with batch 8 follow one process with batch 16.

Every process runs exactly `gradient_accumulation_steps` micro-batches per step (an empty share gets
a zero-weighted stand-in), so DDP's gradient all-reduces always line up.
"""

from __future__ import annotations

import math
import os
import random
import re
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist

from tasks import checkpoints
from tasks.progress import Progress as ProgressLines

IGNORE_INDEX = -100  # label value that torch's cross-entropy skips

# Summed loss of a batch: (logits, labels padded with IGNORE_INDEX) -> a scalar. Summed, not averaged:
# the loop divides by the global batch's labelled pieces itself (see "Loss" above).
Loss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class Example:
    """One model input: a window of a sentence (token classification) or a text (sequence classification).

    `sentence` indexes the source row; `word_ids` map pieces to that row's words (token classification
    only, empty otherwise); `labels` is one entry per piece, or a classifier's label row (see its kind)."""

    sentence: int
    input_ids: list[int]
    word_ids: list[int | None]
    labels: list[int] | None = None


def collate(examples: Sequence[Example], pad_id: int) -> dict[str, torch.Tensor]:
    """Pad a batch to its own longest example (dynamic padding), not to max_length."""
    width = max(len(e.input_ids) for e in examples)
    input_ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(examples), width), dtype=torch.long)
    for row, example in enumerate(examples):
        input_ids[row, : len(example.input_ids)] = torch.tensor(example.input_ids)
        attention_mask[row, : len(example.input_ids)] = 1
    batch = {"input_ids": input_ids, "attention_mask": attention_mask}
    if all(e.labels is not None for e in examples):
        # A multi-label classifier's 0/1 row can be longer than a short text's pieces.
        labels = torch.full((len(examples), max(width, *(len(e.labels) for e in examples))), IGNORE_INDEX,
                            dtype=torch.long)
        for row, example in enumerate(examples):
            labels[row, : len(example.labels)] = torch.tensor(example.labels)
        batch["labels"] = labels
    return batch


def random_batches(count: int, batch_size: int, seed: int) -> list[list[int]]:
    """Batches of shuffled indices (any lengths together), reproducible for a given seed."""
    order = list(range(count))
    random.Random(seed).shuffle(order)
    return [order[i : i + batch_size] for i in range(0, count, batch_size)]


def length_grouped_batches(lengths: Sequence[int], batch_size: int, seed: int) -> list[list[int]]:
    """Shuffled batches of indices with similar lengths, so dynamic padding wastes little.

    Shuffle, cut into chunks of 50 batches, sort each chunk by length, cut into batches and shuffle
    the batch order: random from epoch to epoch (pass seed + epoch), reproducible for a given seed.
    """
    rng = random.Random(seed)
    order = list(range(len(lengths)))
    rng.shuffle(order)
    chunk = batch_size * 50
    batches = []
    for start in range(0, len(order), chunk):
        group = sorted(order[start : start + chunk], key=lambda i: lengths[i])
        batches += [group[i : i + batch_size] for i in range(0, len(group), batch_size)]
    rng.shuffle(batches)
    return batches


def model_device(model: torch.nn.Module) -> torch.device:
    parameter = next(model.parameters(), None)  # an onnxruntime variant (tasks/variants.py) has none: CPU
    return parameter.device if parameter is not None else torch.device("cpu")


def autocast(device: torch.device):
    """bf16 autocast on CUDA for prediction; a no-op context on CPU (CPU bf16 is slower on most machines)."""
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")


@dataclass(frozen=True)
class Processes:
    """This process's place in a data-parallel run (rank 0 of 1 when not launched by torchrun)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    local_world: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def join_processes() -> Processes:
    """Read torchrun's environment and join the process group (NCCL on GPUs, gloo on CPU)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return Processes()
    processes = Processes(
        rank=int(os.environ["RANK"]),
        world=world,
        local_rank=int(os.environ.get("LOCAL_RANK", "0")),
        local_world=int(os.environ.get("LOCAL_WORLD_SIZE", str(world))),
    )
    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return processes


def leave_processes() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def pick_device(processes: Processes) -> torch.device:
    if torch.cuda.is_available():
        torch.cuda.set_device(processes.local_rank)
        return torch.device("cuda", processes.local_rank)
    return torch.device("cpu")


@dataclass(frozen=True)
class Precision:
    """Autocast dtype (None = full fp32) and whether fp16 loss scaling is needed."""

    dtype: torch.dtype | None
    scaled: bool = False


def choose_precision(choice: str, device: torch.device) -> Precision:
    """`train.precision` for this device: auto = bf16 on CUDA (fp16 + scaler without bf16), fp32 on CPU."""
    if device.type != "cuda":
        if choice == "fp16":
            raise ValueError("train.precision fp16 needs a CUDA GPU; use fp32 (or bf16) on CPU")
        # CPU bf16 is slower than fp32 without AMX / avx512_bf16, hence not the auto choice.
        return Precision(torch.bfloat16 if choice == "bf16" else None)
    if choice == "fp32":
        return Precision(None)
    if choice == "bf16" or (choice == "auto" and torch.cuda.is_bf16_supported()):
        return Precision(torch.bfloat16)
    return Precision(torch.float16, scaled=True)


def configure_device(device: torch.device) -> None:
    """TF32 matmuls on CUDA: same accuracy class as bf16 autocast, much faster on Ampere and later."""
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True


def layer_depth(name: str, top: int) -> int:
    """Where a parameter sits in the encoder: 0 for the embeddings, i + 1 for layer i, `top` above them
    (head, pooler). Works for BERT-style names (`encoder.layer.3.`) and `layers.3.` alike, LoRA's too."""
    if "embeddings" in name:
        return 0
    match = re.search(r"\.layers?\.(\d+)\.", name)
    return int(match[1]) + 1 if match else top


def build_optimizer(model: torch.nn.Module, learning_rate: float, weight_decay: float, layer_decay: float = 1.0):
    """AdamW with no weight decay on biases and LayerNorm weights, as the fused kernel.

    Fused on CPU too: for MiniLM the optimizer step alone drops from about 1 s to about 0.1 s on 2
    cores (the word embeddings are 11.7M parameters, updated every step); DECISIONS 16.

    `layer_decay` < 1 is layer-wise learning-rate decay: the head and pooler train at `learning_rate`, the
    top encoder layer at `learning_rate * layer_decay`, each layer below at one more factor, the embeddings
    at the smallest, so the pretrained lower layers move least. The scheduler scales every group alike.
    """
    trainable = [(name, param) for name, param in model.named_parameters() if param.requires_grad]
    layers = [int(m[1]) for name, _ in trainable if (m := re.search(r"\.layers?\.(\d+)\.", name))]
    top = max(layers, default=-1) + 2  # one above the last layer
    groups: dict[tuple[int, bool], list] = {}
    for name, param in trainable:
        skip = param.ndim < 2 or "LayerNorm" in name or "layer_norm" in name or name.endswith(".bias")
        groups.setdefault((layer_depth(name, top), skip), []).append(param)
    return torch.optim.AdamW(
        [{"params": params, "weight_decay": 0.0 if skip else weight_decay,
          "lr": learning_rate * layer_decay ** (top - depth)} for (depth, skip), params in sorted(groups.items())],
        lr=learning_rate, fused=True)


def global_batches(lengths: Sequence[int], params, world: int, epoch: int) -> list[list[int]]:
    """The epoch's optimizer-step batches; the same on every process (same seed), so they stay in step."""
    size = params.batch_size * params.gradient_accumulation_steps * world
    if params.group_by_length:
        return length_grouped_batches(lengths, size, params.seed + epoch)
    return random_batches(len(lengths), size, params.seed + epoch)


def micro_batches(batch: Sequence[int], processes: Processes, accumulation: int,
                  lengths: Mapping[int, int] | None = None) -> list[list[int]]:
    """This process's share of a global batch, cut into `accumulation` micro-batches (some may be empty).

    Given `lengths` (example index -> pieces), the share is sorted by length first, so a micro-batch holds
    similar lengths (little padding); the step's gradient is unchanged (the loss is over the global batch)."""
    share = list(batch[processes.rank :: processes.world])
    if lengths is not None:
        share.sort(key=lengths.__getitem__)
    size = max(1, math.ceil(len(share) / accumulation))
    return [share[i * size : (i + 1) * size] for i in range(accumulation)]


def labelled_pieces(examples: Sequence[Example], batch: Sequence[int]) -> int:
    return sum(sum(label != IGNORE_INDEX for label in examples[i].labels) for i in batch)


@dataclass
class Progress:
    """Where the loop is and what it has seen; saved in checkpoints, so a resumed run continues it."""

    epoch: int = 1
    step_in_epoch: int = 0
    global_step: int = 0
    epoch_loss: float = 0.0
    epoch_seconds: float = 0.0
    epoch_tokens: int = 0
    seconds: float = 0.0
    tokens: int = 0
    curve: list = field(default_factory=list)
    best_epoch: int = 0
    best_score: float = -1.0
    stale_epochs: int = 0
    stopped_early: bool = False


@dataclass
class Loop:
    """Everything the step function needs, built once per run."""

    model: torch.nn.Module  # the plain model (saving, scoring)
    runner: torch.nn.Module  # what the training forward goes through (DDP and/or compiled)
    optimizer: torch.optim.Optimizer
    scheduler: object
    scaler: torch.amp.GradScaler | None
    precision: Precision
    device: torch.device
    processes: Processes
    params: object
    pad_id: int
    loss: Loss  # the task kind's summed loss: the loop itself is the same for every kind
    best_state: dict | None = None  # CPU copy of the best epoch's weights


def to_device(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    if device.type == "cuda":  # pinned host memory lets the copy overlap with compute
        return {k: v.pin_memory().to(device, non_blocking=True) for k, v in batch.items()}
    return {k: v.to(device) for k, v in batch.items()}


def micro_step(loop: Loop, examples: Sequence[Example], indices: list[int], scale: float, sync: bool):
    """Forward + backward of one micro-batch; returns its summed (unscaled) loss, detached."""
    batch = to_device(collate([examples[i] for i in indices], loop.pad_id), loop.device)
    labels = batch.pop("labels")
    no_sync = loop.processes.world > 1 and not sync
    with loop.runner.no_sync() if no_sync else nullcontext():
        with torch.autocast(loop.device.type, dtype=loop.precision.dtype, enabled=loop.precision.dtype is not None):
            logits = loop.runner(**batch).logits
        summed = loop.loss(logits, labels)
        loss = summed * scale
        (loop.scaler.scale(loss) if loop.scaler else loss).backward()
    return summed.detach()


def pieces_per_batch(examples: Sequence[Example], batches: Sequence[Sequence[int]]) -> float:
    """The epoch's mean number of labelled pieces per global batch: the loss's constant denominator."""
    return max(1, sum(labelled_pieces(examples, batch) for batch in batches)) / max(1, len(batches))


def train_step(loop: Loop, examples: Sequence[Example], batch: list[int], denominator: float | None = None):
    """One optimizer step on a global batch; returns the step's mean loss per labelled piece (all processes).

    The summed loss is divided by `denominator`, the epoch's mean labelled pieces per batch (see
    `pieces_per_batch`), not by this batch's own count: so every labelled piece weighs the same, whatever
    batch it lands in. Length-grouped batches make this matter: divided by its own count, a batch of short
    sentences would give each of its pieces about 3x the weight of a piece in a batch of long ones (random
    batches hold similar counts, so for them both choices agree on average)."""
    params, world = loop.params, loop.processes.world
    total = max(1, labelled_pieces(examples, batch))
    denominator = denominator or total
    summed = torch.zeros((), device=loop.device)
    lengths = {i: len(examples[i].input_ids) for i in batch}
    micros = micro_batches(batch, loop.processes, params.gradient_accumulation_steps, lengths)
    for position, indices in enumerate(micros):
        weight = 1.0 if indices else 0.0
        # An empty share still runs (on a stand-in, weight 0) so every process all-reduces together.
        part = micro_step(loop, examples, indices or batch[:1], weight * world / denominator,
                          position == len(micros) - 1)
        summed += weight * part
    if loop.scaler:
        loop.scaler.unscale_(loop.optimizer)
    torch.nn.utils.clip_grad_norm_(loop.model.parameters(), params.max_grad_norm)
    if loop.scaler:
        loop.scaler.step(loop.optimizer)
        loop.scaler.update()
    else:
        loop.optimizer.step()
    loop.scheduler.step()
    loop.optimizer.zero_grad(set_to_none=True)
    if world > 1:
        dist.all_reduce(summed)
    return summed / total


def linear_warmup_then_decay(optimizer, warmup_steps: int, total_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Each group's rate rises linearly from 0 over `warmup_steps`, then falls linearly to 0 at `total_steps`
    (transformers' `get_linear_schedule_with_warmup`, whose import drags in transformers' trainer and peft:
    about 4 s at every stage start)."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return step / max(1, warmup_steps)
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def make_loop(model, params, device: torch.device, processes: Processes, pad_id: int, total_steps: int,
              loss: Loss, runner: torch.nn.Module | None = None) -> Loop:
    """The loop's parts. `runner`: what the training forward goes through instead of `model` (distillation
    puts the teacher's logits beside the student's); DDP and compilation wrap it as they would the model."""
    precision = choose_precision(params.precision, device)
    optimizer = build_optimizer(model, params.learning_rate, params.weight_decay, params.layer_lr_decay)
    scheduler = linear_warmup_then_decay(optimizer, int(params.warmup_ratio * total_steps), total_steps)
    runner = model if runner is None else runner
    if processes.world > 1:
        ids = [device.index] if device.type == "cuda" else None
        runner = torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)
    if params.compile:
        runner = torch.compile(runner, dynamic=True)
    scaler = torch.amp.GradScaler("cuda") if precision.scaled else None
    return Loop(model, runner, optimizer, scheduler, scaler, precision, device, processes, params, pad_id, loss)


def save_checkpoint(folder: Path | None, loop: Loop, progress: Progress, fingerprint: str) -> None:
    """Every process contributes its RNG state; the main process writes the file."""
    if folder is None:
        return
    rng = checkpoints.rng_state()
    states = [rng]
    if loop.processes.world > 1:
        states = [None] * loop.processes.world
        dist.all_gather_object(states, rng)
    if not loop.processes.main:
        return
    checkpoints.save(folder, {
        "fingerprint": fingerprint,
        "model": loop.model.state_dict(),
        "optimizer": loop.optimizer.state_dict(),
        "scheduler": loop.scheduler.state_dict(),
        "scaler": loop.scaler.state_dict() if loop.scaler else None,
        "progress": asdict(progress),
        "best_state": loop.best_state,
        "rng": states,
    })


def restore(loop: Loop, saved: dict) -> Progress:
    """Put model, optimizer, scheduler, scaler and RNGs back where the checkpoint left them."""
    loop.model.load_state_dict(saved["model"])
    loop.optimizer.load_state_dict(saved["optimizer"])
    loop.scheduler.load_state_dict(saved["scheduler"])
    if loop.scaler and saved["scaler"]:
        loop.scaler.load_state_dict(saved["scaler"])
    checkpoints.set_rng_state(saved["rng"][loop.processes.rank])
    loop.best_state = saved["best_state"]
    return Progress(**saved["progress"])


def run_epoch(loop: Loop, examples: Sequence[Example], progress: Progress, folder: Path | None, fingerprint: str):
    """Train the rest of `progress.epoch` (all of it unless resumed mid-epoch); checkpoint every N steps."""
    # from_pretrained returns a model in eval mode: without this, dropout would never be applied.
    loop.runner.train()
    lengths = [len(e.input_ids) for e in examples]
    batches = global_batches(lengths, loop.params, loop.processes.world, progress.epoch)
    denominator = pieces_per_batch(examples, batches)
    # Plain progress lines (tasks/progress.py): at most one every ~10 s, and one every `log_every_steps` steps.
    report = ProgressLines(f"train: epoch {progress.epoch}/{loop.params.epochs} step", len(batches), "steps",
                           done=progress.step_in_epoch, enabled=loop.processes.main)
    running = torch.tensor(progress.epoch_loss, device=loop.device)
    every, log_every = loop.params.checkpoint_every_steps, loop.params.log_every_steps

    def note() -> str:  # only computed when a line is written: `.item()` waits for the GPU
        steps = max(1, progress.step_in_epoch)
        return (f"loss {running.item() / steps:.4f}, "
                f"{progress.epoch_tokens / max(progress.epoch_seconds, 1e-9):,.0f} tokens/s")

    for number in range(progress.step_in_epoch + 1, len(batches) + 1):
        started = time.perf_counter()
        batch = batches[number - 1]
        running += train_step(loop, examples, batch, denominator)
        if number == len(batches):
            running.item()  # wait for queued GPU work, so the epoch's time is real
        progress.epoch_seconds += time.perf_counter() - started
        progress.epoch_tokens += sum(lengths[i] for i in batch)
        progress.step_in_epoch, progress.global_step = number, progress.global_step + 1
        report.update(number, note, force=bool(log_every) and number % log_every == 0)
        if every and progress.global_step % every == 0 and number < len(batches):
            progress.epoch_loss = running.item()
            save_checkpoint(folder, loop, progress, fingerprint)
    report.finish(note)
    progress.epoch_loss = running.item()
    return progress.epoch_loss / max(1, len(batches))


def end_epoch(loop: Loop, progress: Progress, loss: float, score: float | None) -> None:
    """Record the epoch, keep the best weights, decide on early stopping, move to the next epoch."""
    progress.curve.append([progress.epoch, loss, score])
    progress.seconds += progress.epoch_seconds
    progress.tokens += progress.epoch_tokens
    if loop.processes.main:
        shown = "n/a" if score is None else f"{score:.4f}"
        print(f"train: epoch {progress.epoch}/{loop.params.epochs} loss {loss:.4f} dev_f1 {shown} "
              f"{progress.epoch_tokens / max(progress.epoch_seconds, 1e-9):,.0f} tokens/s", flush=True)
    # Without dev sentences there is nothing to select on: the last epoch wins.
    value = score if score is not None else float(progress.epoch)
    if value > progress.best_score:
        progress.best_epoch, progress.best_score, progress.stale_epochs = progress.epoch, value, 0
        if loop.processes.main:
            loop.best_state = {k: v.detach().to("cpu", copy=True) for k, v in loop.model.state_dict().items()}
    else:
        progress.stale_epochs += 1
    patience = loop.params.early_stopping_patience
    progress.stopped_early = bool(patience) and progress.stale_epochs >= patience
    progress.epoch += 1
    progress.step_in_epoch, progress.epoch_loss, progress.epoch_seconds, progress.epoch_tokens = 0, 0.0, 0.0, 0


def fit(loop: Loop, examples: Sequence[Example], score, folder: Path | None, fingerprint: str,
        saved: dict | None = None, after_epoch: Callable[[int, float | None], None] | None = None) -> Progress:
    """The epoch loop, from the start or from a checkpoint. `score(model)` is the kind's dev score, or None
    without dev data (then the last epoch wins). `after_epoch(epoch, score)` runs on the main process after
    each epoch (a sweep's pruning hook, tasks/sweeping.py); an exception from it ends the loop."""
    progress = restore(loop, saved) if saved else Progress()
    if saved and loop.processes.main:
        print(f"train: resuming from {folder} at epoch {progress.epoch}, step {progress.step_in_epoch} "
              f"(global step {progress.global_step})", flush=True)
    while progress.epoch <= loop.params.epochs and not progress.stopped_early:
        loss = run_epoch(loop, examples, progress, folder, fingerprint)
        dev_score = score(loop.model)
        end_epoch(loop, progress, loss, dev_score)
        if after_epoch is not None and loop.processes.main:
            after_epoch(progress.epoch - 1, dev_score)  # end_epoch moved on to the next epoch
        save_checkpoint(folder, loop, progress, fingerprint)
    return progress
