"""Tests of zoo.evaluation.clustering: lean Ward == sklearn Ward, the protocol's sample order and z-score,
and the whole pipeline (UMAP -> Ward -> AMI -> report) on a small store of well-separated species."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from helpers_store import write_test_store
from sklearn.metrics import adjusted_mutual_info_score

from zoo.evaluation.clustering import (
    ClusteringConfig,
    clustering_features,
    cut_tree,
    evaluate_clustering,
    umap_reduce,
    ward_labels,
    zscore,
)
from zoo.evaluation.report import write_clustering_report

RANK_NAMES = ("class", "order", "family", "subfamily", "genus", "species", "dna_bin")


def species_store(path: Path, *, species: int = 12, per_species: int = 15, dim: int = 16, seed: int = 0) -> str:
    """A store of `species` Gaussian clusters split over test / test_unseen, shuffled, with every label."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((species, dim)) * 4
    sp = np.repeat(np.arange(species), per_species)
    rows = rng.permutation(len(sp))
    sp = sp[rows]
    vectors = (centres[sp] + rng.standard_normal((len(sp), dim))).astype(np.float32)
    labels = {"class": ["Insecta"] * len(sp), "order": [f"O{s % 3}" for s in sp], "family": [f"F{s % 6}" for s in sp],
              "subfamily": [None] * len(sp), "genus": [f"G{s // 2}" for s in sp], "species": [f"S{s}" for s in sp],
              "dna_bin": [f"BOLD:{s}" for s in sp]}  # fmt: skip
    splits = ["test_unseen" if s >= species - 3 else "test" for s in sp]
    pids = [f"P{int(i):05d}" for i in rng.permutation(len(sp))]
    write_test_store(path, vectors, pids, splits, labels=labels)
    return str(path)


@pytest.mark.parametrize("k", [1, 2, 7, 40, 299, 300])
def test_lean_ward_gives_sklearns_partition(k: int) -> None:
    rng = np.random.default_rng(k)
    x = rng.standard_normal((300, 8)) + np.repeat(rng.standard_normal((20, 8)) * 3, 15, axis=0)
    lean, reference = ward_labels(x, k), ward_labels(x, k, backend="sklearn")
    assert len(np.unique(lean)) == k
    assert adjusted_mutual_info_score(reference, lean) == pytest.approx(1.0) or k == 1


@pytest.mark.quick
def test_cut_tree_checks_its_input() -> None:
    with pytest.raises(ValueError, match="n_clusters=0"):
        cut_tree(np.zeros((4, 4)), 0)
    with pytest.raises(ValueError, match="ward backend"):
        ward_labels(np.zeros((3, 2)), 2, backend="scipy")


@pytest.mark.quick
def test_zscore_per_group_uses_population_std() -> None:
    x = np.array([[1.0, 5.0], [3.0, 5.0], [10.0, 0.0], [20.0, 2.0]])
    out = zscore(x, np.array(["a", "a", "b", "b"]))
    assert out[:2, 0].tolist() == [-1.0, 1.0] and out[:2, 1].tolist() == [0.0, 0.0]  # constant column -> 0
    assert out[2:].tolist() == [[-1.0, -1.0], [1.0, 1.0]]


def test_samples_are_test_then_unseen_each_sorted_by_processid(tmp_path: Path) -> None:
    store = species_store(tmp_path / "s")
    features, table = clustering_features(ClusteringConfig(stores=(("dna", store),)))
    splits = table.columns.column("split").to_pylist()
    assert splits == sorted(splits, key=("test", "test_unseen").index)
    pids = table.processids
    for split in ("test", "test_unseen"):
        part = pids[np.asarray(splits) == split]
        assert list(part) == sorted(part)
    assert np.allclose(features[np.asarray(splits) == "test"].mean(0), 0, atol=1e-5)


def test_pipeline_lean_ward_equals_sklearn_on_a_small_store(tmp_path: Path) -> None:
    config = ClusteringConfig(stores=(("dna", species_store(tmp_path / "s")),), n_neighbors=15)
    features, table = clustering_features(config)
    reduced, _ = umap_reduce(features, 0, config)
    lean, reference = ward_labels(reduced, 12), ward_labels(reduced, 12, backend="sklearn")
    assert adjusted_mutual_info_score(reference, lean) == pytest.approx(1.0)


def test_clustering_end_to_end_and_report(tmp_path: Path) -> None:
    a, b = species_store(tmp_path / "a"), species_store(tmp_path / "b", seed=0)
    config = ClusteringConfig(stores=(("dna", a), ("image", b)), seeds=(0, 1), n_neighbors=15)
    results = evaluate_clustering(config)
    assert results["n_samples"] == 180 and results["n_features"] == 32 and results["n_clusters"] == 12
    assert set(results["ami"]) == set(RANK_NAMES)
    assert results["ami"]["species"] > 0.9 and results["ami"]["dna_bin"] == results["ami"]["species"]
    assert np.isnan(results["ami"]["subfamily"])  # no sample has one
    assert results["ami"]["species"] == pytest.approx(
        np.median([s["species"] for s in results["ami_per_seed"].values()])
    )
    paths = write_clustering_report(results, tmp_path / "report")
    assert "| species |" in paths["md"].read_text() and paths["png"].stat().st_size > 10_000
