"""`create_model(name, pretrained=None)`: the one way to build a zoo model by name.

Sits at the top of `zoo`: it imports the family modules (which register themselves in `zoo._registry`)
and dispatches. A name may carry a tag after a dot (`barcodebert_8_4_4.bioscan5m`, timm-style); the tag
names a weight set, so it needs `pretrained` (a local path) until weights are published with the project.
Families that resolve their own tags (timm image encoders: the tag picks timm's data config, the weights stay
random without `pretrained`) get the full tagged name instead.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import zoo.models  # noqa: F401  (registers the families)
from zoo._registry import family_entrypoint, model_entrypoint
from zoo._registry import list_models as list_models

__all__ = ["create_model", "list_models", "parse_overrides"]


def create_model(name: str, pretrained: str | Path | None = None, **overrides: Any) -> Any:
    """Build model `name` (random init), or load its weights from `pretrained` (a local file or folder).

    Args:
        name: a registered model name, optionally with a `.tag` (see `zoo.list_models()`), or any name a family
            accepts (e.g. every timm model name, tagged or not).
        pretrained: a path the family's loader understands (for BarcodeBERT: a saved Hugging Face folder or
            an original BarcodeBERT `.pth` checkpoint).
        overrides: architecture fields to change (e.g. `dropout=0.0`).
    """
    arch, _, tag = name.partition(".")
    family = family_entrypoint(name) if tag else None
    if family is not None:
        return family(pretrained=pretrained, **overrides)
    if tag and pretrained is None:
        raise ValueError(f"model {name!r} names the weight set {tag!r}: pass pretrained=<local path> to load it")
    return model_entrypoint(arch)(pretrained=pretrained, **overrides)


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """Command-line `FIELD=VALUE` architecture overrides; a value is JSON when it parses (numbers), else text."""
    overrides: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ValueError(f"override {item!r} is not FIELD=VALUE")
        try:
            overrides[key] = json.loads(raw)
        except json.JSONDecodeError:
            overrides[key] = raw
    return overrides
