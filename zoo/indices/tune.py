"""Search parameters, the exact re-rank, recall against exact search, and tuning `nprobe` / `efSearch` to a target.

Part of the flow embeddings -> **indices**. Recall is always measured with held-out queries (rows that are not
in the index while it is measured, or a separate query store): a database vector used as its own query finds
itself and inflates recall (autofaiss's tuning does that). Recall@k counts a returned row as correct when its
exact score reaches the exact k-th score, so ties between duplicate vectors are not counted as misses.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import faiss
import numpy as np

from zoo.indices.data import StoreVectors
from zoo.indices.shards import sub_indices
from zoo.indices.spec import IndexSpec

__all__ = ["Tuning", "ann_search", "recall_at_k", "set_params", "tune"]

#: Ties: a returned row within this of the exact k-th score counts as a hit (float32 rounding of unit vectors).
_TIE_EPS = 1e-5
#: z of a one-sided 95% confidence bound.
_Z95 = 1.645
_EF_SEARCH = (16, 32, 64, 128, 256, 512, 1024, 2048, 4096)


@dataclass(frozen=True)
class Tuning:
    """The parameter chosen for a recall target and what it measured per value tried (`curve`: value, recall,
    its 95% lower bound, queries/s)."""

    params: dict[str, int]
    recall: float
    recall_lower_bound: float
    meets_target: bool
    curve: tuple[tuple[int, float, float, float], ...]


def set_params(index: Any, params: dict[str, int]) -> None:
    """Apply `nprobe` / `efSearch` to an index (each shard of an `IndexShards`)."""
    for sub in sub_indices(index):
        if "nprobe" in params:
            faiss.extract_index_ivf(sub).nprobe = int(params["nprobe"])
        if "efSearch" in params:
            sub_hnsw: Any = faiss.downcast_index(sub)
            sub_hnsw.hnsw.efSearch = int(params["efSearch"])


def ann_search(
    index: Any, queries: np.ndarray, k: int, *, rerank: int = 0, vectors: StoreVectors | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(scores, ids) of the index; with `rerank` > 0 the top k*rerank candidates are re-scored exactly."""
    if rerank <= 0:
        scores, ids = index.search(queries, min(k, max(index.ntotal, 1)))
        return _pad(scores, ids, k)
    if vectors is None:
        raise ValueError("a re-ranked search needs the store's vectors")
    _, candidates = index.search(queries, min(k * rerank, max(index.ntotal, 1)))
    exact = vectors.scores(queries, candidates)
    order = np.argsort(-exact, axis=1, kind="stable")[:, :k]
    return _pad(np.take_along_axis(exact, order, 1), np.take_along_axis(candidates, order, 1), k)


def _pad(scores: np.ndarray, ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    if ids.shape[1] >= k:
        return scores[:, :k].astype(np.float32), ids[:, :k].astype(np.int64)
    extra = k - ids.shape[1]
    scores = np.pad(scores, ((0, 0), (0, extra)), constant_values=-np.inf)
    return scores.astype(np.float32), np.pad(ids, ((0, 0), (0, extra)), constant_values=-1).astype(np.int64)


def recall_at_k(ids: np.ndarray, exact_scores: np.ndarray, vectors: StoreVectors, queries: np.ndarray) -> np.ndarray:
    """Per query: the share of returned rows whose exact score reaches the exact k-th score (tie-aware)."""
    k = exact_scores.shape[1]
    true = vectors.scores(queries, ids[:, :k])
    return np.asarray((true >= exact_scores[:, -1:] - _TIE_EPS).mean(axis=1), dtype=np.float64)


def _lower_bound(per_query: np.ndarray) -> float:
    """One-sided 95% lower confidence bound of the mean recall over unseen queries (normal approximation)."""
    if len(per_query) < 2:
        return float(per_query.mean()) if len(per_query) else float("nan")
    return float(per_query.mean() - _Z95 * per_query.std(ddof=1) / np.sqrt(len(per_query)))


def _values(spec: IndexSpec, k: int) -> list[int]:
    if spec.family == "ivf":
        return [1 << i for i in range(spec.nlist.bit_length()) if 1 << i < spec.nlist] + [spec.nlist]
    return [ef for ef in _EF_SEARCH if ef >= k]


def _measure(spec: IndexSpec, index: Any, value: int, truth: np.ndarray, search: dict[str, Any]) -> tuple[float, ...]:
    """(recall@k, its 95% lower bound, queries/s) of the held-out queries with the parameter at `value`."""
    set_params(index, {spec.param: value} if spec.param else {})
    clock = time.perf_counter()
    _, ids = ann_search(index, search["queries"], search["k"], rerank=search["rerank"], vectors=search["vectors"])
    qps = len(ids) / max(time.perf_counter() - clock, 1e-9)
    per_query = recall_at_k(ids, truth, search["vectors"], search["queries"])
    return float(per_query.mean()), _lower_bound(per_query), qps


def tune(spec: IndexSpec, index: Any, truth: tuple[np.ndarray, np.ndarray], search: dict[str, Any]) -> Tuning:
    """Smallest `nprobe` / `efSearch` whose recall@k reaches `search["target"]` on unseen queries too.

    "Reaches" means the one-sided 95% lower confidence bound of the held-out queries' mean recall is at the
    target: the smallest value that only just reaches it on these queries falls short on others about half
    the time (HNSW at 200k: 0.9501 on the tuning queries). Doubles the value until the target is reached, then
    bisects between the last two values. `search` holds `queries`, `k`, `target`, `rerank`, `vectors` and
    `max_value` (values above it still run, but a target reached only there does not count as met: that
    search would be barely faster than exact).
    """
    results: dict[int, tuple[float, ...]] = {}
    target = search["target"]
    low = search["k"] - 1 if spec.family == "hnsw" else 0  # faiss searches HNSW with max(efSearch, k)
    for value in _values(spec, search["k"]) if spec.param else [0]:
        results[value] = _measure(spec, index, value, truth[0], search)
        if results[value][1] >= target:
            break
        low = value
    high = value
    while spec.param and results[high][1] >= target and high - low > 1:
        mid = (low + high) // 2
        results[mid] = _measure(spec, index, mid, truth[0], search)
        low, high = (low, mid) if results[mid][1] >= target else (mid, high)
    recall, lower, _ = results[high]
    params = {spec.param: high} if spec.param else {}
    set_params(index, params)
    met = lower >= target and (not spec.param or high <= search["max_value"])
    curve = tuple((v, round(r, 5), round(b, 5), round(q, 1)) for v, (r, b, q) in sorted(results.items()))
    return Tuning(params, recall, lower, met, curve)
