"""Write the image packages of a synthetic release, in parallel, as an extracted tree or as the official zips.

Part of the synthetic release (`synth.release.write_release` calls `write_images` after the metadata):
each record's photo is rendered by `synth.specimen` from its taxonomy, true box and mask pixel count, and
`cropped` / `cropped_256` / `original_256` are derived with the published procedure (`bioscan_stream.crop`)
from the true box, so crop models get exact ground truth. When only `*_256` packages are asked for, the
photo is rendered straight at the final resolution through the crop window (`specimen.render_view`):
the same geometry as cropping a full original, at a tenth of the pixels.

Output goes to `root/<layout.image_relpath(...)>` (one atomic file per image; existing files are kept, so
a rerun only fills gaps) or, with `zip=True`, to the official zip packages (`layout.zip_package_names`;
stored, not compressed, like the release's JPEGs; member names = relative paths; renamed into place when
complete). Records are processed in chunks by a process pool with a bounded number of chunks in flight
(memory does not grow with N), and every image's pixels depend only on (`seed`, processid), so the
output is identical for any number of workers.
"""

from __future__ import annotations

import hashlib
import io
import os
import zipfile
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pyarrow as pa
from PIL import Image
from tqdm import tqdm

from bioscan_stream._atomic import atomic_path
from bioscan_stream.constants import ORIGINAL_SIZE, PACKAGES
from bioscan_stream.crop import crop_from_box, crop_geometry, resize_short_side, short_side_size
from bioscan_stream.layout import image_relpath, zip_name_for, zip_package_names
from bioscan_stream.synth.specimen import render_original, render_view
from bioscan_stream.synth.well import Viewport

#: Columns `write_images` reads from the table (the metadata columns plus the true box of the bbox table).
IMAGE_COLUMNS: tuple[str, ...] = (
    "processid",
    "split",
    "order",
    "family",
    "genus",
    "species",
    "image_measurement_value",
    "x0",
    "y0",
    "x1",
    "y1",
)
#: The release's JPEGs are quality ~90 (341x256 cropped_256 files are ~29 KB).
JPEG_QUALITY = 90
#: Records per pool task: large enough to amortise inter-process traffic, small enough for a smooth bar.
_CHUNK = 32
#: Packages that `*_PER_PARTITION` zips exist for (the others ship as whole, multi-part zips).
_PER_PARTITION = ("original_256", "cropped_256")
#: Date of every zip member, so that zips are byte-identical across runs.
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)

T = TypeVar("T")
R = TypeVar("R")


def record_seed(seed: int, processid: str) -> int:
    """The render seed of one record: a hash of the release seed and the processid (worker-independent)."""
    return int.from_bytes(hashlib.blake2b(f"{seed}\x1f{processid}".encode(), digest_size=8).digest(), "little")


def _box(record: Mapping[str, Any]) -> tuple[int, int, int, int]:
    """The record's true box, checked: a bad box is a generator bug, reported with the processid."""
    try:
        x0, y0, x1, y1 = (round(float(record[k])) for k in ("x0", "y0", "x1", "y1"))
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"record {record.get('processid')!r}: no usable box x0, y0, x1, y1 ({exc})") from exc
    box = (x0, y0, x1, y1)
    if not (0 <= x0 < x1 <= ORIGINAL_SIZE[0] and 0 <= y0 < y1 <= ORIGINAL_SIZE[1]):
        raise ValueError(f"record {record.get('processid')!r}: box {box} is empty or outside the 1024x768 original")
    return box


