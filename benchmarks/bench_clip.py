"""How fast does CLIP training run on CPU: ours vs a reference-style loop, same model, same batch, same run?

Both train `clip_small` (ViT-Ti/16 at 64 px, BarcodeBERT 5-mer 4x256, BERT-tiny text; LoRA rank 4 on query and
value, backbones frozen, the bioscan5m-paper recipe: Adam 1e-3, T = 0.07, local negatives) from the same raw
inputs per step (uint8 images, barcode strings, metadata records), one optimizer step per batch:

- reference-style (BIOSCAN-CLIP's structure): hand-written LoRA (`W x + B A x` on the q and v slices of the
  fused ViT qkv and on BERT's query/value), per-sample pure-Python DNA tokenisation (`bench_tokenizer`'s
  baseline) and per-sample text tokenisation, batch stacked afterwards; no gathering (one process);
- ours: `zoo.tasks.clip_loop.training_batch` + `ClipTask` on the peft model, the vectorised k-mer tokenizer
  (what the stream's collate runs) and batched text tokenisation.

Before timing, one step of both on the same weights and batch (dropout off) must give the same loss within
float tolerance, or the benchmark stops. Rounds alternate; the best round of each gives samples/s and the
ratio. The machine is shared by other agents: its load is recorded with the result. Appends a JSON line to
benchmarks/results/clip.jsonl. With CUDA (`--device cuda`) it also times the reference model shape
(ViT-B/16 + BarcodeBERT 5-mer 12 layers + BERT-small) and records samples/s and peak GPU memory.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

import zoo
from bioscan_stream.dna import KmerTokenizer
from zoo.models.bert_text import taxonomy_text
from zoo.models.clip import ClipModel, tower_inputs
from zoo.tasks.clip_loop import training_batch
from zoo.tasks.clip_task import ClipTask

sys.path.insert(0, str(Path(__file__).parent))
from _results import MIN_RUNS, append_result, spread  # noqa: E402
from bench_tokenizer import barcodes, baseline_encode  # noqa: E402  (the per-sequence baseline)

NO_DROPOUT: dict[str, Any] = {"dna_overrides": {"hidden_size": 256, "intermediate_size": 1024, "dropout": 0.0},
              "text_overrides": {"dropout": 0.0}}  # fmt: skip
RANKS = ("order", "family", "genus", "species")


class HandLora(nn.Module):
    """The reference's LoRA: a frozen Linear plus `B A x` (scaling alpha / r) on chosen output slices."""

    def __init__(self, base: nn.Linear, slices: list[tuple[int, int]], rank: int, scaling: float) -> None:
        super().__init__()
        self.base, self.slices, self.scaling = base, slices, scaling
        self.a = nn.ParameterList([nn.Parameter(torch.zeros(rank, base.in_features)) for _ in slices])
        self.b = nn.ParameterList([nn.Parameter(torch.zeros(stop - start, rank)) for start, stop in slices])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.base(x)
        deltas = [F.linear(F.linear(x, a), b) * self.scaling for a, b in zip(self.a, self.b, strict=True)]
        if len(self.slices) == 1 and self.slices[0] == (0, out.shape[-1]):
            return out + deltas[0]
        pieces, last = [], 0
        for (start, stop), delta in zip(self.slices, deltas, strict=True):
            pieces += [out[..., last:start], out[..., start:stop] + delta]
            last = stop
        return torch.cat([*pieces, out[..., last:]], dim=-1)


def _linear_from_peft(module: nn.Module) -> nn.Linear:
    base = module.base_layer if hasattr(module, "base_layer") else module
    out = nn.Linear(base.in_features, base.out_features)
    out.load_state_dict(base.state_dict())
    return out


