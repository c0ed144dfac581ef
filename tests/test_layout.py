"""Image locations and reading images from a tree or the official zips (bioscan_stream/layout.py)."""

from __future__ import annotations

import hashlib
import multiprocessing
import multiprocessing.connection
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest

from bioscan_stream.constants import CHUNK_LENGTH, SPLITS
from bioscan_stream.layout import (
    ImageStore,
    MissingImage,
    chunk_for,
    image_relpath,
    zip_name_for,
    zip_package_names,
)

REAL_PATHS = [  # real release paths (dataset-format.md and the official loader's integrity list)
    ("AACTA1040-20", "pretrain", "pretrain/00/AACTA1040-20.jpg"),
    ("YGEN686-22", "pretrain", "pretrain/ff/YGEN686-22.jpg"),
    ("YGEN2059-22", "pretrain", "pretrain/fe/YGEN2059-22.jpg"),
    ("GMEEO6589-21", "train", "train/b/GMEEO6589-21.jpg"),
    ("AACTA1026-20", "train", "train/0/AACTA1026-20.jpg"),
    ("YGEN986-22", "train", "train/f/YGEN986-22.jpg"),
    ("CRATC20925-23", "test", "test/CRATC20925-23.jpg"),
    ("AACTA161-20", "val", "val/AACTA161-20.jpg"),
    ("YDBB6502-21", "other_heldout", "other_heldout/f/YDBB6502-21.jpg"),
]
RECORDS = [(f"SYN{i:04d}-24", SPLITS[i % len(SPLITS)]) for i in range(40)]


@pytest.mark.parametrize(("processid", "split", "expected"), REAL_PATHS)
def test_real_paths(processid: str, split: str, expected: str) -> None:
    assert image_relpath(processid, split, "cropped_256") == f"bioscan5m/images/cropped_256/{expected}"


@pytest.mark.parametrize("split", SPLITS)
def test_chunk_is_the_md5_prefix(split: str) -> None:
    chunk = chunk_for("BIOUG01234-A05", split)
    assert len(chunk) == CHUNK_LENGTH[split]
    assert hashlib.md5(b"BIOUG01234-A05").hexdigest().startswith(chunk)


def test_bad_names_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown split 'training'"):
        chunk_for("X1", "training")
    with pytest.raises(ValueError, match="unknown image package 'cropped_512'"):
        image_relpath("X1", "val", "cropped_512")
    for processid in ("../etc/passwd", "a/b", "a\\b", ""):
        with pytest.raises(ValueError, match="not a safe file name"):
            image_relpath(processid, "val", "cropped_256")


def test_official_zip_names() -> None:
    assert zip_package_names("cropped_256") == ("BIOSCAN_5M_cropped_256.zip",)
    assert zip_package_names("cropped_256", per_partition=True) == (
        "BIOSCAN_5M_cropped_256_pretrain.01.zip",
        "BIOSCAN_5M_cropped_256_pretrain.02.zip",
        "BIOSCAN_5M_cropped_256_train.zip",
        "BIOSCAN_5M_cropped_256_eval.zip",
    )
    assert zip_package_names("original_full") == tuple(f"BIOSCAN_5M_original_full.0{k}.zip" for k in range(1, 6))
    assert zip_package_names("cropped") == ("BIOSCAN_5M_cropped.01.zip", "BIOSCAN_5M_cropped.02.zip")
    with pytest.raises(ValueError, match="no per-partition zips"):
        zip_package_names("original_full", per_partition=True)
    assert zip_name_for("X1", "val", "cropped_256", per_partition=True).endswith("_eval.zip")
    assert zip_name_for("X1", "train", "cropped_256", per_partition=True).endswith("_train.zip")


def _image(processid: str) -> bytes:
    return b"\xff\xd8" + hashlib.sha256(processid.encode()).digest() * 3 + b"\xff\xd9"


def _write_tree(root: Path, package: str) -> None:
    for pid, split in RECORDS:
        path = root / image_relpath(pid, split, package)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(_image(pid))


def _write_zips(root: Path, package: str, *, per_partition: bool, method: int = zipfile.ZIP_STORED) -> None:
    root.mkdir(parents=True, exist_ok=True)
    for name in zip_package_names(package, per_partition=per_partition):
        with zipfile.ZipFile(root / name, "w", compression=method) as zf:
            for pid, split in RECORDS:
                if zip_name_for(pid, split, package, per_partition=per_partition) == name:
                    zf.writestr(image_relpath(pid, split, package), _image(pid))


@pytest.mark.parametrize(
    ("package", "per_partition", "method"),
    [
        ("cropped_256", False, zipfile.ZIP_STORED),
        ("cropped_256", True, zipfile.ZIP_DEFLATED),
        ("original_full", False, zipfile.ZIP_DEFLATED),
    ],
)
def test_tree_and_zips_give_identical_bytes(tmp_path: Path, package: str, per_partition: bool, method: int) -> None:
    _write_tree(tmp_path / "tree", package)
    _write_zips(tmp_path / "zips", package, per_partition=per_partition, method=method)
    tree, zips = ImageStore.open(tmp_path / "tree", package), ImageStore.open(tmp_path / "zips", package)
    assert tree.zips == () and len(zips.zips) == len(zip_package_names(package, per_partition=per_partition))
    with tree, zips:
        for pid, split in RECORDS:
            assert zips.read(pid, split) == tree.read(pid, split) == _image(pid)


