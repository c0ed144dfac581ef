"""Size fields of a record (release -> **sizes** -> metadata columns and mm conversions).

With the raw detector box (x0, y0, x1, y1) on the original image of size (W, H), `w = x1 - x0`,
`h = y1 - y0`: `area_fraction = round(w*h / (W*H), 4)` and `scale_factor = round(min(w, h) / 256, 4)`
(verified on real records). A 1024x768 original has 0.1554 mm per pixel (paper A4.1); a cropped_256
image has that times `scale_factor` per pixel.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from bioscan_stream.constants import MM_PER_PIXEL_ORIGINAL, RESIZED_SHORT_SIDE

_DECIMALS = 4


def size_fields(box: Sequence[float], image_size: Sequence[int]) -> tuple[float, float]:
    """(area_fraction, scale_factor) of a raw detection `box` (x0, y0, x1, y1) on an image (W, H).

    >>> size_fields((100, 200, 612, 456), (1024, 768))
    (0.1667, 1.0)

    The box coordinates may be numpy arrays (one entry per record); the results are then arrays too.

    Raises:
        ValueError: the box or the image has no area.
    """
    x0, y0, x1, y1 = box
    width, height = image_size
    w, h = x1 - x0, y1 - y0
    if np.any(np.asarray(w) <= 0) or np.any(np.asarray(h) <= 0) or width <= 0 or height <= 0:
        raise ValueError(f"box {tuple(box)} on image {tuple(image_size)} has no area")
    if np.ndim(w) or np.ndim(h):  # vectorised over records (the synthetic release writes millions)
        area, short = np.asarray(w * h / (width * height)), np.minimum(w, h) / RESIZED_SHORT_SIDE
        return np.round(area, _DECIMALS), np.round(short, _DECIMALS)  # type: ignore[return-value]
    return round(w * h / (width * height), _DECIMALS), round(min(w, h) / RESIZED_SHORT_SIDE, _DECIMALS)


def pixels_to_mm(pixels: float | np.ndarray, scale_factor: float | np.ndarray | None = None) -> float | np.ndarray:
    """Length in mm of `pixels` measured on an original (no `scale_factor`) or on a cropped_256 image."""
    mm_per_pixel = MM_PER_PIXEL_ORIGINAL if scale_factor is None else MM_PER_PIXEL_ORIGINAL * np.asarray(scale_factor)
    result = np.asarray(pixels, dtype=np.float64) * mm_per_pixel
    return float(result) if result.ndim == 0 else result


def pixel_area_to_mm2(
    pixel_count: float | np.ndarray, scale_factor: float | np.ndarray | None = None
) -> float | np.ndarray:
    """Area in mm^2 of `pixel_count` pixels (e.g. `image_measurement_value`, counted on the original)."""
    mm = pixels_to_mm(1.0, scale_factor)
    result = np.asarray(pixel_count, dtype=np.float64) * np.square(mm)
    return float(result) if result.ndim == 0 else result
