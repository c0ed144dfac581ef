"""Exact top-k inner-product search with a defined tie rule (embedding store -> **exact search** -> retrieval).

Why not `faiss.IndexFlatIP` or `torch.topk`: `torch.topk` leaves the order of exactly tied keys undefined, and
ties are common here (identical barcodes embed to identical vectors, so every copy of a barcode ties). The
retrieval protocol (evaluation.md §1) fixes the rule, and this module implements it exactly:

- `canonical`: decreasing score, exact ties broken by increasing key position;
- `faiss`: what `IndexFlatIP.search(q, k)` returns, for checkpoint-era compatibility. FAISS scans keys in
  order through a size-k min-heap: a key enters only when strictly above the heap's minimum score, the evicted
  member is the minimum by (score, id), and results come out by decreasing (score, id), so tied keys appear in
  decreasing id order. Which tied keys survive depends on the scan, which is replayed here step by step.

Scores come from blocked float32 matmul (torch: MKL on CPU, cuBLAS on GPU, TF32 off), then a numba kernel
scans each score block once per query keeping a sorted top-k list with the running k-th score as threshold:
one compare per score, no sort and no temporary arrays, so selection costs a few percent of the matmul.
On GPU only each block's top-k candidates (ties at the k-th score included) leave the device and go through
the same sequential update, which gives the same result (tested against the full scan on tie-heavy data).
"""

from __future__ import annotations

from collections.abc import Iterator

import numba
import numpy as np
import torch

__all__ = ["TIE_MODES", "ZeroVectorError", "block_candidates", "exact_topk", "l2_normalise"]

TIE_MODES = ("canonical", "faiss")
#: Rows x columns of one score block: 4096 x 16384 float32 = 256 MiB, large enough for sgemm to run near peak.
_QUERY_BLOCK = 4096
_KEY_BLOCK = 16384


class ZeroVectorError(ValueError):
    """An embedding of norm 0 (or not finite): cosine similarity is undefined for it."""


def l2_normalise(vectors: np.ndarray, *, name: str = "vectors", ids: np.ndarray | None = None) -> np.ndarray:
    """Float32 rows scaled to unit norm; `ZeroVectorError` names the rows that are zero or not finite."""
    out = np.array(vectors, dtype=np.float32, copy=True, order="C")
    norms = np.sqrt(np.einsum("ij,ij->i", out, out, dtype=np.float64))
    bad = np.flatnonzero(~np.isfinite(norms) | (norms == 0))
    if bad.size:
        shown = [str(ids[i]) if ids is not None else f"row {i}" for i in bad[:5]]
        raise ZeroVectorError(
            f"{name}: {bad.size} embedding(s) with zero norm or non-finite values ({', '.join(shown)}"
            f"{', ...' if bad.size > 5 else ''}); cosine similarity is undefined for them"
        )
    out /= norms[:, None].astype(np.float32)
    return out


@numba.njit(inline="always")
def _dot(a: np.ndarray, b: np.ndarray) -> float:
    """Float64 dot product summed in index order: the same value for the same pair wherever it sits."""
    total = 0.0
    for t in range(a.shape[0]):
        total += np.float64(a[t]) * np.float64(b[t])
    return total


@numba.njit(inline="always")
def _offer(row_s: np.ndarray, row_i: np.ndarray, score: float, key: int, faiss_mode: bool) -> None:
    """Insert (score, key) into one sorted top-k row if it enters; `key` exceeds every id already there."""
    p = row_s.shape[0] - 1
    if not score > row_s[p]:
        return
    while p > 0 and (row_s[p - 1] < score or (faiss_mode and row_s[p - 1] == score)):
        row_s[p] = row_s[p - 1]
        row_i[p] = row_i[p - 1]
        p -= 1
    row_s[p] = score
    row_i[p] = key


@numba.njit(parallel=True, cache=True)
def _scan_block(
    block: np.ndarray, queries: np.ndarray, keys: np.ndarray, offset: int, state: tuple, eps: float, faiss_mode: bool
) -> None:
    """Update each query's top-k with one block of float32 scores (columns = keys offset, offset + 1, ...).

    A score within `eps` of the running k-th is recomputed exactly (`_dot`) before it may enter.
    """
    top_s, top_i = state
    k = top_s.shape[1]
    for q in numba.prange(block.shape[0]):
        row_s, row_i = top_s[q], top_i[q]
        low = row_s[k - 1] - eps
        for j in range(block.shape[1]):
            if block[q, j] >= low:
                _offer(row_s, row_i, _dot(queries[q], keys[j]), offset + j, faiss_mode)
                low = row_s[k - 1] - eps


@numba.njit(cache=True)
def _scan_candidates(
    candidates: tuple, queries: np.ndarray, keys: np.ndarray, offset: int, state: tuple, eps: float, faiss_mode: bool
) -> None:
    """The same update from (row, column, score) candidates sorted by row then column."""
    rows, cols, values = candidates
    top_s, top_i = state
    k = top_s.shape[1]
    for t in range(rows.shape[0]):
        q, j = rows[t], cols[t]
        if values[t] >= top_s[q, k - 1] - eps:
            _offer(top_s[q], top_i[q], _dot(queries[q], keys[j]), offset + j, faiss_mode)


