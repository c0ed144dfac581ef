"""write_release end to end: official layout, determinism, images from the true taxonomy, the job."""

from __future__ import annotations

from itertools import combinations
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from test_specimen import _histogram  # the colour feature of the renderer's own tests (tests/synth)

from bioscan_stream.constants import COLUMNS, METADATA_CSV, METADATA_JSONLD
from bioscan_stream.layout import image_relpath
from bioscan_stream.metadata import BBOX_RELPATH, read_bbox, read_metadata
from bioscan_stream.synth import release
from bioscan_stream.synth.release import image_table, write_release
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


def test_images_get_the_true_taxonomy_and_the_csv_keeps_the_masked_labels(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rendered: list[pa.Table] = []
    monkeypatch.setattr(release, "write_images", lambda root, table, **_: rendered.append(table))
    table = write_release(tmp_path / "img", samples=600, seed=4, images=True)
    write_release(tmp_path / "none", samples=600, seed=4, images=False)
    assert (tmp_path / "img" / METADATA_CSV).read_bytes() == (tmp_path / "none" / METADATA_CSV).read_bytes()
    csv = read_metadata(tmp_path / "img")
    assert csv.column_names == list(COLUMNS)
    for rank in ("order", "family", "genus", "species"):
        drawn, true, label = rendered[0][rank], table[f"true_{rank}"], csv[rank]
        assert drawn.null_count == 0 and drawn.to_pylist() == true.to_pylist()
        assert label.to_pylist() == table[rank].to_pylist()  # the CSV still has the masked labels
        labelled = label.is_valid()
        assert pc.all(pc.equal(label.filter(labelled), true.filter(labelled))).as_py()
    assert 0.5 < csv["species"].null_count / csv.num_rows < 0.99  # mostly masked, as in the release


def test_unlabelled_records_look_like_their_true_genus(release_20k: tuple[Path, pa.Table]) -> None:
    """Genus-unlabelled records are drawn as their true genus: masked labels would draw them all alike."""
    table = release_20k[1]
    by_genus: dict[tuple[str, str], list[dict]] = {}
    for record in image_table(table).filter(table["genus"].is_null()).to_pylist():
        by_genus.setdefault((record["order"], record["genus"]), []).append(record)
    common = sorted((key for key in by_genus if len(by_genus[key]) >= 2), key=lambda key: -len(by_genus[key]))
    same_order = [key for key in common if key[0] == common[0][0]][:3]  # 3 genera of the commonest order
    firsts: dict[str, tuple[str, str]] = {}
    for key in common:
        firsts.setdefault(key[0], key)
    other_orders = [key for order, key in firsts.items() if order != common[0][0]][:3]  # 1 genus each
    box = {"x0": 250, "y0": 200, "x1": 650, "y1": 500, "image_measurement_value": 0.3 * 400 * 300}  # same size
    hists = {key: [_histogram(r | box, seed=0) for r in by_genus[key][:2]] for key in same_order + other_orders}
    within = np.mean([np.abs(a - b).sum() for a, b in hists.values()])

    def between(pairs: list[tuple[tuple[str, str], tuple[str, str]]]) -> float:
        return float(np.mean([np.abs(a - b).sum() for x, y in pairs for a in hists[x] for b in hists[y]]))

    other = [(x, y) for x, y in combinations(hists, 2) if x[0] != y[0]]
    kin = list(combinations(same_order, 2))
    assert within < 0.7 * between(other), (within, between(other))
    assert within < 0.7 * between(kin), (within, between(kin))
