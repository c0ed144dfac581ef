"""The BarcodeBERT pretraining loop of one worker: data source -> MLM task -> AdamW/OneCycle -> checkpoints.

Sits under `jobs/pretrain_barcodebert.py`, which runs `train_worker` on every Ray Train worker (DDP over the
process group Ray sets up: gloo on CPU, NCCL on GPU) or in-process. The recipe is the paper's (A5):
AdamW (weight decay 0), OneCycle stepped every optimizer step (pct_start 0.3, cosine), lr 1e-4 per 64
samples of total batch, random k-mer offsets. Additions for long shared runs: bf16 autocast on CUDA only,
fused AdamW, an optional `torch.compile` of the encoder, gradient accumulation, an atomic checkpoint every
N steps from which a killed run resumes at the same sample, and metrics (loss, masked accuracy, samples/s,
tokens/s) as JSON lines plus a loss-curve PNG.

The data source is a `zoo.tasks.dna_sources.SequenceSource` (each sequence once per epoch across workers,
in a deterministic order, so a resumed run skips exactly what it had done).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from tqdm import tqdm

from zoo._factory import create_model
from zoo.models.barcodebert import BarcodeBert
from zoo.tasks.dna_sources import SequenceSource
from zoo.tasks.mlm_task import MlmOutput, MlmTask, tokenize_for_training

__all__ = ["PretrainConfig", "fit_with_ray", "plot_loss_curve", "train_worker"]

CHECKPOINT = "checkpoint.pt"
METRICS = "metrics.jsonl"
MODEL_DIR = "model"
LOSS_PNG = "loss_curve.png"
#: Per-worker sums a training step returns and a logging window accumulates.
_WINDOW = ("loss_x_eligible", "eligible", "correct_masked", "masked", "tokens", "samples")


@dataclass(frozen=True)
class PretrainConfig:
    """One pretraining run. `batch_size` is per worker and micro-step; lr scales with the total batch."""

    output_dir: str
    model: str = "barcodebert_4_4_4"
    model_overrides: tuple[tuple[str, Any], ...] = ()
    batch_size: int = 64
    grad_accum: int = 1
    epochs: int = 1
    max_steps: int | None = None
    lr_per_64: float = 1e-4
    weight_decay: float = 0.0
    pct_start: float = 0.3
    checkpoint_every: int = 100
    log_every: int = 10
    seed: int = 0
    attn_implementation: str | None = None
    #: `torch.compile` the encoder (inductor, CPU or GPU): faster steps after a compile of minutes, so for
    #: long runs only.
    compile: bool = False
    #: False: no checkpoints, final model or plot (throughput benchmarks); metrics are still written.
    save_outputs: bool = True

    def steps_per_epoch(self, num_sequences: int, world_size: int) -> int:
        """Optimizer steps per epoch; the remainder is dropped so every DDP worker takes the same steps."""
        return num_sequences // world_size // (self.batch_size * self.grad_accum)

    def total_steps(self, num_sequences: int, world_size: int) -> int:
        full = self.epochs * self.steps_per_epoch(num_sequences, world_size)
        return full if self.max_steps is None else min(self.max_steps, full)


@dataclass
class _State:
    """What a worker needs to run, built once (and restored from the checkpoint on resume)."""

    model: BarcodeBert
    task: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.OneCycleLR
    step: int = 0
    samples_seen: int = 0


def _rank_world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _build(cfg: PretrainConfig, total_steps: int, world: int, device: torch.device) -> _State:
    """Model, task (DDP-wrapped when a process group exists), AdamW and OneCycle with the lr-per-64 rule."""
    torch.manual_seed(cfg.seed)  # identical initial weights on every worker
    overrides = dict(cfg.model_overrides)
    if cfg.attn_implementation:
        overrides["attn_implementation"] = cfg.attn_implementation
    model = create_model(cfg.model, **overrides).to(device)
    if not isinstance(model, BarcodeBert):
        raise TypeError(f"{cfg.model!r} is not a BarcodeBERT model")
    if cfg.compile:
        model.bert.compile()  # in place: state-dict names (checkpoints, saved folders) stay unchanged
    task: nn.Module = MlmTask(model)
    if world > 1:
        task = nn.parallel.DistributedDataParallel(task, device_ids=[device.index] if device.type == "cuda" else None)
    lr = cfg.lr_per_64 * cfg.batch_size * cfg.grad_accum * world / 64
    # fused: one kernel over all parameters instead of a dozen passes (the k=8 embedding and head are 100M)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=cfg.weight_decay, fused=True)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=lr, total_steps=max(total_steps, 1), pct_start=cfg.pct_start, anneal_strategy="cos"
    )
    return _State(model=model, task=task, optimizer=optimizer, scheduler=scheduler)


def _save_checkpoint(state: _State, cfg: PretrainConfig) -> None:
    """Atomic (tmp + rename): a kill mid-save leaves the previous checkpoint intact."""
    path = Path(cfg.output_dir) / CHECKPOINT
    tmp = path.with_suffix(".tmp")
    payload = {
        "model": state.model.state_dict(),
        "optimizer": state.optimizer.state_dict(),
        "scheduler": state.scheduler.state_dict(),
        "step": state.step,
        "samples_seen": state.samples_seen,
        "config": json.dumps(asdict(cfg)),
    }
    torch.save(payload, tmp)
    os.replace(tmp, path)


def _maybe_resume(state: _State, cfg: PretrainConfig, device: torch.device) -> None:
    path = Path(cfg.output_dir) / CHECKPOINT
    if not path.exists():
        return
    ckpt = torch.load(path, map_location=device, weights_only=True)
    state.model.load_state_dict(ckpt["model"])
    state.optimizer.load_state_dict(ckpt["optimizer"])
    state.step, state.samples_seen = int(ckpt["step"]), int(ckpt["samples_seen"])
    if ckpt["scheduler"].get("total_steps") == state.scheduler.total_steps:
        state.scheduler.load_state_dict(ckpt["scheduler"])
    else:  # a rerun with more epochs/steps: same peak lr, the one-cycle schedule re-planned over the new total
        state.scheduler.last_epoch = state.step


def _batches(
    source: SequenceSource, cfg: PretrainConfig, *, step: int, spe: int, rank: int, world: int
) -> Iterator[list[list[str]]]:
    """Micro-batches of each optimizer step from `step` on, epoch by epoch; skips what a resumed run has done."""
    per_step = cfg.batch_size * cfg.grad_accum
    while (epoch := step // spe) < cfg.epochs:
        done = step % spe
        stream = source.iter_worker(epoch=epoch, rank=rank, world_size=world)
        try:
            for _ in range(done * per_step):
                next(stream)
            for _ in range(done, spe):
                chunk = [next(stream) for _ in range(per_step)]
                yield [chunk[i : i + cfg.batch_size] for i in range(0, per_step, cfg.batch_size)]
                step += 1
        except StopIteration:
            # DDP needs equal step counts on every worker, so a short partition is an error, not a short epoch
            raise RuntimeError(f"worker {rank}: the source ran out before {spe} steps in epoch {epoch}") from None


def _train_step(
    state: _State, cfg: PretrainConfig, micro: list[list[str]], *, rank: int, device: torch.device
) -> np.ndarray:
    """One optimizer step over the micro-batches; returns this worker's sums for `_log` (see `_WINDOW`)."""
    tokenizer = state.model.tokenizer()
    # Every random draw of a step (offsets, masks, dropout) derives from (seed, rank, step): a resumed run
    # repeats the uninterrupted one exactly.
    rng = np.random.default_rng([cfg.seed, rank, state.step])
    torch.manual_seed(int(rng.integers(2**62)))
    generator = torch.Generator(device=device).manual_seed(int(rng.integers(2**62)))
    totals = np.zeros(len(_WINDOW))
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else contextlib.nullcontext()
    for i, seqs in enumerate(micro):
        ids, mask = (t.to(device) for t in tokenize_for_training(tokenizer, seqs, rng))
        ddp = state.task if isinstance(state.task, nn.parallel.DistributedDataParallel) else None
        # DDP all-reduces gradients only on the last micro-batch of a step (gradient accumulation)
        with autocast, ddp.no_sync() if ddp is not None and i < len(micro) - 1 else contextlib.nullcontext():
            out: MlmOutput = state.task(ids, mask, generator=generator)
            (out.loss / len(micro)).backward()
        totals += [
            out.loss.item() * out.n_eligible,
            out.n_eligible,
            out.correct_masked,
            out.n_masked,
            int(mask.sum()),
            len(seqs),
        ]
    state.optimizer.step()
    state.optimizer.zero_grad(set_to_none=True)
    state.scheduler.step()
    state.step += 1
    return totals


