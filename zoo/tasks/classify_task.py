"""Image classification of one Ray Train worker: stream -> timm backbone + cross-entropy -> checkpoints -> report.

The BIOSCAN-1M experiments (evaluation.md §4): a timm backbone fine-tuned on cropped_256 photos to classify
order (16 classes) or Diptera family (40), class lists from `classify_data`. `jobs/train_classifier.py`
runs `train_worker` on every Ray Train worker (DDP over the process group Ray sets up: gloo on CPU, NCCL on
GPU) or in-process. Each worker reads its own part of the split through `BioscanStream` (exactly once per
epoch across ranks and DataLoader workers), with the stream's train transform (random-resized crop + flip)
for training and its eval transform (resize + centre crop) for the test. uint8 batches are normalised on
the device; bf16 autocast on CUDA only.

Recipe: AdamW, linear warmup then cosine decay to 0 (lr a pure function of the step, so nothing to
restore), optional label smoothing. The loss is the mean over every kept record of the global batch:
each rank's summed loss is scaled by world / kept records over all ranks, which DDP's gradient average
turns back into that mean (ranks keep different numbers of records: classes outside the list are dropped
after batching). Ranks stop an epoch together at the first rank that runs out of batches (streams differ
by at most one sample, so at most one trailing batch per rank is skipped).

Checkpoints are atomic (tmp + rename) every N steps and at each epoch's end, with the loader position of
every stream: a killed run, rerun with the same command, resumes at the sample where the checkpoint was
taken (augmentation draws are redrawn). Their `model` entry is the plain timm state dict, so
`timm.create_model(name, num_classes=C, checkpoint_path="checkpoint.pt")` loads it; the final weights are
also written as `model.safetensors`.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import timm
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from bioscan_stream.stream import BioscanStream, make_loader
from bioscan_stream.stream.transforms import ImageTransform, normalize_batch
from zoo.tasks.classify_data import ClassList
from zoo.tasks.classify_report import evaluate, plot_loss_curve, write_report
from zoo.tasks.train_utils import close_loader as _close
from zoo.tasks.train_utils import lr_factor as _lr_factor
from zoo.tasks.train_utils import truncate_metrics as _truncate_metrics

__all__ = ["ClassifyConfig", "create_classifier", "load_backbone", "predict", "train_worker"]

CHECKPOINT, FINAL_WEIGHTS, METRICS, LOSS_PNG, CLASSES = (
    "checkpoint.pt", "model.safetensors", "metrics.jsonl", "loss_curve.png", "classes.json",
)  # fmt: skip
#: Per-rank sums of a logging window: summed loss, correct top-1, kept records, delivered records.
_WINDOW = 4


@dataclass(frozen=True)
class ClassifyConfig:
    """One fine-tuning run. `batch_size` is per worker; `lr` is the peak of the warmup + cosine schedule."""

    shards: str
    output_dir: str
    classes: ClassList
    model: str = "resnet50"
    pretrained: str | None = None
    image_size: int = 224
    batch_size: int = 64
    epochs: int = 10
    max_steps: int | None = None
    lr: float = 1e-3
    weight_decay: float = 0.05
    #: None: 5% of the steps.
    warmup_steps: int | None = None
    label_smoothing: float = 0.0
    #: Random-resized-crop area range of the train transform (timm's default (0.08, 1)).
    crop_scale: tuple[float, float] = (0.08, 1.0)
    loader_workers: int = 2
    checkpoint_every: int = 200
    log_every: int = 10
    seed: int = 0
    train_split: str = "train"
    test_split: str = "test"
    #: A BIOSCAN-1M shard set's partitioning version (`large_insect_order`, ...): its splits are read.
    partitioning: str | None = None

    def total_steps(self, train_samples: int, world: int) -> int:
        """Planned optimizer steps (the schedule's length), or `max_steps` when fewer.

        Per epoch: the most batches a rank can get, i.e. its streams (one per DataLoader worker) holding
        ceil(N / streams) records each, each ending with a partial batch. Ranks stop together at the first
        one that runs out, so an epoch can be a step shorter; the cosine then ends just above 0.
        """
        workers = max(self.loader_workers, 1)
        per_stream = math.ceil(train_samples / (world * workers))
        full = self.epochs * workers * math.ceil(per_stream / self.batch_size)
        return full if self.max_steps is None else min(self.max_steps, full)


@dataclass
class _State:
    """The model (plain timm, for saving), what trains it (`net`: DDP-wrapped when distributed) and the position."""

    model: nn.Module
    net: nn.Module
    optimizer: torch.optim.Optimizer
    step: int = 0
    epoch: int = 0
    epoch_samples: int = 0
    stream: dict[str, Any] = field(default_factory=dict)


@dataclass
class _Run:
    """Per-process facts of a run."""

    rank: int
    world: int
    device: torch.device
    total: int
    out: Path
    report: Callable[[dict[str, Any]], None] | None = None


def _read_weights(path: str) -> dict[str, torch.Tensor]:
    """A state dict from safetensors or a `torch.save` file (weights only; `model`/`state_dict` entries unwrapped)."""
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        return load_file(path)
    obj = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("model", "state_dict"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    return {k.removeprefix("module."): v for k, v in obj.items() if isinstance(v, torch.Tensor)}


def load_backbone(model: nn.Module, path: str) -> list[str]:
    """Load every weight of `path` whose name and shape match `model`; returns the model keys left as
    initialised. Only the classifier may be among them (a head of another class count): anything else raises."""
    own = model.state_dict()
    weights = {k: v for k, v in _read_weights(path).items() if k in own and own[k].shape == v.shape}
    missing = sorted(set(own) - set(weights))
    head = str(getattr(model, "pretrained_cfg", {}).get("classifier", "fc"))
    foreign = [k for k in missing if not k.startswith(head + ".") and not k.endswith("num_batches_tracked")]
    if foreign:
        raise ValueError(f"{path}: no matching weights for {len(foreign)} backbone tensors, e.g. {foreign[:3]}")
    model.load_state_dict(weights, strict=False)
    return missing


def create_classifier(name: str, num_classes: int, *, pretrained: str | None = None) -> nn.Module:
    """`timm.create_model(name, num_classes=...)`, random init or backbone weights from a local file."""
    model = timm.create_model(name, num_classes=num_classes)
    if pretrained:
        load_backbone(model, pretrained)
    return model


def _rank_world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _loader(cfg: ClassifyConfig, split: str, *, train: bool) -> Any:
    transform = ImageTransform(train=train, size=cfg.image_size, scale=cfg.crop_scale)
    stream = BioscanStream(
        cfg.shards, split=split, partitioning=cfg.partitioning, modalities=("image",), targets=cfg.classes.targets,
        batch_size=cfg.batch_size,
        transform=transform, normalize=False, tokenizer=None, seed=cfg.seed, shuffle_buffer=1000 if train else 0,
    )  # fmt: skip
    return make_loader(stream, num_workers=cfg.loader_workers)


def _build(cfg: ClassifyConfig, run: _Run) -> _State:
    torch.manual_seed(cfg.seed)  # identical initial weights on every worker
    model = create_classifier(cfg.model, cfg.classes.num_classes, pretrained=cfg.pretrained).to(run.device)
    net: nn.Module = model
    if run.world > 1:
        ids = [run.device.index] if run.device.type == "cuda" else None
        net = nn.parallel.DistributedDataParallel(model, device_ids=ids)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    return _State(model=model, net=net, optimizer=optimizer)


def _save_checkpoint(state: _State, cfg: ClassifyConfig, run: _Run) -> None:
    """Atomic (tmp + rename): a kill mid-save leaves the previous checkpoint intact. Rank 0 only."""
    path = run.out / CHECKPOINT
    payload = {
        "model": state.model.state_dict(),
        "optimizer": state.optimizer.state_dict(),
        "step": state.step,
        "epoch": state.epoch,
        "epoch_samples": state.epoch_samples,
        "stream": state.stream,
        "timm_model": cfg.model,
        "num_classes": cfg.classes.num_classes,
        "class_codes": list(cfg.classes.codes),
        "config": json.dumps(asdict(cfg)),
    }
    torch.save(payload, path.with_suffix(".tmp"))
    os.replace(path.with_suffix(".tmp"), path)


def _maybe_resume(state: _State, cfg: ClassifyConfig, run: _Run) -> None:
    path = run.out / CHECKPOINT
    if not path.exists():
        return
    ckpt = torch.load(path, map_location=run.device, weights_only=True)
    if ckpt["timm_model"] != cfg.model or ckpt["class_codes"] != list(cfg.classes.codes):
        raise ValueError(f"{path} is a run of {ckpt['timm_model']} on other classes: use another --output")
    state.model.load_state_dict(ckpt["model"])
    state.optimizer.load_state_dict(ckpt["optimizer"])
    state.step, state.epoch, state.epoch_samples = int(ckpt["step"]), int(ckpt["epoch"]), int(ckpt["epoch_samples"])
    state.stream = ckpt["stream"]


def _all_reduce(values: np.ndarray, run: _Run, op: Any = None) -> np.ndarray:
    if run.world == 1:
        return values
    tensor = torch.tensor(values, dtype=torch.float64, device=run.device)
    dist.all_reduce(tensor, op=op or dist.ReduceOp.SUM)
    return tensor.cpu().numpy()


def _stream_state(loader: Any, run: _Run) -> dict[str, Any]:
    """The loader positions of every stream of every rank (a collective call when distributed)."""
    states = [loader.state_dict()]
    if run.world > 1:
        gathered: list[Any] = [None] * run.world
        dist.all_gather_object(gathered, states[0])
        states = gathered
    positions = {int(k): int(v) for s in states for k, v in s.get("position", {}).items()}
    return {"epoch": states[0]["epoch"], "streams": states[0]["streams"], "position": positions}


def _train_step(state: _State, cfg: ClassifyConfig, batch: dict[str, Any], run: _Run) -> np.ndarray:
    """One optimizer step on this rank's batch; returns the rank's window sums (see `_WINDOW`)."""
    target = cfg.classes.encode(batch).to(run.device)
    keep = target >= 0
    kept = int(keep.sum())
    kept_all = _all_reduce(np.array([kept], dtype=np.float64), run)[0]
    images = normalize_batch(batch["image"].to(run.device, non_blocking=True))
    if kept > 1:  # the dropped records need no forward pass (a single one would upset BatchNorm)
        images, target = images[keep], target[keep]
    warmup = cfg.warmup_steps if cfg.warmup_steps is not None else max(1, run.total // 20)
    for group in state.optimizer.param_groups:
        group["lr"] = cfg.lr * _lr_factor(state.step, warmup, run.total)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if run.device.type == "cuda" else contextlib.nullcontext()
    with autocast:
        logits = state.net(images).float()
    valid = target >= 0
    loss_sum = F.cross_entropy(logits[valid], target[valid], reduction="sum", label_smoothing=cfg.label_smoothing)
    (loss_sum * run.world / max(kept_all, 1.0) + 0.0 * logits.sum()).backward()
    state.optimizer.step()
    state.optimizer.zero_grad(set_to_none=True)
    state.step += 1
    correct = int((logits[valid].argmax(1) == target[valid]).sum())
    return np.array([float(loss_sum.detach()), correct, kept, len(batch["__key__"])], dtype=np.float64)


def _log(window: np.ndarray, state: _State, run: _Run, seconds: float, bar: tqdm) -> np.ndarray:
    """Write one metrics line (sums over ranks; every rank calls this at the same steps); returns a new window."""
    loss_sum, correct, kept, delivered = _all_reduce(window, run)
    state.epoch_samples += int(delivered)
    metrics = {
        "step": state.step, "epoch": state.epoch, "epoch_samples": state.epoch_samples,
        "loss": loss_sum / max(kept, 1), "train_top1": correct / max(kept, 1), "kept": int(kept),
        "excluded": int(delivered - kept), "images_per_s": delivered / max(seconds, 1e-9),
        "lr": state.optimizer.param_groups[0]["lr"],
    }  # fmt: skip
    if run.rank == 0:
        with (run.out / METRICS).open("a") as f:
            f.write(json.dumps(metrics) + "\n")
        bar.set_postfix(epoch=state.epoch, loss=f"{metrics['loss']:.3f}", top1=f"{metrics['train_top1']:.3f}")
    if run.report is not None:
        run.report(metrics)
    return np.zeros(_WINDOW)


def _batches(loader: Any, state: _State, run: _Run) -> Iterator[dict[str, Any]]:
    """This epoch's batches from where the checkpoint left off, in lockstep: all ranks stop at the first empty one."""
    loader.set_epoch(state.epoch)
    if state.stream.get("epoch") == state.epoch and state.stream.get("position"):
        loader.load_state_dict(state.stream)
    else:
        state.epoch_samples = 0
    batches = iter(loader)
    while True:
        batch = next(batches, None)
        if _all_reduce(np.array([batch is not None], dtype=np.float64), run, dist.ReduceOp.MIN)[0] < 1:
            return
        assert batch is not None
        yield batch


def _run_epoch(state: _State, cfg: ClassifyConfig, loader: Any, run: _Run, bar: tqdm) -> None:
    """Train until the epoch (or the planned steps) ends, logging and checkpointing every N steps."""
    state.net.train()
    window, last = np.zeros(_WINDOW), time.perf_counter()
    for batch in _batches(loader, state, run):
        window += _train_step(state, cfg, batch, run)
        bar.update(1)
        # `total` is an upper bound of the epochs' steps: only `max_steps` stops a run inside an epoch
        stop = cfg.max_steps is not None and state.step >= run.total
        checkpoint = stop or state.step % cfg.checkpoint_every == 0
        if checkpoint or state.step % cfg.log_every == 0:  # a checkpoint's epoch_samples includes every batch
            window, last = _log(window, state, run, time.perf_counter() - last, bar), time.perf_counter()
        if checkpoint:
            state.stream = _stream_state(loader, run)
            if run.rank == 0:
                _save_checkpoint(state, cfg, run)
        if stop:
            return
    if window[3]:
        _log(window, state, run, time.perf_counter() - last, bar)
    state.epoch += 1
    state.stream = {"epoch": state.epoch, "streams": None, "position": {}}
    if run.rank == 0:
        _save_checkpoint(state, cfg, run)
        tqdm.write(f"epoch {state.epoch}/{cfg.epochs} done at step {state.step}: {state.epoch_samples} records")


def _excluded(classes: ClassList, batch: dict[str, Any], index: torch.Tensor) -> dict[str, int]:
    """Why records of a batch are outside the class list: missing label, other order, or not in the top N."""
    out = ~(index >= 0)
    codes = batch[classes.rank]
    parent = batch["order"] == classes.parent_code if classes.parent_code is not None else torch.ones_like(out)
    missing = int((out & parent & (codes < 0)).sum())
    outside_parent = int((out & ~parent).sum())
    return {
        "missing": missing,
        "outside_parent": outside_parent,
        "outside_top_n": int(out.sum()) - missing - outside_parent,
    }


@torch.no_grad()
def predict(model: nn.Module, cfg: ClassifyConfig, run: _Run) -> tuple[np.ndarray, np.ndarray, dict[str, int]]:
    """Top-k class indices and true class of this rank's test records, plus exclusion counts; gathered over ranks."""
    model.eval()
    loader = _loader(cfg, cfg.test_split, train=False)
    k = min(5, cfg.classes.num_classes)
    topk, labels, excluded = [], [], dict.fromkeys(("missing", "outside_parent", "outside_top_n"), 0)
    for batch in loader:
        index = cfg.classes.encode(batch)
        for key, n in _excluded(cfg.classes, batch, index).items():
            excluded[key] += n
        keep = index >= 0
        if keep.any():
            images = normalize_batch(batch["image"][keep].to(run.device, non_blocking=True))
            autocast = torch.autocast("cuda", torch.bfloat16) if run.device.type == "cuda" else contextlib.nullcontext()
            with autocast:
                topk.append(model(images).float().topk(k, dim=1).indices.cpu().numpy())
            labels.append(index[keep].numpy())
    _close(loader)
    parts = [(topk, labels, excluded)]
    if run.world > 1:
        gathered: list[Any] = [None] * run.world
        dist.all_gather_object(gathered, parts[0])
        parts = gathered
    all_topk = [a for p in parts for a in p[0]] or [np.zeros((0, k), np.int64)]
    all_labels = [a for p in parts for a in p[1]] or [np.zeros(0, np.int64)]
    totals = {key: sum(p[2][key] for p in parts) for key in excluded}
    return np.concatenate(all_topk), np.concatenate(all_labels), totals


def _finish(state: _State, cfg: ClassifyConfig, run: _Run) -> dict[str, Any]:
    """Test-split evaluation (all ranks), then rank 0 writes the weights, report and plots."""
    topk, labels, excluded = predict(state.model, cfg, run)
    report = evaluate(topk, labels, cfg.classes, excluded=excluded, experiment=cfg.partitioning)
    if run.rank == 0:
        from safetensors.torch import save_file

        weights = {k: v.detach().cpu().contiguous() for k, v in state.model.state_dict().items()}
        save_file(weights, str(run.out / (FINAL_WEIGHTS + ".tmp")), metadata={"timm_model": cfg.model})
        os.replace(run.out / (FINAL_WEIGHTS + ".tmp"), run.out / FINAL_WEIGHTS)
        write_report(report, run.out)
        plot_loss_curve(run.out / METRICS, run.out / LOSS_PNG)
    return {key: report[key] for key in ("top1", "top5", "macro", "majority", "chance", "test_samples")}


def train_worker(cfg: ClassifyConfig, *, report: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Run (or resume) fine-tuning on this worker, then evaluate on the test split; rank 0 writes the outputs."""
    rank, world = _rank_world()
    device = torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")
    loader = _loader(cfg, cfg.train_split, train=True)
    total = cfg.total_steps(int(loader.dataset.num_samples or 0), world)
    if total == 0:
        raise ValueError(f"split {cfg.train_split!r} of {cfg.shards} gives no training step")
    run = _Run(rank=rank, world=world, device=device, total=total, out=Path(cfg.output_dir), report=report)
    run.out.mkdir(parents=True, exist_ok=True)
    state = _build(cfg, run)
    _maybe_resume(state, cfg, run)
    if rank == 0:
        cfg.classes.save(run.out / CLASSES)
        _truncate_metrics(run.out / METRICS, state.step)
    bar = tqdm(total=total, initial=min(state.step, total), desc=f"train {cfg.model}", disable=rank != 0)
    while state.step < total and state.epoch < cfg.epochs:
        _run_epoch(state, cfg, loader, run, bar)
    bar.close()
    _close(loader)
    summary = _finish(state, cfg, run)
    return {"step": state.step, "epoch": state.epoch, "output_dir": str(run.out), **summary}
