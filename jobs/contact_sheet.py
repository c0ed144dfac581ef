"""`bioscan-stream contact-sheet OUT.png`: synthetic specimen photos beside the real fixture photos.

Renders `--samples` synthetic originals (the orders of the real fixtures, boxes from tiny to
frame-filling) and, when ../shared/fixtures/real_images exists (or `--real DIR`), the real photos
downscaled into the same grid, each labelled. Without real photos the sheet is synthetic only.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from bioscan_stream.synth.contact_sheet import SheetConfig, write_contact_sheet

#: The real fixture photos beside a checkout of the project (absent in a user's checkout).
DEFAULT_REAL = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures" / "real_images"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bioscan-stream contact-sheet", description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="PNG to write")
    parser.add_argument("--samples", type=int, default=18, help="synthetic photos (%(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic photos (%(default)s)")
    parser.add_argument("--real", type=Path, default=DEFAULT_REAL, help="folder of real photos (%(default)s)")
    parser.add_argument("--columns", type=int, default=6, help="tiles per row (%(default)s)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.samples < 1:
        print("bioscan-stream contact-sheet: --samples must be at least 1", file=sys.stderr)
        return 2
    start = time.perf_counter()
    real = args.real if args.real.is_dir() else None
    config = SheetConfig(samples=args.samples, seed=args.seed, real_dir=real, columns=args.columns)
    path = write_contact_sheet(args.out, config)
    # said after the work, so that an error stays the only line on stderr (tests/jobs/test_cli_errors.py)
    note = "" if real else f", synthetic only: no real photos at {args.real}"
    print(f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB) in {time.perf_counter() - start:.1f} s{note}")
    return 0


if __name__ == "__main__":
    from jobs.cli import run_module

    sys.exit(run_module(main))
