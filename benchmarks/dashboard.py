"""The benchmark dashboard: runs the benchmarks and turns benchmarks/results/*.jsonl into benchmarks/README.md
and benchmarks/figures/history.png.

The headline ratios are defined once, in `HEADLINES`: which benchmark, where its figure sits in a result line,
the target the issues set and the baseline it is measured against in the same run. A headline's value is
either a `_results.spread` (median, min, max of >= 3 runs) or, in lines written before spreads were recorded,
a bare number, shown without a spread. `bioscan-stream bench` is the entry point (jobs/bench.py).
"""

from __future__ import annotations

import datetime
import json
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BENCHMARKS_DIR = Path(__file__).parent
RESULTS_DIR = BENCHMARKS_DIR / "results"
README = BENCHMARKS_DIR / "README.md"
HISTORY_FIGURE = BENCHMARKS_DIR / "figures" / "history.png"


@dataclass(frozen=True)
class Headline:
    """One tracked figure: `key` is a dotted path into a result line; a part `field=value` picks the item of a
    list whose `field` equals `value` (e.g. `results.k=4.ratio`)."""

    benchmark: str
    key: str
    label: str
    baseline: str
    target: float | None
    higher_is_better: bool = True


HEADLINES: tuple[Headline, ...] = (
    Headline(
        "convert", "ratio_per_worker_vs_raw.2", "shard conversion per worker, 2 workers", "raw tar copy, 1 process", 0.8
    ),
    Headline("convert", "speedup_1_to_2", "shard conversion 1 -> 2 workers", "same conversion, 1 worker", 1.7),
    Headline("tokenizer", "results.k=4.ratio", "k-mer tokenizer, k=4", "per-sequence pure Python", 50.0),
    Headline(
        "metadata_read", "ratios.arrow_full.speedup_wall", "metadata CSV read, all columns", "pandas.read_csv", 5.0
    ),
    Headline(
        "metadata_read",
        "ratios.arrow_full.memory_fraction",
        "metadata read peak memory",
        "pandas.read_csv",
        1 / 3,
        higher_is_better=False,
    ),
    Headline(
        "stream", "ratios.per_core_vs_limit local w1", "stream images per CPU-s, 1 worker", "decode+transform loop", 0.9
    ),
    Headline(
        "stream",
        "ratios.vs_bioscan_dataset w1 (images/s)",
        "stream vs official loader, 1 worker",
        "bioscan-dataset BIOSCAN5M",
        2.0,
    ),
    Headline(
        "stream", "ratios.vs_litdata w1 (images/s)", "stream vs LitData, 1 worker", "LitData StreamingDataset", 1.0
    ),
    Headline(
        "crop_classical",
        "results.input=original_256.detect_images_per_s_per_core_runs",
        "classical detector, 341x256 (img/s/core)",
        "absolute rate",
        50.0,
    ),
    Headline("crop", "detr_r50.speedup", "crop job, DETR-R50 (batched)", "crop tool's one-image loop", 1.5),
    Headline("crop", "scaling_classical.scaling", "crop job 1 -> 2 workers (classical)", "same job, 1 worker", None),
    Headline(
        "embed", "cases.model=kmer_freq_k5.ratio_vs_loop", "embed job, k-mer", "bioscan-dataset + DataLoader loop", 1.5
    ),
    Headline("embed", "cases.model=resnet18.ratio_vs_limit", "embed job, resnet18", "model forward alone", 0.9),
    Headline(
        "embed",
        "cases.model=barcodebert_4_4_4.ratio_vs_loop",
        "embed job, BarcodeBERT",
        "bioscan-dataset + DataLoader loop",
        1.5,
    ),
    Headline("embed", "store_read.ratio_vectors_only", "store full scan, vectors", "np.load of the same vectors", 0.7),
    Headline("index", "ivf.qps_ratio", "IVF index queries/s at recall@10 >= 0.95", "exact search", 10.0),
    Headline("index", "hnsw.qps_ratio", "HNSW index queries/s at recall@10 >= 0.95", "exact search", 10.0),
    Headline("index", "sharded_add.speedup", "sharded index add 1 -> 2 workers", "same add, 1 worker", 1.7),
    Headline("retrieval", "ratio_vs_sgemm_per_block", "exact retrieval FLOP/s", "bare sgemm, same blocks", 0.8),
    Headline(
        "clustering",
        "time_fraction_of_paper",
        "zero-shot clustering time",
        "the paper's 4.5 h",
        0.1,
        higher_is_better=False,
    ),
    Headline(
        "hdf5_1m",
        "ratio_project_vs_official",
        "BIOSCAN-1M HDF5 reads + transform",
        "1M loader's per-item open",
        None,
    ),
    Headline("image_zip", "ratios.reads", "image reads from the official zips", "zipfile.ZipFile", None),
    Headline(
        "synth_images", "ratios.cropped_256_w2_vs_w1", "synthetic images 1 -> 2 workers", "same writer, 1 worker", None
    ),
    Headline(
        "barcodebert_train",
        "results.model=barcodebert_4_4_4.ratio_ours_rounds",
        "BarcodeBERT pretraining step",
        "reference-style loop",
        2.0,
    ),
    Headline("clip", "ratio", "CLIP training step", "reference-style loop", None),
)

