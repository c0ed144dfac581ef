"""Size fields and mm conversions (bioscan_stream/sizes.py) on worked numbers."""

from __future__ import annotations

import numpy as np
import pytest

from bioscan_stream.sizes import pixel_area_to_mm2, pixels_to_mm, size_fields


@pytest.mark.parametrize(
    ("box", "image_size", "expected"),
    [
        # w=512, h=256: 131072 / 786432 = 0.16667 -> 0.1667; min 256 / 256 = 1.0
        ((100, 200, 612, 456), (1024, 768), (0.1667, 1.0)),
        # w=64, h=80: 5120 / 786432 = 0.0065104 -> 0.0065; 64 / 256 = 0.25
        ((10.5, 20, 74.5, 100), (1024, 768), (0.0065, 0.25)),
        # w=300, h=1000 on 2880x2160: 300000 / 6220800 = 0.048225 -> 0.0482; 300 / 256 = 1.171875 -> 1.1719
        ((0, 0, 300, 1000), (2880, 2160), (0.0482, 1.1719)),
    ],
)
def test_size_fields_worked_examples(box: tuple, image_size: tuple, expected: tuple) -> None:
    assert size_fields(box, image_size) == expected


def test_box_without_area_is_refused() -> None:
    with pytest.raises(ValueError, match="has no area"):
        size_fields((10, 10, 10, 50), (1024, 768))


def test_pixels_to_mm() -> None:
    assert pixels_to_mm(100) == pytest.approx(15.54)  # 100 px * 0.1554 mm/px on an original
    assert pixels_to_mm(100, 0.25) == pytest.approx(3.885)  # cropped_256 px are 0.25 original px here
    np.testing.assert_allclose(pixels_to_mm(np.array([10, 20]), np.array([1.0, 2.0])), [1.554, 6.216])
    assert pixel_area_to_mm2(100) == pytest.approx(100 * 0.1554**2)
    assert pixel_area_to_mm2(150502) == pytest.approx(3634.5, abs=0.1)
