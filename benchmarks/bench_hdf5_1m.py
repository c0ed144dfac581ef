"""How fast are images read from a BIOSCAN-1M HDF5 package through the project vs the 1M loader's per-item path?

The 1M repository's loader (zahrag/BIOSCAN-1M `bioscan_dataloader.BioScanLoader.load_image`, data_format
"hdf5") opens the HDF5 file on every item: `h5py.File(path)`, the `bioscan_dataset` group, `np.array(group[name])`,
`PIL.Image.open(BytesIO(...))`. The project's `ImageStore1M` opens it once per process and returns the stored
bytes. Both paths then run the same transform, the 1M loader's evaluation transform (Resize(256),
CenterCrop(224), ToTensor), and a bytes-only variant isolates the read. The package is written like the synthetic
1M release's (`write_release_1m`, HDF5 only), padded to `--images` entries by storing the rendered JPEGs under
further names (an HDF5 group's lookup cost grows with its size; the real file holds 1,128,313). The variants
read the same random order, alternating every 50 reads (the box is shared with other agents, whose load drifts);
the median of the per-turn ratios is the result. Appends a JSON line to benchmarks/results/hdf5_1m.jsonl with the
1-minute load average.

    python benchmarks/bench_hdf5_1m.py                     # 20,000 entries, 2,000 reads per variant and turn
    python benchmarks/bench_hdf5_1m.py --images 100000 --reads 5000
    python benchmarks/bench_hdf5_1m.py --quick             # 5,000 entries, 500 reads: a smoke run
"""

from __future__ import annotations

import argparse
import io
import os
import random
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pyarrow as pa
from _results import append_result, spread
from PIL import Image

from bioscan_stream.release1m import HDF5_GROUP, ImageStore1M, hdf5_name_1m
from bioscan_stream.synth.release1m import write_release_1m

PACKAGE = "cropped_256"
#: Reads per variant before switching to the next (the variants alternate at this grain).
_BLOCK = 50


def build_package(root: Path, images: int, samples: int) -> tuple[Path, list[str]]:
    """A synthetic 1M release's HDF5 package (rendered JPEGs) padded to `images` entries; returns it and the names."""
    table = write_release_1m(root, samples=samples, seed=0, containers=("hdf5",), workers=2)
    path = root / "bioscan1m" / hdf5_name_1m(PACKAGE)
    names = table["image_file"].to_pylist()
    with h5py.File(path, "a") as handle:
        group = handle[HDF5_GROUP]
        rendered = [group[name][()] for name in names]
        for k in range(len(names), images):
            name = f"PAD{k:08d}-24.jpg"
            group.create_dataset(name, data=rendered[k % len(rendered)], track_times=False)
            names.append(name)
    return path, names


def _eval_transform() -> Callable[[Image.Image], Any]:
    from torchvision import transforms

    return transforms.Compose([transforms.Resize(256), transforms.CenterCrop(224), transforms.ToTensor()])


def official_per_item(path: Path) -> Callable[[str], Image.Image]:
    """The 1M loader's per-item HDF5 read: the file is opened for every image."""

    def load(name: str) -> Image.Image:
        hdf5 = h5py.File(path, "r")
        if HDF5_GROUP in hdf5.keys():
            hdf5 = hdf5[HDF5_GROUP]
        data = np.array(hdf5[name])
        return Image.open(io.BytesIO(data))

    return load


def project_store(root: Path, names: list[str]) -> Callable[[str], Image.Image]:
    """`ImageStore1M` over the HDF5 package (opened once), read by file name."""
    records = pa.table({"processid": names, "chunk_number": [1] * len(names), "image_file": names})
    store = ImageStore1M.open(root, PACKAGE, records=records, container="hdf5")

    def load(name: str) -> Image.Image:
        return Image.open(io.BytesIO(store.read(name)))

    return load


def _seconds(
    load: Callable[[str], Image.Image], names: list[str], transform: Callable[[Image.Image], Any] | None
) -> float:
    start = time.perf_counter()
    for name in names:
        image = load(name)
        if transform is not None:
            transform(image.convert("RGB"))
        else:
            image.close()
    return time.perf_counter() - start


def _turn(
    variants: dict[str, Callable[[str], Image.Image]], order: list[str], transform: Callable[[Image.Image], Any]
) -> dict[str, float]:
    """Images/s of every variant over `order`, interleaved in blocks of `_BLOCK` reads (ABBA order per block), so
    the other agents' load drifts over all variants alike."""
    seconds: dict[str, float] = {}
    runs = [
        (f"{name}{suffix}", load, t)
        for name, load in variants.items()
        for suffix, t in (("", transform), ("_bytes_only", None))
    ]
    for b, start in enumerate(range(0, len(order), _BLOCK)):
        block = order[start : start + _BLOCK]
        for key, load, t in runs if b % 2 == 0 else runs[::-1]:
            seconds[key] = seconds.get(key, 0.0) + _seconds(load, block, t)
    return {key: len(order) / s for key, s in seconds.items()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=20_000, help="entries in the HDF5 group")
    parser.add_argument("--samples", type=int, default=4_000, help="5M world size of the rendered images")
    parser.add_argument("--reads", type=int, default=2_000, help="reads per variant and turn")
    parser.add_argument("--turns", type=int, default=3, help="turns (>= 3: median and spread of per-turn ratios)")
    parser.add_argument("--quick", action="store_true", help="5,000 entries, 500 reads per turn: a smoke run")
    args = parser.parse_args(argv)
    if args.quick:
        args.images, args.samples, args.reads = 5_000, 1_000, 500
    import torch

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="bench-hdf5-1m-") as tmp:
        root = Path(tmp)
        path, names = build_package(root, args.images, args.samples)
        variants = {"official_per_item": official_per_item(path), "project_store": project_store(root, names)}
        transform = _eval_transform()
        rates: dict[str, list[float]] = {}
        rng = random.Random(0)
        for turn in range(args.turns):
            order = rng.sample(names, min(args.reads, len(names)))
            for key, rate in _turn(variants, order, transform).items():
                rates.setdefault(key, []).append(rate)
            print(f"turn {turn}: " + ", ".join(f"{k} {v[-1]:,.0f}/s" for k, v in rates.items()))
    best = {k: max(v) for k, v in rates.items()}
    ratios = {
        "transform": [p / o for p, o in zip(rates["project_store"], rates["official_per_item"], strict=True)],
        "bytes_only": [
            p / o for p, o in zip(rates["project_store_bytes_only"], rates["official_per_item_bytes_only"], strict=True)
        ],
    }
    ratio, ratio_bytes = (float(np.median(ratios[k])) for k in ("transform", "bytes_only"))
    print(f"images/s with the 1M eval transform: project {best['project_store']:,.0f} vs official per-item "
          f"{best['official_per_item']:,.0f} (best turns); median per-turn ratio {ratio:.2f}x; read only: "
          f"{ratio_bytes:.2f}x (load {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)")  # fmt: skip
    append_result(
        "hdf5_1m",
        {
            "quick": args.quick, "images": args.images, "reads": args.reads, "turns": args.turns,
            "transform": "Resize(256), CenterCrop(224), ToTensor (1M eval)",
            "images_per_s_best": best, "images_per_s_all": rates,
            "ratio_project_vs_official_median": round(ratio, 3), "ratio_bytes_only_median": round(ratio_bytes, 3),
            "ratio_project_vs_official": spread(ratios["transform"]),
            "ratios_per_turn": ratios,
        },
    )  # fmt: skip


if __name__ == "__main__":
    main()
