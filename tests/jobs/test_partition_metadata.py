"""Smoke test of `bioscan-stream partition` (jobs/partition_metadata.py), in process."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pytest

from bioscan_stream.constants import COLUMNS, SPLITS
from bioscan_stream.metadata import read_metadata, write_metadata_csv
from bioscan_stream.partition import assign_partitions
from jobs.partition_metadata import main


def _raw_metadata() -> pa.Table:
    """40 records: a seen species spread over 20 barcodes, a placeholder of its genus, unknowns, heldout."""
    rows = [("Phora", "Phora bella", f"ACGT{'ACGT'[i % 4]}{'CGTA'[i // 4 % 4]}{'GTAC'[i // 16]}") for i in range(24)]
    rows += [("Phora", "Phora Malaise0001", f"TTTT{'ACGT'[i % 4]}{'CGTA'[i // 4]}") for i in range(10)]
    rows += [(None, None, "GGGGAAAA"), ("gelBioLep01", "gelBioLep01 BioLep3792", "CCCCAAAA")] * 3
    genus, species, barcode = (list(c) for c in zip(*rows, strict=True))
    return pa.table(
        {
            "processid": [f"TEST{i:04d}-24" for i in range(len(rows))],
            "genus": genus,
            "species": species,
            "dna_barcode": barcode,
            "split": pa.nulls(len(rows), pa.string()),
        }
    )


def test_partition_job_writes_all_columns(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = write_metadata_csv(_raw_metadata(), tmp_path / "raw.csv")
    out = tmp_path / "out" / "partitioned.csv"
    assert main([str(source), str(out), "--seed", "2"]) == 0
    assert out.read_text().splitlines()[0] == ",".join(COLUMNS)
    written = read_metadata(out)
    expected = assign_partitions(read_metadata(source), seed=2)
    assert written.column("split").equals(expected.column("split"))
    assert written.column("processid").equals(expected.column("processid"))
    assert set(written.column("split").to_pylist()) <= set(SPLITS)
    assert {"pretrain", "train", "other_heldout"} <= set(written.column("split").to_pylist())
    assert "total" in capsys.readouterr().out
    assert Path(f"{out}.rejects.jsonl").read_text() == ""


def test_partition_job_lists_malformed_rows(tmp_path: Path) -> None:
    source = write_metadata_csv(_raw_metadata(), tmp_path / "raw.csv")
    with open(source, "a", encoding="utf-8") as csv:
        csv.write("BROKEN01-24,too,few,fields\n")
    out = tmp_path / "partitioned.csv"
    assert main([str(source), str(out)]) == 0
    assert read_metadata(out).num_rows == _raw_metadata().num_rows
    rejects = [json.loads(line) for line in Path(f"{out}.rejects.jsonl").read_text().splitlines()]
    assert [r["reason"] for r in rejects] == ["malformed_row"]
    assert main([str(source), str(tmp_path / "strict.csv"), "--strict"]) == 1
    assert not (tmp_path / "strict.csv").exists()
