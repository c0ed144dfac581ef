"""Reading and writing the release metadata (bioscan_stream/metadata.py): types, formats, projection, errors."""

from __future__ import annotations

import csv
import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from bioscan_stream import metadata as md
from bioscan_stream.constants import COLUMNS, METADATA_CSV, METADATA_JSONLD, METADATA_ZIP
from bioscan_stream.metadata import (
    METADATA_SCHEMA,
    iter_metadata,
    metadata_path,
    read_bbox,
    read_metadata,
    write_bbox,
    write_metadata,
)
from bioscan_stream.validate import InvalidRecordError, Reject

ROWS = [
    # processid, split, chunk, species, measurement, index_1M, lat, province
    ("AACTA1040-20", "pretrain", "00", None, 150502, 12, 9.93, "Guanacaste"),
    ("GMEEO6589-21", "train", "b", "Megaselia Malaise4749", None, None, -1.5, 'San José, "Centro"'),
    ("CRATC20925-23", "test", None, "Megaselia lucifrons", 3, 0, None, None),
    ("YDBB6502-21", "other_heldout", "f", "NA", 786432, 1_000_001, 43.0, "Ontario"),
    ("BIOUG123-A01", "train", "0", "Aristotelia BioLep531", 17, None, 0.0001, "Åland"),
]


def _table(rows: list[tuple] = ROWS) -> pa.Table:
    """A small metadata table with the awkward values of the real format."""
    n = len(rows)
    data: dict[str, list] = {c: [None] * n for c in COLUMNS}
    for i, (pid, split, chunk, species, measure, idx, lat, province) in enumerate(rows):
        data["processid"][i], data["split"][i], data["chunk"][i], data["species"][i] = pid, split, chunk, species
        data["image_measurement_value"][i], data["index_bioscan_1M_insect"][i] = measure, idx
        data["coord-lat"][i], data["province_state"][i] = lat, province
        data["sampleid"][i], data["phylum"][i], data["order"][i] = f"S{i}", "Arthropoda", "Diptera"
        data["dna_barcode"][i] = "ACGT" * (i + 3) + "NN"
        data["area_fraction"][i], data["scale_factor"][i], data["inferred_ranks"][i] = 0.0123 * (i + 1), 1.25, i % 7
    return pa.table(data, schema=METADATA_SCHEMA)


@pytest.fixture()
def release(tmp_path: Path) -> Path:
    write_metadata(_table(), tmp_path, archive=True)
    return tmp_path


def test_schema_is_the_23_columns_in_order_with_release_types() -> None:
    assert METADATA_SCHEMA.names == list(COLUMNS)
    assert METADATA_SCHEMA.field("chunk").type == pa.string()
    assert METADATA_SCHEMA.field("index_bioscan_1M_insect").type == pa.int64()
    assert METADATA_SCHEMA.field("coord-lon").type == pa.float64()


@pytest.mark.parametrize("source", ["csv", "jsonld", "zip", "root"])
def test_every_source_reads_back_the_written_table(release: Path, source: str) -> None:
    path = {"csv": release / METADATA_CSV, "jsonld": release / METADATA_JSONLD, "zip": release / METADATA_ZIP}
    table = read_metadata(path.get(source, release))
    assert table.schema == METADATA_SCHEMA
    assert table.equals(_table())
    assert table["chunk"].to_pylist() == ["00", "b", None, "f", "0"]
    assert table["species"][3].as_py() == "NA"  # a value, not a null marker


def test_root_prefers_csv_then_jsonld_then_zip(release: Path) -> None:
    assert md._resolve(release) == ("csv", release / METADATA_CSV)
    (release / METADATA_CSV).unlink()
    assert md._resolve(release) == ("jsonld", release / METADATA_JSONLD)
    (release / METADATA_JSONLD).unlink()
    assert md._resolve(release) == ("zip", release / METADATA_ZIP)
    assert read_metadata(release).num_rows == len(ROWS)
    (release / METADATA_ZIP).unlink()
    with pytest.raises(FileNotFoundError, match="no metadata under"):
        read_metadata(release)


def test_csv_is_written_like_the_release(release: Path) -> None:
    lines = metadata_path(release).read_text(encoding="utf-8").splitlines()
    assert lines[0] == ",".join(COLUMNS)
    third = lines[3].split(",")
    assert third[COLUMNS.index("chunk")] == "" and third[COLUMNS.index("coord-lat")] == ""
    assert lines[1].split(",")[COLUMNS.index("chunk")] == "00"
    assert "0.0246" in lines[2] and "43.0" in lines[4]  # floats as Python/pandas repr
    assert '"San José, ""Centro"""' in lines[2]  # quoted only where needed


