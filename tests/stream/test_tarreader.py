"""The fast tar parser yields what webdataset's tarfile-based expander yields, and fails loudly on damage."""

from __future__ import annotations

import gzip
import io
import tarfile
from typing import Any

import pytest
from webdataset.handlers import reraise_exception
from webdataset.tariterators import group_by_keys, tar_file_expander

from bioscan_stream.stream.tarreader import TarFormatError, iter_tar_samples

LONG = "deep/" + "d" * 120 + "/SAMPLE-with-a-long-name"


def _tar(members: list[tuple[str, bytes]], fmt: int = tarfile.GNU_FORMAT, *, directory: bool = False) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=fmt) as tar:
        if directory:
            info = tarfile.TarInfo("somedir")
            info.type = tarfile.DIRTYPE
            tar.addfile(info)
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


MEMBERS = [
    ("a.jpg", b"\xff\xd8" + bytes(700)),
    ("a.targets.json", b'{"species": 1}'),
    ("a.dna.txt", b"ACGT"),
    ("__meta__", b"skipped"),
    ("b.JPG", b"x" * 512),
    ("b.targets.json", b"{}"),
    ("noext", b"dropped"),
    (LONG + ".jpg", b"long" * 100),
    (LONG + ".targets.json", b""),
]


def _webdataset(data: bytes, members: frozenset[str] | None) -> list[dict[str, Any]]:
    wanted = (lambda name: name.split(".", 1)[-1].lower() in members) if members else None
    files = tar_file_expander([{"url": "u", "stream": io.BytesIO(data)}], handler=reraise_exception,
                              select_files=wanted)  # fmt: skip
    return list(group_by_keys(files, handler=reraise_exception))


@pytest.mark.parametrize("fmt", [tarfile.GNU_FORMAT, tarfile.PAX_FORMAT, tarfile.USTAR_FORMAT])
@pytest.mark.parametrize("members", [None, frozenset({"jpg", "targets.json"})])
def test_same_samples_as_webdataset(fmt: int, members: frozenset[str] | None) -> None:
    data = _tar(MEMBERS, fmt, directory=True)
    ours = list(iter_tar_samples(io.BufferedReader(io.BytesIO(data)), "u", members))
    assert ours == _webdataset(data, members)
    assert [s["__key__"] for s in ours] == ["a", "b", LONG]
    assert ours[0]["jpg"] == MEMBERS[0][1] and ("dna.txt" in ours[0]) == (members is None)


def test_gzip_compressed_tar() -> None:
    data = _tar(MEMBERS[:2])
    ours = list(iter_tar_samples(io.BufferedReader(io.BytesIO(gzip.compress(data))), "u"))
    assert ours == list(iter_tar_samples(io.BytesIO(data), "u")) and len(ours) == 1


@pytest.mark.parametrize("cut", [100, 512 + 300, 1024 + 512 + 10])
def test_truncated_archive_raises(cut: int) -> None:
    data = _tar(MEMBERS[:3])
    with pytest.raises(TarFormatError, match="truncated"):
        list(iter_tar_samples(io.BytesIO(data[:cut]), "u"))


def test_damaged_header_and_duplicates_raise() -> None:
    data = bytearray(_tar(MEMBERS[:2]))
    data[130] ^= 0x01  # a size digit: the checksum no longer matches
    with pytest.raises(TarFormatError, match="checksum"):
        list(iter_tar_samples(io.BytesIO(bytes(data)), "u"))
    with pytest.raises(TarFormatError, match="duplicate"):
        list(iter_tar_samples(io.BytesIO(_tar([("a.jpg", b"1"), ("a.JPG", b"2")])), "u"))


class _Trickle(io.RawIOBase):
    """A raw stream that returns at most 100 bytes per read (like a slow socket)."""

    def __init__(self, data: bytes) -> None:
        self._data = io.BytesIO(data)

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        return self._data.read(min(size, 100) if size >= 0 else 100)


def test_short_reads_are_completed() -> None:
    data = _tar(MEMBERS)
    assert list(iter_tar_samples(_Trickle(data), "u")) == list(iter_tar_samples(io.BytesIO(data), "u"))