#: Every benchmark in run order: (script, arguments of the full run, arguments of the quick run or None:
#: left out of `--quick`). The quick subset finishes in a few minutes on 2 cores.
BENCHMARKS: tuple[tuple[str, tuple[str, ...], tuple[str, ...] | None], ...] = (
    ("bench_tokenizer.py", (), ("--quick",)),
    ("bench_metadata_read.py", (), ("--quick",)),
    ("bench_crop_classical.py", (), ("--quick",)),
    ("bench_convert.py", ("--profile",), ("--quick",)),
    ("bench_synth_metadata.py", (), None),
    ("bench_synth_images.py", (), ("--quick",)),
    ("bench_image_zip.py", (), ("--quick",)),
    ("bench_hdf5_1m.py", (), ("--quick",)),
    ("bench_stream.py", (), None),
    ("bench_crop.py", (), None),
    ("bench_embed.py", (), None),
    ("bench_index.py", (), ("--quick", "--parts", "ivf", "hnsw")),  # the sharded add: 6 Ray starts, ~1 min
    ("bench_retrieval.py", (), ("--quick",)),
    ("bench_clustering.py", (), ("--quick",)),
    ("bench_barcodebert_train.py", (), None),
    ("bench_clip.py", (), None),
)


@dataclass(frozen=True)
class Point:
    """A headline's value in one result line."""

    date: datetime.datetime | None  # None: a line written before results were dated
    median: float
    low: float | None
    high: float | None
    runs: int
    quick: bool
    machine: str
    load: str


def lookup(record: Any, key: str) -> Any:
    """The value at dotted `key` in `record`, or None where the path does not exist."""
    for part in key.split("."):
        if isinstance(record, list) and "=" in part:
            field, wanted = part.split("=", 1)
            record = next((item for item in record if str(item.get(field)) == wanted), None)
        elif isinstance(record, dict):
            record = record.get(part)
        else:
            return None
    return record


def _machine(record: dict[str, Any]) -> tuple[str, str]:
    """('2 CPUs, Linux-...', 'load 3.1 -> 4.2') from whichever fields a line of its era has."""
    machine: dict[str, Any] = record["machine"] if isinstance(record.get("machine"), dict) else {}
    cpus = machine.get("cpus") or machine.get("cpu_count") or record.get("cpu_count", "?")
    platform = machine.get("platform") or (record["machine"] if isinstance(record.get("machine"), str) else "?")
    start_end = record.get("load_1min_start_end") or [record.get("load_1min_at_start"), record.get("load_1min_at_end")]
    loads = [f"{value:.1f}" for value in start_end if isinstance(value, int | float)]
    if not loads and isinstance(machine.get("load_1min"), int | float):
        loads = [f"{machine['load_1min']:.1f}"]
    return f"{cpus} CPUs, {platform}", "load " + " -> ".join(loads) if loads else "load ?"


def point(record: dict[str, Any], headline: Headline) -> Point | None:
    """The headline's value in `record`, or None where the line does not hold it or records an experiment (a run
    with a changed setting, e.g. output on tmpfs: kept in the results, not tracked)."""
    if record.get("experiment"):
        return None
    value = lookup(record, headline.key)
    if isinstance(value, dict) and "median" in value:
        median, low, high, runs = value["median"], value["min"], value["max"], len(value.get("runs", []))
    elif isinstance(value, int | float) and not isinstance(value, bool):
        median, low, high, runs = value, None, None, 1
    else:
        return None
    machine, load = _machine(record)
    dated = record.get("date") or (record["machine"].get("date") if isinstance(record.get("machine"), dict) else None)
    date = datetime.datetime.fromisoformat(dated) if dated else None
    return Point(date, float(median), low, high, runs, bool(record.get("quick", False)), machine, load)


def history(results_dir: Path, headline: Headline) -> list[Point]:
    """Every value of `headline` in its results file, oldest first (the files are only appended to)."""
    path = results_dir / f"{headline.benchmark}.jsonl"
    if not path.exists():
        return []
    lines = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [p for p in (point(record, headline) for record in lines) if p is not None]


def _meets(headline: Headline, value: float) -> str:
    if headline.target is None:
        return "-"
    return "yes" if (value >= headline.target) == headline.higher_is_better or value == headline.target else "**no**"


def _value(p: Point) -> str:
    spread = f" [{p.low:.3g}-{p.high:.3g}], {p.runs} runs" if p.low is not None and p.high is not None else ", 1 value"
    return f"{p.median:.3g}{spread}"


