"""The embedding store: one Parquet file per input shard + `index.json` (embedding job -> **store** -> indices).

Layout of a store folder (local or `s3://`):

    index.json                       encoder fingerprint, dim, dtype, transform, counts, per-file sha256
    rejects.jsonl                    {processid, split, shard, reason} per input sample that has no row
    <split>/<split>-NNNNNN.parquet   rows of input shard <split>/<split>-NNNNNN.tar, in the shard's order

Columns: `processid`, `split`, the seven ranks and `dna_bin` as strings, their global codes (`<rank>_code`,
-1 = missing, from the shard set's vocabularies) and `embedding`, float16 (default) or float32, in one of two
layouts (`index.json` names it):

- `binary` (default): `fixed_size_binary(dim * itemsize)`, each row the vector's little-endian bytes. A
  Parquet fixed-size list is a nested column whose repetition/definition levels are decoded per element:
  pyarrow 26 reads it at 0.27-0.39 GB/s here against 3-4.4 GB/s for the same bytes as fixed-size binary
  (200k x 768, page cache, 2026-12). `np.frombuffer` of the column's data buffer is the whole decode;
- `list`: `fixed_size_list<float16|float32>[dim]`, for SQL users (duckdb's `array_cosine_similarity`, ...)
  at ~10x the read cost.

The embedding column is written uncompressed, without dictionary or statistics, and REQUIRED: it does not
compress, and every data page is then the vectors' bytes as they are, which a local scan copies from the file
straight into the result (`zoo.embedding.plainpages`: one copy, like `np.load`, where pyarrow's decode and
the copy out of its buffers made two). Plain pyarrow, duckdb and pandas read every file.

Each file carries, in its Parquet key-value metadata, the encoder fingerprint digest, the sha256 of its
source shard and that shard's rejects: a rerun keeps a file whose metadata matches (atomic writes mean a
file that exists is complete) and rebuilds `index.json` and `rejects.jsonl` from the files alone.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from bioscan_stream.constants import LABEL_COLUMNS
from bioscan_stream.storage import is_s3, join_url, open_url, read_bytes, url_exists
from zoo.embedding.plainpages import NotPlain, read_plain_column

__all__ = [
    "EMBEDDING",
    "LABEL_CODE_COLUMNS",
    "EmbeddingTable",
    "StoreFile",
    "check_store_file",
    "iter_embeddings",
    "read_embeddings",
    "read_store_index",
    "read_store_table",
    "vector_view",
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
LAYOUTS = ("binary", "list")
#: Threads that read store files side by side (pyarrow decodes with the GIL released).
_READ_THREADS = 4


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


def embedding_array(vectors: np.ndarray, dtype: str, layout: str = "binary") -> pa.Array:
    """`(n, dim)` floats -> the embedding column of `dtype` (float16 / float32) in `layout` (see the module doc)."""
    if dtype not in DTYPES or layout not in LAYOUTS:
        raise ValueError(f"dtype must be one of {sorted(DTYPES)} and layout one of {LAYOUTS}: {dtype!r}, {layout!r}")
    rows = np.ascontiguousarray(vectors, dtype=np.dtype(dtype).newbyteorder("<"))
    if layout == "list":
        return pa.FixedSizeListArray.from_arrays(pa.array(rows.reshape(-1)), int(vectors.shape[1]))
    width = rows.shape[1] * rows.itemsize
    return pa.Array.from_buffers(pa.binary(width), len(rows), [None, pa.py_buffer(rows.tobytes())])


def write_store_file(
    store: str, path: str, labels: pa.Table, vectors: np.ndarray, *, dtype: str, meta: dict, layout: str = "binary"
) -> StoreFile:
    """Write `labels` + `vectors` (row-aligned) as `store/path` atomically; `meta` goes into the footer."""
    if labels.num_rows != len(vectors):
        raise ValueError(f"{path}: {labels.num_rows} label rows but {len(vectors)} vectors")
    embedding = embedding_array(vectors, dtype, layout)
    # REQUIRED (no definition levels): each data page is the vectors' bytes, which the reader copies as they are
    table = labels.append_column(pa.field(EMBEDDING, embedding.type, nullable=False), embedding)
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


def _entries(index: dict[str, Any], splits: Sequence[str] | None) -> list[dict[str, Any]]:
    wanted = list(index["splits"]) if splits is None else list(splits)
    missing = [s for s in wanted if s not in index["splits"]]
    if missing:
        raise KeyError(f"splits {missing} are not in the store (it has {list(index['splits'])})")
    return [f for split in wanted for f in index["splits"][split]["files"]]


def read_store_table(url: str, columns: list[str] | None) -> pa.Table:
    """One store file (local: memory-mapped; S3: one GET), only `columns`."""
    if is_s3(url):
        return pq.read_table(pa.BufferReader(read_bytes(url)), columns=columns)
    return pq.read_table(url, columns=columns, memory_map=True)


def vector_view(column: pa.ChunkedArray, dim: int) -> np.ndarray:
    """The vectors of one file's embedding column as a numpy view of its buffers (either layout)."""
    parts = []
    for chunk in column.chunks:
        if pa.types.is_fixed_size_binary(chunk.type):
            dtype = np.dtype("<f2") if chunk.type.byte_width == 2 * dim else np.dtype("<f4")
            data = np.frombuffer(chunk.buffers()[1], dtype=dtype)
            parts.append(data[chunk.offset * dim : (chunk.offset + len(chunk)) * dim])
        else:
            parts.append(chunk.values.to_numpy(zero_copy_only=False)[: len(chunk) * dim])
    flat = parts[0] if len(parts) == 1 else np.concatenate(parts)
    return flat.reshape(-1, dim)


