"""Table 2 / Table 3 statistics (bioscan_stream/stats.py) on a hand-checked table."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pytest

from bioscan_stream.stats import compute_stats, format_stats, plot_stats


@pytest.fixture
def table() -> pa.Table:
    """10 records: order 7 Diptera / 2 Hymenoptera / 1 missing; species 3 a / 1 b / 6 missing."""
    return pa.table(
        {
            "order": ["Diptera"] * 7 + ["Hymenoptera"] * 2 + [None],
            "species": ["Aa a", "Aa a", "Aa a", "Bb b"] + [None] * 6,
            "dna_barcode": ["AC", "AC", "GT", "TT", "CC", "CC", "CC", "GA", "GA", "AA"],
            "split": ["train", "train", "test", "train"] + ["pretrain"] * 6,
        }
    )


def test_rank_statistics(table: pa.Table) -> None:
    ranks = compute_stats(table)["ranks"]
    assert list(ranks) == ["order", "species", "dna_barcode"]
    order = ranks["order"]
    assert (order["categories"], order["labelled"], order["unlabelled"]) == (2, 9, 1)
    assert order["labelled_pct"] == pytest.approx(90.0)
    assert order["imbalance_ratio"] == pytest.approx(3.5)
    assert order["most"] == {"name": "Diptera", "size": 7, "share_pct": pytest.approx(70.0)}
    assert order["least"] == {"name": "Hymenoptera", "size": 2}
    assert ranks["species"]["imbalance_ratio"] == pytest.approx(3.0)
    assert ranks["dna_barcode"]["categories"] == 6
    assert ranks["dna_barcode"]["most"] == {"name": "CC", "size": 3, "share_pct": pytest.approx(30.0)}
    assert ranks["dna_barcode"]["least"]["size"] == 1 and ranks["dna_barcode"]["imbalance_ratio"] == 3


def test_split_and_barcode_statistics(table: pa.Table) -> None:
    stats = compute_stats(table)
    assert list(stats["splits"]) == ["pretrain", "train", "test"]  # the paper's order
    assert stats["splits"]["train"] == {"samples": 3, "barcodes": 2, "species": 2}
    assert stats["splits"]["pretrain"] == {"samples": 6, "barcodes": 3, "species": 0}
    assert stats["barcodes"] == {"unique": 6, "samples_per_barcode": pytest.approx(10 / 6)}
    assert stats["long_tail"] == {"all": [3, 1], "train": [2, 1], "test": [1]}
    json.dumps(stats)  # JSON-ready


def test_without_split_column(table: pa.Table) -> None:
    stats = compute_stats(table.drop_columns(["split"]))
    assert "splits" not in stats and stats["long_tail"] == {"all": [3, 1]}
    assert "Diptera" in format_stats(stats)


def test_format_stats(table: pa.Table) -> None:
    text = format_stats(compute_stats(table))
    by_rank, by_split = text.split("By split")
    assert "Diptera" in by_rank and "70.0" in by_rank and "3.5" in by_rank  # order's IR
    assert "train" in by_split and "60.0" in by_split  # pretrain share of the records
    assert "pretrain" in text and "samples per barcode: 1.67" in text


def test_plot_stats_writes_a_png(table: pa.Table, tmp_path: Path) -> None:
    path = tmp_path / "figs" / "stats.png"
    plot_stats(compute_stats(table), path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in path.parent.iterdir()] == ["stats.png"]  # no temporary file left
