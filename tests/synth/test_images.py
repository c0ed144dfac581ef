"""Writing the image packages: tree and zip outputs, derived geometry, reruns, worker independence."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from PIL import Image

from bioscan_stream.crop import crop_geometry, short_side_size
from bioscan_stream.layout import ImageStore, image_relpath, zip_package_names
from bioscan_stream.synth.images import render_packages, write_images

_SPLITS = ("pretrain", "train", "val", "test", "other_heldout", "key_unseen")
_ORDERS = ("Diptera", "Coleoptera", "Hymenoptera", "Lepidoptera")


def _table(n: int = 6) -> pa.Table:
    rng = np.random.default_rng(7)
    rows = []
    for i in range(n):
        w, h = int(rng.integers(20, 600)), int(rng.integers(20, 600))
        x0, y0 = int(rng.integers(0, 1024 - w)), int(rng.integers(0, 768 - h))
        rows.append(
            {
                "processid": f"SYNTH{i:04d}-24",
                "split": _SPLITS[i % len(_SPLITS)],
                "order": _ORDERS[i % len(_ORDERS)],
                "family": f"Family{i % 2}",
                "genus": None,
                "species": None,
                "image_measurement_value": int(0.3 * w * h),
                "x0": float(x0),
                "y0": float(y0),
                "x1": float(x0 + w),
                "y1": float(y0 + h),
            }
        )
    return pa.Table.from_pylist(rows)


def _image(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("tree")
    write_images(root, _table(), packages=("cropped_256", "original_256"), workers=1, seed=3)
    return root


def test_tree_has_every_image_at_its_release_path(tree: Path) -> None:
    for row in _table().to_pylist():
        box = (row["x0"], row["y0"], row["x1"], row["y1"])
        cropped = Image.open(tree / image_relpath(row["processid"], row["split"], "cropped_256"))
        assert cropped.format == "JPEG" and cropped.size == short_side_size(crop_geometry(box).size)
        original = Image.open(tree / image_relpath(row["processid"], row["split"], "original_256"))
        assert original.size == (341, 256)
    assert len(list(tree.rglob("*.jpg"))) == 12
    assert not list(tree.rglob("*.tmp"))


def test_rerun_keeps_complete_files_and_fills_gaps(tree: Path) -> None:
    row = _table().to_pylist()[0]
    kept = tree / image_relpath(row["processid"], row["split"], "original_256")
    gap = tree / image_relpath(row["processid"], row["split"], "cropped_256")
    before, stamp = gap.read_bytes(), kept.stat().st_mtime_ns
    gap.unlink()
    write_images(tree, _table(), packages=("cropped_256", "original_256"), workers=1, seed=3)
    assert gap.read_bytes() == before and kept.stat().st_mtime_ns == stamp


def test_gap_in_a_full_run_is_filled_from_the_original(tmp_path: Path) -> None:
    """A missing cropped_256 of an original_full run is re-derived from the original, not the fast path."""
    table = _table(2)
    write_images(tmp_path, table, packages=("original_full", "cropped_256"), workers=1)
    row = table.to_pylist()[1]
    gap = tmp_path / image_relpath(row["processid"], row["split"], "cropped_256")
    before = gap.read_bytes()
    gap.unlink()
    write_images(tmp_path, table, packages=("original_full", "cropped_256"), workers=1)
    assert gap.read_bytes() == before


def test_output_does_not_depend_on_workers(tree: Path, tmp_path: Path) -> None:
    write_images(tmp_path, _table(), packages=("cropped_256", "original_256"), workers=2, seed=3)
    for path in tree.rglob("*.jpg"):
        assert (tmp_path / path.relative_to(tree)).read_bytes() == path.read_bytes()


def test_full_packages_are_derived_with_the_crop_procedure() -> None:
    row = _table().to_pylist()[1]
    images = render_packages(row, ("original_full", "cropped", "cropped_256", "original_256"), seed=0)
    geometry = crop_geometry((row["x0"], row["y0"], row["x1"], row["y1"]))
    assert images["original_full"].size == (1024, 768)
    assert images["cropped"].size == geometry.size
    assert images["cropped_256"].size == short_side_size(geometry.size)
    assert images["original_256"].size == (341, 256)


def test_direct_256_render_matches_the_crop_of_the_original() -> None:
    """The fast path (render through the crop window) gives what cropping the full original gives."""
    for row in _table().to_pylist()[:3]:
        fast = np.asarray(render_packages(row, ("cropped_256",), seed=0)["cropped_256"], dtype=float)
        exact = np.asarray(render_packages(row, ("cropped", "cropped_256"), seed=0)["cropped_256"], dtype=float)
        assert fast.shape == exact.shape
        assert np.abs(fast - exact).mean() < 8, row["processid"]


def test_zip_packages_hold_the_tree_files(tree: Path, tmp_path: Path) -> None:
    write_images(tmp_path, _table(), packages=("cropped_256", "original_256"), zip=True, workers=1, seed=3)
    names = set(zip_package_names("cropped_256", per_partition=True)) | set(
        zip_package_names("original_256", per_partition=True)
    )
    assert {p.name for p in tmp_path.iterdir()} == names
    members = {}
    for name in names:
        with zipfile.ZipFile(tmp_path / name) as archive:
            for info in archive.infolist():
                assert info.compress_type == zipfile.ZIP_STORED
                members[info.filename] = archive.read(info)
    files = {path.relative_to(tree).as_posix(): path.read_bytes() for path in tree.rglob("*.jpg")}
    assert members == files
    with ImageStore.open(tmp_path, "cropped_256") as store:
        for row in _table().to_pylist():
            relpath = image_relpath(row["processid"], row["split"], "cropped_256")
            assert store.read(row["processid"], row["split"]) == files[relpath]


def test_zip_of_a_whole_package_is_multipart(tmp_path: Path) -> None:
    write_images(tmp_path, _table(3), packages=("cropped",), zip=True, workers=1)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(zip_package_names("cropped"))
    with ImageStore.open(tmp_path, "cropped") as store:
        row = _table(3).to_pylist()[2]
        assert _image(store.read(row["processid"], row["split"])).size[1] == min(
            crop_geometry((row["x0"], row["y0"], row["x1"], row["y1"])).size
        )


def test_zip_rerun_is_a_no_op(tmp_path: Path) -> None:
    write_images(tmp_path, _table(2), packages=("cropped_256",), zip=True, workers=1)
    stamps = {p: p.stat().st_mtime_ns for p in tmp_path.iterdir()}
    write_images(tmp_path, _table(2), packages=("cropped_256",), zip=True, workers=1)
    assert {p: p.stat().st_mtime_ns for p in tmp_path.iterdir()} == stamps


def test_bad_box_names_the_record(tmp_path: Path) -> None:
    table = _table(2).to_pylist()
    table[1]["x1"] = 2000.0
    with pytest.raises(ValueError, match="SYNTH0001-24"):
        write_images(tmp_path, pa.Table.from_pylist(table), workers=1)


def test_missing_columns_and_packages_are_reported(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="x0"):
        write_images(tmp_path, _table(1).drop(["x0"]), workers=1)
    with pytest.raises(ValueError, match="unknown"):
        write_images(tmp_path, _table(1), packages=("thumbnails",), workers=1)