def _crop_256_view(record: Mapping[str, Any], seed: int) -> Image.Image:
    """`cropped_256` rendered directly through the crop window (geometry of crop -> resize, padding included).

    Where the window is smaller than 256 pixels high, the photo is rendered at original resolution and
    upsampled, so tiny specimens are as soft as in the real `cropped_256`.
    """
    geometry = crop_geometry(_box(record))
    width, height = short_side_size(geometry.size)
    if geometry.rotate:
        width, height = height, width
    window = geometry.box
    native = (window[2] - window[0], window[3] - window[1])
    if native[1] < height:
        image = render_view(record, seed=seed, viewport=Viewport(window, native))
        image = image.resize((width, height), Image.Resampling.BICUBIC)
    else:
        image = render_view(record, seed=seed, viewport=Viewport(window, (width, height)))
    return image.transpose(Image.Transpose.ROTATE_90) if geometry.rotate else image


def _exact(packages: Sequence[str]) -> bool:
    """Whether a run renders full originals (and derives all packages from them, exactly as the release)."""
    return "original_full" in packages or "cropped" in packages


def render_packages(
    record: Mapping[str, Any], packages: Sequence[str], *, seed: int, exact: bool | None = None
) -> dict[str, Image.Image]:
    """The images of one record for each requested package.

    With `exact` (default: `original_full` or `cropped` requested), everything is derived from the full
    original exactly as the release was; otherwise each `*_256` image is rendered directly at its size.
    """
    seed = record_seed(seed, str(record["processid"]))
    box = _box(record)
    if _exact(packages) if exact is None else exact:
        original = render_original(record, seed=seed)
        cropped = crop_from_box(original, box)
        derived = {
            "original_full": original,
            "cropped": cropped,
            "cropped_256": resize_short_side(cropped),
            "original_256": resize_short_side(original),
        }
        return {p: derived[p] for p in packages}
    out = {}
    if "original_256" in packages:
        full = Viewport((0.0, 0.0, float(ORIGINAL_SIZE[0]), float(ORIGINAL_SIZE[1])), short_side_size(ORIGINAL_SIZE))
        out["original_256"] = render_view(record, seed=seed, viewport=full)
    if "cropped_256" in packages:
        out["cropped_256"] = _crop_256_view(record, seed)
    return out


def encode_jpeg(image: Image.Image) -> bytes:
    """JPEG bytes at the release's quality."""
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=JPEG_QUALITY)
    return buffer.getvalue()


@dataclass(frozen=True)
class _Task:
    """One chunk of records for a pool worker; `root` set = write files there, else return the bytes."""

    records: list[dict[str, Any]]
    packages: tuple[str, ...]
    seed: int
    root: str | None


def _run_task(task: _Task) -> list[tuple[str, str, dict[str, bytes]]]:
    """Render a chunk: (processid, split, {package: JPEG bytes}) per record; tree mode writes each missing
    file atomically instead and returns no bytes."""
    results: list[tuple[str, str, dict[str, bytes]]] = []
    for record in task.records:
        if task.root is None:
            images = render_packages(record, task.packages, seed=task.seed)
            results.append((record["processid"], record["split"], {p: encode_jpeg(images[p]) for p in task.packages}))
            continue
        paths = {p: Path(task.root, image_relpath(record["processid"], record["split"], p)) for p in task.packages}
        missing = tuple(p for p, path in paths.items() if not path.is_file())
        if missing:  # a gap is filled the way the whole run renders, so reruns give the same bytes
            images = render_packages(record, missing, seed=task.seed, exact=_exact(task.packages))
            for package, image in images.items():
                with atomic_path(paths[package]) as tmp:
                    tmp.write_bytes(encode_jpeg(image))
        results.append((record["processid"], record["split"], {}))
    return results