def _day(p: Point) -> str:
    return p.date.date().isoformat() if p.date else "undated"


def _row(headline: Headline, points: list[Point]) -> str:
    full = [p for p in points if not p.quick]
    quick = [p for p in points if p.quick]
    target = (
        "-" if headline.target is None else ("≥ " if headline.higher_is_better else "≤ ") + f"{headline.target:.3g}"
    )
    cells = [headline.label, f"`{headline.benchmark}`", headline.baseline, target]
    if full:
        latest = full[-1]
        cells += [_value(latest), _meets(headline, latest.median), _day(latest), latest.machine,
                  latest.load]  # fmt: skip
    else:
        cells += ["no full run yet", "-", "-", "-", "-"]
    cells.append(f"{_value(quick[-1])} ({_day(quick[-1])})" if quick else "-")
    return "| " + " | ".join(cells) + " |"


def render_readme(results_dir: Path, readme: Path, figure: Path) -> str:
    """Write the dashboard page: the latest full run of every headline beside its target; returns the text."""
    now = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    lines = [
        "<!-- GENERATED by `bioscan-stream bench` (benchmarks/dashboard.py) from benchmarks/results/*.jsonl: do not",
        "     edit by hand; change HEADLINES in benchmarks/dashboard.py or rerun the benchmarks instead. -->",
        "# Benchmark dashboard",
        "",
        f"Rendered {now}. Each headline is a ratio (or rate) measured against its baseline in the same run. "
        'Value: median [min-max] over the runs of the latest full benchmark run; "1 value" marks lines written '
        "before medians and spreads were recorded. Load: the machine's 1-minute load average at the start and "
        "end of that run (the box is shared; a loaded run reads slower). The last column is the latest "
        "`bench --quick` run (smaller inputs: a smoke check, not the headline). How to run and read it: "
        "[docs/benchmarks.md](../docs/benchmarks.md).",
        "",
        "| headline | benchmark | baseline (same run) | target | latest value | meets | date | machine | load "
        "| latest quick |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    lines += [_row(headline, history(results_dir, headline)) for headline in HEADLINES]
    lines += ["", f"![each headline over time]({figure.relative_to(readme.parent).as_posix()})", ""]
    text = "\n".join(lines)
    readme.write_text(text, encoding="utf-8")
    return text


def plot_history(results_dir: Path, figure: Path) -> None:
    """One panel per headline: median over time with its min-max bar, the target as a dashed line; quick runs
    hollow."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = 4
    rows = -(-len(HEADLINES) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(4.2 * columns, 2.6 * rows), squeeze=False)
    for ax, headline in zip(axes.flat, HEADLINES, strict=False):
        points = history(results_dir, headline)
        if not points:
            ax.text(0.5, 0.5, "no run records this yet", ha="center", va="center", transform=ax.transAxes, fontsize=8)
        for quick, style in ((False, {"color": "tab:blue"}), (True, {"color": "tab:blue", "mfc": "white"})):
            chosen = [p for p in points if p.quick == quick and p.date is not None]
            if not chosen:
                continue
            low = [p.median - (p.low if p.low is not None else p.median) for p in chosen]
            high = [(p.high if p.high is not None else p.median) - p.median for p in chosen]
            ax.errorbar([p.date for p in chosen], [p.median for p in chosen], yerr=[low, high], fmt="o", ms=4,
                        capsize=2, **style)  # fmt: skip
        if headline.target is not None:
            ax.axhline(headline.target, color="tab:red", linestyle="--", linewidth=1)
        ax.set_title(f"{headline.label}\nvs {headline.baseline}", fontsize=7)
        ax.tick_params(labelsize=6)
        ax.tick_params(axis="x", rotation=30)
    for ax in list(axes.flat)[len(HEADLINES) :]:
        ax.axis("off")
    fig.suptitle("headline ratios over time (median, min-max; red dashed: target; hollow: --quick runs)")
    fig.tight_layout()
    figure.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(figure, dpi=90)
    plt.close(fig)


def render(results_dir: Path = RESULTS_DIR, readme: Path = README, figure: Path = HISTORY_FIGURE) -> None:
    """The dashboard page and the history figure from the results files."""
    plot_history(results_dir, figure)
    render_readme(results_dir, readme, figure)


def run_benchmarks(*, quick: bool, only: Sequence[str] = ()) -> list[str]:
    """Run every benchmark (or the quick subset; `only`: these scripts) as its own process, in order;
    returns the scripts that failed."""
    failed = []
    for script, full_args, quick_args in BENCHMARKS:
        if only and script not in only:
            continue
        args = quick_args if quick else full_args
        if args is None:
            if only:
                print(f"== {script}: no quick setting, skipped", flush=True)
            continue
        print(f"== {script} {' '.join(args)}", flush=True)
        if subprocess.run([sys.executable, str(BENCHMARKS_DIR / script), *args], check=False).returncode != 0:
            failed.append(script)
    return failed
