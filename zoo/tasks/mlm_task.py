"""BarcodeBERT's masked-k-mer objective (model + loss), as published for BIOSCAN-5M.

Sits between the tokenizer (`bioscan_stream.dna`) and the training loop (`zoo.tasks.pretrain_loop`):
a batch of barcodes becomes `(ids, mask)` with a random offset per sequence; the task masks, predicts and
scores. The rules (../shared/reference/barcodebert.md) differ from BERT's on purpose:

- eligible positions are real k-mers only (id >= 2): `[UNK]` (padding, N-containing) is never masked or scored;
- each eligible token becomes `[MASK]` with probability 0.5, independently (no 80/10/10 replacement);
- the loss is cross-entropy over *all* eligible positions (masked and unmasked), target = id - 2;
- masked-token accuracy is reported beside it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from bioscan_stream.dna import MASK_ID, N_SPECIAL, KmerTokenizer
from zoo.models.barcodebert import BarcodeBert
from zoo.tasks.linear_cross_entropy import linear_cross_entropy

__all__ = ["MASK_PROB", "MlmOutput", "MlmTask", "mask_kmers", "tokenize_for_training"]

MASK_PROB = 0.5


def tokenize_for_training(
    tokenizer: KmerTokenizer, seqs: Sequence[str], rng: np.random.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Tokenize with the paper's augmentation: an offset drawn uniformly from {0, ..., k-1} per sequence."""
    offsets = rng.integers(0, tokenizer.k, size=len(seqs))
    ids, mask = tokenizer.encode_batch(seqs, offsets=offsets)
    return torch.from_numpy(ids), torch.from_numpy(mask)


def mask_kmers(
    ids: torch.Tensor, *, mask_prob: float = MASK_PROB, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Replace each eligible k-mer by `[MASK]` with probability `mask_prob`.

    Returns:
        `(masked_ids, eligible, masked)`: the model input and two boolean maps of shape `ids.shape`.
    """
    eligible = ids >= N_SPECIAL
    draw = torch.rand(ids.shape, generator=generator, device=ids.device)
    masked = eligible & (draw < mask_prob)
    return ids.masked_fill(masked, MASK_ID), eligible, masked


@dataclass(frozen=True)
class MlmOutput:
    """One step's loss (a graph-carrying scalar) and detached counts for metrics."""

    loss: torch.Tensor
    correct_masked: int
    n_masked: int
    n_eligible: int

    @property
    def masked_accuracy(self) -> float:
        return self.correct_masked / max(self.n_masked, 1)


class MlmTask(nn.Module):
    """Owns the model and the published MLM loss; `forward(ids, mask)` masks, predicts and scores."""

    def __init__(self, model: BarcodeBert, *, mask_prob: float = MASK_PROB) -> None:
        super().__init__()
        self.model = model
        self.mask_prob = mask_prob

    def forward(
        self, ids: torch.Tensor, attention_mask: torch.Tensor, *, generator: torch.Generator | None = None
    ) -> MlmOutput:
        masked_ids, eligible, masked = mask_kmers(ids, mask_prob=self.mask_prob, generator=generator)
        # The 4^k-way head runs on the scored positions only (padding and N k-mers never need logits), fused
        # with the loss so that the (n, 4^k) logits are never materialised whole; a batch without a single
        # real k-mer (all-N barcodes) contributes a zero loss, not NaN.
        hidden = self.model.dropout(self.model.encode(masked_ids, attention_mask)[eligible])
        targets = ids[eligible] - N_SPECIAL
        head = self.model.classifier
        loss, predictions = linear_cross_entropy(hidden, head.weight, head.bias, targets)
        correct = int((predictions == targets)[masked[eligible]].sum())
        return MlmOutput(loss=loss, correct_masked=correct, n_masked=int(masked.sum()), n_eligible=int(eligible.sum()))
