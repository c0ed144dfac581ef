"""Manifest pieces: per-split shard lists in number order and totals that must add up."""

from __future__ import annotations

import pytest

from bioscan_stream.shards.manifest import shard_entries, split_totals
from bioscan_stream.shards.tarwriter import ShardInfo
from bioscan_stream.shards.writer import ShardResult
from bioscan_stream.validate import Reject


def _result(path: str, samples: int) -> ShardResult:
    return ShardResult(path, ShardInfo(path.split("/")[-1], samples, 10240, "ab" * 32), digest="d")


def test_shard_entries_sorted_per_split() -> None:
    results = [_result("val/val-000001.tar", 2), _result("train/train-000000.tar", 5), _result("val/val-000000.tar", 3)]
    entries = shard_entries(results, ["train", "val", "test"])
    assert [s["path"] for s in entries["val"]["shards"]] == ["val/val-000000.tar", "val/val-000001.tar"]
    assert entries["val"]["samples"] == 5 and entries["val"]["bytes"] == 20480
    assert entries["test"] == {"samples": 0, "bytes": 0, "shards": []}


def test_totals_add_up_and_unknown_splits_get_their_own_entry() -> None:
    rejects = [
        Reject("a", "train", "missing_image", "x"),
        Reject("b", "bogus", "unknown_split", "y"),
        Reject(None, None, "malformed_row", "z"),
    ]
    totals = split_totals({"train": 4}, {"train": 3}, rejects)
    assert totals["train"] == {"read": 4, "written": 3, "rejected": 1, "rejected_by_reason": {"missing_image": 1}}
    assert totals["bogus"]["read"] == totals["bogus"]["rejected"] == 1
    assert totals["<none>"]["rejected_by_reason"] == {"malformed_row": 1}


def test_totals_that_do_not_add_up_raise_naming_the_split() -> None:
    with pytest.raises(RuntimeError, match="'train'"):
        split_totals({"train": 5}, {"train": 3}, [Reject("a", "train", "missing_image", "x")])
