"""Retrieval through an ANN index, scored against exact search (indices -> **ANN check** -> retrieval report).

The evaluation itself always uses exact search; an approximate index (a folder `bioscan-stream index` wrote:
`index.faiss`, `ids.parquet` row -> processid, `index.json`) is checked here by running the same protocol
through it and reporting the change per rank, so a user sees what the index costs in accuracy. The index is
searched with `zoo.indices.search`, i.e. with its tuned `nprobe` / `efSearch` and PQ re-rank, exactly as a
user of the index gets it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import numpy as np

from bioscan_stream.storage import join_url, read_bytes
from zoo.evaluation.search import l2_normalise
from zoo.evaluation.stores import LabelledVectors, StoreRef

__all__ = ["EncoderMismatchError", "compare_with_index", "index_neighbours"]


class EncoderMismatchError(ValueError):
    """The index was built from another encoder's embeddings than the key store it is evaluated with."""


def _check_encoder(folder: str, ref: StoreRef) -> None:
    meta = json.loads(read_bytes(join_url(folder, "index.json")))
    digest = str(meta.get("encoder_sha256"))
    if digest != ref.encoder_sha256:
        raise EncoderMismatchError(
            f"index {folder} was built from encoder {digest[:12]}..., but store {ref.url} holds embeddings of "
            f"encoder {ref.encoder_sha256[:12]}... ({ref.model}): rebuild the index from this store"
        )


def index_neighbours(folder: str, ref: StoreRef, keys: LabelledVectors, queries: np.ndarray, k: int) -> np.ndarray:
    """Top-k of `queries` in the index of `folder`, as positions in `keys` (-1 where it returned none).

    The index must come from the key store's encoder, and every row of it must be a key (an index built
    over other splits would leak queries into the keys).
    """
    from zoo.indices import search

    _check_encoder(folder, ref)
    found = search(folder, np.ascontiguousarray(queries, dtype=np.float32), k)
    position = {pid: i for i, pid in enumerate(keys.processids)}
    flat = [position.get(pid, -2) if pid is not None else -1 for pid in found.ids.reshape(-1).tolist()]
    rows = np.asarray(flat, dtype=np.int64).reshape(found.ids.shape)
    if (rows == -2).any():
        example = found.ids.reshape(-1)[np.flatnonzero(rows.reshape(-1) == -2)[0]]
        raise ValueError(f"index {folder} holds rows that are not keys (e.g. {example}): build it from the key splits")
    return rows


def _subtract(a: Any, b: Any) -> Any:
    if isinstance(a, dict):
        return {key: _subtract(a[key], b[key]) for key in a}
    return float(a) - float(b)


def compare_with_index(
    folder: str, ref: StoreRef, keys: LabelledVectors, queries: Mapping[str, LabelledVectors], exact: dict[str, Any]
) -> dict[str, Any]:
    """The protocol's grid through the index, and its change vs the `exact` grid (ann - exact, same layout)."""
    from zoo.evaluation.retrieval import TOP_K, grid_from_neighbours

    neighbours = {
        part: index_neighbours(folder, ref, keys, l2_normalise(t.vectors, name=f"{part} queries"), max(TOP_K))
        for part, t in queries.items()
    }
    grid = grid_from_neighbours(keys, queries, neighbours)
    return {"index": folder, "grid": grid, "change_vs_exact": _subtract(grid, exact)}
