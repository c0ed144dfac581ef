"""Class lists of the BIOSCAN-1M image-classification experiments, computed from a shard set's targets.

Sits between the stream and the classify task (shards -> stream -> **class list** -> `classify_task`).
The BIOSCAN-1M paper (seed 001) classifies images into the 16 most populated insect orders, and the
members of Diptera into its 40 most populated families. Here the classes are the top-N codes of the
`train` split's label counts (ties broken by the smaller global code), read through `BioscanStream`
(targets only, no image decoded); every other record is excluded from training and from the test
metrics, and counted by reason. Class index -> label name comes from the shard set's vocabulary file
(`vocab.json`, named in `index.json`), whose codes are the stream's targets (-1 = missing).

`make_synthetic_shards` renders a small synthetic release's train/test images (the photos are drawn from
the true taxonomy, so order is learnable from them) and converts them to shards, for smoke tests;
`make_synthetic_shards_1m` does the same for a synthetic BIOSCAN-1M release, whose shard set is read with a
`partitioning` (the 1M experiments' own train / validation / test splits, e.g. `large_insect_order`).
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bioscan_stream.schema import INDEX_FILE
from bioscan_stream.storage import join_url, read_bytes
from bioscan_stream.stream import BioscanStream

__all__ = [
    "TASKS",
    "ClassList",
    "ClassTask",
    "build_class_list",
    "count_labels",
    "make_synthetic_shards",
    "make_synthetic_shards_1m",
    "read_vocabularies",
    "select_top",
]

_VOCAB_FILE = "vocab.json"


@dataclass(frozen=True)
class ClassTask:
    """What to classify: `rank` codes, optionally only among records whose order is `within`."""

    rank: str
    top_n: int
    within: str | None = None


#: The two BIOSCAN-1M experiments: 16 most populated orders; 40 most populated Diptera families.
TASKS: dict[str, ClassTask] = {
    "order": ClassTask("order", 16),
    "diptera_family": ClassTask("family", 40, within="Diptera"),
}


@dataclass(frozen=True)
class ClassList:
    """The selected classes of one task: class index -> global code, label name and train count.

    `excluded` counts the train records left out: `missing` (no label at `rank`), `outside_parent`
    (order other than `within`) and `outside_top_n`.
    """

    rank: str
    within: str | None
    parent_code: int | None
    codes: tuple[int, ...]
    labels: tuple[str, ...]
    train_counts: tuple[int, ...]
    excluded: dict[str, int]

    @property
    def num_classes(self) -> int:
        return len(self.codes)

    @property
    def targets(self) -> tuple[str, ...]:
        """The stream targets `encode` needs."""
        return (self.rank,) if self.within is None else (self.rank, "order")

    def encode(self, batch: dict[str, Any]) -> torch.Tensor:
        """Class indices of a stream batch's records, -1 for records outside the class list."""
        codes = batch[self.rank]
        lut = torch.full((max(self.codes) + 1,), -1, dtype=torch.long)
        lut[torch.tensor(self.codes, dtype=torch.long)] = torch.arange(self.num_classes)
        inside = (codes >= 0) & (codes < len(lut))
        index = torch.full_like(codes, -1)
        index[inside] = lut[codes[inside]]
        if self.parent_code is not None:
            index[batch["order"] != self.parent_code] = -1
        return index

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["classes"] = [
            {"index": i, "code": c, "label": name, "train_count": n}
            for i, (c, name, n) in enumerate(zip(self.codes, self.labels, self.train_counts, strict=True))
        ]
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ClassList:
        fields = {k: v for k, v in data.items() if k != "classes"}
        for key in ("codes", "labels", "train_counts"):
            fields[key] = tuple(fields[key])
        return cls(**fields)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_json(), indent=1, ensure_ascii=False))


def read_vocabularies(url: str) -> dict[str, list[str]]:
    """The vocabularies of a shard set (local folder or `s3://` prefix): `index.json` names the file."""
    try:
        index = json.loads(read_bytes(join_url(url, INDEX_FILE)))
        name = index.get("vocabularies", {}).get("file", _VOCAB_FILE)
    except FileNotFoundError:
        name = _VOCAB_FILE
    data = json.loads(read_bytes(join_url(url, name)))
    return {str(k): [str(x) for x in v] for k, v in data.items()}


