"""shardlists: URL resolution, per-epoch shard order, and exactly-once plans for any number of streams."""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from bioscan_stream.stream.shardlists import (
    Partition,
    Shard,
    current_partition,
    expand_urls,
    resampled_pieces,
    resolve_shards,
    shuffle_shards,
    split_pieces,
)

#: 7 shards of unequal sizes, as in the stream fixtures.
UNEVEN = (9, 3, 11, 5, 7, 2, 10)


def _delivered(shards: list[Shard], streams: int, counts: list[int]) -> Counter[tuple[str, int]]:
    """(shard, sample index) pairs taken by all streams, simulated on the known true counts."""
    size = {s.url: n for s, n in zip(shards, counts, strict=True)}
    taken: Counter[tuple[str, int]] = Counter()
    for stream in range(streams):
        for piece in split_pieces(shards, Partition(rank=0, world=1, worker=stream, workers=streams)):
            stop = size[piece.url] if piece.stop is None else piece.stop
            taken.update((piece.url, i) for i in range(stop) if piece.takes(i))
    return taken


@pytest.mark.quick
@pytest.mark.parametrize("with_counts", [True, False])
@pytest.mark.parametrize("streams", [1, 2, 3, 4, 6, 7, 8, 13, 60])
def test_every_sample_once_for_any_number_of_streams(with_counts: bool, streams: int) -> None:
    counts = list(UNEVEN)
    shards = [Shard(f"s{i}.tar", n if with_counts else None) for i, n in enumerate(counts)]
    taken = _delivered(shuffle_shards(shards, seed=3, epoch=1), streams, counts)
    assert sum(taken.values()) == sum(counts) and set(taken.values()) == {1}


@pytest.mark.quick
def test_counted_plans_are_balanced_to_one_sample() -> None:
    shards = [Shard(f"s{i}.tar", n) for i, n in enumerate(UNEVEN)]
    sizes = [sum(p.size or 0 for p in split_pieces(shards, Partition(worker=s, workers=6))) for s in range(6)]
    assert max(sizes) - min(sizes) <= 1 and sum(sizes) == sum(UNEVEN)


@pytest.mark.quick
def test_shard_order_is_seeded_by_seed_and_epoch() -> None:
    shards = [Shard(f"s{i}.tar", 1) for i in range(20)]
    first = shuffle_shards(shards, seed=0, epoch=0)
    assert first == shuffle_shards(shards, seed=0, epoch=0)
    assert first != shuffle_shards(shards, seed=0, epoch=1) and first != shuffle_shards(shards, seed=1, epoch=0)
    assert sorted(first, key=lambda s: s.url) == sorted(shards, key=lambda s: s.url)


def test_resolve_manifest_listing_pattern_and_pipe(tmp_path: Path, make_shard_set: Callable[..., list[str]]) -> None:
    make_shard_set(tmp_path / "a", (3, 2))
    from_manifest = resolve_shards(str(tmp_path / "a"), "train")
    assert [(Path(s.url).name, s.samples) for s in from_manifest] == [("train-000000.tar", 3), ("train-000001.tar", 2)]
    make_shard_set(tmp_path / "b", (3, 2), manifest=False)
    listed = resolve_shards(str(tmp_path / "b"), "train")
    assert [Path(s.url).name for s in listed] == ["train-000000.tar", "train-000001.tar"]
    assert all(s.samples is None for s in listed)
    assert expand_urls("x-{000..002}.tar") == ["x-000.tar", "x-001.tar", "x-002.tar"]
    assert [s.url for s in resolve_shards("pipe:cat a-{0..1}.tar")] == ["pipe:cat a-0.tar", "pipe:cat a-1.tar"]
    with pytest.raises(FileNotFoundError, match="val"):
        resolve_shards(str(tmp_path / "b"), "val")
    with pytest.raises(KeyError, match="no split 'val' in the manifest; its splits: train"):
        resolve_shards(str(tmp_path / "a"), "val")


@pytest.mark.quick
def test_resampled_plan_is_endless_and_seeded() -> None:
    shards = [Shard(f"s{i}.tar", 2) for i in range(3)]

    def draw(stream: int) -> list[str]:
        pieces = resampled_pieces(shards, seed=0, epoch=0, partition=Partition(worker=stream, workers=2))
        return [piece.url for piece in itertools.islice(pieces, 50)]

    assert len(draw(0)) == 50 and draw(0) == draw(0) and draw(0) != draw(1)
    assert set(draw(0)) == {s.url for s in shards}


@pytest.mark.quick
def test_explicit_partition_and_validation() -> None:
    part = current_partition(rank=2, world_size=3)
    assert (part.rank, part.world, part.worker, part.workers, part.stream, part.streams) == (2, 3, 0, 1, 2, 3)
    with pytest.raises(ValueError):
        Partition(rank=3, world=3)
