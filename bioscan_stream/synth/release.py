"""Write a synthetic BIOSCAN-5M release in the official layout (the project's embedded default dataset).

Entry point of `bioscan_stream.synth` (called by `bioscan-stream synth`): `build_world` fixes every record,
the published partition rules (`partition.assign_partitions`) assign the 8 splits, then the rows are produced
in chunks into a temporary Arrow file that is memory-mapped, so peak memory stays bounded (the world's
integer arrays plus one chunk) whatever the sample count. From that table come the metadata CSV and JSON-LD
(`metadata.write_metadata`), the bounding-box TSV (`metadata.write_bbox`) and, optionally, the images
(`synth.images.write_images`). The images are drawn from each specimen's *true* taxonomy (the side columns
`true_order` .. `true_species`, see `records.true_taxonomy`), as a real unlabelled insect still looks like its
species; the metadata keeps the masked labels. Everything depends only on `seed`.

Partitioning sees only the species-labelled records: the others are `pretrain` by the rules, and no barcode
of an unlabelled record equals (even with leading/trailing N stripped) a labelled record's barcode, because
all records of a barcode share one label depth and distinct haplotypes differ at signature sites inside every
read (see `barcodes.py`). So the result is the rules' result on the whole table, at a tenth of the memory.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from tqdm.auto import tqdm

from bioscan_stream.constants import BBOX_COLUMNS, COLUMNS, SPLITS
from bioscan_stream.metadata import write_bbox, write_metadata
from bioscan_stream.partition import assign_partitions
from bioscan_stream.synth.images import IMAGE_COLUMNS, write_images
from bioscan_stream.synth.records import TRUE_COLUMNS, TRUE_RANKS, World, build_world, record_table, true_taxonomy

__all__ = ["write_release", "partition_world", "iter_release_tables", "spool_rows", "image_table"]

#: Rows per generated chunk. NOTE: ~90 MB of Arrow per 100k rows (barcodes dominate).
_CHUNK_ROWS = 100_000


def partition_world(world: World, *, seed: int = 0) -> np.ndarray:
    """Split name per record (row order), by the published rules run on the species-labelled records."""
    labelled = np.flatnonzero(world.hap_depth[world.rec_hap] == 6)
    splits = np.full(world.samples, SPLITS.index("pretrain"), dtype=np.int8)
    if len(labelled):
        table = record_table(world, labelled).select(["processid", "genus", "species", "dna_barcode"])
        assigned = assign_partitions(table, seed=seed).column("split")
        splits[labelled] = pc.index_in(assigned, value_set=pa.array(SPLITS)).to_numpy(zero_copy_only=False)
    return np.asarray(SPLITS, dtype=object)[splits]


def iter_release_tables(world: World, splits: np.ndarray, *, chunk_rows: int = _CHUNK_ROWS) -> Iterator[pa.Table]:
    """Yield the release's rows as Arrow tables of `chunk_rows` rows: 23 columns, the true box, then the true
    taxonomy as `records.TRUE_COLUMNS`."""
    for start in range(0, world.samples, chunk_rows):
        rows = np.arange(start, min(start + chunk_rows, world.samples))
        table = record_table(world, rows, splits[rows])
        for name, column in zip(TRUE_COLUMNS, true_taxonomy(world, rows).columns, strict=True):
            table = table.append_column(name, column)
        yield table


def image_table(table: pa.Table) -> pa.Table:
    """The columns `write_images` reads, with the true taxonomy in place of the masked labels (no copy)."""
    true = dict(zip(TRUE_RANKS, TRUE_COLUMNS, strict=True))
    return pa.table({c: table[true.get(c, c)] for c in IMAGE_COLUMNS})


def spool_rows(world: World, splits: np.ndarray, directory: Path) -> pa.Table:
    """All rows through a temporary Arrow file, returned memory-mapped (the file is unlinked at once)."""
    path = directory / f".synth-{os.getpid()}.arrow"
    try:
        with tqdm(total=world.samples, desc="synth metadata", unit="rows") as bar:
            writer = None
            for table in iter_release_tables(world, splits):
                writer = writer or pa.ipc.new_file(str(path), table.schema)
                writer.write_table(table)
                bar.update(table.num_rows)
            assert writer is not None  # samples >= 1
            writer.close()
        return pa.ipc.open_file(pa.memory_map(str(path))).read_all()
    finally:
        path.unlink(missing_ok=True)


def write_release(
    root: str | os.PathLike[str],
    *,
    samples: int,
    seed: int = 0,
    packages: Sequence[str] = ("cropped_256",),
    images: bool = True,
    zip: bool = False,
    workers: int | None = None,
) -> pa.Table:
    """Write a synthetic release of `samples` records under `root`; returns its table (memory-mapped).

    Writes `bioscan5m/metadata/csv/...csv`, the JSON-LD twin, `bioscan5m/metadata/BIOSCAN_5M_Insect_bbox.tsv`
    and, when `images`, the image `packages` as a tree (or the official zips with `zip=True`), rendered from the
    true taxonomy. The returned table has the 23 metadata columns plus `width_original`, `height_original`,
    `x0`, `y0`, `x1`, `y1` and the true names `true_order`, `true_family`, `true_genus`, `true_species`.
    Deterministic for a seed; rerunning overwrites atomically.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    world = build_world(samples, seed=seed)
    table = spool_rows(world, partition_world(world, seed=seed), root)
    write_metadata(table.select(list(COLUMNS)), root)
    write_bbox(table.select(list(BBOX_COLUMNS)), root)
    if images:
        write_images(root, image_table(table), packages=packages, zip=zip, workers=workers, seed=seed)
    return table
