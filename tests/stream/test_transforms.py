"""Image transforms: fast JPEG decode = Pillow's pixels, scale-1 eval = integer centre crop, batch normalisation."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from bioscan_stream.stream import sharedbatch
from bioscan_stream.stream.transforms import ImageTransform, decode_rgb, normalize_batch, stack_images


def _photo(width: int, height: int, mode: str = "RGB") -> bytes:
    rng = np.random.default_rng(width * height)
    pixels = rng.integers(0, 255, (height, width, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).convert(mode).save(out, format="JPEG", quality=90)
    return out.getvalue()


@pytest.mark.parametrize("mode", ["RGB", "L", "CMYK"])
def test_decode_matches_pillow(mode: str) -> None:
    data = _photo(341, 256, mode)
    expected = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    tolerance = 1 if mode == "CMYK" else 0  # libjpeg-turbo's CMYK -> RGB rounds differently from Pillow's
    assert np.abs(decode_rgb(data).astype(int) - expected).max() <= tolerance
    png = io.BytesIO()
    Image.fromarray(expected).save(png, format="PNG")
    assert np.array_equal(decode_rgb(png.getvalue()), expected)


def test_draft_decodes_at_a_reduced_scale_covering_the_target() -> None:
    assert decode_rgb(_photo(1364, 1024), draft_to=256).shape == (256, 341, 3)
    assert decode_rgb(_photo(1364, 1024), draft_to=300).shape == (384, 512, 3)  # libjpeg-turbo: n/8 scales


def test_scale_one_eval_is_torchvision_centre_crop() -> None:
    data = _photo(341, 256)
    pixels = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    out = ImageTransform(train=False, size=224)(data)
    top, left = round((256 - 224) / 2), round((341 - 224) / 2)  # torchvision CenterCrop: int(round(...))
    assert np.array_equal(out.permute(1, 2, 0).numpy(), pixels[top : top + 224, left : left + 224])
    resized = ImageTransform(train=False, size=224)(_photo(400, 300))  # scale != 1: resampled
    assert resized.shape == (3, 224, 224) and resized.permute(1, 2, 0).is_contiguous()


@pytest.mark.parametrize("interpolation", ["bilinear", "bicubic"])
def test_eval_interpolation_is_pillows_filter_on_the_centre_box(interpolation: str) -> None:
    data = _photo(400, 300)
    transform = ImageTransform(train=False, size=224, crop_pct=0.9, interpolation=interpolation)
    pixels = decode_rgb(data, draft_to=248)  # 224 / 0.9 -> 248: the same reduced-scale decode the transform does
    height, width = pixels.shape[:2]
    side = 224 * height / 248
    box = ((width - side) / 2, (height - side) / 2, (width + side) / 2, (height + side) / 2)
    resample = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC}[interpolation]
    expected = np.asarray(Image.fromarray(pixels).resize((224, 224), resample, box=box))
    assert np.array_equal(transform(data).permute(1, 2, 0).numpy(), expected)
    if interpolation == "bicubic":  # a different filter really is applied
        assert not np.array_equal(ImageTransform(train=False, size=224, crop_pct=0.9)(data), transform(data))
    assert ImageTransform().interpolation == "bilinear"
    with pytest.raises(ValueError, match="interpolation"):
        ImageTransform(interpolation="lanczos")


def test_channels_last_normalisation_matches_the_formula_and_shares_memory() -> None:
    images = [ImageTransform(train=True, size=16)(_photo(64, 48)) for _ in range(3)]
    batch = stack_images(images, shared=True)
    assert batch.shape == (3, 3, 16, 16) and isinstance(sharedbatch.export(batch), sharedbatch.SlotTensor)
    mean, std = (0.1, 0.5, 0.9), (0.2, 0.3, 0.4)
    expected = (batch.float() / 255 - torch.tensor(mean).view(3, 1, 1)) / torch.tensor(std).view(3, 1, 1)
    assert torch.allclose(normalize_batch(batch, mean, std), expected, atol=1e-5)
    assert torch.allclose(normalize_batch(batch.contiguous(), mean, std), expected, atol=1e-5)
