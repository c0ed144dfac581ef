"""timm image encoders: any timm backbone as a zoo encoder of JPEG images (pooled penultimate features).

Source: timm (pytorch-image-models, Apache-2.0), used as a library. Sits in `zoo` on top of the stream's eval
transform (`bioscan_stream.stream.transforms.ImageTransform`): JPEG bytes -> uint8 pixels (CPU, preprocessor)
-> `/255`, timm mean/std, backbone built with `num_classes=0` (GPU, `embed_batch`) -> `(n, num_features)`.

Names are timm's, with or without a pretrained tag (`resnet50`, `vit_base_patch16_224.augreg_in21k_ft_in1k`).
The tag only selects timm's `pretrained_cfg` (input size, crop_pct, interpolation, mean/std); nothing is ever
downloaded: weights are random unless `pretrained=` names a local timm checkpoint file (`.safetensors`, or
`.pth`/`.bin` read with `torch.load(weights_only=True)`) or a Hugging Face-format folder as timm's
`save_for_hf`/`push_to_hub` writes it (`config.json` with `architecture` + `model.safetensors` or
`pytorch_model.bin`), whose own `pretrained_cfg` then sets the data config. Loading is strict: classifier-head
keys are dropped, any other missing, unexpected or reshaped key is a `zoo.encoder.WeightsError`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import timm
import torch
from safetensors.torch import load_file
from torch import nn

from bioscan_stream.schema import IMAGE
from bioscan_stream.stream.transforms import ImageTransform, normalize_batch
from zoo._registry import register_model, register_model_family
from zoo.encoder import Preprocessed, WeightsError, module_fingerprint

__all__ = ["TimmImageEncoder", "TimmImagePixels", "load_timm_weights", "read_state_dict"]

_logger = logging.getLogger(__name__)

#: Name of the pixel array the preprocessor emits and `embed_batch` reads.
PIXELS = "image"
#: Weight files of a Hugging Face-format folder, in order of preference (timm's `save_for_hf` names).
_FOLDER_WEIGHTS = ("model.safetensors", "pytorch_model.bin")
#: Nested state dicts of training checkpoints (timm's train.py saves `state_dict`, others `model`).
_WRAPPERS = ("state_dict", "model")


@dataclass(frozen=True)
class TimmImagePixels:
    """Preprocessor: image bytes -> uint8 `(n, 3, size, size)` by the stream's eval transform; a value that cannot
    be decoded (damaged bytes, not an image, not bytes at all) becomes the reject `undecodable_image`."""

    size: int
    crop_pct: float
    interpolation: str = "bilinear"

    def __call__(self, values: Sequence[Any]) -> Preprocessed:
        transform = ImageTransform(
            train=False, size=self.size, crop_pct=self.crop_pct, interpolation=self.interpolation
        )
        images: list[np.ndarray] = []
        kept: list[int] = []
        rejects: dict[int, str] = {}
        for position, value in enumerate(values):
            try:
                images.append(transform(bytes(value)).numpy())
            except Exception:  # noqa: BLE001  (the contract: a bad value is a reject, never an exception)
                rejects[position] = "undecodable_image"
                continue
            kept.append(position)
        pixels = np.stack(images) if images else np.zeros((0, 3, self.size, self.size), np.uint8)
        return Preprocessed({PIXELS: pixels}, np.asarray(kept, dtype=np.int64), rejects)


def _pretrained_cfg(model: nn.Module) -> dict[str, Any]:
    """timm's `pretrained_cfg` of a model (a plain dict; `{}` for a module timm did not build)."""
    return dict(getattr(model, "pretrained_cfg", {}))


def _data_config(model: nn.Module) -> dict[str, Any]:
    """timm's eval data config of the model as built (its input size honours overrides such as `img_size`)."""
    resolve = getattr(timm.data, "resolve_input_data_config", None)  # timm >= 1.0.2x; else the pretrained cfg's
    config = dict(resolve(model) if resolve is not None else timm.data.resolve_data_config({}, model=model))
    _, height, width = config["input_size"]
    if height != width:
        raise ValueError(f"{_pretrained_cfg(model).get('architecture')}: input size {height}x{width} is not square")
    if config.get("crop_mode", "center") != "center":
        raise ValueError(f"crop_mode {config['crop_mode']!r} is not supported (the stream transform centre-crops)")
    ImageTransform(size=height, crop_pct=config["crop_pct"], interpolation=config["interpolation"])  # or ValueError
    return config


