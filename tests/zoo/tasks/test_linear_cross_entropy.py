"""The fused chunked head + loss equals `F.cross_entropy(F.linear(...))` in value, gradients and argmax."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from zoo.tasks import linear_cross_entropy as lce


@pytest.mark.parametrize("chunk_elements", [2**24, 7 * 50])  # one chunk; several chunks with a ragged last one
def test_matches_unfused(monkeypatch: pytest.MonkeyPatch, chunk_elements: int) -> None:
    monkeypatch.setattr(lce, "CHUNK_ELEMENTS", chunk_elements)
    torch.manual_seed(0)
    hidden = torch.randn(30, 16, dtype=torch.float64, requires_grad=True)
    head = torch.nn.Linear(16, 50, dtype=torch.float64)
    targets = torch.randint(0, 50, (30,))
    logits = head(hidden)
    expected = F.cross_entropy(logits, targets)
    expected.backward()
    want = [hidden.grad.clone(), head.weight.grad.clone(), head.bias.grad.clone()]
    hidden.grad, head.weight.grad, head.bias.grad = None, None, None

    loss, predictions = lce.linear_cross_entropy(hidden, head.weight, head.bias, targets)
    (2.0 * loss).backward()  # the upstream gradient scales the precomputed ones

    torch.testing.assert_close(loss, expected)
    assert torch.equal(predictions, logits.argmax(dim=-1))
    for got, ref in zip([hidden.grad, head.weight.grad, head.bias.grad], want, strict=True):
        torch.testing.assert_close(got, 2.0 * ref)


def test_empty_batch_gives_zero_loss_and_zero_gradients() -> None:
    head = torch.nn.Linear(8, 5)
    hidden = torch.zeros(0, 8, requires_grad=True)
    loss, predictions = lce.linear_cross_entropy(hidden, head.weight, head.bias, torch.zeros(0, dtype=torch.long))
    loss.backward()
    assert loss.item() == 0.0 and predictions.numel() == 0
    assert head.weight.grad is not None and not head.weight.grad.any() and not head.bias.grad.any()
