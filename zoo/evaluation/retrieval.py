"""Retrieval-based taxonomic classification, the BIOSCAN-CLIP protocol (embedding stores -> **retrieval** -> report).

The protocol is evaluation.md §1, followed exactly:

- keys: one pooled set, `train` + `key_unseen`; queries: seen (`test` or `val`) and unseen (`test_unseen` or
  `val_unseen`); every embedding L2-normalised (a zero vector is an input error), score = cosine;
- neighbours by exact search (`search.exact_topk`) with the canonical tie rule (equal scores: lower key
  position first) or the FAISS-compatible one; the prediction at every rank is the nearest key's label at
  that rank, no voting; top-k is a hit when the true label is among the first k keys' labels;
- micro = hits / queries; macro = mean over the true classes present in the query set of the per-class
  accuracy; harmonic mean 2su/(s+u) of seen and unseen (0 if either is 0), from unrounded values;
- grid: {seen, unseen, hm} x {micro, macro} x {order, family, genus, species} x top-{1, 3, 5}, per
  query->key modality pair (DNA->DNA, image->image, image->DNA, ...).

Labels are compared as strings (`stores.encode_labels`). A query whose true label is missing at a rank is left
out of that rank's accuracies (BIOSCAN-5M's seen and unseen splits are species-labelled, so this only matters
for other data); a key whose label is missing never matches.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from zoo.evaluation.search import exact_topk, l2_normalise
from zoo.evaluation.stores import (
    LabelledVectors,
    StoreRef,
    encode_labels,
    join_on_processid,
    read_labelled,
    read_store_refs,
)

__all__ = [
    "RANKS",
    "TOP_K",
    "DimensionMismatchError",
    "RetrievalConfig",
    "evaluate_retrieval",
    "grid_from_neighbours",
    "harmonic_mean",
    "micro_macro",
    "resolve_pairs",
    "retrieval_grid",
]

RANKS = ("order", "family", "genus", "species")
TOP_K = (1, 3, 5)
PARTS = ("keys", "seen", "unseen")


class DimensionMismatchError(ValueError):
    """Queries and keys of different widths: they do not live in one embedding space."""


@dataclass(frozen=True)
class RetrievalConfig:
    """A retrieval evaluation over named stores (the CLI builds one from its flags).

    Args:
        stores: `(name, store url)` pairs, e.g. `(("dna", "stores/dna"), ("image", "stores/img"))`.
        pairs: `(query store, key store)` names to evaluate; empty = every store with itself plus every
            cross pair of equal dimension (a shared space is assumed there; name pairs to be explicit).
        seen, unseen: query splits (`test` / `test_unseen`, or `val` / `val_unseen`).
        key_splits: the pooled key set.
        tie: `canonical` or `faiss` (see `search`).
        device: exact-search device (None: CUDA when available).
        join: evaluate only the processids every store holds (comparable rows across pairs).
        indices: `(key store name, ANN index folder)`: also search that index and report the change.
    """

    stores: tuple[tuple[str, str], ...]
    pairs: tuple[tuple[str, str], ...] = ()
    seen: str = "test"
    unseen: str = "test_unseen"
    key_splits: tuple[str, ...] = ("train", "key_unseen")
    tie: str = "canonical"
    device: str | None = None
    join: bool = True
    indices: tuple[tuple[str, str], ...] = ()


def harmonic_mean(seen: float, unseen: float) -> float:
    """2su/(s+u), 0 when either is 0."""
    return 0.0 if seen <= 0 or unseen <= 0 else 2 * seen * unseen / (seen + unseen)


def micro_macro(predicted: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    """Micro and macro accuracy: a query is a hit when its true label is in its row of `predicted` `(n, k)`.

    Queries without a true label (-1) are left out; macro averages over the distinct true labels present.
    """
    keep = truth >= 0
    if not keep.any():
        return 0.0, 0.0
    hits = (predicted[keep] == truth[keep, None]).any(axis=1)
    _, inverse = np.unique(truth[keep], return_inverse=True)
    per_class = np.bincount(inverse, weights=hits) / np.bincount(inverse)
    return float(hits.mean()), float(per_class.mean())


def _query_grid(neighbour_labels: Mapping[str, np.ndarray], truth: Mapping[str, np.ndarray]) -> dict[str, Any]:
    grid: dict[str, Any] = {"micro": {}, "macro": {}}
    for rank in neighbour_labels:
        for k in TOP_K:
            micro, macro = micro_macro(neighbour_labels[rank][:, :k], truth[rank])
            grid["micro"].setdefault(rank, {})[str(k)] = micro
            grid["macro"].setdefault(rank, {})[str(k)] = macro
    return grid


def grid_from_neighbours(
    keys: LabelledVectors, queries: Mapping[str, LabelledVectors], neighbours: Mapping[str, np.ndarray]
) -> dict[str, Any]:
    """The accuracy grid of `{"seen": ..., "unseen": ...}` queries given their neighbours (key positions
    `(n, >=5)`, -1 = none) in `keys`: seen / unseen / hm x micro / macro x rank x top-k."""
    grid: dict[str, Any] = {}
    parts = list(queries)
    for rank in RANKS:
        codes = encode_labels(keys.labels(rank), *(queries[p].labels(rank) for p in parts))
        key_codes = np.append(codes[0], -1)  # position -1 (no neighbour) reads the appended "missing" label
        for part, truth in zip(parts, codes[1:], strict=True):
            labels = key_codes[neighbours[part][:, : max(TOP_K)]]
            part_grid = _query_grid({rank: labels}, {rank: truth})
            for average in ("micro", "macro"):
                grid.setdefault(part, {}).setdefault(average, {})[rank] = part_grid[average][rank]
    if "seen" in grid and "unseen" in grid:
        grid["hm"] = {
            avg: {
                rank: {k: harmonic_mean(grid["seen"][avg][rank][k], grid["unseen"][avg][rank][k]) for k in by_k}
                for rank, by_k in grid["seen"][avg].items()
            }
            for avg in ("micro", "macro")
        }
    return grid


def retrieval_grid(
    keys: LabelledVectors, queries: Mapping[str, LabelledVectors], *, tie: str = "canonical", device: str | None = None
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Exact search of each query set against `keys` and its accuracy grid; also returns the neighbours."""
    dims = {name: t.vectors.shape[1] for name, t in {"keys": keys, **queries}.items()}
    if len(set(dims.values())) != 1:
        raise DimensionMismatchError(f"queries and keys must share one embedding width, got {dims}")
    key_vectors = l2_normalise(keys.vectors, name="keys", ids=keys.processids)
    neighbours = {}
    for part, table in queries.items():
        vectors = l2_normalise(table.vectors, name=f"{part} queries", ids=table.processids)
        neighbours[part] = exact_topk(vectors, key_vectors, max(TOP_K), tie=tie, device=device)[1]
    return grid_from_neighbours(keys, queries, neighbours), neighbours


