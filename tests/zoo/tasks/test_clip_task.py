"""The CLIP loss (zoo/tasks/clip_task.py): gathered negatives are exact across ranks; the paper recipe's loss."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

import zoo
from zoo.models.clip import ClipInputError
from zoo.tasks.clip_task import ClipTask, contrastive_loss

#: clip_tiny without dropout: forward passes are deterministic.
NO_DROPOUT = {
    "dna_overrides": {"hidden_size": 64, "intermediate_size": 128, "dropout": 0.0},
    "text_overrides": {"dropout": 0.0},
}


def tiny(recipe: str, **overrides: object) -> torch.nn.Module:
    torch.manual_seed(0)
    return zoo.create_model("clip_tiny", recipe=recipe, **NO_DROPOUT, **overrides)


def fixed_batch(n: int, seed: int = 1) -> dict[str, torch.Tensor]:
    """n samples of every modality: random pixels, 5-mer ids (some padding), taxonomy-like char ids."""
    g = torch.Generator().manual_seed(seed)
    dna_len = torch.randint(60, 132, (n,), generator=g)
    dna_mask = (torch.arange(132)[None, :] < dna_len[:, None]).long()
    dna = torch.where(dna_mask.bool(), torch.randint(2, 1026, (n, 132), generator=g), torch.ones(n, 132).long())
    text_len = torch.randint(10, 40, (n,), generator=g)
    text_mask = (torch.arange(128)[None, :] < text_len[:, None]).long()
    text = torch.randint(5, 89, (n, 128), generator=g) * text_mask
    image = torch.randint(0, 256, (n, 3, 32, 32), generator=g, dtype=torch.uint8)
    return {"image": image, "dna": dna, "dna_mask": dna_mask, "text": text, "text_mask": text_mask}


def _grads(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}


def _rank_main(rank: int, world: int, init: str, sizes: list[int], out: str) -> None:
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    try:
        torch.set_num_threads(1)
        model = tiny("corrected")
        task = torch.nn.parallel.DistributedDataParallel(ClipTask(model))
        batch = fixed_batch(sum(sizes))
        start = sum(sizes[:rank])
        result = task({k: v[start : start + sizes[rank]] for k, v in batch.items()})
        result.loss.backward()
        loss = result.loss.detach().clone()
        dist.all_reduce(loss)
        if rank == 0:
            torch.save({"loss": loss / world, "grads": _grads(model)}, out)
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("sizes", [[4, 4], [3, 5]])
def test_two_ranks_with_gathered_negatives_equal_one_process_with_the_whole_batch(
    sizes: list[int], tmp_path: Path
) -> None:
    out = tmp_path / "rank0.pt"
    init = f"file://{tmp_path / 'init'}"  # fork: spawn would leave its resource tracker process behind
    mp.start_processes(_rank_main, args=(2, init, sizes, str(out)), nprocs=2, join=True, start_method="fork")
    distributed = torch.load(out, weights_only=True)
    model = tiny("corrected")
    result = ClipTask(model)(fixed_batch(sum(sizes)))
    result.loss.backward()
    single = _grads(model)
    torch.testing.assert_close(distributed["loss"], result.loss.detach(), rtol=1e-5, atol=1e-6)
    assert set(distributed["grads"]) == set(single) and len(single) > 10
    for name, grad in single.items():
        torch.testing.assert_close(distributed["grads"][name], grad, rtol=1e-4, atol=1e-6, msg=name)
    assert "log_logit_scale" in single  # the corrected recipe learns its temperature


def _reference_paper_loss(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Written from the recipe's description alone (evaluation.md "Reference model recipe")."""
    image_tower, dna_tower, text_tower = (model.towers[m] for m in ("image", "dna", "text"))
    pixels = batch["image"].float() / 255  # [0, 1], no mean/std
    image = image_tower.head(image_tower.backbone.model(pixels))
    ids = torch.cat([torch.zeros(len(batch["dna"]), 1, dtype=torch.long), batch["dna"]], dim=1)  # 133 tokens
    mask = torch.cat([torch.ones(len(batch["dna"]), 1, dtype=torch.long), batch["dna_mask"]], dim=1)
    hidden = dna_tower.backbone.bert(input_ids=ids, attention_mask=mask).last_hidden_state
    dna = dna_tower.head(torch.softmax(hidden, dim=-1).sum(dim=1) / hidden.shape[1])  # softmax, then plain mean
    text_hidden = text_tower.backbone.bert(input_ids=batch["text"], attention_mask=batch["text_mask"]).last_hidden_state
    weights = batch["text_mask"].unsqueeze(-1).float()
    text = text_tower.head((text_hidden * weights).sum(1) / weights.sum(1))
    feats = [F.normalize(x, dim=-1) for x in (image, dna, text)]
    terms = []
    for i in range(3):
        for j in range(3):
            if i != j:
                logits = feats[i] @ feats[j].T / 0.07
                log_probs = logits - torch.logsumexp(logits, dim=1, keepdim=True)
                terms.append(-log_probs.diagonal().mean())
    return torch.stack(terms).mean()


