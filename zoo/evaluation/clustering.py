"""Zero-shot clustering, the BIOSCAN-5M protocol (embedding stores -> **UMAP + Ward + AMI** -> report).

The protocol is evaluation.md §2, followed exactly:

1. samples: `test` then `test_unseen`, each sorted by processid (several stores: the processids all hold);
2. per modality and per partition (split), element-wise z-score: column mean, population std (a constant
   column becomes 0); several modalities are concatenated after it, image then DNA (then text);
3. UMAP to 50 dimensions: n_neighbors 30, min_dist 0, euclidean, seeded;
4. Ward linkage, Euclidean, cut at k = the number of distinct species among the samples;
5. AMI (sklearn's `adjusted_mutual_info_score` defaults: natural log, hypergeometric expectation, arithmetic
   mean), x100 in the report, scored for one clustering against class, order, family, subfamily, genus,
   species and BIN (samples without that label left out of that score); the median over seeds.

Ward is memory-lean and exact: `fastcluster.linkage_vector` (nearest-neighbour chain on the vectors, O(N*D)
memory) instead of the O(N^2) distance matrix the paper's run needed (~9 GB at 47k points); the tree is cut
by replaying its first N - k merges, which is what sklearn's `AgglomerativeClustering` does with its own tree.
The same partition as sklearn's Ward is tested (AMI 1.0 between them).
"""

from __future__ import annotations

import statistics
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from zoo.evaluation.stores import (
    LABEL_NAMES,
    LabelledVectors,
    encode_labels,
    join_on_processid,
    read_labelled,
    read_store_refs,
)

__all__ = [
    "ClusteringConfig",
    "ami_scores",
    "clustering_features",
    "cut_tree",
    "evaluate_clustering",
    "umap_reduce",
    "ward_labels",
    "zscore",
]

ZSCORE_MODES = ("per_split", "pooled", "none")
WARD_BACKENDS = ("fastcluster", "sklearn")
_MODALITY_ORDER = ("image", "dna", "text")


@dataclass(frozen=True)
class ClusteringConfig:
    """A zero-shot clustering run (the CLI builds one from its flags).

    Args:
        stores: `(name, store url)` pairs; several are concatenated (multimodal), image then DNA then text.
        splits: the samples, in this order.
        seeds: UMAP seeds; the report gives each and their median.
        n_components, n_neighbors, min_dist: UMAP settings of the protocol.
        zscore: `per_split` (the protocol), `pooled` (one mean/std over all samples) or `none`.
        ward: `fastcluster` (lean, default) or `sklearn` (the O(N^2) reference, for checks on small sets).
        scatter: also compute a 2-D UMAP (first seed, same neighbour graph) for the scatter plot.
    """

    stores: tuple[tuple[str, str], ...]
    splits: tuple[str, ...] = ("test", "test_unseen")
    seeds: tuple[int, ...] = (0,)
    n_components: int = 50
    n_neighbors: int = 30
    min_dist: float = 0.0
    zscore: str = "per_split"
    ward: str = "fastcluster"
    scatter: bool = True


def _column_stats(x: np.ndarray, chunk: int = 8192) -> tuple[np.ndarray, np.ndarray]:
    """Column mean and population std, accumulated in float64 over row chunks (no float64 copy of `x`)."""
    total = np.zeros(x.shape[1])
    for start in range(0, len(x), chunk):
        total += x[start : start + chunk].sum(axis=0, dtype=np.float64)
    mean = total / max(len(x), 1)
    square = np.zeros(x.shape[1])
    for start in range(0, len(x), chunk):
        square += ((x[start : start + chunk] - mean) ** 2).sum(axis=0)
    return mean, np.sqrt(square / max(len(x), 1))


def zscore(x: np.ndarray, groups: np.ndarray | None = None) -> np.ndarray:
    """Element-wise z-score of `x` (column mean, population std) within each group of rows (None: one group).

    A constant column becomes 0. Float32 out; statistics in float64; memory ~ one float32 copy of `x`.
    """
    out = np.empty(x.shape, dtype=np.float32)
    keys = np.zeros(len(x), dtype=np.int64) if groups is None else np.unique(groups, return_inverse=True)[1]
    for g in np.unique(keys):
        rows = np.flatnonzero(keys == g)
        part = x[rows].astype(np.float32, copy=False)
        mean, std = _column_stats(part)
        part = part - mean.astype(np.float32)
        part /= np.where(std > 0, std, 1.0).astype(np.float32)
        out[rows] = part
    return out


