"""`bioscan-stream pretrain-dna`: pretrain BarcodeBERT on the DNA-only shards with Ray Train (DDP).

    python -m jobs.pretrain_barcodebert OUT/dna --output runs/bb844 --model barcodebert_8_4_4 --workers 2
    ray job submit --working-dir . -- python -m jobs.pretrain_barcodebert s3://bucket/shards/dna --workers 4 --gpu

Rerunning with the same `--output` resumes from its last checkpoint. `--workers 0` runs in-process
(no Ray). Outputs: checkpoint.pt, metrics.jsonl, loss_curve.png and the Hugging Face folder `model/`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from zoo._factory import parse_overrides
from zoo.tasks.dna_sources import ListSource, SequenceSource, StreamSource
from zoo.tasks.pretrain_loop import PretrainConfig, fit_with_ray, train_worker

DEFAULT_MODEL = "barcodebert_8_4_4"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="bioscan-stream pretrain-dna", description=__doc__.splitlines()[0])
    p.add_argument("shards", nargs="?", help="DNA-only shard set (OUT/dna, local or s3://)")
    p.add_argument("--sequences", help="instead of shards: a text file with one barcode per line")
    p.add_argument("--output", required=True, help="run folder (resumed when it holds a checkpoint)")
    p.add_argument("--model", default=DEFAULT_MODEL, help="zoo model name, e.g. barcodebert_4_4_4 or 6-6-6")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="architecture override, e.g. --set hidden_size=64 (repeatable)",
    )
    p.add_argument("--batch-size", type=int, default=64, help="per worker and micro-step")
    p.add_argument("--grad-accum", type=int, default=1)
    p.add_argument("--epochs", type=int, default=35)
    p.add_argument("--max-steps", type=int, help="stop after this many optimizer steps (schedule spans them)")
    p.add_argument("--lr-per-64", type=float, default=1e-4, help="peak lr per 64 samples of total batch")
    p.add_argument("--checkpoint-every", type=int, default=500)
    p.add_argument("--log-every", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=1, help="Ray Train workers (0: in-process, no Ray)")
    p.add_argument("--cpus-per-worker", type=int, default=1)
    p.add_argument("--gpu", action="store_true", help="one GPU per worker (NCCL, bf16 autocast)")
    args = p.parse_args(argv)
    if (args.shards is None) == (args.sequences is None):
        p.error("give either a shard set or --sequences")
    return args


def _config(args: argparse.Namespace) -> PretrainConfig:
    return PretrainConfig(
        output_dir=str(Path(args.output).resolve()),
        model=args.model,
        model_overrides=tuple(parse_overrides(args.set).items()),
        batch_size=args.batch_size,
        grad_accum=args.grad_accum,
        epochs=args.epochs,
        max_steps=args.max_steps,
        lr_per_64=args.lr_per_64,
        checkpoint_every=args.checkpoint_every,
        log_every=args.log_every,
        seed=args.seed,
    )


def _source(args: argparse.Namespace) -> SequenceSource:
    """The data source: the stream over DNA shards, or a plain text file (tests, quick experiments)."""
    if args.sequences:
        with open(args.sequences) as f:
            return ListSource(tuple(line.strip() for line in f if line.strip()), seed=args.seed)
    return StreamSource(args.shards, seed=args.seed)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cfg = _config(args)
    source = _source(args)
    if args.workers == 0:
        summary = train_worker(cfg, source)
        print(json.dumps(summary))
    else:
        fit_with_ray(cfg, source, workers=args.workers, gpu=args.gpu, cpus_per_worker=args.cpus_per_worker)
        print(json.dumps({"output_dir": cfg.output_dir}))
    return 0


if __name__ == "__main__":
    from jobs.cli import run_module

    sys.exit(run_module(main))
