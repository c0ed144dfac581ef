"""Result files of the evaluations (retrieval, clustering, probes -> **JSON + markdown + PNG**).

Each evaluation writes `<name>.json` (every number, unrounded), `<name>.md` (tables in the paper's layout,
percent with one decimal) and `<name>.png`. The retrieval tables follow the BIOSCAN-5M paper's Table 5: one
row per query->key pair, columns seen / unseen / H.M. x micro / macro x order, family, genus, species, one
table per top-k. Files are written whole to a temporary name and renamed (a reader never sees half a file).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["clustering_markdown", "retrieval_markdown", "write_clustering_report", "write_retrieval_report"]

_PARTS = (("seen", "seen"), ("unseen", "unseen"), ("hm", "H.M."))
_AVERAGES = ("micro", "macro")


def _pct(value: float) -> str:
    return "-" if value != value else f"{100 * value:.1f}"


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def retrieval_markdown(results: dict[str, Any]) -> str:
    """Table 5-style markdown: one table per top-k, a row per query->key pair (accuracy %, 1 decimal)."""
    ranks, protocol = results["protocol"]["ranks"], results["protocol"]
    lines = [f"Retrieval: keys {' + '.join(protocol['keys'])}; seen = {protocol['seen']}, unseen = "
             f"{protocol['unseen']}; ties: {protocol['tie']}. Accuracy in %.", ""]  # fmt: skip
    header = ["query->key"] + [f"{label} {avg} {rank}" for _, label in _PARTS for avg in _AVERAGES for rank in ranks]
    for k in protocol["top_k"]:
        lines += [f"**Top-{k}**", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for name, entry in results["pairs"].items():
            grid = entry["grid"]
            cells = [_pct(grid[p][avg][rank][str(k)]) for p, _ in _PARTS for avg in _AVERAGES for rank in ranks]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        lines.append("")
    lines += _ann_markdown(results)
    return "\n".join(lines)


def _ann_markdown(results: dict[str, Any]) -> list[str]:
    rows = [(name, entry) for name, entry in results["pairs"].items() if "ann" in entry]
    if not rows:
        return []
    lines = ["**ANN index vs exact search** (top-1 micro accuracy %, change in points)", "",
             "| query->key | rank | seen exact | seen ANN | change | unseen exact | unseen ANN | change |",
             "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for name, entry in rows:
        for rank in results["protocol"]["ranks"]:
            cells = []
            for part in ("seen", "unseen"):
                exact = entry["grid"][part]["micro"][rank]["1"]
                ann = entry["ann"]["grid"][part]["micro"][rank]["1"]
                cells += [_pct(exact), _pct(ann), f"{100 * (ann - exact):+.1f}"]
            lines.append(f"| {name} | {rank} | " + " | ".join(cells) + " |")
    return [*lines, ""]


def _retrieval_png(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pairs, ranks = list(results["pairs"]), results["protocol"]["ranks"]
    fig, axes = plt.subplots(1, max(1, len(pairs)), figsize=(3.6 * max(1, len(pairs)), 3.2), squeeze=False)
    for ax, name in zip(axes[0], pairs, strict=False):
        grid = results["pairs"][name]["grid"]
        for offset, (part, label) in enumerate(_PARTS):
            values = [100 * grid[part]["micro"][rank]["1"] for rank in ranks]
            ax.bar(np.arange(len(ranks)) + (offset - 1) * 0.27, values, width=0.27, label=label)
        ax.set_xticks(range(len(ranks)), ranks)
        ax.set_ylim(0, 100)
        ax.set_title(f"{name} (top-1 micro %)", fontsize=9)
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_retrieval_report(results: dict[str, Any], out: str | Path, name: str = "retrieval") -> dict[str, Path]:
    """Write `out/<name>.json`, `.md` and `.png`; returns their paths."""
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {ext: folder / f"{name}.{ext}" for ext in ("json", "md", "png")}
    _atomic_write(paths["json"], json.dumps(results, indent=1).encode())
    _atomic_write(paths["md"], retrieval_markdown(results).encode())
    _retrieval_png(results, paths["png"])
    return paths


def clustering_markdown(results: dict[str, Any]) -> str:
    """AMI % per label (median over seeds, then each seed), with the run's size and seconds."""
    seeds = list(results["ami_per_seed"])
    lines = [f"Zero-shot clustering: {results['n_samples']} samples x {results['n_features']} features, "
             f"Ward k = {results['n_clusters']} (species), UMAP seeds {', '.join(seeds)}. AMI in %.", "",
             "| label | AMI (median) | " + " | ".join(f"seed {s}" for s in seeds) + " |",
             "|---|---|" + "---|" * len(seeds)]  # fmt: skip
    for label, value in results["ami"].items():
        per_seed = [_pct(results["ami_per_seed"][s][label]) for s in seeds]
        lines.append(f"| {label} | {_pct(value)} | " + " | ".join(per_seed) + " |")
    seconds = ", ".join(f"{key} {value:.1f} s" for key, value in results["seconds"].items())
    return "\n".join([*lines, "", f"Time: {seconds}.", ""])


def _scatter_png(points: np.ndarray, orders: Sequence[str | None], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = np.asarray([o or "(none)" for o in orders], dtype=object)
    distinct, counts = np.unique(names, return_counts=True)
    ranked = list(distinct[np.argsort(-counts, kind="stable")])
    cmap = plt.get_cmap("tab20")
    fig, ax = plt.subplots(figsize=(7, 6))
    for i, order in enumerate(ranked):
        rows = names == order
        shown = order if i < 20 else None
        ax.scatter(points[rows, 0], points[rows, 1], s=2, color=cmap(i % 20), label=shown, rasterized=True)
    ax.set_title(f"UMAP 2-D, coloured by order ({len(points)} samples)", fontsize=10)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.legend(markerscale=5, fontsize=7, loc="best", ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_clustering_report(results: dict[str, Any], out: str | Path, name: str = "clustering") -> dict[str, Path]:
    """Write `out/<name>.json` (without the per-sample arrays), `.md` and, with 2-D points, `.png`."""
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {ext: folder / f"{name}.{ext}" for ext in ("json", "md")}
    summary = {key: value for key, value in results.items() if key not in ("scatter", "order")}
    _atomic_write(paths["json"], json.dumps(summary, indent=1).encode())
    _atomic_write(paths["md"], clustering_markdown(results).encode())
    if results.get("scatter") is not None:
        paths["png"] = folder / f"{name}.png"
        _scatter_png(np.asarray(results["scatter"]), results["order"], paths["png"])
    return paths
