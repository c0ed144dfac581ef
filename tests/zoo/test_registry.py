"""Tests of zoo._registry / zoo._factory: JSON configs, names, k-L-H parsing, create_model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import zoo
from zoo._registry import add_model_config, get_model_config, is_model
from zoo.models.barcodebert import BarcodeBert, BarcodeBertCfg

PUBLISHED = {
    "barcodebert_4_12_12": (4, 12, 12),
    "barcodebert_8_4_4": (8, 4, 4),
    "barcodebert_4_4_4": (4, 4, 4),
    "barcodebert_6_6_6": (6, 6, 6),
}


def test_published_configs_are_listed_and_parsed() -> None:
    assert set(PUBLISHED) <= set(zoo.list_models("barcodebert*"))
    for name, (k, layers, heads) in PUBLISHED.items():
        cfg = BarcodeBertCfg.from_name(name)
        assert (cfg.k, cfg.num_layers, cfg.num_heads) == (k, layers, heads)
        assert (cfg.hidden_size, cfg.intermediate_size, cfg.max_position_embeddings) == (768, 3072, 512)
        assert get_model_config(name)["family"] == "barcodebert"


@pytest.mark.parametrize("name", ["5-8-8", "barcodebert_5_8_8", "barcodebert-5-8-8"])
def test_any_klh_name(name: str) -> None:
    assert is_model(name)
    cfg = BarcodeBertCfg.from_name(name)
    assert (cfg.k, cfg.num_layers, cfg.num_heads) == (5, 8, 8)


def test_unknown_names_are_refused() -> None:
    assert not is_model("resnet_9000")
    with pytest.raises(KeyError, match="unknown model"):
        zoo.create_model("resnet_9000")
    with pytest.raises(ValueError, match="pretrained"):
        zoo.create_model("barcodebert_8_4_4.bioscan5m")


def test_create_model_with_overrides() -> None:
    model = zoo.create_model("3-2-2", hidden_size=32, intermediate_size=64, max_len=60)
    assert isinstance(model, BarcodeBert)
    assert model.config.vocab_size == 4**3 + 2 and model.classifier.out_features == 64
    assert model.config.num_hidden_layers == 2 and model.config.num_attention_heads == 2
    assert model.tokenizer().max_len == 60 and model.tokenizer().k == 3
    assert model.bert.pooler is None


def test_parameter_count_of_8_4_4_matches_the_paper() -> None:
    # 129.5M per the paper; building the meta-device skeleton keeps this instant
    import torch

    with torch.device("meta"):
        model = zoo.create_model("barcodebert_8_4_4")
    assert abs(sum(p.numel() for p in model.parameters()) / 1e6 - 129.5) < 0.1


def test_add_model_config(tmp_path: Path) -> None:
    spec = {
        "family": "barcodebert",
        "k": 3,
        "num_layers": 1,
        "num_heads": 2,
        "hidden_size": 16,
        "intermediate_size": 32,
    }
    (tmp_path / "barcodebert_3_1_2.json").write_text(json.dumps(spec))
    add_model_config(tmp_path)
    model = zoo.create_model("barcodebert_3_1_2")
    assert model.config.hidden_size == 16  # the JSON wins over the name-only defaults (768)


def test_parse_overrides() -> None:
    from zoo._factory import parse_overrides

    assert parse_overrides(["hidden_size=64", "dropout=0.0", "hidden_act=relu"]) == {
        "hidden_size": 64,
        "dropout": 0.0,
        "hidden_act": "relu",
    }
    with pytest.raises(ValueError, match="FIELD=VALUE"):
        parse_overrides(["hidden_size"])
