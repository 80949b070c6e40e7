"""Synthetic captured traffic for the drift monitor's tests and benchmark: item stats as a predictor's
`describe` would give them, and gzip JSONL batches in serve's capture layout.

`stats(rng)` draws an ordinary tweet-like item; `shift` makes items long, URL-heavy or all-caps, each
touching only the measures it names (long: words, pieces; urls: url; caps: all_caps).
"""

from __future__ import annotations

import gzip
import json
import random
from datetime import UTC, datetime, timedelta

TYPES = ("person", "location", "company", "product", "other")
SHIFTS = {"long": ("words", "pieces"), "urls": ("url",), "caps": ("all_caps",)}


def stats(rng: random.Random, shift: frozenset[str] = frozenset()) -> dict:
    """One item's stats; with `shift` in {"long", "urls", "caps"}, the named properties are moved."""
    words = max(1, int(rng.gauss(70 if "long" in shift else 18, 6)))
    pieces = int(words * rng.uniform(1.2, 1.5))
    # shares that do not depend on the length, so a "long" shift moves only words and pieces
    fragmented = round(words * rng.uniform(0, 0.3))
    unknown = pieces // 20 + 1 if rng.random() < 0.02 else 0
    confidence = min(1.0, max(0.0, rng.betavariate(12, 1.5)))
    entities = rng.choices(TYPES, weights=(5, 3, 2, 1, 2), k=rng.choice((0, 0, 0, 1, 1, 2)))
    return {"words": words, "chars": words * 5, "pieces": pieces, "unknown_pieces": unknown,
            "fragmented_words": fragmented, "urls": int(rng.random() < (0.8 if "urls" in shift else 0.05)),
            "emoji": int(rng.random() < 0.1), "non_latin": int(rng.random() < 0.03),
            "upper_words": int(rng.random() < (0.9 if "caps" in shift else 0.08)),
            "confidence": round(confidence, 4), "min_confidence": round(confidence * rng.uniform(0.6, 1.0), 4),
            "predicted": list(entities)}


def line(rng: random.Random, when: datetime, model: str, version: int | None, shift=frozenset(),
         request: int = 0) -> dict:
    return {"ts": when.isoformat(), "model": model, "version": version, "kind": "ner", "request": f"r{request}",
            "latency_ms": round(rng.uniform(5, 40), 2), "stats": stats(rng, frozenset(shift))}


def batch_bytes(lines: list[dict]) -> bytes:
    return gzip.compress("".join(json.dumps(x) + "\n" for x in lines).encode())


def batch_key(model: str, when: datetime, suffix: str) -> str:
    return f"{model}/{when:%Y-%m-%d}/{when:%H}-{suffix:0>12}.jsonl.gz"


def traffic(model: str, version: int | None, count: int, per_batch: int, seed: int, shift=frozenset(),
            end: datetime | None = None) -> list[tuple[str, bytes]]:
    """`count` items in batches of `per_batch`, spread over the 6 hours before `end` (now): (key, gzip bytes)."""
    rng = random.Random(seed)
    end = end or datetime.now(UTC)
    out = []
    for b, start in enumerate(range(0, count, per_batch)):
        when = end - timedelta(minutes=5 + (b * 37) % 355)
        lines = [line(rng, when, model, version, shift, start + i) for i in range(min(per_batch, count - start))]
        out.append((batch_key(model, when, f"{seed:04d}{b:08x}"), batch_bytes(lines)))
    return out
