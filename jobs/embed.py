"""`bioscan-stream embed SHARDS --model NAME --out STORE`: embeddings of a shard set into an embedding store (Ray Data).

    python -m jobs.embed OUT/cropped_256 --model kmer_freq_k5 --splits train test --out stores/kmer5
    ray job submit --working-dir . -- python -m jobs.embed s3://bucket/shards/cropped_256 \\
        --model vit_base_patch16_224.augreg_in21k_ft_in1k --pretrained /models/vit.safetensors --out s3://bucket/emb/vit

Runs on an embedded local Ray by default, on the cluster named by `RAY_ADDRESS` when set. A rerun skips the
store files that are already complete; `--overwrite` replaces a store made by another encoder.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from bioscan_stream.constants import SPLITS
from zoo._factory import parse_overrides
from zoo.embedding import EmbedConfig, EncoderMismatchError, embed_shards


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="bioscan-stream embed", description=__doc__.splitlines()[0])
    p.add_argument("shards", help="input shard set folder (OUT/<package>), local or s3://")
    p.add_argument("--out", required=True, help="store folder, local or s3://")
    p.add_argument("--model", required=True, help="zoo model name (see `zoo.list_models()`)")
    p.add_argument("--pretrained", help="local weights file or folder (default: seeded random init)")
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE", help="architecture override")
    p.add_argument("--splits", nargs="+", default=["train"], choices=SPLITS, metavar="SPLIT")
    p.add_argument("--dtype", default="float16", choices=["float16", "float32"])
    p.add_argument("--layout", default="binary", choices=["binary", "list"], help="embedding column layout")
    p.add_argument("--batch-size", type=int, default=64, help="rows per forward pass")
    p.add_argument("--concurrency", type=int, default=1, help="model replicas (actors)")
    p.add_argument("--num-gpus", type=float, default=None, help="GPUs per replica (default: 1 if any)")
    p.add_argument("--cpus-per-actor", type=int, default=1)
    p.add_argument("--precision", default="bf16", choices=["bf16", "fp16", "fp32"], help="autocast on GPU")
    p.add_argument("--no-dedup", action="store_true", help="embed every barcode, also repeated ones")
    p.add_argument("--seed", type=int, default=0, help="seed of random-init weights")
    p.add_argument("--overwrite", action="store_true", help="replace a store made by another encoder")
    p.add_argument("--num-cpus", type=int, default=None, help="CPUs of the embedded Ray runtime")
    p.add_argument("--no-progress", action="store_true")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    config = EmbedConfig(
        shards=args.shards,
        out=args.out,
        model=args.model,
        splits=tuple(args.splits),
        pretrained=args.pretrained,
        overrides=tuple(parse_overrides(args.set).items()),
        dtype=args.dtype,
        layout=args.layout,
        batch_size=args.batch_size,
        concurrency=args.concurrency,
        num_gpus=args.num_gpus,
        cpus_per_actor=args.cpus_per_actor,
        precision=args.precision,
        dedup=not args.no_dedup,
        seed=args.seed,
        overwrite=args.overwrite,
        ray_address=os.environ.get("RAY_ADDRESS"),
        num_cpus=args.num_cpus,
        progress=not args.no_progress,
    )
    try:
        report = embed_shards(config)
    except (EncoderMismatchError, FileNotFoundError, KeyError) as error:
        print(f"bioscan-stream embed: {error}", file=sys.stderr)
        return 2
    print(json.dumps(vars(report), indent=1))
    return 0


if __name__ == "__main__":
    from jobs.cli import run_module

    sys.exit(run_module(main))
