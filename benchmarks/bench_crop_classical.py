"""How many photos per second per core does the classical detector box, next to just decoding them?

Data: a synthetic release (`original_256`, 341x256, and `original_full`, 1024x768, of the same records) and,
when ../shared is present, the 18 real full-resolution fixture photos (2880x2160). JPEG bytes are read into
memory first; each input set is then timed in turns (decode, detect, decode, detect, ...; best of `--repeats`),
on one thread (BLAS pinned to one thread before numpy loads), so images/s per core = images / CPU seconds.

- baseline: decoding the JPEGs to RGB arrays (PIL), the least any crop job does per image;
- detector: `zoo.create_detector("classical")` on the decoded arrays (its own reduction to the working height
  included); reported as images/s per core and as the ratio detect time / decode time.

Target: >= 50 images/s per core from 341x256 inputs (issue 12). The rate from full-resolution originals is
stated, not targeted. The real photos' boxes (red) and their `bioscan5m` crop windows (blue) are drawn on an
overlay contact sheet, benchmarks/figures/crop_classical_real.png, for judging by eye. The synthetic boxes'
mean IoU with the true boxes is recorded with the speed, so a faster setting that loses accuracy shows.
Appends one JSON line to benchmarks/results/crop_classical.jsonl. The box is shared with other sessions: the
load average is recorded at the start and end. The dashboard's headline is the detector's per-core rate from
341x256 as the median and spread of the `--repeats` turns. `--quick`: 60 synthetic records.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):  # one core: set before numpy loads
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import functools  # noqa: E402
import io  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
from _results import append_result, spread  # noqa: E402
from PIL import Image, ImageDraw  # noqa: E402

from bioscan_stream.crop import crop_geometry  # noqa: E402
from bioscan_stream.layout import image_relpath  # noqa: E402
from bioscan_stream.synth.release import write_release  # noqa: E402
from zoo.detectors import create_detector  # noqa: E402

FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "real_images"
FIGURE = Path(__file__).resolve().parent / "figures" / "crop_classical_real.png"


def decode(blobs: list[bytes]) -> list[np.ndarray]:
    """The baseline: JPEG bytes -> RGB uint8 arrays."""
    return [np.asarray(Image.open(io.BytesIO(blob)).convert("RGB")) for blob in blobs]


def timed(fn: Callable[[], Any]) -> tuple[float, float, Any]:
    """(wall seconds, CPU seconds of this process, result) of one call."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn()
    return time.perf_counter() - wall, time.process_time() - cpu, result


def measure(name: str, blobs: list[bytes], detector: Any, repeats: int) -> dict[str, Any]:
    """Decode and detect `blobs` in turns; best CPU time of each over `repeats`, and the spread of the detector's."""
    decode_cpu, detect_cpu, decode_wall, detect_wall = [], [], [], []
    images = decode(blobs)
    detections = []
    for _ in range(repeats):
        wall, cpu, images = timed(lambda: decode(blobs))
        decode_wall.append(wall)
        decode_cpu.append(cpu)
        wall, cpu, detections = timed(functools.partial(detector.detect, images))
        detect_wall.append(wall)
        detect_cpu.append(cpu)
    n = len(blobs)
    record = {
        "input": name,
        "images": n,
        "size": list(images[0].shape[1::-1]),
        "decode_images_per_s_per_core": round(n / min(decode_cpu), 1),
        "detect_images_per_s_per_core": round(n / min(detect_cpu), 1),
        "detect_images_per_s_per_core_runs": spread([round(n / cpu, 1) for cpu in detect_cpu]),
        "detect_images_per_s_wall": round(n / min(detect_wall), 1),
        "detect_over_decode_time": round(min(detect_cpu) / min(decode_cpu), 2),
        "rejected": sum(d.box is None for d in detections),
    }
    print(
        f"{name} ({n} x {record['size'][0]}x{record['size'][1]}): detect {record['detect_images_per_s_per_core']} "
        f"img/s/core (wall {record['detect_images_per_s_wall']}), decode {record['decode_images_per_s_per_core']} "
        f"img/s/core -> detect/decode time {record['detect_over_decode_time']}x",
        flush=True,
    )
    return record | {"_detections": detections}


