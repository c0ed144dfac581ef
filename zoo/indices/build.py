"""`build_index`: an embedding store -> a FAISS index folder tuned to a recall target (embeddings -> **indices**).

Steps (seconds of each go into `index.json`):
1. sample: one pass over the store checks every vector (a zero vector is an error), reads every processid, a
   seeded random training sample (never the first rows: the store is ordered by split) and the held-out
   queries: a seeded sample of the store's rows, kept out of the index until recall is measured, or a query
   store's rows. Database vectors are never their own queries.
2. ground_truth: exact top-k of the queries over the indexed rows (streamed, one store file at a time).
3. train once; add: shards of contiguous rows, built here or as parallel Ray tasks, written atomically under
   `OUT/_partial/` (a rerun skips finished ones); merge (`merge_from`, or `IndexShards` for HNSW).
4. tune: the smallest `nprobe` / `efSearch` reaching the recall target; `auto` measures its candidates in
   order of preference and keeps the first that reaches the target cheaply, else falls back to IVF-PQ with
   an exact re-rank (with a warning). Then the held-out rows are added, so the index covers every row.
5. write: `index.faiss` (or one file per HNSW shard), `ids.parquet` (index id -> processid, store file, row)
   and `index.json` last (a folder with `index.json` is complete); partial files are removed.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import time
import warnings
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import faiss
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from bioscan_stream.ray_runtime import ray_runtime
from bioscan_stream.storage import is_s3, join_url, list_urls, open_url, read_bytes, remove_url, url_exists
from zoo.indices.data import RowPlan, StoreFiles, StoreVectors, exact_topk, sample_rows
from zoo.indices.shards import (
    ShardJob,
    build_shards,
    merge_shards,
    shard_ranges,
    sub_indices,
    train_index,
    write_index,
)
from zoo.indices.spec import IndexSpec, auto_candidates, parse_factory
from zoo.indices.tune import Tuning, tune

__all__ = ["IndexConfig", "IndexMismatchError", "build_index", "run_build"]

INDEX_FORMAT = "bioscan-faiss-index"
INDEX_VERSION = 1
PARTIAL_DIR = "_partial"


class IndexMismatchError(ValueError):
    """Queries (or a query store) that do not fit the index: another encoder or another dimension."""


@dataclass(frozen=True)
class IndexConfig:
    """Everything one index build needs (`build_index(store, out, **options)` fills it in).

    Attributes:
        store: embedding store folder or `s3://` prefix. out: the index folder.
        factory: `auto` or a factory string (see `zoo.indices.spec`).
        splits: store splits to index (default: all). query_store: held-out queries from another store.
        recall_target / k: the recall@k the search parameters are tuned to (against exact search).
        memory_budget: bytes the index may take (default: half the machine's memory; `auto` only).
        num_queries: held-out queries; seed: sampling, k-means and the held-out choice.
        train_size: cap of the training sample. num_shards / threads: shards and faiss threads per shard
        (several shards run as Ray tasks on `ray_address`, or an embedded runtime of `num_cpus`).
        rerank: PQ types re-score the top k*rerank candidates exactly. flat_max_rows: `auto` uses `Flat` up to
        this size. max_probe_fraction / max_ef_search: a target reached only beyond these does not count.
        ef_construction: HNSW build beam (faiss's default 40 leaves a graph that needs a wide search beam for
        high recall; 200 costs ~3x the add time and buys a smaller tuned `efSearch`).
    """

    store: str
    out: str
    factory: str = "auto"
    splits: tuple[str, ...] | None = None
    query_store: str | None = None
    recall_target: float = 0.95
    k: int = 10
    memory_budget: int | None = None
    num_queries: int = 1000
    seed: int = 0
    train_size: int | None = None
    num_shards: int = 1
    threads: int = 0
    batch_rows: int = 65_536
    ray_address: str | None = None
    num_cpus: int | None = None
    rerank: int = 10
    flat_max_rows: int = 20_000
    max_probe_fraction: float = 0.125
    max_ef_search: int = 512
    ef_construction: int = 200


@dataclass
class _Run:
    """One build's plan key, seconds per phase and shard reports (written into index.json)."""

    key: str
    phases: dict[str, float] = field(default_factory=dict)
    shards: list[dict[str, Any]] = field(default_factory=list)

    def add(self, phase: str, since: float) -> float:
        """Add the seconds since `since` to `phase`; returns now."""
        now = time.perf_counter()
        self.phases[phase] = self.phases.get(phase, 0.0) + now - since
        return now


@dataclass
class _Sample:
    """What the sampling pass read: the row plan, every processid, the training sample and the queries."""

    plan: RowPlan
    processids: np.ndarray
    train: np.ndarray
    queries: np.ndarray
    held: np.ndarray


def build_index(store: str, out: str, *, factory: str = "auto", **options: Any) -> dict[str, Any]:
    """Build the index of `store` into the folder `out`; returns its `index.json` (see the module docstring).

    Args:
        store: embedding store folder or `s3://` prefix.
        out: index folder (local or `s3://`).
        factory: `auto` or `Flat`, `IVF{K},Flat`, `IVF{K},SQ8`, `IVF{K},PQ{m}`, `HNSW{M}[,SQfp16|,SQ8]`.
        **options: the other `IndexConfig` fields (recall_target, num_shards, seed, ...).
    """
    if isinstance(options.get("splits"), list):
        options["splits"] = tuple(options["splits"])
    return run_build(IndexConfig(store=store, out=out, factory=factory, **options))


def _plan_key(config: IndexConfig, files: StoreFiles) -> str:
    fields = asdict(config)
    for name in ("out", "ray_address", "num_cpus", "threads", "batch_rows"):
        fields.pop(name)
    entries = [list(f) for f in zip(files.paths, files.rows, files.sha256, strict=False)]
    fields.update(encoder=files.encoder_sha256, files=entries)
    return hashlib.sha256(json.dumps(fields, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _finished(config: IndexConfig, key: str) -> dict[str, Any] | None:
    url = join_url(config.out, "index.json")
    if not url_exists(url):
        return None
    meta = json.loads(read_bytes(url))
    return dict(meta) if meta.get("build_key") == key else None


def run_build(config: IndexConfig) -> dict[str, Any]:
    """Build (or, when `OUT/index.json` is from the same plan, return) the index of `config`.

    `config.threads` > 0 caps faiss's OpenMP threads for the whole build (restored after): on a loaded machine
    spinning OpenMP barriers made PQ training 8x slower with 2 threads than with 1 (2 cores, load 6, 2026-12).
    """
    saved = faiss.omp_get_max_threads()
    if config.threads:
        faiss.omp_set_num_threads(config.threads)
    try:
        return _run_build(config)
    finally:
        faiss.omp_set_num_threads(saved)


def _run_build(config: IndexConfig) -> dict[str, Any]:
    files = StoreFiles.open(config.store, config.splits)
    if files.num_rows == 0:
        raise ValueError(f"{config.store}: no rows to index in splits {list(files.splits)}")
    key = _plan_key(config, files)
    if (done := _finished(config, key)) is not None:
        return done
    run = _Run(key)
    specs = _candidates(config, files)
    clock = time.perf_counter()
    sample = _sample(config, files, specs)
    clock = run.add("sample", clock)
    truth = exact_topk(files, sample.plan, sample.queries, config.k, batch=config.batch_rows)
    run.add("ground_truth", clock)
    vectors = _store_vectors(files, sample.plan)
    spec, index, tuning, tried = _choose(config, specs, files, sample, (truth, vectors), run)
    _add_held(spec, index, files, sample)
    meta = _publish(config, spec, index, tuning, sample, files, run, tried)
    _remove_partials(config.out)
    return meta


def _candidates(config: IndexConfig, files: StoreFiles) -> list[IndexSpec]:
    if config.factory != "auto":
        specs = [parse_factory(config.factory, files.dim)]
    else:
        budget = config.memory_budget or os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2
        specs = auto_candidates(files.num_rows, files.dim, budget, flat_max_rows=config.flat_max_rows)
    if config.ef_construction < 1:
        raise ValueError(f"ef_construction must be positive, got {config.ef_construction}")
    return [replace(s, ef_construction=config.ef_construction) if s.family == "hnsw" else s for s in specs]


def _query_store(config: IndexConfig, files: StoreFiles, rng: np.random.Generator) -> np.ndarray:
    assert config.query_store is not None
    qfiles = StoreFiles.open(config.query_store)
    check_compatible(qfiles.encoder_sha256, qfiles.dim, files.encoder_sha256, files.dim, config.query_store)
    positions = np.sort(rng.choice(qfiles.num_rows, min(config.num_queries, qfiles.num_rows), replace=False))
    return sample_rows(qfiles, positions)[1]


def check_compatible(encoder: str, dim: int, expected_encoder: str, expected_dim: int, what: str) -> None:
    """IndexMismatchError unless `what` has the index's encoder (sha256 of its fingerprint) and dimension."""
    if encoder != expected_encoder:
        raise IndexMismatchError(
            f"{what} was embedded by encoder {encoder[:12]}, the index by {expected_encoder[:12]}: "
            "vectors of different encoders are not comparable"
        )
    if dim != expected_dim:
        raise IndexMismatchError(f"{what} has dimension {dim}, the index {expected_dim}")


def _sample(config: IndexConfig, files: StoreFiles, specs: list[IndexSpec]) -> _Sample:
    """Seeded held-out and training positions, then one pass over the store (see the module docstring)."""
    rng = np.random.default_rng(config.seed)
    n = files.num_rows
    held = np.zeros(0, np.int64)
    if config.query_store is None:
        held = np.sort(rng.choice(n, min(config.num_queries, n // 10), replace=False)).astype(np.int64)
    plan = RowPlan(n, held)
    pool = plan.positions()[: n - len(held)]
    n_train = max(spec.train_rows(len(pool), config.train_size) for spec in specs)
    train_pos = np.sort(rng.choice(pool, n_train, replace=False)) if n_train else np.zeros(0, np.int64)
    wanted = np.union1d(train_pos, held).astype(np.int64)
    processids, picked = sample_rows(files, wanted)
    train = picked[np.isin(wanted, train_pos)][rng.permutation(n_train)]  # any prefix is a random sample too
    queries = picked[np.isin(wanted, held)] if len(held) else _query_store(config, files, rng)
    return _Sample(plan, processids, train, queries, picked[np.isin(wanted, held)])


def _store_vectors(files: StoreFiles, plan: RowPlan) -> StoreVectors:
    positions = plan.positions()
    file_of = np.searchsorted(files.starts, positions, side="right") - 1
    return StoreVectors(files, file_of.astype(np.int32), positions - files.starts[file_of])


def _build(config: IndexConfig, spec: IndexSpec, files: StoreFiles, sample: _Sample, run: _Run) -> Any:
    """Train once (or reuse the partial's trained index), build the shards, merge."""
    partial = join_url(config.out, PARTIAL_DIR, f"{run.key}-{spec.factory.replace(',', '_')}")
    clock = time.perf_counter()
    trained_url = join_url(partial, "trained.faiss")
    if not url_exists(trained_url):
        write_index(train_index(spec, files.dim, sample.train[: spec.train_rows(len(sample.train))], config.seed),
                    trained_url)  # fmt: skip
    trained = np.frombuffer(read_bytes(trained_url), np.uint8)
    clock = run.add("train", clock)
    ranges = shard_ranges(files.num_rows, config.num_shards)
    jobs = [
        ShardJob(files, sample.plan, a, b, trained, join_url(partial, f"shard-{i:05d}-of-{len(ranges):05d}.faiss"),
                 explicit_ids=spec.family == "ivf", threads=config.threads, batch=config.batch_rows,
                 single_add=spec.family == "hnsw")
        for i, (a, b) in enumerate(ranges)
    ]  # fmt: skip
    if len(jobs) > 1:
        with ray_runtime(config.ray_address, num_cpus=config.num_cpus):
            reports = build_shards(jobs, parallel=True)
    else:
        reports = build_shards(jobs, parallel=False)
    run.shards.extend({"file": r["path"].rsplit("/", 1)[-1], **{k: r[k] for k in ("skipped", "seconds", "cpu_seconds")}}
                      for r in reports)  # fmt: skip
    clock = run.add("add", clock)
    index = merge_shards(spec, [job.path for job in jobs], files.dim)
    run.add("merge", clock)
    return index


def _choose(
    config: IndexConfig,
    specs: list[IndexSpec],
    files: StoreFiles,
    sample: _Sample,
    truth: tuple[tuple[np.ndarray, np.ndarray], StoreVectors],
    run: _Run,
) -> tuple[IndexSpec, Any, Tuning, list[dict[str, Any]]]:
    """Build and tune the candidates in order; the first that meets the target cheaply wins (else the last).

    `truth`: the exact (scores, ids) of the held-out queries and the store's vectors (for exact scores).
    """
    tried: list[dict[str, Any]] = []
    for spec in specs:
        index = _build(config, spec, files, sample, run)
        clock = time.perf_counter()
        tuning = _tune(config, spec, index, truth[0], sample, truth[1])
        run.add("tune", clock)
        tried.append({"factory": spec.factory, **asdict(tuning)})
        if tuning.meets_target:
            break
    if config.factory == "auto" and spec.rerank:
        warnings.warn(
            f"auto: no candidate reached recall@{config.k} >= {config.recall_target} within the memory budget "
            f"and search limits; fell back to {spec.factory} + exact re-rank (recall {tuning.recall:.3f})",
            RuntimeWarning,
            stacklevel=3,
        )
    return spec, index, tuning, tried


def _tune(
    config: IndexConfig,
    spec: IndexSpec,
    index: Any,
    truth: tuple[np.ndarray, np.ndarray],
    sample: _Sample,
    vectors: StoreVectors,
) -> Tuning:
    if len(sample.queries) == 0:
        return Tuning({}, float("nan"), float("nan"), True, ())
    limit = max(1, int(spec.nlist * config.max_probe_fraction)) if spec.family == "ivf" else config.max_ef_search
    search = {
        "queries": sample.queries,
        "k": config.k,
        "target": config.recall_target,
        "rerank": config.rerank if spec.rerank else 0,
        "vectors": vectors,
        "max_value": limit,
    }
    return tune(spec, index, truth, search)


def _add_held(spec: IndexSpec, index: Any, files: StoreFiles, sample: _Sample) -> None:
    """Add the held-out rows (ids after every other row) now that recall has been measured."""
    if len(sample.held) == 0:
        return
    first = sample.plan.num_rows - len(sample.plan.held)
    ids = np.arange(first, sample.plan.num_rows, dtype=np.int64)
    target = sub_indices(index)[-1]  # the last shard of an IndexShards: ids stay successive
    if spec.family == "ivf":
        target.add_with_ids(sample.held, ids)
    else:
        target.add(sample.held)
    if target is not index:
        index.syncWithSubIndexes()


def _ids_table(files: StoreFiles, sample: _Sample) -> bytes:
    vectors = _store_vectors(files, sample.plan)
    positions = sample.plan.positions()
    table = pa.table(
        {
            "processid": pa.array(sample.processids[positions].tolist(), pa.string()),
            "store_file": pa.array(vectors.file_of_id, pa.int32()),
            "store_row": pa.array(vectors.row_of_id, pa.int64()),
        }
    )
    sink = io.BytesIO()
    pq.write_table(table, sink, compression="zstd")
    return sink.getvalue()


def _write_files(config: IndexConfig, index: Any) -> tuple[list[str], int]:
    """index.faiss (one file per HNSW shard when sharded: `IndexShards` has no file format); names, bytes."""
    parts = sub_indices(index)
    if len(parts) > 1 or parts[0] is not index:
        names = [f"index-{i:05d}.faiss" for i in range(len(parts))]
        sizes = [write_index(part, join_url(config.out, name)) for part, name in zip(parts, names, strict=True)]
        return names, sum(sizes)
    return ["index.faiss"], write_index(index, join_url(config.out, "index.faiss"))


def _publish(
    config: IndexConfig,
    spec: IndexSpec,
    index: Any,
    tuning: Tuning,
    sample: _Sample,
    files: StoreFiles,
    run: _Run,
    tried: list[dict[str, Any]],
) -> dict[str, Any]:
    """Write the index file(s), ids.parquet, then index.json (the completion marker)."""
    clock = time.perf_counter()
    names, size = _write_files(config, index)
    with open_url(join_url(config.out, "ids.parquet"), "wb") as out:
        out.write(_ids_table(files, sample))
    run.add("write", clock)
    written = {"files": names, "params": tuning.params, "rerank": config.rerank if spec.rerank else 0,
               "n": int(index.ntotal), "dim": files.dim, "bytes": size,
               "bytes_per_vector": round(size / max(1, index.ntotal), 2)}  # fmt: skip
    meta = {**_describe(config, spec, files), **written, **_measured(config, tuning, sample, run, tried)}
    with open_url(join_url(config.out, "index.json"), "wb") as out:
        out.write(json.dumps(meta, indent=1).encode())
    return meta


def _describe(config: IndexConfig, spec: IndexSpec, files: StoreFiles) -> dict[str, Any]:
    """What the index is and what it was built from (the store and its encoder fingerprint)."""
    store_index = json.loads(read_bytes(join_url(config.store, "index.json")))
    return {
        "format": INDEX_FORMAT,
        "version": INDEX_VERSION,
        "factory": spec.factory,
        "requested_factory": config.factory,
        **({"ef_construction": spec.ef_construction} if spec.family == "hnsw" else {}),
        "metric": "inner_product",
        "normalized": True,
        "store": {"url": config.store, "splits": list(files.splits), "files": list(files.paths)},
        "encoder_sha256": files.encoder_sha256,
        "encoder": store_index.get("encoder"),
    }


def _measured(
    config: IndexConfig, tuning: Tuning, sample: _Sample, run: _Run, tried: list[dict[str, Any]]
) -> dict[str, Any]:
    """Recall against exact search, the tuning curve, the candidates and the seconds of each phase."""
    recall = {
        "k": config.k,
        "target": config.recall_target,
        "measured": None if np.isnan(tuning.recall) else tuning.recall,
        "lower_bound_95": None if np.isnan(tuning.recall_lower_bound) else round(tuning.recall_lower_bound, 5),
        "meets_target": tuning.meets_target,
        "queries": len(sample.queries),
        "queries_from": config.query_store or "held-out store rows",
    }
    return {
        "recall": recall,
        "tuning_curve": [list(point) for point in tuning.curve],
        "candidates": tried,
        "seconds": {name: round(value, 3) for name, value in run.phases.items()},
        "shards": run.shards,
        "seed": config.seed,
        "num_shards": config.num_shards,
        "faiss_version": faiss.__version__,
        "build_key": run.key,
    }


def _remove_partials(out: str) -> None:
    root = join_url(out, PARTIAL_DIR)
    if is_s3(root):
        for url in list_urls(root):
            remove_url(url)
    else:
        shutil.rmtree(root, ignore_errors=True)


def with_options(config: IndexConfig, **changes: Any) -> IndexConfig:
    """A copy of `config` with `changes` (for callers that sweep one option, e.g. the benchmark)."""
    return replace(config, **changes)
