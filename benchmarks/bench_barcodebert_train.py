"""How fast does BarcodeBERT pretraining run on CPU, ours vs a reference-style loop, and where does a step go?

Both train the same architecture with the same objective (50% masking of real k-mers, cross-entropy over all
eligible positions, AdamW) on 658-nt barcodes at the same batch size (one optimizer step per batch, no
accumulation), in the same run:

- reference-style: per-sequence pure-Python tokenisation (the public tokenizer's structure), eager attention,
  fp32, logits for every position with `ignore_index` (the original training code's shape), for-each AdamW;
- ours: `zoo.tasks.pretrain_loop.train_worker` (vectorised tokenizer, SDPA attention, the k-mer head fused
  with the loss on eligible positions only, fused AdamW, metrics, progress; fp32 on CPU); with `--compile`
  also with the encoder `torch.compile`d (its compile time falls in the untimed warm-up steps).

Before timing, one step of both on the same weights and masked batch (dropout off) must give the same loss and
gradients within float tolerance, or the benchmark stops. Timing: `--warmup` untimed steps, then `--steps`
timed steps, both wall time and process CPU time (all threads; the machine is shared, so CPU time is the
steadier number); reference and ours alternate `--rounds` times, and the best and the median round of each are
reported, ratios from the best. Then `--profile-steps` steps of each loop run under `torch.profiler`, split
into phases (data, encoder forward, head + loss, backward, optimizer) and op kinds (GEMM, attention,
embedding gradient, Python, other) by main-thread self time. Both loops do the same GEMMs (same shapes,
fp32), so if GEMMs take a fraction g of the reference step, no loop that keeps the objective and the fp32
GEMMs can beat it by more than 1 / g: that Amdahl bound is printed and recorded beside the measured ratio.
Appends a JSON line to benchmarks/results/barcodebert_train.jsonl.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile, record_function

import zoo
from zoo.models.barcodebert import BarcodeBert
from zoo.tasks.dna_sources import ListSource
from zoo.tasks.mlm_task import MlmTask, mask_kmers, tokenize_for_training
from zoo.tasks.pretrain_loop import PretrainConfig, train_worker

sys.path.insert(0, str(Path(__file__).parent))
from _results import MIN_RUNS, append_result, spread  # noqa: E402
from bench_tokenizer import barcodes, baseline_encode  # noqa: E402  (the same per-sequence baseline)

#: Self-time ops that are matrix products (the FLOPs both loops share).
GEMM_OPS = {"aten::mm", "aten::addmm", "aten::addmm_", "aten::bmm", "aten::baddbmm", "aten::_addmm_activation"}
#: Attention kernels besides its GEMMs: eager softmax (not the loss's log-softmax) and SDPA's fused CPU kernels.
ATTENTION_OPS = {"aten::_softmax", "aten::_softmax_backward_data"}
ATTENTION_MARKER = "scaled_dot_product"
#: Ops under these belong to the embedding gradient (dense: a (4^k + 2, hidden) gradient every step).
EMBEDDING_OPS = ("aten::embedding_dense_backward", "aten::embedding_backward")
PHASES = ("data", "encoder forward", "head + loss", "backward", "optimizer")
#: Largest (phase, op) self times recorded per loop.
TOP_OPS = 12


def reference_loss(model: torch.nn.Module, ids: torch.Tensor, mask: torch.Tensor, masked: torch.Tensor) -> torch.Tensor:
    """The original shape: logits for every position, cross-entropy with `ignore_index` off the real k-mers."""
    logits = model(ids.masked_fill(masked, 0), mask)
    labels = torch.where(ids >= 2, ids - 2, torch.full_like(ids, -100))
    return F.cross_entropy(logits.view(-1, logits.shape[-1]), labels.view(-1), ignore_index=-100)


def check_same_math(name: str, seqs: list[str], *, batch: int) -> dict[str, float]:
    """One step of both on the same weights and masked batch (dropout off): loss and gradients must agree."""
    torch.manual_seed(0)
    reference = zoo.create_model(name, attn_implementation="eager", dropout=0.0).train()
    ours = zoo.create_model(name, dropout=0.0).train()
    ours.load_state_dict(reference.state_dict())
    ids, mask = tokenize_for_training(ours.tokenizer(), seqs[:batch], np.random.default_rng(0))
    masked = mask_kmers(ids, generator=torch.Generator().manual_seed(0))[2]
    ref_loss = reference_loss(reference, ids, mask, masked)
    ref_loss.backward()
    our_loss = MlmTask(ours)(ids, mask, generator=torch.Generator().manual_seed(0)).loss
    our_loss.backward()
    torch.testing.assert_close(our_loss, ref_loss, rtol=1e-5, atol=1e-5)
    grad_diff = 0.0
    for (key, a), b in zip(reference.named_parameters(), ours.parameters(), strict=True):
        torch.testing.assert_close(b.grad, a.grad, rtol=1e-3, atol=1e-6, msg=lambda m, key=key: f"{key}: {m}")
        grad_diff = max(grad_diff, float((b.grad - a.grad).abs().max()))
    return {"reference_loss": ref_loss.item(), "our_loss": our_loss.item(), "max_grad_abs_diff": grad_diff}


class _Clock:
    """Wall and process-CPU time between `start()` and the latest `lap(tokens)`, with the tokens counted."""

    def __init__(self) -> None:
        self.wall0 = self.cpu0 = self.wall = self.cpu = 0.0
        self.tokens = 0

    def start(self) -> None:
        self.wall0, self.cpu0, self.tokens = time.perf_counter(), time.process_time(), 0

    def lap(self, tokens: int) -> None:
        self.wall, self.cpu = time.perf_counter() - self.wall0, time.process_time() - self.cpu0
        self.tokens += tokens

    def rates(self, samples: int) -> dict[str, float]:
        return {
            "samples_per_s": samples / self.wall,
            "tokens_per_s": self.tokens / self.wall,
            "samples_per_cpu_s": samples / self.cpu,
            "cpu_s_per_step_wall_s": self.cpu / self.wall,  # ~threads when nothing else runs
        }


def _reference_setup(name: str, batch: int) -> tuple[BarcodeBert, torch.optim.Optimizer]:
    torch.manual_seed(0)
    model = zoo.create_model(name, attn_implementation="eager").train()
    return model, torch.optim.AdamW(model.parameters(), lr=1e-4 * batch / 64, weight_decay=0.0, foreach=True)


def reference_step(model: BarcodeBert, optimizer: torch.optim.Optimizer, chunk: list[str], rng: Any) -> int:
    """One step of the straightforward loop (phases labelled for the profiler); returns the attended tokens."""
    tok = model.tokenizer()
    with record_function("data"):
        vocab = tok.vocabulary()
        pairs = [baseline_encode(s, vocab, tok.k, tok.max_len, offset=int(rng.integers(tok.k))) for s in chunk]
        ids = torch.stack([torch.from_numpy(p[0]) for p in pairs])
        mask = torch.stack([torch.from_numpy(p[1]) for p in pairs])
        masked = (ids >= 2) & (torch.rand(ids.shape) < 0.5)
    with record_function("encoder forward"):
        hidden = model.encode(ids.masked_fill(masked, 0), mask)
    with record_function("head + loss"):
        logits = model.kmer_logits(hidden)
        labels = torch.where(ids >= 2, ids - 2, torch.full_like(ids, -100))
        loss = F.cross_entropy(logits.view(-1, logits.shape[-1]), labels.view(-1), ignore_index=-100)
    with record_function("backward"):
        loss.backward()
    with record_function("optimizer"):
        optimizer.step()
        optimizer.zero_grad()
    return int(mask.sum())


def reference_rate(name: str, seqs: list[str], *, batch: int, warmup: int, steps: int) -> dict[str, float]:
    """Samples/s (wall and CPU) and tokens/s of the straightforward loop after `warmup` untimed steps."""
    model, optimizer = _reference_setup(name, batch)
    rng, clock = np.random.default_rng(0), _Clock()
    for step in range(warmup + steps):
        if step == warmup:
            clock.start()
        tokens = reference_step(model, optimizer, [seqs[(step * batch + i) % len(seqs)] for i in range(batch)], rng)
        if step >= warmup:
            clock.lap(tokens)
    return clock.rates(steps * batch)


def our_rate(
    name: str, seqs: list[str], *, batch: int, warmup: int, steps: int, compile: bool = False
) -> dict[str, float]:
    """The project's loop (`train_worker`), clocked from its per-step metric reports after `warmup` steps."""
    clock = _Clock()

    def report(metrics: dict[str, Any]) -> None:
        if metrics["step"] == warmup:
            clock.start()
        elif metrics["step"] > warmup:
            clock.lap(round(metrics["tokens_per_s"] * batch / metrics["samples_per_s"]))

    with tempfile.TemporaryDirectory() as out:
        cfg = PretrainConfig(
            output_dir=out,
            model=name,
            batch_size=batch,
            epochs=10**6,
            max_steps=warmup + steps,
            log_every=1,
            save_outputs=False,
            compile=compile,
        )
        train_worker(cfg, ListSource(seqs), report=report)
    return clock.rates(steps * batch)


