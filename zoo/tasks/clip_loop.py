"""CLIP training of one Ray Train worker: stream (image + DNA + taxonomy) -> `ClipTask` -> checkpoints -> model.

`jobs/train_clip.py` runs `train_worker` on every Ray Train worker (DDP over the process group Ray sets up:
gloo on CPU, NCCL on GPU) or in-process. Each rank reads its part of one split through `BioscanStream`
(exactly once per epoch across ranks and DataLoader workers): images with the image tower's eval transform
(resize + centre crop: deterministic, so a resumed run sees the same pixels), barcodes tokenised by the DNA
tower's k-mer tokenizer at offset 0, and the metadata's "order family genus species" tokenised per batch by
the text tower's tokenizer. Ranks stop an epoch together at the first one that runs out of batches.

An optimizer step accumulates `grad_accum` micro-batches (DDP syncs on the last). Optimizer and schedule
come from the recipe (`zoo.models.clip.RECIPES`). Every random draw of a step (dropout) derives from
(seed, rank, step), and checkpoints (atomic, every N steps and at each epoch's end) keep the loader
position of every stream: a killed run, rerun with the same command, continues where its checkpoint was and
ends with the weights an uninterrupted run has. Metrics per logging window (JSON lines, `ray.train.report`):
loss, in-batch top-1 retrieval accuracy of every directed modality pair, temperature, lr, samples/s; a
loss-curve PNG at the end, and the model as a folder (`model/`) the zoo loads (`clip:RUN/image`, ...).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from tqdm import tqdm

from bioscan_stream.stream import BioscanStream, make_loader
from bioscan_stream.stream.transforms import ImageTransform
from zoo._factory import create_model
from zoo.models.bert_text import taxonomy_text
from zoo.models.clip import RUN_MODEL_DIR, ClipInputError, ClipModel
from zoo.tasks.classify_data import make_synthetic_shards
from zoo.tasks.clip_task import ClipOutput, ClipTask, directed_pairs
from zoo.tasks.train_utils import close_loader, lr_factor, truncate_metrics

__all__ = ["CLIP_SPLITS", "ClipTrainConfig", "build_model", "make_clip_shards", "plot_clip_curves", "train_worker"]

CHECKPOINT, METRICS, LOSS_PNG = "checkpoint.pt", "metrics.jsonl", "loss_curve.png"


@dataclass(frozen=True)
class ClipTrainConfig:
    """One CLIP training run. `batch_size` is per worker and micro-batch; `lr` None takes the recipe's."""

    shards: str
    output_dir: str
    model: str = "clip_tiny"
    model_overrides: tuple[tuple[str, Any], ...] = ()
    recipe: str = "bioscan5m-paper"
    split: str = "train"
    batch_size: int = 32
    grad_accum: int = 1
    epochs: int = 1
    max_steps: int | None = None
    lr: float | None = None
    loader_workers: int = 1
    shuffle_buffer: int = 1000
    checkpoint_every: int = 50
    log_every: int = 10
    seed: int = 0

    def total_steps(self, samples: int, world: int) -> int:
        """Planned optimizer steps: per epoch the most micro-batches a rank can get, grouped by `grad_accum`."""
        streams = world * max(self.loader_workers, 1)
        micro = max(self.loader_workers, 1) * math.ceil(math.ceil(samples / streams) / self.batch_size)
        full = self.epochs * math.ceil(micro / self.grad_accum)
        return full if self.max_steps is None else min(self.max_steps, full)


@dataclass
class _Run:
    """Per-process facts and the training state (what a checkpoint holds)."""

    cfg: ClipTrainConfig
    rank: int
    world: int
    device: torch.device
    out: Path
    model: ClipModel
    task: nn.Module
    optimizer: torch.optim.Optimizer
    total: int = 0
    step: int = 0
    epoch: int = 0
    epoch_samples: int = 0
    stream: dict[str, Any] = field(default_factory=dict)
    report: Callable[[dict[str, Any]], None] | None = None


def _all_reduce(values: np.ndarray, run: _Run, op: Any = None) -> np.ndarray:
    if run.world == 1:
        return values
    tensor = torch.tensor(values, dtype=torch.float64, device=run.device)
    dist.all_reduce(tensor, op=op or dist.ReduceOp.SUM)
    return tensor.cpu().numpy()


def _window_keys(model: ClipModel) -> list[str]:
    """Names of the per-rank sums of a logging window."""
    pairs = [f"{a}_{b}" for a, b in directed_pairs(model.modalities)]
    return ["loss_sum", "samples", *(f"correct_{p}" for p in pairs)]