def _ordered_map(fn: Callable[[T], R], items: Iterable[T], *, workers: int) -> Iterator[R]:
    """`map(fn, items)` over a process pool, results in input order, at most 2 * workers tasks in flight."""
    if workers <= 1:
        yield from map(fn, items)
        return
    with ProcessPoolExecutor(max_workers=workers) as pool:
        pending: deque[Future[R]] = deque()
        for item in items:
            pending.append(pool.submit(fn, item))
            if len(pending) >= 2 * workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def _tasks(table: pa.Table, packages: tuple[str, ...], seed: int, root: str | None) -> Iterator[_Task]:
    missing = [c for c in IMAGE_COLUMNS if c not in table.column_names]
    if missing:
        raise ValueError(f"write_images needs columns {', '.join(missing)} (metadata plus the true box)")
    for batch in table.select(list(IMAGE_COLUMNS)).to_batches(max_chunksize=_CHUNK):
        yield _Task(batch.to_pylist(), packages, seed, root)


def _check_packages(packages: Sequence[str]) -> tuple[str, ...]:
    unknown = [p for p in packages if p not in PACKAGES]
    if unknown or not packages:
        raise ValueError(f"unknown or no image packages {list(packages)}; expected some of {', '.join(PACKAGES)}")
    return tuple(dict.fromkeys(packages))


def _write_tree(root: Path, table: pa.Table, packages: tuple[str, ...], *, workers: int, seed: int) -> None:
    results = _ordered_map(_run_task, _tasks(table, packages, seed, str(root)), workers=workers)
    with tqdm(total=table.num_rows, desc=f"images {','.join(packages)}", unit="img") as bar:
        for chunk in results:
            bar.update(len(chunk))


def _zip_names(package: str) -> tuple[str, ...]:
    return zip_package_names(package, per_partition=package in _PER_PARTITION)


def _write_zips(root: Path, table: pa.Table, packages: tuple[str, ...], *, workers: int, seed: int) -> None:
    """All zips of the packages in one pass; each zip is written to a temporary name and renamed when done."""
    todo = tuple(p for p in packages if not all((root / name).is_file() for name in _zip_names(p)))
    if not todo:
        return
    results = _ordered_map(_run_task, _tasks(table, todo, seed, None), workers=workers)
    with ExitStack() as stack:
        handles = {
            name: stack.enter_context(zipfile.ZipFile(stack.enter_context(atomic_path(root / name)), "w"))
            for package in todo
            for name in _zip_names(package)
        }
        with tqdm(total=table.num_rows, desc=f"zips {','.join(todo)}", unit="img") as bar:
            for chunk in results:
                for processid, split, images in chunk:
                    for package, data in images.items():
                        _add_member(handles, processid, split, package, data)
                bar.update(len(chunk))


def _add_member(handles: Mapping[str, zipfile.ZipFile], processid: str, split: str, package: str, data: bytes) -> None:
    """Store one JPEG in the zip that holds it, under its release-relative path, with a fixed date."""
    name = zip_name_for(processid, split, package, per_partition=package in _PER_PARTITION)
    info = zipfile.ZipInfo(image_relpath(processid, split, package), date_time=_ZIP_DATE)
    info.compress_type = zipfile.ZIP_STORED
    info.external_attr = 0o644 << 16
    handles[name].writestr(info, data)


def write_images(
    root: str | os.PathLike[str],
    table: pa.Table,
    *,
    packages: Sequence[str] = ("cropped_256",),
    zip: bool = False,
    workers: int | None = None,
    seed: int = 0,
) -> None:
    """Render and write every record's images for `packages` under `root` (tree) or as the official zips.

    Args:
        root: release root; images go to `root/bioscan5m/images/...` or `root/BIOSCAN_5M_<package>*.zip`.
        table: records with `IMAGE_COLUMNS` (metadata columns plus the true box x0, y0, x1, y1).
        packages: any of `original_full`, `cropped`, `original_256`, `cropped_256`.
        zip: write the official zip packages instead of an extracted tree.
        workers: processes (default: all cores); the output does not depend on it.
        seed: release seed; each image depends only on (seed, processid).
    """
    chosen = _check_packages(packages)
    workers = (os.cpu_count() or 1) if workers is None else max(1, workers)
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    writer = _write_zips if zip else _write_tree
    writer(root, table, chosen, workers=workers, seed=seed)
