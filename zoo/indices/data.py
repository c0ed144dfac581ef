"""Reading an embedding store for the index builders: row plan, seeded samples, row ranges, exact top-k, re-rank.

Part of the flow embeddings -> **indices**. An index never holds the store in memory: the plan knows each
store file's row range, the builders read one file at a time (a shard task only the files of its range), and
the exact re-rank of PQ candidates gathers single rows from memory-mapped files. Every vector is L2-normalised
on the way in (inner product = cosine); a zero vector cannot be normalised and is an error naming its row.

Index ids: the store's rows in store order, except the held-out query rows, which come last (they are added
after recall was measured with them as queries). `RowPlan` maps between store positions and index ids.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import faiss
import numpy as np
import pyarrow as pa

from bioscan_stream.storage import join_url

# The store's own readers of its two embedding layouts (binary, list): one place knows the format.
from zoo.embedding.store import EMBEDDING, read_store_index, read_store_table, vector_view
from zoo.indices.spec import _FAISS_GPU_AVAILABLE

#: faiss's SWIG attributes the bundled stubs do not declare (GPU functions exist only in faiss-gpu).
_faiss: Any = faiss

__all__ = ["RowPlan", "StoreFiles", "StoreVectors", "exact_topk", "normalize", "read_rows", "sample_rows"]


@dataclass(frozen=True)
class StoreFiles:
    """The files of a store's selected splits in store order, with their first global row."""

    store: str
    paths: tuple[str, ...]
    rows: tuple[int, ...]
    dim: int
    encoder_sha256: str
    splits: tuple[str, ...]
    sha256: tuple[str, ...] = ()

    @classmethod
    def open(cls, store: str, splits: Sequence[str] | None = None) -> StoreFiles:
        """Plan of `store` (all splits by default, in the store's order)."""
        index = read_store_index(store)
        wanted = tuple(index["splits"]) if splits is None else tuple(splits)
        missing = [s for s in wanted if s not in index["splits"]]
        if missing:
            raise KeyError(f"{store}: splits {missing} are not in the store (it has {list(index['splits'])})")
        files = [f for split in wanted for f in index["splits"][split]["files"]]
        paths, rows = tuple(f["path"] for f in files), tuple(int(f["rows"]) for f in files)
        digests = tuple(str(f.get("sha256", "")) for f in files)
        return cls(store, paths, rows, int(index["dim"]), str(index["encoder_sha256"]), wanted, digests)

    @property
    def starts(self) -> np.ndarray:
        """Global row of each file's first row, plus the total at the end."""
        return np.concatenate([[0], np.cumsum(self.rows, dtype=np.int64)])

    @property
    def num_rows(self) -> int:
        return int(sum(self.rows))


@dataclass(frozen=True)
class RowPlan:
    """Store positions <-> index ids: held-out rows (sorted positions) move to the end of the id space."""

    num_rows: int
    held: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))

    def ids(self, positions: np.ndarray) -> np.ndarray:
        """Index ids of store positions (held-out positions get ids after every other row)."""
        if len(self.held) == 0:
            return positions.astype(np.int64)
        rank = np.searchsorted(self.held, positions)
        is_held = (rank < len(self.held)) & (self.held[np.minimum(rank, len(self.held) - 1)] == positions)
        return np.where(is_held, self.num_rows - len(self.held) + rank, positions - rank).astype(np.int64)

    def positions(self) -> np.ndarray:
        """Store position of every index id, in id order."""
        keep = np.ones(self.num_rows, bool)
        keep[self.held] = False
        return np.concatenate([np.flatnonzero(keep), self.held]).astype(np.int64)


def normalize(vectors: np.ndarray, names: Sequence[Any] | np.ndarray | None = None) -> np.ndarray:
    """float32 unit rows; ValueError naming the first zero (or non-finite) row, which has no direction."""
    x = np.array(vectors, dtype=np.float32, copy=True, order="C")
    norms = np.linalg.norm(x, axis=1)
    bad = np.flatnonzero(~np.isfinite(norms) | (norms == 0))
    if len(bad):
        row = bad[0] if names is None else names[bad[0]]
        row = row.item() if isinstance(row, np.generic) else row
        raise ValueError(f"zero or non-finite vector at row {row!r}: it cannot be L2-normalised for inner product")
    x /= norms[:, None]
    return x


def _read_file(store: str, path: str, columns: list[str]) -> pa.Table:
    return read_store_table(join_url(store, path), columns)


def _vectors(table: pa.Table, dim: int) -> np.ndarray:
    """The embedding column as an (n, dim) view of its buffers (zero-copy from a memory-mapped local file)."""
    return vector_view(table.column(EMBEDDING), dim)


