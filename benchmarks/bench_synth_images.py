"""How fast does the synthetic release write images, and how close is that to the JPEG-encoding limit?

Runs `write_images` (tree output) for cropped_256-only with 1 and with 2 workers, and original_full with 1 worker,
on 1,200 random records (boxes from tiny to frame-filling; ~10 s a 1-worker run). A first, cold 1-worker
cropped_256 run pays the per-process start (pooled wells, noise tile, taxon caches: ~0.3 s); then `--rounds` rounds
(default 3) of encode baseline, 1 worker, 2 workers in turn (so a load change hits all three), whose per-round
ratios give the headline medians and spreads; their 1-worker runs are the steady state of a long run. Baseline in
the same round: JPEG-encoding pre-rendered images of the same size in one process (the cost no renderer can avoid),
so `render / encode` says how much of the time is rendering.
Appends one JSON line to benchmarks/results/synth_images.jsonl and writes benchmarks/figures/synth_images.png (not
with `--quick`: 200 and 20 records, a smoke run).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import matplotlib
import numpy as np
import pyarrow as pa
from _results import append_result, load_1min, machine_info, spread

from bioscan_stream.synth.images import encode_jpeg, render_packages, write_images

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

FIGURE = Path(__file__).parent / "figures" / "synth_images.png"
ORDERS = ("Diptera", "Hymenoptera", "Coleoptera", "Lepidoptera", "Hemiptera", "Araneae", "Psocodea")


def random_table(n: int, *, seed: int = 0) -> pa.Table:
    """Records with log-uniform box sides (20-700 px) and a fill of 15-45% of the box."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        side = float(np.exp(rng.uniform(np.log(20), np.log(700))))
        aspect = rng.uniform(0.6, 1.6)
        w, h = min(int(side * aspect**0.5), 1000), min(int(side / aspect**0.5), 760)
        x0, y0 = int(rng.integers(0, 1024 - w + 1)), int(rng.integers(0, 768 - h + 1))
        rows.append({
            "processid": f"BENCH{i:06d}-24", "split": "pretrain", "order": ORDERS[i % len(ORDERS)],
            "family": f"family{i % 11}", "genus": f"genus{i % 23}", "species": None,
            "image_measurement_value": int(rng.uniform(0.15, 0.45) * w * h),
            "x0": x0, "y0": y0, "x1": x0 + w, "y1": y0 + h,
        })  # fmt: skip
    return pa.Table.from_pylist(rows)


def time_write(table: pa.Table, packages: tuple[str, ...], workers: int) -> tuple[float, float]:
    """(images per second, CPU ms per image of this process) of one `write_images` run into a fresh folder.

    The CPU time is the whole cost only with 1 worker (no pool); on a shared machine it is the number that
    does not depend on the load: 1000 / it is the rate of one idle core.
    """
    with tempfile.TemporaryDirectory() as root:
        start, cpu = time.perf_counter(), time.process_time()
        write_images(root, table, packages=packages, workers=workers)
        wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    return table.num_rows / wall, 1000 * cpu / table.num_rows


def time_encode(table: pa.Table, package: str, n: int) -> float:
    """Baseline: images per second of JPEG-encoding already rendered images of the package's size."""
    images = [render_packages(r, (package,), seed=0)[package] for r in table.slice(0, 16).to_pylist()]
    start = time.perf_counter()
    for i in range(n):
        encode_jpeg(images[i % len(images)])
    return n / (time.perf_counter() - start)