def _lora_of(module: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    return module.lora_A["default"].weight.detach().clone(), module.lora_B["default"].weight.detach().clone()


def reference_model(ours: ClipModel) -> ClipModel:
    """A copy of `ours` with peft's adapters replaced by `HandLora` (same weights): the reference's structure."""
    import copy

    ref = copy.deepcopy(ours)
    scaling = ours.cfg.lora_alpha / ours.cfg.lora_rank
    for module in list(ref.modules()):
        split = getattr(module, "qkv", None)
        if split is not None and hasattr(split, "q"):  # ViT: fused qkv again, LoRA on the q and v slices
            q, k, v = (_linear_from_peft(getattr(split, n)) for n in "qkv")
            dim = q.out_features
            fused = nn.Linear(q.in_features, 3 * dim)
            fused.weight.data = torch.cat([q.weight, k.weight, v.weight]).detach()
            fused.bias.data = torch.cat([q.bias, k.bias, v.bias]).detach()
            lora = HandLora(fused, [(0, dim), (2 * dim, 3 * dim)], ours.cfg.lora_rank, scaling)
            for i, name in enumerate("qv"):
                lora.a[i].data, lora.b[i].data = _lora_of(getattr(split, name))
            module.qkv = lora
        for name in ("query", "value"):  # BERT self-attention
            child = getattr(module, name, None)
            if child is not None and hasattr(child, "lora_A"):
                lora = HandLora(_linear_from_peft(child), [(0, child.out_features)], ours.cfg.lora_rank, scaling)
                lora.a[0].data, lora.b[0].data = _lora_of(child)
                setattr(module, name, lora)
    for name, parameter in ref.named_parameters():
        parameter.requires_grad_(".a." in name or ".b." in name or ".head." in name)
    return ref


def raw_batches(n_batches: int, batch: int, size: int, seed: int = 0) -> list[dict[str, Any]]:
    """Raw inputs per step: uint8 images, 658-nt barcodes, metadata records (taxonomy names)."""
    rng = np.random.default_rng(seed)
    seqs = barcodes(n_batches * batch, seed=seed)
    out = []
    for i in range(n_batches):
        images = torch.from_numpy(rng.integers(0, 256, (batch, 3, size, size), dtype=np.uint8))
        metadata = [{r: f"{r.capitalize()}{rng.integers(50)}" for r in RANKS} for _ in range(batch)]
        out.append({"image": images, "barcodes": seqs[i * batch : (i + 1) * batch], "metadata": metadata})
    return out


def ours_inputs(raw: dict[str, Any], model: ClipModel, tokenizer: KmerTokenizer) -> dict[str, Any]:
    ids, mask = tokenizer.encode_batch(raw["barcodes"])  # what the stream's collate does, once per batch
    stream_batch = {
        **raw,
        "dna": torch.from_numpy(ids),
        "dna_mask": torch.from_numpy(mask),
        "__key__": ["x"] * len(ids),
    }
    return training_batch(stream_batch, model, torch.device("cpu"))


def reference_inputs(raw: dict[str, Any], model: ClipModel, vocab: dict[str, int], k: int) -> dict[str, Any]:
    """Per-sample tokenisation in Python, then stacking (the reference dataset's __getitem__ + collate)."""
    dna = [baseline_encode(s, vocab, k, 660) for s in raw["barcodes"]]
    text_tokens = model.tower("text").backbone.tokens
    texts = [text_tokens.encode([taxonomy_text(m)]) for m in raw["metadata"]]
    return {
        "image": raw["image"],
        "dna": torch.from_numpy(np.stack([d[0] for d in dna])),
        "dna_mask": torch.from_numpy(np.stack([d[1] for d in dna]).astype(np.int64)),
        "text": torch.from_numpy(np.concatenate([t["input_ids"] for t in texts])),
        "text_mask": torch.from_numpy(np.concatenate([t["attention_mask"] for t in texts])),
    }


def make_step(model: ClipModel, prepare: Callable[[dict[str, Any]], dict[str, Any]]) -> Callable[[dict], float]:
    task = ClipTask(model)
    optimizer = torch.optim.Adam(model.trainable_parameters(), lr=1e-3)

    def step(raw: dict[str, Any]) -> float:
        out = task(prepare(raw))
        out.loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return float(out.loss.detach())

    return step


def check_equal(ours: ClipModel, ref: ClipModel, raw: dict[str, Any], vocab: dict[str, int], k: int) -> float:
    with torch.no_grad():
        a = ClipTask(ours)(ours_inputs(raw, ours, ours.tower("dna").backbone.tokenizer())).loss
        b = ClipTask(ref)(reference_inputs(raw, ref, vocab, k)).loss
        x = ours_inputs(raw, ours, ours.tower("dna").backbone.tokenizer())
        for m in ours.modalities:  # also each tower's features
            got, expected = ours.tower(m)(tower_inputs(x, m)), ref.tower(m)(tower_inputs(x, m))
            torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    return float(a)


def time_rounds(steps: dict[str, Callable[[dict], float]], data: list[dict], rounds: int, warmup: int) -> dict:
    """samples/s per loop and round (alternating), after `warmup` untimed steps each."""
    rates: dict[str, list[float]] = {name: [] for name in steps}
    cpu_rates: dict[str, list[float]] = {name: [] for name in steps}
    samples = len(data[0]["barcodes"]) * (len(data) - warmup)
    for step in steps.values():
        for raw in data[:warmup]:
            step(raw)
    for _ in range(rounds):
        for name, step in steps.items():
            start, cpu = time.perf_counter(), time.process_time()
            for raw in data[warmup:]:
                step(raw)
            rates[name].append(samples / (time.perf_counter() - start))
            cpu_rates[name].append(samples / (time.process_time() - cpu))
    return {
        name: {"best": max(r), "median": statistics.median(r), "rounds": r, "per_cpu_s_best": max(cpu_rates[name])}
        for name, r in rates.items()
    }


def gpu_reference_shape(batch: int, steps: int) -> dict[str, Any]:
    """samples/s and peak memory of the reference shape on CUDA (bf16 autocast, corrected recipe's settings)."""
    torch.manual_seed(0)
    model = zoo.create_model("clip_vitb16_barcodebert_bertsmall").cuda()
    step = make_step(model, lambda raw: {k: v.cuda() for k, v in raw.items()})
    k = model.tower("dna").backbone.tokenizer()
    data = []
    for raw in raw_batches(steps + 2, batch, 224):
        data.append({k2: v for k2, v in ours_inputs(raw, model, k).items()})
    torch.cuda.reset_peak_memory_stats()
    with torch.autocast("cuda", dtype=torch.bfloat16):
        for raw in data[:2]:
            step(raw)
        torch.cuda.synchronize()
        start = time.perf_counter()
        for raw in data[2:]:
            step(raw)
        torch.cuda.synchronize()
    rate = batch * steps / (time.perf_counter() - start)
    return {"device": torch.cuda.get_device_name(), "batch": batch, "samples_per_s": rate,
            "peak_memory_gib": torch.cuda.max_memory_allocated() / 2**30}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--steps", type=int, default=6, help="timed steps per round")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=1, help="torch threads (the box is shared: 1 is steadier)")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument("--gpu-batch", type=int, default=400, help="reference: 400 per A100")
    p.add_argument("--gpu-steps", type=int, default=5)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    record: dict[str, Any] = {"batch": args.batch, "steps": args.steps, "rounds": args.rounds, "threads": args.threads}
    if args.device == "cuda":
        record["gpu_reference_shape"] = gpu_reference_shape(args.gpu_batch, args.gpu_steps)
        print(json.dumps(record["gpu_reference_shape"]))
    torch.manual_seed(0)
    ours = zoo.create_model("clip_small", **NO_DROPOUT).train()
    ref = reference_model(ours)
    tokenizer = ours.tower("dna").backbone.tokenizer()
    k, vocab = tokenizer.k, tokenizer.vocabulary()
    data = raw_batches(args.warmup + args.steps, args.batch, 64)
    record["loss_both"] = check_equal(ours, ref, data[0], vocab, k)
    steps = {
        "reference": make_step(ref, lambda raw: reference_inputs(raw, ref, vocab, k)),
        "ours": make_step(ours, lambda raw: ours_inputs(raw, ours, ours.tower("dna").backbone.tokenizer())),
    }
    record["load_before"] = os.getloadavg()[0]
    record["samples_per_s"] = time_rounds(steps, data, args.rounds, args.warmup)
    rates = record["samples_per_s"]
    record["ratio_best"] = rates["ours"]["best"] / rates["reference"]["best"]
    record["ratio_median"] = rates["ours"]["median"] / rates["reference"]["median"]
    if args.rounds >= MIN_RUNS:  # rounds alternate: each pair of rates saw the same load
        per_round = zip(rates["reference"]["rounds"], rates["ours"]["rounds"], strict=True)
        record["ratio"] = spread([mine / theirs for theirs, mine in per_round])
    record["ratio_cpu"] = rates["ours"]["per_cpu_s_best"] / rates["reference"]["per_cpu_s_best"]
    record["load_after"] = os.getloadavg()[0]
    print(f"clip_small CPU, batch {args.batch}, {args.threads} thread(s), load {record['load_before']:.1f}: "
          f"reference {rates['reference']['best']:.1f} samples/s, ours {rates['ours']['best']:.1f} samples/s, "
          f"ratio {record['ratio_best']:.2f}x best, {record['ratio_median']:.2f}x median, "
          f"{record['ratio_cpu']:.2f}x per CPU second (same loss {record['loss_both']:.4f})")  # fmt: skip
    append_result("clip", record)
    return 0


if __name__ == "__main__":
    sys.exit(main())
