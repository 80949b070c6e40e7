"""Augment step: label-preserving augmentation of the train split (synonym swap, name swap, back-translation).

Each augmenter in `augment.methods` makes new sentences from the cleaned train sentences; the new
sentences are checked (same length, valid IOB2), and dropped when they repeat a train sentence, an
earlier new one, or any dev/test sentence (no leakage through augmentation). Train is written as the
original sentences followed by the accepted new ones, each carrying its origin in `meta`
(`augmenter`, `source_id`). Dev and test are copied byte for byte: augmentation never touches
evaluation data. Texts of a classification task go through the same augmenters as all-O sentences
that carry their label (tasks/kinds/textclass/records.py).

With `FLOWTUNE_AUGMENT_SHARDS` > 1 the train split is cut into shards augmented in parallel on a
Dask cluster (a local one, or `FLOWTUNE_DASK_ADDRESS`). Every augmenter's output for a sentence
depends only on that sentence and the seed, so the result is identical to the single-process run.
"""

from __future__ import annotations

import functools
import json
import shutil
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from tasks.io import iter_splits, write_json, write_jsonl
from tasks.iob import iob2_errors
from tasks.kinds import data_kind_for
from tasks.params import AugmentParams, Params
from tasks.sentence import Sentence
from tasks.stage import run_stage

if TYPE_CHECKING:
    from tasks.kinds.data import DataKind

DROP_DUPLICATE = "dropped_duplicate"  # repeats a train sentence or an earlier new one
DROP_EVALUATION = "dropped_equals_dev_or_test"  # would leak an evaluation sentence into train


class Augmenter(Protocol):
    name: str

    def augment(self, records: Sequence[Sentence]) -> tuple[list[Sentence], Counter]: ...


class AugmentError(RuntimeError):
    """An augmenter broke the label invariants (a bug, reported with the record, never written)."""


def build_augmenter(method: str, params: AugmentParams, shared: str = "") -> Augmenter:
    """The augmenter for one entry of `augment.methods`; loads its resources (WordNet, engines).

    `shared` is what `shared_input` made of the whole train split for this method (the same for every shard).
    """
    if method == "synonym":
        from tasks.augmenters.synonyms import SynonymSwap

        p = params.synonym
        return SynonymSwap(p.swap_prob, p.copies, params.seed, max_attempts=p.max_attempts)
    if method == "name_swap":
        from tasks.augmenters.name_swap import NameSwap

        p = params.name_swap
        pool = {entity: [tuple(m) for m in mentions] for entity, mentions in json.loads(shared).items()}
        return NameSwap(pool, p.types, p.swap_prob, p.copies, params.seed, max_attempts=p.max_attempts)
    from tasks.augmenters.backtranslation import BackTranslation

    p = params.backtranslation
    return BackTranslation(build_translator(params), batch_size=p.batch_size, min_ratio=p.min_length_ratio,
                           max_ratio=p.max_length_ratio, workers=p.threads)


def shared_input(method: str, params: AugmentParams, train: Sequence[Sentence]) -> str:
    """What an augmenter needs from the whole train split, as JSON: name swap's pool of train mentions.

    Built once before sharding, so every shard draws from the same pool and the output does not depend
    on how the split was cut."""
    if method != "name_swap":
        return ""
    from tasks.augmenters.name_swap import mention_pool

    return json.dumps(mention_pool(train, params.name_swap.types))


def build_translator(params: AugmentParams):
    from tasks.augmenters import translators

    p = params.backtranslation
    if p.engine == "marian":
        return translators.MarianBackend(p.marian_forward, p.marian_backward, batch_size=p.batch_size)
    return translators.FastTranslateBackend()


@functools.lru_cache(maxsize=4)
def _cached_augmenter(method: str, schema: type[AugmentParams], params_json: str, shared: str) -> Augmenter:
    # One WordNet table / translation engine per process, however many shards it runs.
    return build_augmenter(method, schema.model_validate_json(params_json), shared)


def augment_shard(method: str, schema: type[AugmentParams], params_json: str, shared: str,
                  records: list[Sentence]) -> tuple[list[Sentence], Counter]:
    """Run one augmenter over one shard (in this process or on a Dask worker); `schema` is the kind's
    section class (NER's has name swap's keys)."""
    return _cached_augmenter(method, schema, params_json, shared).augment(records)


