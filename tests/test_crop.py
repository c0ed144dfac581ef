"""The published box -> crop -> 256 procedure, checked pixel by pixel on a coordinate-coded image."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from bioscan_stream.constants import CROP_PAD_RGB
from bioscan_stream.crop import (
    CROP_PRESETS,
    crop_from_box,
    crop_geometry,
    crop_with_preset,
    expand_box,
    get_crop_preset,
    resize_short_side,
    short_side_size,
)


@pytest.fixture(scope="module")
def coded() -> Image.Image:
    """1024x768 image whose pixel (x, y) is (x % 256, y % 256, 16 * (x // 256) + y // 256): position readable."""
    ys, xs = np.mgrid[0:768, 0:1024]
    array = np.stack([xs % 256, ys % 256, 16 * (xs // 256) + ys // 256], axis=-1).astype(np.uint8)
    return Image.fromarray(array, "RGB")


def _at(image: Image.Image, x: int, y: int) -> tuple[int, int, int]:
    return image.getpixel((x, y))  # type: ignore[return-value]


def _coded_pixel(x: int, y: int) -> tuple[int, int, int]:
    return x % 256, y % 256, 16 * (x // 256) + y // 256


def test_expand_box_grows_by_40_percent_of_the_long_side() -> None:
    assert expand_box((100, 100, 200, 150)) == (80, 80, 220, 170)


def test_expand_box_truncates_towards_zero_like_the_tool() -> None:
    # grow = 0.4 * 11 = 4.4: left = int(1 - 2.2) = -1 (floor would give -2), right = int(14.2) = 14
    assert expand_box((1, 1, 12, 6)) == (-1, -1, 14, 8)


def test_landscape_crop_grows_height_to_4_3(coded: Image.Image) -> None:
    geometry = crop_geometry((100, 100, 200, 150))
    assert geometry.box == (80, 73, 220, 178) and not geometry.rotate
    crop = crop_from_box(coded, (100, 100, 200, 150))
    assert crop.size == (140, 105)
    assert _at(crop, 0, 0) == _coded_pixel(80, 73)
    assert _at(crop, 139, 104) == _coded_pixel(219, 177)


def test_portrait_crop_is_rotated_to_landscape(coded: Image.Image) -> None:
    geometry = crop_geometry((500, 300, 550, 400))
    assert geometry.box == (473, 280, 578, 420) and geometry.rotate
    crop = crop_from_box(coded, (500, 300, 550, 400))
    assert crop.size == geometry.size == (140, 105)
    # 90 degrees counter-clockwise: the window's right column becomes the crop's top row
    assert _at(crop, 0, 0) == _coded_pixel(577, 280)
    assert _at(crop, 139, 0) == _coded_pixel(577, 419)
    assert _at(crop, 0, 104) == _coded_pixel(473, 280)


def test_window_past_the_edge_is_padded_not_black(coded: Image.Image) -> None:
    crop = crop_from_box(coded, (0, 0, 50, 40))
    assert crop_geometry((0, 0, 50, 40)).box == (-15, -10, 65, 50)
    assert crop.size == (80, 60)
    assert _at(crop, 0, 0) == CROP_PAD_RGB
    assert _at(crop, 14, 30) == CROP_PAD_RGB
    assert _at(crop, 15, 10) == _coded_pixel(0, 0)
    assert _at(crop, 79, 59) == _coded_pixel(64, 49)


def test_pad_colour_is_configurable(coded: Image.Image) -> None:
    crop = crop_from_box(coded, (0, 0, 50, 40), pad_rgb=(240, 240, 240))
    assert _at(crop, 0, 0) == (240, 240, 240)


@pytest.mark.parametrize(
    ("size", "expected"), [((1024, 768), (341, 256)), ((140, 105), (341, 256)), ((768, 1024), (256, 341))]
)
def test_short_side_becomes_256(size: tuple[int, int], expected: tuple[int, int]) -> None:
    assert short_side_size(size) == expected
    assert resize_short_side(Image.new("RGB", size)).size == expected


def test_resize_is_bicubic(coded: Image.Image) -> None:
    crop = crop_from_box(coded, (100, 100, 200, 150))
    expected = crop.resize((341, 256), Image.Resampling.BICUBIC)
    assert resize_short_side(crop).tobytes() == expected.tobytes()


def test_bioscan5m_preset_is_the_published_procedure(coded: Image.Image) -> None:
    cropped, cropped_256 = crop_with_preset(coded, (500, 300, 550, 400), "bioscan5m")
    assert cropped.tobytes() == crop_from_box(coded, (500, 300, 550, 400)).tobytes()
    assert cropped_256.tobytes() == resize_short_side(cropped).tobytes()


def test_bioscan1m_preset_expands_only_never_rotates(coded: Image.Image) -> None:
    cropped, _ = crop_with_preset(coded, (500, 300, 550, 400), "bioscan1m")  # portrait box stays portrait
    assert expand_box((500, 300, 550, 400)) == (480, 280, 570, 420)
    assert cropped.size == (90, 140)
    assert _at(cropped, 0, 0) == _coded_pixel(480, 280)
    assert _at(cropped, 89, 139) == _coded_pixel(569, 419)
    padded, _ = crop_with_preset(np.asarray(coded), (0, 0, 50, 40), "bioscan1m")
    assert padded.size == (70, 60) and _at(padded, 0, 0) == (240, 240, 240)
    assert _at(padded, 10, 10) == _coded_pixel(0, 0)


def test_bioscan1m_preset_reproduces_the_1m_cropped_256_sizes(coded: Image.Image) -> None:
    """Landscape boxes with height/width 0.56-0.88 (the 1M specimens) give 279-375 x 256, 5M gives ~341 x 256."""
    rng = np.random.default_rng(0)
    for _ in range(40):
        width = int(rng.integers(60, 700))
        height = round(width * rng.uniform(0.56, 0.88))
        x0, y0 = int(rng.integers(0, 1024 - width)), int(rng.integers(0, 768 - height))
        box = (x0, y0, x0 + width, y0 + height)
        _, cropped_256 = crop_with_preset(coded, box, "bioscan1m")
        assert cropped_256.height == 256 and 279 <= cropped_256.width <= 375, (box, cropped_256.size)
        width_5m, height_5m = crop_with_preset(coded, box, "bioscan5m")[1].size
        assert height_5m == 256 and abs(width_5m - 341) <= 1  # 4:3 to the whole pixel
    assert get_crop_preset("bioscan1m") is CROP_PRESETS["bioscan1m"]
    with pytest.raises(ValueError, match="unknown crop preset"):
        get_crop_preset("bioscan2m")