def our_step(task: MlmTask, optimizer: torch.optim.Optimizer, chunk: list[str], rng: Any) -> int:
    """The calls of `pretrain_loop._train_step` for one micro-batch, phases labelled for the profiler."""
    with record_function("data"):
        ids, mask = tokenize_for_training(task.model.tokenizer(), chunk, rng)
    with record_function("forward"):  # encoder, then the fused head: split by the `_LinearCrossEntropy` node
        out = task(ids, mask)
    with record_function("backward"):
        out.loss.backward()
    with record_function("optimizer"):
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return int(mask.sum())


def _kind(event: Any) -> str:
    """Op kind of a profiler event: a phase label's own time is Python (tokenisation, module calls)."""
    if event.name in PHASES or event.name == "forward":
        return "python"
    if event.name in GEMM_OPS:
        return "gemm"
    if event.name in ATTENTION_OPS or ATTENTION_MARKER in event.name:
        return "attention"
    parent = event
    while parent is not None and parent.name not in PHASES:
        if parent.name in EMBEDDING_OPS:
            return "embedding grad"
        parent = parent.cpu_parent
    return "other"


def _phase(event: Any) -> str | None:
    """The labelled phase an op ran in; our fused head (`_LinearCrossEntropy`) is split from the encoder."""
    head = False
    while event is not None:
        head = head or event.name == "_LinearCrossEntropy"
        if event.name == "forward":
            return "head + loss" if head else "encoder forward"
        if event.name in PHASES:
            return str(event.name)
        event = event.cpu_parent
    return None


