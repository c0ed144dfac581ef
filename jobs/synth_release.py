"""`bioscan-stream synth ROOT --samples N`: write a synthetic BIOSCAN-5M release in the official layout.

Metadata CSV + JSON-LD, the bounding-box TSV and (unless `--no-images`) the image packages as a tree or, with
`--zip`, as the official zip files. Deterministic for `--seed`. See `bioscan_stream.synth.release`.
With `--bioscan1m`, writes instead the BIOSCAN-1M release of the same synthetic world (the records that carry
`index_bioscan_1M_insect`): TSV + JSON-LD and the images as tree, zips and HDF5 (`bioscan_stream.synth.release1m`).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import pyarrow.compute as pc

from bioscan_stream.constants import PACKAGES, SPLITS
from bioscan_stream.release1m import PART_SIZE, PARTITIONINGS
from bioscan_stream.synth.release import write_release
from bioscan_stream.synth.release1m import write_release_1m

DEFAULT_SAMPLES = 3000
DEFAULT_PACKAGES = "cropped_256"


def _packages(text: str) -> tuple[str, ...]:
    names = tuple(p.strip() for p in text.split(",") if p.strip())
    unknown = [p for p in names if p not in PACKAGES]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"unknown package(s) {unknown or text!r}; choose from {', '.join(PACKAGES)}")
    return names


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bioscan-stream synth", description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path, help="release root to write (created if absent)")
    parser.add_argument("--samples", type=int, default=DEFAULT_SAMPLES, help="number of records (%(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="release seed (%(default)s)")
    parser.add_argument(
        "--packages",
        type=_packages,
        default=_packages(DEFAULT_PACKAGES),
        help=f"comma-separated image packages among {','.join(PACKAGES)} (%(default)s)",
    )
    parser.add_argument("--no-images", dest="images", action="store_false", help="write the metadata only")
    parser.add_argument("--zip", action="store_true", help="write the official zip packages instead of a tree")
    parser.add_argument("--workers", type=int, default=None, help="image processes (default: all cores)")
    parser.add_argument("--bioscan1m", action="store_true", help="write the BIOSCAN-1M release of this world")
    parser.add_argument("--part-size", type=int, default=PART_SIZE, help="1M images per part folder (%(default)s)")
    args = parser.parse_args(argv)
    if args.samples < 1:
        parser.error(f"--samples must be >= 1, got {args.samples}")
    return args


def _main_1m(args: argparse.Namespace, start: float) -> int:
    table = write_release_1m(
        args.root, samples=args.samples, seed=args.seed, packages=args.packages, images=args.images,
        part_size=args.part_size, workers=args.workers,
    )  # fmt: skip
    for name in PARTITIONINGS:
        counts = {row["values"]: row["counts"] for row in pc.value_counts(table.column(name)).to_pylist()}
        print(f"{name:<22}" + "  ".join(f"{s} {counts.get(s, 0):,d}" for s in ("train", "validation", "test")))
    print(f"wrote {table.num_rows:,d} BIOSCAN-1M records to {args.root} in {time.perf_counter() - start:.1f} s")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    start = time.perf_counter()
    if args.bioscan1m:
        return _main_1m(args, start)
    table = write_release(
        args.root,
        samples=args.samples,
        seed=args.seed,
        packages=args.packages,
        images=args.images,
        zip=args.zip,
        workers=args.workers,
    )
    counts = {row["values"]: row["counts"] for row in pc.value_counts(table.column("split")).to_pylist()}
    print("  ".join(f"{name} {counts.get(name, 0):,d}" for name in SPLITS))
    what = f"images {','.join(args.packages)}{' (zip)' if args.zip else ''}" if args.images else "no images"
    print(
        f"wrote {table.num_rows:,d} records to {args.root} ({what}, seed {args.seed}) "
        f"in {time.perf_counter() - start:.1f} s"
    )
    return 0


if __name__ == "__main__":
    from jobs.cli import run_module

    sys.exit(run_module(main))