def build_model(cfg: ClipTrainConfig, device: torch.device) -> ClipModel:
    torch.manual_seed(cfg.seed)  # identical initial weights on every worker
    model = create_model(cfg.model, recipe=cfg.recipe, **dict(cfg.model_overrides))
    if not isinstance(model, ClipModel):
        raise TypeError(f"{cfg.model!r} is not a CLIP model")
    return model.to(device).train()


def _optimizer(model: ClipModel, cfg: ClipTrainConfig) -> torch.optim.Optimizer:
    recipe = model.recipe
    lr = cfg.lr if cfg.lr is not None else recipe.lr
    params = model.trainable_parameters()
    if recipe.optimizer == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=recipe.weight_decay)
    return torch.optim.AdamW(params, lr=lr, weight_decay=recipe.weight_decay)


def _loader(cfg: ClipTrainConfig, model: ClipModel) -> Any:
    """The split as batches of uint8 images, k-mer ids and metadata, for the modalities the model has."""
    wanted = {"image": "image", "dna": "dna", "text": "metadata"}
    modalities = tuple(wanted[m] for m in model.modalities)
    transform: Any = "eval"
    if "image" in model.modalities:
        data = model.tower("image").backbone.data_config
        size = int(data["input_size"][-1])
        transform = ImageTransform(
            size=size, crop_pct=float(data["crop_pct"]), interpolation=str(data["interpolation"])
        )
    tokenizer = model.tower("dna").backbone.tokenizer() if "dna" in model.modalities else None
    stream = BioscanStream(
        cfg.shards, split=cfg.split, modalities=modalities, targets=(), batch_size=cfg.batch_size,
        transform=transform, normalize=False, tokenizer=tokenizer, dna_max_offset=0, seed=cfg.seed,
        shuffle_buffer=cfg.shuffle_buffer,
    )  # fmt: skip
    return make_loader(stream, num_workers=cfg.loader_workers)


def training_batch(batch: dict[str, Any], model: ClipModel, device: torch.device) -> dict[str, Any]:
    """A stream batch as the model's inputs on `device`; the taxonomy text tokenised here, once per batch."""
    out: dict[str, Any] = {}
    if "image" in model.modalities:
        out["image"] = batch["image"].to(device, non_blocking=True)
    if "dna" in model.modalities:
        out["dna"], out["dna_mask"] = batch["dna"].to(device), batch["dna_mask"].to(device)
    if "text" in model.modalities:
        texts = [taxonomy_text(m) for m in batch["metadata"]]
        empty = [key for key, text in zip(batch["__key__"], texts, strict=True) if not text]
        if empty:
            raise ClipInputError(f"records without any taxonomy for the text tower: {empty[:5]}")
        arrays = model.tower("text").backbone.tokens.encode(texts)
        out["text"] = torch.from_numpy(arrays["input_ids"]).to(device)
        out["text_mask"] = torch.from_numpy(arrays["attention_mask"]).to(device)
    return out


def _save_checkpoint(run: _Run) -> None:
    """Atomic (tmp + rename): a kill mid-save leaves the previous checkpoint intact. Rank 0 only."""
    path = run.out / CHECKPOINT
    payload = {
        "model": run.model.state_dict(),
        "optimizer": run.optimizer.state_dict(),
        "step": run.step, "epoch": run.epoch, "epoch_samples": run.epoch_samples, "stream": run.stream,
        "model_name": run.cfg.model, "recipe": run.cfg.recipe, "config": json.dumps(asdict(run.cfg)),
    }  # fmt: skip
    torch.save(payload, path.with_suffix(".tmp"))
    os.replace(path.with_suffix(".tmp"), path)


def _maybe_resume(run: _Run) -> None:
    path = run.out / CHECKPOINT
    if not path.exists():
        return
    ckpt = torch.load(path, map_location=run.device, weights_only=True)
    if (ckpt.get("model_name"), ckpt.get("recipe")) != (run.cfg.model, run.cfg.recipe):
        raise ClipInputError(
            f"{path} is a checkpoint of {ckpt.get('model_name')} with recipe {ckpt.get('recipe')!r}, "
            f"not {run.cfg.model} with {run.cfg.recipe!r}: use another --output"
        )
    run.model.load_state_dict(ckpt["model"])
    run.optimizer.load_state_dict(ckpt["optimizer"])
    run.step, run.epoch, run.epoch_samples = int(ckpt["step"]), int(ckpt["epoch"]), int(ckpt["epoch_samples"])
    run.stream = ckpt["stream"]


