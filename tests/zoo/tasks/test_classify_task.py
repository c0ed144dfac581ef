"""Class selection, metrics and weight loading of the image classifier (zoo/tasks/classify_*.py)."""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from PIL import Image

from bioscan_stream.schema import IMAGE, INDEX_FILE, TARGETS, shard_name
from bioscan_stream.shards.tarwriter import write_tar
from zoo.tasks.classify_data import ClassList, ClassTask, build_class_list, select_top
from zoo.tasks.classify_report import evaluate, write_report
from zoo.tasks.classify_task import ClassifyConfig, _lr_factor, load_backbone, train_worker

ORDERS = ["Coleoptera", "Diptera", "Hymenoptera", "Lepidoptera"]
FAMILIES = ["Cecidomyiidae", "Chironomidae", "Formicidae", "Phoridae", "Sciaridae"]
#: (order, family) codes of the train records: Diptera families Phoridae 4x, Cecidomyiidae 3x, Sciaridae 3x
#: (a tie with Cecidomyiidae, broken by code), Chironomidae 1x; Hymenoptera/Formicidae 5x; 2 without family.
TRAIN = [(1, 3)] * 4 + [(1, 0)] * 3 + [(1, 4)] * 3 + [(1, 1)] + [(2, 2)] * 5 + [(0, -1)] * 2 + [(3, -1)] + [(-1, -1)]


def _jpeg(shade: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (40, 30), (shade, 255 - shade, 80)).save(out, format="JPEG")
    return out.getvalue()


def _write_set(root: Path, splits: dict[str, list[tuple[int, int]]]) -> str:
    """A shard set like the converter's: JPEG + targets per record, `index.json` naming `vocab.json`."""
    entries: dict[str, object] = {}
    for split, rows in splits.items():
        samples: list[dict[str, bytes | str]] = [
            {"__key__": f"{split}{i:04d}", IMAGE: _jpeg(40 * (o + 1)), TARGETS: json.dumps({"order": o, "family": f})}
            for i, (o, f) in enumerate(rows)
        ]
        (root / split).mkdir(parents=True)
        write_tar(root / split / shard_name(split, 0), samples)
        entries[split] = {"shards": [{"path": f"{split}/{shard_name(split, 0)}", "samples": len(rows)}]}
    index = {"splits": entries, "vocabularies": {"file": "vocab.json", "missing": -1}}
    (root / INDEX_FILE).write_text(json.dumps(index))
    (root / "vocab.json").write_text(json.dumps({"order": ORDERS, "family": FAMILIES}))
    return str(root)


def test_select_top_breaks_ties_by_code() -> None:
    codes = np.array([5, 5, 2, 2, 9, 9, 9, 1, -1, -1, -1, -1])
    assert select_top(codes, 3) == [(9, 3), (2, 2), (5, 2)]


def test_order_classes_are_the_top_n_train_counts(tmp_path: Path) -> None:
    url = _write_set(tmp_path, {"train": TRAIN})
    classes = build_class_list(url, ClassTask("order", 2))
    assert classes.labels == ("Diptera", "Hymenoptera") and classes.train_counts == (11, 5)
    assert classes.excluded == {"missing": 1, "outside_parent": 0, "outside_top_n": 3}


def test_diptera_family_classes_count_only_diptera(tmp_path: Path) -> None:
    url = _write_set(tmp_path, {"train": TRAIN})
    classes = build_class_list(url, ClassTask("family", 3, within="Diptera"))
    assert classes.labels == ("Phoridae", "Cecidomyiidae", "Sciaridae")  # Formicidae (5) is not a Diptera family
    assert classes.excluded == {"missing": 0, "outside_parent": 9, "outside_top_n": 1}
    batch = {"family": torch.tensor([3, 4, 1, 2, 3, -1]), "order": torch.tensor([1, 1, 1, 2, 2, 1])}
    assert classes.encode(batch).tolist() == [0, 2, -1, -1, -1, -1]  # a Phoridae code under another order: out
    restored = ClassList.from_json(json.loads(json.dumps(classes.to_json())))
    assert restored == classes


