"""BioscanStream / make_loader: exactly once across ranks x workers, epochs, resume, S3 with a dropped connection,
corrupt shards, pipe: URLs, and a cross-check with stock webdataset."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pytest
import torch
import webdataset as wds

from bioscan_stream import storage
from bioscan_stream.stream import BioscanStream, CorruptShardError, make_loader

ShardSet = tuple[Path, list[str]]


def _keys(batches: Iterable[dict[str, Any]]) -> list[str]:
    return [key for batch in batches for key in batch["__key__"]]


def _dna_stream(url: Any, **options: Any) -> BioscanStream:
    """DNA + targets only: no image decoding, so the tests time the stream logic, not JPEGs."""
    return BioscanStream(url, "train", modalities=("dna",), targets=("species",), batch_size=4, **options)


@pytest.mark.parametrize("manifest", [True, False])
def test_exactly_once_across_3_ranks_x_2_workers(
    tmp_path: Path, make_shard_set: Callable[..., list[str]], manifest: bool
) -> None:
    keys = make_shard_set(tmp_path, manifest=manifest)
    seen: Counter[str] = Counter()
    per_rank = []
    for rank in range(3):
        loader = make_loader(_dna_stream(str(tmp_path), rank=rank, world_size=3, shuffle_buffer=8), num_workers=2)
        delivered = _keys(loader)
        per_rank.append(len(delivered))
        seen.update(delivered)
    assert sorted(seen) == sorted(keys) and set(seen.values()) == {1}
    if manifest:  # counted plans: ranks differ by at most one sample per worker stream
        assert max(per_rank) - min(per_rank) <= 2


def test_epochs_reshuffle_the_same_set(shard_set: ShardSet) -> None:
    root, keys = shard_set
    loader = make_loader(_dna_stream(str(root), shuffle_buffer=16), num_workers=2)
    orders = []
    for epoch in range(2):
        loader.set_epoch(epoch)
        orders.append(_keys(loader))
    assert orders[0] != orders[1] and sorted(orders[0]) == sorted(orders[1]) == sorted(keys)
    again = make_loader(_dna_stream(str(root), shuffle_buffer=16), num_workers=2)
    assert _keys(again) == orders[0]  # same (seed, epoch): same order


@pytest.mark.parametrize("workers", [0, 2])
def test_resume_mid_epoch_delivers_exactly_the_remainder(shard_set: ShardSet, workers: int) -> None:
    root, keys = shard_set
    loader = make_loader(_dna_stream(str(root), shuffle_buffer=16), num_workers=workers)
    loader.set_epoch(1)
    iterator = iter(loader)
    first = _keys(next(iterator) for _ in range(5))
    state = loader.state_dict()
    del iterator
    resumed = make_loader(_dna_stream(str(root), shuffle_buffer=16), num_workers=workers)
    resumed.load_state_dict(state)
    rest = _keys(resumed)
    assert len(first) == 20 and sorted(first + rest) == sorted(keys)
    full = make_loader(_dna_stream(str(root), shuffle_buffer=16), num_workers=workers)
    full.set_epoch(1)
    assert Counter(_keys(full)) == Counter(first + rest)
    assert resumed.state_dict()["epoch"] == 2  # a finished epoch points at the next one


def test_resume_with_torchdata_stateful_dataloader(shard_set: ShardSet) -> None:
    pytest.importorskip("torchdata.stateful_dataloader")
    root, keys = shard_set
    loader = make_loader(_dna_stream(str(root), shuffle_buffer=16), num_workers=2, stateful=True)
    iterator = iter(loader)
    first = _keys(next(iterator) for _ in range(4))
    state = loader.state_dict()
    del iterator
    resumed = make_loader(_dna_stream(str(root), shuffle_buffer=16), num_workers=2, stateful=True)
    resumed.load_state_dict(state)
    rest = _keys(resumed)
    assert sorted(first + rest) == sorted(keys)


def test_batch_fields_images_and_targets(shard_set: ShardSet) -> None:
    root, keys = shard_set
    ds = BioscanStream(
        str(root),
        "train",
        targets=("species", "genus"),
        batch_size=5,
        transform="eval",
        image_size=16,
        dna_max_offset=0,
    )
    batch = next(iter(ds))
    assert batch["image"].shape == (5, 3, 16, 16) and batch["image"].dtype == torch.float32
    assert (
        batch["dna"].shape == (5, 660 // 4) and batch["dna"].dtype == torch.int64 and batch["dna_mask"].sum() == 5 * 15
    )
    numbers = torch.tensor([int(k[3:]) for k in batch["__key__"]])
    assert torch.equal(batch["species"], numbers % 5) and torch.equal(batch["genus"], numbers % 3)
    assert ds.num_samples == len(keys) and BioscanStream(str(root), resampled=True).num_samples is None
    train, val = BioscanStream(str(root), "train"), BioscanStream(str(root / "train" / "train-000000.tar"), "val")
    assert train.decoder.dna_max_offset == 3 and val.decoder.dna_max_offset == 0  # k-1 offset augmentation in training


def test_only_requested_members_are_decoded(shard_set: ShardSet, monkeypatch: pytest.MonkeyPatch) -> None:
    root, keys = shard_set

    def fail(*args: object) -> None:
        raise AssertionError("an image was decoded")

    monkeypatch.setattr("bioscan_stream.stream.transforms.ImageTransform.__call__", fail)
    assert sorted(_keys(_dna_stream(str(root)))) == sorted(keys)


def test_pipe_urls(shard_set: ShardSet) -> None:
    root, keys = shard_set
    urls = [f"pipe:cat {path}" for path in sorted((root / "train").glob("*.tar"))]
    assert sorted(_keys(make_loader(_dna_stream(urls), num_workers=2))) == sorted(keys)


def test_truncated_shard_is_named_or_skipped_and_counted(shard_set: ShardSet) -> None:
    root, keys = shard_set
    bad = root / "train" / "train-000002.tar"
    bad.write_bytes(bad.read_bytes()[: bad.stat().st_size // 2])
    with pytest.raises(CorruptShardError, match="train-000002.tar"):
        _keys(_dna_stream(str(root)))
    loader = make_loader(_dna_stream(str(root), on_corrupt="skip"), num_workers=2)
    delivered = _keys(loader)
    assert set(delivered) < set(keys) and len(delivered) == len(set(delivered)) and len(delivered) >= len(keys) - 11
    assert sum(loader.corrupt_shards.values()) == 1


def test_stock_webdataset_reads_the_same_samples(shard_set: ShardSet) -> None:
    root, keys = shard_set
    stock = wds.WebDataset(sorted(str(p) for p in (root / "train").glob("*.tar")), shardshuffle=False)
    assert sorted(s["__key__"] for s in stock) == sorted(_keys(_dna_stream(str(root))))


def test_resampled_mode_is_endless(shard_set: ShardSet) -> None:
    root, keys = shard_set
    stream = iter(_dna_stream(str(root), resampled=True))
    drawn = _keys(next(stream) for _ in range(30))
    assert len(drawn) == 120 > len(keys) and set(drawn) <= set(keys)


def _upload(root: Path, bucket: str) -> str:
    for path in sorted(root.rglob("*")):
        if path.is_file():
            storage.put_file(path, storage.join_url(bucket, "cropped_256", str(path.relative_to(root))))
    return storage.join_url(bucket, "cropped_256")


@pytest.mark.s3
def test_s3_stream_survives_a_dropped_connection(
    shard_set: ShardSet,
    s3_bucket: str,
    s3_server: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    from helpers_net import DroppingProxy

    root, keys = shard_set
    url = _upload(root, s3_bucket)
    ds = _dna_stream(url, shuffle_buffer=0, shard_shuffle=False)  # manifest read directly
    proxy = DroppingProxy(int(s3_server.rsplit(":", 1)[1]), cut=40_000)
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{proxy.port}")
    with caplog.at_level(logging.WARNING, logger="bioscan_stream.storage"):
        delivered = _keys(ds)
    assert proxy.drops == 1 and any("retrying" in r.message for r in caplog.records)
    assert delivered == _keys(_dna_stream(str(root), shuffle_buffer=0, shard_shuffle=False))  # same order, no loss
