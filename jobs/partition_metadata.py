"""`bioscan-stream partition IN OUT.csv`: assign the 8 published partitions to a metadata table.

Reads IN (CSV, JSON-LD, metadata zip or release root) with `read_metadata`, recomputes the `split` column
with `bioscan_stream.partition.assign_partitions` (species sets, barcode-grouped moves, flattened test,
val 5%, val_unseen 20%, fixed seeds) and writes OUT.csv with the same 23 columns. Rows the reader cannot
parse are listed in `OUT.csv.rejects.jsonl`, empty when there are none (with `--strict` they stop the job).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from bioscan_stream.constants import SPLITS
from bioscan_stream.metadata import read_metadata, write_metadata_csv
from bioscan_stream.partition import assign_partitions
from bioscan_stream.validate import InvalidRecordError, Reject, RejectsReport

DEFAULT_SEED = 0
REJECTS_SUFFIX = ".rejects.jsonl"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bioscan-stream partition", description=__doc__.splitlines()[0])
    parser.add_argument("input", type=Path, help="metadata CSV / JSON-LD / zip, or a release root")
    parser.add_argument("output", type=Path, help="CSV to write (same 23 columns, split recomputed)")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="base seed of the random draws (%(default)s)")
    parser.add_argument("--strict", action="store_true", help="fail on the first malformed row")
    return parser.parse_args(argv)


def _summary(splits: pa.ChunkedArray) -> str:
    counts = {row["values"]: row["counts"] for row in pc.value_counts(splits).to_pylist()}
    total = len(splits)
    lines = [
        f"{name:<14}{counts.get(name, 0):>10,d}  {100 * counts.get(name, 0) / max(total, 1):5.1f}%" for name in SPLITS
    ]
    return "\n".join([*lines, f"{'total':<14}{total:>10,d}"])


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    rejects: list[Reject] = []
    start = time.perf_counter()
    try:
        table = read_metadata(args.input, strict=args.strict, rejects=rejects)
    except (InvalidRecordError, FileNotFoundError, ValueError) as err:
        print(f"bioscan-stream partition: {err}", file=sys.stderr)
        return 1
    partitioned = assign_partitions(table, seed=args.seed)
    write_metadata_csv(partitioned, args.output)
    print(_summary(partitioned.column("split")))
    print(
        f"wrote {args.output} ({partitioned.num_rows:,d} rows, seed {args.seed}) in {time.perf_counter() - start:.1f} s"
    )
    path = RejectsReport(rejects).write(f"{args.output}{REJECTS_SUFFIX}")  # always written: reruns stay in sync
    print(f"{len(rejects):,d} malformed row(s) not written, listed in {path}")
    return 0


if __name__ == "__main__":
    from jobs.cli import run_module

    sys.exit(run_module(main))
