"""verify_shards: every problem is found and names its shard or split."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import pytest

from bioscan_stream.shards.tarwriter import write_tar
from bioscan_stream.shards.verify import find_shard_sets, verify_shards

pytestmark = pytest.mark.quick


def _shard_set(root: Path) -> dict:
    samples = [[{"__key__": f"P{k}{i}", "jpg": b"x" * 700} for i in range(3)] for k in range(2)]
    infos = [write_tar(root / "val" / f"val-00000{k}.tar", shard) for k, shard in enumerate(samples)]
    (root / "rejects.jsonl").write_text(
        json.dumps({"processid": "Q", "split": "val", "reason": "missing_image"}) + "\n"
    )
    shards = [{**asdict(i), "path": f"val/{i.name}"} for i in infos]
    manifest = {
        "splits": {"val": {"samples": 6, "bytes": sum(i.bytes for i in infos), "shards": shards}},
        "totals": {"val": {"read": 7, "written": 6, "rejected": 1}},
        "rejects": {"file": "rejects.jsonl", "count": 1},
    }
    (root / "index.json").write_text(json.dumps(manifest))
    return manifest


def test_valid_set(tmp_path: Path) -> None:
    _shard_set(tmp_path)
    report = verify_shards(str(tmp_path))
    assert report.ok and (report.shards, report.samples) == (2, 6)


def test_each_problem_is_named(tmp_path: Path) -> None:
    manifest = _shard_set(tmp_path)
    (tmp_path / "val" / "val-000001.tar").unlink()
    manifest["splits"]["val"]["shards"][0]["samples"] = 4
    manifest["totals"]["val"]["read"] = 8
    manifest["rejects"]["count"] = 2
    (tmp_path / "index.json").write_text(json.dumps(manifest))
    problems = "\n".join(verify_shards(str(tmp_path)).problems)
    assert "shard val/val-000001.tar: missing" in problems
    assert "shard val/val-000000.tar: 3 samples in the tar != manifest 4" in problems
    assert "split val: written 6 + rejected 1 != read 8" in problems
    assert "1 lines != manifest count 2" in problems


def test_no_manifest(tmp_path: Path) -> None:
    assert "no manifest" in verify_shards(str(tmp_path)).problems[0]


def test_find_shard_sets_under_a_folder(tmp_path: Path) -> None:
    _shard_set(tmp_path / "cropped_256")
    _shard_set(tmp_path / "dna")
    (tmp_path / "store").mkdir()
    (tmp_path / "store" / "index.json").write_text(json.dumps({"modality": "dna", "splits": ["train"]}))
    assert find_shard_sets(str(tmp_path)) == [str(tmp_path / "cropped_256"), str(tmp_path / "dna")]
    assert find_shard_sets(str(tmp_path / "dna")) == [str(tmp_path / "dna")]
    assert find_shard_sets(str(tmp_path / "missing")) == []
