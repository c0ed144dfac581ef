"""`bioscan-stream train-classifier`: fine-tune a timm backbone on order or Diptera family (BIOSCAN-1M), Ray Train.

    python -m jobs.train_classifier OUT/cropped_256 --output runs/order --task order --model resnet50 --workers 2
    ray job submit --working-dir . -- python -m jobs.train_classifier s3://bucket/cropped_256 --output /shared/run --gpu
    python -m jobs.train_classifier --synthetic --num-samples 20000 --output runs/smoke --model resnet10t --workers 0
    python -m jobs.train_classifier OUT1M/cropped_256 --partitioning large_insect_order --output runs/1m-order

`--partitioning` reads a BIOSCAN-1M shard set's experiment splits (the task follows: *_insect_order -> order,
*_diptera_family -> diptera_family); with `--synthetic` it makes a synthetic 1M shard set.

Rerunning with the same `--output` resumes from its last checkpoint. `--workers 0` runs in-process (no Ray).
Outputs: classes.json, checkpoint.pt, model.safetensors, metrics.jsonl, loss_curve.png, report.json / .md,
confusion_matrix.png (docs/image-classification.md).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from bioscan_stream.ray_runtime import ray_runtime
from bioscan_stream.release1m import PARTITIONINGS
from zoo.tasks.classify_data import TASKS, ClassTask, build_class_list, make_synthetic_shards, make_synthetic_shards_1m
from zoo.tasks.classify_task import ClassifyConfig, train_worker


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="bioscan-stream train-classifier", description=__doc__.splitlines()[0])
    p.add_argument("shards", nargs="?", help="image shard set, e.g. OUT/cropped_256 (local or s3://)")
    p.add_argument("--output", required=True, help="run folder (resumed when it holds a checkpoint)")
    p.add_argument("--task", choices=sorted(TASKS), help="order: top 16; diptera_family: top 40 (default: order)")
    p.add_argument("--partitioning", choices=PARTITIONINGS, help="a BIOSCAN-1M shard set's experiment splits")
    p.add_argument("--top-n", type=int, help="classes kept (default: 16 orders / 40 Diptera families)")
    p.add_argument("--model", default="resnet50", help="timm model name, e.g. vit_base_patch16_224, resnet10t")
    p.add_argument("--pretrained", help="backbone weights: a local .safetensors or torch state-dict file")
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--batch-size", type=int, default=64, help="per worker")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--max-steps", type=int, help="stop after this many optimizer steps (schedule spans them)")
    p.add_argument("--lr", type=float, default=1e-3, help="peak learning rate (AdamW, warmup + cosine)")
    p.add_argument("--weight-decay", type=float, default=0.05)
    p.add_argument("--warmup-steps", type=int, help="default: 5%% of the steps")
    p.add_argument("--label-smoothing", type=float, default=0.0)
    p.add_argument("--crop-scale-min", type=float, default=0.08, help="smallest random-resized-crop area share")
    p.add_argument("--loader-workers", type=int, default=2, help="DataLoader processes per training worker")
    p.add_argument("--checkpoint-every", type=int, default=200, help="optimizer steps (and each epoch's end)")
    p.add_argument("--log-every", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--train-split", default="train")
    p.add_argument("--test-split", default="test")
    p.add_argument("--workers", type=int, default=1, help="Ray Train workers (0: in-process, no Ray)")
    p.add_argument("--cpus-per-worker", type=int, default=1)
    p.add_argument("--gpu", action="store_true", help="one GPU per worker (NCCL, bf16 autocast)")
    p.add_argument("--synthetic", action="store_true", help="train on a synthetic release made in OUTPUT/synthetic")
    p.add_argument("--num-samples", type=int, default=20_000, help="records of the --synthetic release")
    args = p.parse_args(argv)
    if (args.shards is None) == (not args.synthetic):
        p.error("give either a shard set or --synthetic")
    if args.task is None:
        args.task = "diptera_family" if (args.partitioning or "").endswith("diptera_family") else "order"
    return args


def _shards(args: argparse.Namespace) -> str:
    """The shard set: as given, or a synthetic release's train/test photos converted once into OUTPUT/synthetic."""
    if not args.synthetic:
        return str(args.shards)
    folder = Path(args.output).resolve() / ("synthetic1m" if args.partitioning else "synthetic")
    ready = folder / "shards" / "cropped_256" / "index.json"
    make = make_synthetic_shards_1m if args.partitioning else make_synthetic_shards
    return str(ready.parent) if ready.exists() else make(folder, samples=args.num_samples)


def _config(args: argparse.Namespace, shards: str) -> ClassifyConfig:
    task = TASKS[args.task]
    classes = build_class_list(
        shards,
        ClassTask(task.rank, args.top_n or task.top_n, task.within),
        split=args.train_split,
        partitioning=args.partitioning,
    )
    print(f"{classes.num_classes} classes of {classes.rank}; train records excluded: {classes.excluded}")
    return ClassifyConfig(
        shards=shards, output_dir=str(Path(args.output).resolve()), classes=classes, model=args.model,
        pretrained=args.pretrained, image_size=args.image_size, batch_size=args.batch_size, epochs=args.epochs,
        max_steps=args.max_steps, lr=args.lr, weight_decay=args.weight_decay, warmup_steps=args.warmup_steps,
        label_smoothing=args.label_smoothing, crop_scale=(args.crop_scale_min, 1.0),
        loader_workers=args.loader_workers, checkpoint_every=args.checkpoint_every, log_every=args.log_every,
        seed=args.seed, train_split=args.train_split, test_split=args.test_split, partitioning=args.partitioning,
    )  # fmt: skip


def _ray_worker(loop_config: dict[str, Any]) -> None:
    """Ray Train's per-worker function: the process group exists already; metrics go to `ray.train.report`."""
    import ray.train

    train_worker(loop_config["cfg"], report=ray.train.report)


def _fit_with_ray(cfg: ClassifyConfig, args: argparse.Namespace) -> None:
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    scaling = ScalingConfig(
        num_workers=args.workers, use_gpu=args.gpu, resources_per_worker={"CPU": args.cpus_per_worker}
    )
    trainer = TorchTrainer(
        _ray_worker,
        train_loop_config={"cfg": cfg},
        scaling_config=scaling,
        torch_config=TorchConfig(backend="nccl" if args.gpu else "gloo"),
        run_config=RunConfig(name="train_classifier", storage_path=str(Path(cfg.output_dir) / "ray")),
    )
    with ray_runtime():  # RAY_ADDRESS (set under `ray job submit`) is honoured by ray.init itself
        trainer.fit()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cfg = _config(args, _shards(args))
    if args.workers == 0:
        summary = train_worker(cfg)
    else:
        _fit_with_ray(cfg, args)
        summary = json.loads((Path(cfg.output_dir) / "report.json").read_text())
        summary = {key: summary[key] for key in ("top1", "top5", "macro", "majority", "chance", "test_samples")}
    print(json.dumps({"output_dir": cfg.output_dir, **summary}))
    return 0


if __name__ == "__main__":
    from jobs.cli import run_module

    sys.exit(run_module(main))
