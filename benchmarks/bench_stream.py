"""Does BioscanStream deliver decoded image batches near the decode+transform limit, and faster than its peers?

One run, same images, same transform (`ImageTransform(train=False)`: decode -> resize 256 -> centre crop
224 -> uint8, which for these 256-high images is an integer crop, as torchvision's Resize + CenterCrop;
stack + BIOSCAN normalisation per batch of 64 inside the workers), same worker counts, measured back to back:

- limit: the same work in a tight loop over in-memory JPEG bytes, one process (= per core): decode +
  crop to uint8 + stack + normalise per batch; "limit uint8" without the normalisation, the CPU work of a
  `normalize=False` stream whose batches are normalised on the GPU by the training step. Each batch goes to
  fresh memory, as in any collate function. The stream's workers reuse their batch buffers
  (`stream.sharedbatch`), which spares the page faults of fresh memory (most of the normalisation's cost
  in the plain loop), so "limit reused" / "limit uint8 reused" run the loop into reused buffers too: the
  stricter yardstick, reported next to the target's;
- BioscanStream from local shards and from a moto S3 server on 127.0.0.1 (subprocess), 1 and 2 workers;
  and from local shards with `normalize=False` (uint8 batches, compared with "limit uint8");
- the per-file reader of the official tree (`bioscan_stream.stream.official.OfficialTree`);
- the official `bioscan-dataset` package's `BIOSCAN5M` (integrity check skipped: synthetic CSV), through
  its public API: it opens each image with Pillow from a path (and reads its row with pandas `iloc`), so
  the transform gets a PIL image (decoded by Pillow) where the byte-based readers decode with simplejpeg;
- LitData `StreamingDataset` over an `optimize`d copy of the same JPEG bytes.

Images: 341x256 q90 JPEGs (~25-30 KB, like cropped_256) drawn with PIL, written in the official layout
with a metadata CSV so every reader sees the same files. `--rounds` rounds (default 3) run the limit loops and
every reader in turn, so that a load change hits them all; each ratio is the median and spread of the rounds'
ratios. In a round each loader runs one warm-up epoch (worker start-up, imports, first open: fixed costs,
excluded the same way for every reader), then `--repeats` steady-state epochs (37 batches each by default),
each timed from its first batch. Two figures per reader:
wall-clock images/s (best epoch) and images per CPU-second of this process and its children (the moto
server excluded): the machine is shared, and contention stretches wall-clock time but not the CPU time
spent per image, so "per core" is images/CPU-s against the limit loop's images/CPU-s.
Targets: per core >= 0.9x the limit; >= 2x the official package; >= LitData. Appends a JSON line to
benchmarks/results/stream.jsonl and draws benchmarks/figures/stream.png (the rounds' medians; not with `--quick`:
640 images, 1 worker, 1 timed epoch per round, a smoke run).
"""

from __future__ import annotations

import argparse
import gc
import io
import json
import os
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from functools import partial
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import torch
from _results import append_result, load_1min, machine_info, spread
from bioscan_dataset import BIOSCAN5M
from PIL import Image

from bioscan_stream import storage
from bioscan_stream.layout import image_relpath
from bioscan_stream.malloc import tune_malloc
from bioscan_stream.metadata import write_metadata
from bioscan_stream.schema import IMAGE, INDEX_FILE, TARGETS, shard_name
from bioscan_stream.shards.tarwriter import write_tar
from bioscan_stream.stream import BioscanStream, make_loader
from bioscan_stream.stream.official import OfficialTree, make_official_loader
from bioscan_stream.stream.transforms import ImageTransform, normalize_batch, stack_images

HERE = Path(__file__).parent
FIGURE = HERE / "figures" / "stream.png"
SPLIT, PACKAGE, SIZE = "val", "cropped_256", (341, 256)
TRANSFORM = ImageTransform(train=False, size=224)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2400, help="number of 341x256 JPEGs (%(default)s)")
    parser.add_argument("--per-shard", type=int, default=400, help="samples per shard (%(default)s)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", default="1,2", help="worker counts to run (%(default)s)")
    parser.add_argument("--repeats", type=int, default=2, help="timed epochs per reader, best kept (%(default)s)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of every reader in turn (%(default)s)")
    parser.add_argument("--quick", action="store_true", help="640 images, 1 worker, 1 timed epoch: a smoke run")
    parser.add_argument("--workdir", type=Path, default=None, help="keep data here (default: a temp dir)")
    args = parser.parse_args(argv)
    if args.quick:
        args.images, args.per_shard, args.workers, args.repeats = 640, 160, "1", 1
    return args


