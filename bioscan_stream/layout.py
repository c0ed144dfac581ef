"""Where each image of a BIOSCAN-5M release lives, and reading it (release -> **layout** -> shards).

Path rule (verified on real paths): `bioscan5m/images/<package>/<split>/[<chunk>/]<processid>.jpg`,
with `chunk` the first 2 (pretrain), 1 (train, other_heldout) or 0 (the other splits) hex characters
of `md5(processid)`. `ImageStore` reads images from an extracted tree or straight from the official
zip packages (whole, per-partition, multi-part), whose member names are exactly these relative paths
because the zips unpack into the release root. No 200 GB extraction needed.
"""

from __future__ import annotations

import hashlib
import os
import re
import struct
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from bioscan_stream.constants import CHUNK_LENGTH, IMAGES_DIR, PACKAGES

#: A processid becomes a file name: path separators and NUL would let a record escape its folder.
UNSAFE_PROCESSID_REGEX = r"[/\\\x00]"
_UNSAFE_PROCESSID = re.compile(UNSAFE_PROCESSID_REGEX)

#: Number of `.NN` parts of the whole-package zips that are split on the download servers.
_MULTIPART: dict[str, int] = {"original_full": 5, "cropped": 2}
#: Packages that also ship per-partition zips (pretrain itself in 2 parts, as on Zenodo).
_PER_PARTITION = ("original_256", "cropped_256")
_PRETRAIN_PARTS = 2
_ZIP_METHODS = (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED)


def _check_package(package: str) -> None:
    if package not in PACKAGES:
        raise ValueError(f"unknown image package {package!r}; expected one of {', '.join(PACKAGES)}")


def _md5_hex(processid: str) -> str:
    return hashlib.md5(processid.encode()).hexdigest()


def chunk_for(processid: str, split: str) -> str:
    """The image sub-folder of a record: md5 prefix of its processid, or "" for unchunked splits.

    >>> chunk_for("AACTA1040-20", "pretrain"), chunk_for("CRATC20925-23", "test")
    ('00', '')
    """
    if split not in CHUNK_LENGTH:
        raise ValueError(f"unknown split {split!r}; expected one of {', '.join(CHUNK_LENGTH)}")
    length = CHUNK_LENGTH[split]
    return _md5_hex(processid)[:length] if length else ""


def image_relpath(processid: str, split: str, package: str) -> str:
    """Path of an image relative to the release root (the member name inside the official zips too).

    >>> image_relpath("GMEEO6589-21", "train", "cropped_256")
    'bioscan5m/images/cropped_256/train/b/GMEEO6589-21.jpg'
    """
    _check_package(package)
    if not processid or _UNSAFE_PROCESSID.search(processid):
        raise ValueError(f"processid {processid!r} is not a safe file name")
    chunk = chunk_for(processid, split)
    folder = f"{IMAGES_DIR}/{package}/{split}" + (f"/{chunk}" if chunk else "")
    return f"{folder}/{processid}.jpg"


def zip_package_names(package: str, *, per_partition: bool = False) -> tuple[str, ...]:
    """Official zip file names of an image package: the whole package, or its per-partition zips."""
    _check_package(package)
    stem = f"BIOSCAN_5M_{package}"
    if per_partition:
        if package not in _PER_PARTITION:
            raise ValueError(f"package {package!r} has no per-partition zips (only {', '.join(_PER_PARTITION)})")
        pretrain = tuple(f"{stem}_pretrain.{k:02d}.zip" for k in range(1, _PRETRAIN_PARTS + 1))
        return (*pretrain, f"{stem}_train.zip", f"{stem}_eval.zip")
    parts = _MULTIPART.get(package, 0)
    return tuple(f"{stem}.{k:02d}.zip" for k in range(1, parts + 1)) if parts else (f"{stem}.zip",)


