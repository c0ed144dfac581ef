"""`bioscan-stream crop SHARDS --out OUT`: detect the insect in original photos and write cropped shard sets (Ray).

    python -m jobs.crop OUT/original_full --out OUT --detector classical --preset bioscan5m
    python -m jobs.crop RELEASE_ROOT --package original_256 --out OUT    # a release tree or its zips, no shards
    python -m jobs.crop OUT/original_full --out OUT --detector detr --checkpoint crop_tool.ckpt --num-gpus 1
    ray job submit --working-dir . -- python -m jobs.crop s3://bucket/shards/original_full --out s3://bucket/shards

Writes OUT/cropped and/or OUT/cropped_256 (shard sets with their manifests), OUT/BIOSCAN_5M_Insect_bbox.tsv,
OUT/review.tsv (lowest-confidence images first) and OUT/contact_sheet.png. Runs on an embedded local Ray by
default, on the cluster named by `RAY_ADDRESS` when set; a rerun keeps the shards that are already complete.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from bioscan_stream.crop import CROP_PRESETS
from zoo.cropping import CropConfig, crop_shards
from zoo.cropping.inputs import INPUT_PACKAGES
from zoo.encoder import WeightsError

PACKAGES = ("cropped", "cropped_256")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="bioscan-stream crop", description=__doc__.splitlines()[0])
    p.add_argument(
        "shards", help="input shard set (OUT/original_full or OUT/original_256, local or s3://), or a release"
    )
    p.add_argument("--package", choices=INPUT_PACKAGES, help="the input is a release root: crop these images of it")
    p.add_argument("--out", required=True, help="output root for the cropped shard sets and tables, local or s3://")
    p.add_argument("--detector", default="classical", choices=["classical", "detr"])
    p.add_argument("--checkpoint", help="detr: the crop tool's .ckpt or an HF folder (default: random weights)")
    p.add_argument("--preset", default="bioscan5m", choices=sorted(CROP_PRESETS))
    p.add_argument("--packages", default=",".join(PACKAGES), help="comma-separated: cropped, cropped_256")
    p.add_argument("--splits", nargs="+", default=None, metavar="SPLIT", help="default: every split of the input")
    p.add_argument("--batch-size", type=int, default=8, help="images per detector call")
    p.add_argument("--concurrency", type=int, default=1, help="detector replicas (actors)")
    p.add_argument("--num-gpus", type=float, default=None, help="GPUs per replica (default: 1 if any)")
    p.add_argument("--cpus-per-actor", type=int, default=1)
    p.add_argument("--review", type=int, default=50, help="lowest-confidence images listed in review.tsv")
    p.add_argument("--num-cpus", type=int, default=None, help="CPUs of the embedded Ray runtime")
    p.add_argument("--no-progress", action="store_true")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    options = {"checkpoint": args.checkpoint} if args.checkpoint else {}
    if args.checkpoint and args.detector != "detr":
        print("bioscan-stream crop: --checkpoint is for --detector detr", file=sys.stderr)
        return 2
    config = CropConfig(
        shards=args.shards,
        out=args.out,
        package=args.package,
        detector=args.detector,
        detector_options=tuple(options.items()),
        preset=args.preset,
        packages=tuple(p.strip() for p in args.packages.split(",") if p.strip()),
        splits=tuple(args.splits) if args.splits else None,
        batch_size=args.batch_size,
        concurrency=args.concurrency,
        num_gpus=args.num_gpus,
        cpus_per_actor=args.cpus_per_actor,
        review=args.review,
        ray_address=os.environ.get("RAY_ADDRESS"),
        num_cpus=args.num_cpus,
        progress=not args.no_progress,
    )
    try:
        report = crop_shards(config)
    except (FileNotFoundError, KeyError, ValueError, WeightsError) as error:
        print(f"bioscan-stream crop: {error}", file=sys.stderr)
        return 2
    print(json.dumps(vars(report), indent=1))
    return 0


if __name__ == "__main__":
    from jobs.cli import run_module

    sys.exit(run_module(main))