def _stream_state(loader: Any, run: _Run) -> dict[str, Any]:
    """The loader positions of every stream of every rank (a collective call when distributed)."""
    states = [loader.state_dict()]
    if run.world > 1:
        gathered: list[Any] = [None] * run.world
        dist.all_gather_object(gathered, states[0])
        states = gathered
    positions = {int(k): int(v) for s in states for k, v in s.get("position", {}).items()}
    return {"epoch": states[0]["epoch"], "streams": states[0]["streams"], "position": positions}


def _steps(loader: Any, run: _Run) -> Iterator[list[dict[str, Any]]]:
    """This epoch's micro-batches, `grad_accum` per step, from the checkpoint's position, in lockstep."""
    loader.set_epoch(run.epoch)
    if run.stream.get("epoch") == run.epoch and run.stream.get("position"):
        loader.load_state_dict(run.stream)
    else:
        run.epoch_samples = 0
    batches = iter(loader)
    while True:
        group: list[dict[str, Any]] = []
        for _ in range(run.cfg.grad_accum):
            batch = next(batches, None)
            if _all_reduce(np.array([batch is not None], dtype=np.float64), run, dist.ReduceOp.MIN)[0] < 1:
                break
            assert batch is not None
            group.append(batch)
        if not group:
            return
        yield group


def _train_step(run: _Run, micro: list[dict[str, Any]], keys: list[str]) -> np.ndarray:
    """One optimizer step over the micro-batches; returns this rank's window sums (see `_window_keys`)."""
    torch.manual_seed(int(np.random.default_rng([run.cfg.seed, run.rank, run.step]).integers(2**62)))
    recipe = run.model.recipe
    warmup = max(1, round(recipe.warmup_fraction * run.total))
    lr = run.cfg.lr if run.cfg.lr is not None else recipe.lr
    factor = lr_factor(run.step, warmup, run.total) if recipe.schedule == "cosine" else 1.0
    for group in run.optimizer.param_groups:
        group["lr"] = lr * factor
    cuda_bf16 = run.device.type == "cuda" and recipe.bf16
    sums = dict.fromkeys(keys, 0.0)
    for i, batch in enumerate(micro):
        inputs = training_batch(batch, run.model, run.device)
        ddp = run.task if isinstance(run.task, nn.parallel.DistributedDataParallel) else None
        sync = ddp.no_sync() if ddp is not None and i < len(micro) - 1 else contextlib.nullcontext()
        autocast = torch.autocast("cuda", dtype=torch.bfloat16) if cuda_bf16 else contextlib.nullcontext()
        with sync, autocast:
            out: ClipOutput = run.task(inputs)
            (out.loss / len(micro)).backward()
        sums["loss_sum"] += sum(out.loss_sums.values()) / len(out.loss_sums)
        sums["samples"] += out.rows
        for pair, correct in out.correct.items():
            sums[f"correct_{pair}"] += correct
    run.optimizer.step()
    run.optimizer.zero_grad(set_to_none=True)
    run.step += 1
    return np.array([sums[k] for k in keys], dtype=np.float64)


def _log(window: np.ndarray, run: _Run, keys: list[str], seconds: float, bar: tqdm) -> np.ndarray:
    """Write one metrics line (sums over ranks; every rank calls this at the same steps); returns a new window."""
    totals = dict(zip(keys, _all_reduce(window, run), strict=True))
    samples = max(totals["samples"], 1.0)
    run.epoch_samples += int(totals["samples"])
    metrics: dict[str, Any] = {
        "step": run.step, "epoch": run.epoch, "epoch_samples": run.epoch_samples,
        "loss": totals["loss_sum"] / samples,
        **{f"acc_{k.removeprefix('correct_')}": v / samples for k, v in totals.items() if k.startswith("correct_")},
        "temperature": float(1 / run.model.logit_scale().detach()), "lr": run.optimizer.param_groups[0]["lr"],
        "samples_per_s": totals["samples"] / max(seconds, 1e-9),
    }  # fmt: skip
    if run.rank == 0:
        with (run.out / METRICS).open("a") as f:
            f.write(json.dumps(metrics) + "\n")
        bar.set_postfix(epoch=run.epoch, loss=f"{metrics['loss']:.3f}", sps=f"{metrics['samples_per_s']:.1f}")
    if run.report is not None:
        run.report(metrics)
    return np.zeros(len(keys))


