"""Image transforms of the stream: JPEG bytes -> uint8 tensor per sample, normalised per batch.

Data flow: stages -> decoders -> **transforms**.

timm-style: train = random-resized crop + horizontal flip; eval = resize the short side to
`size / crop_pct` and take the centre `size` square. What keeps this near the decode limit:

- JPEGs are decoded by `simplejpeg` (libjpeg-turbo straight into a numpy array: 0.56 ms against
  Pillow's 0.80 ms for a 341x256 image here, identical pixels for RGB and greyscale, CMYK within one
  level), at the smallest n/8 DCT scale that still covers the eval resize target (free downscale for
  `original_full`); other formats, and JPEGs libjpeg-turbo rejects, go through Pillow.
- eval at scale 1 (`cropped_256`: short side 256 = the resize target) is an integer centre crop,
  like torchvision's `Resize(256)` + `CenterCrop(224)` on such an image: no resampling at all.
  Otherwise crop and resize are one Pillow call (`Image.resize(..., box=...)`): only the output pixels
  are resampled, never the whole resized image.
- per sample the result stays uint8 (4x less to move between processes); `normalize_batch` turns a
  stacked batch into float with the BIOSCAN mean/std in one vectorised pass; in workers both write into
  reused shared-memory segments (`sharedbatch`).

Pillow-simd, when installed, is picked up transparently (it is the `PIL` module); its resize is ~4.5x
faster (../shared/reference/environment.md).
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass

import numpy as np
import simplejpeg
import torch
from PIL import Image

from bioscan_stream.constants import BIOSCAN_MEAN, BIOSCAN_STD
from bioscan_stream.stream import sharedbatch

__all__ = ["ImageTransform", "create_transform", "stack_images", "normalize_batch", "decode_rgb"]

#: Resampling filters by timm's interpolation names (its data configs use "bilinear" or "bicubic").
_RESAMPLE = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC}
_JPEG_MAGIC = b"\xff\xd8"


def decode_rgb(data: bytes, *, draft_to: int | None = None) -> np.ndarray:
    """Decode image bytes to an RGB `(H, W, 3)` uint8 array; `draft_to` lets a JPEG decode at a reduced DCT
    scale whose short side is still >= `draft_to` pixels."""
    if data[:2] == _JPEG_MAGIC:
        try:
            return simplejpeg.decode_jpeg(data, colorspace="RGB", min_height=draft_to or 0, min_width=draft_to or 0)
        except ValueError:
            pass  # a variant libjpeg-turbo rejects, or damage: Pillow decides (and names the error)
    image = Image.open(io.BytesIO(data))
    if draft_to is not None and image.format == "JPEG":
        image.draft("RGB", (draft_to, draft_to))
    return np.asarray(image.convert("RGB") if image.mode != "RGB" else image)


def _to_uint8_chw(pixels: np.ndarray) -> torch.Tensor:
    """`(H, W, 3)` -> a CHW view of contiguous HWC pixels (what `stack_images` stacks with one memcpy);
    copies only views and read-only arrays (Pillow's)."""
    return torch.from_numpy(np.require(pixels, np.uint8, ["C_CONTIGUOUS", "WRITEABLE"])).permute(2, 0, 1)


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
        interpolation: resampling filter, `"bilinear"` (the stream's default) or `"bicubic"` (what most timm
            data configs name, e.g. ViT-B/16 augreg); the scale-1 eval path never resamples either way.
    """

    train: bool = False
    size: int = 224
    crop_pct: float = 0.875
    scale: tuple[float, float] = (0.08, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    hflip: float = 0.5
    interpolation: str = "bilinear"

    def __post_init__(self) -> None:
        if self.interpolation not in _RESAMPLE:
            raise ValueError(f"interpolation {self.interpolation!r} is not one of {sorted(_RESAMPLE)}")

    def __call__(self, data: bytes) -> torch.Tensor:
        draft_to = None if self.train else math.floor(self.size / self.crop_pct)
        return self.apply(decode_rgb(data, draft_to=draft_to))

    def apply(self, image: Image.Image | np.ndarray) -> torch.Tensor:
        """The transform of an already decoded RGB image or `(H, W, 3)` array (for readers that decode themselves)."""
        pixels = np.asarray(image)
        height, width = pixels.shape[:2]
        if self.train:
            box = self._random_box(width, height)
            pixels = np.asarray(Image.fromarray(pixels).resize((self.size, self.size), self._resample, box=box))
            if torch.rand(()) < self.hflip:
                pixels = pixels[:, ::-1]
            return _to_uint8_chw(pixels)
        resize = math.floor(self.size / self.crop_pct)
        if min(width, height) == resize:  # scale 1: torchvision's CenterCrop offsets, no resampling
            top, left = int(round((height - self.size) / 2)), int(round((width - self.size) / 2))
            return _to_uint8_chw(pixels[top : top + self.size, left : left + self.size])
        box = self._center_box(width, height, resize)
        resized = Image.fromarray(pixels).resize((self.size, self.size), self._resample, box=box)
        return _to_uint8_chw(np.asarray(resized))

    @property
    def _resample(self) -> Image.Resampling:
        return _RESAMPLE[self.interpolation]

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


def _empty(shape: tuple[int, ...], dtype: torch.dtype, *, shared: bool) -> torch.Tensor:
    """An uninitialised CPU tensor; with `shared` in one of this process's reusable shared-memory segments
    (`sharedbatch`: no fresh segment per batch for the DataLoader to send)."""
    return sharedbatch.empty(shape, dtype) if shared else torch.empty(shape, dtype=dtype)


def stack_images(images: list[torch.Tensor], *, shared: bool = False) -> torch.Tensor:
    """Stack `(3, H, W)` images into `(B, 3, H, W)`.

    The built-in transform returns channel-last pixels viewed as CHW. For those, numpy stacks the HWC
    buffers (one memcpy each) and the batch is a channels-last view: 8 ms per batch of 64 at 224 px here,
    against 38 ms for `torch.stack` of the CHW views and 157 ms for `torch.stack` of HWC uint8 (2 cores, 2026-11).
    `shared=True` (DataLoader workers) stacks into a reused shared-memory segment (`sharedbatch`): no page
    faults on fresh memory, and a uint8 batch is not copied again on its way to the main process.
    """
    if images[0].dtype == torch.uint8 and images[0].permute(1, 2, 0).is_contiguous():
        out = _empty((len(images), *images[0].permute(1, 2, 0).shape), torch.uint8, shared=shared)
        np.stack([image.permute(1, 2, 0).numpy() for image in images], out=out.numpy())
        return out.permute(0, 3, 1, 2)
    return torch.stack(images)


def normalize_batch(
    images: torch.Tensor,
    mean: tuple[float, float, float] = BIOSCAN_MEAN,
    std: tuple[float, float, float] = BIOSCAN_STD,
    *,
    shared: bool = False,
) -> torch.Tensor:
    """uint8 `(..., 3, H, W)` -> float32 `(x / 255 - mean) / std` as one conversion + multiply-add in place,
    on the images' device: `normalize_batch(batch["image"].to("cuda", non_blocking=True))` normalises on
    the GPU a uint8 batch from a `normalize=False` stream.

    Channels-last input (what the stream's collation builds) is computed on its HWC buffer viewed as rows
    of `W * 3` values, with the per-channel constants tiled along a row: contiguous on both sides, 2.7x
    faster than broadcasting over CHW planes and 1.3x faster than over an innermost axis of 3 here.
    `shared=True` (in DataLoader workers) writes into a reused shared-memory segment (`sharedbatch`), so
    sending the batch to the main process copies nothing and no fresh 38 MB is faulted in per batch.
    """
    scale = torch.tensor([1 / (255 * s) for s in std], dtype=torch.float32, device=images.device)
    bias = torch.tensor([-m / s for m, s in zip(mean, std, strict=True)], dtype=torch.float32, device=images.device)
    last = images.movedim(-3, -1)
    channels_last = last.is_contiguous()
    source = last if channels_last else images
    if images.device.type == "cpu":
        out = _empty(tuple(source.shape), torch.float32, shared=shared)
    else:
        out = torch.empty(source.shape, dtype=torch.float32, device=images.device)
    out.copy_(source)
    if channels_last:
        width = source.shape[-2]
        rows = out.view(*source.shape[:-2], width * 3)
        torch.addcmul(bias.repeat(width), rows, scale.repeat(width), out=rows)
        return out.movedim(-1, -3)
    return torch.addcmul(bias.view(3, 1, 1), out, scale.view(3, 1, 1), out=out)
