"""How fast is a metadata-only synthetic release, against the I/O limit of writing the same table?

Question: can `bioscan-stream synth --no-images` write the full 5,150,850-row release in a few minutes on
2 cores, and with bounded memory? Measures, in one run: generation (world, partition, rows into the
memory-mapped Arrow table), the project's writers (CSV + JSON-LD + bbox TSV via `bioscan_stream.metadata`)
and, as the baseline, `pyarrow.csv.write_csv` of the same 23-column table (what pure I/O costs). Prints
rows/s, ratios and the extrapolation to the full release; `--full` runs 5,150,850 rows for real.
Appends a JSON line to benchmarks/results/synth_metadata.jsonl.

    .venv/bin/python benchmarks/bench_synth_metadata.py [--rows 200000] [--full]
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.csv as pacsv
from _results import append_result

from bioscan_stream.constants import BBOX_COLUMNS, COLUMNS
from bioscan_stream.metadata import write_bbox, write_metadata
from bioscan_stream.synth.records import build_world
from bioscan_stream.synth.release import partition_world, spool_rows

FULL_ROWS = 5_150_850


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000, help="records to generate (%(default)s)")
    parser.add_argument("--full", action="store_true", help=f"generate the full {FULL_ROWS:,d} rows")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--generate-only",
        action="store_true",
        help="skip the project's CSV/JSON-LD/bbox writers (time generation and the pyarrow baseline only)",
    )
    return parser.parse_args(argv)


def _timed(fn, *args, **kwargs):  # type: ignore[no-untyped-def]
    """(result, wall seconds); CPU seconds accumulate in _CPU (robust on a shared, loaded machine)."""
    start, cpu = time.perf_counter(), time.process_time()
    result = fn(*args, **kwargs)
    _CPU[fn.__name__] = time.process_time() - cpu
    return result, time.perf_counter() - start


_CPU: dict[str, float] = {}


def _peak_rss_mib() -> int:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)


def run(rows: int, seed: int, out: Path, *, writers: bool = True) -> dict[str, float]:
    """Seconds per stage for one release of `rows` records written under `out` (writers: 0 s when skipped)."""
    world, t_world = _timed(build_world, rows, seed=seed)
    splits, t_partition = _timed(partition_world, world, seed=seed)
    table, t_rows = _timed(spool_rows, world, splits, out)
    # NOTE: measured before the spooled table is read: reading it maps file pages, which ru_maxrss also counts.
    rss_generate = _peak_rss_mib()
    t_csv_jsonld = t_bbox = 0.0
    if writers:
        _, t_csv_jsonld = _timed(write_metadata, table.select(list(COLUMNS)), out)
        _, t_bbox = _timed(write_bbox, table.select(list(BBOX_COLUMNS)), out)
    _, t_baseline = _timed(pacsv.write_csv, table.select(list(COLUMNS)), str(out / "baseline.csv"))
    return {
        "world_s": t_world,
        "partition_s": t_partition,
        "rows_s": t_rows,
        "generate_s": t_world + t_partition + t_rows,
        "write_csv_jsonld_s": t_csv_jsonld,
        "write_bbox_s": t_bbox,
        "generate_cpu_s": _CPU["build_world"] + _CPU["partition_world"] + _CPU["spool_rows"],
        "write_csv_jsonld_cpu_s": _CPU.get("write_metadata", 0.0),
        "write_bbox_cpu_s": _CPU.get("write_bbox", 0.0),
        "baseline_pyarrow_csv_cpu_s": _CPU["write_csv"],
        "peak_rss_generate_mib": rss_generate,
        "baseline_pyarrow_csv_s": t_baseline,
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    rows = FULL_ROWS if args.full else args.rows
    with tempfile.TemporaryDirectory(dir=os.environ.get("TMPDIR")) as tmp:
        times = run(rows, args.seed, Path(tmp), writers=not args.generate_only)
    total = times["generate_s"] + times["write_csv_jsonld_s"] + times["write_bbox_s"]
    scale = FULL_ROWS / rows
    result = {
        "benchmark": "synth_metadata",
        "rows": rows,
        "writers": not args.generate_only,
        **{k: round(v, 2) for k, v in times.items()},
        "total_s": round(total, 2),
        "generate_rows_per_s": round(rows / times["generate_s"]),
        "release_rows_per_s": round(rows / total),
        "baseline_rows_per_s": round(rows / times["baseline_pyarrow_csv_s"]),
        "generate_vs_baseline": round(times["generate_s"] / times["baseline_pyarrow_csv_s"], 2),
        "release_vs_baseline": round(total / times["baseline_pyarrow_csv_s"], 2),
        "extrapolated_full_generate_s": round(times["generate_s"] * scale, 1),
        "extrapolated_full_release_s": round(total * scale, 1),
        "peak_rss_incl_mapped_mib": _peak_rss_mib(),
        "load_average_1min": round(os.getloadavg()[0], 1),
    }
    for key, value in result.items():
        print(f"{key:>30}: {value}")
    append_result("synth_metadata", result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