def plot(result: dict, path: Path) -> None:
    """Bars of the wall-clock rates, plus the 1-worker rates implied by CPU time (what one idle core does;
    cropped_256 at steady state)."""
    labels = ["encode only\n341x256", "cropped_256\n1 worker", "cropped_256\n2 workers", "cropped_256\nper idle core",
              "encode only\n1024x768", "original_full\n1 worker", "original_full\nper idle core"]  # fmt: skip
    rates, cpu_ms = result["images_per_s"], result["cpu_ms_per_image_1_worker"]
    steady = 1000 / cpu_ms["cropped_256_steady"]
    values = [rates["encode_256"], rates["cropped_256_w1"], rates["cropped_256_w2"], steady,
              rates["encode_full"], rates["original_full_w1"], 1000 / cpu_ms["original_full"]]  # fmt: skip
    fig, ax = plt.subplots(figsize=(10, 4))
    grey, blue, orange = "#999999", "#4c72b0", "#dd8452"
    bars = ax.bar(labels, values, color=[grey, blue, blue, blue, grey, orange, orange])
    for bar in (bars[3], bars[6]):
        bar.set_hatch("//")
        bar.set_alpha(0.6)
    for i, v in enumerate(values):
        ax.text(i, v, f"{v:.0f}", ha="center", va="bottom")
    ax.set_ylabel("images / s")
    ax.set_yscale("log")
    machine = result["machine"]
    ax.set_title(
        f"synthetic image writing ({machine['cpus']} CPUs, load {machine['load_1min']:.1f}; hatched: from CPU time)"
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=1200, help="records per cropped_256 run (%(default)s)")
    parser.add_argument("--full-samples", type=int, default=60, help="records of the original_full run")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of encode, 1 worker, 2 workers (%(default)s)")
    parser.add_argument("--quick", action="store_true", help="200 and 20 records: a smoke run")
    args = parser.parse_args(argv)
    if args.quick:
        args.samples, args.full_samples = 200, 20
    table, full = random_table(args.samples), random_table(args.full_samples, seed=1)
    _, crop_cpu = time_write(table, ("cropped_256",), 1)  # cold: the per-process start
    rounds, loads = [], []
    for _ in range(args.rounds):
        loads.append([load_1min()])
        encode = time_encode(table, "cropped_256", 2000)
        (w1, cpu_warm), (w2, _) = time_write(table, ("cropped_256",), 1), time_write(table, ("cropped_256",), 2)
        rounds.append({"encode_256": encode, "cropped_256_w1": w1, "cropped_256_w2": w2, "cpu_ms_w1": cpu_warm})
        loads[-1].append(load_1min())
    full_w1, full_cpu = time_write(full, ("original_full",), 1)

    def median(key: str) -> float:
        return float(np.median([r[key] for r in rounds]))

    rates = {
        "encode_256": median("encode_256"),
        "cropped_256_w1": median("cropped_256_w1"),
        "cropped_256_w2": median("cropped_256_w2"),
        "encode_full": time_encode(full, "original_full", 200),
        "original_full_w1": full_w1,
    }
    cpu_ms = {"cropped_256": crop_cpu, "cropped_256_steady": median("cpu_ms_w1"), "original_full": full_cpu}
    result = {
        "benchmark": "synth_images",
        "quick": args.quick,
        "samples": args.samples,
        "full_samples": args.full_samples,
        "images_per_s": rates,
        "cpu_ms_per_image_1_worker": cpu_ms,
        "rounds": rounds,
        "ratios": {
            "cropped_256_w1_vs_encode": spread([r["cropped_256_w1"] / r["encode_256"] for r in rounds], loads=loads),
            "cropped_256_w2_vs_w1": spread([r["cropped_256_w2"] / r["cropped_256_w1"] for r in rounds], loads=loads),
            "original_full_w1_vs_encode": rates["original_full_w1"] / rates["encode_full"],
        },
        "machine": machine_info(),
    }
    for key, value in rates.items():
        print(f"{key:>18}: {value:8.1f} images/s")
    for key, value in cpu_ms.items():
        print(f"{key:>18}: {value:8.1f} CPU ms/image with 1 worker = {1000 / value:.0f} images/s per idle core")
    for key, value in result["ratios"].items():
        summary = f"{value['median']:.3f} [{value['min']:.3f}-{value['max']:.3f}]" if isinstance(value, dict) else ""
        print(f"{key:>28}: {summary or f'{value:.3f}'}")
    append_result("synth_images", result)
    if not args.quick:  # the figure shows the latest full run
        plot(result, FIGURE)
    return 0


if __name__ == "__main__":
    sys.exit(main())