def _blocks(n: int, size: int) -> Iterator[tuple[int, int]]:
    for start in range(0, n, size):
        yield start, min(n, start + size)


def _check(queries: np.ndarray, keys: np.ndarray, k: int, tie: str) -> None:
    if tie not in TIE_MODES:
        raise ValueError(f"tie must be one of {TIE_MODES}, not {tie!r}")
    if queries.ndim != 2 or keys.ndim != 2 or queries.shape[1] != keys.shape[1]:
        raise ValueError(f"queries {queries.shape} and keys {keys.shape} must be 2-D with the same dimension")
    if not 1 <= k <= len(keys):
        raise ValueError(f"k={k} needs 1 <= k <= number of keys ({len(keys)})")


def _search_cpu(
    q: torch.Tensor, keys: torch.Tensor, state: tuple[np.ndarray, np.ndarray], eps: float, faiss: bool
) -> None:
    buffers: dict[tuple[int, int], torch.Tensor] = {}
    q_np, keys_np = q.numpy(), keys.numpy()
    for q0, q1 in _blocks(len(q), _QUERY_BLOCK):
        rows = (state[0][q0:q1], state[1][q0:q1])
        for k0, k1 in _blocks(len(keys), _KEY_BLOCK):
            out = buffers.setdefault((q1 - q0, k1 - k0), torch.empty((q1 - q0, k1 - k0), dtype=torch.float32))
            torch.mm(q[q0:q1], keys[k0:k1].T, out=out)
            _scan_block(out.numpy(), q_np[q0:q1], keys_np[k0:k1], k0, rows, eps, faiss)


def block_candidates(scores: torch.Tensor, k: int, eps: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(row, column, score) of every entry within `eps` of its row's k-th largest score or above, row-major:
    the only entries of a block that can enter a top-k (near-ties included, so the tie rule still decides)."""
    kth = torch.topk(scores, min(k, scores.shape[1]), dim=1).values[:, -1:]
    rows, cols = torch.nonzero(scores >= kth - eps, as_tuple=True)
    values = scores[rows, cols]
    return rows.cpu().numpy(), cols.cpu().numpy(), values.cpu().numpy()


def _search_device(
    q: torch.Tensor, keys: torch.Tensor, state: tuple[np.ndarray, np.ndarray], eps: float, faiss: bool, device: str
) -> None:
    keys_dev, q_np, keys_np = keys.to(device), q.numpy(), keys.numpy()
    for q0, q1 in _blocks(len(q), _QUERY_BLOCK):
        q_dev, rows = q[q0:q1].to(device), (state[0][q0:q1], state[1][q0:q1])
        for k0, k1 in _blocks(len(keys), _KEY_BLOCK):
            candidates = block_candidates(q_dev @ keys_dev[k0:k1].T, state[0].shape[1], eps)
            _scan_candidates(candidates, q_np[q0:q1], keys_np[k0:k1], k0, rows, eps, faiss)


def score_tolerance(queries: np.ndarray, keys: np.ndarray) -> float:
    """A bound on |float32 matmul score - exact score|: 2 d u max|q| max|k| (u = 2^-24, the float32 unit
    roundoff; the classic d u bound of a length-d dot product, doubled for margin)."""
    norm_q = float(np.sqrt(np.einsum("ij,ij->i", queries, queries).max(initial=0.0)))
    norm_k = float(np.sqrt(np.einsum("ij,ij->i", keys, keys).max(initial=0.0)))
    return 2.0 * queries.shape[1] * 2.0**-24 * norm_q * norm_k


def exact_topk(
    queries: np.ndarray, keys: np.ndarray, k: int = 5, *, tie: str = "canonical", device: str | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The k best keys of every query by inner product, ordered by the `tie` rule (see the module docstring).

    Float32 matmul finds the candidates; each candidate within the float32 error bound of the running k-th
    score is rescored exactly (float64, fixed order), so identical keys always get identical scores and the
    tie rule sees true ties (a BLAS kernel may round the same dot product differently at different columns).

    Args:
        queries: `(nq, dim)` float32 (L2-normalise first for cosine: `l2_normalise`).
        keys: `(nk, dim)` float32.
        k: neighbours per query.
        tie: `canonical` (ties by increasing key position) or `faiss` (IndexFlatIP's order).
        device: `cpu`, `cuda`, ... (None: `cuda` when available).

    Returns:
        exact scores `(nq, k)` float64 and key positions `(nq, k)` int64, best first.
    """
    _check(queries, keys, k, tie)
    state = (np.full((len(queries), k), -np.inf), np.full((len(queries), k), -1, dtype=np.int64))
    q = torch.from_numpy(np.ascontiguousarray(queries, dtype=np.float32))
    key_t = torch.from_numpy(np.ascontiguousarray(keys, dtype=np.float32))
    eps = score_tolerance(q.numpy(), key_t.numpy())
    target = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if torch.device(target).type == "cpu":
        _search_cpu(q, key_t, state, eps, tie == "faiss")
        return state
    previous = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False  # NOTE: TF32 keeps 10 mantissa bits: too coarse for the bound
    try:
        _search_device(q, key_t, state, eps, tie == "faiss", target)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = previous
    return state
