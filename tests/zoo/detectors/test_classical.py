"""The classical detector: exact synthetic boxes, the crop it feeds, bad input, and the 18 real fixture photos."""

from __future__ import annotations

import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from PIL import Image

from bioscan_stream.crop import crop_from_box, crop_geometry, crop_with_preset, resize_short_side
from bioscan_stream.layout import image_relpath
from bioscan_stream.synth.release import write_release
from bioscan_stream.synth.well import FULL_VIEW, render_background
from zoo.detectors import Detection, create_detector, list_detectors

Box = tuple[float, float, float, float]


def _iou(a: Box, b: Box) -> float:
    width = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    height = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - width * height
    return width * height / union


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict[str, object]]]:
    """A 48-record synthetic release with `original_full` images (1024x768, exact boxes), and its rows."""
    root = tmp_path_factory.mktemp("synth_originals")
    table: pa.Table = write_release(root, samples=48, seed=11, packages=("original_full",), workers=1)
    rows = [
        row
        for row in table.select(["processid", "split", "x0", "y0", "x1", "y1"]).to_pylist()
        if (root / image_relpath(row["processid"], row["split"], "original_full")).exists()
    ]
    return root, rows


def _image(root: Path, row: dict[str, object], package: str) -> np.ndarray:
    path = root / image_relpath(str(row["processid"]), str(row["split"]), package)
    return np.asarray(Image.open(path).convert("RGB"))


def _true_box(row: dict[str, object]) -> Box:
    return tuple(float(row[k]) for k in ("x0", "y0", "x1", "y1"))  # type: ignore[arg-type,return-value]


@pytest.fixture(scope="module")
def detector() -> object:
    return create_detector("classical")


def test_synthetic_originals_reach_mean_iou_0_9(synthetic: tuple[Path, list[dict[str, object]]], detector) -> None:
    root, rows = synthetic
    detections = detector.detect([_image(root, row, "original_full") for row in rows])
    assert len(rows) >= 40 and all(d.box is not None for d in detections)
    ious = [_iou(d.box, _true_box(row)) for d, row in zip(detections, rows, strict=True)]
    assert np.mean(ious) >= 0.9, sorted(ious)[:5]
    assert all(0.0 <= d.score <= 1.0 for d in detections)


def test_boxes_are_in_original_pixels_whatever_the_input_size(
    synthetic: tuple[Path, list[dict[str, object]]], detector
) -> None:
    """The photos at 1024x768 and resized to 341x256 (as `original_256`): the boxes agree once scaled by 3."""
    root, rows = synthetic
    full = [_image(root, row, "original_full") for row in rows[:16]]
    small = [np.asarray(resize_short_side(Image.fromarray(image))) for image in full]
    assert small[0].shape == (256, 341, 3)
    ious = []
    for big, little in zip(detector.detect(full), detector.detect(small), strict=True):
        scaled = (little.box[0] * 1024 / 341, little.box[1] * 3, little.box[2] * 1024 / 341, little.box[3] * 3)
        ious.append(_iou(big.box, scaled))
    assert np.mean(ious) > 0.9 and min(ious) > 0.7, ious


def test_crops_are_crop_py_applied_to_the_detected_box(
    synthetic: tuple[Path, list[dict[str, object]]], detector
) -> None:
    """The crop of a detection is `bioscan_stream.crop` on that box, and its window holds the true organism."""
    root, rows = synthetic
    images = [_image(root, row, "original_full") for row in rows]
    holds = 0
    for image, detection, row in zip(images, detector.detect(images), rows, strict=True):
        cropped, cropped_256 = crop_with_preset(image, detection.box, "bioscan5m")
        expected = crop_from_box(Image.fromarray(image), detection.box)
        assert cropped.tobytes() == expected.tobytes()
        assert cropped_256.tobytes() == resize_short_side(expected).tobytes()
        window, true = crop_geometry(detection.box).box, _true_box(row)
        holds += window[0] <= true[0] and window[1] <= true[1] and window[2] >= true[2] and window[3] >= true[3]
    assert holds >= 0.9 * len(rows)


