"""Tests of zoo.evaluation.retrieval: the golden example of evaluation.md §1 in both tie modes, metric edge
cases, and clear errors on bad input (zero vectors, embedding widths that differ, unknown stores)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from helpers_store import write_test_store

from zoo.evaluation.retrieval import (
    DimensionMismatchError,
    RetrievalConfig,
    evaluate_retrieval,
    harmonic_mean,
    micro_macro,
    retrieval_grid,
)
from zoo.evaluation.search import ZeroVectorError
from zoo.evaluation.stores import LabelledVectors

RANKS = ("order", "family", "genus", "species")
KEYS = [((1, 0), "O1 F1 G1 S1"), ((0.8, 0.6), "O1 F1 G1 S2"), ((0, 1), "O1 F2 G2 S3"), ((-1, 0), "O2 F3 G3 S4"),
        ((0.6, 0.8), "O1 F1 G4 S5"), ((1, 0), "O1 F1 G1 S7")]  # fmt: skip
SEEN = [((0.9, 0.1), "O1 F1 G1 S1"), ((0.75, 0.66), "O1 F1 G1 S2"), ((0.1, 1.0), "O1 F2 G2 S6"),
        ((-0.9, 0.2), "O2 F3 G3 S4")]  # fmt: skip
UNSEEN = [((0.5, 0.86), "O1 F1 G4 S5"), ((-0.2, 0.95), "O1 F1 G4 S5"), ((0.55, 0.84), "O1 F4 G5 S8")]
#: The golden table (top-1): rank -> (seen micro, seen macro, unseen micro, unseen macro, H micro, H macro).
GOLDEN = {
    "order": (1, 1, 1, 1, 1, 1),
    "family": (1, 1, 1 / 3, 0.25, 0.5, 0.4),
    "genus": (1, 1, 1 / 3, 0.25, 0.5, 0.4),
    "species": (0.75, 0.75, 1 / 3, 0.25, 0.461538, 0.375),
}
#: FAISS order returns the later of the tied keys k0 / k5 for q0: k5 (species S7), so seen species drops.
GOLDEN_FAISS = {**GOLDEN, "species": (0.5, 0.5, 1 / 3, 0.25, 0.4, 1 / 3)}


def labelled(rows: list[tuple[tuple[float, float], str]], prefix: str) -> LabelledVectors:
    labels = [text.split() for _, text in rows]
    columns = {"processid": [f"{prefix}{i}" for i in range(len(rows))], "split": [prefix] * len(rows)}
    columns.update({rank: [row[r] for row in labels] for r, rank in enumerate(RANKS)})
    return LabelledVectors(np.array([v for v, _ in rows], np.float32), pa.table(columns))


def golden_grid(tie: str) -> tuple[dict, dict]:
    queries = {"seen": labelled(SEEN, "q"), "unseen": labelled(UNSEEN, "u")}
    return retrieval_grid(labelled(KEYS, "k"), queries, tie=tie, device="cpu")


@pytest.mark.parametrize(("tie", "table", "seen_top1"), [("canonical", GOLDEN, [0, 1, 2, 3]),
                                                          ("faiss", GOLDEN_FAISS, [5, 1, 2, 3])])  # fmt: skip
def test_golden_example_every_number(tie: str, table: dict, seen_top1: list[int]) -> None:
    grid, neighbours = golden_grid(tie)
    assert neighbours["seen"][:, 0].tolist() == seen_top1
    assert neighbours["unseen"][:, 0].tolist() == [4, 2, 4]
    for rank, expected in table.items():
        got = [grid[part][avg][rank]["1"] for part in ("seen", "unseen", "hm") for avg in ("micro", "macro")]
        assert got == pytest.approx(expected, abs=1e-6), rank


def test_golden_top_k_is_monotone_and_complete() -> None:
    grid, _ = golden_grid("canonical")
    for part in ("seen", "unseen", "hm"):
        for avg in ("micro", "macro"):
            assert set(grid[part][avg]) == set(RANKS)
            for rank in RANKS:
                values = [grid[part][avg][rank][k] for k in ("1", "3", "5")]
                assert values == sorted(values)
    # top-5 of 6 keys: the true species is among them for every seen query except q2 (S6 is in no key)
    assert grid["seen"]["micro"]["species"]["5"] == pytest.approx(0.75)


@pytest.mark.quick
def test_metrics_edge_cases() -> None:
    assert harmonic_mean(0.0, 0.9) == 0.0 and harmonic_mean(0.5, 0.5) == pytest.approx(0.5)
    # one class of 3 queries all right, one class of 1 query wrong: micro 3/4, macro 1/2; -1 truth left out
    predicted = np.array([[1], [1], [1], [5], [7]])
    truth = np.array([1, 1, 1, 2, -1])
    assert micro_macro(predicted, truth) == (0.75, 0.5)
    assert micro_macro(predicted, np.full(5, -1)) == (0.0, 0.0)


def test_zero_vector_is_a_clear_error() -> None:
    keys = labelled([*KEYS, ((0.0, 0.0), "O1 F1 G1 S9")], "k")
    with pytest.raises(ZeroVectorError, match=r"keys: 1 embedding\(s\) with zero norm.*k6"):
        retrieval_grid(keys, {"seen": labelled(SEEN, "q"), "unseen": labelled(UNSEEN, "u")})


def test_queries_and_keys_of_different_widths_are_refused() -> None:
    seen = labelled(SEEN, "q")
    wide = LabelledVectors(np.ones((len(seen), 3), np.float32), seen.columns)
    with pytest.raises(DimensionMismatchError, match="one embedding width"):
        retrieval_grid(labelled(KEYS, "k"), {"seen": wide, "unseen": labelled(UNSEEN, "u")})


def write_golden_store(path: Path, dim: int = 2, encoder: dict | None = None) -> str:
    rows = [(KEYS, "k", "train"), (SEEN, "q", "test"), (UNSEEN, "u", "test_unseen")]
    vectors = np.array([v for part, _, _ in rows for v, _ in part], np.float32)
    vectors = np.pad(vectors, ((0, 0), (0, dim - 2)))
    pids = [f"{p}{i}" for part, p, _ in rows for i in range(len(part))]
    splits = [s for part, _, s in rows for _ in part]
    texts = [t.split() for part, _, _ in rows for _, t in part]
    labels = {rank: [t[r] for t in texts] for r, rank in enumerate(RANKS)}
    write_test_store(path, vectors, pids, splits, labels=labels, encoder=encoder)
    return str(path)


def test_golden_example_from_stores_with_every_pair(tmp_path: Path) -> None:
    a, b = write_golden_store(tmp_path / "a"), write_golden_store(tmp_path / "b", encoder={"name": "other"})
    config = RetrievalConfig(stores=(("dna", a), ("image", b)), key_splits=("train",))
    results = evaluate_retrieval(config)
    assert list(results["pairs"]) == ["dna->dna", "dna->image", "image->dna", "image->image"]
    for entry in results["pairs"].values():
        assert entry["grid"]["hm"]["micro"]["species"]["1"] == pytest.approx(0.461538, abs=1e-6)
    assert results["stores"]["dna"]["rows"] == {"keys": 6, "seen": 4, "unseen": 3}


def test_named_pair_of_different_widths_is_a_clear_error(tmp_path: Path) -> None:
    a, b = write_golden_store(tmp_path / "a"), write_golden_store(tmp_path / "b", dim=4)
    auto = evaluate_retrieval(RetrievalConfig(stores=(("dna", a), ("image", b)), key_splits=("train",)))
    assert list(auto["pairs"]) == ["dna->dna", "image->image"]  # no cross pair between unequal widths
    config = RetrievalConfig(stores=(("dna", a), ("image", b)), pairs=(("image", "dna"),), key_splits=("train",))
    with pytest.raises(DimensionMismatchError, match=r"image->dna: image store .* is 4-d but dna store .* is 2-d"):
        evaluate_retrieval(config)
    with pytest.raises(KeyError, match="no store named 'text'"):
        evaluate_retrieval(RetrievalConfig(stores=(("dna", a),), pairs=(("text", "dna"),), key_splits=("train",)))