def _run_epoch(run: _Run, loader: Any, bar: tqdm) -> None:
    """Train until the epoch (or the planned steps) ends, logging and checkpointing every N steps."""
    keys = _window_keys(run.model)
    window, last = np.zeros(len(keys)), time.perf_counter()
    for micro in _steps(loader, run):
        window += _train_step(run, micro, keys)
        bar.update(1)
        stop = run.cfg.max_steps is not None and run.step >= run.total
        checkpoint = stop or run.step % run.cfg.checkpoint_every == 0
        if checkpoint or run.step % run.cfg.log_every == 0:
            window, last = _log(window, run, keys, time.perf_counter() - last, bar), time.perf_counter()
        if checkpoint:
            run.stream = _stream_state(loader, run)
            if run.rank == 0:
                _save_checkpoint(run)
        if stop:
            return
    if window[1]:
        _log(window, run, keys, time.perf_counter() - last, bar)
    run.epoch += 1
    run.stream = {"epoch": run.epoch, "streams": None, "position": {}}
    if run.rank == 0:
        _save_checkpoint(run)


def _setup(cfg: ClipTrainConfig, report: Callable[[dict[str, Any]], None] | None) -> tuple[_Run, Any]:
    rank, world = (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
    device = torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")
    model = build_model(cfg, device)
    task: nn.Module = ClipTask(model)
    if world > 1:
        task = nn.parallel.DistributedDataParallel(task, device_ids=[device.index] if device.type == "cuda" else None)
    run = _Run(cfg, rank, world, device, Path(cfg.output_dir), model, task, _optimizer(model, cfg), report=report)
    loader = _loader(cfg, model)
    run.total = cfg.total_steps(int(loader.dataset.num_samples or 0), world)
    if run.total == 0:
        raise ValueError(f"split {cfg.split!r} of {cfg.shards} gives no training step")
    return run, loader


def train_worker(cfg: ClipTrainConfig, *, report: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Run (or resume) CLIP training on this worker; rank 0 writes checkpoints, metrics, the model and the plot."""
    run, loader = _setup(cfg, report)
    run.out.mkdir(parents=True, exist_ok=True)
    _maybe_resume(run)
    if run.rank == 0:
        truncate_metrics(run.out / METRICS, run.step)
    bar = tqdm(total=run.total, initial=min(run.step, run.total), desc=f"train {cfg.model}", disable=run.rank != 0)
    while run.step < run.total and run.epoch < cfg.epochs:
        _run_epoch(run, loader, bar)
    bar.close()
    close_loader(loader)
    if run.rank == 0:
        _save_model(run.model, run.out / RUN_MODEL_DIR)
        plot_clip_curves(run.out / METRICS, run.out / LOSS_PNG)
    return {"step": run.step, "epoch": run.epoch, "output_dir": str(run.out)}


def _save_model(model: ClipModel, folder: Path) -> None:
    """The model folder, written beside and swapped in, so readers never see half a model."""
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(tmp, folder)


def plot_clip_curves(metrics_path: Path, png: Path) -> None:
    """PNG of the loss, the in-batch retrieval accuracies and the temperature against the optimizer step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(line) for line in Path(metrics_path).read_text().splitlines() if line]
    if not rows:
        return
    steps = [r["step"] for r in rows]
    fig, (ax_loss, ax_acc, ax_temp) = plt.subplots(1, 3, figsize=(14, 3.5))
    ax_loss.plot(steps, [r["loss"] for r in rows])
    ax_loss.set(xlabel="optimizer step", ylabel="mean directed InfoNCE", title="loss")
    for key in sorted(k for k in rows[0] if k.startswith("acc_")):
        ax_acc.plot(steps, [r[key] for r in rows], label=key.removeprefix("acc_").replace("_", "->"))
    ax_acc.set(xlabel="optimizer step", ylabel="top-1 within the batch", title="in-batch retrieval")
    ax_acc.legend(fontsize=7)
    ax_temp.plot(steps, [r["temperature"] for r in rows], color="tab:green")
    ax_temp.set(xlabel="optimizer step", ylabel="T", title="temperature")
    fig.tight_layout()
    fig.savefig(png, dpi=100)
    plt.close(fig)


#: Splits the synthetic CLIP data renders: training, and the retrieval protocol's keys and queries.
CLIP_SPLITS = ("train", "key_unseen", "test", "test_unseen")


def make_clip_shards(out: str | Path, *, samples: int, seed: int = 0, workers: int = 2) -> str:
    """A synthetic release of `samples` records with `cropped_256` photos of the `CLIP_SPLITS` records,
    converted to `out/shards/cropped_256` (image, barcode, metadata per sample); returns that folder."""
    return make_synthetic_shards(out, samples=samples, seed=seed, workers=workers, splits=CLIP_SPLITS)