def test_other_packages_zips_are_ignored(tmp_path: Path) -> None:
    _write_zips(tmp_path, "cropped_256", per_partition=False)
    with pytest.raises(FileNotFoundError, match="no images of package 'cropped'"):
        ImageStore.open(tmp_path, "cropped")


def test_missing_image_names_record_and_places(tmp_path: Path) -> None:
    _write_tree(tmp_path, "cropped_256")
    _write_zips(tmp_path, "cropped_256", per_partition=True)
    store = ImageStore.open(tmp_path, "cropped_256")
    with pytest.raises(MissingImage) as info:
        store.read("NOPE1-24", "train")
    message = str(info.value)
    assert "'NOPE1-24'" in message and "'train'" in message and "'cropped_256'" in message
    assert "BIOSCAN_5M_cropped_256_train.zip:bioscan5m/images/cropped_256/train/" in message
    assert str(tmp_path / "bioscan5m/images/cropped_256/train") in message
    store.close()


def test_zip_serves_what_the_tree_lacks(tmp_path: Path) -> None:
    _write_tree(tmp_path, "cropped_256")
    _write_zips(tmp_path, "cropped_256", per_partition=False)
    pid, split = RECORDS[5]
    (tmp_path / image_relpath(pid, split, "cropped_256")).unlink()
    with ImageStore.open(tmp_path, "cropped_256") as store:
        assert store.read(pid, split) == _image(pid)


def test_unsafe_member_names_are_rejected(tmp_path: Path) -> None:
    with zipfile.ZipFile(tmp_path / "BIOSCAN_5M_cropped_256.zip", "w") as zf:
        zf.writestr("bioscan5m/images/cropped_256/val/A.jpg", b"x")
        zf.writestr("bioscan5m/images/../../../evil.jpg", b"x")
    with pytest.raises(ValueError, match=r"unsafe member name.*evil\.jpg"):
        ImageStore.open(tmp_path, "cropped_256")


def _read_all(store: ImageStore) -> list[bytes]:
    return [store.read(pid, split) for pid, split in RECORDS]


def _send_all(store: ImageStore, conn: multiprocessing.connection.Connection) -> None:
    conn.send(_read_all(store))


def test_store_pickles_and_reopens_per_process(tmp_path: Path) -> None:
    _write_zips(tmp_path, "cropped_256", per_partition=True)
    store = ImageStore.open(tmp_path, "cropped_256")
    expected = _read_all(store)  # handles are open in this process now
    clone = pickle.loads(pickle.dumps(store))
    assert clone._fds is None and _read_all(clone) == expected
    context = multiprocessing.get_context("fork")
    receive, send = context.Pipe(duplex=False)
    child = context.Process(target=_send_all, args=(store, send))  # inherited, not pickled: same descriptors
    child.start()
    assert receive.recv() == expected  # positional reads: no file offset shared with the parent
    child.join(timeout=30)
    assert child.exitcode == 0
    assert _read_all(store) == expected  # and the parent's file offsets were left alone
    store.close()
    clone.close()


def test_every_official_zip_name_is_recognised() -> None:
    from bioscan_stream.layout import _zip_pattern

    for package in ("cropped_256", "original_256", "original_full", "cropped"):
        names = list(zip_package_names(package))
        if package.endswith("_256"):
            names += [*zip_package_names(package, per_partition=True), f"BIOSCAN_5M_{package}_pretrain.zip"]
        assert all(_zip_pattern(package).match(n) for n in names), names
    assert not _zip_pattern("cropped").match("BIOSCAN_5M_cropped_256.zip")
    assert not _zip_pattern("cropped_256").match("BIOSCAN_5M_Insect_Dataset_metadata_MultiTypes.zip")


def test_index_is_compact_and_first_zip_wins(tmp_path: Path) -> None:
    _write_zips(tmp_path, "cropped_256", per_partition=True)
    pid, split = RECORDS[1]  # a train record: it lives in the _train zip
    with zipfile.ZipFile(tmp_path / "BIOSCAN_5M_cropped_256_eval.zip", "a") as zf:  # a second copy, other bytes
        zf.writestr(image_relpath(pid, split, "cropped_256"), b"other")
    store = ImageStore.open(tmp_path, "cropped_256")
    assert len(store.index.keys) == len(RECORDS) + 1 and store.index.keys.dtype == np.uint64
    assert np.all(np.diff(store.index.keys.astype(np.float64)) >= 0)
    assert [p.name for p in store.zips][0].endswith("_eval.zip")  # zips are sorted by name
    assert store.read(pid, split) == b"other"  # the first zip holding a name wins, deterministically
    store.close()


def test_corrupt_member_and_unsupported_compression(tmp_path: Path) -> None:
    pid, split = "X1-24", "val"
    relpath = image_relpath(pid, split, "cropped_256")
    path = tmp_path / "BIOSCAN_5M_cropped_256.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(relpath, b"JPEGDATA" * 10)
    data = path.read_bytes()
    path.write_bytes(data.replace(b"JPEGDATA", b"JPEGDATB", 1))  # flip a byte of the stored member
    with ImageStore.open(tmp_path, "cropped_256") as store, pytest.raises(zipfile.BadZipFile, match="CRC mismatch"):
        store.read(pid, split)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_BZIP2) as zf:
        zf.writestr(relpath, b"JPEGDATA")
    with pytest.raises(ValueError, match="only stored and deflated"):
        ImageStore.open(tmp_path, "cropped_256")
