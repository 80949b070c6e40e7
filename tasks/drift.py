"""Drift measures over captured traffic and a model's reference, as fixed-bin histograms, and their PSI.

A served item's `stats` (written by the predictor's `describe`, the same at registration and in serving)
hold counts and confidences: words, chars, pieces, unknown_pieces, fragmented_words, urls, emoji,
non_latin, upper_words (ints), confidence, min_confidence (floats in [0, 1]), predicted (list of str).

`Profile` turns any number of items into per-measure bucket counts: fixed bins for numeric measures,
yes/no for character classes, one bucket per predicted type or class. Its size does not grow with the
number of items (the monitor streams a day of traffic through it), it is what `reference.json` holds,
and two profiles merge by adding counts. `compare` gives each measure a PSI over those buckets and a
verdict (docs/DECISIONS.md: why PSI on fixed bins).

Pure: no I/O, no Prefect; flows/ops/monitor.py reads the batches and writes the reports.
"""

from __future__ import annotations

import gzip
import json
import math
import zlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from numbers import Integral, Real
from typing import BinaryIO

from tasks.params import DRIFT_MEASURES

FORMAT = 1  # reference.json's layout; a reference of another format is reported, not compared

INT_STATS = ("words", "chars", "pieces", "unknown_pieces", "fragmented_words", "urls", "emoji", "non_latin",
             "upper_words")
FLOAT_STATS = ("confidence", "min_confidence")
NONE = "(none)"  # the predicted bucket of an item with no entity (or no chosen class)
MIN_CONFIDENCE_STEP = 100  # min_confidence is kept at 0.01 resolution: any threshold on that grid works


class BadItem(ValueError):
    """An item's stats miss a key or hold a value of the wrong type or range; the message says which."""


@dataclass(frozen=True)
class Numeric:
    """A numeric measure, binned on fixed edges: bucket i holds edges[i] <= value < edges[i + 1] (the
    last bucket is open), so reference and window always share their bins."""

    name: str
    label: str
    value: Callable[[Mapping], float]
    edges: tuple[float, ...]

    def bucket(self, stats: Mapping) -> str:
        x = self.value(stats)
        index = sum(1 for edge in self.edges[1:] if x >= edge)
        return str(index)


@dataclass(frozen=True)
class Flag:
    """The share of items with a property (any URL, emoji, ...): buckets "yes" and "no"."""

    name: str
    label: str
    test: Callable[[Mapping], bool]

    def bucket(self, stats: Mapping) -> str:
        return "yes" if self.test(stats) else "no"


def _share(part: str, whole: str) -> Callable[[Mapping], float]:
    return lambda s: s[part] / s[whole] if s[whole] else 0.0


NUMERIC = (
    Numeric("words", "input length (words)", lambda s: s["words"],
            (0, 5, 10, 15, 20, 25, 30, 40, 50, 75, 100, 150)),
    Numeric("pieces", "input length (sub-word pieces)", lambda s: s["pieces"],
            (0, 8, 16, 24, 32, 40, 48, 64, 96, 128, 192, 256)),
    Numeric("unknown_share", "share of unknown pieces", _share("unknown_pieces", "pieces"),
            (0, 0.001, 0.01, 0.02, 0.05, 0.1, 0.2)),
    Numeric("fragmented_share", "share of words split into several pieces", _share("fragmented_words", "words"),
            (0, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.75)),
    Numeric("confidence", "mean confidence", lambda s: s["confidence"],
            (0, 0.3, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99)),
)
FLAGS = (
    Flag("url", "items with a URL", lambda s: s["urls"] > 0),
    Flag("emoji", "items with an emoji", lambda s: s["emoji"] > 0),
    Flag("non_latin", "items with non-Latin letters", lambda s: s["non_latin"] > 0),
    Flag("all_caps", "items with an all-caps word", lambda s: s["upper_words"] > 0),
)
PREDICTED = "predicted"
LOW_CONFIDENCE = "low_confidence"
MIN_CONFIDENCE = "min_confidence"  # kept in the profile; compared as LOW_CONFIDENCE
LABELS = {**{m.name: m.label for m in (*NUMERIC, *FLAGS)}, PREDICTED: "predicted entity types / classes",
          LOW_CONFIDENCE: "items below the low-confidence threshold (min confidence)"}
MEASURES = DRIFT_MEASURES  # every measure `compare` reports, in report order (params checks thresholds' keys)
assert set(LABELS) == set(MEASURES), "tasks/params.py DRIFT_MEASURES and tasks/drift.py disagree"  # noqa: S101


