"""Training speed: flowtune's engine vs the Hugging Face Trainer recipe vs a naive pad-to-128 PyTorch loop.

Usage:
    .venv/bin/python benchmarks/train_speed.py                          # all of WNUT-17 train, 2 epochs
    .venv/bin/python benchmarks/train_speed.py --sentences 1000 --epochs 1 --modes flowtune hf-trainer
    .venv/bin/python benchmarks/train_speed.py --sentences 48 --epochs 1 --batch-size 8 --dev-limit 32 \\
        --test-limit 32 --threads 1                                   # smoke test

The data is the official WNUT-17 splits vendored in data/external/wnut17 (train on train, dev F1 on dev,
test F1 on test). Every mode fine-tunes the packaged MiniLM encoder with the same batch size, epochs,
learning rate, warmup, weight decay, gradient clipping, dropout, max_length and seed (params.yaml's
`train:` section, with --epochs/--batch-size/--threads overriding it):

- flowtune: `tasks.train.fit` (windows instead of truncation, length-grouped batches, dynamic padding;
  best epoch by dev F1), test F1 with `tasks.evaluate.run`.
- hf-trainer: transformers' run_ner.py recipe: truncation at max_length, labels on first pieces,
  DataCollatorForTokenClassification (dynamic padding, random sampler), `Trainer` defaults otherwise.
- naive-pad128: a plain loop, every sentence padded to 128 pieces, shuffled DataLoader, AdamW + linear warmup.

hf-trainer and naive-pad128 are scored with the last epoch's weights: the first piece of each word is
predicted, words truncated away count as "O", strict IOB2 entity F1 over words. Each mode runs in its own
subprocess, so peak RSS (and peak GPU memory on CUDA) is per mode. "real tokens/s" counts non-pad word
pieces (CLS/SEP included) per second of optimisation (flowtune's dev scoring excluded); the "vs" columns
divide it by the baseline's. Prints a markdown table to stdout and progress to stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
import yaml  # noqa: E402
from transformers import AutoModelForTokenClassification, AutoTokenizer  # noqa: E402

from tasks.basemodel import resolve_base_model  # noqa: E402
from tasks.io import write_jsonl  # noqa: E402
from tasks.iob import label_list, split_tag  # noqa: E402
from tasks.kinds.ner.modeling import (  # noqa: E402
    IGNORE_INDEX,
    autocast,
    build_examples,
    encode_words,
    first_piece_positions,
    strict_f1,
)
from tasks.kinds.ner.records import read_records  # noqa: E402
from tasks.params import load_params  # noqa: E402

MODES = ("flowtune", "hf-trainer", "naive-pad128")
DATA = ROOT / "data" / "external" / "wnut17"
NAIVE_LENGTH = 128
EVAL_BATCH = 64


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# ---------------------------------------------------------------- shared set-up


def load_data(args) -> tuple[dict[str, list], list[str]]:
    """The WNUT-17 splits (limited as asked) and the labels of every entity type in the full files."""
    full = {split: read_records(DATA / f"{split}.conll", "conll", "iob2") for split in ("train", "dev", "test")}
    labels = label_list(sorted({split_tag(tag)[1] for records in full.values() for r in records for tag in r.tags}
                               - {None}))
    limits = {"train": args.sentences, "dev": args.dev_limit, "test": args.test_limit}
    return {split: records[: limits[split]] for split, records in full.items()}, labels


def train_params(args):
    """params.yaml's train section with the benchmark's overrides (only fields that exist)."""
    params = load_params(ROOT / "params.yaml").train
    wanted = {"epochs": args.epochs, "batch_size": args.batch_size, "num_threads": args.threads}
    if args.seed is not None:
        wanted["seed"] = args.seed
    if args.random_batches:
        wanted["group_by_length"] = False
    for setting in args.set:  # --set warmup_ratio=0: any train key, for every mode that reads it
        key, _, value = setting.partition("=")
        if key not in type(params).model_fields:
            known = ", ".join(type(params).model_fields)
            raise SystemExit(f"--set {setting}: train has no key {key!r} (keys: {known})")
        wanted[key] = yaml.safe_load(value)
    if args.worker == "flowtune" and args.accumulation > 1:  # same global batch, in K micro-batches
        if args.batch_size % args.accumulation:
            raise SystemExit("--batch-size must be a multiple of --accumulation")
        wanted |= {"batch_size": args.batch_size // args.accumulation, "gradient_accumulation_steps": args.accumulation}
    # Validated, not copied: YAML reads "5e-5" as a string, which the schema turns into the float it means.
    return type(params).model_validate({**params.model_dump(),
                                        **{k: v for k, v in wanted.items() if k in type(params).model_fields}})


def warn_unlike(params) -> None:
    """Settings of params.yaml that flowtune would honour and the two baselines do not reproduce."""
    neutral = {"gradient_accumulation_steps": 1, "processes": 1, "early_stopping_patience": 0,
               "label_all_pieces": False, "compile": False, "layer_lr_decay": 1.0,
               "freeze_embeddings": False, "freeze_layers": 0}
    for name, value in neutral.items():
        if getattr(params, name, value) != value:
            log(f"warning: train.{name} = {getattr(params, name)} in params.yaml; the baselines use {value}")
    if getattr(getattr(params, "lora", None), "enabled", False):
        log("warning: train.lora.enabled in params.yaml; the baselines fine-tune every weight")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def adamw(model, learning_rate: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW without weight decay on biases and LayerNorm weights, fused, as the Trainer and flowtune do:
    the naive loop differs from them in its padding only."""
    groups = {True: [], False: []}
    for name, param in model.named_parameters():
        groups[param.ndim >= 2 and "LayerNorm" not in name].append(param)
    return torch.optim.AdamW([{"params": groups[True], "weight_decay": weight_decay},
                              {"params": groups[False], "weight_decay": 0.0}], lr=learning_rate, fused=True)


