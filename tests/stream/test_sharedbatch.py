"""sharedbatch: worker batches sent by reference through reusable segments, released by the receiver, never
reused while any tensor or view of the receiver still holds them; fallbacks when all slots are busy."""

from __future__ import annotations

import gc
import pickle
from multiprocessing.reduction import ForkingPickler
from pathlib import Path
from typing import Any

import pytest
import torch

from bioscan_stream.stream import BioscanStream, make_loader, sharedbatch


@pytest.fixture(autouse=True)
def fresh_pool(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sharedbatch, "_pool", None)


def _send(tensor: torch.Tensor) -> torch.Tensor:
    """One trip through the DataLoader queue's pickler, this process playing the receiver."""
    received = pickle.loads(ForkingPickler.dumps(tensor))
    assert type(received) is torch.Tensor
    return received


def test_a_slot_is_reused_only_after_every_receiver_view_is_gone() -> None:
    expected = torch.arange(32, dtype=torch.float32).view(4, 8)
    sent = sharedbatch.empty((4, 8), torch.float32)
    sent.copy_(expected)
    first = sent.data_ptr()
    exported = sharedbatch.export(sent[1:].t())  # a strided view at an offset
    assert isinstance(exported, sharedbatch.SlotTensor)
    received = _send(exported)
    del sent, exported
    assert torch.equal(received, expected[1:].t()) and not received.untyped_storage().is_shared()
    view = received[::2]
    del received
    gc.collect()
    held = sharedbatch.empty((4, 8), torch.float32)  # the first slot is still busy: a second one
    assert held.data_ptr() != first
    assert torch.equal(view, expected[1:].t()[::2])
    del view
    gc.collect()
    reused = sharedbatch.empty((4, 8), torch.float32)
    assert reused.data_ptr() == first  # released: reused
    reused.fill_(7.0)
    assert torch.equal(_send(sharedbatch.export(reused)), torch.full((4, 8), 7.0))  # mapped: sent without its fd


def test_all_slots_busy_falls_back_to_fresh_torch_segments() -> None:
    shape, kept = (sharedbatch.INLINE_BYTES // 8 + 1,), []
    for number in range(sharedbatch.SLOTS):
        tensor = sharedbatch.empty(shape, torch.int64)
        tensor.fill_(number)
        kept.append(_send(sharedbatch.export(tensor)))
    extra = sharedbatch.empty(shape, torch.int64)
    assert extra.untyped_storage().is_shared() and sharedbatch.export(extra) is extra
    assert [int(t[-1]) for t in kept] == list(range(sharedbatch.SLOTS))


def test_small_tensors_travel_by_value() -> None:
    targets = torch.arange(12, dtype=torch.int64).view(4, 3)[:, 1]  # a strided view, like a batch's target column
    exported = sharedbatch.export(targets)
    assert isinstance(exported, sharedbatch.InlineTensor)
    received = _send(exported)
    assert torch.equal(received, targets) and not received.untyped_storage().is_shared()
    assert _send(sharedbatch.export(torch.empty(0, 5))).shape == (0, 5)


def test_a_slot_tensor_sent_twice_is_copied_the_second_time() -> None:
    tensor = sharedbatch.empty((8,), torch.float32)
    tensor.fill_(3.0)
    exported = sharedbatch.export(tensor)
    first, second = _send(exported), _send(exported)
    assert not first.untyped_storage().is_shared() and second.untyped_storage().is_shared()
    first.fill_(0.0)
    assert torch.equal(second, torch.full((8,), 3.0))


def _images(batches: Any) -> dict[str, torch.Tensor]:
    return {key: image for batch in batches for key, image in zip(batch["__key__"], batch["image"], strict=True)}


@pytest.mark.parametrize("normalize", [True, False])
def test_worker_batches_equal_in_process_ones_and_held_batches_stay_intact(
    shard_set: tuple[Path, list[str]], normalize: bool
) -> None:
    root, keys = shard_set
    ds = BioscanStream(str(root), "train", modalities=("image",), batch_size=5, transform="eval", image_size=16,
                       normalize=normalize)  # fmt: skip
    expected = _images(iter(ds))
    loader = make_loader(ds, num_workers=2)
    held = [b for b in loader]  # kept alive through the next epoch: their slots must not be reused
    snapshot = {key: image.clone() for key, image in _images(held).items()}
    again = _images(loader)
    assert sorted(expected) == sorted(snapshot) == sorted(again) == sorted(keys)
    for key, image in _images(held).items():
        assert torch.equal(image, snapshot[key]) and torch.equal(image, expected[key])
        assert torch.equal(again[key], expected[key])
