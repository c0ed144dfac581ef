"""`bioscan-stream shards ROOT OUT`: convert a BIOSCAN-5M release into WebDataset shards grouped by split (Ray).

Runs on an embedded local Ray by default, on the cluster named by `RAY_ADDRESS` when set (also the case
under `ray job submit --working-dir . -- python -m jobs.convert ...`). ROOT is an extracted release or a
folder of the official zips; OUT is a folder or `s3://bucket/prefix` (endpoint from the AWS variables).
A BIOSCAN-1M release (its `bioscan1m/BIOSCAN_Insect_Dataset_metadata.tsv`) is detected and converted by partition
group, images from its tree, zips or HDF5 file (docs/bioscan-1m.md); `--splits` and the DNA set are 5M only.
"""

from __future__ import annotations

import argparse
import os
import re
import sys

from bioscan_stream.constants import PACKAGES, SPLITS
from bioscan_stream.shards.convert import ConvertConfig, convert_release, report_summary
from bioscan_stream.shards.plan import DEFAULT_MIN_SHARDS
from bioscan_stream.validate import InvalidRecordError

_UNITS = {"": 1, "B": 1, "KB": 1 << 10, "MB": 1 << 20, "GB": 1 << 30}


def parse_size(text: str) -> int:
    """`128MB` -> 134217728 (binary multiples: KB, MB, GB); plain numbers are bytes."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMG]?B?)\s*", text.upper())
    if match is None:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (examples: 128MB, 2GB, 500000)")
    return int(float(match.group(1)) * _UNITS[match.group(2)])


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bioscan-stream shards", description=__doc__.splitlines()[0])
    parser.add_argument("root", help="extracted release root, or a folder of the official zip packages")
    parser.add_argument("out", help="output folder or s3://bucket/prefix")
    parser.add_argument("--package", default="cropped_256", choices=PACKAGES)
    parser.add_argument("--splits", nargs="+", default=list(SPLITS), choices=SPLITS, metavar="SPLIT")
    parser.add_argument("--shard-size", type=parse_size, default="128MB", help="target bytes per shard (128MB)")
    parser.add_argument("--min-shards", type=int, default=DEFAULT_MIN_SHARDS, help="least shards per split")
    parser.add_argument("--seed", type=int, default=0, help="shuffle seed (same seed -> byte-identical shards)")
    parser.add_argument("--workers", type=int, default=None, help="concurrent shard tasks (default: all CPUs)")
    parser.add_argument("--strict", action="store_true", help="stop at the first invalid record")
    dna = parser.add_mutually_exclusive_group()
    dna.add_argument("--no-dna", action="store_true", help="skip the DNA-only pretraining shard set")
    dna.add_argument("--dna-only", action="store_true", help="only the DNA set; reads no image (metadata suffices)")
    parser.add_argument("--no-progress", action="store_true")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    config = ConvertConfig(
        root=args.root,
        out=args.out,
        package=args.package,
        splits=tuple(args.splits),
        shard_bytes=args.shard_size,
        min_shards=args.min_shards,
        seed=args.seed,
        workers=args.workers,
        strict=args.strict,
        dna=not args.no_dna,
        images=not args.dna_only,
        ray_address=os.environ.get("RAY_ADDRESS") or None,
        progress=not args.no_progress,
    )
    try:
        report = convert_release(config)
    except (InvalidRecordError, FileNotFoundError, ValueError) as error:
        print(f"bioscan-stream shards: {error}", file=sys.stderr)
        return 1
    print(report_summary(report))
    return 0


if __name__ == "__main__":
    from jobs.cli import run_module

    sys.exit(run_module(main))
