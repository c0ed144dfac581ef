"""The embedding store: one Parquet file per input shard + `index.json` (embedding job -> **store** -> indices).

Layout of a store folder (local or `s3://`):

    index.json                       encoder fingerprint, dim, dtype, transform, counts, per-file sha256
    rejects.jsonl                    {processid, split, shard, reason} per input sample that has no row
    <split>/<split>-NNNNNN.parquet   rows of input shard <split>/<split>-NNNNNN.tar, in the shard's order

Columns: `processid`, `split`, the seven ranks and `dna_bin` as strings, their global codes (`<rank>_code`,
-1 = missing, from the shard set's vocabularies) and `embedding`, a fixed-size list of float16 (default) or
float32. Plain pyarrow, duckdb and pandas read the files. The embedding column is written uncompressed,
without dictionary or statistics: it does not compress, and a scan then costs a copy, not a decode.

Each file carries, in its Parquet key-value metadata, the encoder fingerprint digest, the sha256 of its
source shard and that shard's rejects: a rerun keeps a file whose metadata matches (atomic writes mean a
file that exists is complete) and rebuilds `index.json` and `rejects.jsonl` from the files alone.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from bioscan_stream.constants import LABEL_COLUMNS
from bioscan_stream.storage import is_s3, join_url, open_url, read_bytes, url_exists

__all__ = [
    "EMBEDDING",
    "LABEL_CODE_COLUMNS",
    "EmbeddingTable",
    "StoreFile",
    "check_store_file",
    "iter_embeddings",
    "read_embeddings",
    "read_store_index",
    "store_file_name",
    "write_store_file",
]

STORE_FORMAT = "bioscan-embeddings"
STORE_VERSION = 1
INDEX_FILE = "index.json"
REJECTS_FILE = "rejects.jsonl"
EMBEDDING = "embedding"
#: Key of the per-file metadata (JSON) in the Parquet footer.
FILE_META_KEY = b"bioscan_embeddings"
LABEL_CODE_COLUMNS: tuple[str, ...] = tuple(f"{name}_code" for name in LABEL_COLUMNS)
ID_COLUMNS: tuple[str, ...] = ("processid", "split")
DTYPES = {"float16": pa.float16(), "float32": pa.float32()}


@dataclass(frozen=True)
class StoreFile:
    """One written store file: its path relative to the store, rows, bytes and sha256."""

    path: str
    rows: int
    bytes: int
    sha256: str
    meta: dict[str, Any]


def store_file_name(shard_path: str) -> str:
    """`train/train-000003.tar` -> `train/train-000003.parquet` (names follow the input shards)."""
    stem = shard_path.rsplit(".tar", 1)[0] if shard_path.endswith(".tar") else shard_path
    return f"{stem}.parquet"


def embedding_array(vectors: np.ndarray, dtype: str) -> pa.FixedSizeListArray:
    """`(n, dim)` floats -> a fixed-size-list column of `dtype` (float16 / float32)."""
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {sorted(DTYPES)}, not {dtype!r}")
    flat = np.ascontiguousarray(vectors, dtype=np.dtype(dtype)).reshape(-1)
    return pa.FixedSizeListArray.from_arrays(pa.array(flat), int(vectors.shape[1]))


def write_store_file(
    store: str, path: str, labels: pa.Table, vectors: np.ndarray, *, dtype: str, meta: dict
) -> StoreFile:
    """Write `labels` + `vectors` (row-aligned) as `store/path` atomically; `meta` goes into the footer."""
    if labels.num_rows != len(vectors):
        raise ValueError(f"{path}: {labels.num_rows} label rows but {len(vectors)} vectors")
    table = labels.append_column(EMBEDDING, embedding_array(vectors, dtype))
    table = table.replace_schema_metadata({FILE_META_KEY: json.dumps(meta, sort_keys=True).encode()})
    sink = io.BytesIO()
    pq.write_table(
        table,
        sink,
        compression={name: ("none" if name == EMBEDDING else "zstd") for name in table.column_names},
        use_dictionary=[name for name in table.column_names if name != EMBEDDING],
        write_statistics=[name for name in table.column_names if name != EMBEDDING],
        row_group_size=1 << 20,
    )
    data = sink.getvalue()
    with open_url(join_url(store, path), "wb") as out:
        out.write(data)
    return StoreFile(path, labels.num_rows, len(data), hashlib.sha256(data).hexdigest(), meta)


def check_store_file(store: str, path: str, expected: dict[str, Any]) -> StoreFile | None:
    """The existing file `store/path` if its footer metadata has every `expected` item, else None."""
    url = join_url(store, path)
    if not url_exists(url):
        return None
    data = read_bytes(url)
    try:
        parquet = pq.ParquetFile(pa.BufferReader(data))
        raw = (parquet.schema_arrow.metadata or {}).get(FILE_META_KEY)
        meta = json.loads(raw) if raw else {}
    except (pa.ArrowInvalid, OSError, ValueError):
        return None
    if any(meta.get(key) != value for key, value in expected.items()):
        return None
    return StoreFile(path, parquet.metadata.num_rows, len(data), hashlib.sha256(data).hexdigest(), meta)


def read_store_index(store: str) -> dict[str, Any]:
    """The store's `index.json` (FileNotFoundError names the store when it is not a finished store)."""
    url = join_url(store, INDEX_FILE)
    if not url_exists(url):
        raise FileNotFoundError(f"{store}: no {INDEX_FILE}: not an embedding store, or its job has not finished")
    index = json.loads(read_bytes(url))
    if index.get("format") != STORE_FORMAT:
        raise ValueError(f"{url}: format {index.get('format')!r} is not {STORE_FORMAT!r}")
    return dict(index)