def mean_iou(detections: list[Any], truth: list[tuple[float, ...]], scale: tuple[float, float]) -> float:
    """Mean IoU of detected boxes (times `scale` (x, y): to original pixels) with the true boxes; a reject is 0."""
    ious = []
    for detection, true in zip(detections, truth, strict=True):
        if detection.box is None:
            ious.append(0.0)
            continue
        box = [v * scale[i % 2] for i, v in enumerate(detection.box)]
        width = max(0.0, min(box[2], true[2]) - max(box[0], true[0]))
        height = max(0.0, min(box[3], true[3]) - max(box[1], true[1]))
        union = (box[2] - box[0]) * (box[3] - box[1]) + (true[2] - true[0]) * (true[3] - true[1]) - width * height
        ious.append(width * height / union)
    return round(float(np.mean(ious)), 4)


def synthetic_blobs(root: Path, samples: int, seed: int) -> tuple[dict[str, list[bytes]], list[tuple[float, ...]]]:
    """JPEG bytes of `original_256` and `original_full` for one synthetic release, and the true boxes."""
    table = write_release(root, samples=samples, seed=seed, packages=("original_full", "original_256"), workers=1)
    rows = table.select(["processid", "split", "x0", "y0", "x1", "y1"]).to_pylist()
    blobs: dict[str, list[bytes]] = {"original_256": [], "original_full": []}
    truth = []
    for row in rows:
        paths = {p: root / image_relpath(row["processid"], row["split"], p) for p in blobs}
        if all(path.exists() for path in paths.values()):
            for package, path in paths.items():
                blobs[package].append(path.read_bytes())
            truth.append((row["x0"], row["y0"], row["x1"], row["y1"]))
    return blobs, truth


def overlay_sheet(paths: list[Path], detections: list[Any], out: Path, *, columns: int = 3, width: int = 480) -> None:
    """Each photo downscaled to `width`, its raw box in red, its `bioscan5m` crop window in blue, name and score."""
    tiles = []
    for path, detection in zip(paths, detections, strict=True):
        image = Image.open(path).convert("RGB")
        scale = width / image.width
        tile = image.resize((width, round(image.height * scale)), Image.Resampling.BILINEAR)
        draw = ImageDraw.Draw(tile)
        label = f"{path.stem}  score {detection.score:.2f}"
        if detection.box is not None:
            window = crop_geometry(detection.box).box
            draw.rectangle([v * scale for v in window], outline=(40, 90, 255), width=2)
            draw.rectangle([v * scale for v in detection.box], outline=(255, 0, 0), width=3)
        else:
            label += f"  rejected: {detection.reason}"
        draw.rectangle((0, 0, 8 + 7 * len(label), 16), fill=(255, 255, 255))
        draw.text((4, 2), label, fill=(0, 0, 0))
        tiles.append(tile)
    rows = -(-len(tiles) // columns)
    sheet = Image.new("RGB", (columns * width, rows * tiles[0].height), (255, 255, 255))
    for i, tile in enumerate(tiles):
        sheet.paste(tile, ((i % columns) * width, (i // columns) * tile.height))
    out.parent.mkdir(parents=True, exist_ok=True)
    sheet.quantize(colors=256, method=Image.Quantize.FASTOCTREE).save(out, optimize=True)  # keeps greens, ~0.7 MB


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=200, help="synthetic records (%(default)s)")
    parser.add_argument("--repeats", type=int, default=3, help="timed turns per input set (%(default)s)")
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--workdir", default=None, help="scratch folder (default: a temporary one)")
    parser.add_argument("--quick", action="store_true", help="60 synthetic records")
    args = parser.parse_args(argv)
    samples = 60 if args.quick else args.samples
    detector = create_detector("classical")
    record: dict[str, Any] = {"detector": detector.fingerprint(), "quick": args.quick}
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        blobs, truth = synthetic_blobs(Path(tmp), samples, args.seed)
    results = []
    for package, scale in (("original_256", (1024 / 341, 768 / 256)), ("original_full", (1.0, 1.0))):
        result = measure(package, blobs[package], detector, args.repeats)
        result["synthetic_mean_iou"] = mean_iou(result.pop("_detections"), truth, scale)
        print(f"  synthetic mean IoU vs true boxes: {result['synthetic_mean_iou']}", flush=True)
        results.append(result)
    if FIXTURES.is_dir():
        paths = sorted(FIXTURES.glob("*.jpg"))
        result = measure("real_fixtures_full", [path.read_bytes() for path in paths], detector, args.repeats)
        overlay_sheet(paths, result.pop("_detections"), FIGURE)
        results.append(result)
        print(f"  overlay contact sheet -> {FIGURE}", flush=True)
    record["results"] = results
    target = results[0]["detect_images_per_s_per_core"]
    record["target_50_per_core_from_341x256"] = target >= 50
    print(f"341x256: {target} img/s/core (target >= 50: {'met' if target >= 50 else 'MISSED'})")
    print(f"-> {append_result('crop_classical', record)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
