"""stats1m: the 1M statistics (ranks, orders, Diptera families, partitions) and the `stats` job on a 1M release."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from bioscan_stream.release1m import read_metadata_1m
from bioscan_stream.stats1m import compute_stats_1m, format_stats_1m
from jobs.compute_stats import main


def test_counts_match_the_table() -> None:
    table = pa.table(
        {
            "order": ["Diptera"] * 5 + ["Hymenoptera"] * 2 + [None],
            "family": ["Sciaridae", "Phoridae", "Phoridae", None, "Phoridae", "Apidae", "Apidae", None],
            "large_insect_order": ["train"] * 4 + ["test", "validation", "no_split", "no_split"],
        }
    )
    stats = compute_stats_1m(table)
    assert stats["orders"] == [["Diptera", 5], ["Hymenoptera", 2]]
    assert stats["diptera_families"] == [["Phoridae", 3], ["Sciaridae", 1]]
    assert stats["ranks"]["family"] == {"subgroups": 3, "not_classified": 2}
    assert stats["partitionings"]["large_insect_order"] == {"train": 4, "validation": 1, "test": 1, "no_split": 2}
    text = format_stats_1m(stats)
    assert "Phoridae" in text and "top 40" in text and "large_insect_order" in text


def test_job_prints_1m_statistics(release_1m: tuple[Path, pa.Table], tmp_path: Path, capsys: object) -> None:
    root, _ = release_1m
    assert main([str(root), "--out", str(tmp_path)]) == 0
    stats = json.loads((tmp_path / "stats.json").read_text())
    table = read_metadata_1m(root)
    assert stats["records"] == table.num_rows
    diptera = int(pc.sum(pc.equal(table["order"], "Diptera")).as_py())
    assert dict(map(tuple, stats["orders"]))["Diptera"] == diptera
    assert sum(n for _, n in stats["diptera_families"]) == diptera - _missing_family(table)
    assert (tmp_path / "stats.png").stat().st_size > 10_000
    assert "Diptera families" in capsys.readouterr().out  # type: ignore[attr-defined]


def _missing_family(table: pa.Table) -> int:
    diptera = table.filter(pc.equal(table["order"], "Diptera"))
    return diptera["family"].null_count