@dataclass
class EmbeddingTable:
    """Vectors `(n, dim)` and their row-aligned columns (processid, split, labels: a pyarrow table)."""

    vectors: np.ndarray
    columns: pa.Table

    def __len__(self) -> int:
        return len(self.vectors)

    def codes(self, rank: str) -> np.ndarray:
        """Integer codes of `rank` (`species`, `genus`, ..., `dna_bin`), -1 = missing."""
        return self.columns.column(f"{rank}_code").to_numpy()

    def strings(self, name: str) -> np.ndarray:
        """A string column (`processid`, `split`, a rank) as a numpy object array."""
        return np.asarray(self.columns.column(name).to_pylist(), dtype=object)


def _files(index: dict[str, Any], splits: Sequence[str] | None) -> list[str]:
    wanted = list(index["splits"]) if splits is None else list(splits)
    missing = [s for s in wanted if s not in index["splits"]]
    if missing:
        raise KeyError(f"splits {missing} are not in the store (it has {list(index['splits'])})")
    return [f["path"] for split in wanted for f in index["splits"][split]["files"]]


def _read_table(url: str, columns: list[str] | None) -> pa.Table:
    if is_s3(url):
        return pq.read_table(pa.BufferReader(read_bytes(url)), columns=columns)
    return pq.read_table(url, columns=columns, memory_map=True)


def _split_vectors(table: pa.Table, dim: int, dtype: np.dtype | None) -> EmbeddingTable:
    """Flat values of the fixed-size-list column, reshaped without a per-row Python object."""
    column = table.column(EMBEDDING)
    chunks = [c.values.to_numpy(zero_copy_only=False) for c in column.chunks if len(c)]
    flat = np.concatenate(chunks) if len(chunks) != 1 else chunks[0]
    vectors = flat.reshape(-1, dim) if flat.size else np.zeros((0, dim), np.float16)
    if dtype is not None:
        vectors = vectors.astype(dtype, copy=False)
    return EmbeddingTable(vectors, table.drop_columns([EMBEDDING]))


def _projection(columns: Sequence[str] | None) -> list[str] | None:
    return None if columns is None else list(dict.fromkeys([*columns, EMBEDDING]))


def read_embeddings(
    store: str, *, splits: Sequence[str] | None = None, columns: Sequence[str] | None = None, dtype: Any = None
) -> EmbeddingTable:
    """All rows of `splits` (default: all, in store order) as one `EmbeddingTable`.

    Args:
        store: store folder or `s3://` prefix.
        splits: splits to read, in this order.
        columns: non-embedding columns to read (default: all).
        dtype: cast the vectors (e.g. `np.float32`); None keeps the stored dtype.
    """
    index = read_store_index(store)
    urls = [join_url(store, path) for path in _files(index, splits)]
    project = _projection(columns)
    tables = [_read_table(url, project) for url in urls]
    if not tables:
        empty = pa.table({name: pa.array([], pa.string()) for name in (columns or ID_COLUMNS)})
        return EmbeddingTable(np.zeros((0, index["dim"]), dtype or np.float16), empty)
    return _split_vectors(pa.concat_tables(tables), index["dim"], np.dtype(dtype) if dtype else None)


def iter_embeddings(
    store: str, *, splits: Sequence[str] | None = None, columns: Sequence[str] | None = None, dtype: Any = None
) -> Iterator[EmbeddingTable]:
    """The same rows one store file at a time: memory bounded by the largest file, not the store."""
    index = read_store_index(store)
    project = _projection(columns)
    for path in _files(index, splits):
        table = _read_table(join_url(store, path), project)
        yield _split_vectors(table, index["dim"], np.dtype(dtype) if dtype else None)
