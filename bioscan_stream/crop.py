"""The published BIOSCAN-5M box -> crop -> 256 procedure (../shared/reference/cropping.md).

Sits between a detection box (raw, in original 1024x768 pixels; the bbox table) and the `cropped`,
`cropped_256` and `original_256` image packages. The synthetic release derives its crops with these same
functions from the true box, so crop models trained on it have exact ground truth; a real detector's box
goes through the same path.

Steps: expand the raw box by 1.4 (grow = 0.4 * max(w, h), edges truncated with `int()`), grow it to 4:3
(portrait boxes to 3:4, then the crop is rotated 90 degrees so it is landscape), pad whatever lies outside
the image with RGB (204, 218, 243), and resize so the shorter side is 256 (bicubic).

Two named procedures (`CROP_PRESETS`, applied by `crop_with_preset`): `bioscan5m` (the steps above) and
`bioscan1m` (the BIOSCAN-1M crops: the same 1.4 expansion, no 4:3 step, no rotation, pad (240, 240, 240);
hence 1M `cropped_256` images of 279-375 x 256 rather than ~341 x 256).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

from bioscan_stream.constants import CROP_ASPECT, CROP_EXPAND_RATIO, CROP_PAD_RGB, RESIZED_SHORT_SIDE

Box = tuple[int, int, int, int]


@dataclass(frozen=True)
class CropGeometry:
    """Where a crop lies on the original image, before any pixels are touched.

    `box` is the 4:3 (or 3:4 when `rotate`) window in original pixel coordinates; it may extend past the
    image edges, which are then padded. `rotate` means the window is portrait and the crop is turned 90
    degrees counter-clockwise to be landscape.
    """

    box: Box
    rotate: bool

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) of the crop as saved, i.e. after the rotation."""
        width, height = self.box[2] - self.box[0], self.box[3] - self.box[1]
        return (height, width) if self.rotate else (width, height)


def expand_box(box: Sequence[float], ratio: float = CROP_EXPAND_RATIO) -> Box:
    """Grow a raw box equally on both axes by `(ratio - 1) * max(w, h)`, as the crop tool does.

    The edges are truncated with `int()` (towards zero), exactly like the published tool, so a box near
    the top-left edge moves by one pixel less than one near the bottom-right.
    """
    x0, y0, x1, y1 = (round(v) for v in box)
    grow = round(ratio - 1.0, 9) * max(
        x1 - x0, y1 - y0
    )  # 1.4 - 1.0 is 0.39999999999999991 in floats; the tool uses 0.4
    return int(x0 - grow / 2), int(y0 - grow / 2), int(x1 + grow / 2), int(y1 + grow / 2)


def _grow_to_aspect(box: Box, aspect: float) -> Box:
    """Grow the short side of `box` symmetrically until width / height == aspect (to the pixel)."""
    x0, y0, x1, y1 = box
    width, height = x1 - x0, y1 - y0
    if width < aspect * height:
        new_width = round(aspect * height)
        x0 -= (new_width - width) // 2
        return x0, y0, x0 + new_width, y1
    new_height = round(width / aspect)
    y0 -= (new_height - height) // 2
    return x0, y0, x1, y0 + new_height


def crop_geometry(
    box: Sequence[float], *, ratio: float = CROP_EXPAND_RATIO, aspect: float | None = CROP_ASPECT
) -> CropGeometry:
    """The crop window of a raw box: expanded by `ratio`, then grown to `aspect` (its inverse if taller than wide).

    `aspect=None` keeps the expanded box as it is and never rotates (the BIOSCAN-1M procedure).
    """
    expanded = expand_box(box, ratio)
    if aspect is None:
        return CropGeometry(expanded, False)
    rotate = (expanded[3] - expanded[1]) > (expanded[2] - expanded[0])
    return CropGeometry(_grow_to_aspect(expanded, 1 / aspect if rotate else aspect), rotate)


def crop_window(image: Image.Image, window: Box, *, pad_rgb: tuple[int, int, int] = CROP_PAD_RGB) -> Image.Image:
    """Cut `window` out of `image`, filling the part outside the image with `pad_rgb` (never black)."""
    x0, y0, x1, y1 = window
    out = Image.new("RGB", (x1 - x0, y1 - y0), pad_rgb)
    inner = (max(x0, 0), max(y0, 0), min(x1, image.width), min(y1, image.height))
    if inner[0] < inner[2] and inner[1] < inner[3]:
        out.paste(image.convert("RGB").crop(inner), (inner[0] - x0, inner[1] - y0))
    return out


def crop_from_box(
    image: Image.Image,
    box: Sequence[float],
    *,
    ratio: float = CROP_EXPAND_RATIO,
    aspect: float | None = CROP_ASPECT,
    pad_rgb: tuple[int, int, int] = CROP_PAD_RGB,
) -> Image.Image:
    """The `cropped` image of an original and its raw detection box (landscape 4:3 with the default `aspect`)."""
    geometry = crop_geometry(box, ratio=ratio, aspect=aspect)
    crop = crop_window(image, geometry.box, pad_rgb=pad_rgb)
    return crop.transpose(Image.Transpose.ROTATE_90) if geometry.rotate else crop


def short_side_size(size: tuple[int, int], short_side: int = RESIZED_SHORT_SIDE) -> tuple[int, int]:
    """(width, height) after scaling `size` so its shorter side is `short_side` (1024x768 -> 341x256)."""
    width, height = size
    if width >= height:
        return max(1, round(width * short_side / height)), short_side
    return short_side, max(1, round(height * short_side / width))


def resize_short_side(image: Image.Image, short_side: int = RESIZED_SHORT_SIDE) -> Image.Image:
    """Bicubic resize so the shorter side is `short_side` (the `*_256` packages)."""
    return image.resize(short_side_size(image.size, short_side), Image.Resampling.BICUBIC)


@dataclass(frozen=True)
class CropPreset:
    """A named box -> crop -> resize procedure: expansion ratio, aspect (None: keep the expanded box), padding."""

    name: str
    ratio: float = CROP_EXPAND_RATIO
    aspect: float | None = CROP_ASPECT
    pad_rgb: tuple[int, int, int] = CROP_PAD_RGB
    short_side: int = RESIZED_SHORT_SIDE


#: The procedures of the two releases (../shared/reference/cropping.md, "Two procedures").
CROP_PRESETS: dict[str, CropPreset] = {
    "bioscan5m": CropPreset("bioscan5m"),
    "bioscan1m": CropPreset("bioscan1m", aspect=None, pad_rgb=(240, 240, 240)),
}


def get_crop_preset(preset: CropPreset | str) -> CropPreset:
    """The preset itself, or the one named `preset` (`bioscan5m`, `bioscan1m`)."""
    if isinstance(preset, CropPreset):
        return preset
    if preset not in CROP_PRESETS:
        raise ValueError(f"unknown crop preset {preset!r}; known: {sorted(CROP_PRESETS)}")
    return CROP_PRESETS[preset]


def crop_with_preset(
    image: Image.Image | np.ndarray, box: Sequence[float], preset: CropPreset | str = "bioscan5m"
) -> tuple[Image.Image, Image.Image]:
    """(`cropped`, `cropped_256`) of an original (PIL or RGB uint8 array) and its raw box, made as `preset` says."""
    preset = get_crop_preset(preset)
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    cropped = crop_from_box(image, box, ratio=preset.ratio, aspect=preset.aspect, pad_rgb=preset.pad_rgb)
    return cropped, resize_short_side(cropped, preset.short_side)
