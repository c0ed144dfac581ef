"""Pieces every stream-fed Ray Train loop of `zoo/tasks` shares (image classification, CLIP): the warmup +
cosine lr factor, the resume-time truncation of the metrics file, and closing a loader's workers now."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

__all__ = ["close_loader", "lr_factor", "truncate_metrics"]


def close_loader(loader: Any) -> None:
    """Stop a loader's persistent workers now (not at garbage collection)."""
    iterator = getattr(loader, "_iterator", None)
    if iterator is not None and hasattr(iterator, "_shutdown_workers"):
        iterator._shutdown_workers()
    loader._iterator = None


def lr_factor(step: int, warmup: int, total: int) -> float:
    """Linear warmup over `warmup` steps, then cosine from 1 to 0 at `total`."""
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(total - warmup, 1))))


def truncate_metrics(path: Path, step: int) -> None:
    """On resume, drop metric lines logged after the checkpoint (they will be logged again)."""
    if not path.exists():
        return
    lines = [line for line in path.read_text().splitlines() if line and json.loads(line)["step"] <= step]
    path.with_suffix(".tmp").write_text("".join(line + "\n" for line in lines))
    os.replace(path.with_suffix(".tmp"), path)