class TimmImageEncoder(nn.Module):
    """A timm backbone (built with `num_classes=0`) behind the zoo encoder contract; `forward` takes normalised
    float images, `embed_batch` the preprocessor's uint8 pixels."""

    modality = "image"
    input_member = IMAGE

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.data_config = _data_config(model)
        self._embed_dim = int(getattr(model, "num_features", 0))
        # oneDNN convolves channels-last (NHWC) memory faster: resnet18, one CPU thread, 15 vs 20.5 ms an image
        # (2026-12-07). A ViT has one convolution (the patch embedding) and gains nothing.
        self.channels_last = sum(isinstance(m, nn.Conv2d) for m in model.modules()) > 1

    @property
    def timm_name(self) -> str:
        """The canonical timm name, `architecture.tag` (the tag of the data config; weights may be random)."""
        cfg = _pretrained_cfg(self.model)
        return f"{cfg['architecture']}.{cfg['tag']}" if cfg.get("tag") else str(cfg["architecture"])

    @property
    def embed_dim(self) -> int:
        return self._embed_dim

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Pooled penultimate features `(n, num_features)` of normalised float images `(n, 3, H, W)`."""
        return self.model(self._layout(images))

    def _layout(self, images: torch.Tensor) -> torch.Tensor:
        return images.contiguous(memory_format=torch.channels_last) if self.channels_last else images

    def preprocessor(self) -> TimmImagePixels:
        size = int(self.data_config["input_size"][-1])
        return TimmImagePixels(size, float(self.data_config["crop_pct"]), str(self.data_config["interpolation"]))

    def embed_batch(self, arrays: dict[str, torch.Tensor]) -> torch.Tensor:
        """uint8 pixels -> `/255`, normalised with the data config's mean/std on their device -> features."""
        mean, std = tuple(self.data_config["mean"]), tuple(self.data_config["std"])
        images = normalize_batch(self._layout(arrays[PIXELS]), mean, std)
        return self.model(images.to(next(self.model.parameters()).dtype))

    def input_spec(self) -> dict[str, Any]:
        cfg = self.data_config
        return {
            "transform": "bioscan_stream.stream.transforms.ImageTransform",
            "input_size": [int(v) for v in cfg["input_size"]],
            "crop_pct": float(cfg["crop_pct"]),
            "interpolation": str(cfg["interpolation"]),
            "crop_mode": str(cfg.get("crop_mode", "center")),
            "mean": [float(v) for v in cfg["mean"]],
            "std": [float(v) for v in cfg["std"]],
            "scale": "uint8 / 255",
        }

    def fingerprint(self) -> dict[str, Any]:
        cfg = _pretrained_cfg(self.model)
        arch = {
            "family": "timm",
            "timm_name": cfg["architecture"],
            "pretrained_tag": cfg.get("tag"),
            "num_features": self.embed_dim,
            "global_pool": _global_pool(self.model),
            **self.input_spec(),
        }
        return module_fingerprint(self.timm_name, arch, self)

    def save_pretrained(self, directory: str | Path) -> None:
        """Hugging Face-format folder (`config.json` + `model.safetensors`) by timm's `save_for_hf`."""
        timm.models.save_for_hf(self.model, str(directory), safe_serialization=True)


