"""End-to-end tests of `bioscan-stream evaluate` (jobs/evaluate.py -> zoo.evaluation) on the synthetic release.

The session's 20k synthetic release converted with the four splits the evaluations read (`eval_shards`: the
shared `synth_shards` set has no key_unseen, and adding it there shifts another job's random-init probe
test) -> `embed_shards` with the k-mer DNA encoder and a ViT-Ti -> retrieval, zero-shot clustering and
probe reports from the stores.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import ray
from helpers_dna import with_stub_images

from jobs import convert
from jobs.cli import main as cli_main
from jobs.evaluate import main
from zoo.embedding import EmbedConfig, embed_shards, read_embeddings

SPLITS = ("train", "key_unseen", "test", "test_unseen")


@pytest.fixture(scope="module")
def eval_shards(release_20k: tuple[Path, pa.Table], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`jobs.convert` of the 20k release (1-pixel stub images) into OUT with train, key_unseen, test, test_unseen."""
    release, table = release_20k
    tmp = tmp_path_factory.mktemp("eval-shards")
    root = with_stub_images(release, tmp / "release", table, splits=SPLITS)
    args = [str(root), str(tmp / "out"), "--splits", *SPLITS, "--workers", "2", "--no-progress"]
    assert convert.main(args) == 0
    return tmp / "out"


