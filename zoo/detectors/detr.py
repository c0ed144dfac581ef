"""The BIOSCAN crop tool's detector, batched: DETR-ResNet50 with one class (original photo -> **detr** -> raw box).

Source: the public crop tool (github.com/zahrag/BIOSCAN-1M, `crop_tool_sup/`: `model/detr.py`,
`scripts/crop_images.py`, `util/visualize_and_process_bbox.py`), rebuilt on `transformers.DetrForObjectDetection`
(Apache-2.0) as a library. What is kept from the tool, and what changed:

- Model: `facebook/detr-resnet-50`'s architecture with a one-class head. The tool's constructor downloads that
  model before loading its own checkpoint (so it fails offline); here the architecture is built from a local
  config (`DETR_R50`, transformers' `DetrConfig` defaults) with `use_pretrained_backbone=False`: nothing is
  downloaded, and without a checkpoint the weights are random (seeded; fine for speed, not for boxes).
- Weights: the tool's PyTorch Lightning `.ckpt` (its `state_dict`, keys prefixed `model.` by the Lightning
  module) read with `torch.load(weights_only=True)` (a file that needs unpickling is refused), or a Hugging Face
  folder (`save_pretrained`). transformers renames the tool's v4 key names (`conv_encoder`, `out_proj`,
  `fc1`/`fc2`) itself; any other missing, unexpected or reshaped key is a `WeightsError`.
- Preprocessing: the tool's `DetrFeatureExtractor` defaults (shorter side 800, longer side <= 1333, ImageNet
  mean/std), i.e. transformers' `DetrImageProcessor()` built locally, which also pads a batch to its largest
  image and returns the `pixel_mask` that tells the model where the padding is.
- Selection: the single query with the highest class probability (softmax over the class logits without the
  "no object" column), no threshold; its box (cx, cy, w, h relative to the image) times the original width and
  height. The probability is the detection's score.
- Batching: images are sorted by size so that same-size images (all real originals are 1024x768) share
  unpadded batches; only a batch that mixes sizes is padded. Convolutions run channels-last; on GPU the
  forward runs under fp16 autocast. On CPU the frozen batch norms are folded into their convolutions and 1x1
  convolutions run through oneDNN (`zoo.detectors.cpu_fusion`, checked on a probe batch; the fingerprint names the
  loaded weights, before fusion).
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import DetrConfig, DetrForObjectDetection, DetrImageProcessor
from transformers.utils import logging as hf_logging

from zoo.detectors.base import Detection, register_detector
from zoo.detectors.cpu_fusion import fuse_for_cpu
from zoo.encoder import WeightsError, module_fingerprint
from zoo.models.timm_image import read_state_dict

__all__ = ["DETR_R50", "DetrDetector", "architecture_of", "detr_config", "load_detr", "select_boxes"]

_logger = logging.getLogger(__name__)

#: facebook/detr-resnet-50 (transformers' `DetrConfig` defaults: timm ResNet-50, 6+6 layers, d_model 256, 100
#: queries) with the crop tool's single class; the backbone is built empty, never fetched.
DETR_R50: dict[str, Any] = {"use_timm_backbone": True, "backbone": "resnet50", "num_labels": 1}
#: Prefix the tool's Lightning module (`self.model = DetrForObjectDetection(...)`) puts on every key.
_LIGHTNING_PREFIX = "model."
_PRECISIONS = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": None}


def detr_config(architecture: dict[str, Any] | None = None) -> DetrConfig:
    """A one-class `DetrConfig` of `architecture` (DetrConfig fields; default `DETR_R50`) that downloads nothing."""
    fields = {**DETR_R50, **(architecture or {})}
    config = DetrConfig(**fields)
    _offline_backbone(config)
    return config


def _offline_backbone(config: DetrConfig) -> None:
    """Never load pretrained backbone weights (a folder's config may ask for them: that would be a download)."""
    backbone = config.backbone_config
    if isinstance(backbone, dict):
        backbone["use_pretrained_backbone"] = False
    elif backbone is not None and getattr(backbone, "use_pretrained_backbone", False):
        backbone.use_pretrained_backbone = False


def _check_loaded(info: dict[str, Any], source: str | Path) -> None:
    problems = {k: sorted(info.get(k) or ()) for k in ("missing_keys", "unexpected_keys", "mismatched_keys")}
    problems = {k: v for k, v in problems.items() if v}
    if problems or info.get("error_msgs"):
        listed = "; ".join(
            f"{k.replace('_', ' ')}: {', '.join(map(str, v[:4]))} ({len(v)})" for k, v in problems.items()
        )
        raise WeightsError(f"{source}: not the crop tool's one-class DETR ({listed or info['error_msgs']})")


def _quiet_from_pretrained(*args: Any, **kwargs: Any) -> tuple[DetrForObjectDetection, dict[str, Any]]:
    """`from_pretrained` with its loading-info dict and without its progress bar (it would flood job logs)."""
    hf_logging.disable_progress_bar()
    try:
        # Mismatched shapes are reported (not raised as a bare RuntimeError) so `_check_loaded` can name them.
        loaded: Any = DetrForObjectDetection.from_pretrained(
            *args, output_loading_info=True, ignore_mismatched_sizes=True, **kwargs
        )
        return loaded[0], loaded[1]
    finally:
        hf_logging.enable_progress_bar()


def _load_folder(folder: Path, architecture: dict[str, Any] | None) -> DetrForObjectDetection:
    config = DetrConfig.from_pretrained(folder, local_files_only=True, **(architecture or {}))
    _offline_backbone(config)
    if config.num_labels != 1:
        raise WeightsError(f"{folder}: a DETR with {config.num_labels} classes; the crop tool's model has one")
    model, info = _quiet_from_pretrained(folder, config=config, local_files_only=True)
    _check_loaded(info, folder)
    return model


def _load_checkpoint(path: Path, architecture: dict[str, Any] | None) -> DetrForObjectDetection:
    state = read_state_dict(path)  # weights_only=True: refuses anything that needs unpickling
    if any(key.startswith(_LIGHTNING_PREFIX + "model.") for key in state):
        state = {key.removeprefix(_LIGHTNING_PREFIX): value for key, value in state.items()}
    model, info = _quiet_from_pretrained(None, config=detr_config(architecture), state_dict=state)
    _check_loaded(info, path)
    return model


def load_detr(
    checkpoint: str | Path | None = None, *, architecture: dict[str, Any] | None = None, seed: int = 0
) -> DetrForObjectDetection:
    """The crop tool's DETR in eval mode: from a Lightning `.ckpt` / state-dict file, an HF folder, or random.

    Raises:
        FileNotFoundError: `checkpoint` does not exist.
        WeightsError: a file that needs unpickling, or weights of another architecture (names the keys).
    """
    if checkpoint is None:
        _logger.warning("detr: no checkpoint, random weights (seed %d): boxes are meaningless", seed)
        torch.manual_seed(seed)
        return DetrForObjectDetection(detr_config(architecture)).eval()
    path = Path(checkpoint)
    if not path.exists():
        raise FileNotFoundError(f"detr checkpoint {path} does not exist")
    model = _load_folder(path, architecture) if path.is_dir() else _load_checkpoint(path, architecture)
    return model.eval()


#: Config fields that shape the model (the fingerprint's architecture, whatever the weights were loaded from).
_SHAPING = (
    "d_model", "encoder_layers", "decoder_layers", "encoder_ffn_dim", "decoder_ffn_dim", "num_queries",
    "encoder_attention_heads", "decoder_attention_heads", "num_labels", "dilation", "position_embedding_type",
)  # fmt: skip
_BACKBONE_SHAPING = ("model_type", "backbone", "embedding_size", "hidden_sizes", "depths", "out_indices")


def architecture_of(config: DetrConfig) -> dict[str, Any]:
    """The fields of a loaded model's config that shape it (for the fingerprint), whatever it was loaded from."""
    backbone: Any = config.backbone_config
    fields = backbone.to_dict() if hasattr(backbone, "to_dict") else dict(backbone or {})
    summary = {key: getattr(config, key) for key in _SHAPING}
    summary["backbone"] = {key: fields[key] for key in _BACKBONE_SHAPING if key in fields}
    return summary


def select_boxes(logits: torch.Tensor, boxes: torch.Tensor, sizes: Sequence[tuple[int, int]]) -> list[Detection]:
    """The tool's rule per image: the query with the highest class probability, its box in original pixels.

    `logits` (n, queries, classes + 1), `boxes` (n, queries, 4) as (cx, cy, w, h) relative to the image,
    `sizes` the original (width, height) of each image.
    """
    probability = logits.float().softmax(-1)[..., :-1].amax(-1)
    best = probability.argmax(-1)
    rows = torch.arange(len(best), device=best.device)
    score, (cx, cy, w, h) = probability[rows, best], boxes.float()[rows, best].unbind(-1)
    scale = torch.tensor(sizes, dtype=torch.float32, device=boxes.device).repeat(1, 2)
    corners = torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], dim=-1) * scale
    return [
        Detection(box=(x0, y0, x1, y1), score=s)
        for (x0, y0, x1, y1), s in zip(corners.cpu().tolist(), score.cpu().tolist(), strict=True)
    ]