def load_model(params, labels: list[str], device: torch.device):
    """Seeded, so every mode starts from the same classification head."""
    seed_everything(params.seed)
    base = resolve_base_model(params.base_model)
    model = AutoModelForTokenClassification.from_pretrained(
        base, num_labels=len(labels), id2label=dict(enumerate(labels)),
        label2id={label: i for i, label in enumerate(labels)},
        hidden_dropout_prob=params.dropout, attention_probs_dropout_prob=params.dropout, use_safetensors=True,
    )
    return model.to(device), AutoTokenizer.from_pretrained(base)


def tokenize(tokenizer, records, labels: list[str], max_length: int, padding: bool | str = False) -> list[dict]:
    """run_ner.py's tokenize_and_align_labels: label on each word's first piece, -100 elsewhere."""
    label2id = {label: i for i, label in enumerate(labels)}
    encoded = tokenizer([list(r.tokens) for r in records], is_split_into_words=True, truncation=True,
                        max_length=max_length, padding=padding)
    features = []
    for index, record in enumerate(records):
        row = [IGNORE_INDEX] * len(encoded["input_ids"][index])
        for position, word in first_piece_positions(encoded.word_ids(index)):
            row[position] = label2id[record.tags[word]]
        features.append({key: encoded[key][index] for key in encoded.keys()} | {"labels": row})
    return features


def predict_words(model, tokenizer, records, max_length: int) -> list[list[str]]:
    """A tag per word: its first piece's argmax; words truncated away are "O"."""
    encoded = tokenizer([list(r.tokens) for r in records], is_split_into_words=True, truncation=True,
                        max_length=max_length)
    predicted = [["O"] * len(r.tokens) for r in records]
    order = sorted(range(len(records)), key=lambda i: len(encoded["input_ids"][i]))
    device = next(model.parameters()).device
    model.eval()
    with torch.inference_mode():
        for start in range(0, len(order), EVAL_BATCH):
            chunk = order[start: start + EVAL_BATCH]
            batch = tokenizer.pad([{k: encoded[k][i] for k in encoded.keys()} for i in chunk], return_tensors="pt")
            with autocast(device):
                best = model(**batch.to(device)).logits.argmax(-1).tolist()
            for index, row in zip(chunk, best, strict=True):
                for position, word in first_piece_positions(encoded.word_ids(index)):
                    predicted[index][word] = model.config.id2label[row[position]]
    return predicted


