"""Test-split report of the image classifiers: accuracies next to their baselines, plus the figures.

End of the classify flow (stream -> `classify_task` -> **report**). From each test record's top-k class
indices it computes what the BIOSCAN-1M experiments report (evaluation.md §4): top-1, top-5, macro
accuracy (mean per-class accuracy over the classes present in the test records, as in §1.5) and every
class's accuracy, and beside them the majority-class baseline (always predict the most populated train
class; its top-5 predicts the 5 most populated) and chance (1/C, 5/C, 1/C), so a number is never read
without its floor. Outputs: `report.json`, `report.md`, `confusion_matrix.png`; `plot_loss_curve` draws
the training log.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from zoo.tasks.classify_data import ClassList

__all__ = ["evaluate", "plot_confusion", "plot_loss_curve", "write_report"]

REPORT_JSON, REPORT_MD, CONFUSION_PNG = "report.json", "report.md", "confusion_matrix.png"


def _per_class(pred: np.ndarray, labels: np.ndarray, classes: ClassList) -> list[dict[str, Any]]:
    rows = []
    for i in range(classes.num_classes):
        mine = labels == i
        n, correct = int(mine.sum()), int((pred[mine] == i).sum())
        rows.append(
            {
                "index": i, "label": classes.labels[i], "code": classes.codes[i],
                "train_count": classes.train_counts[i], "test_count": n, "correct": correct,
                "accuracy": correct / n if n else None,
            }
        )  # fmt: skip
    return rows


def evaluate(topk: np.ndarray, labels: np.ndarray, classes: ClassList, *, excluded: dict[str, int]) -> dict[str, Any]:
    """Metrics of predictions `topk` `(n, k)` (class indices by decreasing score) against `labels` `(n,)`.

    `excluded` counts the test records outside the class list (not in `labels`), reported as such.
    """
    c = classes.num_classes
    k5 = min(5, c)
    pred = topk[:, 0]
    per_class = _per_class(pred, labels, classes)
    present = [row for row in per_class if row["test_count"]]
    confusion = np.zeros((c, c), dtype=np.int64)
    np.add.at(confusion, (labels, pred), 1)
    n = max(len(labels), 1)
    majority_hits = int((labels == 0).sum())
    return {
        "rank": classes.rank,
        "within": classes.within,
        "num_classes": c,
        "test_samples": int(len(labels)),
        "classes_in_test": len(present),
        "top1": float((pred == labels).sum() / n),
        "top5": float((topk[:, :k5] == labels[:, None]).any(axis=1).sum() / n),
        "macro": float(np.mean([row["accuracy"] for row in present])) if present else 0.0,
        "majority": {
            "class": classes.labels[0],
            "top1": majority_hits / n,
            "top5": float((labels < k5).sum() / n),
            "macro": (1.0 if per_class[0]["test_count"] else 0.0) / max(len(present), 1),
        },
        "chance": {"top1": 1 / c, "top5": k5 / c, "macro": 1 / c},
        "excluded_test": excluded,
        "excluded_train": classes.excluded,
        "per_class": per_class,
        "confusion": confusion.tolist(),
    }


def _markdown(report: dict[str, Any]) -> str:
    what = report["rank"] + (f" within {report['within']}" if report["within"] else "")
    lines = [
        f"# {what}: {report['num_classes']} classes, {report['test_samples']} test records "
        f"({report['classes_in_test']} classes present)",
        "",
        "| metric | model | majority class | chance |",
        "|---|---:|---:|---:|",
    ]
    for key, name in (("top1", "top-1"), ("top5", "top-5"), ("macro", "macro (mean per-class)")):
        lines.append(
            f"| {name} | {100 * report[key]:.1f} | {100 * report['majority'][key]:.1f} | "
            f"{100 * report['chance'][key]:.1f} |"
        )
    lines += ["", f"Excluded test records: {report['excluded_test']}; train: {report['excluded_train']}.", ""]
    lines += ["| class | label | train | test | accuracy |", "|---:|---|---:|---:|---:|"]
    for row in report["per_class"]:
        acc = "-" if row["accuracy"] is None else f"{100 * row['accuracy']:.1f}"
        lines.append(f"| {row['index']} | {row['label']} | {row['train_count']} | {row['test_count']} | {acc} |")
    return "\n".join(lines) + "\n"


def write_report(report: dict[str, Any], out_dir: str | Path) -> None:
    """`report.json`, `report.md` (summary + per-class table) and `confusion_matrix.png` in `out_dir`."""
    out = Path(out_dir)
    (out / REPORT_JSON).write_text(json.dumps(report, indent=1, ensure_ascii=False))
    (out / REPORT_MD).write_text(_markdown(report))
    labels = [row["label"] for row in report["per_class"]]
    plot_confusion(np.asarray(report["confusion"]), labels, out / CONFUSION_PNG)


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_confusion(confusion: np.ndarray, labels: list[str], png: Path) -> None:
    """Row-normalised confusion matrix (true class per row), with the counts per row in the tick labels."""
    plt = _pyplot()
    rows = confusion.sum(axis=1, keepdims=True)
    share = np.divide(confusion, rows, out=np.zeros(confusion.shape, dtype=float), where=rows > 0)
    side = 3 + 0.28 * len(labels)
    fig, ax = plt.subplots(figsize=(side + 1.5, side))
    image = ax.imshow(share, cmap="viridis", vmin=0, vmax=1)
    ticks = np.arange(len(labels))
    ax.set_xticks(ticks, labels, rotation=90, fontsize=7)
    ax.set_yticks(ticks, [f"{name} ({n})" for name, n in zip(labels, rows[:, 0], strict=True)], fontsize=7)
    ax.set(xlabel="predicted", ylabel="true (test records)", title="confusion matrix (row-normalised)")
    fig.colorbar(image, ax=ax, fraction=0.046)
    fig.tight_layout()
    fig.savefig(png, dpi=100)
    plt.close(fig)


def plot_loss_curve(metrics_path: Path, png: Path) -> None:
    """PNG of the training loss and top-1 against the optimizer step, epoch boundaries dotted."""
    rows = [json.loads(line) for line in Path(metrics_path).read_text().splitlines() if line]
    if not rows:
        return
    plt = _pyplot()
    steps = [r["step"] for r in rows]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 3.5))
    ax_loss.plot(steps, [r["loss"] for r in rows])
    ax_loss.set(xlabel="optimizer step", ylabel="cross-entropy", title="training loss")
    ax_acc.plot(steps, [r["train_top1"] for r in rows], color="tab:orange")
    ax_acc.set(xlabel="optimizer step", ylabel="top-1 on training batches", title="training accuracy")
    for prev, row in zip(rows, rows[1:], strict=False):
        if row["epoch"] != prev["epoch"]:
            for ax in (ax_loss, ax_acc):
                ax.axvline(prev["step"], color="grey", linestyle=":", linewidth=0.8)
    fig.tight_layout()
    fig.savefig(png, dpi=100)
    plt.close(fig)
