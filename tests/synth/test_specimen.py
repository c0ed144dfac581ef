"""The specimen renderer: the organism fills the given box, has about the given area, and looks like its kin."""

from __future__ import annotations

from itertools import combinations

import numpy as np
import pytest
from PIL import Image

from bioscan_stream.synth.specimen import render_original, render_view
from bioscan_stream.synth.well import FULL_VIEW, Viewport, render_background

_TAXA = {
    "Diptera": ("Phoridae", "Megaselia"),
    "Coleoptera": ("Staphylinidae", "Atheta"),
    "Hymenoptera": ("Braconidae", "Apanteles"),
    "Araneae": ("Linyphiidae", "Erigone"),
}


def _record(order: str | None, box: tuple[int, int, int, int], fill: float = 0.3, **ranks: str | None) -> dict:
    family, genus = _TAXA.get(order or "", (None, None))
    x0, y0, x1, y1 = box
    record = {"processid": "TEST1-24", "order": order, "family": family, "genus": genus, "species": None}
    return (
        record
        | ranks
        | {"x0": x0, "y0": y0, "x1": x1, "y1": y1, "image_measurement_value": fill * (x1 - x0) * (y1 - y0)}
    )


def _organism_mask(record: dict, seed: int) -> np.ndarray:
    """Pixels the organism changed: the photo against the empty well of the same seed."""
    photo = np.asarray(render_original(record, seed=seed), dtype=np.int16)
    well = np.asarray(render_background(seed), dtype=np.int16)
    return np.abs(photo - well).max(axis=2) > 10


@pytest.mark.parametrize(
    ("order", "box"),
    [
        ("Diptera", (400, 300, 430, 322)),  # tiny
        ("Coleoptera", (120, 200, 420, 430)),
        ("Hymenoptera", (300, 60, 980, 700)),  # frame-filling
        ("Araneae", (600, 100, 700, 400)),  # portrait
        (None, (50, 500, 250, 560)),  # unlabelled, elongated
    ],
)
def test_organism_bbox_matches_the_box(order: str | None, box: tuple[int, int, int, int]) -> None:
    mask = _organism_mask(_record(order, box), seed=3)
    ys, xs = np.nonzero(mask)
    drawn = (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
    tolerance = max(3, round(0.02 * max(box[2] - box[0], box[3] - box[1])))
    assert np.abs(np.array(drawn) - np.array(box)).max() <= tolerance, (drawn, box)


@pytest.mark.parametrize(("order", "fill"), [("Diptera", 0.15), ("Coleoptera", 0.3), ("Hymenoptera", 0.45)])
def test_organism_area_follows_the_pixel_count(order: str, fill: float) -> None:
    record = _record(order, (200, 150, 600, 450), fill)
    area = _organism_mask(record, seed=5).sum()
    assert area == pytest.approx(record["image_measurement_value"], rel=0.3)


def test_render_is_deterministic_in_the_seed() -> None:
    record = _record("Coleoptera", (300, 300, 500, 450))
    first, again = render_original(record, seed=1), render_original(record, seed=1)
    assert first.size == (1024, 768) and first.mode == "RGB"
    assert first.tobytes() == again.tobytes()
    assert first.tobytes() != render_original(record, seed=2).tobytes()


def test_view_of_the_full_frame_equals_the_original() -> None:
    record = _record("Hymenoptera", (300, 300, 500, 450))
    assert render_view(record, seed=4, viewport=FULL_VIEW).tobytes() == render_original(record, seed=4).tobytes()


def test_view_past_the_edge_is_padded() -> None:
    view = render_view(_record("Diptera", (0, 0, 60, 40)), seed=0, viewport=Viewport((-40, -30, 120, 90), (160, 120)))
    assert view.getpixel((2, 2)) == (204, 218, 243)


def _histogram(record: dict, seed: int) -> np.ndarray:
    """Normalised 4x4x4 colour histogram of the organism's pixels."""
    photo = np.asarray(render_original(record, seed=seed))
    pixels = photo[_organism_mask(record, seed)] // 64
    counts = np.bincount(pixels[:, 0] * 16 + pixels[:, 1] * 4 + pixels[:, 2], minlength=64)
    return counts / counts.sum()


def test_same_genus_looks_closer_than_other_orders() -> None:
    box = (250, 200, 650, 500)
    groups = {order: [_histogram(_record(order, box), seed) for seed in range(3)] for order in _TAXA}
    within = [np.abs(a - b).sum() for hists in groups.values() for a, b in combinations(hists, 2)]
    between = [np.abs(a - b).sum() for x, y in combinations(groups, 2) for a in groups[x] for b in groups[y]]
    assert np.mean(within) < 0.7 * np.mean(between), (np.mean(within), np.mean(between))


def test_records_without_taxonomy_still_render() -> None:
    image = render_original(_record(None, (100, 100, 200, 180), family=None, genus=None), seed=9)
    assert isinstance(image, Image.Image) and image.size == (1024, 768)


@pytest.mark.parametrize("count", [None, float("nan"), -1])
def test_missing_pixel_count_still_fills_the_box(count: float | None) -> None:
    box = (300, 200, 500, 330)
    record = _record("Hymenoptera", box) | {"image_measurement_value": count}
    ys, xs = np.nonzero(_organism_mask(record, seed=2))
    assert abs(xs.min() - box[0]) <= 3 and abs(xs.max() + 1 - box[2]) <= 3
    assert abs(ys.min() - box[1]) <= 3 and abs(ys.max() + 1 - box[3]) <= 3


@pytest.mark.parametrize("seed", range(4))  # the seeds cover mirrored and unmirrored pooled wells
def test_background_window_equals_the_crop_of_the_full_well(seed: int) -> None:
    full = np.asarray(render_background(seed).crop((100, 50, 500, 350)), dtype=float)
    view = np.asarray(render_background(seed, Viewport((100, 50, 500, 350), (400, 300))), dtype=float)
    assert np.abs(full - view).mean() < 1.5


def test_backgrounds_differ_between_photos() -> None:
    wells = [render_background(seed).tobytes() for seed in range(3)]
    assert len(set(wells)) == 3
