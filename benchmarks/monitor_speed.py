"""The drift monitor: its speed and memory on a large window, and whether it tells real shifted traffic from
unshifted traffic.

    PYTHONPATH=$PWD .venv/bin/python benchmarks/monitor_speed.py speed --items 100000
    PYTHONPATH=$PWD .venv/bin/python benchmarks/monitor_speed.py detection --items 1000 --windows 20

`speed`: 100,000 synthetic captured items (tests/drift_traffic.py) in gzip JSONL batches of 1,000, read by
`flows.ops.monitor.read_window` from an in-memory S3 stand-in (the S3 transfer itself is not timed: the local
SeaweedFS adds its own disk and network), compared with a reference. Each mode runs in a child process so its
peak RSS (ru_maxrss) is its own: "streaming" is the monitor; "load-all" is the baseline a monitor without
histograms would be (every line parsed into a list, then profiled), and "import" only imports the modules.

`detection`: real text. The reference is the WNUT-16 test split (the pipeline's own hash split of the
packaged data, as `reference.json` would profile it); "unshifted" windows are random draws of --items
sentences from WNUT-16 train+dev (same source, not the reference's sentences), "shifted" windows draws from
the WNUT-17 test set (data/external/wnut17: other years, other sites, other entities). It computes the text
and sub-word measures with the packaged encoder's tokenizer (words, pieces, unknown and fragmented shares,
URLs, emoji, non-Latin, all-caps); confidence and predicted types need a trained model's predictor and are
held constant here (both sides equal: they can neither alarm nor detect). Prints one JSON object each;
docs/BENCHMARKS.md ("Drift monitor") records the runs.
"""

from __future__ import annotations

import argparse
import io
import json
import platform
import random
import re
import resource
import subprocess
import sys
import time
import unicodedata
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


# ---------------------------------------------------------------- speed


class MemoryS3:
    """The calls `read_window` makes, over objects in memory."""

    def __init__(self, objects: dict[str, bytes]):
        self.objects = objects

    def get_paginator(self, _name):
        fake = self

        class Paginator:
            def paginate(self, Bucket, Prefix):  # noqa: N803 - boto3's names
                yield {"Contents": [{"Key": k} for k in sorted(fake.objects) if k.startswith(Prefix)]}

        return Paginator()

    def get_object(self, Bucket, Key):  # noqa: N803
        return {"Body": io.BytesIO(self.objects[Key])}


def child(mode: str, items: int) -> None:
    """One measurement in this process: print {"seconds", "peak_rss_mb"} as JSON."""
    from flows.ops.monitor import read_window
    from tasks.drift import Profile, compare
    from tasks.params import load_params
    from tests.drift_traffic import stats, traffic

    params = load_params(ROOT / "params.yaml").monitor
    end = datetime.now(UTC)
    rng = random.Random(0)
    reference = Profile()
    for _ in range(2000):
        reference.add(stats(rng))
    objects = dict(traffic("m", 1, items, 1000, seed=1, end=end)) if mode != "import" else {}
    start = time.perf_counter()
    if mode == "streaming":
        window = read_window(MemoryS3(objects), "b", "m", end - timedelta(hours=24), end)
        rows = compare(reference, window.profiles[("m", 1)], params.thresholds, params.min_items,
                       params.low_confidence)
        assert window.items == items and rows
    elif mode == "load-all":
        import gzip

        lines = [json.loads(line) for body in objects.values() for line in gzip.decompress(body).splitlines()]
        profile = Profile()
        for line in lines:
            profile.add(line["stats"])
        assert profile.items == items
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"seconds": round(seconds, 2), "peak_rss_mb": round(peak, 1),
                      "batches_mb": round(sum(len(b) for b in objects.values()) / 2**20, 1)}))