def check_stats(stats: object) -> Mapping:
    """`stats` if it is a well-formed stats object, else BadItem naming the first problem."""
    if not isinstance(stats, Mapping):
        raise BadItem(f"stats is {type(stats).__name__}, not an object")
    for key in INT_STATS:
        value = stats.get(key)
        if not isinstance(value, Integral) or isinstance(value, bool) or value < 0:  # numpy ints too
            raise BadItem(f"stats.{key} is {value!r}, not an int >= 0")
    for key in FLOAT_STATS:
        value = stats.get(key)
        if not isinstance(value, Real) or isinstance(value, bool) or not 0.0 <= value <= 1.0:
            raise BadItem(f"stats.{key} is {value!r}, not a number in [0, 1]")
    predicted = stats.get(PREDICTED)
    if not isinstance(predicted, list) or not all(isinstance(p, str) for p in predicted):
        raise BadItem(f"stats.predicted is {predicted!r}, not a list of strings")
    return stats


@dataclass
class Profile:
    """Bucket counts per measure over a number of items; the reference and the window alike."""

    items: int = 0
    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    sums: dict[str, float] = field(default_factory=dict)  # numeric measures: for their means

    def add(self, stats: Mapping) -> None:
        """Count one item (its stats checked first: a bad item changes nothing and raises BadItem)."""
        check_stats(stats)
        buckets = [(m.name, m.bucket(stats)) for m in (*NUMERIC, *FLAGS)]
        buckets += [(PREDICTED, p) for p in stats[PREDICTED] or [NONE]]
        grid = min(int(stats["min_confidence"] * MIN_CONFIDENCE_STEP), MIN_CONFIDENCE_STEP - 1)
        buckets.append((MIN_CONFIDENCE, str(grid)))
        for name, bucket in buckets:
            counter = self.counts.setdefault(name, {})
            counter[bucket] = counter.get(bucket, 0) + 1
        for m in NUMERIC:
            self.sums[m.name] = self.sums.get(m.name, 0.0) + float(m.value(stats))
        self.items += 1

    def merge(self, other: Profile) -> None:
        self.items += other.items
        for name, counter in other.counts.items():
            mine = self.counts.setdefault(name, {})
            for bucket, count in counter.items():
                mine[bucket] = mine.get(bucket, 0) + count
        for name, total in other.sums.items():
            self.sums[name] = self.sums.get(name, 0.0) + total

    def to_json(self) -> dict:
        """reference.json's content: the counts, and the bins they were made with (checked on reading)."""
        return {"format": FORMAT, "items": self.items, "counts": self.counts, "sums": self.sums,
                "bins": {m.name: list(m.edges) for m in NUMERIC}}

    @classmethod
    def from_json(cls, data: Mapping, where: str) -> Profile:
        """A stored profile; ValueError naming `where` if its format or bins are not this code's."""
        if data.get("format") != FORMAT:
            raise ValueError(f"{where}: reference format {data.get('format')!r}, this flowtune reads {FORMAT}")
        bins = {m.name: list(m.edges) for m in NUMERIC}
        if data.get("bins") != bins:
            raise ValueError(f"{where}: the reference was binned with other edges than this flowtune's")
        return cls(int(data["items"]), {k: dict(v) for k, v in data["counts"].items()}, dict(data["sums"]))

    def low_confidence(self, threshold: float) -> dict[str, int]:
        """yes/no counts of items whose min confidence is below `threshold` (a multiple of 0.01)."""
        cut = round(threshold * MIN_CONFIDENCE_STEP)
        below = sum(c for b, c in self.counts.get(MIN_CONFIDENCE, {}).items() if int(b) < cut)
        return {"yes": below, "no": self.items - below}

    def distribution(self, measure: str, low_confidence: float) -> dict[str, int]:
        if measure == LOW_CONFIDENCE:
            return self.low_confidence(low_confidence)
        return dict(self.counts.get(measure, {}))


def profile_of(stats: Iterable[Mapping]) -> Profile:
    profile = Profile()
    for item in stats:
        profile.add(item)
    return profile


def psi(reference: Mapping[str, int], window: Mapping[str, int]) -> float:
    """Population stability index sum((w - r) * ln(w / r)) over the union of buckets.

    Invariant: 0 for identical distributions, symmetric, never infinite: each bucket's count gets 0.5
    before the shares are taken (so a bucket empty on one side weighs by how much the other side has).
    """
    buckets = sorted(set(reference) | set(window))
    if not buckets:
        return 0.0
    r_total = sum(reference.values()) + 0.5 * len(buckets)
    w_total = sum(window.values()) + 0.5 * len(buckets)
    value = 0.0
    for b in buckets:
        r = (reference.get(b, 0) + 0.5) / r_total
        w = (window.get(b, 0) + 0.5) / w_total
        value += (w - r) * math.log(w / r)
    return value


