"""The store reader's one-copy path (zoo.embedding.plainpages) gives pyarrow's bytes, and falls back when it must."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from helpers_store import write_test_store

from zoo.embedding.plainpages import NotPlain, read_plain_column
from zoo.embedding.store import EMBEDDING, embedding_array, read_embeddings, read_store_table, vector_view


def _vectors(n: int, dim: int, dtype: str = "float16") -> np.ndarray:
    return np.random.default_rng(n + dim).standard_normal((n, dim)).astype(dtype)


def _pyarrow_vectors(path: Path, dim: int) -> np.ndarray:
    return np.asarray(vector_view(read_store_table(str(path), [EMBEDDING]).column(EMBEDDING), dim))


@pytest.mark.parametrize("dtype", ["float16", "float32"])
def test_store_reads_the_same_vectors_and_columns_as_pyarrow(tmp_path: Path, dtype: str) -> None:
    vectors = _vectors(2_500, 96, dtype)
    ids = [f"P{i:05d}" for i in range(len(vectors))]
    splits = ["train"] * 1_000 + ["test"] * 1_500
    write_test_store(tmp_path, vectors, ids, splits, storage=(dtype, "binary"), rows_per_file=700)
    table = read_embeddings(str(tmp_path), splits=["test", "train"])
    expected = np.concatenate([vectors[1_000:], vectors[:1_000]])
    assert table.vectors.dtype == np.dtype(dtype) and np.array_equal(table.vectors, expected)
    assert table.strings("processid").tolist() == ids[1_000:] + ids[:1_000]
    only = read_embeddings(str(tmp_path), columns=[])
    assert np.array_equal(only.vectors, vectors) and only.columns.num_columns == 0 and len(only) == len(vectors)
    assert np.array_equal(read_embeddings(str(tmp_path), dtype=np.float32).vectors, vectors.astype(np.float32))


def test_many_pages_and_row_groups_are_walked(tmp_path: Path) -> None:
    vectors = _vectors(3_000, 64)
    table = pa.table({"processid": [str(i) for i in range(len(vectors))]})
    column = embedding_array(vectors, "float16")
    table = table.append_column(pa.field(EMBEDDING, column.type, nullable=False), column)
    path = tmp_path / "pages.parquet"
    pq.write_table(table, path, compression="none", use_dictionary=False, write_statistics=False,
                   data_page_size=16 << 10, row_group_size=1_100)  # fmt: skip
    metadata = pq.read_metadata(path)
    assert metadata.num_row_groups == 3
    out = np.empty_like(vectors)
    with open(path, "rb") as file:
        read_plain_column(file, metadata, EMBEDDING, out)
    assert np.array_equal(out, vectors) and np.array_equal(_pyarrow_vectors(path, 64), vectors)


@pytest.mark.parametrize(
    ("nullable", "options"),
    [(True, {"compression": "none", "use_dictionary": False}),  # definition levels before the values
     (False, {"compression": "zstd", "use_dictionary": False}),
     (False, {"compression": "none", "use_dictionary": True}),
     (False, {"compression": "none", "use_dictionary": False, "write_statistics": True})],  # a long header
)  # fmt: skip
def test_other_column_chunks_are_refused_and_the_store_falls_back(
    tmp_path: Path, nullable: bool, options: dict[str, object]
) -> None:
    vectors = _vectors(500, 512)  # 1 KB values: statistics make the page header longer than the reader's peek
    column = embedding_array(vectors, "float16")
    table = pa.table({"processid": [str(i) for i in range(len(vectors))]})
    table = table.append_column(pa.field(EMBEDDING, column.type, nullable=nullable), column)
    path = tmp_path / "other.parquet"
    pq.write_table(table, path, **options)  # type: ignore[arg-type]
    with open(path, "rb") as file, pytest.raises(NotPlain):
        read_plain_column(file, pq.read_metadata(path), EMBEDDING, np.empty_like(vectors))


def test_a_store_file_from_before_the_plain_pages_reads_through_pyarrow(tmp_path: Path) -> None:
    """Files written with a nullable embedding column (stores before 2026-12-07) still read, via pyarrow."""
    vectors = _vectors(800, 32)
    write_test_store(tmp_path, vectors, [str(i) for i in range(800)], "train")
    path = tmp_path / "train" / "train-000000.parquet"
    old = pq.read_table(path)
    field = pa.field(EMBEDDING, old.schema.field(EMBEDDING).type)  # nullable
    schema = old.schema.set(old.schema.get_field_index(EMBEDDING), field)
    pq.write_table(old.cast(schema), path, compression="none", use_dictionary=False)
    with open(path, "rb") as file, pytest.raises(NotPlain):
        read_plain_column(file, pq.read_metadata(path), EMBEDDING, np.empty_like(vectors))
    assert np.array_equal(read_embeddings(str(tmp_path)).vectors, vectors)