def _classes(n: int) -> ClassList:
    return ClassList("order", None, None, tuple(range(n)), tuple(f"o{i}" for i in range(n)), (9,) * n, {})


def test_metrics_against_their_baselines(tmp_path: Path) -> None:
    labels = np.array([0, 0, 0, 1, 1, 2])
    topk = np.array([[0, 1], [0, 2], [1, 0], [1, 0], [0, 2], [0, 1]])
    report = evaluate(topk, labels, _classes(4), excluded={"missing": 2})
    assert report["top1"] == pytest.approx(3 / 6) and report["top5"] == pytest.approx(4 / 6)  # top-k with the k given
    assert report["macro"] == pytest.approx((2 / 3 + 1 / 2 + 0) / 3)  # over the 3 classes present
    assert report["majority"] == {"class": "o0", "top1": 0.5, "top5": 1.0, "macro": pytest.approx(1 / 3)}
    assert report["chance"] == {"top1": 0.25, "top5": 1.0, "macro": 0.25}
    assert report["confusion"][0] == [2, 1, 0, 0] and report["per_class"][3]["accuracy"] is None
    write_report(report, tmp_path)
    assert "| top-1 | 50.0 | 50.0 | 25.0 |" in (tmp_path / "report.md").read_text()
    assert (tmp_path / "confusion_matrix.png").stat().st_size > 0


def test_lr_warms_up_then_follows_a_cosine() -> None:
    assert _lr_factor(0, 4, 20) == 0.25 and _lr_factor(3, 4, 20) == 1.0
    assert _lr_factor(12, 4, 20) == pytest.approx(0.5) and _lr_factor(20, 4, 20) == pytest.approx(0.0)


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_backbone_weights_load_with_a_new_head(tmp_path: Path, suffix: str) -> None:
    source = timm.create_model("resnet10t", num_classes=7)
    path = tmp_path / f"w{suffix}"
    if suffix == ".pt":
        torch.save({"model": source.state_dict(), "epoch": 3}, path)
    else:
        from safetensors.torch import save_file

        save_file(source.state_dict(), str(path))
    target = timm.create_model("resnet10t", num_classes=3)
    assert load_backbone(target, str(path)) == ["fc.bias", "fc.weight"]
    assert torch.equal(target.state_dict()["conv1.0.weight"], source.state_dict()["conv1.0.weight"])
    with pytest.raises(ValueError, match="backbone"):
        load_backbone(timm.create_model("resnet18", num_classes=3), str(path))


def test_train_worker_writes_a_timm_loadable_checkpoint(tmp_path: Path) -> None:
    url = _write_set(tmp_path / "shards", {"train": TRAIN, "test": TRAIN})
    classes = build_class_list(url, ClassTask("order", 3))
    cfg = ClassifyConfig(
        shards=url, output_dir=str(tmp_path / "run"), classes=classes, model="resnet10t", image_size=32,
        batch_size=8, epochs=2, loader_workers=0, log_every=1, checkpoint_every=2,
    )  # fmt: skip
    summary = train_worker(cfg)
    assert summary["step"] == 2 * math.ceil(len(TRAIN) / 8) and summary["epoch"] == 2
    assert summary["test_samples"] == 18  # less one without an order and one Lepidoptera (4th order)
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert report["excluded_test"] == {"missing": 1, "outside_parent": 0, "outside_top_n": 1}
    ckpt = tmp_path / "run" / "checkpoint.pt"
    model = timm.create_model("resnet10t", num_classes=3, checkpoint_path=str(ckpt)).eval()
    reference = timm.create_model(
        "resnet10t", num_classes=3, checkpoint_path=str(tmp_path / "run" / "model.safetensors")
    )
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(x), reference.eval()(x))
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch_samples"] for r in rows if r["epoch"] == 1][-1] == len(TRAIN)  # each record once per epoch