def profile_loop(step: Callable[[list[str], Any], int], seqs: list[str], *, batch: int, steps: int) -> dict[str, Any]:
    """ms per step of each (phase, op kind) from the profiler's self times, after one untimed step."""
    rng = np.random.default_rng(1)
    step(seqs[:batch], rng)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for i in range(1, steps + 1):
            step(seqs[i * batch : (i + 1) * batch], rng)
    table: dict[str, dict[str, float]] = {phase: {} for phase in PHASES}
    ops: dict[str, float] = {}
    for event in prof.events():
        phase = _phase(event)
        if phase is None:
            continue
        kind, ms = _kind(event), event.self_cpu_time_total / 1e3 / steps
        table[phase][kind] = table[phase].get(kind, 0.0) + ms
        ops[f"{phase}: {event.name}"] = ops.get(f"{phase}: {event.name}", 0.0) + ms
    kinds = {kind for row in table.values() for kind in row}
    totals = {kind: sum(row.get(kind, 0.0) for row in table.values()) for kind in sorted(kinds)}
    top = dict(sorted(ops.items(), key=lambda item: -item[1])[:TOP_OPS])
    return {"ms_per_step": table, "by_kind": totals, "total_ms": sum(totals.values()), "top_ops_ms": top}


def profile_both(name: str, seqs: list[str], *, batch: int, steps: int) -> dict[str, Any]:
    """Phase x kind breakdown of both loops and the Amdahl bound of any loop doing the reference's GEMMs."""
    model, optimizer = _reference_setup(name, batch)
    reference = profile_loop(partial(reference_step, model, optimizer), seqs, batch=batch, steps=steps)
    torch.manual_seed(0)
    ours_model = zoo.create_model(name).train()
    our_optimizer = torch.optim.AdamW(ours_model.parameters(), lr=1e-4 * batch / 64, weight_decay=0.0, fused=True)
    ours = profile_loop(partial(our_step, MlmTask(ours_model), our_optimizer), seqs, batch=batch, steps=steps)
    gemm = reference["by_kind"].get("gemm", 0.0)
    return {
        "reference": reference,
        "ours": ours,
        "reference_gemm_fraction": gemm / reference["total_ms"],
        "amdahl_bound_ratio": reference["total_ms"] / gemm if gemm else None,
        "profiled_ratio": reference["total_ms"] / ours["total_ms"],
    }