@torch.no_grad()
def test_paper_recipe_reproduces_the_reference_loss_on_a_fixed_batch() -> None:
    model = tiny("bioscan5m-paper").eval()
    batch = fixed_batch(6)
    result = ClipTask(model)(batch)
    expected = _reference_paper_loss(model, batch)
    torch.testing.assert_close(result.loss, expected, rtol=1e-5, atol=1e-6)
    assert math.isclose(float(model.logit_scale()), 1 / 0.07, rel_tol=1e-6)
    assert not model.log_logit_scale.requires_grad  # fixed temperature
    # the corrected recipe pools differently: another loss on the same weights and batch
    corrected = tiny("corrected").eval()
    corrected.load_state_dict(model.state_dict())
    assert not torch.allclose(ClipTask(corrected)(batch).loss, expected)


def test_two_modalities_use_the_two_directed_terms() -> None:
    model = tiny("bioscan5m-paper", modalities=["image", "dna"]).eval()
    assert model.modalities == ("image", "dna")
    batch = fixed_batch(5)
    with torch.no_grad():
        result = ClipTask(model)(batch)
        feats = model(batch)
    logits = feats["image"] @ feats["dna"].T / 0.07
    target = torch.arange(5)
    expected = (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2
    torch.testing.assert_close(result.loss, expected)
    assert sorted(result.correct) == ["dna_image", "image_dna"]


def test_bad_batches_are_refused_with_clear_errors() -> None:
    model = tiny("bioscan5m-paper")
    batch = fixed_batch(4)
    missing = {k: v for k, v in batch.items() if k != "text_mask"}
    with pytest.raises(ClipInputError, match="text_mask.*text tower"):
        ClipTask(model)(missing)
    short = {**batch, "image": batch["image"][:3]}
    with pytest.raises(ClipInputError, match="differ in size"):
        model(short)
    with pytest.raises(ClipInputError, match="uint8"):
        model({**batch, "image": batch["image"].float()})
    feats = {"image": F.normalize(torch.randn(4, 32), dim=1), "dna": F.normalize(torch.randn(4, 16), dim=1)}
    with pytest.raises(ClipInputError, match="one embedding space"):
        contrastive_loss(feats, torch.tensor(14.0), gather=False)
    with pytest.raises(ClipInputError, match="two or more"):
        contrastive_loss({"image": feats["image"]}, torch.tensor(14.0), gather=False)
    with pytest.raises(ValueError, match="two or three"):
        zoo.create_model("clip_tiny", modalities=["image"])
    with pytest.raises(ValueError, match="unknown CLIP recipe"):
        zoo.create_model("clip_tiny", recipe="nope")
    json.dumps(batch["dna"].shape)  # the batch itself is untouched by the failures
