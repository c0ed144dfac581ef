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
