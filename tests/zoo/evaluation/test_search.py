"""Tests of zoo.evaluation.search: the canonical tie rule against a brute-force sort, the FAISS mode against
`faiss.IndexFlatIP` itself, the device (candidate) path against the CPU scan, on data full of exact ties."""

from __future__ import annotations

import faiss
import numpy as np
import pytest
import torch

from zoo.evaluation import search
from zoo.evaluation.search import ZeroVectorError, exact_topk, l2_normalise


def tied_data(rng: np.random.Generator, dim: int = 6) -> tuple[np.ndarray, np.ndarray]:
    """Keys drawn from a few distinct vectors (every key ties with others), queries near or on them."""
    base = rng.standard_normal((int(rng.integers(2, 10)), dim)).astype(np.float32)
    keys = l2_normalise(base[rng.integers(0, len(base), size=int(rng.integers(5, 200)))])
    queries = l2_normalise(np.concatenate([base, rng.standard_normal((7, dim)).astype(np.float32)]))
    return queries, keys


def test_canonical_order_is_score_then_key_position() -> None:
    rng = np.random.default_rng(0)
    for _ in range(30):
        queries, keys = tied_data(rng)
        scores, found = exact_topk(queries, keys, 5, device="cpu")
        exact = queries.astype(np.float64) @ keys.T.astype(np.float64)
        for q in range(len(queries)):
            expected = np.lexsort((np.arange(len(keys)), -np.round(exact[q], 12)))[:5]
            assert found[q].tolist() == expected.tolist()
            assert scores[q] == pytest.approx(exact[q][expected], abs=1e-12)


def test_faiss_mode_reproduces_index_flat_ip() -> None:
    rng = np.random.default_rng(1)
    for trial in range(40):
        queries, keys = tied_data(rng)
        if trial % 2:
            queries = np.repeat(queries, 3, axis=0)  # >= 20 queries: FAISS's BLAS path
        index = faiss.IndexFlatIP(keys.shape[1])
        index.add(keys)
        _, expected = index.search(queries, 5)
        assert (exact_topk(queries, keys, 5, tie="faiss", device="cpu")[1] == expected).all()


def test_device_candidate_path_equals_the_cpu_scan(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(search, "_KEY_BLOCK", 7)
    monkeypatch.setattr(search, "_QUERY_BLOCK", 5)
    rng = np.random.default_rng(2)
    for _ in range(100):
        queries, keys = tied_data(rng, dim=4)
        eps = search.score_tolerance(queries, keys)
        for faiss_mode in (False, True):
            cpu = (np.full((len(queries), 5), -np.inf), np.full((len(queries), 5), -1, np.int64))
            dev = (cpu[0].copy(), cpu[1].copy())
            search._search_cpu(torch.from_numpy(queries), torch.from_numpy(keys), cpu, eps, faiss_mode)
            search._search_device(torch.from_numpy(queries), torch.from_numpy(keys), dev, eps, faiss_mode, "cpu")
            assert (cpu[1] == dev[1]).all()


@pytest.mark.quick
def test_bad_input_is_a_clear_error() -> None:
    with pytest.raises(ZeroVectorError, match=r"keys: 1 embedding\(s\).*row 1"):
        l2_normalise(np.array([[1.0, 0.0], [0.0, 0.0]]), name="keys")
    with pytest.raises(ZeroVectorError, match="non-finite"):
        l2_normalise(np.array([[np.nan, 1.0]]))
    with pytest.raises(ValueError, match="same dimension"):
        exact_topk(np.ones((2, 3), np.float32), np.ones((4, 2), np.float32))
    with pytest.raises(ValueError, match="k=5 needs"):
        exact_topk(np.ones((2, 2), np.float32), np.ones((4, 2), np.float32))
    with pytest.raises(ValueError, match="tie must be one of"):
        exact_topk(np.ones((2, 2), np.float32), np.ones((8, 2), np.float32), tie="random")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_gpu_equals_cpu() -> None:
    rng = np.random.default_rng(3)
    queries, keys = tied_data(rng, dim=64)
    for tie in ("canonical", "faiss"):
        assert (
            exact_topk(queries, keys, 5, tie=tie, device="cuda")[1] == exact_topk(queries, keys, 5, tie=tie)[1]
        ).all()
