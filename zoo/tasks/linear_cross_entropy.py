"""Chunked, fused `Linear` + mean cross-entropy: the k-mer head's loss without full logits.

Sits inside `zoo.tasks.mlm_task`: BarcodeBERT's head maps every scored position to 4^k classes (65,536 for
k=8), so the plain `F.cross_entropy(head(hidden), targets)` materialises, saves for backward and walks an
`(n, 4^k)` fp32 tensor several times (logits, log-softmax, its gradient). Here the rows are processed in
chunks of about `CHUNK_ELEMENTS` logits: each chunk's logits give its loss, its argmax and at once the
gradient `(softmax - onehot) / n`, which is turned into the gradients of the hidden states, weight and bias
before the next chunk; backward only scales them. Same math as the unfused head (float tolerance); the
matmul FLOPs are the same, only the memory traffic of the big logits and the log-softmax passes go away.
"""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["CHUNK_ELEMENTS", "linear_cross_entropy"]

#: Logits per chunk (64 MiB in fp32): k <= 6 heads take a whole batch in one chunk, k=8 about 256 rows.
CHUNK_ELEMENTS = 2**26


class _LinearCrossEntropy(torch.autograd.Function):
    """Forward computes the loss and all gradients chunk by chunk; backward scales them by the loss's grad."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, targets: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        n, classes = hidden.shape[0], weight.shape[0]
        rows = max(1, CHUNK_ELEMENTS // classes)
        dtype = torch.promote_types(hidden.dtype, torch.float32)  # softmax and loss in fp32 at least (autocast)
        loss = torch.zeros((), dtype=dtype, device=hidden.device)
        predictions = torch.empty(n, dtype=torch.long, device=hidden.device)
        grad_hidden = torch.empty_like(hidden)
        grad_weight, grad_bias = torch.zeros_like(weight), torch.zeros_like(bias)
        for start in range(0, n, rows):
            h, t = hidden[start : start + rows], targets[start : start + rows]
            logits = torch.addmm(bias, h, weight.t()).to(dtype)
            predictions[start : start + rows] = logits.argmax(dim=-1)
            lse = logits.logsumexp(dim=-1)
            loss += (lse - logits.gather(1, t.unsqueeze(1)).squeeze(1)).sum()
            grad = logits.sub_(lse.unsqueeze(1)).exp_()  # softmax, in place of the chunk's logits
            grad[torch.arange(len(t), device=grad.device), t] -= 1.0
            grad /= max(n, 1)
            grad_hidden[start : start + rows] = grad @ weight
            grad_weight.addmm_(grad.t(), h)
            grad_bias += grad.sum(dim=0)
        ctx.save_for_backward(grad_hidden, grad_weight, grad_bias)
        ctx.mark_non_differentiable(predictions)
        return loss / max(n, 1), predictions

    @staticmethod
    def backward(ctx: Any, grad_loss: torch.Tensor, _grad_predictions: torch.Tensor) -> tuple[Any, ...]:  # type: ignore[override]
        grad_hidden, grad_weight, grad_bias = ctx.saved_tensors
        return grad_hidden * grad_loss, grad_weight * grad_loss, grad_bias * grad_loss, None


def linear_cross_entropy(
    hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, targets: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """`(F.cross_entropy(F.linear(hidden, weight, bias), targets), argmax of those logits)`, chunked.

    `hidden` is `(n, d)`, `targets` `(n,)` class indices; an empty batch gives a zero loss (and zero gradients,
    so every parameter still takes part in a DDP all-reduce).
    """
    loss, predictions = _LinearCrossEntropy.apply(hidden, weight, bias, targets)
    return loss, predictions
