"""The drift measures (tasks/drift.py): buckets, PSI, verdicts, and the streaming reader of captured batches."""

from __future__ import annotations

import gzip
import io
import json
import random
from datetime import UTC, datetime, timedelta

import pytest

from tasks import drift
from tasks.drift import BadItem, Profile, check_stats, compare, profile_of, psi, read_batch
from tasks.params import DRIFT_MEASURES, MonitorParams, load_params, parse_duration
from tests.drift_traffic import SHIFTS, batch_bytes, line, stats
from tests.helpers import ROOT

MONITOR = load_params(ROOT / "params.yaml").monitor
NOW = datetime(2026, 12, 7, 12, tzinfo=UTC)
SINCE, UNTIL = NOW - timedelta(hours=24), NOW + timedelta(minutes=1)


def item(**changes) -> dict:
    base = {"words": 10, "chars": 50, "pieces": 14, "unknown_pieces": 0, "fragmented_words": 2, "urls": 0,
            "emoji": 0, "non_latin": 0, "upper_words": 0, "confidence": 0.9, "min_confidence": 0.7,
            "predicted": ["person"]}
    return {**base, **changes}


def test_each_numeric_value_lands_in_its_fixed_bin():
    words = next(m for m in drift.NUMERIC if m.name == "words")
    assert [words.bucket(item(words=w)) for w in (0, 4, 5, 149, 150, 10_000)] == ["0", "0", "1", "10", "11", "11"]
    share = next(m for m in drift.NUMERIC if m.name == "unknown_share")
    assert share.bucket(item(pieces=0, unknown_pieces=0)) == "0"  # an empty input is not a division by zero
    assert share.bucket(item(pieces=10, unknown_pieces=10)) == str(len(share.edges) - 1)


def test_a_profile_counts_flags_predictions_and_min_confidence():
    profile = profile_of([item(urls=2, predicted=[]), item(upper_words=1, predicted=["person", "location"]),
                          item(min_confidence=0.49)])
    assert profile.items == 3
    assert profile.counts["url"] == {"yes": 1, "no": 2}
    assert profile.counts["all_caps"] == {"yes": 1, "no": 2}
    assert profile.counts["predicted"] == {drift.NONE: 1, "person": 2, "location": 1}
    assert profile.low_confidence(0.5) == {"yes": 1, "no": 2}
    assert profile.low_confidence(0.49) == {"yes": 0, "no": 3}  # below, not at, the threshold
    assert profile.sums["words"] == 30


def test_profiles_merge_and_survive_json_exactly():
    rng = random.Random(3)
    a, b = profile_of(stats(rng) for _ in range(50)), profile_of(stats(rng) for _ in range(70))
    whole = Profile()
    whole.merge(a)
    whole.merge(b)
    assert whole.items == 120
    again = Profile.from_json(json.loads(json.dumps(whole.to_json())), "ref")
    assert again == whole


def test_a_reference_of_other_bins_or_format_is_refused_with_its_name():
    data = profile_of([item()]).to_json()
    with pytest.raises(ValueError, match="s3://r/m/1/reference.json: the reference was binned with other edges"):
        Profile.from_json({**data, "bins": {**data["bins"], "words": [0, 1]}}, "s3://r/m/1/reference.json")
    with pytest.raises(ValueError, match="format 99"):
        Profile.from_json({**data, "format": 99}, "x")


@pytest.mark.parametrize(("change", "message"), [
    ({"words": -1}, "stats.words is -1"), ({"pieces": 1.5}, "stats.pieces is 1.5"),
    ({"confidence": 1.2}, r"stats.confidence is 1.2, not a number in \[0, 1\]"), ({"urls": True}, "stats.urls"),
    ({"predicted": "person"}, "stats.predicted is 'person'"), ({"predicted": [1]}, "stats.predicted"),
])
def test_bad_stats_name_the_key(change, message):
    with pytest.raises(BadItem, match=message):
        check_stats(item(**change))
    profile = Profile()
    with pytest.raises(BadItem):
        profile.add(item(**change))
    assert profile.items == 0 and profile.counts == {}  # a bad item changes nothing


def test_numpy_numbers_from_a_predictor_count_like_python_ones():
    import numpy as np

    profile = profile_of([item(words=np.int64(12), confidence=np.float32(0.75), min_confidence=np.float64(0.4))])
    assert profile.sums["words"] == 12 and profile.low_confidence(0.5) == {"yes": 1, "no": 0}
    assert json.loads(json.dumps(profile.to_json()))["items"] == 1  # sums are plain floats


def test_missing_stats_are_named():
    broken = item()
    del broken["emoji"]
    with pytest.raises(BadItem, match="stats.emoji is None"):
        check_stats(broken)
    with pytest.raises(BadItem, match="not an object"):
        check_stats([1, 2])


def test_psi_is_zero_for_equal_shares_symmetric_finite_and_grows_with_the_shift():
    assert psi({"a": 10, "b": 30}, {"a": 100, "b": 300}) == pytest.approx(0, abs=2e-3)
    assert psi({"a": 10, "b": 30}, {"b": 5}) == pytest.approx(psi({"b": 5}, {"a": 10, "b": 30}))
    assert psi({"a": 1000}, {"b": 1000}) < float("inf")
    small = psi({"yes": 50, "no": 950}, {"yes": 80, "no": 920})
    large = psi({"yes": 50, "no": 950}, {"yes": 400, "no": 600})
    assert 0 < small < 0.1 < 0.25 < large
    assert psi({}, {}) == 0.0