def count_labels(
    url: str, split: str, targets: tuple[str, ...], *, batch_size: int = 1024, partitioning: str | None = None
) -> dict[str, np.ndarray]:
    """Every record's target codes of `split` (of a 1M `partitioning`), int64 arrays in manifest order, read
    without decoding images."""
    stream = BioscanStream(
        url, split=split, modalities=(), targets=targets, batch_size=batch_size, partitioning=partitioning,
        shuffle_buffer=0, shard_shuffle=False, rank=0, world_size=1,
    )  # fmt: skip
    chunks: dict[str, list[np.ndarray]] = {t: [] for t in targets}
    for batch in stream:
        for t in targets:
            chunks[t].append(batch[t].numpy())
    return {t: np.concatenate(c) if c else np.zeros(0, np.int64) for t, c in chunks.items()}


def select_top(codes: np.ndarray, top_n: int) -> list[tuple[int, int]]:
    """The `top_n` most frequent codes (>= 0) as (code, count), by decreasing count, ties by smaller code."""
    counts = Counter(int(c) for c in codes[codes >= 0])
    return sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:top_n]


def build_class_list(url: str, task: ClassTask, *, split: str = "train", partitioning: str | None = None) -> ClassList:
    """The class list of `task` from the label counts of `split` (of a 1M `partitioning`) of the shard set at `url`."""
    vocab = read_vocabularies(url)
    parent_code = None
    targets: tuple[str, ...] = (task.rank,) if task.within is None else (task.rank, "order")
    labels = count_labels(url, split, targets, partitioning=partitioning)
    codes = labels[task.rank]
    excluded = {"missing": 0, "outside_parent": 0, "outside_top_n": 0}
    if task.within is not None:
        if task.within not in vocab["order"]:
            raise ValueError(f"order {task.within!r} is not in the shard set's vocabulary")
        parent_code = vocab["order"].index(task.within)
        inside = labels["order"] == parent_code
        excluded["outside_parent"] = int((~inside).sum())
        codes = codes[inside]
    excluded["missing"] = int((codes < 0).sum())
    top = select_top(codes, task.top_n)
    if not top:
        raise ValueError(f"split {split!r} of {url} has no {task.rank} labels to classify")
    excluded["outside_top_n"] = int((codes >= 0).sum()) - sum(n for _, n in top)
    names = vocab[task.rank]
    return ClassList(
        rank=task.rank,
        within=task.within,
        parent_code=parent_code,
        codes=tuple(c for c, _ in top),
        labels=tuple(names[c] for c, _ in top),
        train_counts=tuple(n for _, n in top),
        excluded=excluded,
    )


def make_synthetic_shards(
    out: str | Path, *, samples: int, seed: int = 0, workers: int = 2, splits: tuple[str, ...] = ("train", "test")
) -> str:
    """A synthetic release of `samples` records with `cropped_256` photos of the records of `splits` only
    (~350 images/s on 2 cores), converted to `out/shards/cropped_256`; returns that shard-set folder."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from bioscan_stream.shards.convert import ConvertConfig, convert_release
    from bioscan_stream.synth.images import write_images
    from bioscan_stream.synth.release import image_table, write_release

    root, shards = Path(out) / "release", Path(out) / "shards"
    table = write_release(root, samples=samples, seed=seed, images=False)
    images = image_table(table)
    images = images.filter(pc.is_in(images["split"], value_set=pa.array(list(splits))))
    write_images(root, images, packages=("cropped_256",), workers=workers, seed=seed)
    config = ConvertConfig(
        root=str(root), out=str(shards), splits=tuple(splits), seed=seed, workers=workers, dna=False, progress=False
    )
    convert_release(config)
    return str(shards / "cropped_256")


def make_synthetic_shards_1m(out: str | Path, *, samples: int, seed: int = 0, workers: int = 2) -> str:
    """The synthetic BIOSCAN-1M release of a `samples`-record synthetic world (about a fifth of its records, with
    `cropped_256` photos as a tree), converted to `out/shards/cropped_256`; returns that shard-set folder."""
    from bioscan_stream.shards.convert import ConvertConfig, convert_release
    from bioscan_stream.synth.release1m import write_release_1m

    root, shards = Path(out) / "release", Path(out) / "shards"
    write_release_1m(root, samples=samples, seed=seed, containers=("tree",), workers=workers)
    convert_release(
        ConvertConfig(root=str(root), out=str(shards), seed=seed, workers=workers, min_shards=1, progress=False)
    )
    return str(shards / "cropped_256")