def read_rows(files: StoreFiles, start: int, stop: int, batch: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(positions, raw vectors) of store rows [start, stop) in batches of at most `batch` rows."""
    starts = files.starts
    for i, path in enumerate(files.paths):
        lo, hi = max(start, int(starts[i])), min(stop, int(starts[i + 1]))
        if lo >= hi:
            continue
        vectors = _vectors(_read_file(files.store, path, [EMBEDDING]), files.dim)
        for a in range(lo, hi, batch):
            b = min(hi, a + batch)
            yield np.arange(a, b, dtype=np.int64), vectors[a - starts[i] : b - starts[i]]


def sample_rows(files: StoreFiles, wanted: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One pass over the store: every processid (checking every vector) and the normalised rows `wanted`.

    `wanted` are sorted store positions; returns (processids of all rows, vectors of `wanted` in that order).
    """
    ids: list[np.ndarray] = []
    picked: list[np.ndarray] = []
    starts = files.starts
    for i, path in enumerate(files.paths):
        table = _read_file(files.store, path, ["processid", EMBEDDING])
        names = np.asarray(table.column("processid").to_pylist(), dtype=object)
        vectors = _vectors(table, files.dim)
        for a in range(0, len(vectors), 65_536):
            normalize(vectors[a : a + 65_536], names[a : a + 65_536])  # only the check: raises on a zero row
        local = wanted[(wanted >= starts[i]) & (wanted < starts[i + 1])] - starts[i]
        picked.append(normalize(vectors[local], names[local]))
        ids.append(names)
    empty = np.zeros((0, files.dim), np.float32)
    return np.concatenate(ids) if ids else np.zeros(0, object), np.concatenate(picked) if picked else empty


@lru_cache(maxsize=1)
def _gpu_resources() -> Any:
    return _faiss.StandardGpuResources()


def _knn(queries: np.ndarray, keys: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact inner-product top-k: blocked BLAS on the CPU, or faiss's brute force on the GPU when there is one."""
    if _FAISS_GPU_AVAILABLE:
        return _faiss.knn_gpu(_gpu_resources(), queries, keys, k, metric=faiss.METRIC_INNER_PRODUCT)
    return faiss.knn(queries, keys, k, faiss.METRIC_INNER_PRODUCT)


def exact_topk(
    files: StoreFiles, plan: RowPlan, queries: np.ndarray, k: int, *, batch: int = 65_536
) -> tuple[np.ndarray, np.ndarray]:
    """Exact inner-product top-k (scores, index ids) of `queries` over every row that is not held out."""
    best_s = np.full((len(queries), k), -np.inf, np.float32)
    best_i = np.full((len(queries), k), -1, np.int64)
    for positions, raw in read_rows(files, 0, files.num_rows, batch):
        ids = plan.ids(positions)
        keep = ids < plan.num_rows - len(plan.held)
        if not keep.any():
            continue
        scores, local = _knn(queries, normalize(raw[keep]), min(k, int(keep.sum())))
        all_s = np.concatenate([best_s, scores], axis=1)
        all_i = np.concatenate([best_i, np.where(local >= 0, ids[keep][np.maximum(local, 0)], -1)], axis=1)
        order = np.argsort(-all_s, axis=1, kind="stable")[:, :k]
        best_s, best_i = np.take_along_axis(all_s, order, 1), np.take_along_axis(all_i, order, 1)
    return best_s, best_i


class StoreVectors:
    """Normalised store vectors by index id, gathered row by row from memory-mapped files (for the re-rank)."""

    def __init__(self, files: StoreFiles, file_of_id: np.ndarray, row_of_id: np.ndarray) -> None:
        self.files, self.file_of_id, self.row_of_id = files, file_of_id, row_of_id
        self._cache: dict[int, np.ndarray] = {}

    def _file(self, i: int) -> np.ndarray:
        if i not in self._cache:
            self._cache[i] = _vectors(_read_file(self.files.store, self.files.paths[i], [EMBEDDING]), self.files.dim)
        return self._cache[i]

    def get(self, ids: np.ndarray) -> np.ndarray:
        """(len(ids), dim) normalised float32 rows of index ids (all >= 0)."""
        flat = ids.reshape(-1)
        out = np.empty((len(flat), self.files.dim), np.float32)
        files = self.file_of_id[flat]
        for i in np.unique(files):
            where = np.flatnonzero(files == i)
            out[where] = self._file(int(i))[self.row_of_id[flat[where]]]
        return normalize(out)

    def scores(self, queries: np.ndarray, ids: np.ndarray) -> np.ndarray:
        """Exact inner products of each query with its candidate ids `(nq, c)`; -inf where the id is -1."""
        safe = np.maximum(ids, 0)
        vectors = self.get(safe).reshape(*ids.shape, self.files.dim)
        scores = np.einsum("qd,qcd->qc", queries, vectors)
        return np.where(ids >= 0, scores, -np.inf).astype(np.float32)
