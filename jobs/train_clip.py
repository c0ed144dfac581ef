"""`bioscan-stream train-clip`: CLIP-style image-DNA-text contrastive training on Ray Train (BIOSCAN-5M §4.4).

    python -m jobs.train_clip OUT/cropped_256 --output runs/clip --model clip_vitb16_barcodebert_bertsmall --workers 2
    ray job submit --working-dir . -- python -m jobs.train_clip s3://bucket/cropped_256 --output /shared/clip --gpu
    python -m jobs.train_clip --synthetic --num-samples 20000 --output runs/smoke --model clip_tiny --workers 0

Rerunning with the same `--output` resumes from its last checkpoint. `--workers 0` runs in-process (no Ray).
Outputs: checkpoint.pt, metrics.jsonl, loss_curve.png and `model/`; each tower then embeds with
`bioscan-stream embed SHARDS --model clip:RUN/image` (`/dna`, `/text`) for `evaluate retrieval` (docs/clip.md).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from bioscan_stream.ray_runtime import ray_runtime
from bioscan_stream.stream.shardlists import resolve_shards
from zoo._factory import parse_overrides
from zoo.models.clip import RECIPES
from zoo.tasks.clip_loop import ClipTrainConfig, make_clip_shards, train_worker


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="bioscan-stream train-clip", description=__doc__.splitlines()[0])
    p.add_argument("shards", nargs="?", help="image shard set with dna.txt and metadata, e.g. OUT/cropped_256")
    p.add_argument("--output", required=True, help="run folder (resumed when it holds a checkpoint)")
    p.add_argument("--model", default="clip_vitb16_barcodebert_bertsmall", help="zoo CLIP model, e.g. clip_tiny")
    p.add_argument("--recipe", choices=sorted(RECIPES), default="bioscan5m-paper")
    p.add_argument("--modalities", nargs="+", choices=("image", "dna", "text"), help="two or three (default: all)")
    p.add_argument("--finetune", choices=("lora", "full"), help="default: the model config's (lora)")
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE", help="CLIP config override")
    p.add_argument("--split", default="train")
    p.add_argument("--batch-size", type=int, default=32, help="per worker and micro-batch")
    p.add_argument("--grad-accum", type=int, default=1)
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--max-steps", type=int, help="stop after this many optimizer steps (schedule spans them)")
    p.add_argument("--lr", type=float, help="default: the recipe's (1e-3)")
    p.add_argument("--loader-workers", type=int, default=1, help="DataLoader processes per training worker")
    p.add_argument("--checkpoint-every", type=int, default=50, help="optimizer steps (and each epoch's end)")
    p.add_argument("--log-every", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=1, help="Ray Train workers (0: in-process, no Ray)")
    p.add_argument("--cpus-per-worker", type=int, default=1)
    p.add_argument("--gpu", action="store_true", help="one GPU per worker (NCCL)")
    p.add_argument("--synthetic", action="store_true", help="train on a synthetic release made in OUTPUT/synthetic")
    p.add_argument("--num-samples", type=int, default=20_000, help="records of the --synthetic release")
    args = p.parse_args(argv)
    if (args.shards is None) == (not args.synthetic):
        p.error("give either a shard set or --synthetic")
    return args


def _shards(args: argparse.Namespace) -> str:
    """The shard set: as given, or a synthetic release's photos converted once into OUTPUT/synthetic."""
    if not args.synthetic:
        resolve_shards(str(args.shards), args.split)  # a wrong folder fails here, not in a Ray Train worker
        return str(args.shards)
    folder = Path(args.output).resolve() / "synthetic"
    ready = folder / "shards" / "cropped_256" / "index.json"
    return str(ready.parent) if ready.exists() else make_clip_shards(folder, samples=args.num_samples)


def _config(args: argparse.Namespace, shards: str) -> ClipTrainConfig:
    overrides: dict[str, Any] = parse_overrides(args.set)
    if args.modalities:
        overrides["modalities"] = tuple(args.modalities)
    if args.finetune:
        overrides["finetune"] = args.finetune
    return ClipTrainConfig(
        shards=shards, output_dir=str(Path(args.output).resolve()), model=args.model,
        model_overrides=tuple(overrides.items()), recipe=args.recipe, split=args.split, batch_size=args.batch_size,
        grad_accum=args.grad_accum, epochs=args.epochs, max_steps=args.max_steps, lr=args.lr,
        loader_workers=args.loader_workers, checkpoint_every=args.checkpoint_every, log_every=args.log_every,
        seed=args.seed,
    )  # fmt: skip


def _ray_worker(loop_config: dict[str, Any]) -> None:
    """Ray Train's per-worker function: the process group exists already; metrics go to `ray.train.report`."""
    import ray.train

    train_worker(loop_config["cfg"], report=ray.train.report)


def _fit_with_ray(cfg: ClipTrainConfig, args: argparse.Namespace) -> None:
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
        run_config=RunConfig(name="train_clip", storage_path=str(Path(cfg.output_dir) / "ray")),
    )
    with ray_runtime():  # RAY_ADDRESS (set under `ray job submit`) is honoured by ray.init itself
        trainer.fit()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cfg = _config(args, _shards(args))
    if args.workers == 0:
        train_worker(cfg)
    else:
        _fit_with_ray(cfg, args)
    last = (Path(cfg.output_dir) / "metrics.jsonl").read_text().splitlines()[-1]
    print(json.dumps({"output_dir": cfg.output_dir, "model": str(Path(cfg.output_dir) / "model"), **json.loads(last)}))
    return 0


if __name__ == "__main__":
    from jobs.cli import run_module

    sys.exit(run_module(main))
