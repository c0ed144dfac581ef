"""Tests of `zoo.detectors.detr`: the crop tool's DETR built offline, its two weight formats, refusals, batching.

A tiny random DETR (8-channel ResNet backbone, d_model 16, one layer each) keeps every forward cheap at the tool's
800 x 1066 input size; it is saved in the test as an HF folder and as a Lightning-style `.ckpt` whose keys are the
tool's (transformers v4 names under the Lightning module's `model.` prefix).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers_detr import TINY_DETR

from zoo.detectors import create_detector, list_detectors
from zoo.detectors.detr import DetrDetector, detr_config, load_detr, select_boxes
from zoo.encoder import WeightsError


class NotATensor:
    """Something only full unpickling can rebuild (a Lightning checkpoint's pickled hyper-parameters, say)."""


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="module")
def tiny() -> DetrDetector:
    return DetrDetector(architecture=TINY_DETR, batch_size=4, seed=3)


def _images() -> list[np.ndarray]:
    """Two real-size originals, a portrait one and an original_256-size one (a bright blob on grey each)."""
    images = []
    for i, (height, width) in enumerate([(768, 1024), (768, 1024), (600, 500), (256, 341)]):
        image = np.full((height, width, 3), 150, np.uint8)
        image[height // 4 : height // 2, width // 3 + 10 * i : width // 2 + 10 * i] = (40, 30, 20)
        images.append(image)
    return images


def _tool_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The crop tool's checkpoint keys: transformers v4 names, under the Lightning module's `model.` attribute."""
    renamed = {}
    for key, value in state.items():
        key = key.replace("backbone.model.", "backbone.conv_encoder.model.").replace(".o_proj.", ".out_proj.")
        renamed["model." + re.sub(r"layers\.(\d+)\.mlp\.fc", r"layers.\1.fc", key)] = value
    return renamed


def test_registered_and_offline(tiny: DetrDetector) -> None:
    assert "detr" in list_detectors()
    config = detr_config()
    backbone = config.backbone_config.to_dict()  # type: ignore[union-attr]
    assert config.num_labels == 1 and backbone["backbone"] == "resnet50" and not backbone["use_pretrained_backbone"]
    fingerprint = tiny.fingerprint()
    assert fingerprint["name"] == "detr" and len(fingerprint["weights_sha256"]) == 64
    assert fingerprint["preprocess"]["size"]["shortest_edge"] == 800
    assert fingerprint["preprocess"]["size"]["longest_edge"] == 1333


def test_preprocessing_is_the_tools(tiny: DetrDetector) -> None:
    grey = np.full((768, 1024, 3), 128, np.uint8)
    tall = np.full((3000, 400, 3), 128, np.uint8)  # longer side capped at 1333
    one = tiny.inputs([grey])
    assert one["pixel_values"].shape == (1, 3, 800, 1066) and bool(one["pixel_mask"].all())
    expected = (128 / 255 - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225])
    assert np.allclose(one["pixel_values"][0, :, 400, 500].numpy(), expected, atol=1e-4)
    both = tiny.inputs([grey, tall])
    assert both["pixel_values"].shape == (2, 3, 1333, 1066)
    assert both["pixel_mask"][1].sum(0).max() == 1333 and both["pixel_mask"][1].sum(1).max() == 178
    assert both["pixel_mask"][0, 800:].sum() == 0 and both["pixel_mask"][0, :800].all()


def test_selection_is_the_single_most_probable_query() -> None:
    logits = torch.tensor([[[0.0, 3.0], [2.0, 0.0], [1.0, 0.0]]])  # query 1 has the highest object probability
    boxes = torch.tensor([[[0.5, 0.5, 1.0, 1.0], [0.25, 0.5, 0.1, 0.2], [0.9, 0.9, 0.1, 0.1]]])
    (found,) = select_boxes(logits, boxes, [(1000, 500)])
    assert found.box == pytest.approx((200.0, 200.0, 300.0, 300.0))
    assert found.score == pytest.approx(float(torch.tensor([2.0, 0.0]).softmax(0)[0]))


def test_batched_equals_one_at_a_time(tiny: DetrDetector) -> None:
    images = _images()
    batched = tiny.detect(images)
    alone = [tiny.detect([image])[0] for image in images]
    for a, b, image in zip(batched, alone, images, strict=True):
        assert a.box is not None and b.box is not None
        assert np.abs(np.subtract(a.box, b.box)).max() <= 1.0
        assert abs(a.score - b.score) < 1e-2  # padding shifts the backbone's features at the padded edge
        assert 0 <= a.box[0] < a.box[2] <= image.shape[1] + 1 and 0 <= a.box[1] < a.box[3] <= image.shape[0] + 1


def test_hf_folder_and_lightning_ckpt_load_the_same_weights(tiny: DetrDetector, tmp_path: Path) -> None:
    tiny.model.save_pretrained(tmp_path / "hf")
    ckpt = tmp_path / "crop_tool.ckpt"
    state = _tool_keys(tiny.model.state_dict())
    torch.save({"epoch": 7, "global_step": 70, "pytorch-lightning_version": "2.0.0", "state_dict": state}, ckpt)
    images = _images()[:2]
    expected = tiny.detect(images)
    for source in (tmp_path / "hf", ckpt):
        loaded = create_detector("detr", checkpoint=source, architecture=TINY_DETR if source == ckpt else None)
        assert loaded.fingerprint()["weights_sha256"] == tiny.fingerprint()["weights_sha256"]
        assert loaded.detect(images) == expected


def test_refuses_pickles_and_mismatched_or_missing_checkpoints(tiny: DetrDetector, tmp_path: Path) -> None:
    pickled = tmp_path / "pickled.ckpt"
    torch.save({"state_dict": _tool_keys(tiny.model.state_dict()), "hyper_parameters": NotATensor()}, pickled)
    with pytest.raises(WeightsError, match="weights_only"):
        load_detr(pickled, architecture=TINY_DETR)
    coco = tmp_path / "coco.ckpt"
    torch.manual_seed(0)
    other = load_detr(None, architecture={**TINY_DETR, "num_labels": 91})
    torch.save({"state_dict": _tool_keys(other.state_dict())}, coco)
    with pytest.raises(WeightsError, match="class_labels_classifier"):
        load_detr(coco, architecture=TINY_DETR)
    other.save_pretrained(tmp_path / "coco_hf")
    with pytest.raises(WeightsError, match="91 classes"):
        load_detr(tmp_path / "coco_hf")
    with pytest.raises(WeightsError, match="not the crop tool's"):
        load_detr(coco)  # the default R-50 architecture: every key is missing or reshaped
    with pytest.raises(FileNotFoundError, match="does not exist"):
        create_detector("detr", checkpoint=tmp_path / "absent.ckpt")