# ---------------------------------------------------------------- data: one release, three copies of it
def _jpeg(rng: np.random.Generator) -> bytes:
    """A specimen-like photo: smooth bright background, a few dark blobs, sensor noise (~25-30 KB at q90)."""
    h, w = SIZE[1], SIZE[0]
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.empty((h, w, 3), np.float32)
    img[:] = rng.uniform(170, 230, 3) + (x / w * 20)[..., None]
    for _ in range(rng.integers(3, 7)):
        cy, cx, ry, rx = rng.uniform(40, h - 40), rng.uniform(40, w - 40), rng.uniform(8, 50), rng.uniform(8, 80)
        blob = ((y - cy) / ry) ** 2 + ((x - cx) / rx) ** 2 < 1
        img[blob] = rng.uniform(20, 140, 3)
    img += rng.normal(0, 6, img.shape)
    out = io.BytesIO()
    Image.fromarray(img.clip(0, 255).astype(np.uint8)).save(out, format="JPEG", quality=90)
    return out.getvalue()


def make_release(root: Path, n: int) -> list[dict[str, Any]]:
    rng = np.random.default_rng(0)
    records = []
    for i in range(n):
        record = {"processid": f"BENCH{i:06d}-24", "split": SPLIT, "species": f"sp{i % 50:02d}",
                  "genus": f"g{i % 10}", "dna_barcode": "".join(rng.choice(list("ACGT"), 658))}  # fmt: skip
        path = root / image_relpath(record["processid"], SPLIT, PACKAGE)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(_jpeg(rng))
        records.append(record)
    write_metadata(pa.Table.from_pylist(records), root)
    return records


def make_shards(root: Path, out: Path, records: list[dict[str, Any]], per_shard: int) -> None:
    """Shards + manifest in the converter's layout, from the release's files (bytes unchanged)."""
    species = sorted({r["species"] for r in records})
    entries = []
    for number, start in enumerate(range(0, len(records), per_shard)):
        samples = [
            {"__key__": r["processid"], IMAGE: (root / image_relpath(r["processid"], SPLIT, PACKAGE)).read_bytes(),
             TARGETS: json.dumps({"species": species.index(r["species"])})}
            for r in records[start : start + per_shard]
        ]  # fmt: skip
        info = write_tar(out / SPLIT / shard_name(SPLIT, number), samples)
        entries.append({"path": f"{SPLIT}/{info.name}", "samples": info.samples, "bytes": info.bytes})
    (out / INDEX_FILE).write_text(json.dumps({"splits": {SPLIT: {"samples": len(records), "shards": entries}}}))


def _litdata_item(path: str) -> dict[str, Any]:
    return {"jpg": Path(path).read_bytes(), "label": 0}


def make_litdata(root: Path, out: Path, records: list[dict[str, Any]]) -> None:
    import litdata

    paths = [str(root / image_relpath(r["processid"], SPLIT, PACKAGE)) for r in records]
    litdata.optimize(fn=_litdata_item, inputs=paths, output_dir=str(out), chunk_bytes="64MB", num_workers=2,
                     verbose=False, reorder_files=False)  # fmt: skip