def generate(method: str, params: AugmentParams, train: list[Sentence], shards: int = 1,
             dask_address: str | None = None) -> tuple[list[Sentence], Counter]:
    """New records and outcome counts of one augmenter over the whole train split."""
    shared = shared_input(method, params, train)
    if shards <= 1 or len(train) < 2:
        return augment_shard(method, type(params), params.model_dump_json(), shared, train)
    from tasks.sharding import map_shards

    results = map_shards(augment_shard, method, type(params), params.model_dump_json(), shared, items=train,
                         shards=shards, address=dask_address)
    records = [r for shard_records, _ in results for r in shard_records]
    counts: Counter = Counter()
    for _, shard_counts in results:
        counts.update(shard_counts)  # update, not +: keeps the zero counts an augmenter reports
    return records, counts


def check_labels(record: Sentence, method: str) -> None:
    """Invariant of every augmenter: one tag per token and a valid IOB2 sequence."""
    if len(record.tokens) != len(record.tags) or iob2_errors(record.tags):
        raise AugmentError(f"augmenter {method!r} produced an invalid record {record.id!r} "
                           f"({len(record.tokens)} tokens, {len(record.tags)} tags, {iob2_errors(record.tags)[:1]}); "
                           "this is a bug: please report it with the source record")


def merge(train: list[Sentence], generated: dict[str, list[Sentence]], evaluation: set[tuple[str, ...]],
          counts: dict[str, Counter]) -> list[Sentence]:
    """Train followed by the new records that repeat no train, new, dev or test sentence.

    Drops are added to `counts[method]` by reason. Invariant: no sentence of the output appears in
    `evaluation`, unless it was already in train (that leak is the contract's to report, not ours to hide).
    """
    seen = {r.tokens for r in train}
    merged = list(train)
    for method, records in generated.items():
        for record in records:
            check_labels(record, method)
            if record.tokens in evaluation:
                counts[method][DROP_EVALUATION] += 1
            elif record.tokens in seen:
                counts[method][DROP_DUPLICATE] += 1
            else:
                seen.add(record.tokens)
                merged.append(record)
    return merged


def copy_exact(source: Path, target: Path) -> None:
    """Byte-for-byte copy, published by rename (readers never see a partial file)."""
    tmp = target.with_name(f".{target.name}.tmp")
    shutil.copyfile(source, tmp)
    tmp.replace(target)


def load_split(path: Path, kind: DataKind) -> list[Sentence]:
    """A split as the kind's sentences (texts become all-O sentences, tasks/kinds/textclass/records.py), so every
    augmenter and the dev/test protection below serve every kind."""
    return [kind.as_sentence(row) for row in kind.read(path)]


def run(params: AugmentParams, src: Path, dst: Path, report_path: Path, shards: int = 1,
        dask_address: str | None = None, *, kind: DataKind) -> dict:
    """Write `<dst>/<split>.jsonl`: augmented train, exact copies of dev and test; return the report."""
    splits = {split: load_split(path, kind) for split, path in iter_splits(src)}
    train = splits["train"]
    evaluation = {r.tokens for split in ("dev", "test") for r in splits[split]}
    generated, counts = {}, {}
    for method in params.methods:
        generated[method], counts[method] = generate(method, params, train, shards, dask_address)
    merged = merge(train, generated, evaluation, counts)
    Path(dst).mkdir(parents=True, exist_ok=True)
    write_jsonl(Path(dst) / "train.jsonl", [kind.from_sentence(r) for r in merged])
    for split in ("dev", "test"):
        copy_exact(Path(src) / f"{split}.jsonl", Path(dst) / f"{split}.jsonl")
    added = Counter(r.meta.get("augmenter") for r in merged[len(train):])
    report = {
        "methods": list(params.methods),
        "added": len(merged) - len(train),
        "sentences": {"train": len(merged), "dev": len(splits["dev"]), "test": len(splits["test"])},
        "by_method": {m: {"added": added[m], "sources": len(train), DROP_DUPLICATE: 0, DROP_EVALUATION: 0,
                          **dict(sorted(counts[m].items()))} for m in params.methods},
    }
    write_json(report_path, report)
    return report


def step(params: Params, _args) -> str:
    from tasks.settings import Settings

    settings = Settings()
    paths = params.paths
    report = run(params.augment, Path(paths.clean), Path(paths.augmented), Path(paths.augment_report),
                 settings.augment_shards, settings.dask_address, kind=data_kind_for(params))
    return json.dumps({k: report[k] for k in ("added", "sentences", "by_method")})


def main(argv: list[str] | None = None) -> None:
    from tasks.augmenters.translators import TranslatorUnavailable

    run_stage("augment", step, argv, user_errors=(AugmentError, TranslatorUnavailable))


if __name__ == "__main__":
    main()
