"""Deterministic, atomic WebDataset tar writing (write side of release -> shards).

Two runs over the same samples produce byte-identical tars: fixed member order, mtime 0, uid/gid 0,
empty owner names, mode 0o644, USTAR headers. A shard is written under a temporary name and renamed
only when complete, so a killed writer never leaves a file that looks finished.
"""

from __future__ import annotations

import hashlib
import os
import tarfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

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


class _HashingWriter:
    """Collects what the tar writer emits and passes it on in ~1 MiB blocks, hashed and counted on the way.

    Why blocks: one `write` syscall per 30 KB member cost ~25 us per sample on ext4 (per-call inode and
    journal work), and per-member `sha256.update` calls add their own overhead; 1 MiB blocks make both
    per-byte costs (benchmarks/bench_convert.py). No second read pass is needed for the hash.
    """

    BLOCK = 1 << 20

    def __init__(self, raw: BinaryIO) -> None:
        self._raw = raw
        self._parts: list[bytes] = []
        self._pending = 0
        self.sha256 = hashlib.sha256()
        self.size = 0

    def write(self, *parts: bytes) -> None:
        self._parts += parts
        added = sum(map(len, parts))
        self._pending += added
        self.size += added
        if self._pending >= self.BLOCK:
            self.flush()

    def flush(self) -> None:
        block = b"".join(self._parts)
        self._raw.write(block)
        self.sha256.update(block)
        self._parts, self._pending = [], 0


def _member(name: str, payload: bytes) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = len(payload)
    info.mtime = 0
    info.mode = 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


_BLOCK = tarfile.BLOCKSIZE
#: A USTAR header of our fixed fields, from tarfile itself; only name (0:100), size (124:136) and the
#: checksum (148:156) vary per member. Why: `TarFile.addfile` costs ~50 us per member in Python (copy,
#: field packing, checksum via struct), 4 members per sample: the tar writer was 4-6x slower than a raw
#: one-member copy (benchmarks/bench_convert.py, 2026-11). Output bytes are unchanged (tested).
_TEMPLATE = _member("", b"").tobuf(tarfile.USTAR_FORMAT, "utf-8", "surrogateescape")
_FIXED_SUM = sum(_TEMPLATE[100:124]) + sum(_TEMPLATE[136:148]) + sum(_TEMPLATE[156:]) + 8 * ord(" ")
_MAX_SIZE = 8**11  # 11 octal digits


def _header(name: str, size: int) -> bytes:
    """The header tarfile writes for `_member(name, ...)`, built from the template (tarfile for long names)."""
    raw = name.encode("utf-8", "surrogateescape")
    if len(raw) > 100 or size >= _MAX_SIZE:  # USTAR prefix splitting and huge files: let tarfile do it
        info = _member(name, b"")
        info.size = size
        return info.tobuf(tarfile.USTAR_FORMAT, "utf-8", "surrogateescape")
    size_field = b"%011o\0" % size
    checksum = _FIXED_SUM + sum(raw) + sum(size_field)
    return b"".join(
        (
            raw.ljust(100, b"\0"),
            _TEMPLATE[100:124],
            size_field,
            _TEMPLATE[136:148],
            b"%06o\0 " % checksum,
            _TEMPLATE[156:],
        )
    )


def _write_member(sink: _HashingWriter, name: str, payload: bytes) -> None:
    sink.write(_header(name, len(payload)), payload, bytes(-len(payload) % _BLOCK))


def _write_end(sink: _HashingWriter) -> None:
    """End-of-archive: two zero blocks, then zeros up to a whole record, exactly as `TarFile.close` writes."""
    sink.write(bytes(2 * _BLOCK))
    if sink.size % tarfile.RECORDSIZE:
        sink.write(bytes(tarfile.RECORDSIZE - sink.size % tarfile.RECORDSIZE))


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
        for sample in samples:
            key = str(sample["__key__"])
            _check_key(key)
            for ext, value in sample.items():
                if ext.startswith("__"):
                    continue
                payload = value.encode("utf-8") if isinstance(value, str) else bytes(value)
                _write_member(sink, f"{key}.{ext}", payload)
            count += 1
        _write_end(sink)
        sink.flush()
        # NOTE: no fsync per shard: it halved throughput here (2026-11, 2-core VM); a shard that a power loss
        # truncates after the rename fails the sha256 check of the conversion journal and is rewritten on resume.
    return ShardInfo(name=path.name, samples=count, bytes=sink.size, sha256=sink.sha256.hexdigest())
