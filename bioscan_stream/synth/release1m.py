"""Write a synthetic BIOSCAN-1M release in the official layout, drawn from the synthetic BIOSCAN-5M records.

Every 5M record that was in 1M carries `index_bioscan_1M_insect`; the synthetic 1M release is exactly those
records of the synthetic 5M world of the same `(samples, seed)`, in that index order, so the same specimens
(processid, barcode, labels, images) appear in both. Columns map as the 1M README lists them (`taxon` ->
`name`, `dna_bin` -> `uri`, `dna_barcode` -> `nucraw`; `tribe` and `subspecies`, absent from 5M, are
`not_classified`, and so are 5M's `unassigned <Family>` subfamily fillers, which 1M leaves to its loader);
`chunk_number` cuts the rows into parts of `part_size` (10,000 in the release); the six partition columns
come from the 1M sampling rules (`partition1m`), with the medium / small subset sizes scaled to the table
(`subset_sizes`).

Images are rendered exactly as the 5M writer renders them (`synth.images`, from the true taxonomy), and
written to every requested container with the same bytes: the tree `bioscan1m/images/<package>/part<N>/<file>`,
the zips (`<package>.zip` for the `*_256` packages, the part zips for the full-size ones; members
`bioscan/images/<package>/part<N>/<file>`, which the official downloader extracts into `bioscan1m/`) and the
HDF5 file `bioscan1m/<package>.hdf5` (group `bioscan_dataset`, one 1-D uint8 dataset per file name).
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Iterator, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from tqdm.auto import tqdm

from bioscan_stream._atomic import atomic_path
from bioscan_stream.partition1m import assign_partitions_1m, subset_sizes
from bioscan_stream.release1m import (
    CONTAINERS,
    HDF5_GROUP,
    IMAGES_DIR_1M,
    PACKAGES_256,
    PART_SIZE,
    hdf5_name_1m,
    write_metadata_1m,
    zip_names_1m,
)
from bioscan_stream.synth.images import _ZIP_DATE, _ordered_map, _run_task, _tasks
from bioscan_stream.synth.records import TRUE_COLUMNS, World, build_world, record_table, true_taxonomy
from bioscan_stream.synth.release import image_table

__all__ = ["write_release_1m", "records_1m", "COPYRIGHT"]

#: Copyright columns of every record (the seed README's copyright section).
COPYRIGHT: dict[str, str] = {
    "copyright_license": "CC BY-NC-SA 4.0",
    "copyright_holder": "CBG Photography Group",
    "copyright_institution": "Centre for Biodiversity Genomics",
    "copyright_contact": "collectionsBIO@gmail.com",
    "photographer": "CBG Robotic Imager",
    "author": "CBG Robotic Imager",
}
#: 5M column -> 1M column, for the columns the two releases share.
_SHARED = {"sampleid": "sampleid", "processid": "processid", "dna_bin": "uri", "taxon": "name", "phylum": "phylum",
           "class": "class", "order": "order", "family": "family", "subfamily": "subfamily", "genus": "genus",
           "species": "species", "dna_barcode": "nucraw"}  # fmt: skip


def _rows_1m(world: World) -> np.ndarray:
    """World rows that are in 1M, in `index_bioscan_1M_insect` order (the 1M row order)."""
    rows = np.flatnonzero(world.rec_1m >= 0)
    return rows[np.argsort(world.rec_1m[rows], kind="stable")]


def records_1m(world: World, *, seed: int = 0, part_size: int = PART_SIZE) -> tuple[pa.Table, pa.Table]:
    """(the 1M metadata table with its partitions, the 5M rows of the same records with the true taxonomy)."""
    rows = _rows_1m(world)
    five = record_table(world, rows)
    for name, column in zip(TRUE_COLUMNS, true_taxonomy(world, rows).columns, strict=True):
        five = five.append_column(name, column)
    n = len(rows)
    columns: dict[str, Any] = {new: five[old] for old, new in _SHARED.items()}
    unassigned = pc.fill_null(pc.starts_with(columns["subfamily"], "unassigned "), False)
    columns["subfamily"] = pc.if_else(unassigned, pa.scalar(None, pa.string()), columns["subfamily"])
    columns["tribe"] = columns["subspecies"] = pa.nulls(n, pa.string())
    columns["image_file"] = pa.array([f"{p}.jpg" for p in five["processid"].to_pylist()], pa.string())
    columns["chunk_number"] = pa.array(np.arange(n, dtype=np.int64) // part_size + 1)
    columns.update({name: pa.array([value] * n, pa.string()) for name, value in COPYRIGHT.items()})
    medium, small = subset_sizes(n)
    table = assign_partitions_1m(pa.table(columns), seed=seed, medium=medium, small=small)
    return table, five


def _rendered(five: pa.Table, packages: tuple[str, ...], seed: int, workers: int) -> Iterator[dict[str, bytes]]:
    """Per record (row order), its JPEG bytes per package, rendered as the 5M writer renders them."""
    for chunk in _ordered_map(_run_task, _tasks(image_table(five), packages, seed, None), workers=workers):
        for _, _, images in chunk:
            yield images


def _member(package: str, chunk: int, image_file: str) -> str:
    return f"bioscan/images/{package}/part{chunk}/{image_file}"


def _write_images(
    root: Path, table: pa.Table, five: pa.Table, packages: tuple[str, ...], containers: tuple[str, ...], *,
    seed: int, workers: int,
) -> None:  # fmt: skip
    """Every image into every container (tree files, zips, HDF5), each file committed atomically."""
    import h5py

    with ExitStack() as stack:
        zips: dict[str, zipfile.ZipFile] = {}
        groups: dict[str, Any] = {}
        for package in packages:
            if "zip" in containers and package in PACKAGES_256:  # part zips open when their first image comes
                name = zip_names_1m(package)[0]
                zips[name] = stack.enter_context(
                    zipfile.ZipFile(stack.enter_context(atomic_path(root / "bioscan1m" / name)), "w")
                )
            if "hdf5" in containers and package in PACKAGES_256:
                tmp = stack.enter_context(atomic_path(root / "bioscan1m" / hdf5_name_1m(package)))
                groups[package] = stack.enter_context(h5py.File(tmp, "w", track_order=True)).create_group(HDF5_GROUP)
        records = zip(table["chunk_number"].to_pylist(), table["image_file"].to_pylist(), strict=True)
        rendered = _rendered(five, packages, seed, workers)
        for (chunk, image_file), images in tqdm(
            zip(records, rendered, strict=True), total=table.num_rows, desc="1M images"
        ):
            for package, data in images.items():
                if "tree" in containers:
                    with atomic_path(root / IMAGES_DIR_1M / package / f"part{chunk}" / image_file) as tmp:
                        tmp.write_bytes(data)
                if "zip" in containers:
                    name = zip_names_1m(package)[0 if package in PACKAGES_256 else chunk - 1]
                    if name not in zips:
                        path = stack.enter_context(atomic_path(root / "bioscan1m" / name))
                        zips[name] = stack.enter_context(zipfile.ZipFile(path, "w"))
                    info = zipfile.ZipInfo(_member(package, chunk, image_file), date_time=_ZIP_DATE)
                    info.external_attr = 0o644 << 16
                    zips[name].writestr(info, data)
                if package in groups:
                    groups[package].create_dataset(image_file, data=np.frombuffer(data, np.uint8), track_times=False)


def write_release_1m(
    root: str | os.PathLike[str],
    *,
    samples: int,
    seed: int = 0,
    packages: Sequence[str] = ("cropped_256",),
    containers: Sequence[str] = CONTAINERS,
    images: bool = True,
    part_size: int = PART_SIZE,
    workers: int | None = None,
) -> pa.Table:
    """Write the 1M release of the synthetic 5M world of `(samples, seed)` under `root`; returns its table.

    The table has the 28 columns with missing labels as null (the files write them as `not_classified`);
    about a fifth of the 5M records are in 1M. `containers`: any of "tree", "zip", "hdf5" (HDF5 only for
    the `*_256` packages).
    """
    unknown = [c for c in containers if c not in CONTAINERS]
    if unknown:
        raise ValueError(f"unknown container(s) {unknown}; expected some of {CONTAINERS}")
    root = Path(root)
    table, five = records_1m(build_world(samples, seed=seed), seed=seed, part_size=part_size)
    if table.num_rows == 0:
        raise ValueError(f"no record of a {samples}-record synthetic world is in BIOSCAN-1M: use more samples")
    write_metadata_1m(table, root)
    if images:
        workers = (os.cpu_count() or 1) if workers is None else max(1, workers)
        chosen = tuple(dict.fromkeys(packages))
        _write_images(root, table, five, chosen, tuple(containers), seed=seed, workers=workers)
    return table
