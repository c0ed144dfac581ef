"""Test-split report of the image classifiers: accuracies next to their baselines, plus the figures.

End of the classify flow (stream -> `classify_task` -> **report**). From each test record's top-k class
indices it computes what the BIOSCAN-1M experiments report (evaluation.md §4): top-1, top-5, macro
accuracy (mean per-class accuracy over the classes present in the test records, as in §1.5) and every
class's accuracy, and beside them the majority-class baseline (always predict the most populated train
class; its top-5 predicts the 5 most populated) and chance (1/C, 5/C, 1/C), so a number is never read
without its floor. Outputs: `report.json`, `report.md`, `confusion_matrix.png`; `plot_loss_curve` draws
the training log. A run on a BIOSCAN-1M partitioning (`experiment`, e.g. `large_insect_order`) also gets the 1M
paper's layout: its dataset size and task named as the paper names them (Large / Medium / Small,
Insect-Order / Diptera-Family) beside top-1 and macro accuracy, and `per_class_accuracy.png`, the per-class
top-1 test accuracy with classes in decreasing size (the 1M README's per-class figure).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from zoo.tasks.classify_data import ClassList

__all__ = ["evaluate", "plot_confusion", "plot_loss_curve", "write_report"]

REPORT_JSON, REPORT_MD, CONFUSION_PNG = "report.json", "report.md", "confusion_matrix.png"
PER_CLASS_PNG = "per_class_accuracy.png"
_SIZES_1M = {"large": "Large", "medium": "Medium", "small": "Small"}
_TASKS_1M = {"insect_order": "Insect-Order", "diptera_family": "Diptera-Family"}


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


def evaluate(
    topk: np.ndarray,
    labels: np.ndarray,
    classes: ClassList,
    *,
    excluded: dict[str, int],
    experiment: str | None = None,
) -> dict[str, Any]:
    """Metrics of predictions `topk` `(n, k)` (class indices by decreasing score) against `labels` `(n,)`.

    `excluded` counts the test records outside the class list (not in `labels`), reported as such;
    `experiment` names a BIOSCAN-1M partitioning the run used (added to the report with the 1M layout).
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
    named = {} if experiment is None else {"experiment": experiment}
    return {
        **named,
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


def _paper_name(experiment: str) -> tuple[str, str]:
    """(dataset, task) as the 1M paper names a partitioning, e.g. ("Large", "Insect-Order")."""
    size, _, task = experiment.partition("_")
    return _SIZES_1M.get(size, size), _TASKS_1M.get(task, task)


def _markdown_1m(report: dict[str, Any]) -> str:
    """The 1M paper's layout: one results row per experiment, then per-class top-1 in decreasing class size."""
    dataset, task = _paper_name(report["experiment"])
    lines = [
        f"## BIOSCAN-1M layout: {dataset} dataset, {task} ({report['experiment']})",
        "",
        "| dataset | task | classes | top-1 accuracy | macro accuracy | majority top-1 | chance macro |",
        "|---|---|---:|---:|---:|---:|---:|",
        f"| {dataset} | {task} | {report['num_classes']} | {100 * report['top1']:.1f} | {100 * report['macro']:.1f} | "
        f"{100 * report['majority']['top1']:.1f} | {100 * report['chance']['macro']:.1f} |",
        "",
        f"Per-class top-1 test accuracy ({PER_CLASS_PNG}):",
        "",
        "| " + " | ".join(row["label"] for row in report["per_class"]) + " |",
        "|" + "---:|" * len(report["per_class"]),
        "| "
        + " | ".join("-" if r["accuracy"] is None else f"{100 * r['accuracy']:.1f}" for r in report["per_class"])
        + " |",
    ]
    return "\n".join(lines) + "\n"


def plot_per_class(report: dict[str, Any], png: Path) -> None:
    """Per-class top-1 test accuracy, classes in decreasing train size, test counts on the bars."""
    plt = _pyplot()
    rows = report["per_class"]
    fig, ax = plt.subplots(figsize=(max(6.0, 0.35 * len(rows) + 2), 4.5))
    accuracy = [0.0 if r["accuracy"] is None else 100 * r["accuracy"] for r in rows]
    bars = ax.bar(range(len(rows)), accuracy, color="tab:green")
    for bar, row in zip(bars, rows, strict=True):
        ax.text(
            bar.get_x() + bar.get_width() / 2, bar.get_height() + 1, str(row["test_count"]), ha="center", fontsize=7
        )
    ax.set_xticks(range(len(rows)), [r["label"] for r in rows], rotation=75, ha="right", fontsize=8)
    title = f"Per-class top-1: {report.get('experiment', '')} (on the bars: test records)"
    ax.set(ylim=(0, 110), ylabel="top-1 test accuracy (%)", title=title)
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)


def write_report(report: dict[str, Any], out_dir: str | Path) -> None:
    """`report.json`, `report.md` (summary + per-class table) and `confusion_matrix.png` in `out_dir`; a 1M run
    (`report["experiment"]`) also gets the 1M paper's layout in `report.md` and `per_class_accuracy.png`."""
    out = Path(out_dir)
    (out / REPORT_JSON).write_text(json.dumps(report, indent=1, ensure_ascii=False))
    markdown = _markdown(report)
    if report.get("experiment"):
        markdown += "\n" + _markdown_1m(report)
        plot_per_class(report, out / PER_CLASS_PNG)
    (out / REPORT_MD).write_text(markdown)
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