def _summary(runs: list[dict[str, float]]) -> dict[str, Any]:
    """Best (highest samples per CPU second: least disturbed) and median round."""
    best = max(runs, key=lambda r: r["samples_per_cpu_s"])
    median = {key: statistics.median(r[key] for r in runs) for key in runs[0]}
    return {"best": best, "median": median}


def measure(name: str, seqs: list[str], args: argparse.Namespace) -> dict[str, Any]:
    """Check, time reference and ours alternately (best and median rounds), then profile both."""
    sizes = {"batch": args.batch, "warmup": args.warmup, "steps": args.steps}
    variants: dict[str, Callable[..., dict[str, float]]] = {"reference": reference_rate, "ours": our_rate}
    if args.compile:
        variants["ours_compiled"] = partial(our_rate, compile=True)
    row: dict[str, Any] = {"model": name, **sizes, "rounds": args.rounds}
    row["check"] = check_same_math(name, seqs, batch=min(args.batch, 8))
    runs: dict[str, list[dict[str, float]]] = {key: [] for key in variants}
    for _ in range(args.rounds):
        for key, rate in variants.items():
            runs[key].append(rate(name, seqs, **sizes))
    for key in variants:
        row[key] = _summary(runs[key])
    ref = row["reference"]["best"]
    for key in variants:
        if key != "reference":
            best = row[key]["best"]
            row[f"ratio_{key}"] = {m: best[m] / ref[m] for m in ("samples_per_s", "samples_per_cpu_s", "tokens_per_s")}
    for key in variants:
        if key != "reference" and args.rounds >= MIN_RUNS:  # rounds alternate: each pair saw the same load
            pairs = zip(runs[key], runs["reference"], strict=True)
            row[f"ratio_{key}_rounds"] = spread([run["samples_per_s"] / base["samples_per_s"] for run, base in pairs])
    if args.profile_steps:
        row["profile"] = profile_both(name, seqs, batch=args.batch, steps=args.profile_steps)
    return row


def _print(row: dict[str, Any]) -> None:
    ref = row["reference"]["best"]
    print(f"{row['model']} (batch {row['batch']}, {row['steps']} timed steps, best of {row['rounds']} rounds)")
    print(f"  check {row['check']}")
    print(f"  reference {ref['samples_per_s']:.2f} samples/s wall, {ref['samples_per_cpu_s']:.2f} per CPU-s")
    for key in ("ours", "ours_compiled"):
        if key in row:
            r, ratio = row[key]["best"], row[f"ratio_{key}"]
            print(
                f"  {key} {r['samples_per_s']:.2f} samples/s wall, {r['samples_per_cpu_s']:.2f} per CPU-s: "
                f"{ratio['samples_per_s']:.2f}x wall, {ratio['samples_per_cpu_s']:.2f}x CPU (target >= 2x)"
            )
    if "profile" in row:
        prof = row["profile"]
        for loop in ("reference", "ours"):
            print(f"  profile {loop}: {prof[loop]['total_ms']:.0f} ms/step (profiler self time)")
            for phase, kinds in prof[loop]["ms_per_step"].items():
                cells = ", ".join(f"{kind} {ms:.0f}" for kind, ms in sorted(kinds.items()))
                print(f"    {phase:16s} {cells}")
            print("    top: " + "; ".join(f"{op} {ms:.0f}" for op, ms in list(prof[loop]["top_ops_ms"].items())[:6]))
        print(
            f"  GEMMs are {prof['reference_gemm_fraction']:.0%} of the reference step: Amdahl bound "
            f"{prof['amdahl_bound_ratio']:.2f}x for any loop with the same fp32 GEMMs (profiled ratio "
            f"{prof['profiled_ratio']:.2f}x)"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["barcodebert_4_4_4", "barcodebert_8_4_4"])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps before the timed ones")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per round")
    parser.add_argument("--rounds", type=int, default=3, help="alternating repeats; best and median reported")
    parser.add_argument("--profile-steps", type=int, default=2, help="profiled steps per loop (0: no profile)")
    parser.add_argument("--compile", action="store_true", help="also time ours with the encoder compiled")
    args = parser.parse_args(argv)
    seqs = barcodes(max(512, args.batch * (args.warmup + args.steps + args.profile_steps + 1)))
    rows = []
    for name in args.models:
        rows.append(row := measure(name, seqs, args))
        _print(row)
    record = {"benchmark": "barcodebert_train", "device": "cpu", "threads": torch.get_num_threads(), "results": rows}
    print(f"appended to {append_result('barcodebert_train', record)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