def test_pandas_reads_our_csv_identically(release: Path) -> None:
    pd = pytest.importorskip("pandas")
    df = pd.read_csv(metadata_path(release), dtype=str, keep_default_na=False)
    assert list(df.columns) == list(COLUMNS)
    ours = read_metadata(release)
    for name in ("processid", "chunk", "species", "province_state", "dna_barcode"):
        assert df[name].tolist() == ["" if v is None else v for v in ours[name].to_pylist()]
    assert pd.to_numeric(df["coord-lat"]).fillna(-999).tolist() == [9.93, -1.5, -999, 43.0, 0.0001]


@pytest.mark.slow  # importing the official loader imports torchvision (15-40 s here)
def test_official_loader_reads_our_csv_identically(release: Path) -> None:
    official = pytest.importorskip("bioscan_dataset.bioscan5m")
    df = official.load_bioscan5m_metadata(metadata_path(release))
    ours = read_metadata(release)
    assert df["processid"].tolist() == ours["processid"].to_pylist()
    assert [None if isinstance(c, float) else c for c in df["chunk"]] == ours["chunk"].to_pylist()
    assert df["index_bioscan_1M_insect"].astype("float").fillna(-1).tolist() == [12, -1, 0, 1_000_001, -1]


def test_floats_written_as_integers_read_exactly_and_fractions_fail(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    row = dict.fromkeys(COLUMNS, "")
    row.update(split="val", image_measurement_value="150502.0", inferred_ranks="3.0", dna_barcode="ACGT" * 90)
    row["index_bioscan_1M_insect"] = "1234567.0"
    lines = [",".join(COLUMNS)] + [",".join({**row, "processid": f"P{i}"}[c] for c in COLUMNS) for i in range(4)]
    csv_path = tmp_path / "m.csv"
    csv_path.write_text("\n".join(lines) + "\n")
    table = read_metadata(csv_path)
    assert table["image_measurement_value"].to_pylist() == [150502] * 4
    assert table["index_bioscan_1M_insect"].to_pylist() == [1234567] * 4
    lines[4] = lines[4].replace("150502.0", "150502.5")
    csv_path.write_text("\n".join(lines) + "\n")
    monkeypatch.setattr(md, "_BLOCK_BYTES", 512)  # ~one row per parsed block: the row count spans blocks
    with pytest.raises(
        ValueError, match=r"data row 3 \(processid 'P3'\): column 'image_measurement_value' value 150502\.5"
    ):
        read_metadata(csv_path)


@pytest.mark.parametrize("name", [METADATA_CSV, METADATA_JSONLD])
def test_projection_and_split_filter(release: Path, name: str) -> None:
    table = read_metadata(release / name, columns=["chunk", "processid"], splits=["train", "test"])
    assert table.column_names == ["chunk", "processid"]
    assert table["processid"].to_pylist() == ["GMEEO6589-21", "CRATC20925-23", "BIOUG123-A01"]
    assert table["chunk"].to_pylist() == ["b", None, "0"]


def test_iter_metadata_bounds_batches(release: Path) -> None:
    for name in (METADATA_CSV, METADATA_JSONLD):
        batches = list(iter_metadata(release / name, columns=["processid"], batch_rows=2))
        assert [b.num_rows for b in batches] == [2, 2, 1]
        assert [p for b in batches for p in b["processid"].to_pylist()] == [r[0] for r in ROWS]


def test_unknown_column_and_format_are_refused(release: Path) -> None:
    with pytest.raises(ValueError, match="unknown metadata column"):
        read_metadata(release, columns=["processid", "speices"])
    with pytest.raises(ValueError, match=r"unknown split\(s\) \['trian'\]"):
        read_metadata(release, splits=["train", "trian"])
    with pytest.raises(ValueError, match="unknown metadata format"):
        read_metadata(metadata_path(release).with_suffix(".parquet"))


def _csv_with_short_line(tmp_path: Path) -> Path:
    lines = metadata_path(write_metadata(_table(), tmp_path).parents[3]).read_text().splitlines()
    fields = lines[2].split(",")
    del fields[5]  # line 3 of the file: 22 fields
    lines[2] = ",".join(fields)
    path = tmp_path / "bad.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_malformed_row_is_reported_with_its_line_and_reading_continues(tmp_path: Path) -> None:
    path = _csv_with_short_line(tmp_path)
    rejects: list[Reject] = []
    table = read_metadata(path, rejects=rejects)
    assert table.num_rows == len(ROWS) - 1
    assert len(rejects) == 1 and rejects[0].reason == "malformed_row"
    assert rejects[0].processid == "GMEEO6589-21"
    assert "line 3" in rejects[0].detail and "expected 23 fields, found 22" in rejects[0].detail
    with pytest.warns(UserWarning, match="skipped 1 malformed row.*line 3"):
        read_metadata(path)


def test_malformed_row_inside_the_zip_names_the_same_line(tmp_path: Path) -> None:
    path = _csv_with_short_line(tmp_path)
    with zipfile.ZipFile(tmp_path / METADATA_ZIP, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.write(path, METADATA_CSV)
    rejects: list[Reject] = []
    assert read_metadata(tmp_path / METADATA_ZIP, rejects=rejects).num_rows == len(ROWS) - 1
    assert f"{METADATA_ZIP}:{METADATA_CSV}: line 3:" in rejects[0].detail


def test_malformed_row_fails_in_strict_mode(tmp_path: Path) -> None:
    with pytest.raises(InvalidRecordError, match=r"GMEEO6589-21.*line 3"):
        read_metadata(_csv_with_short_line(tmp_path), strict=True)


def test_conversion_error_and_missing_header_name_the_file(tmp_path: Path, release: Path) -> None:
    text = metadata_path(release).read_text()
    bad = tmp_path / "bad.csv"
    bad.write_text(text.replace("9.93", "nine"))
    with pytest.raises(ValueError, match=r"bad\.csv.*nine"):
        read_metadata(bad)
    bad.write_text(text.replace("province_state", "province"))
    with pytest.raises(ValueError, match=r"header lacks column\(s\) \['province_state'\]"):
        read_metadata(bad)


def test_jsonld_parsing_survives_any_layout_and_tiny_buffers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    records = _table().to_pylist()
    records[0]["image_measurement_value"] = 150502.0  # floats-as-ints, as pandas writes them
    records[1]["chunk"] = ""  # empty string = missing
    path = tmp_path / "m.jsonld"
    path.write_text(json.dumps(records, indent=3))
    monkeypatch.setattr(md, "_JSON_CHUNK_CHARS", 7)  # every record straddles buffer boundaries
    table = read_metadata(path)
    assert table["image_measurement_value"][0].as_py() == 150502
    assert table["chunk"][1].as_py() is None
    assert table["processid"].to_pylist() == [r[0] for r in ROWS]
    path.write_text(json.dumps(records)[:-40])
    with pytest.raises(ValueError, match="record 4"):
        read_metadata(path)


def test_zip_member_is_read_in_place(release: Path) -> None:
    with zipfile.ZipFile(release / METADATA_ZIP) as zf:
        assert set(zf.namelist()) == {METADATA_CSV, METADATA_JSONLD}
    (release / "bioscan5m").rename(release / "elsewhere")  # only the zip remains
    assert read_metadata(release / METADATA_ZIP, splits=["pretrain"])["processid"].to_pylist() == ["AACTA1040-20"]


def test_quoted_newlines_and_crlf_line_ends(tmp_path: Path) -> None:
    rows = [(*ROWS[0][:7], "Line one\nline two"), *ROWS[1:]]
    write_metadata(_table(rows), tmp_path)
    assert read_metadata(tmp_path).equals(_table(rows))
    crlf = tmp_path / "crlf.csv"
    crlf.write_bytes(metadata_path(tmp_path).read_bytes().replace(b"\n", b"\r\n").replace(b"one\r\n", b"one\n"))
    assert read_metadata(crlf).equals(_table(rows))


def test_write_metadata_csv_anywhere(tmp_path: Path, release: Path) -> None:
    path = md.write_metadata_csv(_table(), tmp_path / "out" / "partitioned.csv")
    assert path.read_bytes() == metadata_path(release).read_bytes()
    assert read_metadata(path).equals(_table())


def test_write_metadata_fills_missing_columns_and_refuses_extra(tmp_path: Path) -> None:
    write_metadata(pa.table({"processid": ["A1"], "split": ["val"], "chunk": [""]}), tmp_path)
    table = read_metadata(tmp_path)
    assert table.num_rows == 1 and table["chunk"][0].as_py() is None and table["species"][0].as_py() is None
    with pytest.raises(ValueError, match="unexpected column"):
        write_metadata(pa.table({"processid": ["A1"], "image_path": ["x"]}), tmp_path)
    assert not list(tmp_path.rglob(".*.tmp"))


def test_bbox_round_trip_and_locations(tmp_path: Path) -> None:
    boxes = pa.table(
        {
            "processid": ["A1", "B2"],
            "width_original": [1024, 1024],
            "height_original": [768, 768],
            "x0": [100.0, 10.5],
            "y0": [200.0, 20.0],
            "x1": [612.0, 74.5],
            "y1": [456.0, 100.0],
            "scale_factor": [1.0, 0.25],
            "area_fraction": [0.1667, 0.0065],
        }
    )
    path = write_bbox(boxes, tmp_path)
    assert path == tmp_path / "bioscan5m/metadata/BIOSCAN_5M_Insect_bbox.tsv"
    assert path.read_text().splitlines()[0].split("\t") == boxes.column_names
    assert read_bbox(tmp_path).equals(read_bbox(path)) and read_bbox(path).equals(
        md._conform(boxes, md.BBOX_SCHEMA, "")
    )
    path.rename(tmp_path / "BIOSCAN_5M_Insect_bbox.tsv")  # where the separate download lands
    assert read_bbox(tmp_path)["x0"].to_pylist() == [100.0, 10.5]


def _awkward_table(rows: int, seed: int) -> pa.Table:
    """Random metadata with every value the writers must format like Python: quotes, delimiters, newlines,
    escapes, non-ASCII, nulls and "" in text; floats of all magnitudes, integral and signed zero; big ints."""
    rng = np.random.default_rng(seed)
    texts = ["a,b", 'q"u"o', "two\nlines", "cr\rhere", "tab\there", "", None, "Åland é", "back\\slash", "ctl\x01"]
    texts += ["NA", " lead", "🦋", "plain"]
    floats = rng.standard_normal(rows) * 10.0 ** rng.integers(-12, 18, rows)
    floats[::5], floats[1::7], floats[2::11] = np.round(floats[::5]), 0.0, -0.0
    data: dict[str, pa.Array] = {}
    for field in METADATA_SCHEMA:
        missing = rng.random(rows) < 0.15
        if pa.types.is_floating(field.type):
            data[field.name] = pa.array(rng.permutation(floats), mask=missing)
        elif pa.types.is_integer(field.type):
            data[field.name] = pa.array(rng.integers(-(10**15), 10**15, rows), mask=missing)
        else:
            data[field.name] = pa.array([texts[i] for i in rng.integers(0, len(texts), rows)], pa.string())
    data["image_measurement_value"] = pa.array(rng.integers(0, 10**6, rows).astype(float), mask=missing)  # "3.0"
    return pa.table(data)


def _python_csv(table: pa.Table, delimiter: str) -> bytes:
    """The release format as defined by Python's csv module (what the row-by-row writer produced)."""
    out = io.StringIO()
    writer = csv.writer(out, delimiter=delimiter, lineterminator="\n")
    writer.writerow(table.column_names)
    writer.writerows(zip(*(column.to_pylist() for column in table.columns), strict=True))
    return out.getvalue().encode("utf-8")


def test_writers_write_python_csv_and_json_byte_for_byte(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(md, "_BATCH_ROWS", 64)  # several batches
    table = _awkward_table(300, seed=7)
    special = pa.table({"coord-lat": [1e-5, 1e16, 1e10, 9999999999.5, 5e-324, float("nan"), float("inf"), -0.0]})
    for case in (table, special, table.slice(0, 0)):
        write_metadata(case, tmp_path)
        expected = md._conform(case, METADATA_SCHEMA, "test")
        assert metadata_path(tmp_path).read_bytes() == _python_csv(expected, ",")
        records = "".join(",\n" + json.dumps(row, ensure_ascii=False) for row in expected.to_pylist())
        assert (tmp_path / METADATA_JSONLD).read_text(encoding="utf-8") == "[" + records[1:] + "\n]\n"
    boxes = pa.table({"processid": table["processid"], "x0": table["coord-lon"], "y1": table["inferred_ranks"]})
    conformed = md._conform(boxes, md.BBOX_SCHEMA, "")
    assert write_bbox(boxes, tmp_path).read_bytes() == _python_csv(conformed, "\t")


def test_written_table_reads_back_equal_from_csv_and_jsonld(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(md, "_BATCH_ROWS", 100)
    table = _awkward_table(250, seed=3)
    # a bare "\r" is not quoted (as csv.writer does), so a CSV reader would end the line there
    no_cr = {c: pc.replace_substring(table[c], "\r", "") if table[c].type == pa.string() else table[c] for c in COLUMNS}
    table = md._conform(pa.table(no_cr), METADATA_SCHEMA, "test")
    write_metadata(table, tmp_path)
    assert read_metadata(metadata_path(tmp_path)).equals(table)
    assert read_metadata(tmp_path / METADATA_JSONLD).equals(table)
