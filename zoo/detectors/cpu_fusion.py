"""Inference rewrites that make a frozen-BN ResNet backbone cheaper on CPU, checked against the original.

The crop job runs its DETR replicas one thread each. Two costs of the model as loaded then dominate:

- every `FrozenBatchNorm2d` is an extra multiply and add over a full feature map (memory-bound passes);
  folding it into the convolution in front of it removes both;
- with one thread, PyTorch sends 1x1 stride-1 convolutions of small batches to its non-oneDNN path
  (`aten::_slow_conv2d_forward`, about half the single-thread forward of DETR-R50 here); calling oneDNN's
  convolution directly runs them at 143 instead of 83 GFLOP/s (one thread, 256 -> 1024 channels at 200x267,
  this box, 2026-12; a channels-last GEMM through `F.linear` also reaches only 82).

Both change only the rounding of fp32 sums. `fuse_for_cpu` finds the conv -> BN pairs by running a probe
batch with hooks (whatever the backbone's module names), rewrites, runs the probe again and raises if the
outputs moved by more than rounding.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

__all__ = ["OneDnnPointwise", "fuse_for_cpu"]

#: The frozen batch norms' epsilon (transformers' `DetrFrozenBatchNorm2d`, torchvision's `FrozenBatchNorm2d`).
_EPSILON = 1e-5
_NORM_BUFFERS = ("weight", "bias", "running_mean", "running_var")


class OneDnnPointwise(nn.Module):
    """A 1x1 stride-1 convolution run by oneDNN whatever the thread count (fp32 CPU tensors)."""

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        self.weight, self.bias = conv.weight, conv.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.aten.mkldnn_convolution(x, self.weight, self.bias, [0, 0], [1, 1], [1, 1], 1)


def _is_frozen_batch_norm(module: nn.Module) -> bool:
    """A batch norm with fixed statistics and affine buffers (transformers' and torchvision's frozen kinds)."""
    names = {name for name, _ in module.named_buffers(recurse=False)}
    return type(module).__name__.endswith("FrozenBatchNorm2d") and set(_NORM_BUFFERS) <= names


def _conv_bn_pairs(
    model: nn.Module, probe: Callable[[], tuple[torch.Tensor, ...]]
) -> tuple[list[tuple[nn.Conv2d, str]], tuple[torch.Tensor, ...]]:
    """(conv, qualified name of the frozen BN) for every BN whose input is the output of a conv called once, and
    the probe's outputs (the hooks only watch: they are the model's outputs as it stands)."""
    outputs: dict[int, tuple[nn.Conv2d, torch.Tensor]] = {}
    calls: dict[nn.Module, int] = {}
    feeds: dict[str, nn.Conv2d] = {}

    def after_conv(conv: nn.Module, _: Any, output: torch.Tensor) -> None:
        calls[conv] = calls.get(conv, 0) + 1
        outputs[id(output)] = (conv, output)  # type: ignore[assignment]  # keeps `output` alive: ids stay unique

    def before_norm(name: str) -> Callable[[nn.Module, tuple[torch.Tensor, ...]], None]:
        def hook(norm: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
            calls[norm] = calls.get(norm, 0) + 1
            found = outputs.get(id(inputs[0]))
            if found is not None and found[1] is inputs[0]:
                feeds[name] = found[0]

        return hook

    modules = dict(model.named_modules())
    handles = [m.register_forward_hook(after_conv) for m in modules.values() if type(m) is nn.Conv2d]
    norms = {name: m for name, m in modules.items() if _is_frozen_batch_norm(m)}
    handles += [m.register_forward_pre_hook(before_norm(name)) for name, m in norms.items()]
    try:
        outputs_before = probe()
    finally:
        for handle in handles:
            handle.remove()
    pairs = [(conv, name) for name, conv in feeds.items() if calls[conv] == 1 and calls[norms[name]] == 1]
    return pairs, outputs_before


def _replace(model: nn.Module, name: str, new: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, new)


@torch.no_grad()
def _fold(conv: nn.Conv2d, norm: nn.Module) -> None:
    weight, bias, mean, var = (norm.get_buffer(name) for name in _NORM_BUFFERS)
    scale = weight * (var + _EPSILON).rsqrt()
    shift = bias - mean * scale
    conv.weight.mul_(scale.reshape(-1, 1, 1, 1))
    bias = shift if conv.bias is None else conv.bias * scale + shift
    conv.bias = nn.Parameter(bias.clone(), requires_grad=False)


def _pointwise(conv: nn.Module) -> bool:
    return (
        type(conv) is nn.Conv2d
        and conv.kernel_size == (1, 1)
        and conv.stride == (1, 1)
        and conv.padding in ((0, 0), "valid")
        and conv.dilation == (1, 1)
        and conv.groups == 1
    )


@torch.no_grad()
def fuse_for_cpu(
    model: nn.Module, probe: Callable[[], tuple[torch.Tensor, ...]], *, tolerance: float = 1e-3
) -> dict[str, int]:
    """Fold frozen BNs into their convs and run 1x1 convs through oneDNN, in place; returns how many of each.

    `probe()` runs `model` on a small fixed batch and returns its outputs; they are compared before and after
    (max abs difference over max abs value <= `tolerance`), else `RuntimeError`: a pair was misread.
    """
    pairs, before = _conv_bn_pairs(model, probe)
    for conv, name in pairs:
        _fold(conv, model.get_submodule(name))
        _replace(model, name, nn.Identity())
    pointwise = (
        [name for name, m in model.named_modules() if _pointwise(m)] if torch.backends.mkldnn.is_available() else []
    )
    for name in pointwise:
        _replace(model, name, OneDnnPointwise(model.get_submodule(name)))  # type: ignore[arg-type]
    after = probe()
    for old, new in zip(before, after, strict=True):
        drift = float((old - new).abs().max()) / max(float(old.abs().max()), 1e-6)
        if drift > tolerance:
            raise RuntimeError(f"CPU fusion changed the model's outputs by {drift:.2e} of their scale")
    return {"folded_batch_norms": len(pairs), "pointwise_onednn": len(pointwise)}