def _sorted_rows(table: LabelledVectors, splits: Sequence[str]) -> LabelledVectors:
    """Rows of `splits` in that order, each split's rows sorted by processid."""
    split_of = np.asarray(table.columns.column("split").to_pylist(), dtype=object)
    pids = table.processids
    order = [np.flatnonzero(split_of == s)[np.argsort(pids[split_of == s], kind="stable")] for s in splits]
    return table.take(np.concatenate(order) if order else np.zeros(0, np.int64))


def clustering_features(config: ClusteringConfig) -> tuple[np.ndarray, LabelledVectors]:
    """The protocol's input: z-scored (and concatenated) features `(n, D)` float32 and the row-aligned labels."""
    if config.zscore not in ZSCORE_MODES:
        raise ValueError(f"zscore must be one of {ZSCORE_MODES}, not {config.zscore!r}")
    refs = read_store_refs(config.stores)
    refs.sort(key=lambda r: _MODALITY_ORDER.index(r.modality) if r.modality in _MODALITY_ORDER else 99)
    tables = [read_labelled(ref.url, config.splits) for ref in refs]
    if len(tables) > 1:
        tables = join_on_processid(tables, [ref.name for ref in refs])
    tables = [_sorted_rows(t, config.splits) for t in tables]
    blocks = []
    for table in tables:
        groups = np.asarray(table.columns.column("split").to_pylist(), dtype=object)
        if config.zscore == "none":
            blocks.append(table.vectors.astype(np.float32))
        else:
            blocks.append(zscore(table.vectors, groups if config.zscore == "per_split" else None))
    labels = LabelledVectors(np.zeros((len(tables[0]), 0), np.float32), tables[0].columns)  # vectors freed
    return np.hstack(blocks) if len(blocks) > 1 else blocks[0], labels


def umap_reduce(x: np.ndarray, seed: int, config: ClusteringConfig) -> tuple[np.ndarray, Any]:
    """UMAP of `x` to `config.n_components` (euclidean, seeded); also returns the fitted reducer."""
    import umap

    reducer = umap.UMAP(
        n_components=config.n_components,
        n_neighbors=config.n_neighbors,
        min_dist=config.min_dist,
        metric="euclidean",
        random_state=seed,
    )
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*n_jobs value.*overridden.*")  # seeded UMAP runs one thread
        return reducer.fit_transform(x).astype(np.float32), reducer


def umap_scatter(x: np.ndarray, reducer: Any, seed: int, config: ClusteringConfig) -> np.ndarray:
    """A 2-D UMAP of `x` reusing `reducer`'s neighbour graph (the 50-D run's), for the scatter plot.

    Reusing the graph skips the nearest-neighbour search, most of a UMAP's time at 47k x 768.
    """
    import umap

    knn = tuple(getattr(reducer, f"_knn_{name}", None) for name in ("indices", "dists", "search_index"))
    if knn[0] is None:  # small data: UMAP used exact pairwise distances and kept no graph; recomputing is cheap
        knn = (None, None, None)
    two_d = umap.UMAP(n_components=2, n_neighbors=config.n_neighbors, min_dist=config.min_dist,
                      metric="euclidean", random_state=seed, precomputed_knn=knn)  # fmt: skip
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*(n_jobs value|precomputed_knn|search index).*")
        return two_d.fit_transform(x).astype(np.float32)


def cut_tree(linkage: np.ndarray, n_clusters: int) -> np.ndarray:
    """Flat labels 0..n_clusters-1 from a SciPy-format linkage: its first N - n_clusters merges replayed."""
    n = len(linkage) + 1
    if not 1 <= n_clusters <= n:
        raise ValueError(f"n_clusters={n_clusters} needs 1 <= n_clusters <= {n} samples")
    parent = np.arange(2 * n - 1)
    merges = linkage[: n - n_clusters, :2].astype(np.int64)
    parent[merges[:, 0]] = n + np.arange(len(merges))
    parent[merges[:, 1]] = n + np.arange(len(merges))
    root = parent
    while True:  # pointer jumping: log2(tree depth) passes
        nxt = root[root]
        if np.array_equal(nxt, root):
            break
        root = nxt
    return np.unique(root[:n], return_inverse=True)[1]


