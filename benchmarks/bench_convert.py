"""Does the Ray shard conversion run at >= 0.8x the raw tar limit per worker, and scale >= 1.7x from 1 to 2 workers?

Raw limit (same run, same source files): one process reads every image file of the release and appends it
to a single tar with `tarfile` (no metadata, no validation, no Ray). The conversion is `convert_release` on
an already started local Ray with `num_cpus` = 1 and then 2 (start-up excluded: workers warmed by a 64-record
conversion), writing the full samples (jpg, dna.txt, json, targets.json) into 16 equal shards, DNA set off.
Both read the same files from the page cache. Rounds interleave raw, raw + fsync, 1 and 2 workers, so load
drifts on this shared box hit every variant; each ratio is computed per round and reported as the median and
spread of `--repeats` (>= 3) rounds, with the load average before and after every run and the CPU seconds of
each run (this process plus every Ray process: neighbours stretch wall time, not CPU time).

Scale matters: 20k-sample runs last ~2-3 s, where Ray's task scheduling, the driver's metadata pass and the
last shard's tail are a large and load-dependent part (those runs read 0.33-1.34x and 0.89-2.1x). The
default, 200k samples (~5.8 GB of images), makes each conversion last tens of seconds, like a real one.
`--profile` adds the split of a conversion's time: the driver's serial phases (metadata read and validation,
plan, publish; cProfile of a 1-worker conversion) and one shard's task body (cProfile in this process) by
kind of work, against the raw copy's per-sample time.

Prints samples/s, MB/s (image bytes), the ratios and an extrapolation to the full release (5.15M samples,
~135 GB cropped_256); appends a JSON line to benchmarks/results/convert.jsonl and draws
benchmarks/figures/convert.png.

Source: a release of N synthetic 341x256 q90 JPEGs (~29 KB, the real cropped_256 size) written here with
PIL (128 distinct images reused; content does not matter to a byte copier).
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import logging
import os
import pstats
import shutil
import statistics
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import ray
from _results import TreeCpu, append_result, load_1min, machine_info, process_cpu, spread, spread_text
from PIL import Image

from bioscan_stream.layout import ImageStore, chunk_for, image_relpath
from bioscan_stream.metadata import write_metadata
from bioscan_stream.shards.convert import ConvertConfig, _load, convert_release
from bioscan_stream.shards.writer import ShardJob, write_image_shard

FIGURE = Path(__file__).parent / "figures" / "convert.png"
PACKAGE = "cropped_256"
FULL_SAMPLES = 5_150_850
FULL_BYTES = 135e9
_SPLITS = ("pretrain", "train", "val", "test")
_SHARDS = 16


def _jpegs(count: int, rng: np.random.Generator) -> list[bytes]:
    """Smooth colour fields plus sensor-like noise: ~29 KB at q90, like real cropped_256 files."""
    out = []
    for _ in range(count):
        small = Image.fromarray(rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)).resize((341, 256), Image.BICUBIC)
        noisy = np.asarray(small).astype(np.int16) + rng.integers(-9, 10, (256, 341, 3))
        buffer = io.BytesIO()
        Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8)).save(buffer, format="JPEG", quality=90)
        out.append(buffer.getvalue())
    return out


def write_source(root: Path, samples: int, seed: int = 0) -> list[Path]:
    """Metadata (4 splits, 658-nt barcodes) and one image file per record; returns the image paths."""
    rng = np.random.default_rng(seed)
    images = _jpegs(128, rng)
    records, paths = [], []
    for i in range(samples):
        split, pid = _SPLITS[i % len(_SPLITS)], f"BENCH{i:07d}-24"
        barcode = "".join(rng.choice(list("ACGT"), 658))
        labels = {"phylum": "Arthropoda", "order": f"O{i % 30}", "dna_bin": f"BOLD:{i % 997}"}
        records.append(
            {"processid": pid, "split": split, "dna_barcode": barcode, "chunk": chunk_for(pid, split) or None}
        )
        records[-1].update(labels)
        path = root / image_relpath(pid, split, PACKAGE)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(images[i % len(images)])
        paths.append(path)
    write_metadata(pa.Table.from_pylist(records), root)
    return paths


def raw_limit(paths: list[Path], out: Path, *, durable: bool) -> float:
    """Seconds for one process to read every file and append it to one tar (the floor of any converter).

    `durable` adds the one fsync that any writer promising a committed file pays (the shard writer
    fsyncs each shard before its rename); without it the tar may still sit in the page cache.
    """
    start = time.perf_counter()
    with open(out, "wb") as raw:
        with tarfile.open(fileobj=raw, mode="w", format=tarfile.USTAR_FORMAT) as tar:
            for path in paths:
                data = path.read_bytes()
                info = tarfile.TarInfo(path.name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        if durable:
            raw.flush()
            os.fsync(raw.fileno())
    seconds = time.perf_counter() - start
    out.unlink()  # its dirty pages dropped unwritten, as the conversion's outputs are (see `convert_seconds`)
    return seconds


def _config(root: Path, out: Path, workers: int) -> ConvertConfig:
    return ConvertConfig(root=str(root), out=str(out), splits=_SPLITS, shard_bytes=1 << 40, min_shards=_SHARDS // 4,
                         workers=workers, dna=False, progress=False)  # fmt: skip


def convert_seconds(
    root: Path, warm: Path, out: Path, workers: int, profile: Path | None = None
) -> tuple[float, float, dict[str, float]]:
    """Wall and CPU seconds of `convert_release` on a started local Ray with `workers` CPUs, warmed first, and
    the CPU seconds per kind of process (driver, Ray workers, raylet, GCS, agents).

    Warm-up excludes once-per-worker costs (process start, imports, pyarrow's lazy kernel set-up: 0.3-1 s
    per worker here), which vanish on the 5M-record release but would dominate a few-thousand-record run.
    CPU seconds: this process plus every Ray process (GCS, raylet, workers), the runtime's start excluded.
    `profile`: write a cProfile of the driver there (its serial phases).
    """
    ray.init(num_cpus=workers, include_dashboard=False, logging_level=logging.WARNING, log_to_driver=False)
    tree = TreeCpu()
    try:
        convert_release(_config(warm, out.with_name(out.name + "-warm"), workers))
        tree.sample()
        before, driver = tree.seconds_by_kind(), process_cpu()
        cpu, start = tree.seconds() + driver, time.perf_counter()
        tree.start()
        profiler = cProfile.Profile() if profile else None
        if profiler:
            profiler.enable()
        convert_release(_config(root, out, workers))
        seconds = time.perf_counter() - start
        if profiler:
            profiler.disable()
            profiler.dump_stats(profile)
        tree.done.set()
        tree.join()
        tree.sample()
        by_kind = {kind: round(value - before.get(kind, 0.0), 2) for kind, value in tree.seconds_by_kind().items()}
        return seconds, tree.seconds() + process_cpu() - cpu, by_kind | {"driver": round(process_cpu() - driver, 2)}
    finally:
        tree.done.set()
        ray.shutdown()
        # Deleting the output drops its dirty pages unwritten, as the raw copy's rewrite of one file does: else
        # every run leaves ~1 GB for the disk to flush and later runs are throttled to its ~170 MB/s here.
        for folder in (out, out.with_name(out.name + "-warm")):
            shutil.rmtree(folder, ignore_errors=True)


def plot(rates: dict[str, float], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3))
    ax.barh(list(rates)[::-1], list(rates.values())[::-1], color=["tab:blue", "tab:blue", "darkgrey", "grey"])
    ax.set_xlabel("samples / s (cropped_256-sized JPEGs)")
    ax.set_title("release -> WebDataset shards (Ray) vs raw tar copy")
    ax.set_xlim(0, max(rates.values()) * 1.15)
    for i, value in enumerate(list(rates.values())[::-1]):
        ax.text(value, i, f" {value:,.0f}", va="center")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=200_000, help="records (%(default)s: ~5.8 GB of images)")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved rounds (>= 3: median and spread)")
    parser.add_argument("--profile", action="store_true", help="also split a conversion's time by phase")
    parser.add_argument("--tmp", default=None, help="scratch folder (default: a temporary folder)")
    parser.add_argument("--quick", action="store_true", help="20,000 samples: a smoke run, not the headline")
    parser.add_argument(
        "--experiment",
        default="",
        help="what this run changes (e.g. `--tmp /dev/shm`): recorded, kept off the dashboard",
    )
    return parser.parse_args(argv)


_Run = tuple[float, float, list[float], dict[str, float]]


def _timed(run: Callable[[], tuple[float, float, dict[str, float]]]) -> _Run:
    """(wall s, CPU s, [load before, load after], CPU s per kind of process) of one run."""
    before = load_1min()
    wall, cpu, by_kind = run()
    return wall, cpu, [before, load_1min()], by_kind


def _raw_run(paths: list[Path], out: Path, *, durable: bool) -> tuple[float, float, dict[str, float]]:
    cpu = process_cpu()
    seconds = raw_limit(paths, out, durable=durable)
    cpu = process_cpu() - cpu
    return seconds, cpu, {"driver": round(cpu, 2)}


def measure(samples: int, repeats: int, tmp: str | None, profile: bool) -> dict[str, Any]:
    """`repeats` interleaved rounds of the raw copies and the conversion with 1 and 2 workers; per-round ratios."""
    scratch = Path(tempfile.mkdtemp(prefix="bench-convert-", dir=tmp))
    release, warm = scratch / "release", scratch / "warm"
    try:
        paths = write_source(release, samples)
        write_source(warm, 64, seed=1)
        image_mb = sum(p.stat().st_size for p in paths) / 1e6
        variants: dict[str, Callable[[], tuple[float, float, dict[str, float]]]] = {
            "raw": lambda: _raw_run(paths, scratch / "raw.tar", durable=False),
            "raw_fsync": lambda: _raw_run(paths, scratch / "raw.tar", durable=True),
            "1": lambda: convert_seconds(release, warm, scratch / "out1", 1),
            "2": lambda: convert_seconds(release, warm, scratch / "out2", 2),
        }
        runs: dict[str, list[_Run]] = {name: [] for name in variants}
        for round_ in range(repeats):
            for name, run in variants.items():
                runs[name].append(_timed(run))
                wall, cpu, load, by_kind = runs[name][-1]
                print(f"round {round_ + 1}/{repeats} {name}: {wall:.1f} s wall, {cpu:.1f} s CPU {by_kind}, "
                      f"load {load}", flush=True)  # fmt: skip
        phases = profile_phases(release, warm, scratch, paths) if profile else None
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return _summarise(runs, samples, image_mb) | ({"profile": phases} if phases else {})


def _summarise(runs: dict[str, list[_Run]], samples: int, image_mb: float) -> dict[str, Any]:
    """Per-variant spreads of wall and CPU seconds; per-round ratios, each as a spread."""
    wall = {name: [r[0] for r in rs] for name, rs in runs.items()}
    cpu = {name: [r[1] for r in rs] for name, rs in runs.items()}
    rounds = range(len(wall["raw"]))

    def per_worker(base: str, seconds: dict[str, list[float]]) -> dict[str, Any]:
        return {w: spread([seconds[base][r] / (int(w) * seconds[w][r]) for r in rounds]) for w in ("1", "2")}

    median = {name: statistics.median(values) for name, values in wall.items()}
    per_worker_rate = samples / median["1"]
    return {
        "samples": samples,
        "image_mb": round(image_mb, 1),
        "seconds": {name: spread(values, loads=[r[2] for r in runs[name]]) for name, values in wall.items()},
        "cpu_seconds": {name: spread(values) for name, values in cpu.items()},
        "cpu_seconds_by_process": {name: [r[3] for r in rs] for name, rs in runs.items()},
        "samples_per_s": {name: samples / value for name, value in median.items()},
        "ratio_per_worker_vs_raw": per_worker("raw", wall),
        "ratio_per_worker_vs_raw_fsync": per_worker("raw_fsync", wall),
        "ratio_per_cpu_s_vs_raw": {w: spread([cpu["raw"][r] / cpu[w][r] for r in rounds]) for w in ("1", "2")},
        "speedup_1_to_2": spread([wall["1"][r] / wall["2"][r] for r in rounds]),
        "full_release_hours_per_worker": FULL_SAMPLES / per_worker_rate / 3600,
        "full_release_hours_2_workers": FULL_SAMPLES * median["2"] / samples / 3600,
        "full_release_hours_raw_by_bytes": FULL_BYTES / (image_mb * 1e6 / median["raw"]) / 3600,
        "machine": machine_info(),
    }


def _cumulative(stats: pstats.Stats, module: str, function: str) -> float:
    """Cumulative seconds of `function` defined in a file ending with `module` (0 if it never ran)."""
    found = [v[3] for (path, _, name), v in stats.stats.items() if name == function and path.endswith(module)]  # type: ignore[attr-defined]
    return sum(found)


#: Kinds of work by cProfile's own time per function: (kind, test on (file, function)); the rest is "other".
_KINDS: tuple[tuple[str, Callable[[str, str], bool]], ...] = (
    ("sha256", lambda path, name: "_hashlib.HASH" in name),
    (
        "open_and_read_images",
        lambda path, name: (
            name
            in (
                "<built-in method io.open>",
                "<method 'readall' of '_io.FileIO' objects>",
                "<method 'read' of '_io.BufferedReader' objects>",
            )
            or path.endswith(("layout.py", "posixpath>", "pathlib.py", "pathlib/_local.py"))
        ),
    ),  # fmt: skip
    ("write_syscalls", lambda path, name: "BufferedWriter" in name or "posix.fsync" in name),
    ("jpeg_check", lambda path, name: name in ("jpeg_problem", "_scan_start")),
    (
        "tar_headers_and_copies",
        lambda path, name: (
            path.endswith(("tarwriter.py", "tarfile.py"))
            or name in ("<method 'join' of 'bytes' objects>", "<method 'tobuf' of 'TarInfo' objects>")
        ),
    ),  # fmt: skip
)


def _by_kind(profiler: cProfile.Profile, rows: int) -> dict[str, float]:
    """µs per sample of each kind of work (cProfile own time; the profiler inflates Python-heavy parts)."""
    kinds = dict.fromkeys([name for name, _ in _KINDS] + ["other"], 0.0)
    for (path, _, function), row in pstats.Stats(profiler).stats.items():  # type: ignore[attr-defined]
        kind = next((name for name, test in _KINDS if test(path, function)), "other")
        kinds[kind] += row[2]
    return {name: round(1e6 * value / rows, 1) for name, value in kinds.items()}


def _task_body(release: Path, paths: list[Path], scratch: Path, rows: int) -> dict[str, Any]:
    """One shard's task body (`write_image_shard`) and the raw copy of as many files, in this process: µs per
    sample unprofiled, then by kind of work under cProfile."""
    source = _load(_config(release, scratch / "unused", 1))
    records, targets = source.table.slice(0, rows), source.targets.slice(0, rows)
    store = ImageStore.open(str(release), PACKAGE)
    job = ShardJob(path="p.tar", url=str(scratch / "p.tar"), journal_url=str(scratch / "p.json"))

    def shard() -> None:
        write_image_shard(job, store, records, targets)
        (scratch / "p.tar").unlink()

    def raw() -> None:
        raw_limit(paths[:rows], scratch / "p.tar", durable=False)

    result: dict[str, Any] = {"rows": rows}
    for name, run in (("task_body", shard), ("raw_copy", raw)):
        start = time.perf_counter()
        run()
        seconds = time.perf_counter() - start
        profiler = cProfile.Profile()
        profiler.runcall(run)
        result[name] = {"us_per_sample": round(1e6 * seconds / rows, 1), "profiled_by_kind": _by_kind(profiler, rows)}
    return result


def profile_phases(release: Path, warm: Path, scratch: Path, paths: list[Path]) -> dict[str, Any]:
    """Where a conversion's time goes: the driver's serial phases (cProfile of a 1-worker conversion) and one
    shard's task body, beside the wall time of that conversion."""
    driver_profile = scratch / "driver.prof"
    wall, _, _ = convert_seconds(release, warm, scratch / "outp", 1, profile=driver_profile)
    stats = pstats.Stats(str(driver_profile))
    convert = "shards/convert.py"
    images = _cumulative(stats, convert, "_convert_images")
    driver = {
        "metadata_read_validate": _cumulative(stats, convert, "_load"),
        "store_open_and_plan": _cumulative(stats, "layout.py", "open") + _cumulative(stats, convert, "_image_plan"),
        "publish": _cumulative(stats, convert, "_publish_images") + _cumulative(stats, convert, "_remove_stale"),
    }
    driver["shard_tasks"] = images - driver["store_open_and_plan"]
    return {
        "conversion_1_worker_s": wall,
        "driver_s": {name: round(value, 3) for name, value in driver.items()},
        "one_shard": _task_body(release, paths, scratch, len(paths) // _SHARDS),
    }


def report(result: dict[str, Any]) -> dict[str, float]:
    """Print the table and the ratios (median [min-max] of the rounds); returns samples/s per variant for the plot."""
    names = {"raw": "raw tar", "raw_fsync": "raw tar + fsync", "1": "convert, 1 worker", "2": "convert, 2 workers"}
    rates = {names[name]: rate for name, rate in result["samples_per_s"].items()}
    for name, rate in rates.items():
        print(f"{name:<22} {rate:>9,.0f} samples/s  {rate * result['image_mb'] / result['samples']:>7.1f} MB/s")

    for w, ratio in result["ratio_per_worker_vs_raw"].items():
        fsynced, per_cpu = result["ratio_per_worker_vs_raw_fsync"][w], result["ratio_per_cpu_s_vs_raw"][w]
        print(f"per worker vs raw ({w} worker(s)): {spread_text(ratio)} (target >= 0.8x), "
              f"vs raw + fsync {spread_text(fsynced)}, per CPU-s {spread_text(per_cpu)}")  # fmt: skip
    print(f"speed-up 1 -> 2 workers: {spread_text(result['speedup_1_to_2'])} (target >= 1.7x)")
    print(f"full release (5.15M samples): {result['full_release_hours_per_worker']:.1f} h per worker, "
          f"{result['full_release_hours_2_workers']:.1f} h with 2 workers")  # fmt: skip
    if "profile" in result:
        print(json.dumps(result["profile"], indent=1))
    return rates


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    result = {"quick": args.quick, "experiment": args.experiment, "scratch": args.tmp} | measure(
        20_000 if args.quick else args.samples, args.repeats, args.tmp, args.profile
    )
    rates = report(result)
    append_result("convert", result)
    if not (args.experiment or args.quick):  # the figure shows the latest full run
        plot(rates, FIGURE)
    return 0


if __name__ == "__main__":
    sys.exit(main())
