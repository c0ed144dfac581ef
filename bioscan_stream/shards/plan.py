"""Deterministic shard plans (release -> **plan** -> shard tasks -> manifest).

A plan says, for one split, which metadata rows go into which numbered shard. Rows are shuffled with a
seed, so a streaming reader with a small buffer still sees a well-mixed order, then cut into equal-count
shards whose expected byte size is close to a target. Small splits still get `min_shards` shards (when
they have that many rows) so that many loader workers can read them in parallel. The same seed, rows and
size estimate always give the same plan; nothing here touches images.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from bioscan_stream.schema import shard_name

__all__ = ["ShardSpec", "plan_split", "tar_bytes", "DEFAULT_SHARD_BYTES", "DEFAULT_MIN_SHARDS"]

#: ~128 MB: large enough that per-shard request overhead vanishes (4,400 cropped_256 samples),
#: small enough that a 5M-sample split gives ~1,000 shards to spread over loader workers.
DEFAULT_SHARD_BYTES = 128 * 1024 * 1024
DEFAULT_MIN_SHARDS = 4
_BLOCK = 512


@dataclass(frozen=True)
class ShardSpec:
    """One planned shard: its split, number and the rows (indices into the validated table) it holds."""

    split: str
    number: int
    rows: tuple[int, ...]

    @property
    def name(self) -> str:
        return shard_name(self.split, self.number)

    @property
    def path(self) -> str:
        """Shard path relative to the shard-set folder, e.g. `train/train-000003.tar`."""
        return f"{self.split}/{self.name}"


def tar_bytes(members: Mapping[str, int]) -> int:
    """Bytes a sample takes in a USTAR tar: one 512-byte header per member plus data padded to 512."""
    return sum(_BLOCK + -(-size // _BLOCK) * _BLOCK for size in members.values())


def _split_seed(seed: int, split: str) -> np.random.Generator:
    """Independent, stable stream per split (crc32 of the name, not Python's salted `hash`)."""
    return np.random.default_rng([seed, zlib.crc32(split.encode("utf-8"))])


def plan_split(
    split: str,
    rows: np.ndarray,
    *,
    bytes_per_sample: float,
    seed: int,
    shard_bytes: int = DEFAULT_SHARD_BYTES,
    min_shards: int = DEFAULT_MIN_SHARDS,
) -> list[ShardSpec]:
    """Shuffle `rows` (table indices of one split) with `seed` and cut them into numbered shards.

    The shard count is `ceil(rows * bytes_per_sample / shard_bytes)`, raised to `min(min_shards, rows)`;
    shards differ in size by at most one sample.
    """
    if shard_bytes <= 0 or min_shards < 1:
        raise ValueError(f"shard_bytes ({shard_bytes}) and min_shards ({min_shards}) must be positive")
    n = len(rows)
    if n == 0:
        return []
    count = max(math.ceil(n * bytes_per_sample / shard_bytes), min(min_shards, n), 1)
    order = np.asarray(rows, dtype=np.int64)[_split_seed(seed, split).permutation(n)]
    return [
        ShardSpec(split=split, number=k, rows=tuple(int(r) for r in part))
        for k, part in enumerate(np.array_split(order, count))
    ]
