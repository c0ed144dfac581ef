"""`bioscan-stream stats ROOT`: Table 2 / Table 3 statistics of a release, in the terminal, as JSON and as a PNG.

Reads only the columns the statistics need (`STATS_COLUMNS`) from ROOT (a release root, or a metadata
CSV / JSON-LD / zip), prints the tables (or the JSON with `--json`) and writes OUT/stats.json and
OUT/stats.png (split sizes and the species long tail). A BIOSCAN-1M release (or its TSV / JSON-LD) is detected
and gets the 1M statistics instead: ranks, orders and Diptera families with counts, partition sizes, and a PNG of
the two class distributions (`bioscan_stream.stats1m`).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from bioscan_stream._atomic import atomic_path
from bioscan_stream.metadata import read_metadata
from bioscan_stream.release1m import is_release_1m, read_metadata_1m
from bioscan_stream.stats import STATS_COLUMNS, compute_stats, format_stats, plot_stats
from bioscan_stream.stats1m import STATS_1M_COLUMNS, compute_stats_1m, format_stats_1m, plot_stats_1m
from bioscan_stream.validate import Reject

DEFAULT_OUT = Path("stats")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bioscan-stream stats", description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path, help="release root, or a metadata CSV / JSON-LD / zip")
    parser.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help="folder for stats.json and stats.png (%(default)s)"
    )
    parser.add_argument("--json", action="store_true", help="print the JSON instead of the tables")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    start = time.perf_counter()
    rejects: list[Reject] = []
    release_1m = is_release_1m(args.root)
    try:
        if release_1m:
            table = read_metadata_1m(args.root, STATS_1M_COLUMNS, rejects=rejects)
        else:
            table = read_metadata(args.root, columns=STATS_COLUMNS, rejects=rejects)
    except (FileNotFoundError, ValueError) as err:
        print(f"bioscan-stream stats: {err}", file=sys.stderr)
        return 1
    stats = compute_stats_1m(table) if release_1m else compute_stats(table)
    stats["source"] = str(args.root)
    stats["malformed_rows_skipped"] = len(rejects)
    with atomic_path(args.out / "stats.json") as tmp:
        tmp.write_text(json.dumps(stats, indent=1) + "\n", encoding="utf-8")
    (plot_stats_1m if release_1m else plot_stats)(stats, args.out / "stats.png")
    print(json.dumps(stats, indent=1) if args.json else (format_stats_1m if release_1m else format_stats)(stats))
    if rejects:
        print(f"{len(rejects):,d} malformed row(s) skipped; first: {rejects[0].detail}", file=sys.stderr)
    seconds = time.perf_counter() - start
    print(f"wrote {args.out / 'stats.json'} and {args.out / 'stats.png'} in {seconds:.1f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    from jobs.cli import run_module

    sys.exit(run_module(main))
