"""The detector contract of the crop job (original image -> **detector** -> raw box -> `bioscan_stream.crop`).

A detector turns a batch of RGB photos of wells into one raw box per image, in ORIGINAL image pixels, plus a
confidence. The box is what the BIOSCAN crop tool records in the bbox table; the crop itself (1.4 expansion,
4:3, padding, 256 resize) is the data layer's job (`bioscan_stream.crop.crop_with_preset`), so every
detector shares one crop procedure.

Detectors register by name (`register_detector`) and are built with `create_detector(name, **kwargs)`; a
detector is cheap to build inside a Ray actor (weights loaded once there), and `fingerprint()` says exactly
which detector and settings made a box set (written into the crop job's manifest).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np

__all__ = ["Box", "Detection", "Detector", "create_detector", "list_detectors", "register_detector"]

#: x0, y0, x1, y1 in ORIGINAL image pixels (the bbox table's raw box).
Box = tuple[float, float, float, float]


@dataclass(frozen=True)
class Detection:
    """One image's result: its raw box, or None with the reason the image was rejected.

    `score` is a confidence in [0, 1]: low scores are listed for review by the crop job.
    """

    box: Box | None
    score: float
    reason: str = ""  # why `box` is None (goes to rejects.jsonl)


@runtime_checkable
class Detector(Protocol):
    """Image batch -> one `Detection` per image (RGB uint8 HxWx3 arrays; sizes may differ within a batch)."""

    name: str

    def detect(self, images: Sequence[np.ndarray]) -> list[Detection]:
        """One detection per input image, in input order."""
        ...

    def fingerprint(self) -> dict[str, Any]:
        """Name and settings (plus the weights' sha256 for learned detectors)."""
        ...


_DETECTORS: dict[str, Callable[..., Detector]] = {}
# The modules that register the built-in detectors, imported on first lookup: building the classical detector
# imports only its own module (no torch / transformers: the DETR module imports those).
_BUILTIN_MODULES = {"classical": "zoo.detectors.classical", "detr": "zoo.detectors.detr"}


def register_detector(name: str) -> Callable[[Callable[..., Detector]], Callable[..., Detector]]:
    """Decorator: register a detector factory (a class or function taking keyword settings) under `name`."""

    def decorator(factory: Callable[..., Detector]) -> Callable[..., Detector]:
        _DETECTORS[name] = factory
        return factory

    return decorator


def _load_builtins(names: Sequence[str]) -> None:
    for name in names:
        module = _BUILTIN_MODULES.get(name)
        if name in _DETECTORS or module is None:
            continue
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as error:  # a built-in whose module or extra (torch, transformers) is missing
            if error.name not in (module, "torch", "transformers"):
                raise


def list_detectors() -> list[str]:
    """Names of the registered detectors, sorted."""
    _load_builtins(list(_BUILTIN_MODULES))
    return sorted(_DETECTORS)


def create_detector(name: str, **kwargs: Any) -> Detector:
    """Build the detector registered as `name` with `kwargs` as its settings."""
    _load_builtins([name])
    if name not in _DETECTORS:
        raise ValueError(f"unknown detector {name!r}; known: {list_detectors()}")
    return _DETECTORS[name](**kwargs)
