"""Tests of zoo.models.timm_image: name resolution, timm data configs, pixels preprocessor, strict local weights."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # belt and braces: nothing here may reach the hub

import argparse  # noqa: E402
import io  # noqa: E402
import logging  # noqa: E402
import pickle  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import timm  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

import zoo  # noqa: E402
from bioscan_stream.stream.transforms import ImageTransform  # noqa: E402
from zoo._registry import is_model  # noqa: E402
from zoo.encoder import WeightsError, is_encoder  # noqa: E402
from zoo.models.timm_image import TimmImageEncoder, TimmImagePixels  # noqa: E402

TINY = "vit_tiny_patch16_224"
SMALL = {"img_size": 64}  # ViT-Ti at 64 px: 16 patches, a forward of a few images takes milliseconds


@pytest.fixture(scope="module")
def vit() -> TimmImageEncoder:
    torch.manual_seed(0)
    return zoo.create_model(TINY, **SMALL)


def _jpeg(width: int, height: int, seed: int = 0) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 255, (height, width, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="JPEG", quality=90)
    return out.getvalue()


def _pixels(model: TimmImageEncoder, n: int = 3) -> torch.Tensor:
    done = model.preprocessor()([_jpeg(120 + 7 * i, 90, seed=i) for i in range(n)])
    return torch.from_numpy(done.arrays["image"])


def _embed(model: TimmImageEncoder, pixels: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.embed_batch({"image": pixels})


@pytest.mark.parametrize(("name", "dim"), [("resnet10t", 512), (TINY, 192)])
def test_embed_batch_has_the_stated_width(name: str, dim: int) -> None:
    model = zoo.create_model(name, **(SMALL if name == TINY else {}))
    assert is_encoder(model) and model.modality == "image" and model.input_member == "jpg"
    assert model.embed_dim == dim and not model.training
    emb = _embed(model, _pixels(model))
    assert emb.shape == (3, dim) and emb.dtype == torch.float32 and torch.isfinite(emb).all()


def test_embed_batch_normalises_with_the_data_config(vit: TimmImageEncoder) -> None:
    pixels = _pixels(vit)
    mean = torch.tensor(vit.data_config["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(vit.data_config["std"]).view(1, 3, 1, 1)
    with torch.no_grad():
        expected = vit.model((pixels.float() / 255 - mean) / std)
    assert torch.allclose(_embed(vit, pixels), expected, atol=1e-5)
    assert torch.allclose(_embed(vit, pixels[:1]), expected[:1], atol=1e-5)  # no dependence on neighbours


def test_preprocessor_decodes_jpegs_and_rejects_the_rest(vit: TimmImageEncoder) -> None:
    good = _jpeg(160, 120)
    values = [good, b"not an image", None, good[: len(good) // 3], bytearray(good)]
    done = pickle.loads(pickle.dumps(vit.preprocessor()))(values)
    size = vit.data_config["input_size"][-1]
    assert done.arrays["image"].dtype == np.uint8 and done.arrays["image"].shape[1:] == (3, size, size)
    assert done.rejects == {1: "undecodable_image", 2: "undecodable_image", 3: "undecodable_image"}
    assert done.kept.tolist() == [0, 4] and np.array_equal(done.arrays["image"][0], done.arrays["image"][1])
    transform = ImageTransform(train=False, size=size, crop_pct=vit.data_config["crop_pct"], interpolation="bicubic")
    assert np.array_equal(done.arrays["image"][0], transform(good).numpy())
    assert TimmImagePixels(size, 0.9)([]).arrays["image"].shape == (0, 3, size, size)


def test_preprocessor_on_real_specimen_photos(shared_fixtures: Path, vit: TimmImageEncoder) -> None:
    photos = sorted((shared_fixtures / "real_images").glob("*.jpg"))[:2]
    if not photos:
        pytest.skip("no real images in ../shared/fixtures/real_images")
    done = vit.preprocessor()([p.read_bytes() for p in photos] + [b"\xff\xd8garbage"])
    assert done.kept.tolist() == [0, 1] and done.rejects == {2: "undecodable_image"}
    assert done.arrays["image"].std() > 5  # a photo, not a blank
    assert _embed(vit, torch.from_numpy(done.arrays["image"])).shape == (2, 192)


def test_input_spec_is_timms_data_config_of_the_tag(caplog: pytest.LogCaptureFixture) -> None:
    name = "vit_base_patch16_224.augreg_in21k_ft_in1k"
    with caplog.at_level(logging.WARNING, logger="zoo.models.timm_image"), torch.device("meta"):
        model = zoo.create_model(name)  # ViT-B skeletons only: no memory, no forward
        reference = timm.create_model(name, pretrained=False, num_classes=0)
    assert "RANDOM" in caplog.text and name in caplog.text
    expected = timm.data.resolve_data_config({}, model=reference)
    spec = model.input_spec()
    assert expected["interpolation"] == "bicubic" and expected["crop_pct"] == 0.9  # what this test is about
    assert spec["interpolation"] == expected["interpolation"] and spec["crop_pct"] == expected["crop_pct"]
    assert spec["mean"] == list(expected["mean"]) and spec["std"] == list(expected["std"])
    assert spec["input_size"] == list(expected["input_size"]) and spec["crop_mode"] == "center"
    assert model.preprocessor() == TimmImagePixels(224, 0.9, "bicubic") and model.embed_dim == 768
    assert model.timm_name == name


def test_untagged_names_use_timms_default_config_without_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="zoo.models.timm_image"), torch.device("meta"):
        model = zoo.create_model("resnet50")
        default = timm.create_model("resnet50", pretrained=False, num_classes=0).pretrained_cfg["tag"]
    assert caplog.text == "" and model.embed_dim == 2048
    assert model.timm_name == f"resnet50.{default}"


def test_any_timm_name_resolves_and_registered_names_are_listed() -> None:
    assert {"resnet18", "resnet50", "vit_base_patch16_224", TINY, "resnet10t"} <= set(zoo.list_models())
    assert is_model("convnext_atto") and is_model("resnet50.a1_in1k") and not is_model("resnet_9000")
    assert zoo.create_model("convnext_atto.d2_in1k").embed_dim == 320
    with pytest.raises(ValueError, match="not a timm pretrained tag"):
        zoo.create_model("resnet18.no_such_tag")
    with pytest.raises(ValueError, match="pretrained"):
        zoo.create_model("barcodebert_8_4_4.bioscan5m")  # BarcodeBERT tags still need local weights


def test_data_configs_the_stream_transform_cannot_follow_are_refused() -> None:
    with pytest.raises(ValueError, match="not square"):
        zoo.create_model(TINY, img_size=(64, 96))
    with pytest.raises(ValueError, match="interpolation 'nearest'"):
        zoo.create_model("resnet10t", pretrained_cfg_overlay={"interpolation": "nearest"})


def test_weights_from_a_safetensors_file_and_a_checkpoint_drop_the_head(tmp_path: Path) -> None:
    torch.manual_seed(1)
    source = timm.create_model(TINY, num_classes=10, **SMALL).eval()  # a fine-tuned classifier, head included
    save_file(source.state_dict(), tmp_path / "fine_tuned.safetensors")
    torch.save({"state_dict": {f"module.{k}": v for k, v in source.state_dict().items()}}, tmp_path / "ddp.pth")
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected = source.forward_head(source.forward_features(images), pre_logits=True)
    for file in ("fine_tuned.safetensors", "ddp.pth"):
        model = zoo.create_model(TINY, pretrained=tmp_path / file, **SMALL)
        with torch.no_grad():
            assert torch.allclose(model(images), expected, atol=1e-5)


def test_reload_from_file_and_hf_folder_keeps_fingerprint_and_embeddings(vit: TimmImageEncoder, tmp_path: Path) -> None:
    save_file(vit.model.state_dict(), tmp_path / "model.safetensors")
    vit.save_pretrained(tmp_path / "folder")  # timm's save_for_hf: config.json + model.safetensors
    assert (tmp_path / "folder" / "config.json").is_file()
    pixels = _pixels(vit)
    for path in (tmp_path / "model.safetensors", tmp_path / "folder"):
        with torch.random.fork_rng():
            torch.manual_seed(123)  # a different random init underneath: the weights must come from the file
            reloaded = zoo.create_model(TINY, pretrained=path, **SMALL)
        assert reloaded.fingerprint() == vit.fingerprint()
        assert torch.equal(_embed(reloaded, pixels), _embed(vit, pixels))


def test_hf_folder_with_a_bin_file_and_its_own_data_config(tmp_path: Path) -> None:
    torch.manual_seed(2)
    source = timm.create_model("resnet10t", num_classes=0)
    timm.models.save_for_hf(source, str(tmp_path), safe_serialization=False)  # pytorch_model.bin
    model = zoo.create_model("resnet10t", pretrained=tmp_path)
    assert all(torch.equal(v, source.state_dict()[k]) for k, v in model.model.state_dict().items())
    assert model.fingerprint() == TimmImageEncoder(source).fingerprint()  # BatchNorm's 0-d counters included
    assert model.input_spec()["input_size"] == [3, 176, 176] and model.timm_name == "resnet10t.c3_in1k"


def test_wrong_weights_are_refused_naming_file_and_keys(vit: TimmImageEncoder, tmp_path: Path) -> None:
    resnet = timm.create_model("resnet10t", num_classes=0)
    save_file(resnet.state_dict(), tmp_path / "resnet.safetensors")
    with pytest.raises(WeightsError, match=r"resnet\.safetensors.*missing \['blocks\.0"):
        zoo.create_model(TINY, pretrained=tmp_path / "resnet.safetensors", **SMALL)
    reshaped = dict(vit.model.state_dict(), pos_embed=torch.zeros(1, 197, 192))  # a 224-px ViT's positions
    save_file(reshaped, tmp_path / "reshaped.safetensors")
    with pytest.raises(WeightsError, match="shapes differ for.*pos_embed"):
        zoo.create_model(TINY, pretrained=tmp_path / "reshaped.safetensors", **SMALL)
    torch.save({"state_dict": vit.model.state_dict(), "args": argparse.Namespace(lr=1)}, tmp_path / "unsafe.pth")
    (tmp_path / "junk.bin").write_bytes(b"junk")
    for file in ("unsafe.pth", "junk.bin"):
        with pytest.raises(WeightsError, match=file):
            zoo.create_model(TINY, pretrained=tmp_path / file, **SMALL)
    timm.models.save_for_hf(resnet, str(tmp_path / "resnet_folder"))
    with pytest.raises(WeightsError, match="holds a 'resnet10t'"):
        zoo.create_model(TINY, pretrained=tmp_path / "resnet_folder")


def test_fingerprint_changes_when_one_weight_changes(vit: TimmImageEncoder) -> None:
    torch.manual_seed(0)
    twin = zoo.create_model(TINY, **SMALL)
    before = twin.fingerprint()
    assert before == vit.fingerprint()  # same seed, same model
    assert before["name"] == f"{TINY}.augreg_in21k_ft_in1k" and before["architecture"]["num_features"] == 192
    with torch.no_grad():
        twin.model.blocks[0].attn.qkv.weight[0, 0] += 1e-3
    after = twin.fingerprint()
    assert after["weights_sha256"] != before["weights_sha256"]
    assert after["architecture_sha256"] == before["architecture_sha256"]