def test_unshifted_windows_raise_no_alarm_and_each_shift_flags_exactly_its_measures():
    rng = random.Random(7)
    reference = profile_of(stats(rng) for _ in range(2000))
    for _ in range(5):
        rows = compare(reference, profile_of(stats(rng) for _ in range(1000)), MONITOR.thresholds, MONITOR.min_items,
                       MONITOR.low_confidence)
        assert [r.measure for r in rows] == list(DRIFT_MEASURES)
        assert not [r for r in rows if r.drifted], rows
    for shift, measures in SHIFTS.items():
        window = profile_of(stats(rng, frozenset({shift})) for _ in range(1000))
        rows = compare(reference, window, MONITOR.thresholds, MONITOR.min_items, MONITOR.low_confidence)
        assert sorted(r.measure for r in rows if r.drifted) == sorted(measures), shift


def test_too_few_items_give_no_verdict_but_both_sides_are_shown():
    rng = random.Random(1)
    reference = profile_of(stats(rng) for _ in range(500))
    window = profile_of(stats(rng, frozenset({"urls"})) for _ in range(MONITOR.min_items - 1))
    rows = compare(reference, window, MONITOR.thresholds, MONITOR.min_items, MONITOR.low_confidence)
    assert {r.verdict for r in rows} == {"too few items"} and all(r.statistic is None for r in rows)
    url = next(r for r in rows if r.measure == "url")
    assert url.reference.endswith("%") and url.window.endswith("%")


def test_monitor_params_refuse_typos_and_bad_values():
    good = MONITOR.model_dump()
    with pytest.raises(ValueError, match=r"unknown measures \['wrods'\], missing \['words'\]"):
        MonitorParams(**{**good, "thresholds": {**{k: v for k, v in good["thresholds"].items() if k != "words"},
                                                "wrods": 0.2}})
    with pytest.raises(ValueError, match="not a duration"):
        MonitorParams(**{**good, "window": "yesterday"})
    with pytest.raises(ValueError, match="multiple of 0.01"):
        MonitorParams(**{**good, "low_confidence": 0.555})
    assert parse_duration("36h") == timedelta(hours=36) and parse_duration("7d") == timedelta(days=7)


# ---------------------------------------------------------------- the streaming reader


def lines(count: int, version: int | None = 3, when: datetime = NOW) -> list[dict]:
    rng = random.Random(count)
    return [line(rng, when, "m", version) for _ in range(count)]


def test_a_batch_is_grouped_by_the_version_that_answered():
    data = batch_bytes(lines(3, version=3) + lines(2, version=4) + lines(1, version=None))
    batch = read_batch(io.BytesIO(data), "s3://c/m/x.jsonl.gz", SINCE, UNTIL)
    assert batch.error is None and batch.items == 6
    assert {key: p.items for key, p in batch.profiles.items()} == {("m", 3): 3, ("m", 4): 2, ("m", None): 1}


def test_malformed_lines_are_skipped_and_counted_with_their_line_numbers():
    good = [json.dumps(x) for x in lines(3)]
    broken_stats = {**lines(1)[0], "stats": {**lines(1)[0]["stats"], "confidence": "high"}}
    text = "\n".join([good[0], "{not json", good[1], json.dumps(broken_stats), "[1, 2]",
                      json.dumps({**lines(1)[0], "version": "3"}), good[2]]) + "\n"
    batch = read_batch(io.BytesIO(gzip.compress(text.encode())), "f", SINCE, UNTIL)
    assert batch.items == 3 and batch.bad_lines == 4 and batch.error is None
    assert batch.problems[0].startswith("line 2: ")
    assert batch.problems[1] == "line 4: stats.confidence is 'high', not a number in [0, 1]"
    assert batch.problems[2] == "line 5: a JSON list, not an object"
    assert batch.problems[3] == "line 6: version is '3', not an int or null"


def test_items_outside_the_window_are_left_out_and_counted():
    data = batch_bytes(lines(2, when=NOW) + lines(3, when=SINCE - timedelta(minutes=1)))
    batch = read_batch(io.BytesIO(data), "f", SINCE, UNTIL)
    assert (batch.items, batch.outside) == (2, 3)


@pytest.mark.parametrize(("data", "error"), [
    (batch_bytes(lines(400))[:-300], "EOFError"),  # truncated
    (b"{\"ts\": \"not gzip at all\"}\n", "BadGzipFile"),
    (b"", None),  # an empty object is an empty batch
])
def test_a_truncated_or_non_gzip_file_is_skipped_whole(data, error):
    batch = read_batch(io.BytesIO(data), "f", SINCE, UNTIL)
    if error is None:
        assert batch.error is None and batch.items == 0
        return
    assert error in batch.error and batch.error.startswith("skipped after line ")
    assert batch.items == 0 and batch.profiles == {}
