"""`bioscan-stream train-classifier --partitioning`: the two BIOSCAN-1M experiments on a 1M shard set's own splits.

Module fixture: the synthetic 1M release of a 3,000-record world (640 records with photos, ~10 s to render),
converted to shards. The runs are plumbing-sized (resnet10t, 32 px, 2 steps); docs/bioscan-1m.md has measured ones.
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.compute as pc
import pytest

from bioscan_stream.release1m import read_metadata_1m
from jobs.train_classifier import main
from zoo.tasks.classify_data import make_synthetic_shards_1m

TINY_ARGS = ["--model", "resnet10t", "--image-size", "32", "--loader-workers", "0", "--max-steps", "2"]


@pytest.fixture(scope="module")
def shards_1m(tmp_path_factory: pytest.TempPathFactory) -> str:
    return make_synthetic_shards_1m(tmp_path_factory.mktemp("synth1m-images"), samples=3_000)


@pytest.mark.parametrize(
    ("partitioning", "rank"), [("large_insect_order", "order"), ("medium_diptera_family", "family")]
)
def test_1m_experiment_reports_in_the_paper_layout(
    shards_1m: str, tmp_path: Path, partitioning: str, rank: str
) -> None:
    run = tmp_path / "run"
    assert main([shards_1m, "--partitioning", partitioning, "--output", str(run), "--workers", "0", *TINY_ARGS]) == 0
    report = json.loads((run / "report.json").read_text())
    metadata = read_metadata_1m(Path(shards_1m).parents[1] / "release")
    train = metadata.filter(pc.equal(metadata[partitioning], "train"))
    test = metadata.filter(pc.equal(metadata[partitioning], "test"))
    classes = [row["label"] for row in report["per_class"]]
    expected = [c["values"] for c in pc.value_counts(train[rank]).to_pylist() if c["values"] is not None]
    assert report["experiment"] == partitioning and set(classes) <= set(expected)
    assert len(classes) == min(len(expected), 16 if rank == "order" else 40)
    if rank == "family":
        assert set(pc.unique(train["order"]).to_pylist()) == {"Diptera"}
    kept = sum(1 for label in test[rank].to_pylist() if label in classes)
    assert report["test_samples"] == kept and sum(report["excluded_test"].values()) == test.num_rows - kept
    markdown = (run / "report.md").read_text()
    size, task = ("Large", "Insect-Order") if rank == "order" else ("Medium", "Diptera-Family")
    assert f"| {size} | {task} | {len(classes)} |" in markdown
    assert (run / "per_class_accuracy.png").stat().st_size > 5_000