def zip_name_for(processid: str, split: str, package: str, *, per_partition: bool = False) -> str:
    """Which official zip holds an image when we write one (multi-part assignment by md5 prefix).

    Readers never rely on this: `ImageStore` indexes whatever the zips hold.
    """
    names = zip_package_names(package, per_partition=per_partition)
    bucket = int(_md5_hex(processid)[:2], 16)
    if per_partition:
        chunk_for(processid, split)  # validates the split name
        if split == "pretrain":
            return names[bucket * _PRETRAIN_PARTS // 256]
        return names[-2] if split == "train" else names[-1]  # every other split is in EVAL_SPLITS
    return names[bucket * len(names) // 256]


def _zip_pattern(package: str) -> re.Pattern[str]:
    return re.compile(rf"^BIOSCAN_5M_{re.escape(package)}(?:_(?:pretrain|train|eval))?(?:\.\d{{2}})?\.zip$")


def _is_unsafe_member(name: str) -> bool:
    """Absolute paths, drive letters and `..` components could escape the root if ever extracted."""
    if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name):
        return True
    return ".." in re.split(r"[/\\]", name)


class MissingImage(FileNotFoundError):
    """An image is in neither the extracted tree nor any zip; the message says where we looked."""

    def __init__(self, processid: str, split: str, package: str, looked: list[str]) -> None:
        self.processid, self.split, self.package = processid, split, package
        super().__init__(
            f"image of processid={processid!r} split={split!r} package={package!r} not found; looked in: "
            + "; ".join(looked)
        )


class ImageReader(Protocol):
    """What the shard writer reads images through: `ImageStore` (5M) and `release1m.ImageStore1M`."""

    root: Path
    package: str
    zips: tuple[Path, ...]

    def read(self, processid: str, split: str) -> bytes: ...


class CorruptImage(ValueError):
    """An image entry exists but cannot be read as bytes (e.g. an HDF5 dataset that is not 1-D uint8)."""


@dataclass(frozen=True)
class ZipIndex:
    """Where every member of a set of zips lies, in flat numpy arrays sorted by a 64-bit name hash.

    About 30 bytes per member instead of ~640 for `zipfile`'s per-member objects (measured on 200k
    members, 2026-11-22), so the 4.7M-image pretrain zips index in ~140 MB that Ray can share
    zero-copy between tasks, and no worker has to re-read the central directories.
    """

    keys: np.ndarray  # uint64 name hash, sorted
    part: np.ndarray  # uint16 index of the zip in ImageStore.zips
    offset: np.ndarray  # int64 local-header offset
    size: np.ndarray  # int64 compressed size
    method: np.ndarray  # uint8 compression (0 stored, 8 deflate)
    crc: np.ndarray  # uint32 CRC-32 of the uncompressed bytes

    @classmethod
    def build(cls, zips: tuple[Path, ...]) -> ZipIndex:
        """Read each central directory once; refuse unsafe names and compressions we do not decode."""
        rows: list[tuple[int, int, int, int, int, int]] = []
        for part, path in enumerate(zips):
            with zipfile.ZipFile(path) as archive:
                for info in archive.infolist():
                    if _is_unsafe_member(info.filename):
                        raise ValueError(f"{path}: unsafe member name {info.filename!r} (absolute or containing '..')")
                    if info.is_dir():
                        continue
                    if info.compress_type not in _ZIP_METHODS or info.flag_bits & 0x1:
                        raise ValueError(
                            f"{path}: member {info.filename!r} is encrypted or uses compression "
                            f"{info.compress_type} (only stored and deflated are read)"
                        )
                    key = _member_key(info.filename)
                    rows.append((key, part, info.header_offset, info.compress_size, info.compress_type, info.CRC))
        rows.sort(key=lambda r: (r[0], r[1]))  # the first zip wins for a name held twice
        columns = list(zip(*rows, strict=True)) if rows else [()] * 6
        dtypes = (np.uint64, np.uint16, np.int64, np.int64, np.uint8, np.uint32)
        return cls(*(np.asarray(c, dtype=d) for c, d in zip(columns, dtypes, strict=True)))

    def find(self, name: str) -> int | None:
        """Row of member `name`, or None."""
        key = np.uint64(_member_key(name))
        row = int(np.searchsorted(self.keys, key))
        return row if row < len(self.keys) and self.keys[row] == key else None


def _member_key(name: str) -> int:
    return int.from_bytes(hashlib.md5(name.encode()).digest()[:8], "little")


def _read_member(fd: int, row: int, index: ZipIndex, name: str, where: str) -> bytes:
    """Bytes of one member by positional reads (no shared file offset: safe across threads and forks)."""
    offset, size = int(index.offset[row]), int(index.size[row])
    header = os.pread(fd, 30 + len(name.encode()), offset)
    name_len, extra_len = struct.unpack("<HH", header[26:30])
    if header[:4] != b"PK\x03\x04" or header[30 : 30 + name_len] != name.encode():
        raise zipfile.BadZipFile(f"{where}: local header at {offset} does not hold {name!r}")
    data = os.pread(fd, size, offset + 30 + name_len + extra_len)
    if index.method[row] == zipfile.ZIP_DEFLATED:
        data = zlib.decompress(data, -zlib.MAX_WBITS)
    if zlib.crc32(data) != int(index.crc[row]):
        raise zipfile.BadZipFile(f"{where}: CRC mismatch in {name!r}")
    return data


class ImageStore:
    """Image bytes of one package, from an extracted tree and/or the official zips of a release root.

    Picklable for Ray tasks: the paths and the `ZipIndex` travel; file descriptors are opened lazily
    in each process and read with `os.pread`, so threads and forked children never share an offset.
    """

    def __init__(self, root: Path, package: str, tree: Path | None, zips: tuple[Path, ...], index: ZipIndex) -> None:
        self.root, self.package, self.tree, self.zips, self.index = root, package, tree, zips, index
        self._fds: list[int] | None = None

    @classmethod
    def open(cls, root: str | os.PathLike[str], package: str) -> ImageStore:
        """Find the package under `root` (extracted folder and/or zips) and index the zips once.

        Raises:
            FileNotFoundError: neither `<root>/bioscan5m/images/<package>` nor a matching zip exists.
            ValueError: a zip holds a member with an absolute path or a `..` component, or one we cannot decode.
        """
        _check_package(package)
        root = Path(root)
        tree = root / IMAGES_DIR / package
        pattern = _zip_pattern(package)
        zips = tuple(sorted(p for p in root.glob("BIOSCAN_5M_*.zip") if pattern.match(p.name)))
        if not tree.is_dir() and not zips:
            raise FileNotFoundError(
                f"no images of package {package!r} under {root}: neither {tree} nor zips {pattern.pattern}"
            )
        return cls(root, package, tree if tree.is_dir() else None, zips, ZipIndex.build(zips))

    def read(self, processid: str, split: str) -> bytes:
        """The image file's bytes, exactly as stored (never re-encoded)."""
        relpath = image_relpath(processid, split, self.package)
        if self.tree is not None:
            try:  # open first, no stat and no pathlib: ~30 us of the ~60 us per image here (bench_convert.py)
                with open(os.path.join(self.root, relpath), "rb", buffering=0) as src:
                    return src.readall()
            except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
                pass  # not extracted: look in the zips
        row = self.index.find(relpath)
        if row is not None:
            if self._fds is None:
                self._fds = [os.open(p, os.O_RDONLY) for p in self.zips]
            part = int(self.index.part[row])
            return _read_member(self._fds[part], row, self.index, relpath, str(self.zips[part]))
        looked = ([str(self.root / relpath)] if self.tree is not None else []) + [
            f"{p.name}:{relpath}" for p in self.zips
        ]
        raise MissingImage(processid, split, self.package, looked)

    def close(self) -> None:
        """Close the zip files (they reopen on the next read)."""
        for fd in self._fds or []:
            os.close(fd)
        self._fds = None

    def __enter__(self) -> ImageStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_fds": None}

    def __repr__(self) -> str:
        tree = self.tree is not None
        return f"ImageStore(root={str(self.root)!r}, package={self.package!r}, tree={tree}, zips={len(self.zips)})"
