"""One shard task: samples exactly as the source, rejects for bad images, journal-based reuse."""

from __future__ import annotations

import io
import json
import math
import tarfile
from pathlib import Path

import pyarrow as pa
import pytest
from PIL import Image

from bioscan_stream.layout import MissingImage
from bioscan_stream.shards.writer import (
    ShardJob,
    dna_key,
    jpeg_problem,
    sample_texts,
    write_dna_shard,
    write_image_shard,
)
from bioscan_stream.validate import InvalidRecordError


def _jpeg(color: int = 100) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (16, 12), (color, 50, 20)).save(out, format="JPEG")
    return out.getvalue()


class _Store:
    """Dict-backed stand-in for `ImageStore` (same `read` contract)."""

    def __init__(self, images: dict[str, bytes]) -> None:
        self.images = images

    def read(self, processid: str, split: str) -> bytes:
        if processid not in self.images:
            raise MissingImage(processid, split, "cropped_256", ["nowhere"])
        return self.images[processid]


def _job(tmp_path: Path, *, strict: bool = False) -> ShardJob:
    return ShardJob("val/val-000000.tar", str(tmp_path / "val/val-000000.tar"), str(tmp_path / "_j/val-0.json"), strict)


def _records(n: int) -> pa.Table:
    rows = [{"processid": f"P{i}", "split": "val", "dna_barcode": "ACGT", "coord-lat": float("nan")} for i in range(n)]
    return pa.Table.from_pylist(rows)


def _no_targets(n: int) -> pa.Table:
    """A targets table of `n` rows and no ranks."""
    return pa.table({"_": pa.nulls(n)}).drop_columns(["_"])


def test_jpeg_problem() -> None:
    good = _jpeg()
    assert jpeg_problem(good) is None
    assert "not a JPEG" in str(jpeg_problem(b"GIF89a" + good))
    assert "truncated" in str(jpeg_problem(good[:-10]))
    assert "start-of-scan" in str(jpeg_problem(good[:200]))  # cut inside the header segments
    assert jpeg_problem(good + b"camera trailer \xff\xe1 after EOI") is None
    assert "empty" in str(jpeg_problem(b""))
    assert "corrupt" in str(jpeg_problem(good[:3] + b"\x00" * 40 + good[-2:]))


def test_image_shard_members_bytes_and_rejects(tmp_path: Path) -> None:
    images = {"P0": _jpeg(1), "P2": _jpeg(2)[:100], "P3": _jpeg(3)}  # P1 missing, P2 truncated
    targets = pa.table({"order": pa.array(range(4), pa.int64()), "species": pa.array([-1] * 4, pa.int64())})
    result = write_image_shard(_job(tmp_path), _Store(images), _records(4), targets)
    assert result.info.samples == 2 and not result.reused
    assert {(r.processid, r.reason) for r in result.rejects} == {("P1", "missing_image"), ("P2", "unreadable_image")}
    with tarfile.open(tmp_path / "val/val-000000.tar") as tar:
        names = tar.getnames()
        assert names[:4] == ["P0.jpg", "P0.dna.txt", "P0.json", "P0.targets.json"]
        assert tar.extractfile("P3.jpg").read() == images["P3"]  # type: ignore[union-attr]
        assert json.loads(tar.extractfile("P3.json").read())["coord-lat"] is None  # type: ignore[union-attr]
        assert json.loads(tar.extractfile("P3.targets.json").read()) == {"order": 3, "species": -1}  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "record",
    [
        {"processid": "P0", "species": "NaN sp.", "coord-lat": 1.5, "coord-lon": None},  # "NaN" inside a string
        {"processid": "P1", "species": "Infinity", "coord-lat": float("-inf"), "coord-lon": float("inf")},
        {"processid": "P2", "species": "Aus bus", "coord-lat": 1e16, "coord-lon": -0.0, "inferred_ranks": 3},
    ],
)
def test_metadata_json_is_strict_json_of_every_field(record: dict[str, object]) -> None:
    (text,), (targets,) = sample_texts(pa.Table.from_pylist([record]), _no_targets(1))
    assert targets == "{}"
    expected = {k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in record.items()}
    assert text == json.dumps(expected, ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def test_strict_raises_naming_the_record(tmp_path: Path) -> None:
    with pytest.raises(InvalidRecordError, match="P1"):
        write_image_shard(_job(tmp_path, strict=True), _Store({"P0": _jpeg()}), _records(2), _no_targets(2))


def test_reuse_only_when_journal_and_hash_match(tmp_path: Path) -> None:
    job, store = _job(tmp_path), _Store({f"P{i}": _jpeg(i) for i in range(3)})
    first = write_image_shard(job, store, _records(3), _no_targets(3))
    again = write_image_shard(job, store, _records(3), _no_targets(3))
    assert again.reused and again.info == first.info
    other_plan = write_image_shard(job, store, _records(2), _no_targets(2))
    assert not other_plan.reused and other_plan.info.samples == 2
    Path(job.url).write_bytes(b"garbage")
    rewritten = write_image_shard(job, store, _records(2), _no_targets(2))
    assert not rewritten.reused and rewritten.info == other_plan.info
    Path(job.journal_url).write_text("{torn journal")
    assert not write_image_shard(job, store, _records(2), _no_targets(2)).reused
    Path(job.journal_url).write_bytes(b"")  # what a power cut can leave of a journal that was not fsynced
    assert not write_image_shard(job, store, _records(2), _no_targets(2)).reused
    assert write_image_shard(job, store, _records(2), _no_targets(2)).reused


def test_dna_shard(tmp_path: Path) -> None:
    job = ShardJob("d/d-000000.tar", str(tmp_path / "d.tar"), str(tmp_path / "d.json"))
    result = write_dna_shard(job, ["ACGT", "GGA"], [3, 1])
    with tarfile.open(job.url) as tar:
        assert tar.getnames() == [f"{dna_key('ACGT')}.dna.txt", f"{dna_key('ACGT')}.count.txt"] + [
            f"{dna_key('GGA')}.dna.txt",
            f"{dna_key('GGA')}.count.txt",
        ]
        assert tar.extractfile(f"{dna_key('ACGT')}.count.txt").read() == b"3"  # type: ignore[union-attr]
    assert result.info.samples == 2 and write_dna_shard(job, ["ACGT", "GGA"], [3, 1]).reused
