"""Embedding stores from arrays for tests (indices, evaluation): the embedding job's format without running it.

`write_test_store(path, vectors, processids, splits)` writes `<split>/<split>-NNNNNN.parquet` files through
`zoo.embedding.store.write_store_file` and an `index.json` in the store's format, so `read_embeddings`,
`iter_embeddings` and `read_store_index` treat it as a finished store. `clustered_vectors` makes the usual
synthetic data of index tests: L2-normalised Gaussian clusters.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from bioscan_stream.constants import LABEL_COLUMNS
from zoo.embedding.pipeline import encoder_digest
from zoo.embedding.store import STORE_FORMAT, STORE_VERSION, write_store_file

#: The fingerprint of test stores unless a test passes its own (another dict = another encoder).
TEST_ENCODER: dict[str, Any] = {"name": "test_encoder", "version": 1}


def clustered_vectors(n: int, dim: int, *, clusters: int = 64, spread: float = 0.35, seed: int = 0) -> np.ndarray:
    """`n` float32 unit vectors drawn around `clusters` random unit centres (noise `spread` per dimension)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    x = centres[rng.integers(0, clusters, n)] + spread * rng.standard_normal((n, dim)).astype(np.float32) / np.sqrt(dim)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _label_columns(labels: Mapping[str, Sequence[Any]] | None, n: int) -> dict[str, pa.Array]:
    """Strings and codes of the 7 ranks + dna_bin; ranks not in `labels` are missing (null, code -1)."""
    columns: dict[str, pa.Array] = {}
    for name in LABEL_COLUMNS:
        values = list(labels[name]) if labels and name in labels else [None] * n
        vocab = {v: i for i, v in enumerate(sorted({v for v in values if v is not None}))}
        columns[name] = pa.array(values, pa.string())
        columns[f"{name}_code"] = pa.array([-1 if v is None else vocab[v] for v in values], pa.int32())
    return columns


def write_test_store(
    path: str | Path,
    vectors: np.ndarray,
    processids: Sequence[str],
    splits: Sequence[str] | str,
    *,
    labels: Mapping[str, Sequence[Any]] | None = None,
    encoder: Mapping[str, Any] | None = None,
    storage: tuple[str, str] = ("float16", "binary"),
    rows_per_file: int | None = None,
) -> dict[str, Any]:
    """Write a finished embedding store at `path`; returns its `index.json`.

    Args:
        vectors: `(n, dim)` embeddings, row-aligned with `processids`.
        splits: the split of each row, or one split for all; rows keep their order within a split.
        labels: rank (or `dna_bin`) -> per-row strings; codes are the sorted order of the distinct values.
        encoder: fingerprint (default `TEST_ENCODER`); its sha256 is the store's `encoder_sha256`.
        storage: (dtype, layout) of the embedding column: `float16` / `float32`, `binary` / `list`.
        rows_per_file: split each split into files of this many rows (default: one file per split).
    """
    n = len(vectors)
    split_of = np.asarray([splits] * n if isinstance(splits, str) else list(splits), dtype=object)
    if len(processids) != n or len(split_of) != n:
        raise ValueError(f"{n} vectors, {len(processids)} processids, {len(split_of)} splits")
    table = pa.table({"processid": pa.array(list(processids), pa.string()), "split": pa.array(split_of.tolist()),
                      **_label_columns(labels, n)})  # fmt: skip
    dtype, layout = storage
    fingerprint = dict(encoder or TEST_ENCODER)
    entries: dict[str, Any] = {}
    for split in dict.fromkeys(split_of.tolist()):
        rows = np.flatnonzero(split_of == split)
        step = rows_per_file or max(1, len(rows))
        files = []
        for number, start in enumerate(range(0, len(rows), step)):
            part = rows[start : start + step]
            name = f"{split}/{split}-{number:06d}.parquet"
            meta = {"encoder_sha256": encoder_digest(fingerprint), "rejects": []}
            written = write_store_file(
                str(path), name, table.take(part), vectors[part], dtype=dtype, meta=meta, layout=layout
            )
            files.append({"path": name, "rows": written.rows, "bytes": written.bytes, "sha256": written.sha256})
        entries[split] = {"read": len(rows), "rows": len(rows), "rejected": 0, "rejected_by_reason": {}, "files": files}
    index = {
        "format": STORE_FORMAT,
        "version": STORE_VERSION,
        "model": fingerprint.get("name", "test"),
        "encoder": fingerprint,
        "encoder_sha256": encoder_digest(fingerprint),
        "modality": "test",
        "dim": int(vectors.shape[1]),
        "dtype": dtype,
        "layout": layout,
        "totals": {"read": n, "rows": n, "rejected": 0},
        "splits": entries,
    }
    (Path(path) / "index.json").write_text(json.dumps(index, indent=1))
    return index
