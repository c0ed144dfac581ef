"""Tiny releases for the shard and convert-job tests (`from helpers_release import make_release`).

Hand-made (fast, exact, every split), plus fault injection on any extracted release.
"""

from __future__ import annotations

import io
import random
import zipfile
from pathlib import Path

import pyarrow as pa
from PIL import Image

from bioscan_stream.constants import SPLITS
from bioscan_stream.layout import chunk_for, image_relpath
from bioscan_stream.metadata import read_metadata, write_metadata

PACKAGE = "cropped_256"
ORDERS = ("Diptera", "Hymenoptera", "Coleoptera", None)


def _jpeg(rng: random.Random, size: tuple[int, int] = (32, 24)) -> bytes:
    image = Image.new("RGB", size, tuple(rng.randrange(256) for _ in range(3)))
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=90)
    return out.getvalue()


def _records(n: int, rng: random.Random) -> list[dict[str, object]]:
    barcodes = ["".join(rng.choice("ACGT") for _ in range(60)) for _ in range(max(2, n // 2))]
    records = []
    for i in range(n):
        split = SPLITS[i % len(SPLITS)]
        pid = f"BIOUG{i:05d}-{rng.randrange(10, 25)}"
        order = ORDERS[i % len(ORDERS)]
        barcode = barcodes[i % len(barcodes)] + "N" * (i % 3)
        records.append(
            {
                "processid": pid, "sampleid": f"S{i}", "taxon": order, "phylum": "Arthropoda", "class": "Insecta",
                "order": order, "family": None, "species": f"sp{i % 5}" if i % 2 else None, "dna_bin": f"BOLD:A{i % 7}",
                "dna_barcode": barcode, "country": "Costa Rica", "coord-lat": 10.5 if i % 2 else None,
                "coord-lon": -84.1, "inferred_ranks": i % 3, "split": split, "chunk": chunk_for(pid, split) or None,
            }
        )  # fmt: skip
    return records


def make_release(root: Path, *, samples: int = 48, seed: int = 0, zipped: bool = False) -> pa.Table:
    """A release with `samples` records cycling over the 8 splits, 32x24 JPEGs, duplicate barcodes."""
    rng = random.Random(seed)
    table = pa.Table.from_pylist(_records(samples, rng))
    write_metadata(table, root, archive=zipped)
    images = {image_relpath(r["processid"], r["split"], PACKAGE): _jpeg(rng) for r in table.to_pylist()}
    if zipped:
        (root / "bioscan5m" / "metadata" / "csv").joinpath("BIOSCAN_5M_Insect_Dataset_metadata.csv").unlink()
        (root / "bioscan5m" / "metadata" / "jsonld").joinpath("BIOSCAN_5M_Insect_Dataset_metadata.jsonld").unlink()
        with zipfile.ZipFile(root / f"BIOSCAN_5M_{PACKAGE}.zip", "w", zipfile.ZIP_STORED) as zf:
            for relpath, data in images.items():
                zf.writestr(relpath, data)
    else:
        for relpath, data in images.items():
            (root / relpath).parent.mkdir(parents=True, exist_ok=True)
            (root / relpath).write_bytes(data)
    return read_metadata(root)


def inject_faults(root: Path) -> dict[str, str]:
    """Break four records of an extracted release, one per reason; returns reason -> processid."""
    table = read_metadata(root)
    rows = table.to_pylist()
    picks = {"missing_image": rows[1], "unreadable_image": rows[2], "bad_barcode": rows[3], "unknown_split": rows[4]}
    (root / image_relpath(picks["missing_image"]["processid"], picks["missing_image"]["split"], PACKAGE)).unlink()
    corrupt = root / image_relpath(picks["unreadable_image"]["processid"], picks["unreadable_image"]["split"], PACKAGE)
    corrupt.write_bytes(corrupt.read_bytes()[: len(corrupt.read_bytes()) // 2])
    picks["bad_barcode"]["dna_barcode"] = "ACGTX" + picks["bad_barcode"]["dna_barcode"][5:]
    picks["unknown_split"]["split"] = "bogus"
    write_metadata(pa.Table.from_pylist(rows, schema=table.schema), root)
    return {reason: str(row["processid"]) for reason, row in picks.items()}