def _projection(columns: Sequence[str] | None) -> list[str] | None:
    return None if columns is None else list(dict.fromkeys([*columns, EMBEDDING]))


def _stored_dtype(index: dict[str, Any], dtype: Any) -> np.dtype:
    return np.dtype(dtype) if dtype is not None else np.dtype(index["dtype"])


def _read_plain(path: str, project: list[str] | None, rows: np.ndarray) -> pa.Table | None:
    """A local file's vectors copied from disk straight into `rows` (`plainpages`), and its other columns; None
    when its embedding column is not plain pages of `rows`' width (stores written before 2026-12-07)."""
    with open(path, "rb") as file:
        metadata = pq.read_metadata(file)
        if metadata.num_rows != len(rows):
            raise ValueError(f"{path}: {metadata.num_rows} rows, index.json says {len(rows)}")
        try:
            read_plain_column(file, metadata, EMBEDDING, rows)
        except NotPlain:
            return None
    others = [name for name in (project or metadata.schema.names) if name != EMBEDDING]
    return read_store_table(path, others)


def read_embeddings(
    store: str, *, splits: Sequence[str] | None = None, columns: Sequence[str] | None = None, dtype: Any = None
) -> EmbeddingTable:
    """All rows of `splits` (default: all, in store order) as one `EmbeddingTable`.

    Files are read by a few threads side by side; each one's vectors are copied once, straight into their
    rows of the result (no per-row Python object, no concatenation pass).

    Args:
        store: store folder or `s3://` prefix.
        splits: splits to read, in this order.
        columns: non-embedding columns to read (default: all).
        dtype: cast the vectors (e.g. `np.float32`); None keeps the stored dtype.
    """
    index = read_store_index(store)
    entries = _entries(index, splits)
    dim, out_dtype, project = int(index["dim"]), _stored_dtype(index, dtype), _projection(columns)
    starts = np.cumsum([0] + [int(e["rows"]) for e in entries])
    vectors = np.empty((int(starts[-1]), dim), out_dtype)

    def read_one(i: int) -> pa.Table:
        url, rows = join_url(store, entries[i]["path"]), vectors[starts[i] : starts[i + 1]]
        if not is_s3(url) and out_dtype == np.dtype(index["dtype"]) and index.get("layout", "binary") == "binary":
            table = _read_plain(url, project, rows)
            if table is not None:
                return table
        table = read_store_table(url, project)
        if table.num_rows != len(rows):
            raise ValueError(f"{entries[i]['path']}: {table.num_rows} rows, index.json says {entries[i]['rows']}")
        rows[:] = vector_view(table.column(EMBEDDING), dim)
        return table.drop_columns([EMBEDDING])

    with ThreadPoolExecutor(_READ_THREADS) as pool:
        tables = list(pool.map(read_one, range(len(entries))))
    if not tables:
        names = list(columns) if columns is not None else list(ID_COLUMNS)
        return EmbeddingTable(vectors, pa.table({name: pa.array([], pa.string()) for name in names}))
    return EmbeddingTable(vectors, pa.concat_tables(tables))


def iter_embeddings(
    store: str, *, splits: Sequence[str] | None = None, columns: Sequence[str] | None = None, dtype: Any = None
) -> Iterator[EmbeddingTable]:
    """The same rows one store file at a time: memory bounded by the largest file, not the store."""
    index = read_store_index(store)
    project, out_dtype = _projection(columns), _stored_dtype(index, dtype)
    for entry in _entries(index, splits):
        table = read_store_table(join_url(store, entry["path"]), project)
        vectors = vector_view(table.column(EMBEDDING), int(index["dim"])).astype(out_dtype, copy=False)
        yield EmbeddingTable(vectors, table.drop_columns([EMBEDDING]))