def ward_labels(x: np.ndarray, n_clusters: int, *, backend: str = "fastcluster") -> np.ndarray:
    """Ward clustering of the rows of `x` (Euclidean) into `n_clusters` flat clusters."""
    if backend == "fastcluster":
        import fastcluster

        return cut_tree(fastcluster.linkage_vector(np.asarray(x, dtype=np.float64), method="ward"), n_clusters)
    if backend == "sklearn":
        from sklearn.cluster import AgglomerativeClustering

        return np.asarray(AgglomerativeClustering(n_clusters=n_clusters, linkage="ward").fit_predict(x))
    raise ValueError(f"ward backend must be one of {WARD_BACKENDS}, not {backend!r}")


def ami_scores(predicted: np.ndarray, table: LabelledVectors, names: Sequence[str] = LABEL_NAMES) -> dict[str, float]:
    """AMI of one clustering against each label column (rows without that label left out; NaN if none)."""
    from sklearn.metrics import adjusted_mutual_info_score

    scores = {}
    for name in names:
        (truth,) = encode_labels(table.labels(name))
        keep = truth >= 0
        scores[name] = float(adjusted_mutual_info_score(truth[keep], predicted[keep])) if keep.any() else float("nan")
    return scores


def _median(values: Sequence[float]) -> float:
    finite = [v for v in values if v == v]
    return float(statistics.median(finite)) if finite else float("nan")


def evaluate_clustering(config: ClusteringConfig) -> dict[str, Any]:
    """Run the protocol (see the module docstring): a JSON-ready dict; `"scatter"` holds the 2-D points."""
    if config.ward not in WARD_BACKENDS:
        raise ValueError(f"ward backend must be one of {WARD_BACKENDS}, not {config.ward!r}")
    clock = {"start": time.perf_counter()}
    features, table = clustering_features(config)
    (species,) = encode_labels(table.labels("species"))
    k = int(len(np.unique(species[species >= 0])))
    if k < 1 or len(features) <= config.n_neighbors:
        raise ValueError(
            f"{len(features)} samples with {k} species: too few for UMAP with {config.n_neighbors} neighbours"
        )
    seconds: dict[str, float] = {"read": time.perf_counter() - clock["start"], "umap": 0.0, "ward": 0.0, "ami": 0.0}
    per_seed: dict[str, dict[str, float]] = {}
    scatter = None
    for seed in config.seeds:
        t0 = time.perf_counter()
        reduced, reducer = umap_reduce(features, seed, config)
        t1 = time.perf_counter()
        predicted = ward_labels(reduced, k, backend=config.ward)
        t2 = time.perf_counter()
        per_seed[str(seed)] = ami_scores(predicted, table)
        seconds["umap"] += t1 - t0
        seconds["ward"] += t2 - t1
        seconds["ami"] += time.perf_counter() - t2
        if config.scatter and scatter is None:
            scatter = umap_scatter(features, reducer, seed, config)
    names = list(next(iter(per_seed.values())))
    return {
        "protocol": {"name": "zero-shot clustering (evaluation.md §2)", **_settings(config)},
        "n_samples": len(features),
        "n_features": int(features.shape[1]),
        "n_clusters": k,
        "ami": {name: _median([s[name] for s in per_seed.values()]) for name in names},
        "ami_per_seed": per_seed,
        "seconds": {key: round(value, 3) for key, value in seconds.items()},
        "order": table.labels("order").to_pylist(),
        "scatter": scatter,
    }


def _settings(config: ClusteringConfig) -> dict[str, Any]:
    return {
        "stores": [list(s) for s in config.stores],
        "splits": list(config.splits),
        "seeds": list(config.seeds),
        "umap": {"n_components": config.n_components, "n_neighbors": config.n_neighbors,
                 "min_dist": config.min_dist, "metric": "euclidean"},
        "zscore": config.zscore,
        "ward": config.ward,
    }  # fmt: skip
