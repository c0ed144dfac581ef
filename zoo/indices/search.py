"""`search`: neighbours of query vectors (or of a query store's rows) in a built index, as processids + scores.

Part of the flow embeddings -> **indices** -> evaluation. The index folder's `index.json` carries the tuned
search parameters (applied on load), the encoder fingerprint of the store it was built from (a query store of
another encoder is refused: its vectors are not comparable) and, for PQ types, the store whose vectors re-rank
the top candidates exactly.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from bioscan_stream.storage import join_url, read_bytes
from zoo.embedding.store import iter_embeddings, read_store_index
from zoo.indices.build import IndexMismatchError, check_compatible
from zoo.indices.data import StoreFiles, StoreVectors, normalize
from zoo.indices.shards import index_shards, read_index
from zoo.indices.tune import ann_search, set_params

__all__ = ["LoadedIndex", "SearchResult", "load_index", "search"]


@dataclass
class LoadedIndex:
    """A built index in memory: the faiss index (tuned parameters applied), its metadata and row processids."""

    path: str
    index: Any
    meta: dict[str, Any]
    processids: np.ndarray
    store_rows: pa.Table
    store: str | None = None
    _vectors: StoreVectors | None = field(default=None, repr=False)

    @property
    def dim(self) -> int:
        return int(self.meta["dim"])

    def vectors(self) -> StoreVectors:
        """The store's vectors by index id (for the exact re-rank of PQ types), opened on first use."""
        if self._vectors is None:
            store = self.store or self.meta["store"]["url"]
            files = StoreFiles.open(store, self.meta["store"]["splits"])
            if list(files.paths) != self.meta["store"]["files"]:
                raise IndexMismatchError(f"{store} is not the store the index was built from (its files differ)")
            file_of = self.store_rows.column("store_file").to_numpy()
            self._vectors = StoreVectors(files, file_of, self.store_rows.column("store_row").to_numpy())
        return self._vectors


@dataclass(frozen=True)
class SearchResult:
    """Neighbours of each query: processids `(nq, k)` (None past the index size), scores and index rows."""

    ids: np.ndarray
    scores: np.ndarray
    rows: np.ndarray
    queries: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.rows)


def load_index(path: str, *, store: str | None = None) -> LoadedIndex:
    """Open an index folder (local or `s3://`); `store` overrides where the PQ re-rank reads vectors."""
    meta = json.loads(read_bytes(join_url(path, "index.json")))
    parts = [read_index(join_url(path, name)) for name in meta["files"]]
    index = parts[0] if len(parts) == 1 else index_shards(int(meta["dim"]), parts)
    set_params(index, meta["params"])
    rows = pq.read_table(pa.BufferReader(read_bytes(join_url(path, "ids.parquet"))))
    processids = np.asarray(rows.column("processid").to_pylist(), dtype=object)
    return LoadedIndex(path, index, meta, processids, rows.drop_columns(["processid"]), store)


def _query_batches(
    loaded: LoadedIndex, queries: str | np.ndarray, splits: list[str] | None
) -> Iterator[tuple[np.ndarray | None, np.ndarray]]:
    if isinstance(queries, np.ndarray):
        if queries.ndim != 2 or queries.shape[1] != loaded.dim:
            raise IndexMismatchError(
                f"queries of shape {queries.shape} have dimension {queries.shape[-1]}, the index {loaded.dim}"
            )
        yield None, normalize(queries)
        return
    store = read_store_index(queries)
    check_compatible(store["encoder_sha256"], int(store["dim"]), loaded.meta["encoder_sha256"], loaded.dim, queries)
    for table in iter_embeddings(queries, splits=splits, columns=["processid"], dtype=np.float32):
        names = table.strings("processid")
        yield names, normalize(table.vectors, list(names))


def search(
    index: str | LoadedIndex,
    queries: str | np.ndarray,
    k: int = 10,
    *,
    splits: list[str] | None = None,
    params: dict[str, int] | None = None,
) -> SearchResult:
    """Top-`k` neighbours of `queries` (an `(n, dim)` array or a query store folder) in `index`.

    Args:
        index: index folder or a `load_index` result.
        queries: vectors (L2-normalised here) or an embedding store of the index's encoder.
        k: neighbours per query.
        splits: splits of a query store (default: all).
        params: override the tuned `nprobe` / `efSearch`.
    """
    loaded = load_index(index) if isinstance(index, str) else index
    if params:
        set_params(loaded.index, params)
    rerank = int(loaded.meta.get("rerank", 0))
    vectors = loaded.vectors() if rerank else None
    names, scores, rows = [], [], []
    for batch_names, x in _query_batches(loaded, queries, splits):
        s, i = ann_search(loaded.index, x, k, rerank=rerank, vectors=vectors)
        names.append(batch_names)
        scores.append(s)
        rows.append(i)
    all_rows = np.concatenate(rows) if rows else np.zeros((0, k), np.int64)
    ids = loaded.processids[np.maximum(all_rows, 0)]
    ids[all_rows < 0] = None
    found = [n for n in names if n is not None]
    query_ids = np.concatenate(found) if found else None
    return SearchResult(ids, np.concatenate(scores) if scores else np.zeros((0, k), np.float32), all_rows, query_ids)
