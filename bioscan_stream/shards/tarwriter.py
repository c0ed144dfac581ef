"""Deterministic, atomic WebDataset tar writing (write side of release -> shards).

Two runs over the same samples produce byte-identical tars: fixed member order, mtime 0, uid/gid 0,
empty owner names, mode 0o644, USTAR headers. A shard is written under a temporary name and renamed
only when complete, so a killed writer never leaves a file that looks finished.
"""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from bioscan_stream._atomic import atomic_path
from bioscan_stream.schema import shard_name

__all__ = ["ShardInfo", "write_tar", "shard_name"]


@dataclass(frozen=True)
class ShardInfo:
    """What the manifest records about one finished shard."""

    name: str
    samples: int
    bytes: int
    sha256: str


class _HashingWriter(io.RawIOBase):
    """File wrapper that hashes and counts what tarfile writes, so no second read pass is needed."""

    def __init__(self, raw: io.BufferedWriter) -> None:
        self._raw = raw
        self.sha256 = hashlib.sha256()
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, data: bytes) -> int:  # type: ignore[override]
        self._raw.write(data)
        self.sha256.update(data)
        self.size += len(data)
        return len(data)

    def tell(self) -> int:
        return self.size


def _member(name: str, payload: bytes) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = len(payload)
    info.mtime = 0
    info.mode = 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def _check_key(key: str) -> None:
    if not key or "/" in key or "\\" in key or key.startswith(".") or "." in key:
        raise ValueError(f"invalid sample key {key!r}: keys are plain names without '.', '/' or '\\'")


def write_tar(path: str | os.PathLike[str], samples: Iterable[Mapping[str, bytes | str]]) -> ShardInfo:
    """Write `samples` (dicts with `__key__` and `ext -> bytes|str` members) as one tar at `path`, atomically.

    Members are written in the order the mapping gives them (the writer's schema order), text as UTF-8.
    Returns the shard's sample count, byte size and sha256 for the manifest.
    """
    path = Path(path)
    count = 0
    with atomic_path(path) as tmp, open(tmp, "wb") as raw:
        sink = _HashingWriter(raw)
        with tarfile.open(fileobj=sink, mode="w", format=tarfile.USTAR_FORMAT) as tar:  # type: ignore[call-overload]
            for sample in samples:
                key = str(sample["__key__"])
                _check_key(key)
                for ext, value in sample.items():
                    if ext.startswith("__"):
                        continue
                    payload = value.encode("utf-8") if isinstance(value, str) else bytes(value)
                    tar.addfile(_member(f"{key}.{ext}", payload), io.BytesIO(payload))
                count += 1
        raw.flush()
        os.fsync(raw.fileno())
    return ShardInfo(name=path.name, samples=count, bytes=sink.size, sha256=sink.sha256.hexdigest())
