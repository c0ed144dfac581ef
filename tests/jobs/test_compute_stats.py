"""Smoke test of `bioscan-stream stats` (jobs/compute_stats.py), in process, on a tiny release root."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pytest

from bioscan_stream.metadata import read_metadata, write_metadata
from bioscan_stream.stats import STATS_COLUMNS, compute_stats
from jobs.compute_stats import main


@pytest.fixture
def release(tmp_path: Path) -> Path:
    n = 12
    table = pa.table(
        {
            "processid": [f"STAT{i:03d}-24" for i in range(n)],
            "phylum": ["Arthropoda"] * n,
            "order": ["Diptera"] * 9 + ["Coleoptera"] * 3,
            "species": ["Phora bella"] * 4 + ["Phora nigra"] * 2 + [None] * 6,
            "dna_barcode": ["ACGT", "ACGT", "ACGA", "ACGC", "TTGA", "TTGC"] + ["GGGG"] * 6,
            "split": ["train", "train", "test", "val", "train", "train"] + ["pretrain"] * 6,
        }
    )
    write_metadata(table, tmp_path / "release")
    return tmp_path / "release"


def test_stats_job_writes_json_and_png(release: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "stats"
    assert main([str(release), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "Diptera" in printed and "pretrain" in printed
    stats = json.loads((out / "stats.json").read_text())
    expected = compute_stats(read_metadata(release, columns=STATS_COLUMNS))
    assert stats["ranks"] == json.loads(json.dumps(expected["ranks"]))
    assert stats["splits"]["train"] == {"samples": 4, "barcodes": 3, "species": 2}
    assert stats["ranks"]["order"]["most"]["share_pct"] == pytest.approx(75.0)
    assert (out / "stats.png").read_bytes()[:4] == b"\x89PNG"


def test_stats_job_json_flag_and_missing_root(
    release: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([str(release), "--out", str(tmp_path / "s"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["samples"] == 12
    assert main([str(tmp_path / "absent"), "--out", str(tmp_path / "s2")]) == 1
    assert "absent" in capsys.readouterr().err  # the error names the path
    assert not (tmp_path / "s2").exists()
