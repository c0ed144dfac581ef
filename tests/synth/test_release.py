"""write_release end to end: official layout, determinism, images through synth.images, the job."""

from __future__ import annotations

from pathlib import Path

import pytest

from bioscan_stream.constants import METADATA_CSV, METADATA_JSONLD
from bioscan_stream.layout import image_relpath
from bioscan_stream.metadata import BBOX_RELPATH, read_bbox, read_metadata
from bioscan_stream.synth.release import write_release
from jobs.synth_release import main


def test_deterministic_for_a_seed(tmp_path: Path) -> None:
    for name, seed in (("a", 5), ("b", 5), ("c", 6)):
        write_release(tmp_path / name, samples=1500, seed=seed, images=False)
    csv = {name: (tmp_path / name / METADATA_CSV).read_bytes() for name in "abc"}
    assert csv["a"] == csv["b"]
    assert csv["a"] != csv["c"]
    assert (tmp_path / "a" / BBOX_RELPATH).read_bytes() == (tmp_path / "b" / BBOX_RELPATH).read_bytes()


def test_layout_and_round_trip(tmp_path: Path) -> None:
    table = write_release(tmp_path, samples=400, seed=1, images=False)
    assert (tmp_path / METADATA_JSONLD).is_file()
    back = read_metadata(tmp_path)
    assert back.num_rows == 400
    assert back["processid"].to_pylist() == table["processid"].to_pylist()
    assert back["dna_barcode"].to_pylist() == table["dna_barcode"].to_pylist()
    bbox = read_bbox(tmp_path)
    assert bbox["x1"].to_pylist() == [float(v) for v in table["x1"].to_pylist()]


def test_images_land_at_their_official_paths(tmp_path: Path) -> None:
    table = write_release(tmp_path, samples=12, seed=2, packages=("cropped_256",), workers=1)
    for pid, split in zip(table["processid"].to_pylist(), table["split"].to_pylist(), strict=True):
        assert (tmp_path / image_relpath(pid, split, "cropped_256")).is_file()


def test_job_smoke_no_images(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(tmp_path / "r"), "--samples", "300", "--seed", "3", "--no-images"]) == 0
    assert (tmp_path / "r" / METADATA_CSV).is_file()
    assert not (tmp_path / "r" / "bioscan5m" / "images").exists()
    assert "wrote 300 records" in capsys.readouterr().out


def test_job_rejects_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(SystemExit):
        main([str(tmp_path), "--samples", "0"])
    with pytest.raises(SystemExit):
        main([str(tmp_path), "--packages", "thumbnails"])