def _global_pool(model: nn.Module) -> str | None:
    """The pooling a backbone ends with (`avg`, `token`, ...): same weights, different features."""
    pool = getattr(model, "global_pool", None)
    pool = getattr(pool, "pool_type", pool)
    return pool if isinstance(pool, str) else None


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a checkpoint file: safetensors, or `torch.load(weights_only=True)` (unwrapping `state_dict` /
    `model` and DDP `module.` prefixes); WeightsError for anything that is not such a file."""
    path = Path(path)
    try:
        state: Any = (
            load_file(path)
            if path.suffix == ".safetensors"
            else torch.load(path, map_location="cpu", weights_only=True)
        )
    except Exception as err:  # noqa: BLE001  (unreadable or unsafe to unpickle: refuse, naming the file)
        raise WeightsError(f"{path}: not a readable checkpoint with weights_only=True ({err})") from err
    while isinstance(state, dict) and any(isinstance(state.get(key), dict) for key in _WRAPPERS):
        state = next(state[key] for key in _WRAPPERS if isinstance(state.get(key), dict))
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError(f"{path}: not a state dict of tensors")
    return {key.removeprefix("module."): value for key, value in state.items()}


def _is_classifier(key: str, classifier: str | Sequence[str] | None) -> bool:
    heads = [classifier] if isinstance(classifier, str) else list(classifier or ())
    return any(key.startswith(f"{head}.") for head in heads)


def load_timm_weights(model: nn.Module, state: dict[str, torch.Tensor], source: str | Path) -> None:
    """Load `state` strictly into a `num_classes=0` timm model, dropping only its classifier-head keys.

    Raises:
        WeightsError: naming `source` and the first missing, unexpected and reshaped keys.
    """
    expected = model.state_dict()
    classifier = _pretrained_cfg(model).get("classifier")
    state = {k: v for k, v in state.items() if k in expected or not _is_classifier(k, classifier)}
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    reshaped = sorted(k for k in set(state) & set(expected) if state[k].shape != expected[k].shape)
    if missing or unexpected or reshaped:
        name = _pretrained_cfg(model).get("architecture")
        raise WeightsError(
            f"{source}: weights do not fit {name}: missing {missing[:5]}, unexpected {unexpected[:5]}, "
            f"shapes differ for {[(k, tuple(state[k].shape), tuple(expected[k].shape)) for k in reshaped[:5]]}"
        )
    model.load_state_dict(state)


def _from_folder(name: str, folder: Path, overrides: dict[str, Any]) -> nn.Module:
    """Model + data config from a Hugging Face-format folder's `config.json`, then its weights, strictly."""
    try:
        architecture = json.loads((folder / "config.json").read_text())["architecture"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise WeightsError(f"{folder}: no timm config.json with an 'architecture' ({err})") from err
    if architecture != name.partition(".")[0]:
        raise WeightsError(f"{folder}: holds a {architecture!r}, not a {name!r}")
    weights = next((folder / file for file in _FOLDER_WEIGHTS if (folder / file).is_file()), None)
    if weights is None:
        raise WeightsError(f"{folder}: none of {list(_FOLDER_WEIGHTS)} in the folder")
    model = timm.create_model(f"local-dir:{folder}", pretrained=False, num_classes=0, **overrides)
    load_timm_weights(model, read_state_dict(weights), weights)
    return model


def _check_tag(name: str) -> None:
    """ValueError listing the valid tags when `name`'s tag is not one of timm's pretrained configs."""
    arch, _, tag = name.partition(".")
    if tag and name not in timm.list_pretrained(name):
        raise ValueError(f"{tag!r} is not a timm pretrained tag of {arch}; known: {timm.list_pretrained(arch + '.*')}")


def _create_timm_image(name: str, pretrained: str | Path | None = None, **overrides: Any) -> TimmImageEncoder:
    """Encoder of timm model `name` (random init, or weights from a local file/folder), in eval mode."""
    _check_tag(name)
    path = Path(pretrained) if pretrained is not None else None
    if path is not None and path.is_dir():
        return TimmImageEncoder(_from_folder(name, path, overrides)).eval()
    model = timm.create_model(name, pretrained=False, num_classes=0, **overrides)
    if path is not None:
        load_timm_weights(model, read_state_dict(path), path)
    elif "." in name:
        tag = name.partition(".")[2]
        _logger.warning(
            "%s: nothing is downloaded, the weights are RANDOM (tag %r sets the data config only)", name, tag
        )
    return TimmImageEncoder(model).eval()


def _is_timm_name(name: str) -> bool:
    """Any timm model name, tag or not (`resnet50`, `vit_base_patch16_224.augreg_in21k_ft_in1k`)."""
    return "/" not in name and ":" not in name and bool(timm.is_model(name))


@register_model_family(_is_timm_name)
def timm_any(name: str, pretrained: str | Path | None = None, **overrides: Any) -> TimmImageEncoder:
    """Every other timm model name, with or without a pretrained tag."""
    return _create_timm_image(name, pretrained, **overrides)


@register_model
def resnet18(pretrained: str | Path | None = None, **overrides: Any) -> TimmImageEncoder:
    """ResNet-18, 512-d (data config of timm's default tag, `a1_in1k`)."""
    return _create_timm_image("resnet18", pretrained, **overrides)


@register_model
def resnet50(pretrained: str | Path | None = None, **overrides: Any) -> TimmImageEncoder:
    """ResNet-50, 2048-d: the BIOSCAN-1M image baseline."""
    return _create_timm_image("resnet50", pretrained, **overrides)


@register_model
def vit_base_patch16_224(pretrained: str | Path | None = None, **overrides: Any) -> TimmImageEncoder:
    """ViT-B/16, 768-d (the BIOSCAN-CLIP image tower is its `.augreg_in21k_ft_in1k` tag)."""
    return _create_timm_image("vit_base_patch16_224", pretrained, **overrides)


@register_model
def vit_tiny_patch16_224(pretrained: str | Path | None = None, **overrides: Any) -> TimmImageEncoder:
    """ViT-Ti/16, 192-d: small enough for CPU tests."""
    return _create_timm_image("vit_tiny_patch16_224", pretrained, **overrides)


@register_model
def resnet10t(pretrained: str | Path | None = None, **overrides: Any) -> TimmImageEncoder:
    """ResNet-10-T, 512-d at 176 px: the fastest image encoder, for tests."""
    return _create_timm_image("resnet10t", pretrained, **overrides)
