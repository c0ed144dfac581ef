"""Decoders: raw shard members -> tensors, only for what was asked (stages -> **decoders** -> batches).

A `SampleDecoder` knows the requested modalities and targets, so the reader pulls only those members
out of the tar (`members`) and nothing else is parsed. Only the schema's members are accepted: JPEG
bytes, UTF-8 text and JSON; there is no pickle or npy path. Per-sample work is just the image
transform; DNA tokenisation, target arrays and float normalisation happen once per batch (`collate`),
which in a DataLoader worker builds the batch in reused shared memory and marks every tensor for the
cheapest trip to the main process (`sharedbatch`).

DNA offset augmentation (BarcodeBERT: drop the first 0..k-1 nucleotides) draws each sample's offset
from a hash of `(salt, key)`, so a resumed epoch gives every sample the same offset it would have had.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch.utils.data import get_worker_info

from bioscan_stream.constants import LABEL_COLUMNS
from bioscan_stream.dna import KmerTokenizer
from bioscan_stream.schema import COUNT, DNA, IMAGE, METADATA, TARGETS
from bioscan_stream.stream import sharedbatch
from bioscan_stream.stream.transforms import normalize_batch, stack_images

__all__ = ["MODALITIES", "SampleDecoder", "decode_targets"]

#: Requestable modalities and the shard member each one reads.
MODALITIES: dict[str, str] = {"image": IMAGE, "dna": DNA, "metadata": METADATA, "count": COUNT}
#: Keys of a decoded sample/batch that are bookkeeping, not data.
KEY, URL, POSITION = "__key__", "__url__", "__position__"

ImageFn = Callable[[bytes], torch.Tensor]


def decode_targets(data: bytes, names: Sequence[str]) -> list[int]:
    """The requested integer targets of one sample's `targets.json` (-1 = missing label)."""
    targets = json.loads(data)
    return [int(targets[name]) for name in names]


@dataclass(frozen=True)
class SampleDecoder:
    """What to decode and how.

    Args:
        modalities: any of `image`, `dna`, `metadata`, `count`.
        targets: label columns (`species`, `genus`, ..., `dna_bin`) to return as int64.
        image_transform: JPEG bytes -> uint8 (normalised per batch) or float (kept as is) tensor.
        tokenizer: k-mer tokenizer for DNA; None returns the barcode strings.
        dna_max_offset: offsets are drawn from `0..dna_max_offset` (0 = no augmentation).
        normalize: turn uint8 image batches into float with the BIOSCAN mean/std.
    """

    modalities: tuple[str, ...] = ("image", "dna")
    targets: tuple[str, ...] = ("species",)
    image_transform: ImageFn | None = None
    tokenizer: KmerTokenizer | None = field(default_factory=KmerTokenizer)
    dna_max_offset: int = 0
    normalize: bool = True

    def __post_init__(self) -> None:
        unknown = set(self.modalities) - set(MODALITIES)
        if unknown:
            raise ValueError(f"unknown modalities {sorted(unknown)}; choose from {sorted(MODALITIES)}")
        bad = set(self.targets) - set(LABEL_COLUMNS)
        if bad:
            raise ValueError(f"unknown targets {sorted(bad)}; choose from {list(LABEL_COLUMNS)}")
        if "image" in self.modalities and self.image_transform is None:
            raise ValueError("the image modality needs an image_transform")

    @property
    def members(self) -> frozenset[str]:
        """Tar members to read; everything else is skipped unread."""
        members = {MODALITIES[m] for m in self.modalities}
        return frozenset(members | ({TARGETS} if self.targets else set()))

    def decode(self, raw: Mapping[str, Any]) -> dict[str, Any]:
        """Per-sample work (image transform, text and JSON parsing) on one raw sample."""
        out: dict[str, Any] = {KEY: raw[KEY], URL: raw.get(URL), POSITION: raw.get(POSITION)}
        if "image" in self.modalities:
            assert self.image_transform is not None
            out["image"] = self.image_transform(raw[IMAGE])
        if "dna" in self.modalities:
            out["dna"] = raw[DNA].decode("utf-8")
        if "metadata" in self.modalities:
            out["metadata"] = json.loads(raw[METADATA])
        if "count" in self.modalities:
            out["count"] = int(raw[COUNT])
        if self.targets:
            out[TARGETS] = decode_targets(raw[TARGETS], self.targets)
        return out

    def collate(self, samples: Sequence[Mapping[str, Any]], *, salt: str = "") -> dict[str, Any]:
        """Batch-level work: stack images (+ normalise), tokenise all barcodes at once, int64 targets.

        In a DataLoader worker the images go into reusable shared memory and every tensor is marked for the
        cheapest trip to the main process (`sharedbatch.export`)."""
        batch: dict[str, Any] = {KEY: [s[KEY] for s in samples]}
        in_worker = get_worker_info() is not None
        if "image" in self.modalities:
            images = stack_images([s["image"] for s in samples], shared=in_worker)
            if self.normalize and images.dtype == torch.uint8:
                images = normalize_batch(images, shared=in_worker)
            batch["image"] = images
        if "dna" in self.modalities:
            batch.update(self._tokenize([s["dna"] for s in samples], batch[KEY], salt))
        if "metadata" in self.modalities:
            batch["metadata"] = [s["metadata"] for s in samples]
        if "count" in self.modalities:
            batch["count"] = torch.tensor([s["count"] for s in samples], dtype=torch.int64)
        if self.targets:
            table = torch.tensor([s[TARGETS] for s in samples], dtype=torch.int64).reshape(len(samples), -1)
            batch.update({name: table[:, i] for i, name in enumerate(self.targets)})
        if in_worker:
            batch.update({k: sharedbatch.export(v) for k, v in batch.items() if isinstance(v, torch.Tensor)})
        return batch

    def finish(self, sample: Mapping[str, Any], *, salt: str = "") -> dict[str, Any]:
        """One decoded sample in the batch format without the batch axis (for unbatched iteration)."""
        batch = self.collate([sample], salt=salt)
        out = {k: (v[0] if isinstance(v, torch.Tensor | list) else v) for k, v in batch.items()}
        out[URL], out[POSITION] = sample.get(URL), sample.get(POSITION)
        return out

    def offsets(self, keys: Sequence[str], salt: str) -> np.ndarray:
        """Per-sample DNA offsets in `0..dna_max_offset`, a pure function of `(salt, key)`."""
        if self.dna_max_offset <= 0:
            return np.zeros(len(keys), dtype=np.int64)
        hashes = [zlib.crc32(f"{salt}:{key}".encode()) for key in keys]
        return np.asarray(hashes, dtype=np.int64) % (self.dna_max_offset + 1)

    def _tokenize(self, seqs: list[str], keys: list[str], salt: str) -> dict[str, Any]:
        if self.tokenizer is None:
            return {"dna": seqs}
        ids, mask = self.tokenizer.encode_batch(seqs, offsets=self.offsets(keys, salt))
        return {"dna": torch.from_numpy(ids), "dna_mask": torch.from_numpy(mask)}
