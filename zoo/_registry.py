"""Model registry of the zoo: named entrypoints (timm-style) and architecture JSON configs (open_clip-style).

Model family files (`zoo/models/<family>.py`) register their entrypoints here at import time; the factory
(`zoo._factory.create_model`) resolves a name through this registry. Architectures live as
`zoo/model_configs/<name>.json`, discovered by glob; `add_model_config(path)` adds more files or folders.
Families whose names encode their shape (BarcodeBERT's `k-L-H`) also register a name pattern, so any
shape can be built without a JSON file. Families that wrap another library's registry (timm) register a
predicate over full names, weight tag included (`vit_base_patch16_224.augreg_in21k_ft_in1k`): they resolve
their own tags.
"""

from __future__ import annotations

import fnmatch
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = [
    "add_model_config",
    "get_model_config",
    "is_model",
    "list_models",
    "model_entrypoint",
    "family_entrypoint",
    "register_model",
    "register_model_family",
    "register_model_pattern",
]

#: Signature of an entrypoint: `fn(pretrained=None, **overrides) -> nn.Module`.
Entrypoint = Callable[..., Any]

_MODEL_ENTRYPOINTS: dict[str, Entrypoint] = {}
_MODEL_PATTERNS: list[tuple[re.Pattern[str], Callable[..., Any]]] = []
_MODEL_FAMILIES: list[tuple[Callable[[str], bool], Callable[..., Any]]] = []
_MODEL_CONFIG_PATHS: list[Path] = [Path(__file__).parent / "model_configs"]
_MODEL_CONFIGS: dict[str, dict[str, Any]] = {}


def register_model(fn: Entrypoint) -> Entrypoint:
    """Decorator: register `fn` under its function name (the model name)."""
    _MODEL_ENTRYPOINTS[fn.__name__] = fn
    return fn


def register_model_pattern(pattern: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator: `fn(name, pretrained=None, **overrides)` builds every model whose full name matches `pattern`."""

    def decorator(fn: Callable[..., Any]) -> Callable[..., Any]:
        _MODEL_PATTERNS.append((re.compile(pattern), fn))
        return fn

    return decorator


def register_model_family(accepts: Callable[[str], bool]) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator: `fn(name, pretrained=None, **overrides)` builds every full name (tag included) `accepts` approves.

    Consulted after the entrypoints and patterns; the name keeps its `.tag`, which the family resolves itself.
    """

    def decorator(fn: Callable[..., Any]) -> Callable[..., Any]:
        _MODEL_FAMILIES.append((accepts, fn))
        return fn

    return decorator


def family_entrypoint(name: str) -> Entrypoint | None:
    """The builder of the first family that accepts the full `name` (bound to it), or None."""
    for accepts, fn in _MODEL_FAMILIES:
        if accepts(name):
            return lambda pretrained=None, **overrides: fn(name, pretrained=pretrained, **overrides)
    return None


def _rescan_model_configs() -> None:
    """Re-read every JSON config under the registered paths (later paths win on equal names)."""
    _MODEL_CONFIGS.clear()
    for path in _MODEL_CONFIG_PATHS:
        files = [path] if path.is_file() else sorted(path.glob("*.json"))
        for file in files:
            _MODEL_CONFIGS[file.stem] = json.loads(file.read_text())


def add_model_config(path: str | Path) -> None:
    """Add a JSON config file, or a folder of them, to the configs the registry knows."""
    _MODEL_CONFIG_PATHS.append(Path(path))
    _rescan_model_configs()


def get_model_config(name: str) -> dict[str, Any] | None:
    """A copy of the JSON config named `name` (file stem), or None."""
    if not _MODEL_CONFIGS:
        _rescan_model_configs()
    config = _MODEL_CONFIGS.get(name)
    return dict(config) if config is not None else None


def list_models(pattern: str = "") -> list[str]:
    """Sorted names of registered entrypoints, optionally filtered by a shell-style pattern (`barcodebert*`)."""
    names = sorted(_MODEL_ENTRYPOINTS)
    return fnmatch.filter(names, pattern) if pattern else names


def model_entrypoint(name: str) -> Entrypoint:
    """The builder of model `name`: a registered entrypoint, the builder whose pattern matches, or a family's."""
    if name in _MODEL_ENTRYPOINTS:
        return _MODEL_ENTRYPOINTS[name]
    for regex, fn in _MODEL_PATTERNS:
        if regex.fullmatch(name):
            return lambda pretrained=None, **overrides: fn(name, pretrained=pretrained, **overrides)
    family = family_entrypoint(name)
    if family is not None:
        return family
    raise KeyError(f"unknown model {name!r}; known: {', '.join(list_models())}")


def is_model(name: str) -> bool:
    """Whether `name` resolves to a builder."""
    try:
        model_entrypoint(name)
    except KeyError:
        return False
    return True