def predict_f1(model, tokenizer, records, max_length: int) -> float:
    """Strict IOB2 entity F1 over words."""
    return strict_f1([list(r.tags) for r in records], predict_words(model, tokenizer, records, max_length))


def sync(device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter()


# ---------------------------------------------------------------- the three modes


def run_flowtune(params, data: dict, labels: list[str], device: torch.device) -> dict:
    from tasks import evaluate, train
    from tasks.kinds import kind_for
    from tasks.kinds.ner.training import NerTraining

    entity_types = [label[2:] for label in labels[1::2]]
    with tempfile.TemporaryDirectory(prefix="train_speed-") as tmp:
        work = Path(tmp)
        for split, records in data.items():
            write_jsonl(work / "data" / f"{split}.jsonl", records)
        metrics = train.fit(NerTraining(entity_types), params, work / "data",
                            train.Outputs(work / "model", work / "train.json", work / "curve.csv"))
        scores = evaluate.run(load_params(ROOT / "params.yaml").evaluate, work / "model", work / "data" / "test.jsonl",
                              work / "eval.json", work / "pred.jsonl", params.max_length,
                              kind=kind_for(load_params(ROOT / "params.yaml")))
        tokenizer = AutoTokenizer.from_pretrained(work / "model")
    # The same windows flowtune trains on: their pieces are its real tokens (it reports only the rate).
    windows = build_examples(tokenizer, encode_words(tokenizer, [r.tokens for r in data["train"]]), params.max_length)
    tokens = sum(len(e.input_ids) for e in windows) * params.epochs
    return {"train_seconds": tokens / metrics["train_tokens_per_second"], "real_tokens": tokens,
            "dev_f1": metrics["dev_f1"], "test_f1": scores.headline.value,
            "reported_train_seconds": metrics["train_seconds"], "best_epoch": metrics["best_epoch"]}


def trainer_arguments(output_dir: str, params, steps: int, device: torch.device):
    """The Trainer's settings from flowtune's train params: the same schedule, no saving, logging or evaluation."""
    from transformers import TrainingArguments

    return TrainingArguments(
        output_dir=output_dir, per_device_train_batch_size=params.batch_size, per_device_eval_batch_size=EVAL_BATCH,
        num_train_epochs=params.epochs, learning_rate=params.learning_rate, weight_decay=params.weight_decay,
        max_grad_norm=params.max_grad_norm,
        # transformers 5 has no warmup_ratio; a float warmup_steps < 1 is a ratio but rounds up, flowtune down.
        warmup_steps=int(params.warmup_ratio * steps), seed=params.seed, report_to="none",
        save_strategy="no", eval_strategy="no", logging_strategy="no", disable_tqdm=True,
        use_cpu=device.type == "cpu", dataloader_num_workers=0,
        # The mixed precision flowtune's `train.precision` asks for (auto = bf16 on CUDA), so both sides compare.
        bf16=device.type == "cuda" and params.precision in ("auto", "bf16"),
        fp16=device.type == "cuda" and params.precision == "fp16",
    )


def run_hf_trainer(params, data: dict, labels: list[str], device: torch.device) -> dict:
    from transformers import DataCollatorForTokenClassification, Trainer, TrainerCallback

    class Clock(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            self.threads = torch.get_num_threads()
            self.start = sync(device)

        def on_train_end(self, args, state, control, **kwargs):
            self.seconds = sync(device) - self.start

    model, tokenizer = load_model(params, labels, device)
    features = tokenize(tokenizer, data["train"], labels, params.max_length)
    steps = -(-len(features) // params.batch_size) * params.epochs
    clock = Clock()
    with tempfile.TemporaryDirectory(prefix="train_speed-") as tmp:
        trainer = Trainer(model=model, args=trainer_arguments(tmp, params, steps, device), train_dataset=features,
                          processing_class=tokenizer,
                          data_collator=DataCollatorForTokenClassification(tokenizer), callbacks=[clock])
        trainer.train()
    if clock.threads != torch.get_num_threads():
        log(f"hf-trainer: torch ran with {clock.threads} threads during training")
    tokens = sum(sum(f["attention_mask"]) for f in features) * params.epochs
    return {"train_seconds": clock.seconds, "real_tokens": tokens, "optimizer_steps": trainer.state.global_step,
            "dev_f1": predict_f1(model, tokenizer, data["dev"], params.max_length),
            "test_f1": predict_f1(model, tokenizer, data["test"], params.max_length)}


def run_naive(params, data: dict, labels: list[str], device: torch.device) -> dict:
    from transformers import get_linear_schedule_with_warmup

    model, tokenizer = load_model(params, labels, device)
    features = tokenize(tokenizer, data["train"], labels, NAIVE_LENGTH, padding="max_length")
    tensors = {key: torch.tensor([f[key] for f in features]) for key in features[0]}
    dataset = torch.utils.data.TensorDataset(*tensors.values())
    loader = torch.utils.data.DataLoader(dataset, batch_size=params.batch_size, shuffle=True,
                                         generator=torch.Generator().manual_seed(params.seed))
    optimizer = adamw(model, params.learning_rate, params.weight_decay)
    steps = len(loader) * params.epochs
    scheduler = get_linear_schedule_with_warmup(optimizer, int(params.warmup_ratio * steps), steps)
    model.train()
    start = sync(device)
    for _ in range(params.epochs):
        for values in loader:
            batch = {key: value.to(device) for key, value in zip(tensors, values, strict=True)}
            with autocast(device):
                loss = model(**batch).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), params.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
    seconds = sync(device) - start
    tokens = int(tensors["attention_mask"].sum()) * params.epochs
    padded = tensors["input_ids"].numel() * params.epochs
    return {"train_seconds": seconds, "real_tokens": tokens, "padded_tokens": padded,
            "dev_f1": predict_f1(model, tokenizer, data["dev"], NAIVE_LENGTH),
            "test_f1": predict_f1(model, tokenizer, data["test"], NAIVE_LENGTH)}


RUNNERS = {"flowtune": run_flowtune, "hf-trainer": run_hf_trainer, "naive-pad128": run_naive}


def worker(args) -> None:
    """One mode in this process; its results (with this process's peak memory) go to args.json."""
    device = torch.device(args.device)
    torch.set_num_threads(args.threads)
    transformers.logging.set_verbosity_error()  # the load report of the new head, on every model load
    transformers.logging.disable_progress_bar()
    params = train_params(args)
    data, labels = load_data(args)
    log(f"{args.worker}: {len(data['train'])} train sentences, {params.epochs} epochs, batch {params.batch_size} "
        f"x {getattr(params, 'gradient_accumulation_steps', 1)}, "
        f"{args.threads} threads, {device.type}")
    result = RUNNERS[args.worker](params, data, labels, device)
    result |= {"mode": args.worker, "tokens_per_second": result["real_tokens"] / result["train_seconds"],
               "train_sentences": len(data["train"]),
               "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
               "peak_gpu_mib": torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else None}
    Path(args.json).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")


# ---------------------------------------------------------------- driver


def run_mode(mode: str, args) -> dict:
    """Run one mode in a fresh interpreter; its stdout (flowtune's epoch lines) goes to our stderr."""
    with tempfile.TemporaryDirectory(prefix="train_speed-") as tmp:
        out = Path(tmp) / "result.json"
        command = [sys.executable, __file__, "--worker", mode, "--json", str(out), "--epochs", str(args.epochs),
                   "--batch-size", str(args.batch_size), "--threads", str(args.threads), "--device", args.device]
        command += ["--seed", str(args.seed)] if args.seed is not None else []
        command += ["--random-batches"] if args.random_batches else []
        command += ["--accumulation", str(args.accumulation)]
        command += [f"--set={setting}" for setting in args.set]
        for flag, value in (("--sentences", args.sentences), ("--dev-limit", args.dev_limit),
                            ("--test-limit", args.test_limit)):
            command += [flag, str(value)] if value is not None else []
        env = os.environ | {"OMP_NUM_THREADS": str(args.threads), "TOKENIZERS_PARALLELISM": "false"}
        if args.device == "cpu":
            env["CUDA_VISIBLE_DEVICES"] = ""  # flowtune picks CUDA whenever it sees one
        log(f"--- {mode}")
        subprocess.run(command, env=env, stdout=sys.stderr, check=True)
        result = json.loads(out.read_text(encoding="utf-8"))
    log(f"{mode}: {result['train_seconds']:.1f} s, {result['tokens_per_second']:,.0f} real tokens/s, "
        f"dev F1 {result['dev_f1']:.4f}, test F1 {result['test_f1']:.4f}")
    return result


def ratio(result: dict, results: dict, baseline: str) -> str:
    if baseline not in results:
        return "n/a"
    return f"{result['tokens_per_second'] / results[baseline]['tokens_per_second']:.2f}x"


def table(results: dict, cuda: bool) -> str:
    header = ["mode", "train seconds", "real tokens/s", "vs hf-trainer", "vs naive-pad128", "dev F1", "test F1",
              "peak RSS MiB"] + (["peak GPU MiB"] if cuda else [])
    lines = ["| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1)]
    for mode, r in results.items():
        cells = [mode, f"{r['train_seconds']:.1f}", f"{r['tokens_per_second']:,.0f}", ratio(r, results, "hf-trainer"),
                 ratio(r, results, "naive-pad128"), f"{r['dev_f1']:.4f}", f"{r['test_f1']:.4f}",
                 f"{r['peak_rss_mib']:,.0f}"] + ([f"{r['peak_gpu_mib']:,.0f}"] if cuda else [])
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def resolve_device(name: str) -> str:
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is available")
    return name


def parse_args(argv: list[str] | None = None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sentences", type=int, default=None, help="first N train sentences (default: all)")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=None, help="training seed (default: params.yaml train.seed)")
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    parser.add_argument("--random-batches", action="store_true",
                        help="flowtune with train.group_by_length false (random batches, like the Trainer)")
    parser.add_argument("--accumulation", type=int, default=1,
                        help="flowtune only: K micro-batches of B/K per step (global batch B), each sorted by length")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a train key of params.yaml for every mode (repeatable), e.g. "
                        "--set warmup_ratio=0 --set weight_decay=0 for the Trainer's own defaults")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch threads (default: all cores)")
    parser.add_argument("--device", choices=["cpu", "cuda", "auto"], default="auto")
    parser.add_argument("--dev-limit", type=int, default=None, help="first N dev sentences (smoke tests)")
    parser.add_argument("--test-limit", type=int, default=None, help="first N test sentences (smoke tests)")
    parser.add_argument("--out", type=Path, default=None, help="also write the raw results as JSON here")
    parser.add_argument("--worker", choices=MODES, help=argparse.SUPPRESS)
    parser.add_argument("--json", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main() -> None:
    args = parse_args()
    if args.worker:
        worker(args)
        return
    args.device = resolve_device(args.device)
    warn_unlike(train_params(args))
    results = {mode: run_mode(mode, args) for mode in args.modes}
    sentences = next(iter(results.values()))["train_sentences"]
    config = {"sentences": sentences, "epochs": args.epochs, "batch_size": args.batch_size, "threads": args.threads,
              "set": args.set,
              "device": args.device, "torch": torch.__version__, "transformers": transformers.__version__}
    print(table(results, args.device == "cuda"))
    print("\n" + ", ".join(f"{key} {value}" for key, value in config.items()))
    if args.out:
        args.out.write_text(json.dumps({"config": config, "results": list(results.values())}, indent=2) + "\n",
                            encoding="utf-8")


if __name__ == "__main__":
    main()
