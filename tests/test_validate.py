"""Record validation and the rejects report (bioscan_stream/validate.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pytest

from bioscan_stream.constants import COLUMNS
from bioscan_stream.metadata import read_metadata
from bioscan_stream.validate import (
    BARCODE_ALPHABET,
    REASONS,
    InvalidRecordError,
    Reject,
    RejectsReport,
    check_barcode,
    validate_records,
)

GOOD = "ACGTNRYSWKMBDHV" * 4
ROWS = [  # processid, split, barcode, expected reason (None = valid)
    ("A1", "train", GOOD, None),
    (None, "train", GOOD, "malformed_row"),
    ("A2", "training", GOOD, "unknown_split"),
    ("A3", "val", "ACGT-ACGT", "bad_barcode"),
    ("A1", "test", GOOD, "malformed_row"),  # duplicate of row 0
    ("A4", None, "ACGTX", "unknown_split"),  # first failing check wins
    ("../A5", "val", GOOD, "malformed_row"),
    ("A6", "pretrain", None, "bad_barcode"),
    ("A7", "other_heldout", "acgt", "bad_barcode"),
    ("A8", "key_unseen", "ACGTN", None),
]


def _table() -> pa.Table:
    return pa.table(
        {"processid": [r[0] for r in ROWS], "split": [r[1] for r in ROWS], "dna_barcode": [r[2] for r in ROWS]}
    )


def test_check_barcode_names_offending_characters() -> None:
    assert check_barcode(GOOD) is None and check_barcode(BARCODE_ALPHABET) is None
    reason = check_barcode("ACGT-AC.T-")
    assert reason is not None
    assert "3 unexpected" in reason and "'-', '.'" in reason and "position(s) 4, 7, 9" in reason
    assert check_barcode("") == check_barcode(None) == "missing dna_barcode"
    assert "..." in str(check_barcode("x" * 20))


def test_validate_records_keeps_or_rejects_every_row() -> None:
    table = _table()
    valid, rejects = validate_records(table)
    assert valid.num_rows + len(rejects) == table.num_rows
    assert valid["processid"].to_pylist() == [r[0] for r in ROWS if r[3] is None]
    assert [r.reason for r in rejects] == [r[3] for r in ROWS if r[3] is not None]
    by_pid = {r.processid: r for r in rejects}
    assert "first seen at row 0" in rejects[3].detail and rejects[3].split == "test"
    assert "not one of" in by_pid["A2"].detail and "'training'" in by_pid["A2"].detail
    assert "'-'" in by_pid["A3"].detail and "row 3" in by_pid["A3"].detail
    assert "not a safe file name" in by_pid["../A5"].detail
    assert rejects[0].processid is None and "missing processid" in rejects[0].detail


def test_strict_mode_raises_on_the_first_bad_record() -> None:
    with pytest.raises(InvalidRecordError, match=r"processid=None split='train': malformed_row: row 1"):
        validate_records(_table(), strict=True)
    clean = _table().slice(9, 1)
    assert validate_records(clean, strict=True)[0].equals(clean)


def test_partial_tables_are_checked_for_what_they_have() -> None:
    valid, rejects = validate_records(pa.table({"processid": ["A", "B", "A"]}))
    assert valid.num_rows == 2 and [r.reason for r in rejects] == ["malformed_row"]
    with pytest.raises(ValueError, match="without a processid column"):
        validate_records(pa.table({"split": ["val"]}))


def test_reject_reason_must_be_known() -> None:
    assert len(REASONS) == 7 and len(set(REASONS)) == 7
    with pytest.raises(ValueError, match="unknown reject reason"):
        Reject("A", "val", "weird", "")


def test_report_counts_and_round_trips(tmp_path: Path) -> None:
    _, rejects = validate_records(_table())
    report = RejectsReport()
    report.extend(rejects)
    report.extend([Reject("B1", "train", "missing_image", "not in zip")])
    counts = report.counts()
    assert counts[("train", "malformed_row")] == 1 and counts[("val", "bad_barcode")] == 1
    assert counts[("train", "missing_image")] == 1 and sum(counts.values()) == len(report.rejects) == 9
    path = report.write(tmp_path / "out" / "rejects.jsonl")
    lines = path.read_text().splitlines()
    assert len(lines) == 9 and set(json.loads(lines[0])) == {"processid", "split", "reason", "detail"}
    assert RejectsReport.read(path) == report
    assert "total\t\t9" in report.summary() and "train\tmissing_image\t1" in report.summary()
    assert [p.name for p in path.parent.iterdir()] == ["rejects.jsonl"]  # no temporary left behind


def test_malformed_csv_rows_reach_the_report(tmp_path: Path) -> None:
    good = ["P1", *[""] * 19, "val", "", ""]
    short = ["P2", "S2", "val"]
    path = tmp_path / "m.csv"
    path.write_text("\n".join(",".join(r) for r in (COLUMNS, good, short, good[:0] + ["P3", *good[1:]])) + "\n")
    report = RejectsReport()
    table = read_metadata(path, rejects=report.rejects)
    assert table["processid"].to_pylist() == ["P1", "P3"]
    assert report.counts() == {("val", "malformed_row"): 1}
    assert "line 3" in report.rejects[0].detail and report.rejects[0].processid == "P2"


@pytest.mark.parametrize("string_type", [pa.string(), pa.large_string()])
def test_barcode_check_handles_chunks_slices_and_offset_widths(string_type: pa.DataType) -> None:
    chunks = [pa.array(["ACGT", "", None, "ACGX", "NNN"], string_type).slice(1), pa.array(["A-C", "AC"], string_type)]
    table = pa.table({"processid": [f"P{i}" for i in range(6)], "dna_barcode": pa.chunked_array(chunks)})
    valid, rejects = validate_records(table)
    assert valid["processid"].to_pylist() == ["P3", "P5"]
    assert [r.processid for r in rejects] == ["P0", "P1", "P2", "P4"]
    assert all(r.reason == "bad_barcode" for r in rejects)