def start_moto(shards: Path) -> tuple[subprocess.Popen[bytes], str]:
    """moto_server in its own process (it must not share the GIL with the loader's main process), shards uploaded."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([str(Path(sys.executable).with_name("moto_server")), "-H", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    os.environ.update(AWS_ENDPOINT_URL=f"http://127.0.0.1:{port}", AWS_ACCESS_KEY_ID="bench",
                      AWS_SECRET_ACCESS_KEY="bench", AWS_DEFAULT_REGION="us-east-1")  # fmt: skip
    for _ in range(100):
        try:
            storage.s3_client().create_bucket(Bucket="bench")
            break
        except Exception:
            time.sleep(0.2)
    for path in sorted(shards.rglob("*")):
        if path.is_file():
            storage.put_file(path, f"s3://bench/{PACKAGE}/{path.relative_to(shards)}")
    return server, f"s3://bench/{PACKAGE}"


# ---------------------------------------------------------------- measurements
def cpu_seconds(exclude: set[int]) -> float:
    """CPU time of this process and its children (live ones, plus reaped ones via rusage), minus `exclude` pids.

    Images per CPU-second is the per-core figure that other processes on a shared machine cannot distort:
    contention stretches wall-clock time, not the CPU time a reader spends per image.
    """
    import psutil

    me = psutil.Process()
    total = sum(me.cpu_times()[:2])
    for child in me.children(recursive=True):
        if child.pid in exclude:
            continue
        try:
            total += sum(child.cpu_times()[:2])
        except psutil.NoSuchProcess:
            pass
    reaped = resource.getrusage(resource.RUSAGE_CHILDREN)
    return total + reaped.ru_utime + reaped.ru_stime


def measure(loader: Iterable[Any], size: Callable[[Any], int], repeats: int, exclude: set[int]) -> dict[str, float]:
    """Wall-clock images/s (best of `repeats` timed epochs) and images per CPU-second (all epochs together),
    after a warm-up epoch; an epoch is timed from its first batch (worker start-up excluded)."""
    for _ in loader:
        pass
    rates, images, cpu = [], 0, 0.0
    for _ in range(repeats):
        count, first, cpu0 = 0, None, 0.0
        for batch in loader:
            if first is None:
                first, cpu0 = time.perf_counter(), cpu_seconds(exclude)
            else:
                count += size(batch)
        rates.append(count / (time.perf_counter() - (first or 0.0)))
        cpu += cpu_seconds(exclude) - cpu0
        images += count
    return {"images_per_s": max(rates), "images_per_cpu_s": images / cpu}


def limit(jpegs: list[bytes], batch_size: int = 64, *, normalize: bool = True, reuse: bool = False) -> dict[str, float]:
    """Same transform, stacking and (with `normalize`) per-batch normalisation in a tight loop over in-memory
    bytes, one thread. Batches go to fresh memory per batch, like any collate function; with `reuse`, to
    reused buffers (`sharedbatch` segments of this process, never sent), as the stream's workers do."""
    torch.set_num_threads(1)  # like a DataLoader worker
    start, cpu0 = time.perf_counter(), time.process_time()
    for i in range(0, len(jpegs), batch_size):
        batch = stack_images([TRANSFORM(b) for b in jpegs[i : i + batch_size]], shared=reuse)
        if normalize:
            normalize_batch(batch, shared=reuse)
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu0
    return {"images_per_s": len(jpegs) / wall, "images_per_cpu_s": len(jpegs) / cpu}


def _pil_transform(image: Image.Image) -> torch.Tensor:
    return TRANSFORM.apply(image.convert("RGB"))


def _collate_pairs(samples: list[tuple[torch.Tensor, Any]]) -> dict[str, torch.Tensor]:
    images = normalize_batch(stack_images([s[0] for s in samples]))
    return {"image": images, "species": torch.tensor([int(s[1]) for s in samples])}


