"""How fast, and in how much memory, does `read_metadata` load the release CSV, beside pandas?

Writes a synthetic CSV with the 23 real columns and realistic row sizes (658-nt barcodes, ~780 bytes
a row; built with pyarrow from pools of random values), then times in separate processes (so each peak
RSS is its own): `read_metadata` full / projected (4 columns) / split-filtered (train), and the baseline
`pandas.read_csv` with the official loader's dtypes (full and projected). `--repeats` rounds run every
variant once each, in turns; the ratios are computed per round and reported as median and spread, and the
per-variant figures are those of its median-time run. Prints rows/s, peak RSS and the ratios, extrapolates
to the real 5,150,850 rows, appends a JSON line to benchmarks/results/metadata_read.jsonl and draws
benchmarks/figures/metadata_read_<rows>.png.

    python benchmarks/bench_metadata_read.py                 # 1M rows (~0.8 GB CSV)
    python benchmarks/bench_metadata_read.py --rows 5150850  # the full release size (~4 GB CSV)
    python benchmarks/bench_metadata_read.py --quick         # 200k rows: a smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
from _results import append_result, spread

from bioscan_stream.constants import COLUMNS, SPLITS
from bioscan_stream.metadata import read_metadata

FIGURES = Path(__file__).parent / "figures"
FULL_ROWS = 5_150_850
PROJECTED = ["processid", "split", "chunk", "species"]
SPLIT_SIZES = np.array([4_677_756, 289_203, 14_757, 39_373, 36_465, 8_819, 7_887, 76_590])  # the real release
# The official loader's pandas dtypes (bioscan-dataset 1.3.0 COLUMN_DTYPES), written out because importing the
# loader imports torchvision/torch (+0.9 GB baseline RSS, tens of seconds).
_CATEGORY = ("taxon", "phylum", "class", "order", "family", "subfamily", "genus", "species", "dna_bin", "country")
OFFICIAL_DTYPES: dict[str, object] = {
    **dict.fromkeys(("processid", "sampleid", "dna_barcode", "split", "chunk"), str),
    **dict.fromkeys((*_CATEGORY, "province_state"), "category"),
    **dict.fromkeys(("coord-lat", "coord-lon", "image_measurement_value", "area_fraction", "scale_factor"), float),
    "inferred_ranks": "uint8",
    "index_bioscan_1M_insect": "Int64",
}
VARIANTS = ("arrow_full", "arrow_projected", "arrow_split", "pandas_full", "pandas_projected")


def _pool(rng: np.random.Generator, n: int, make: callable, missing: float, rows: int) -> pa.Array:
    """`rows` values drawn from a pool of `n` distinct values, a `missing` share of them null."""
    pool = pa.array([make(i) for i in range(n)] + [None], pa.large_string())  # 5M barcodes exceed 2 GiB
    idx = rng.integers(0, n, rows)
    idx[rng.random(rows) < missing] = n
    return pool.take(pa.array(idx))


def write_csv(path: Path, rows: int, seed: int = 0) -> None:
    """A CSV shaped like the release (column order, types, missing shares, row size)."""
    rng = np.random.default_rng(seed)
    nt = np.array(list("ACGT"))
    cols: dict[str, pa.Array] = {
        "processid": pa.array([f"SYN{i:08d}-24" for i in range(rows)]),
        "sampleid": _pool(rng, 100_000, lambda i: f"BIOUG{i:06d}-B{i % 12:02d}", 0.0, rows),
        "dna_barcode": _pool(rng, 4_000, lambda i: "".join(rng.choice(nt, 658)), 0.0, rows),
        "split": pa.array(np.array(SPLITS)[rng.choice(len(SPLITS), rows, p=SPLIT_SIZES / SPLIT_SIZES.sum())]),
        "chunk": _pool(rng, 256, lambda i: f"{i:02x}", 0.05, rows),
    }
    for name, n, missing in [
        ("taxon", 5000, 0),
        ("phylum", 1, 0),
        ("class", 10, 0.001),
        ("order", 55, 0.003),
        ("family", 934, 0.04),
        ("subfamily", 1542, 0.71),
        ("genus", 7605, 0.76),
        ("species", 22622, 0.91),
        ("dna_bin", 50_000, 0.003),
        ("country", 47, 0.01),
        ("province_state", 300, 0.05),
    ]:
        cols[name] = _pool(rng, n, lambda i, name=name: f"{name.title()} value{i}", missing, rows)
    for name in ("coord-lat", "coord-lon", "area_fraction", "scale_factor"):
        cols[name] = pa.array(np.round(rng.uniform(-80, 80, rows), 4))
    cols["image_measurement_value"] = pa.array(rng.integers(100, 786_432, rows).astype(np.float64))
    cols["inferred_ranks"] = pa.array(rng.integers(0, 7, rows))
    in_1m = rng.random(rows) < 0.2
    cols["index_bioscan_1M_insect"] = pa.array(rng.integers(0, 1_128_313, rows).astype(np.float64), mask=~in_1m)
    table = pa.table({c: cols[c] for c in COLUMNS})
    pacsv.write_csv(table, path, write_options=pacsv.WriteOptions(quoting_style="none", batch_size=65_536))


def _peak_rss() -> int:
    """This process's RSS high-water mark (VmHWM; unlike ru_maxrss it does not inherit the parent's peak)."""
    with open("/proc/self/status") as status:
        line = next(x for x in status if x.startswith("VmHWM:"))
    return int(line.split()[1]) * 1024


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _worker(variant: str, path: str) -> dict:
    """Run one read in this (fresh) process; report seconds, CPU seconds, rows and peak RSS above imports."""
    import pandas as pd  # imported before the baseline RSS so every variant pays the same imports

    base, start, cpu = _peak_rss(), time.perf_counter(), _cpu_seconds()
    if variant == "arrow_full":
        rows = read_metadata(path).num_rows
    elif variant == "arrow_projected":
        rows = read_metadata(path, columns=PROJECTED).num_rows
    elif variant == "arrow_split":
        rows = read_metadata(path, splits=["train"]).num_rows
    elif variant == "pandas_full":
        rows = len(pd.read_csv(path, dtype=OFFICIAL_DTYPES))
    else:
        rows = len(pd.read_csv(path, dtype={c: OFFICIAL_DTYPES[c] for c in PROJECTED}, usecols=PROJECTED))
    seconds, cpu = time.perf_counter() - start, _cpu_seconds() - cpu
    peak = _peak_rss()
    return {"seconds": seconds, "cpu_seconds": cpu, "rows": rows, "peak_rss": peak, "extra_rss": peak - base}


def measure(variant: str, path: Path) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--worker", variant, "--csv", str(path)], check=True, capture_output=True, text=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def report(results: dict[str, dict], rows: int) -> None:
    """Print each variant and add rows/s and the linear extrapolation to the real 5,150,850 rows."""
    scale = FULL_ROWS / rows
    for name, r in results.items():
        r["rows_per_s"] = rows / r["seconds"]  # rows scanned (the split filter returns fewer)
        r["seconds_at_5m"], r["extra_rss_at_5m"] = r["seconds"] * scale, r["extra_rss"] * scale
        print(
            f"{name:17s} {r['seconds']:7.2f} s (CPU {r['cpu_seconds']:6.2f} s) {r['rows_per_s']:>10,.0f} rows/s"
            f"  peak RSS {r['peak_rss'] / 2**30:5.2f} GiB (+{r['extra_rss'] / 2**30:.2f})"
            f"  at 5.15M rows: ~{r['seconds_at_5m']:.0f} s, +{r['extra_rss_at_5m'] / 2**30:.1f} GiB"
        )


def plot(results: dict[str, dict], rows: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.8))
    names = list(results)
    colors = ["tab:blue" if n.startswith("arrow") else "tab:gray" for n in names]
    ax1.barh(names, [results[n]["seconds"] for n in names], color=colors)
    ax1.set_xlabel("seconds")
    ax2.barh(names, [results[n]["peak_rss"] / 2**30 for n in names], color=colors)
    ax2.set_xlabel("peak RSS (GiB)")
    fig.suptitle(f"Reading a {rows:,}-row BIOSCAN-5M-shaped CSV ({os.cpu_count()} cores)")
    fig.tight_layout()
    FIGURES.mkdir(parents=True, exist_ok=True)
    fig.savefig(FIGURES / f"metadata_read_{rows}.png", dpi=120)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help=f"rows to generate ({FULL_ROWS:,} = real)")
    parser.add_argument("--csv", type=Path, help="use (or keep) this CSV instead of a temporary one")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument("--repeats", type=int, default=3, help="rounds of every variant (>= 3: median and spread)")
    parser.add_argument("--quick", action="store_true", help="200,000 rows: a smoke run, not the headline")
    parser.add_argument("--worker", choices=VARIANTS, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker:
        print(json.dumps(_worker(args.worker, str(args.csv))))
        return 0
    with tempfile.TemporaryDirectory(prefix="bench_metadata_") as tmp:
        path = args.csv or Path(tmp) / "metadata.csv"
        if not path.exists():
            start = time.perf_counter()
            generated = 200_000 if args.quick else args.rows
            write_csv(path, generated)
            gib = path.stat().st_size / 2**30
            print(f"wrote {generated:,} rows, {gib:.2f} GiB in {time.perf_counter() - start:.0f} s")
        rows = int(read_metadata(path, columns=["split"]).num_rows)
        rounds = [{v: measure(v, path) for v in args.variants} for _ in range(args.repeats)]
        size = path.stat().st_size
    results = {
        v: sorted((r[v] for r in rounds), key=lambda run: run["seconds"])[len(rounds) // 2] for v in args.variants
    }
    report(results, rows)
    ratios = {
        arrow: {
            "speedup_wall": spread([r[pandas]["seconds"] / r[arrow]["seconds"] for r in rounds]),
            "speedup_cpu": spread([r[pandas]["cpu_seconds"] / r[arrow]["cpu_seconds"] for r in rounds]),
            "memory_fraction": spread([r[arrow]["extra_rss"] / max(r[pandas]["extra_rss"], 1) for r in rounds]),
        }
        for arrow, pandas in (("arrow_full", "pandas_full"), ("arrow_projected", "pandas_projected"))
        if arrow in results and pandas in results
    }
    for name, r in ratios.items():
        print(
            f"{name}: {r['speedup_wall']['median']:.1f}x faster than pandas (wall), {r['speedup_cpu']['median']:.1f}x"
            f" (CPU), {r['memory_fraction']['median']:.2f}x its memory above imports (medians of {args.repeats} rounds)"
        )
    record = {
        "quick": args.quick,
        "rows": rows,
        "csv_bytes": size,
        "results": results,
        "ratios": ratios,
    }
    append_result("metadata_read", record)
    if not args.quick:  # figures show full runs
        plot(results, rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
