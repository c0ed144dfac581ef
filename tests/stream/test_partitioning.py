"""`partitioning=`: a BIOSCAN-1M shard set's split is the union of the groups its manifest names for it."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from bioscan_stream.schema import INDEX_FILE
from bioscan_stream.stream import BioscanStream
from bioscan_stream.stream.shardlists import resolve_shards


def _set_1m(root: Path, write_shard_set: Callable[..., list[str]]) -> dict[str, list[str]]:
    """Three groups (one emptied by rejects) and a manifest with `partitionings`, as the converter writes it."""
    keys, splits = {}, {}
    for group, sizes in (("p-tttttt", (3, 4)), ("p-tnnttn", (5,)), ("p-eeeeee", ())):
        folder = root / "tmp" / group
        keys[group] = write_shard_set(folder, sizes, split=group) if sizes else []
        index = json.loads((folder / INDEX_FILE).read_text()) if sizes else {"splits": {group: {"shards": []}}}
        splits.update(index["splits"])
        if sizes:
            (folder / group).rename(root / group)
    partitionings = {
        "large_insect_order": {"train": ["p-tnnttn", "p-tttttt"], "test": ["p-eeeeee"]},
        "small_insect_order": {"train": ["p-tttttt"], "validation": [], "test": ["p-eeeeee"]},
    }
    (root / INDEX_FILE).write_text(json.dumps({"splits": splits, "partitionings": partitionings}))
    return keys


def test_a_partitioning_split_reads_its_groups_exactly_once(
    tmp_path: Path, make_shard_set: Callable[..., list[str]]
) -> None:
    keys = _set_1m(tmp_path, make_shard_set)
    assert len(resolve_shards(str(tmp_path), "train", partitioning="large_insect_order")) == 3
    stream = BioscanStream(
        str(tmp_path), partitioning="large_insect_order", split="train", modalities=(), targets=("species",)
    )
    got = [sample["__key__"] for sample in stream]
    assert sorted(got) == sorted(keys["p-tttttt"] + keys["p-tnnttn"]) and stream.num_samples == 12
    small = BioscanStream(str(tmp_path), partitioning="small_insect_order", split="train", modalities=(), targets=())
    assert small.num_samples == 7
    with pytest.raises(FileNotFoundError, match="no shards for split 'test'"):  # its only group lost every record
        resolve_shards(str(tmp_path), "test", partitioning="large_insect_order")
    with pytest.raises(KeyError, match="no split 'val'"):
        resolve_shards(str(tmp_path), "val", partitioning="large_insect_order")
    make_shard_set(tmp_path / "5m", (2,))
    with pytest.raises(ValueError, match="not a BIOSCAN-1M shard set"):
        resolve_shards(str(tmp_path / "5m"), "train", partitioning="large_insect_order")
