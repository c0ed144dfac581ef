"""Global label vocabularies (release -> metadata -> **vocab** -> shards/targets -> zoo).

The official loader reads each rank and `dna_bin` as a pandas Categorical over the **whole** CSV
before any split filter: codes follow the lexically sorted categories (code-point order), identical in
every split, -1 for missing. Building the vocabularies over the whole table and encoding with them
reproduces those indices exactly; the codes are int64 at the boundary to torch.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from bioscan_stream._atomic import atomic_path
from bioscan_stream.constants import LABEL_COLUMNS

MISSING = -1


def build_vocabulary(column: pa.Array | pa.ChunkedArray) -> list[str]:
    """Distinct non-missing values of one column, sorted by code point (as pandas sorts categories)."""
    values = pc.drop_null(pc.unique(column.cast(pa.string())))
    values = values.filter(pc.not_equal(values, ""))  # "" is missing in the release format
    return values.take(pc.sort_indices(values)).to_pylist()


def build_vocabularies(table: pa.Table) -> dict[str, list[str]]:
    """Vocabulary of every label column (`constants.LABEL_COLUMNS`) present in `table`, over all its rows."""
    return {name: build_vocabulary(table[name]) for name in LABEL_COLUMNS if name in table.column_names}


def encode_labels(column: pa.Array | pa.ChunkedArray | Sequence[str | None], vocabulary: Sequence[str]) -> np.ndarray:
    """Codes of `column` in `vocabulary` as int64; -1 for missing values and values not in it.

    >>> encode_labels(["Diptera", None, "Coleoptera"], ["Coleoptera", "Diptera"]).tolist()
    [1, -1, 0]
    """
    if not isinstance(column, pa.Array | pa.ChunkedArray):
        column = pa.array(column, pa.string())
    codes = pc.index_in(column.cast(pa.string()), value_set=pa.array(vocabulary, pa.string()))
    return np.asarray(pc.fill_null(codes, MISSING).to_numpy(), dtype=np.int64)


def save_vocabularies(vocabularies: dict[str, list[str]], path: str | os.PathLike[str]) -> Path:
    """Write vocabularies as JSON (atomic), so that every shard set and model agrees on the codes."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(vocabularies, ensure_ascii=False, indent=1), encoding="utf-8")
    return Path(path)


def load_vocabularies(path: str | os.PathLike[str]) -> dict[str, list[str]]:
    """Read vocabularies written by `save_vocabularies`."""
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    if not isinstance(data, dict) or not all(isinstance(v, list) for v in data.values()):
        raise ValueError(f"{path}: not a vocabulary file (expected an object of lists)")
    return {str(k): [str(x) for x in v] for k, v in data.items()}
