"""Shard plans: deterministic, complete, sized by bytes, and never fewer than `min_shards` for small splits."""

from __future__ import annotations

import numpy as np
import pytest

from bioscan_stream.shards.plan import plan_split, tar_bytes


def _rows(specs: list) -> list[int]:
    return [r for s in specs for r in s.rows]


def test_every_row_in_exactly_one_shard_numbered_from_zero() -> None:
    rows = np.arange(100, 1100)
    specs = plan_split("train", rows, bytes_per_sample=1000, seed=3, shard_bytes=100_000)
    assert sorted(_rows(specs)) == rows.tolist()
    assert [s.number for s in specs] == list(range(len(specs)))
    assert specs[0].path == "train/train-000000.tar"


def test_same_seed_same_plan_other_seed_other_order() -> None:
    rows = np.arange(500)
    a = plan_split("val", rows, bytes_per_sample=10, seed=7, shard_bytes=1000)
    b = plan_split("val", rows, bytes_per_sample=10, seed=7, shard_bytes=1000)
    c = plan_split("val", rows, bytes_per_sample=10, seed=8, shard_bytes=1000)
    assert a == b
    assert _rows(a) != _rows(c)
    assert _rows(a) != sorted(_rows(a)), "rows must be shuffled across shards"


def test_splits_get_independent_shuffles() -> None:
    rows = np.arange(200)
    kw = {"bytes_per_sample": 1.0, "seed": 0, "shard_bytes": 10**9}
    assert _rows(plan_split("train", rows, **kw)) != _rows(plan_split("test", rows, **kw))


@pytest.mark.parametrize(
    ("n", "per_sample", "target", "expected"),
    [(1000, 1000, 100_000, 10), (1000, 1000, 10**9, 4), (3, 1000, 10**9, 3), (1001, 1000, 100_000, 11)],
)
def test_shard_count_targets_bytes_with_a_floor(n: int, per_sample: float, target: int, expected: int) -> None:
    specs = plan_split("test", np.arange(n), bytes_per_sample=per_sample, seed=0, shard_bytes=target, min_shards=4)
    assert len(specs) == expected
    sizes = [len(s.rows) for s in specs]
    assert max(sizes) - min(sizes) <= 1


def test_empty_split_and_bad_parameters() -> None:
    assert plan_split("val", np.arange(0), bytes_per_sample=1, seed=0) == []
    with pytest.raises(ValueError, match="shard_bytes"):
        plan_split("val", np.arange(3), bytes_per_sample=1, seed=0, shard_bytes=0)


def test_tar_bytes_counts_headers_and_padding() -> None:
    assert tar_bytes({"jpg": 1}) == 1024
    assert tar_bytes({"jpg": 512, "json": 513}) == 512 + 512 + 512 + 1024