@pytest.fixture(scope="module")
def kmer_store(eval_shards: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    out = tmp_path_factory.mktemp("eval") / "kmer"
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        shards = str(eval_shards / "cropped_256")
        embed_shards(EmbedConfig(shards, str(out), "kmer_freq_k5", splits=SPLITS, progress=False))
    finally:
        ray.shutdown()
    yield str(out)


def _chance(store: str, rank: str) -> float:
    """Accuracy of a random key: sum over labels of P(query label) * P(key label)."""
    keys = read_embeddings(store, splits=["train", "key_unseen"], columns=[rank]).strings(rank)
    queries = read_embeddings(store, splits=["test_unseen"], columns=[rank]).strings(rank)
    labels, counts = np.unique(keys.astype(str), return_counts=True)
    p_key = dict(zip(labels, counts / counts.sum(), strict=True))
    return float(np.mean([p_key.get(q, 0.0) for q in queries.astype(str)]))


def test_retrieval_dna_to_dna_far_above_chance(kmer_store: str, tmp_path: Path) -> None:
    out = tmp_path / "retrieval"
    assert cli_main(["evaluate", "retrieval", "--store", f"dna={kmer_store}", "--out", str(out)]) == 0
    results = json.loads((out / "retrieval.json").read_text())
    grid = results["pairs"]["dna->dna"]["grid"]
    chance = _chance(kmer_store, "genus")
    assert grid["unseen"]["micro"]["genus"]["1"] > max(0.5, 10 * chance), (grid["unseen"]["micro"]["genus"], chance)
    assert grid["seen"]["micro"]["species"]["1"] > 0.5
    rows = results["stores"]["dna"]["rows"]
    assert rows["keys"] > 0 and rows["seen"] > 0 and rows["unseen"] > 0
    table = (out / "retrieval.md").read_text()
    assert "**Top-1**" in table and "| dna->dna |" in table and "seen micro order" in table
    assert (out / "retrieval.png").stat().st_size > 5_000


def test_retrieval_faiss_tie_mode_matches_faiss_index_flat_ip(kmer_store: str, tmp_path: Path) -> None:
    import faiss

    from zoo.evaluation.search import exact_topk, l2_normalise

    keys = l2_normalise(read_embeddings(kmer_store, splits=["train", "key_unseen"], columns=[]).vectors)
    queries = l2_normalise(read_embeddings(kmer_store, splits=["test_unseen"], columns=[]).vectors)
    index = faiss.IndexFlatIP(keys.shape[1])
    index.add(keys)
    _, expected = index.search(queries, 5)
    _, found = exact_topk(queries, keys, 5, tie="faiss", device="cpu")
    # identical barcodes give identical k-mer vectors: ties are everywhere, and FAISS's heap order is reproduced
    assert (found == expected).mean() > 0.999


def test_clustering_report(kmer_store: str, tmp_path: Path) -> None:
    out = tmp_path / "clustering"
    assert main(["clustering", "--store", kmer_store, "--out", str(out), "--seeds", "0", "1"]) == 0
    results = json.loads((out / "clustering.json").read_text())
    n = sum(len(read_embeddings(kmer_store, splits=[s], columns=[])) for s in ("test", "test_unseen"))
    assert results["n_samples"] == n and results["protocol"]["ward"] == "fastcluster"
    assert results["ami"]["genus"] > 0.3 and set(results["ami_per_seed"]) == {"0", "1"}
    assert "| species |" in (out / "clustering.md").read_text() and (out / "clustering.png").exists()


def test_probe_from_store(kmer_store: str, tmp_path: Path) -> None:
    out = tmp_path / "probe"
    assert main(["probe", "--store", f"kmer={kmer_store}", "--out", str(out), "--linear-epochs", "3"]) == 0
    results = json.loads((out / "probe.json").read_text())
    assert results["knn_genus_test_unseen"]["micro_acc"] > 0.5 and results["knn_genus_test_unseen"]["n_queries"] > 0
    assert 0.0 <= results["linear_species_test"]["acc"] <= 1.0
    assert "| kmer |" in (out / "probe.md").read_text()


def test_retrieval_through_an_ann_index_reports_its_change(kmer_store: str, tmp_path: Path) -> None:
    indices = pytest.importorskip("zoo.indices")
    from zoo.evaluation import RetrievalConfig, evaluate_retrieval

    index = str(tmp_path / "index")
    indices.build_index(kmer_store, index, factory="HNSW16", splits=["train", "key_unseen"], num_queries=50)
    config = RetrievalConfig(stores=(("dna", kmer_store),), indices=(("dna", index),))
    entry = evaluate_retrieval(config)["pairs"]["dna->dna"]
    change = entry["ann"]["change_vs_exact"]
    assert set(change) == {"seen", "unseen", "hm"} and set(change["unseen"]["micro"]) == {
        "order",
        "family",
        "genus",
        "species",
    }
    assert abs(change["unseen"]["micro"]["genus"]["1"]) < 0.05
    assert entry["ann"]["grid"]["unseen"]["micro"]["genus"]["1"] > 0.5


def test_ann_index_of_another_encoder_is_refused(kmer_store: str, tmp_path: Path) -> None:
    indices = pytest.importorskip("zoo.indices")
    from zoo.evaluation import RetrievalConfig, evaluate_retrieval
    from zoo.evaluation.ann import EncoderMismatchError

    keys = read_embeddings(kmer_store, splits=["train", "key_unseen"], dtype=np.float32)
    other = tmp_path / "other"
    from helpers_store import write_test_store

    write_test_store(other, keys.vectors, keys.strings("processid").tolist(), keys.strings("split").tolist())
    index = str(tmp_path / "index")
    indices.build_index(str(other), index, factory="Flat", num_queries=50)
    config = RetrievalConfig(stores=(("dna", kmer_store),), indices=(("dna", index),))
    with pytest.raises(EncoderMismatchError, match="rebuild the index from this store"):
        evaluate_retrieval(config)


@pytest.fixture(scope="module")
def image_store(eval_shards: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A ViT-Ti (64 px, random init) store of the same splits; the fixture's images are 1-pixel stubs."""
    out = tmp_path_factory.mktemp("eval") / "vit"
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        config = EmbedConfig(str(eval_shards / "cropped_256"), str(out), "vit_tiny_patch16_224", splits=SPLITS,
                             overrides=(("img_size", 64),), batch_size=32, progress=False)  # fmt: skip
        embed_shards(config)
    finally:
        ray.shutdown()
    yield str(out)


def test_image_and_dna_stores_together(kmer_store: str, image_store: str, tmp_path: Path) -> None:
    out = tmp_path / "both"
    stores = ["--store", f"dna={kmer_store}", "--store", f"image={image_store}"]
    assert main(["retrieval", *stores, "--out", str(out)]) == 0
    results = json.loads((out / "retrieval.json").read_text())
    assert list(results["pairs"]) == ["dna->dna", "image->image"]  # 1024-d k-mers vs 192-d ViT: no cross pair
    rows = {name: store["rows"] for name, store in results["stores"].items()}
    assert rows["dna"] == rows["image"]  # joined on processid
    assert results["pairs"]["dna->dna"]["grid"]["unseen"]["micro"]["genus"]["1"] > 0.5
    with pytest.raises(ValueError, match="image->dna: image store .* is 192-d but dna store .* is 1024-d"):
        main(["retrieval", *stores, "--pair", "image:dna", "--out", str(out)])
    assert main(["clustering", *stores, "--out", str(out), "--no-scatter"]) == 0
    clusters = json.loads((out / "clustering.json").read_text())
    assert clusters["n_features"] == 192 + 1024 and clusters["ami"]["genus"] > 0.3
