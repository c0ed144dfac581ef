"""Image transforms of the stream: JPEG bytes -> uint8 tensor per sample, normalised per batch.

Data flow: stages -> decoders -> **transforms**.

timm-style: train = random-resized crop + horizontal flip; eval = resize the short side to
`size / crop_pct` and take the centre `size` square. Two choices keep this near the decode limit:

- crop and resize are one Pillow call (`Image.resize(..., box=...)`): only the output pixels are
  resampled, never the whole resized image; eval decodes JPEGs with `Image.draft` at the smallest DCT
  scale that still covers the resize target (free 2-8x downscale for `original_full`, a no-op for
  `cropped_256`).
- per sample the result stays uint8 (4x less to move between processes); `normalize_batch` turns a
  stacked batch into float with the BIOSCAN mean/std in one vectorised pass.

Pillow-simd, when installed, is picked up transparently (it is the `PIL` module); its resize is ~4.5x
faster (../shared/reference/environment.md).
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from bioscan_stream.constants import BIOSCAN_MEAN, BIOSCAN_STD

__all__ = ["ImageTransform", "create_transform", "stack_images", "normalize_batch", "decode_rgb"]

_RESAMPLE = Image.Resampling.BILINEAR


def decode_rgb(data: bytes, *, draft_to: int | None = None) -> Image.Image:
    """Decode image bytes to RGB; `draft_to` lets a JPEG decode at a reduced DCT scale whose short side is
    still >= `draft_to` pixels."""
    image = Image.open(io.BytesIO(data))
    if draft_to is not None and image.format == "JPEG":
        image.draft("RGB", (draft_to, draft_to))
    return image.convert("RGB") if image.mode != "RGB" else image


def _to_uint8_chw(image: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.array(image, dtype=np.uint8)).permute(2, 0, 1)


@dataclass(frozen=True)
class ImageTransform:
    """JPEG bytes -> uint8 `(3, size, size)` tensor, timm-style (picklable; random draws use torch's RNG,
    which DataLoader seeds per worker).

    Args:
        train: random-resized crop + flip (True) or resize + centre crop (False).
        size: output side.
        crop_pct: eval resize target is `size / crop_pct` (timm's 0.875: 224 -> 256).
        scale, ratio: random-resized-crop area fraction and aspect ratio ranges.
        hflip: probability of a horizontal flip in training.
    """

    train: bool = False
    size: int = 224
    crop_pct: float = 0.875
    scale: tuple[float, float] = (0.08, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    hflip: float = 0.5

    def __call__(self, data: bytes) -> torch.Tensor:
        draft_to = None if self.train else math.floor(self.size / self.crop_pct)
        return self.apply(decode_rgb(data, draft_to=draft_to))

    def apply(self, image: Image.Image) -> torch.Tensor:
        """The transform of an already decoded RGB image (for readers that decode themselves)."""
        if self.train:
            image = image.resize((self.size, self.size), _RESAMPLE, box=self._random_box(*image.size))
            if torch.rand(()) < self.hflip:
                image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        else:
            resize = math.floor(self.size / self.crop_pct)
            image = image.resize((self.size, self.size), _RESAMPLE, box=self._center_box(*image.size, resize))
        return _to_uint8_chw(image)

    def _center_box(self, width: int, height: int, resize: int) -> tuple[float, float, float, float]:
        """Source box that resize-short-side-to-`resize` then centre-crop-`size` would sample."""
        factor = min(width, height) / resize
        side = self.size * factor
        left, top = (width - side) / 2, (height - side) / 2
        return (max(left, 0.0), max(top, 0.0), min(left + side, width), min(top + side, height))

    def _random_box(self, width: int, height: int) -> tuple[float, float, float, float]:
        """RandomResizedCrop's source box (Inception-style: 10 tries of area/aspect, then a centre fallback).

        Written out rather than imported: `import torchvision` costs ~10 s per worker on this machine.
        """
        area = width * height
        log_lo, log_hi = math.log(self.ratio[0]), math.log(self.ratio[1])
        for _ in range(10):
            draws = torch.rand(4).tolist()
            target = area * (self.scale[0] + draws[0] * (self.scale[1] - self.scale[0]))
            aspect = math.exp(log_lo + draws[1] * (log_hi - log_lo))
            w, h = round(math.sqrt(target * aspect)), round(math.sqrt(target / aspect))
            if 0 < w <= width and 0 < h <= height:
                left, top = int(draws[2] * (width - w + 1)), int(draws[3] * (height - h + 1))
                return (float(left), float(top), float(left + w), float(top + h))
        side = min(width, height)
        x0, y0 = (width - side) / 2, (height - side) / 2
        return (x0, y0, x0 + side, y0 + side)


def create_transform(*, train: bool, size: int = 224) -> ImageTransform:
    """The default stream transform for a split: training augmentations for `train`/`pretrain`."""
    return ImageTransform(train=train, size=size)


def stack_images(images: list[torch.Tensor]) -> torch.Tensor:
    """Stack `(3, H, W)` images into `(B, 3, H, W)`.

    The built-in transform returns channel-last pixels viewed as CHW. For those, numpy stacks the HWC
    buffers (one memcpy each) and the batch is a channels-last view: 8 ms per batch of 64 at 224 px here,
    against 38 ms for `torch.stack` of the CHW views and 157 ms for `torch.stack` of HWC uint8 (2 cores, 2026-11).
    """
    if images[0].dtype == torch.uint8 and images[0].permute(1, 2, 0).is_contiguous():
        return torch.from_numpy(np.stack([image.permute(1, 2, 0).numpy() for image in images])).permute(0, 3, 1, 2)
    return torch.stack(images)


def normalize_batch(
    images: torch.Tensor,
    mean: tuple[float, float, float] = BIOSCAN_MEAN,
    std: tuple[float, float, float] = BIOSCAN_STD,
    *,
    shared: bool = False,
) -> torch.Tensor:
    """uint8 `(..., 3, H, W)` -> float32 `(x / 255 - mean) / std` as one multiply-add in place.

    Channels-last input (what the stream's collation builds) is computed on its HWC buffer, where the
    per-channel constants broadcast over the innermost axis: 2x faster than over CHW planes here.
    `shared=True` (in DataLoader workers) writes into shared memory, so sending the batch to the main
    process does not copy it again (torch's `default_collate` does the same).
    """
    scale = torch.tensor([1 / (255 * s) for s in std], dtype=torch.float32)
    bias = torch.tensor([-m / s for m, s in zip(mean, std, strict=True)], dtype=torch.float32)
    last = images.movedim(-3, -1)
    channels_last = last.is_contiguous()
    source = last if channels_last else images
    out = torch.empty(source.shape, dtype=torch.float32)
    if shared:
        out.share_memory_()
    out.copy_(source)
    if channels_last:
        return torch.addcmul(bias, out, scale, out=out).movedim(-1, -3)
    return torch.addcmul(bias.view(3, 1, 1), out, scale.view(3, 1, 1), out=out)