def resolve_pairs(refs: Sequence[StoreRef], pairs: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
    """The (query, key) store pairs to evaluate: `pairs` checked, or by default each store with itself and
    every cross pair of equal dimension. A named pair of unequal widths is a DimensionMismatchError."""
    by_name = {ref.name: ref for ref in refs}
    if not pairs:
        return [(a.name, b.name) for a in refs for b in refs if a.name == b.name or a.dim == b.dim]
    for query, key in pairs:
        for name in (query, key):
            if name not in by_name:
                raise KeyError(f"pair {query}->{key}: no store named {name!r} (stores: {sorted(by_name)})")
        if by_name[query].dim != by_name[key].dim:
            raise DimensionMismatchError(
                f"pair {query}->{key}: {query} store {by_name[query].url} is {by_name[query].dim}-d but {key} "
                f"store {by_name[key].url} is {by_name[key].dim}-d: queries and keys must share one embedding space"
            )
    return list(pairs)


def _read_parts(refs: Sequence[StoreRef], config: RetrievalConfig) -> dict[str, dict[str, LabelledVectors]]:
    """`{store name: {"keys" | "seen" | "unseen": rows}}`, joined on processid across stores if asked."""
    splits = {"keys": config.key_splits, "seen": (config.seen,), "unseen": (config.unseen,)}
    data = {ref.name: {part: read_labelled(ref.url, splits[part], RANKS) for part in PARTS} for ref in refs}
    if config.join and len(refs) > 1:
        names = [ref.name for ref in refs]
        for part in PARTS:
            joined = join_on_processid([data[name][part] for name in names], names)
            for name, table in zip(names, joined, strict=True):
                data[name][part] = table
    return data


def evaluate_retrieval(config: RetrievalConfig) -> dict[str, Any]:
    """Run the protocol over the stores of `config`: a JSON-ready dict with one grid per query->key pair."""
    from zoo.evaluation.ann import compare_with_index

    refs = read_store_refs(config.stores)
    pairs = resolve_pairs(refs, config.pairs)
    data = _read_parts(refs, config)
    results: dict[str, Any] = {"protocol": _protocol(config), "stores": {}, "pairs": {}}
    for ref in refs:
        counts = {part: len(table) for part, table in data[ref.name].items()}
        results["stores"][ref.name] = {"url": ref.url, "modality": ref.modality, "dim": ref.dim, "model": ref.model,
                                       "encoder_sha256": ref.encoder_sha256, "rows": counts}  # fmt: skip
    indices = dict(config.indices)
    for query, key in pairs:
        start = time.perf_counter()
        queries = {"seen": data[query]["seen"], "unseen": data[query]["unseen"]}
        grid, neighbours = retrieval_grid(data[key]["keys"], queries, tie=config.tie, device=config.device)
        entry = {"query": query, "key": key, "grid": grid, "seconds": round(time.perf_counter() - start, 3)}
        if key in indices:
            ref = next(r for r in refs if r.name == key)
            entry["ann"] = compare_with_index(indices[key], ref, data[key]["keys"], queries, grid)
        results["pairs"][f"{query}->{key}"] = entry
    return results


def _protocol(config: RetrievalConfig) -> dict[str, Any]:
    return {
        "name": "retrieval (BIOSCAN-CLIP, evaluation.md §1), pooled keys",
        "keys": list(config.key_splits),
        "seen": config.seen,
        "unseen": config.unseen,
        "tie": config.tie,
        "ranks": list(RANKS),
        "top_k": list(TOP_K),
        "joined_on_processid": config.join,
    }