def measure(mode: str, items: int) -> dict:
    out = subprocess.run([sys.executable, __file__, "child", mode, "--items", str(items)], capture_output=True,
                         text=True, check=True, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    return json.loads(out.stdout.strip().splitlines()[-1])


def speed(items: int) -> dict:
    runs = {mode: measure(mode, items) for mode in ("import", "streaming", "load-all")}
    base = runs["import"]["peak_rss_mb"]
    return {"benchmark": "monitor speed", "items": items, "machine": platform.machine(), **runs,
            "streaming_added_mb": round(runs["streaming"]["peak_rss_mb"] - base, 1),
            "load_all_added_mb": round(runs["load-all"]["peak_rss_mb"] - base, 1),
            "items_per_s": round(items / runs["streaming"]["seconds"])}


# ---------------------------------------------------------------- detection

URL = re.compile(r"https?://|www\.", re.IGNORECASE)


def is_emoji(char: str) -> bool:
    code = ord(char)
    return 0x1F300 <= code <= 0x1FAFF or 0x2600 <= code <= 0x27BF or 0x1F000 <= code <= 0x1F2FF


def non_latin(char: str) -> bool:
    return char.isalpha() and "LATIN" not in unicodedata.name(char, "")


class TextStats:
    """Text and sub-word measures of a sentence, with a tokenizer.json (no model)."""

    def __init__(self, base: Path):
        from tokenizers import Tokenizer

        self.tokenizer = Tokenizer.from_file(str(base / "tokenizer.json"))
        self.tokenizer.no_truncation()
        self.tokenizer.no_padding()
        self.unk = self.tokenizer.token_to_id("[UNK]")

    def __call__(self, tokens: list[str]) -> dict:
        encoded = self.tokenizer.encode_batch([[t] for t in tokens], is_pretokenized=True, add_special_tokens=False)
        text = " ".join(tokens)
        return {"words": len(tokens), "chars": len(text), "pieces": sum(len(e.ids) for e in encoded) + 2,
                "unknown_pieces": sum(i == self.unk for e in encoded for i in e.ids),
                "fragmented_words": sum(len(e.ids) > 1 for e in encoded),
                "urls": sum(bool(URL.search(t)) for t in tokens), "emoji": sum(map(is_emoji, text)),
                "non_latin": sum(map(non_latin, text)),
                "upper_words": sum(len(t) > 1 and t.isalpha() and t.isupper() for t in tokens),
                "confidence": 1.0, "min_confidence": 1.0, "predicted": []}


def wnut16_records() -> dict[str, list]:
    """The packaged WNUT-16 data, split as the pipeline's ingest splits it (tagged sentences)."""
    from tasks.ingest import read_splits, resolve_source
    from tasks.kinds import kind_for
    from tasks.params import load_params

    params = load_params(ROOT / "params.yaml")
    splits, _ = read_splits(resolve_source(params.ingest.source), params.ingest, kind_for(params))
    return splits


def wnut16_splits() -> dict[str, list[list[str]]]:
    return {name: [list(r.tokens) for r in rows] for name, rows in wnut16_records().items()}


class ModelStats:
    """Every measure, through a saved model's predictor (`tasks.kinds.saved.predictor_for(...).describe`)."""

    def __init__(self, model_dir: Path, batch_size: int = 32):
        from tasks.kinds.saved import predictor_for  # type: ignore[attr-defined]

        self.predictor = predictor_for(model_dir, batch_size, None)

    def many(self, sentences: list[list[str]]) -> list[dict]:
        from tasks.reference import describe_items

        return describe_items(self.predictor, sentences, 64)


def conll_sentences(path: Path) -> list[list[str]]:
    sentences, current = [], []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            current.append(line.split("\t")[0])
        elif current:
            sentences.append(current)
            current = []
    return sentences + ([current] if current else [])


def detection(items: int, windows: int, seed: int, model: Path | None) -> dict:
    """Reference, unshifted and shifted pools described by `model`'s predictor (every measure), or without a
    model by TextStats (text and sub-word measures only). A model is more confident on sentences it was
    trained on, so with a model the unshifted windows come from WNUT-16 dev only (drawn with replacement:
    it is smaller than a window), never from train."""
    from tasks.basemodel import resolve_base_model
    from tasks.drift import compare, profile_of
    from tasks.params import load_params

    params = load_params(ROOT / "params.yaml")
    splits = wnut16_splits()
    wnut17 = conll_sentences(ROOT / "data/external/wnut17/test.conll")
    if model is None:
        text = TextStats(resolve_base_model("minilm"))
        describe = lambda sentences: [text(s) for s in sentences]  # noqa: E731
        unshifted_source = splits["train"] + splits["dev"]
    else:
        describe = ModelStats(model).many
        unshifted_source = splits["dev"]
    reference = profile_of(describe(splits["test"][:params.monitor.reference_items]))
    pool16 = describe(unshifted_source)
    pool17 = describe(wnut17)
    rng = random.Random(seed)

    def verdicts(pool: list[dict]) -> list[dict]:
        out = []
        for _ in range(windows):
            window = profile_of(rng.sample(pool, items) if len(pool) >= items else rng.choices(pool, k=items))
            rows = compare(reference, window, params.monitor.thresholds, params.monitor.min_items,
                           params.monitor.low_confidence)
            out.append({r.measure: r.statistic for r in rows} | {"drifted": [r.measure for r in rows if r.drifted]})
        return out

    unshifted, shifted = verdicts(pool16), verdicts(pool17)
    model_only = {"confidence", "predicted", "low_confidence"}
    measures = [m for m in params.monitor.thresholds if model is not None or m not in model_only]
    return {"benchmark": "monitor detection", "model": str(model) if model else None,
            "reference_items": reference.items, "window_items": items,
            "windows": windows, "pools": {"wnut16_unshifted": len(pool16), "wnut17_test": len(pool17)},
            "false_alarm_rate": sum(bool(w["drifted"]) for w in unshifted) / windows,
            "detection_rate": sum(bool(w["drifted"]) for w in shifted) / windows,
            "unshifted_max_psi": {m: max(w[m] for w in unshifted) for m in measures},
            "shifted_median_psi": {m: sorted(w[m] for w in shifted)[windows // 2] for m in measures},
            "shifted_flags": {m: sum(m in w["drifted"] for w in shifted) for m in measures},
            "not_measured": [] if model is not None else sorted(model_only)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=["speed", "detection", "child"])
    parser.add_argument("mode", nargs="?")
    parser.add_argument("--items", type=int)
    parser.add_argument("--windows", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--model", type=Path, help="detection: a saved NER model folder, for every measure")
    args = parser.parse_args()
    if args.what == "child":
        child(args.mode, args.items)
    elif args.what == "speed":
        print(json.dumps(speed(args.items or 100_000), indent=2))
    else:
        print(json.dumps(detection(args.items or 1000, args.windows, args.seed, args.model), indent=2))


if __name__ == "__main__":
    main()
