"""Tests of `zoo.detectors.cpu_fusion`: folded batch norms and 1x1 convolutions through oneDNN give the same outputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers_detr import TINY_DETR
from torch import nn
from transformers.models.detr.modeling_detr import DetrFrozenBatchNorm2d

from zoo.detectors.cpu_fusion import OneDnnPointwise, fuse_for_cpu
from zoo.detectors.detr import DetrDetector


def _frozen(channels: int, seed: int) -> DetrFrozenBatchNorm2d:
    norm = DetrFrozenBatchNorm2d(channels)
    generator = torch.Generator().manual_seed(seed)
    for buffer in (norm.weight, norm.bias, norm.running_mean):
        buffer.copy_(torch.randn(channels, generator=generator))
    norm.running_var.copy_(torch.rand(channels, generator=generator) + 0.5)
    return norm


class Block(nn.Module):
    """conv -> BN twice, plus a BN whose input is not a conv's output and a conv used twice (both left alone)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(3, 8, 3, padding=1, bias=False), _frozen(8, 1)
        self.conv2, self.bn2 = nn.Conv2d(8, 8, 1, bias=True), _frozen(8, 2)
        self.bn_after_relu = _frozen(8, 3)
        self.shared = nn.Conv2d(8, 8, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor]:
        x = self.bn1(self.conv1(x))
        x = self.bn_after_relu(torch.relu(self.bn2(self.conv2(x))))
        return (self.shared(self.shared(x)),)


def test_folds_conv_bn_pairs_and_keeps_outputs() -> None:
    torch.manual_seed(0)
    block = Block().eval()
    x = torch.randn(2, 3, 10, 12).contiguous(memory_format=torch.channels_last)
    expected = block(x)[0]
    counts = fuse_for_cpu(block, lambda: block(x))
    assert counts == {"folded_batch_norms": 2, "pointwise_onednn": 2}  # conv2 and shared: 1x1, stride 1
    assert isinstance(block.bn1, nn.Identity) and isinstance(block.bn2, nn.Identity)
    assert isinstance(block.bn_after_relu, DetrFrozenBatchNorm2d)  # its input is a ReLU's output
    assert isinstance(block.conv2, OneDnnPointwise) and isinstance(block.shared, OneDnnPointwise)
    torch.testing.assert_close(block(x)[0], expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(block(x.contiguous())[0], expected, rtol=1e-5, atol=1e-5)  # NCHW input too


def test_a_changed_output_is_refused() -> None:
    block = Block().eval()
    x = torch.randn(1, 3, 8, 8)
    calls = iter(range(10))
    with pytest.raises(RuntimeError, match="changed the model's outputs"):
        fuse_for_cpu(block, lambda: (block(x)[0] + next(calls),))


def test_detr_fused_runner_gives_the_loaded_models_boxes() -> None:
    fused = DetrDetector(architecture=TINY_DETR, seed=3)
    plain = DetrDetector(architecture=TINY_DETR, seed=3, cpu_fusion=False)
    assert fused.fusion == {}  # fused at the first forward: a driver that only fingerprints never pays for it
    image = np.full((768, 1024, 3), 150, np.uint8)
    image[200:400, 300:600] = (40, 30, 20)
    (a,), (b,) = fused.detect([image]), plain.detect([image])
    assert fused.fusion["folded_batch_norms"] > 0 and fused.fusion["pointwise_onednn"] > 0 and plain.fusion == {}
    assert fused.fingerprint() == plain.fingerprint()  # the weights as loaded, not as fused
    assert not any(isinstance(m, OneDnnPointwise) for m in fused.model.modules())  # `model` stays saveable
    assert a.box is not None and b.box is not None
    assert np.abs(np.subtract(a.box, b.box)).max() < 0.01 and a.score == pytest.approx(b.score, abs=1e-5)
