"""Training once, building shards of an index (in process or as parallel Ray tasks), merging them, files I/O.

Part of the flow embeddings -> **indices**, the FAISS large-scale recipe: train one quantizer on a random
sample, add contiguous row ranges of the store to copies of it in parallel tasks (one faiss thread each by
default, so N tasks use N cores), then merge: `merge_from` for Flat and IVF (same trained quantizer: the merged
index is the monolithic one), `IndexShards` for HNSW (graphs do not merge). Each shard is written atomically
and named after its build plan, so a rerun after a failure skips the shards that are already written.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import faiss
import numpy as np

from bioscan_stream.storage import is_s3, open_url, read_bytes, url_exists
from zoo.indices.data import RowPlan, StoreFiles, normalize, read_rows
from zoo.indices.spec import _FAISS_GPU_AVAILABLE, IndexSpec

#: faiss's SWIG attributes the bundled stubs do not declare.
_faiss: Any = faiss

__all__ = [
    "ShardJob",
    "build_shard",
    "build_shards",
    "index_shards",
    "merge_shards",
    "read_index",
    "sub_indices",
    "train_index",
    "write_index",
]


def index_shards(dim: int, parts: list[Any]) -> Any:
    """`IndexShards` over `parts` in order (not threaded; successive ids: part i's rows follow part i-1's)."""
    shards: Any = faiss.IndexShards(dim, False, True)  # type: ignore[call-arg]
    for part in parts:
        shards.add_shard(part)
    return shards


def sub_indices(index: Any) -> list[Any]:
    """The parts of an `IndexShards` (each downcast), or `[index]`."""
    if not isinstance(index, faiss.IndexShards):
        return [index]
    shards: Any = index
    return [faiss.downcast_index(shards.at(i)) for i in range(shards.count())]


def write_index(index: Any, url: str) -> int:
    """Write `index` atomically to a local path or s3:// URL (streamed, no in-memory copy); returns its bytes."""
    written = 0

    def sink(chunk: bytes) -> None:
        nonlocal written
        out.write(chunk)
        written += len(chunk)

    with open_url(url, "wb") as out:
        faiss.write_index(index, _faiss.PyCallbackIOWriter(sink))
    return written


def read_index(url: str) -> Any:
    """A faiss index from a local path (plain `faiss.read_index`) or an s3:// URL."""
    if is_s3(url):
        return faiss.deserialize_index(np.frombuffer(read_bytes(url), np.uint8))
    return faiss.read_index(url)


def train_index(spec: IndexSpec, dim: int, sample: np.ndarray, seed: int) -> Any:
    """An empty index of `spec`, trained on `sample` (normalised rows) when the type needs training.

    IVF k-means is seeded and runs on the GPU when faiss-gpu sees one (the trained index stays a CPU index).
    HNSW gets `spec.ef_construction` (the graph's build beam), stored in the index file the shards copy.
    """
    index = faiss.index_factory(dim, spec.factory, faiss.METRIC_INNER_PRODUCT)
    if spec.family == "hnsw" and spec.ef_construction:  # kept in the serialized copy each shard adds to
        _faiss.downcast_index(index).hnsw.efConstruction = spec.ef_construction
    if index.is_trained:
        return index
    if len(sample) == 0:
        raise ValueError(f"{spec.factory} needs training but the training sample is empty")
    if spec.family == "ivf":
        ivf = faiss.extract_index_ivf(index)
        ivf.cp.seed = seed
        if spec.rerank:  # the factory turns on polysemous training: minutes of annealing for a search we never use
            _faiss.downcast_index(ivf).do_polysemous_training = False
        if _FAISS_GPU_AVAILABLE:
            ivf.clustering_index = faiss.index_cpu_to_all_gpus(faiss.IndexFlatIP(dim))
    index.train(sample)
    return index


@dataclass(frozen=True)
class ShardJob:
    """One shard: store rows [start, stop) added to a copy of the trained index, written to `path`."""

    files: StoreFiles
    plan: RowPlan
    start: int
    stop: int
    trained: np.ndarray
    path: str
    explicit_ids: bool
    threads: int = 0
    batch: int = 65_536
    #: Add the shard's rows in one call (HNSW): faiss inserts a batch's nodes level by level, so four batches of
    #: 50k rows built a graph that needed efSearch 256 for the recall one 200k-row call reached at 64 (recall@10
    #: 0.918 vs 0.956 at efSearch 64, 200k x 768, efConstruction 40). Costs the shard's float32 rows in memory.
    single_add: bool = False


def build_shard(job: ShardJob) -> dict[str, Any]:
    """Build and write one shard (skipped when its file exists: files are written atomically)."""
    if url_exists(job.path):
        return {"path": job.path, "skipped": True, "seconds": 0.0, "cpu_seconds": 0.0}
    clock, cpu, saved = time.perf_counter(), time.process_time(), faiss.omp_get_max_threads()
    if job.threads:
        faiss.omp_set_num_threads(job.threads)
    try:
        index = faiss.deserialize_index(job.trained)
        kept = job.plan.num_rows - len(job.plan.held)
        pending: list[np.ndarray] = []
        for positions, raw in read_rows(job.files, job.start, job.stop, job.batch):
            ids = job.plan.ids(positions)
            keep = ids < kept
            if not keep.any():
                continue
            x = normalize(raw[keep], positions[keep])
            if job.single_add:
                pending.append(x)
            elif job.explicit_ids:
                index.add_with_ids(x, ids[keep])
            else:
                index.add(x)
        if pending:
            index.add(np.concatenate(pending) if len(pending) > 1 else pending[0])
            del pending
        write_index(index, job.path)
    finally:
        faiss.omp_set_num_threads(saved)
    seconds, cpu_seconds = round(time.perf_counter() - clock, 3), round(time.process_time() - cpu, 3)
    return {"path": job.path, "skipped": False, "seconds": seconds, "cpu_seconds": cpu_seconds}


def build_shards(jobs: list[ShardJob], *, parallel: bool) -> list[dict[str, Any]]:
    """Run the jobs: as Ray tasks (one CPU per faiss thread) when `parallel`, else one after another here."""
    if not parallel:
        return [build_shard(job) for job in jobs]
    import ray

    task: Any = ray.remote(build_shard)
    refs = [task.options(num_cpus=max(1, job.threads)).remote(job) for job in jobs]
    return list(ray.get(refs))


def merge_shards(spec: IndexSpec, paths: list[str], dim: int) -> Any:
    """One index from the shard files, in shard order: `merge_from` (Flat/IVF) or `IndexShards` (HNSW)."""
    if spec.merge_rule == "shards" and len(paths) > 1:
        return index_shards(dim, [read_index(path) for path in paths])
    merged = read_index(paths[0])
    for path in paths[1:]:
        merged.merge_from(read_index(path), 0)
    return merged


def shard_ranges(num_rows: int, num_shards: int) -> list[tuple[int, int]]:
    """`num_shards` contiguous store row ranges of near-equal size (empty ones dropped)."""
    bounds = np.linspace(0, num_rows, max(1, num_shards) + 1).astype(np.int64)
    return [(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:], strict=True) if b > a]