def _log(totals: np.ndarray, state: _State, *, seconds: float, world: int) -> dict[str, Any]:
    """Metrics of one logging window, summed over workers (every worker calls this at the same steps)."""
    if world > 1:
        summed = torch.tensor(totals, dtype=torch.float64)
        dist.all_reduce(summed)
        totals = summed.numpy()
    loss_sum, eligible, correct, masked, tokens, samples = (float(v) for v in totals)
    return {
        "step": state.step,
        "samples_seen": state.samples_seen,
        "loss": loss_sum / max(eligible, 1),
        "masked_acc": correct / max(masked, 1),
        "lr": state.scheduler.get_last_lr()[0],
        "samples_per_s": samples / seconds,
        "tokens_per_s": tokens / seconds,
    }


def train_worker(
    cfg: PretrainConfig, source: SequenceSource, *, report: Callable[[dict[str, Any]], None] | None = None
) -> dict[str, Any]:
    """Run (or resume) pretraining on this worker; rank 0 writes checkpoints, metrics, the model and the plot."""
    rank, world = _rank_world()
    device = torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
    spe = cfg.steps_per_epoch(source.num_sequences(), world)
    if spe == 0:
        raise ValueError(f"{source.num_sequences()} sequences are fewer than one step of {world} workers")
    total = cfg.total_steps(source.num_sequences(), world)
    out_dir = Path(cfg.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    state = _build(cfg, total, world, device)
    _maybe_resume(state, cfg, device)
    if rank == 0:
        _truncate_metrics(out_dir / METRICS, state.step)
    state.task.train()
    window, last = np.zeros(len(_WINDOW)), time.perf_counter()
    bar = tqdm(total=total, initial=state.step, desc="pretrain", disable=rank != 0)
    for micro in _batches(source, cfg, step=state.step, spe=spe, rank=rank, world=world):
        if state.step >= total:
            break
        window += _train_step(state, cfg, micro, rank=rank, device=device)
        state.samples_seen += cfg.batch_size * cfg.grad_accum * world
        bar.update(1)
        if state.step % cfg.log_every == 0 or state.step == total:
            metrics = _log(window, state, seconds=time.perf_counter() - last, world=world)
            window, last = np.zeros(len(_WINDOW)), time.perf_counter()
            _emit(metrics, out_dir / METRICS, bar, rank=rank, report=report)
        if rank == 0 and cfg.save_outputs and (state.step % cfg.checkpoint_every == 0 or state.step == total):
            _save_checkpoint(state, cfg)
    bar.close()
    if rank == 0 and cfg.save_outputs:
        _save_model(state.model, out_dir / MODEL_DIR)
        plot_loss_curve(out_dir / METRICS, out_dir / LOSS_PNG)
    return {"step": state.step, "samples_seen": state.samples_seen, "output_dir": str(out_dir)}


def _emit(
    metrics: dict[str, Any], path: Path, bar: tqdm, *, rank: int, report: Callable[[dict[str, Any]], None] | None
) -> None:
    if rank == 0:
        with path.open("a") as f:
            f.write(json.dumps(metrics) + "\n")
        bar.set_postfix(
            loss=f"{metrics['loss']:.3f}", acc=f"{metrics['masked_acc']:.3f}", sps=f"{metrics['samples_per_s']:.0f}"
        )
    if report is not None:
        report(metrics)


def _truncate_metrics(path: Path, step: int) -> None:
    """On resume, drop metric lines logged after the checkpoint (they will be logged again)."""
    if not path.exists():
        return
    lines = [line for line in path.read_text().splitlines() if line and json.loads(line)["step"] <= step]
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(line + "\n" for line in lines))
    os.replace(tmp, path)


