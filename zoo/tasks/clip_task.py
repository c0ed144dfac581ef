"""The CLIP contrastive task: a `ClipModel` + the mean of the directed InfoNCE terms between its modalities.

Sits between `zoo/models/clip.py` (towers) and `zoo/tasks/clip_loop.py` (the Ray Train loop), which wraps
`ClipTask` in DDP. With modalities M (two or three), the loss is the mean over the |M|(|M|-1) directed pairs
(a -> b) of the cross-entropy of each a-row against the b-columns, the matching sample as the target, logits
`f_a @ f_b.T * (1/T)`: six terms for image, DNA and text.

Negatives: the recipe's `gather_negatives` gathers every rank's features with autograd
(`torch.distributed.nn.functional.all_gather`, whose backward sums the gradients of every rank's loss into
the owner), so each rank scores its rows against the global batch; without it (the paper's recipe) against
its own. Ranks may hold batches of different sizes (the last batch of an epoch): features are padded to the
largest and padded columns masked out, and each rank's summed loss is scaled by world / global rows, which
DDP's gradient average turns back into the mean over the global batch. Hence 2 ranks x B rows give the loss
and gradients of 1 process x 2B rows (tested).
"""

from __future__ import annotations

import itertools
import warnings
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from zoo.models.clip import ClipInputError, ClipModel

__all__ = ["ClipOutput", "ClipTask", "contrastive_loss", "directed_pairs"]


def directed_pairs(modalities: tuple[str, ...]) -> list[tuple[str, str]]:
    """Every ordered pair of distinct modalities: (image, dna), (image, text), (dna, image), ..."""
    return list(itertools.permutations(modalities, 2))


@dataclass
class ClipOutput:
    """This rank's loss (scaled for DDP, see the module docstring) and its sums for logging."""

    loss: torch.Tensor
    #: Summed cross-entropy per directed pair over this rank's rows (unscaled), and correct top-1 per pair.
    loss_sums: dict[str, float] = field(default_factory=dict)
    correct: dict[str, int] = field(default_factory=dict)
    rows: int = 0
    global_rows: int = 0


def _rank_world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _gather_rows(features: torch.Tensor, sizes: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Every rank's rows (padded to the largest), with autograd, and the mask of real rows."""
    from torch.distributed.nn.functional import all_gather

    longest = max(sizes)
    padded = F.pad(features, (0, 0, 0, longest - len(features)))
    with warnings.catch_warnings():
        # NOTE: deprecated in torch 2.14 for `_functional_collectives.all_gather_single`, whose backward is a
        # reduce-scatter that gloo (CPU) lacks; this one's backward is an all-to-all that works on gloo and NCCL.
        warnings.filterwarnings("ignore", category=FutureWarning, message=".*all_gather is deprecated")
        gathered = torch.cat(all_gather(padded), dim=0)
    counts = torch.tensor(sizes, device=features.device)[:, None]
    valid = torch.arange(longest, device=features.device).unsqueeze(0) < counts
    return gathered, valid.reshape(-1)


def _sizes(rows: int, world: int, device: torch.device) -> list[int]:
    if world == 1:
        return [rows]
    counts = [torch.zeros(1, dtype=torch.int64, device=device) for _ in range(world)]
    dist.all_gather(counts, torch.tensor([rows], dtype=torch.int64, device=device))
    return [int(c.item()) for c in counts]


def contrastive_loss(features: dict[str, torch.Tensor], logit_scale: torch.Tensor, *, gather: bool) -> ClipOutput:
    """The mean of the directed InfoNCE terms between the given L2-normalised features (see module docstring)."""
    modalities = tuple(features)
    if len(modalities) < 2:
        raise ClipInputError(f"a contrastive loss needs two or more modalities, got {list(modalities)}")
    shapes = {m: tuple(f.shape) for m, f in features.items()}
    if len({s[1:] for s in shapes.values()}) > 1 or len({s[0] for s in shapes.values()}) > 1:
        raise ClipInputError(f"features of one batch must share rows and width (one embedding space): {shapes}")
    rank, world = _rank_world()
    rows = len(next(iter(features.values())))
    device = next(iter(features.values())).device
    sizes = _sizes(rows, world, device)
    if gather and world > 1:
        columns = {m: _gather_rows(f, sizes) for m, f in features.items()}
        target = torch.arange(rows, device=device) + rank * max(sizes)
    else:
        columns = {m: (f, torch.ones(rows, dtype=torch.bool, device=device)) for m, f in features.items()}
        target = torch.arange(rows, device=device)
    out = ClipOutput(loss=features[modalities[0]].new_zeros(()), rows=rows, global_rows=sum(sizes))
    for a, b in directed_pairs(modalities):
        keys, valid = columns[b]
        logits = logit_scale * features[a].float() @ keys.float().T
        logits = logits.masked_fill(~valid, float("-inf"))
        summed = F.cross_entropy(logits, target, reduction="sum")
        out.loss = out.loss + summed
        out.loss_sums[f"{a}_{b}"] = float(summed.detach())
        out.correct[f"{a}_{b}"] = int((logits.detach().argmax(dim=1) == target).sum())
    out.loss = out.loss / len(out.loss_sums) * world / max(out.global_rows, 1)
    return out


class ClipTask(nn.Module):
    """Model + loss as one module (what DDP wraps): batch -> `ClipOutput`."""

    def __init__(self, model: ClipModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, batch: dict[str, Any]) -> ClipOutput:  # type: ignore[override]
        features = self.model(batch)
        return contrastive_loss(features, self.model.logit_scale(), gather=self.model.recipe.gather_negatives)
