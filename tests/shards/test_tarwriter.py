"""Round trip of the deterministic tar writer: stock webdataset and tarfile read it back unchanged."""

from __future__ import annotations

import hashlib
import io
import tarfile
from pathlib import Path

import numpy as np
import pytest
import webdataset as wds

from bioscan_stream.shards.tarwriter import _member, write_tar

pytestmark = pytest.mark.quick


def _samples(n: int) -> list[dict[str, bytes | str]]:
    return [{"__key__": f"PID{i:04d}-21", "jpg": bytes([i]) * (100 + i), "dna.txt": "ACGT" * (i + 1)} for i in range(n)]


def test_round_trip_with_stock_webdataset(tmp_path: Path) -> None:
    info = write_tar(tmp_path / "train-000000.tar", _samples(5))
    assert (info.name, info.samples) == ("train-000000.tar", 5)
    data = (tmp_path / "train-000000.tar").read_bytes()
    assert info.bytes == len(data) and info.sha256 == hashlib.sha256(data).hexdigest()
    read = list(wds.WebDataset(str(tmp_path / "train-000000.tar"), shardshuffle=False))
    assert [s["__key__"] for s in read] == [f"PID{i:04d}-21" for i in range(5)]
    assert read[3]["jpg"] == bytes([3]) * 103 and read[3]["dna.txt"] == b"ACGT" * 4


def test_byte_identical_reruns_and_fixed_headers(tmp_path: Path) -> None:
    a = write_tar(tmp_path / "a.tar", _samples(4))
    b = write_tar(tmp_path / "b.tar", _samples(4))
    assert a.sha256 == b.sha256
    with tarfile.open(tmp_path / "a.tar") as tar:
        members = tar.getmembers()
    assert {(m.mtime, m.uid, m.gid, m.uname, m.gname, m.mode) for m in members} == {(0, 0, 0, "", "", 0o644)}


def test_failed_write_leaves_nothing(tmp_path: Path) -> None:
    def broken() -> list[dict[str, bytes | str]]:
        yield from _samples(2)
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        write_tar(tmp_path / "x.tar", broken())
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("key", ["../evil", "a/b", ".hidden", "with.dot", ""])
def test_rejects_unsafe_keys(tmp_path: Path, key: str) -> None:
    with pytest.raises(ValueError, match="invalid sample key"):
        write_tar(tmp_path / "x.tar", [{"__key__": key, "jpg": b"x"}])


def test_members_across_write_blocks_match_tarfile(tmp_path: Path) -> None:
    """Output is buffered in ~1 MiB blocks: members straddling and exceeding a block are written as tarfile does."""
    rng = np.random.default_rng(0)
    sizes = [300_000] * 7 + [2_500_000, 0, 511, 513]
    samples = [{"__key__": f"K{i}", "jpg": rng.bytes(size), "json": "{}"} for i, size in enumerate(sizes)]
    info = write_tar(tmp_path / "ours.tar", samples)
    with tarfile.open(tmp_path / "ref.tar", "w", format=tarfile.USTAR_FORMAT) as tar:
        for sample in samples:
            for ext in ("jpg", "json"):
                value = sample[ext]
                payload = value.encode() if isinstance(value, str) else value
                tar.addfile(_member(f"{sample['__key__']}.{ext}", payload), io.BytesIO(payload))
    reference = (tmp_path / "ref.tar").read_bytes()
    assert (tmp_path / "ours.tar").read_bytes() == reference
    assert (info.bytes, info.sha256) == (len(reference), hashlib.sha256(reference).hexdigest())
