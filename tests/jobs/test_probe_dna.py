"""Smoke test of `bioscan-stream probe-dna` (jobs/probe_dna.py) on a tiny synthetic shard set."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from helpers_dna import make_barcodes, write_probe_shards

from jobs.probe_dna import main


def test_probe_dna_end_to_end(tmp_path: Path) -> None:
    rows = make_barcodes(genera=3, species=3, per_species=4, length=80)
    seen = [r for r in rows if r[2] % 3 != 2]
    unseen = [r for r in rows if r[2] % 3 == 2]  # the third species of each genus is never in train
    shards = write_probe_shards(tmp_path, {"train": seen[::2] + seen[1::4], "test": seen[3::4], "test_unseen": unseen})
    out = tmp_path / "probe"
    args = [
        str(shards),
        "--output",
        str(out),
        "--model",
        "4-1-2",
        "--set",
        "hidden_size=16",
        "--set",
        "intermediate_size=32",
        "--set",
        "max_len=80",
        "--linear-epochs",
        "5",
        "--finetune-epochs",
        "1",
    ]
    assert main(args) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["knn_genus_test_unseen"]["n_queries"] == len(unseen)
    assert 0.0 <= results["linear_species_test"]["acc"] <= 1.0 and "finetune_species_test" in results
    saved = np.load(out / "embeddings" / "test_unseen.npz")
    assert saved["embedding"].shape == (len(unseen), 16) and saved["processid"][0] == "test_unseen00000"
    assert saved["genus"].tolist() == [g for _, g, _ in unseen]
    assert "| 4-1-2 |" in (out / "results.md").read_text()


def test_probe_dna_on_the_synthetic_release(synth_shards: Path, tmp_path: Path) -> None:
    """The job on the converted synthetic release (release -> `jobs.convert` -> image shard set with DNA)."""
    shards = synth_shards / "cropped_256"
    counts = {s: e["samples"] for s, e in json.loads((shards / "index.json").read_text())["splits"].items()}
    out = tmp_path / "probe"
    tiny = ["--set", "hidden_size=32", "--set", "intermediate_size=64", "--set", "max_len=300"]
    assert main([str(shards), "--output", str(out), "--model", "4-2-2", *tiny, "--linear-epochs", "3"]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["knn_genus_test_unseen"]["n_queries"] == counts["test_unseen"] > 0
    assert results["knn_genus_test_unseen"]["micro_acc"] > 0.2  # genus is recoverable from k-mers (chance < 1%)
    assert 0.0 <= results["linear_species_test"]["acc"] <= 1.0
    saved = np.load(out / "embeddings" / "train.npz")
    assert saved["embedding"].shape == (counts["train"], 32) and (saved["genus"] >= 0).all()
    assert (out / "results.md").read_text().splitlines()[2].startswith("| 4-2-2 | - |")
