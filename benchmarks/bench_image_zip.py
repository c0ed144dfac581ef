"""What does reading images straight from the official zips cost, with `ImageStore` vs plain `zipfile`?

Builds a zip shaped like `BIOSCAN_5M_cropped_256_pretrain.01.zip` (release-relative member names,
stored JPEG-sized members), then measures in fresh processes: the time and memory to index it
(`ImageStore.open`, flat `ZipIndex` arrays; baseline `zipfile.ZipFile`, one object per member), the
pickled size a Ray task would receive, and random-read throughput. `--rounds` rounds (default 3), each running
both variants in turn so that a load change hits both; each ratio is the median and spread of the rounds' ratios.
Appends a JSON line to benchmarks/results/image_zip.jsonl. `--quick`: 20,000 members.

    python benchmarks/bench_image_zip.py                  # 200k members of 1 KiB (index costs)
    python benchmarks/bench_image_zip.py --members 20000 --member-kib 29   # real image size (read speed)
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import random
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

from _results import append_result, load_1min, spread

from bioscan_stream.layout import ImageStore, image_relpath, zip_package_names

PACKAGE = "cropped_256"
READS = 50_000  # NOTE: 0.4-0.7 s of reads per variant at 1 KiB (2 cores, 2026-12): first reads are a small part


def _ids(members: int) -> list[str]:
    return [f"SYN{i:08d}-24" for i in range(members)]


def write_zip(root: Path, members: int, member_kib: int) -> None:
    payload = os.urandom(member_kib * 1024)
    with zipfile.ZipFile(root / zip_package_names(PACKAGE, per_partition=True)[0], "w") as zf:
        for pid in _ids(members):
            zf.writestr(image_relpath(pid, "pretrain", PACKAGE), payload)


def _rss() -> int:
    with open("/proc/self/status") as status:
        return int(next(x for x in status if x.startswith("VmRSS:")).split()[1]) * 1024


def _worker(variant: str, root: str, members: int) -> dict:
    """Index and read in this fresh process."""
    base, start = _rss(), time.perf_counter()
    if variant == "imagestore":
        store = ImageStore.open(root, PACKAGE)
        pickled = len(pickle.dumps(store))

        def read(pid: str) -> bytes:
            return store.read(pid, "pretrain")
    else:
        archive = zipfile.ZipFile(next(Path(root).glob("*.zip")))
        pickled = 0  # a ZipFile cannot be pickled: each task re-reads the central directory

        def read(pid: str) -> bytes:
            return archive.read(image_relpath(pid, "pretrain", PACKAGE))

    index_s, index_rss = time.perf_counter() - start, _rss() - base
    picks = random.Random(0).choices(_ids(members), k=READS)
    start = time.perf_counter()
    nbytes = sum(len(read(pid)) for pid in picks)
    read_s = time.perf_counter() - start
    return {
        "index_s": index_s,
        "index_rss": index_rss,
        "pickled_bytes": pickled,
        "reads_per_s": READS / read_s,
        "mb_per_s": nbytes / read_s / 1e6,
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=200_000)
    parser.add_argument("--member-kib", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=3, help="rounds of both variants (%(default)s)")
    parser.add_argument("--quick", action="store_true", help="20,000 members: a smoke run")
    parser.add_argument("--worker", choices=("imagestore", "zipfile"), help=argparse.SUPPRESS)
    parser.add_argument("--root", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker:
        print(json.dumps(_worker(args.worker, args.root, args.members)))
        return 0
    if args.quick:
        args.members = 20_000
    rounds: list[dict[str, dict]] = []
    loads = []
    with tempfile.TemporaryDirectory(prefix="bench_zip_") as root:
        write_zip(Path(root), args.members, args.member_kib)
        for _ in range(args.rounds):
            loads.append([load_1min()])
            rounds.append({})
            for variant in ("imagestore", "zipfile"):
                cmd = [sys.executable, __file__, "--worker", variant, "--root", root, "--members", str(args.members)]
                done = subprocess.run(cmd, check=True, capture_output=True, text=True)
                rounds[-1][variant] = json.loads(done.stdout)
            loads[-1].append(load_1min())
    for results in rounds:
        for name, r in results.items():
            print(
                f"{name:10s} index {r['index_s']:6.2f} s  +{r['index_rss'] / 2**20:7.1f} MiB "
                f"({r['index_rss'] / args.members:5.0f} B/member)  pickled {r['pickled_bytes'] / 2**20:6.1f} MiB  "
                f"{r['reads_per_s']:8,.0f} reads/s  {r['mb_per_s']:6.1f} MB/s"
            )
    per_round = {
        "index_memory": [r["imagestore"]["index_rss"] / max(r["zipfile"]["index_rss"], 1) for r in rounds],
        "index_time": [r["imagestore"]["index_s"] / r["zipfile"]["index_s"] for r in rounds],
        "reads": [r["imagestore"]["reads_per_s"] / r["zipfile"]["reads_per_s"] for r in rounds],
    }
    ratios = {name: spread(values, loads=loads) for name, values in per_round.items()}
    print(", ".join(f"{k} {v['median']:.2f}x [{v['min']:.2f}-{v['max']:.2f}] of zipfile" for k, v in ratios.items()))
    record = {
        "quick": args.quick,
        "members": args.members,
        "member_kib": args.member_kib,
        "results": {variant: [r[variant] for r in rounds] for variant in ("imagestore", "zipfile")},
        "ratios": ratios,
    }
    append_result("image_zip", record)
    return 0


if __name__ == "__main__":
    sys.exit(main())
