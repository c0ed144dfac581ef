"""Per-file reader of the official release tree or zips, in the stream's sample format (release -> **official**).

For users who have not converted to shards, and as the baseline of `benchmarks/bench_stream.py`: a
map-style torch Dataset that reads one JPEG per sample through `layout.ImageStore` (extracted tree or the
official zips) and the metadata table, and decodes it with the same `SampleDecoder` as `BioscanStream`,
so batches have the same fields, dtypes and target codes (global vocabularies over the whole table,
as the official loader and the converter build them).

    ds = OfficialTree("/data/BIOSCAN-5M", split="val", batch_size=64)
    loader = make_official_loader(ds, num_workers=8)
"""

from __future__ import annotations

import json
import os
from dataclasses import replace
from typing import Any

import numpy as np
import pyarrow.compute as pc
from torch.utils.data import DataLoader, Dataset

from bioscan_stream.layout import ImageStore, image_relpath
from bioscan_stream.metadata import metadata_path, read_metadata
from bioscan_stream.schema import DNA, IMAGE, METADATA, TARGETS
from bioscan_stream.stream.loader import StreamOptions, create_decoder
from bioscan_stream.vocab import build_vocabularies, encode_labels

__all__ = ["OfficialTree", "make_official_loader"]


class OfficialTree(Dataset):  # type: ignore[type-arg]
    """One split of a release, one image file per sample.

    Args:
        root: release root (with `bioscan5m/metadata/...` and the images extracted or zipped).
        split: one of the 8 partitions.
        modalities: `image`, `dna`, `metadata` (no `count`: that is a DNA-shard field).
        targets: label columns as int64 codes.
        package: image package (`cropped_256`, ...).
        options: `StreamOptions` for the decoder (transform, tokenizer, offsets, batch_size, seed);
            keywords override its fields.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        split: str,
        modalities: tuple[str, ...] = ("image", "dna"),
        targets: tuple[str, ...] = ("species",),
        *,
        package: str = "cropped_256",
        options: StreamOptions | None = None,
        **overrides: Any,
    ) -> None:
        if "count" in modalities:
            raise ValueError("the official tree has no `count` modality (DNA shards only)")
        self.options = replace(options or StreamOptions(), **overrides)
        table = read_metadata(metadata_path(root))  # all splits: target codes come from global vocabularies
        vocabularies = build_vocabularies(table)
        self.rows = table.filter(pc.equal(table["split"], split))
        self.split, self.package = split, package
        self.keys: list[str] = self.rows["processid"].to_pylist()
        self.barcodes: list[str] = [s or "" for s in self.rows["dna_barcode"].to_pylist()]
        codes = [encode_labels(self.rows[name], vocabularies[name]) for name in targets]
        self.codes = np.stack(codes, axis=1) if codes else np.zeros((len(self.keys), 0), dtype=np.int64)
        self.target_names = tuple(targets)
        self.store = ImageStore.open(root, package) if "image" in modalities else None
        self.decoder = create_decoder(split, modalities, targets, self.options)

    def __len__(self) -> int:
        return len(self.keys)

    def raw(self, index: int) -> dict[str, Any]:
        """Sample `index` as shard members (bytes), exactly what a shard of this split would hold."""
        key = self.keys[index]
        raw: dict[str, Any] = {"__key__": key, "__url__": image_relpath(key, self.split, self.package)}
        if self.store is not None:
            raw[IMAGE] = self.store.read(key, self.split)
        raw[DNA] = self.barcodes[index].encode("utf-8")
        if "metadata" in self.decoder.modalities:
            raw[METADATA] = json.dumps(self.rows.slice(index, 1).to_pylist()[0], default=str).encode("utf-8")
        raw[TARGETS] = json.dumps(dict(zip(self.target_names, self.codes[index].tolist(), strict=True))).encode()
        return raw

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.decoder.decode(self.raw(index))

    def collate(self, samples: list[dict[str, Any]]) -> dict[str, Any]:
        """Batch with the stream's collation (stack + normalise, batched tokenisation, int64 targets)."""
        return self.decoder.collate(samples, salt=f"{self.options.seed}:0")


def make_official_loader(
    dataset: OfficialTree, *, num_workers: int = 2, shuffle: bool = False, pin_memory: bool = False
) -> DataLoader:  # type: ignore[type-arg]
    """A DataLoader over the per-file reader with the stream's batch size and collation."""
    batch_size = dataset.options.batch_size or 1
    extra: dict[str, Any] = {"persistent_workers": True, "prefetch_factor": 4} if num_workers else {}
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        num_workers=num_workers,
        collate_fn=dataset.collate,
        pin_memory=pin_memory,
        **extra,
    )
