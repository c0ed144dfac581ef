"""Helpers of the zoo and DNA job tests (`from helpers_dna import make_barcodes`).

Synthetic barcodes with genus/species structure, tiny model settings, tiny shard sets, placeholder images
that let the converter turn a metadata-only synthetic release into shards.
"""

from __future__ import annotations

import io
import json
import random
from collections.abc import Iterable
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
from PIL import Image

from bioscan_stream.layout import image_relpath
from bioscan_stream.schema import COUNT, DNA, DNA_SPLIT, INDEX_FILE, TARGETS, shard_name
from bioscan_stream.shards.tarwriter import write_tar

#: A BarcodeBERT small enough for CPU tests: k=4, 2 layers, 2 heads, hidden 32, 120 nucleotides (30 tokens).
TINY = {"hidden_size": 32, "intermediate_size": 64, "max_len": 120}
TINY_NAME = "4-2-2"
PACKAGE = "cropped_256"

Barcodes = list[tuple[str, int, int]]


def make_barcodes(
    *, genera: int = 4, species: int = 3, per_species: int = 10, length: int = 120, seed: int = 0
) -> Barcodes:
    """(sequence, genus, species) triples: a random template per genus, ~8% of sites changed per species,
    1-2 point mutations per specimen (the nested structure of real COI barcodes, in miniature)."""
    rng = random.Random(seed)
    out = []
    for g in range(genera):
        genus_template = [rng.choice("ACGT") for _ in range(length)]
        for s in range(species):
            template = list(genus_template)
            for site in rng.sample(range(length), length // 12):
                template[site] = rng.choice("ACGT")
            for _ in range(per_species):
                seq = list(template)
                for site in rng.sample(range(length), 2):
                    seq[site] = rng.choice("ACGT")
                out.append(("".join(seq), g, g * species + s))
    return out


def write_shard_set(root: Path, splits: dict[str, list[dict[str, bytes | str]]], *, per_shard: int = 16) -> Path:
    """A shard-set folder with `index.json` (the layout the converter writes) from ready samples."""
    index: dict[str, dict[str, list[dict[str, object]]]] = {"splits": {}}
    for split, samples in splits.items():
        (root / split).mkdir(parents=True, exist_ok=True)
        entries = []
        for number, start in enumerate(range(0, len(samples), per_shard)):
            chunk = samples[start : start + per_shard]
            write_tar(root / split / shard_name(split, number), chunk)
            entries.append({"path": f"{split}/{shard_name(split, number)}", "samples": len(chunk)})
        index["splits"][split] = {"shards": entries}
    (root / INDEX_FILE).write_text(json.dumps(index))
    return root


def write_dna_shards(root: Path, seqs: list[str]) -> Path:
    """A DNA-only shard set (`dna.txt`, `count.txt`) of `seqs` under `root/dna`; returns its folder."""
    samples = [{"__key__": f"seq{i:05d}", DNA: s, COUNT: "1"} for i, s in enumerate(seqs)]
    return write_shard_set(root / "dna", {DNA_SPLIT: samples})


def write_probe_shards(root: Path, splits: dict[str, Barcodes]) -> Path:
    """An image-style shard set under `root/cropped_256` with only `dna.txt` and `targets.json` per sample."""
    samples = {
        split: [
            {"__key__": f"{split}{i:05d}", DNA: seq, TARGETS: json.dumps({"genus": g, "species": s})}
            for i, (seq, g, s) in enumerate(rows)
        ]
        for split, rows in splits.items()
    }
    return write_shard_set(root / PACKAGE, samples)


def with_stub_images(release: Path, root: Path, table: pa.Table, *, splits: Iterable[str]) -> Path:
    """`root`: the metadata of `release` (linked, untouched) plus a 1-pixel JPEG per record of `splits`.

    The converter needs the image package to exist; the DNA probes only read `dna.txt` and the targets, so the
    images' content does not matter (rendering real ones costs ~5 min for 20k records here). Records of other
    splits have no image: the image shard set rejects them (`missing_image`), the DNA-only set still has them.
    """
    (root / "bioscan5m").mkdir(parents=True)
    (root / "bioscan5m" / "metadata").symlink_to(release / "bioscan5m" / "metadata")
    jpeg = io.BytesIO()
    Image.new("RGB", (1, 1)).save(jpeg, format="JPEG")
    rows = table.filter(pc.is_in(table["split"], value_set=pa.array(list(splits)))).select(["processid", "split"])
    for row in rows.to_pylist():
        path = root / image_relpath(row["processid"], row["split"], PACKAGE)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(jpeg.getvalue())
    return root