@register_detector("detr")
class DetrDetector:
    """DETR-ResNet50 (the crop tool's model) behind the detector contract; see the module docstring.

    Args:
        checkpoint: the tool's `.ckpt`, a state-dict file, or an HF folder; None = random weights (seeded).
        architecture: `DetrConfig` fields over `DETR_R50` (e.g. a tiny model for tests).
        batch_size: images per forward pass.
        device: `cuda` or `cpu` (default: cuda when available).
        precision: autocast dtype on GPU (`fp16`, `bf16`, `fp32`); the CPU always runs fp32, as the tool does.
        threads: torch CPU threads (None: leave torch's setting).
        seed: seed of random weights.
        cpu_fusion: on CPU, fold batch norms and run 1x1 convolutions through oneDNN (same boxes up to fp32 rounding).
    """

    name = "detr"

    def __init__(
        self,
        checkpoint: str | Path | None = None,
        *,
        architecture: dict[str, Any] | None = None,
        batch_size: int = 4,
        device: str | None = None,
        precision: str = "fp16",
        threads: int | None = None,
        seed: int = 0,
        cpu_fusion: bool = True,
    ) -> None:
        if precision not in _PRECISIONS:
            raise ValueError(f"precision {precision!r}: expected one of {sorted(_PRECISIONS)}")
        if threads:
            torch.set_num_threads(threads)
        self.checkpoint = None if checkpoint is None else str(checkpoint)
        self.architecture, self.batch_size, self.precision = dict(architecture or {}), max(1, batch_size), precision
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model = load_detr(checkpoint, architecture=architecture, seed=seed)
        # NOTE: channels_last convolutions: 6.2-6.5 vs 7.8-8.5 s per 1066x800 image for the R50 on this 2-core box
        # (oneDNN, load ~8, 2026-12); on GPU they are what fp16 tensor cores want.
        self.model.to(self.device, memory_format=torch.channels_last)  # type: ignore[arg-type,call-overload]
        self.processor = DetrImageProcessor()  # the tool's DetrFeatureExtractor defaults, built locally
        self._fingerprint = module_fingerprint(self.name, architecture_of(self.model.config), self.model)
        # `model` stays the loaded model (saveable, what the fingerprint names); forwards run `_runner`, built at
        # the first forward (a driver that only needs the fingerprint never pays for the fusion)
        self.cpu_fusion = cpu_fusion and self.device.type == "cpu"
        self._runner: torch.nn.Module | None = None
        self.fusion: dict[str, int] = {}

    def _fused(self) -> torch.nn.Module:
        if self._runner is None and self.cpu_fusion:
            runner = copy.deepcopy(self.model)
            self.fusion = fuse_for_cpu(runner, lambda: self._run(runner, self._probe_inputs()))
            self._runner = runner
        return self.model if self._runner is None else self._runner

    def _probe_inputs(self) -> dict[str, torch.Tensor]:
        """A fixed small random batch (two 96x128 images, one padded): `fuse_for_cpu`'s check."""
        pixels = torch.randn(2, 3, 96, 128, generator=torch.Generator().manual_seed(0)).to(self.device)
        mask = torch.ones(2, 96, 128, dtype=torch.long, device=self.device)
        mask[1, :, 96:] = 0
        return {"pixel_values": pixels.contiguous(memory_format=torch.channels_last), "pixel_mask": mask}

    def fingerprint(self) -> dict[str, Any]:
        """Architecture, weights sha256, preprocessing and selection rule (not the device or batch size)."""
        preprocess = {"size": dict(self.processor.size), "mean": self.processor.image_mean}
        preprocess["std"] = self.processor.image_std
        rule = "max class probability over queries, no threshold"
        return {**self._fingerprint, "preprocess": preprocess, "selection": rule, "gpu_precision": self.precision}

    def inputs(self, images: Sequence[np.ndarray]) -> dict[str, torch.Tensor]:
        """`pixel_values` and `pixel_mask` of a batch (padded to its largest image), on the model's device."""
        encoded = self.processor(images=list(images), return_tensors="pt", input_data_format="channels_last")
        pixels = encoded["pixel_values"].to(self.device).contiguous(memory_format=torch.channels_last)
        return {"pixel_values": pixels, "pixel_mask": encoded["pixel_mask"].to(self.device)}

    def forward(self, inputs: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Class logits and boxes of a preprocessed batch (fp16 autocast on GPU)."""
        return self._run(self._fused(), inputs)

    @torch.inference_mode()
    def _run(self, model: torch.nn.Module, inputs: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        dtype = _PRECISIONS[self.precision] if self.device.type == "cuda" else None
        with torch.autocast(self.device.type, dtype=dtype, enabled=dtype is not None):
            out = model(**inputs)
        return out.logits, out.pred_boxes

    def detect(self, images: Sequence[np.ndarray]) -> list[Detection]:
        """One detection per RGB uint8 image (HxWx3), in input order; batches of same-size images first."""
        found: list[Detection | None] = [None] * len(images)
        order = sorted(range(len(images)), key=lambda i: images[i].shape[:2])
        for start in range(0, len(order), self.batch_size):
            chunk = order[start : start + self.batch_size]
            batch = [np.ascontiguousarray(images[i][..., :3]) for i in chunk]
            logits, boxes = self.forward(self.inputs(batch))
            sizes = [(image.shape[1], image.shape[0]) for image in batch]
            for i, detection in zip(chunk, select_boxes(logits, boxes, sizes), strict=True):
                found[i] = detection
        return [d for d in found if d is not None]