@dataclass(frozen=True)
class Row:
    """One measure of one model version: both sides summarised, the statistic and the verdict."""

    measure: str
    reference: str
    window: str
    statistic: float | None
    threshold: float
    verdict: str  # "drift" | "ok" | "too few items"

    @property
    def drifted(self) -> bool:
        return self.verdict == "drift"


def summary(profile: Profile, measure: str, low_confidence: float) -> str:
    """A short human reading of one side: a mean, a share, or the commonest predictions."""
    if not profile.items:
        return "no items"
    if measure in profile.sums:
        return f"mean {profile.sums[measure] / profile.items:.3g}"
    counts = profile.distribution(measure, low_confidence)
    if measure == PREDICTED:
        total = sum(counts.values()) or 1
        top = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:3]
        return ", ".join(f"{name} {count / total:.0%}" for name, count in top)
    return f"{counts.get('yes', 0) / profile.items:.1%}"


def compare(reference: Profile, window: Profile, thresholds: Mapping[str, float], min_items: int,
            low_confidence: float) -> list[Row]:
    """Every measure's row: PSI against its threshold, or no verdict while either side has < min_items."""
    rows = []
    enough = min(reference.items, window.items) >= min_items
    for measure in MEASURES:
        threshold = thresholds[measure]
        ref_side, win_side = summary(reference, measure, low_confidence), summary(window, measure, low_confidence)
        if not enough:
            rows.append(Row(measure, ref_side, win_side, None, threshold, "too few items"))
            continue
        value = psi(reference.distribution(measure, low_confidence), window.distribution(measure, low_confidence))
        rows.append(Row(measure, ref_side, win_side, round(value, 4), threshold,
                        "drift" if value > threshold else "ok"))
    return rows


# ---------------------------------------------------------------- one captured batch, streamed


Key = tuple[str, int | None]  # (model, version) that answered; version None: served from a folder


@dataclass
class Batch:
    """What one captured object held: profiles by answering version, and what was wrong with it."""

    where: str
    profiles: dict[Key, Profile] = field(default_factory=dict)
    items: int = 0
    outside: int = 0  # well-formed lines whose ts is outside the window
    bad_lines: int = 0
    problems: list[str] = field(default_factory=list)  # the first few bad lines, "line N: why"
    error: str | None = None  # the whole file was skipped (not gzip, truncated ...)

    def bad(self, line: int, why: str) -> None:
        self.bad_lines += 1
        if len(self.problems) < MAX_PROBLEMS:
            self.problems.append(f"line {line}: {why}")


MAX_PROBLEMS = 5


def parse_time(value: object) -> datetime:
    """An ISO 8601 timestamp as an aware UTC datetime (a naive one is taken as UTC)."""
    if not isinstance(value, str):
        raise BadItem(f"ts is {value!r}, not an ISO timestamp")
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise BadItem(f"ts {value!r} is not an ISO timestamp") from None
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)


def item_key(record: object) -> tuple[Key, datetime, Mapping]:
    """(model, version), time and stats of one captured line; BadItem naming what is wrong."""
    if not isinstance(record, dict):
        raise BadItem(f"a JSON {type(record).__name__}, not an object")
    model, version = record.get("model"), record.get("version")
    if not isinstance(model, str) or not model:
        raise BadItem(f"model is {model!r}, not a name")
    if version is not None and (not isinstance(version, int) or isinstance(version, bool)):
        raise BadItem(f"version is {version!r}, not an int or null")
    return (model, version), parse_time(record.get("ts")), check_stats(record.get("stats"))


def read_batch(stream: BinaryIO, where: str, since: datetime, until: datetime) -> Batch:
    """Stream one gzip JSONL object line by line into per-version profiles (memory: one line at a time).

    A malformed line is skipped and counted; an object that is not gzip, or is truncated or corrupt, is
    skipped whole (its `error`): its lines are not counted, so a half-read file never skews a window.
    """
    batch = Batch(where)
    profiles: dict[Key, Profile] = {}
    number = 0
    try:
        with gzip.GzipFile(fileobj=stream, mode="rb") as lines:
            for number, raw in enumerate(lines, start=1):
                try:
                    key, when, stats = item_key(json.loads(raw))
                except (BadItem, ValueError) as exc:  # ValueError: not JSON, not UTF-8
                    batch.bad(number, str(exc)[:200])
                    continue
                if not since <= when < until:
                    batch.outside += 1
                    continue
                profiles.setdefault(key, Profile()).add(stats)
                batch.items += 1
    except (OSError, EOFError, zlib.error) as exc:  # BadGzipFile is an OSError; EOFError: truncated
        batch.error = f"skipped after line {number}: {type(exc).__name__}: {exc}"
        batch.items = 0
        return batch
    batch.profiles = profiles
    return batch