def _save_model(model: BarcodeBert, folder: Path) -> None:
    """Hugging Face folder, written beside and swapped in, so readers never see half a model."""
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(tmp, folder)


def plot_loss_curve(metrics_path: Path, png: Path) -> None:
    """PNG of the MLM loss and the masked-token accuracy against the optimizer step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(line) for line in Path(metrics_path).read_text().splitlines() if line]
    if not rows:
        return
    steps = [r["step"] for r in rows]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 3.5))
    ax_loss.plot(steps, [r["loss"] for r in rows])
    ax_loss.set(xlabel="optimizer step", ylabel="MLM loss (all eligible k-mers)", title="loss")
    ax_acc.plot(steps, [r["masked_acc"] for r in rows], color="tab:orange")
    ax_acc.set(xlabel="optimizer step", ylabel="accuracy on masked k-mers", title="masked accuracy")
    fig.tight_layout()
    fig.savefig(png, dpi=100)
    plt.close(fig)


def _ray_worker(loop_config: dict[str, Any]) -> None:
    """Ray Train's per-worker function: the process group exists already; metrics go to `ray.train.report`."""
    import ray.train

    cfg = PretrainConfig(**loop_config["cfg"])
    train_worker(cfg, loop_config["source"], report=ray.train.report)


def fit_with_ray(
    cfg: PretrainConfig, source: SequenceSource, *, workers: int, gpu: bool = False, cpus_per_worker: int = 1
) -> None:
    """`train_worker` on `workers` Ray Train workers (DDP: gloo on CPU, NCCL with `gpu`), one CPU set each.

    Uses the Ray runtime that is up (the pipeline's, or `ray job submit`'s), else starts an embedded one.
    """
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    from bioscan_stream.ray_runtime import ray_runtime

    scaling = ScalingConfig(num_workers=workers, use_gpu=gpu, resources_per_worker={"CPU": cpus_per_worker})
    trainer = TorchTrainer(
        _ray_worker,
        train_loop_config={"cfg": asdict(cfg), "source": source},
        scaling_config=scaling,
        torch_config=TorchConfig(backend="nccl" if gpu else "gloo"),
        run_config=RunConfig(name="pretrain_barcodebert", storage_path=str(Path(cfg.output_dir) / "ray")),
    )
    with ray_runtime():  # RAY_ADDRESS (set under `ray job submit`) is honoured by ray.init itself
        trainer.fit()
