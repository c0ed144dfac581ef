"""Evaluation inputs read from embedding stores (embedding store -> **labelled vectors** -> retrieval, clustering).

Every evaluation reads the same thing: the vectors of some splits of one or more stores, their processids and
their labels as strings. Labels are compared as strings, encoded into codes per comparison (`encode_labels`),
so stores of different shard sets, whose `<rank>_code` vocabularies may differ, still compare correctly.
Several stores are joined on processid: an evaluation over several modalities uses the samples every store
has (a store may have rejected a sample another kept), and the label strings of a joined sample must agree.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from zoo.embedding.store import read_embeddings, read_store_index

__all__ = ["LabelledVectors", "StoreRef", "encode_labels", "join_on_processid", "read_labelled", "read_store_refs"]

#: Label columns any evaluation may score against (BIN = `dna_bin`).
LABEL_NAMES = ("class", "order", "family", "subfamily", "genus", "species", "dna_bin")


@dataclass(frozen=True)
class StoreRef:
    """A named store (`dna`, `image`, ...) with the facts of its `index.json` the evaluations check."""

    name: str
    url: str
    modality: str
    dim: int
    encoder_sha256: str
    model: str

    @classmethod
    def open(cls, name: str, url: str) -> StoreRef:
        """Read `url`'s index.json (FileNotFoundError / ValueError when it is not a finished store)."""
        index: dict[str, Any] = read_store_index(url)
        return cls(name, url, str(index["modality"]), int(index["dim"]), str(index["encoder_sha256"]), index["model"])


def read_store_refs(stores: Sequence[tuple[str, str]]) -> list[StoreRef]:
    """`[(name, url), ...]` -> StoreRefs; names must be distinct."""
    names = [name for name, _ in stores]
    if len(set(names)) != len(names):
        raise ValueError(f"store names must be distinct, got {names}")
    return [StoreRef.open(name, url) for name, url in stores]


@dataclass
class LabelledVectors:
    """Row-aligned vectors `(n, dim)` float32, processids, splits and label strings (None = missing)."""

    vectors: np.ndarray
    columns: pa.Table

    def __len__(self) -> int:
        return len(self.vectors)

    @property
    def processids(self) -> np.ndarray:
        """Processids as a numpy object array."""
        return np.asarray(self.columns.column("processid").to_pylist(), dtype=object)

    def labels(self, name: str) -> pa.ChunkedArray:
        """The label strings of `name` (a rank or `dna_bin`)."""
        return self.columns.column(name)

    def take(self, rows: np.ndarray) -> LabelledVectors:
        """The rows at positions `rows`, in that order."""
        return LabelledVectors(self.vectors[rows], self.columns.take(pa.array(rows, pa.int64())))


def read_labelled(store: str, splits: Sequence[str], labels: Sequence[str] = LABEL_NAMES) -> LabelledVectors:
    """Rows of `splits` (in this order, each in store order) as float32 vectors with their labels."""
    table = read_embeddings(store, splits=splits, columns=["processid", "split", *labels], dtype=np.float32)
    return LabelledVectors(np.ascontiguousarray(table.vectors), table.columns)


def encode_labels(*columns: pa.ChunkedArray | pa.Array) -> list[np.ndarray]:
    """String columns -> int64 codes over their joint vocabulary (-1 = missing, i.e. null or empty)."""
    chunks = [c for col in columns for c in (col.chunks if isinstance(col, pa.ChunkedArray) else [col])]
    joint = pa.chunked_array(chunks, type=pa.string()) if chunks else pa.chunked_array([], pa.string())
    joint = pc.if_else(pc.equal(joint, ""), pa.scalar(None, pa.string()), joint)
    codes = pc.dictionary_encode(joint).combine_chunks().indices
    flat = pc.fill_null(codes, -1).to_numpy(zero_copy_only=False).astype(np.int64)
    bounds = np.cumsum([0, *(len(col) for col in columns)])
    return [flat[bounds[i] : bounds[i + 1]] for i in range(len(columns))]


def join_on_processid(tables: Sequence[LabelledVectors], names: Sequence[str]) -> list[LabelledVectors]:
    """Each table restricted to the processids all of them hold (each keeps its own row order).

    A processid repeated within one table, or whose species / genus strings differ between tables (stores of
    different releases), is a ValueError.
    """
    ids = [t.processids for t in tables]
    for name, pids in zip(names, ids, strict=True):
        if len(np.unique(pids)) != len(pids):
            raise ValueError(f"store {name!r}: repeated processids; a joined evaluation needs one row per sample")
    common = ids[0]
    for pids in ids[1:]:
        common = np.intersect1d(common, pids)
    joined = [t.take(np.flatnonzero(np.isin(pids, common))) for t, pids in zip(tables, ids, strict=True)]
    _check_same_labels(joined, names)
    return joined


def _check_same_labels(tables: Sequence[LabelledVectors], names: Sequence[str]) -> None:
    order = [np.argsort(t.processids, kind="stable") for t in tables]
    for rank in ("genus", "species"):
        if rank not in tables[0].columns.column_names:
            continue
        first = np.asarray(tables[0].labels(rank).to_pylist(), dtype=object)[order[0]]
        for name, table, rows in zip(names[1:], tables[1:], order[1:], strict=True):
            other = np.asarray(table.labels(rank).to_pylist(), dtype=object)[rows]
            if not np.array_equal(first, other):
                raise ValueError(
                    f"stores {names[0]!r} and {name!r} disagree on the {rank} of {int((first != other).sum())} "
                    "shared processids: they were not made from the same release"
                )