@pytest.mark.parametrize(("height", "factor"), [(256, 1), (768, 3), (2160, 8)])
def test_a_dark_bar_on_a_flat_floor_is_boxed_to_the_working_pixel(height: int, factor: int, detector) -> None:
    """No well rim at all (a flat floor): the bar is still found, its box exact to one reduction block."""
    width = height * 4 // 3
    image = np.full((height, width, 3), 200, np.uint8)
    bar = (width // 3 + 5, height // 2 + 2, width // 2 + 7, height // 2 + height // 12)
    image[bar[1] : bar[3], bar[0] : bar[2]] = (120, 90, 60)
    [detection] = detector.detect([image])
    assert detection.box is not None and 0 < detection.score < 0.7  # no well found: a doubtful photo
    assert all(abs(found - true) < factor for found, true in zip(detection.box, bar, strict=True)), detection.box


@pytest.mark.parametrize(
    ("image", "reason"),
    [
        (np.zeros((768, 1024, 3), np.uint8), "dark_image"),
        (np.full((768, 1024, 3), 20, np.uint8), "dark_image"),
        (np.full((256, 341, 3), 190, np.uint8), "uniform_image"),
        (np.full((256, 341, 3), 255, np.uint8), "uniform_image"),
        (np.zeros((256, 341), np.uint8), "not_an_rgb_photo"),
        (np.zeros((256, 341, 3), np.float32), "not_an_rgb_photo"),
        (np.zeros((8, 8, 3), np.uint8), "not_an_rgb_photo"),
    ],
)
def test_what_is_not_a_well_photo_is_rejected_with_a_reason(image: np.ndarray, reason: str, detector) -> None:
    [detection] = detector.detect([image])
    assert detection.box is None and detection.score == 0.0 and detection.reason.startswith(reason)


def test_empty_wells_are_rejected_or_doubtful(detector) -> None:
    """Synthetic wells without an organism (bubbles, fibres, arcs): no box, or a low confidence."""
    detections = detector.detect([np.asarray(render_background(seed, FULL_VIEW)) for seed in range(8)])
    assert sum(d.box is None for d in detections) >= 6
    assert all(d.reason == "no_specimen_found" or d.score < 0.5 for d in detections)


def test_a_batch_mixes_sizes_and_rejects_without_failing(
    synthetic: tuple[Path, list[dict[str, object]]], detector
) -> None:
    root, rows = synthetic
    small = np.asarray(resize_short_side(Image.fromarray(_image(root, rows[1], "original_full"))))
    batch = [_image(root, rows[0], "original_full"), np.zeros((100, 100, 3), np.uint8), small]
    first, black, small = detector.detect(batch)
    assert first.box is not None and small.box is not None and black.reason == "dark_image"
    assert first == detector.detect(batch[:1])[0]  # a box depends only on its own image (deterministic)


def test_registry_settings_and_pickling(detector) -> None:
    assert "classical" in list_detectors()
    fingerprint = create_detector("classical", work_height=384).fingerprint()
    assert fingerprint["name"] == "classical" and fingerprint["work_height"] == 384
    with pytest.raises(ValueError, match="unknown detector"):
        create_detector("yolo")
    with pytest.raises(TypeError):
        create_detector("classical", threshold=3)
    image = np.asarray(render_background(3, FULL_VIEW))
    assert pickle.loads(pickle.dumps(detector)).detect([image]) == detector.detect([image])
    assert isinstance(detector.detect([image])[0], Detection)


def test_building_the_classical_detector_imports_no_torch() -> None:
    """A crop actor with the default detector stays light: torch and transformers load only for `detr`."""
    code = "import sys; from zoo.detectors import create_detector; create_detector('classical'); print(sorted("
    code += "m for m in ('torch', 'transformers') if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


# Whole-insect extents of the 18 fixture photos (2880x2160), read by eye off an overlay of the detector's boxes
# (benchmarks/figures/crop_classical_real.png, 2026-12-06), to about +-20 px. `on_rim`: the insect reaches into
# the rim or the frame edge.
REAL_EXTENTS: dict[str, tuple[Box, bool]] = {
    "Archaeognatha": ((544, 712, 1784, 1512), False),
    "Blattodea": ((1024, 576, 2104, 1528), False),
    "Coleoptera": ((952, 736, 1928, 1520), False),
    "Dermaptera": ((496, 48, 2064, 2040), True),
    "Diptera": ((281, 272, 2594, 1782), True),
    "Embioptera": ((504, 0, 2608, 1856), True),
    "Ephemeroptera": ((650, 60, 2328, 2072), True),
    "Hemiptera": ((592, 352, 1888, 1416), False),
    "Hymenoptera": ((944, 592, 1776, 1704), False),
    "Lepidoptera": ((568, 480, 1848, 1568), False),
    "Neuroptera": ((1160, 872, 1760, 2056), False),
    "Orthoptera": ((416, 80, 2344, 2024), True),
    "Plecoptera": ((816, 340, 2676, 1416), True),
    "Psocodea": ((784, 504, 1752, 1872), False),
    "Strepsiptera": ((1168, 960, 1664, 1312), False),
    "Thysanoptera": ((1352, 984, 1784, 1456), False),
    "Trichoptera": ((376, 456, 2192, 1448), False),
    "Zoraptera": ((384, 213, 2040, 2160), True),
}


RealDetections = dict[str, tuple[Detection, tuple[int, int]]]  # name -> (detection, (width, height))


@pytest.fixture(scope="module")
def real_detections(shared_fixtures: Path, detector) -> RealDetections:
    out = {}
    for name in REAL_EXTENTS:
        image = np.asarray(Image.open(shared_fixtures / "real_images" / f"{name}.jpg").convert("RGB"))
        out[name] = (detector.detect([image])[0], (image.shape[1], image.shape[0]))
    return out


def test_real_photos_boxes_lie_in_the_image(real_detections: RealDetections) -> None:
    for name, (detection, (width, height)) in real_detections.items():
        assert detection.box is not None, name
        x0, y0, x1, y1 = detection.box
        assert 0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height, name


def test_real_photos_boxes_never_take_in_the_rim(real_detections: RealDetections) -> None:
    """No box passes the insect's extent by more than 150 px (5% of the width): the rim never merges in."""
    for name, (detection, _) in real_detections.items():
        extent, _ = REAL_EXTENTS[name]
        box = detection.box
        assert box[0] >= extent[0] - 150 and box[1] >= extent[1] - 150, (name, box)
        assert box[2] <= extent[2] + 150 and box[3] <= extent[3] + 150, (name, box)


def test_real_photos_boxes_cover_the_whole_insect(real_detections: RealDetections) -> None:
    """Legs, antennae and wings inside the box to 30 px, except Ephemeroptera's faint cerci (a known miss)."""
    covered = []
    for name, (detection, _) in real_detections.items():
        extent, _ = REAL_EXTENTS[name]
        box = detection.box
        if all(box[i] <= extent[i] + 30 for i in (0, 1)) and all(box[i] >= extent[i] - 30 for i in (2, 3)):
            covered.append(name)
    assert len(covered) >= 17, sorted(set(REAL_EXTENTS) - set(covered))


def test_real_photos_clear_of_the_rim_score_higher(real_detections: RealDetections) -> None:
    """Insects lying on the rim are the doubtful ones: they get the lower confidences."""
    clear = [d.score for name, (d, _) in real_detections.items() if not REAL_EXTENTS[name][1]]
    on_rim = [d.score for name, (d, _) in real_detections.items() if REAL_EXTENTS[name][1]]
    assert min(clear) > 0.9 and np.median(on_rim) < min(clear)


def test_real_photos_resized_to_341x256_give_the_same_boxes(shared_fixtures: Path, detector) -> None:
    """As `original_256` (bicubic, shorter side 256: 9x fewer pixels), every box stays within 60 px (2%)."""
    for name, (extent, _) in REAL_EXTENTS.items():
        photo = Image.open(shared_fixtures / "real_images" / f"{name}.jpg").convert("RGB")
        small = np.asarray(resize_short_side(photo))
        [detection] = detector.detect([small])
        sx, sy = photo.width / small.shape[1], photo.height / small.shape[0]
        box = (detection.box[0] * sx, detection.box[1] * sy, detection.box[2] * sx, detection.box[3] * sy)
        assert all(abs(found - true) < 60 for found, true in zip(box, extent, strict=True)), (name, box)
