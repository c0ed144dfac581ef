"""The CLIP family (zoo/models/clip.py): registry, LoRA, save/reload, tower export as encoders, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import timm
import torch

import zoo
from zoo.encoder import WeightsError, is_encoder
from zoo.models.clip import ClipCfg, ClipModel, QkvSplit, tower_inputs
from zoo.tasks.clip_task import ClipTask

NO_DROPOUT = {
    "dna_overrides": {"hidden_size": 64, "intermediate_size": 128, "dropout": 0.0},
    "text_overrides": {"dropout": 0.0},
}
METADATA = [
    {"order": "Diptera", "family": "Cecidomyiidae", "genus": "Contarinia", "species": "Contarinia nasturtii"},
    {"order": "Hymenoptera", "family": "Braconidae", "genus": "Apanteles", "species": None},
    {"order": "Diptera", "family": "Phoridae", "genus": "Megaselia", "species": "Megaselia sp. BOLD:ACZ1234"},
]
BARCODES = ["ACGT" * 160, "NNNACGTTGCAAC" * 40, "TTGCA" * 100]


def tiny(**overrides: object) -> ClipModel:
    torch.manual_seed(0)
    return zoo.create_model("clip_tiny", **{**NO_DROPOUT, **overrides})


def encoder_batch(model: ClipModel) -> dict[str, torch.Tensor]:
    """A training batch built by each tower's own preprocessor (what the embedding job feeds it too)."""
    rng = np.random.default_rng(0)
    size = model.towers["image"].backbone.data_config["input_size"][-1]
    pixels = torch.from_numpy(rng.integers(0, 256, (3, 3, size, size), dtype=np.uint8))
    dna = model.towers["dna"].preprocessor()(BARCODES).arrays
    text = model.towers["text"].preprocessor()([json.dumps(m).encode() for m in METADATA]).arrays
    return {
        "image": pixels,
        "dna": torch.from_numpy(dna["input_ids"]),
        "dna_mask": torch.from_numpy(dna["attention_mask"]),
        "text": torch.from_numpy(text["input_ids"]),
        "text_mask": torch.from_numpy(text["attention_mask"]),
    }


def test_registry_names_and_reference_config() -> None:
    assert {"clip_tiny", "clip_small", "clip_vitb16_barcodebert_bertsmall"} <= set(zoo.list_models("clip*"))
    reference = ClipCfg.from_name("clip_vitb16_barcodebert_bertsmall")
    assert reference.image == "vit_base_patch16_224.augreg_in21k_ft_in1k"
    assert reference.dna == "barcodebert_5_12_12" and reference.text == "bert_small_text"
    assert (reference.embed_dim, reference.lora_rank, reference.recipe) == (768, 4, "bioscan5m-paper")
    assert reference.present == ("image", "dna", "text")


def test_qkv_split_computes_the_same_attention() -> None:
    torch.manual_seed(0)
    vit = timm.create_model("vit_tiny_patch16_224", num_classes=0, img_size=32, patch_size=8, depth=2).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        before = vit(x)
        for block in vit.blocks:
            block.attn.qkv = QkvSplit(block.attn.qkv)
        torch.testing.assert_close(vit(x), before, rtol=1e-5, atol=1e-5)


def test_lora_trains_only_adapters_and_heads_and_leaves_the_backbone_bit_identical() -> None:
    model = tiny()
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert all(".lora_" in n or ".head." in n for n in trainable)
    lora_layers = {n.rsplit(".lora_", 1)[0] for n in trainable if ".lora_" in n}
    # query and value of every attention layer: 2 ViT blocks, 2 BarcodeBERT layers, 2 text layers
    assert len(lora_layers) == 12 and all(n.endswith(("qkv.q", "qkv.v", "query", "value")) for n in lora_layers)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    optimizer = torch.optim.Adam(model.trainable_parameters(), lr=1e-2)
    batch = encoder_batch(model)
    for _ in range(3):
        ClipTask(model)(batch).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    for name, parameter in model.named_parameters():
        changed = not torch.equal(parameter, before[name])
        # LoRA's B starts at zero, so A gets no gradient on the first step but moves after B does
        assert changed == (name in trainable), name


def test_full_finetuning_trains_every_backbone_weight() -> None:
    model = tiny(finetune="full")
    frozen = [n for n, p in model.named_parameters() if not p.requires_grad]
    assert frozen == ["log_logit_scale"]  # the paper's temperature is fixed
    assert not any(".lora_" in n for n, _ in model.named_parameters())


def test_saved_model_and_exported_towers_reload_to_identical_embeddings(tmp_path: Path) -> None:
    model = tiny().eval()
    with torch.no_grad():  # move the heads and adapters off their init so the reload is a real test
        for parameter in model.trainable_parameters():
            if parameter.requires_grad:
                parameter.add_(torch.randn_like(parameter) * 0.05)
    batch = encoder_batch(model)
    with torch.no_grad():
        expected = model(batch)
    model.save_pretrained(tmp_path / "run" / "model")
    reloaded = zoo.create_model("clip_tiny", pretrained=tmp_path / "run")
    with torch.no_grad():
        for modality, features in reloaded(batch).items():
            assert torch.equal(features, expected[modality]), modality
    for modality in ("image", "dna", "text"):
        encoder = zoo.create_model(f"clip:{tmp_path / 'run'}/{modality}")
        assert is_encoder(encoder) and encoder.embed_dim == 32
        arrays = tower_inputs(batch, modality)
        with torch.no_grad():
            assert torch.equal(encoder.embed_batch(arrays), expected[modality])
        fingerprint = encoder.fingerprint()
        assert fingerprint["name"] == f"{tmp_path / 'run'}/{modality}"
        assert fingerprint["architecture"]["recipe"] == "bioscan5m-paper"


def test_two_modality_model_exports_only_its_towers(tmp_path: Path) -> None:
    model = tiny(modalities=["image", "dna"])
    model.save_pretrained(tmp_path)
    assert zoo.create_model(f"clip:{tmp_path}/dna").modality == "dna"
    with pytest.raises(ValueError, match="not 'text'"):
        zoo.create_model(f"clip:{tmp_path}/text")


def test_another_recipe_or_other_widths_are_refused(tmp_path: Path) -> None:
    tiny(recipe="corrected").save_pretrained(tmp_path / "corrected")
    with pytest.raises(WeightsError, match="recipe 'corrected', not 'bioscan5m-paper'"):
        zoo.create_model("clip_tiny", pretrained=tmp_path / "corrected", recipe="bioscan5m-paper")
    assert (
        zoo.create_model("clip_tiny", pretrained=tmp_path / "corrected", recipe="corrected").recipe.name == "corrected"
    )
    wide = tiny(embed_dim=48)
    wide.save_pretrained(tmp_path / "wide")
    config = json.loads((tmp_path / "wide" / "config.json").read_text())
    (tmp_path / "wide" / "config.json").write_text(json.dumps({**config, "embed_dim": 32}))
    with pytest.raises(WeightsError, match="shapes differ.*towers of other widths"):
        zoo.create_model("clip_tiny", pretrained=tmp_path / "wide")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "config.json").write_text(json.dumps({"family": "bert_text"}))
    with pytest.raises(WeightsError, match="not a CLIP model"):
        zoo.create_model(f"clip:{tmp_path / 'other'}/image")
    with pytest.raises(ValueError, match="unknown CLIP config fields"):
        zoo.create_model("clip_tiny", projection="mlp")