def _collate_litdata(samples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
    return {"image": normalize_batch(stack_images([TRANSFORM(s["jpg"]) for s in samples]))}


class UncheckedBIOSCAN5M(BIOSCAN5M):
    """The official loader minus its md5 check of the real CSV, which a synthetic CSV fails (environment.md)."""

    def _check_integrity(self, verbose: int = 1) -> bool:
        return True


def official_package_loader(root: Path, workers: int, batch_size: int) -> torch.utils.data.DataLoader:
    dataset = UncheckedBIOSCAN5M(
        str(root), split=SPLIT, modality=("image",), target_type="species", transform=_pil_transform
    )
    return torch.utils.data.DataLoader(dataset, batch_size=batch_size, num_workers=workers, collate_fn=_collate_pairs,
                                       persistent_workers=True, prefetch_factor=4)  # fmt: skip


def litdata_loader(path: Path, workers: int, batch_size: int) -> Any:
    import litdata

    dataset = litdata.StreamingDataset(str(path), cache_dir=str(path.parent / "litdata_cache"))
    return litdata.StreamingDataLoader(dataset, batch_size=batch_size, num_workers=workers, collate_fn=_collate_litdata)


def _stream(url: str, workers: int, batch_size: int, *, normalize: bool = True) -> torch.utils.data.DataLoader:
    ds = BioscanStream(url, SPLIT, modalities=("image",), targets=("species",), batch_size=batch_size,
                       transform=TRANSFORM, normalize=normalize)  # fmt: skip
    return make_loader(ds, num_workers=workers)


def _official_tree(root: Path, workers: int, batch_size: int) -> torch.utils.data.DataLoader:
    tree = OfficialTree(root, SPLIT, ("image",), ("species",), batch_size=batch_size, transform=TRANSFORM)
    return make_official_loader(tree, num_workers=workers)


# ---------------------------------------------------------------- report
def machine() -> dict[str, Any]:
    """The shared machine record plus what this comparison depends on: pillow-simd and the peers' versions."""
    import PIL

    names = ("bioscan-dataset", "moto")  # webdataset, litdata, torch and PIL are in machine_info's versions
    return {**machine_info(), "pillow_simd": ".post" in PIL.__version__, "packages": {n: version(n) for n in names}}


def plot(results: dict[str, dict[str, float]], path: Path) -> None:
    """Two panels: wall-clock images/s and images per CPU-second, the limit as a line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [n for n in results if not n.startswith("limit")]
    colors = ["tab:blue" if n.startswith("bioscan_stream") else "tab:gray" for n in names]
    fig, axes = plt.subplots(1, 2, figsize=(13, 0.45 * len(names) + 1.8), sharey=True)
    for ax, metric, label in zip(axes, ("images_per_s", "images_per_cpu_s"), ("images/s", "images per CPU-second"),
                                 strict=True):  # fmt: skip
        ax.barh(names, [results[n][metric] for n in names], color=colors)
        for name, style in (("limit", "tab:red"), ("limit uint8", "tab:orange")):
            ax.axvline(results[name][metric], color=style, linestyle="--", label=f"{name} (1 core, in-memory loop)")
            ax.axvline(results[f"{name} reused"][metric], color=style, linestyle=":", label=f"{name}, reused buffers")
        ax.set_xlabel(f"{label} (341x256 JPEG -> 224 crop, batch 64)")
    axes[0].invert_yaxis()
    axes[1].legend(loc="lower right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _count_keys(batch: dict[str, Any]) -> int:
    return len(batch["__key__"])


def _count_images(batch: dict[str, Any]) -> int:
    return len(batch["image"])


def _readers(
    work: Path, s3_url: str, w: int, bs: int
) -> dict[str, tuple[Callable[[], Iterable[Any]], Callable[[Any], int]]]:
    """Every reader with `w` workers: how to make its loader, and how to count a batch's images."""
    return {
        f"bioscan_stream local w{w}": (partial(_stream, str(work / "shards"), w, bs), _count_keys),
        f"bioscan_stream s3 w{w}": (partial(_stream, s3_url, w, bs), _count_keys),
        f"bioscan_stream local uint8 w{w}": (
            partial(_stream, str(work / "shards"), w, bs, normalize=False),
            _count_keys,
        ),
        f"official tree per-file w{w}": (partial(_official_tree, work / "release", w, bs), _count_keys),
        f"bioscan-dataset BIOSCAN5M w{w}": (partial(official_package_loader, work / "release", w, bs), _count_images),
        f"litdata StreamingDataset w{w}": (partial(litdata_loader, work / "litdata", w, bs), _count_images),
    }


def run_all(
    work: Path, args: argparse.Namespace, rounds: list[dict[str, dict[str, float]]], loads: list[list[float]]
) -> None:
    """Every limit loop and reader, `args.rounds` times in turn; appends each round's results and load."""
    for name in ("release", "shards", "litdata", "litdata_cache"):  # a rerun in the same workdir starts clean
        shutil.rmtree(work / name, ignore_errors=True)
    records = make_release(work / "release", args.images)
    make_shards(work / "release", work / "shards", records, args.per_shard)
    make_litdata(work / "release", work / "litdata", records)
    server, s3_url = start_moto(work / "shards")
    jpegs = [(work / "release" / image_relpath(r["processid"], SPLIT, PACKAGE)).read_bytes() for r in records]
    limits: dict[str, dict[str, bool]] = {
        "limit": {},
        "limit uint8": {"normalize": False},
        "limit reused": {"reuse": True},
        "limit uint8 reused": {"normalize": False, "reuse": True},
    }
    exclude = {server.pid}
    try:
        for _ in range(args.rounds):
            loads.append([load_1min()])
            results = {name: limit(jpegs, **kwargs) for name, kwargs in limits.items()}
            for w in (int(x) for x in args.workers.split(",")):
                for name, (make, size) in _readers(work, s3_url, w, args.batch_size).items():
                    loader = make()
                    results[name] = measure(loader, size, args.repeats, exclude)
                    del loader  # persistent workers go now, not at the end of the run
                    gc.collect()
                    print(f"{name:<34} {results[name]['images_per_s']:8,.0f} images/s "
                          f"{results[name]['images_per_cpu_s']:8,.0f} images/CPU-s", flush=True)  # fmt: skip
            for name, kwargs in limits.items():  # best of before and after the round's readers
                after = limit(jpegs, **kwargs)
                results[name] = {k: max(v, after[k]) for k, v in results[name].items()}
            loads[-1].append(load_1min())
            rounds.append(results)
    finally:
        server.terminate()
        server.wait()


def ratios(results: dict[str, dict[str, float]], workers: list[int]) -> dict[str, float]:
    """Per core = images per CPU-second against the limit's; peers compared on both metrics."""
    limit_cpu = results["limit"]["images_per_cpu_s"]
    out: dict[str, float] = {}
    for w in workers:
        local = results[f"bioscan_stream local w{w}"]
        out[f"per_core_vs_limit local w{w}"] = local["images_per_cpu_s"] / limit_cpu
        out[f"per_core_vs_limit s3 w{w}"] = results[f"bioscan_stream s3 w{w}"]["images_per_cpu_s"] / limit_cpu
        uint8 = results[f"bioscan_stream local uint8 w{w}"]["images_per_cpu_s"]
        out[f"per_core_vs_limit local uint8 w{w}"] = uint8 / results["limit uint8"]["images_per_cpu_s"]
        reused, reused_uint8 = results["limit reused"], results["limit uint8 reused"]
        out[f"per_core_vs_limit_reused local w{w}"] = local["images_per_cpu_s"] / reused["images_per_cpu_s"]
        out[f"per_core_vs_limit_reused local uint8 w{w}"] = uint8 / reused_uint8["images_per_cpu_s"]
        for peer, label in (("bioscan-dataset BIOSCAN5M", "bioscan_dataset"), ("litdata StreamingDataset", "litdata"),
                            ("official tree per-file", "official_tree")):  # fmt: skip
            other = results[f"{peer} w{w}"]
            out[f"vs_{label} w{w} (images/s)"] = local["images_per_s"] / other["images_per_s"]
            out[f"vs_{label} w{w} (per CPU-s)"] = local["images_per_cpu_s"] / other["images_per_cpu_s"]
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    tune_malloc()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench-stream-"))
    rounds: list[dict[str, dict[str, float]]] = []
    loads: list[list[float]] = []
    try:
        run_all(work, args, rounds, loads)
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    workers = [int(x) for x in args.workers.split(",")]
    results = {name: {metric: float(np.median([r[name][metric] for r in rounds])) for metric in value}
               for name, value in rounds[0].items()}  # fmt: skip
    by_round = [ratios(r, workers) for r in rounds]
    record = {"benchmark": "stream", "quick": args.quick, "machine": machine(), "images": args.images,
              "batch_size": args.batch_size, "image_size": list(SIZE), "results": results, "results_by_round": rounds,
              "ratios": {key: spread([r[key] for r in by_round], loads=loads) for key in by_round[0]}}  # fmt: skip
    path = append_result("stream", record)
    if not args.quick:  # the figure shows the latest full run
        plot(results, FIGURE)
    for name in ("limit", "limit uint8", "limit reused", "limit uint8 reused"):
        lim = results[name]
        print(f"{name}: {lim['images_per_cpu_s']:,.0f} images/CPU-s ({lim['images_per_s']:,.0f} images/s)")
    for name, value in record["ratios"].items():
        print(f"{name:<40} {value['median']:8.2f}x [{value['min']:.2f}-{value['max']:.2f}]")
    print(f"appended to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
