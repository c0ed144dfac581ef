"""Tests of zoo.tasks.mlm_task: the published masking rules and loss."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

import zoo
from bioscan_stream.dna import MASK_ID, UNK_ID, KmerTokenizer
from zoo.tasks.mlm_task import MlmTask, mask_kmers, tokenize_for_training


def test_only_real_kmers_are_masked_at_half_rate() -> None:
    ids = torch.randint(0, 258, (64, 165))
    ids[:, :10] = UNK_ID
    masked_ids, eligible, masked = mask_kmers(ids, generator=torch.Generator().manual_seed(0))
    assert torch.equal(eligible, ids >= 2)
    assert not masked[ids < 2].any()  # [UNK] and [MASK] are never masked
    assert torch.equal(masked_ids[masked], torch.full((int(masked.sum()),), MASK_ID))
    assert torch.equal(masked_ids[~masked], ids[~masked])  # no 80/10/10: everything else is untouched
    assert abs(masked.sum().item() / eligible.sum().item() - 0.5) < 0.02


def test_loss_is_cross_entropy_over_all_eligible_positions() -> None:
    torch.manual_seed(0)
    model = zoo.create_model("4-1-2", hidden_size=16, intermediate_size=32, max_len=40, dropout=0.0).eval()
    ids, mask = (torch.from_numpy(a) for a in model.tokenizer().encode_batch(["ACGTTGCANNNNACGTAAAA", "GGGGCCCC"]))
    out = MlmTask(model)(ids, mask, generator=torch.Generator().manual_seed(1))
    masked_ids, eligible, masked = mask_kmers(ids, generator=torch.Generator().manual_seed(1))
    logits = model(masked_ids, mask)
    expected = F.cross_entropy(logits[eligible], ids[eligible] - 2)  # target = id - 2, masked and unmasked alike
    assert torch.allclose(out.loss, expected, atol=1e-6)
    assert out.n_eligible == int(eligible.sum()) == 6 and out.n_masked == int(masked.sum())
    assert abs(out.loss.item() - math.log(256)) < 0.5  # untrained: near uniform


def test_batch_without_real_kmers_gives_zero_loss() -> None:
    model = zoo.create_model("4-1-2", hidden_size=16, intermediate_size=32, max_len=40)
    ids, mask = (torch.from_numpy(a) for a in model.tokenizer().encode_batch(["NNNNNNNN", ""]))
    out = MlmTask(model)(ids, mask)
    assert out.loss.item() == 0.0 and out.n_eligible == 0 and out.masked_accuracy == 0.0
    out.loss.backward()  # still part of the graph (DDP needs every step to backward)


def test_training_offsets_are_uniform_below_k() -> None:
    tok = KmerTokenizer(k=4, max_len=40)
    seqs = ["ACGTACGTACGTACGTACGT"] * 400
    ids, _ = tokenize_for_training(tok, seqs, np.random.default_rng(0))
    first = ids[:, 0].numpy()
    # offset o turns the first k-mer into ACGT / CGTA / GTAC / TACG: all four appear, nothing else
    expected = {int(tok.encode(seqs[0], offset=o)[0][0]) for o in range(4)}
    assert set(np.unique(first).tolist()) == expected
