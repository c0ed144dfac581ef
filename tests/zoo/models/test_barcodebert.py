"""Tests of zoo.models.barcodebert: forward, pooling, Hugging Face round trip, original-checkpoint converter."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
import torch
from transformers import AutoModel

import zoo
from zoo.models.barcodebert import BarcodeBert, CheckpointError, convert_barcodebert_checkpoint, masked_mean

TINY = {"hidden_size": 32, "intermediate_size": 64, "max_len": 120}


@pytest.fixture(scope="module")
def model() -> BarcodeBert:
    torch.manual_seed(0)
    return zoo.create_model("4-2-2", **TINY).eval()


def _batch(model: BarcodeBert) -> tuple[torch.Tensor, torch.Tensor]:
    ids, mask = model.tokenizer().encode_batch(["ACGT" * 30, "TTGCA" * 9, "NNNNACGT"])
    return torch.from_numpy(ids), torch.from_numpy(mask)


def test_forward_shapes_and_mask_embedding_row(model: BarcodeBert) -> None:
    ids, mask = _batch(model)
    with torch.no_grad():
        logits, emb = model(ids, mask), model.embed(ids, mask)
    assert logits.shape == (3, 30, 256) and emb.shape == (3, 32)
    assert torch.isfinite(logits).all() and torch.isfinite(emb).all()
    # BERT's pad_token_id = 0 is [MASK]: its embedding row starts (and stays) zero, as in the original
    assert model.bert.embeddings.word_embeddings.weight[0].abs().sum() == 0


def test_masked_mean_ignores_padding() -> None:
    hidden = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [100.0, 100.0]]])
    assert masked_mean(hidden, torch.tensor([[1, 1, 0]])).tolist() == [[2.0, 3.0]]
    assert masked_mean(hidden, torch.tensor([[0, 0, 0]])).tolist() == [[0.0, 0.0]]


def test_embedding_does_not_depend_on_padding_tokens(model: BarcodeBert) -> None:
    ids, mask = _batch(model)
    changed = ids.clone()
    changed[mask == 0] = 7  # whatever sits under mask 0 must not matter
    with torch.no_grad():
        assert torch.allclose(model.embed(ids, mask), model.embed(changed, mask), atol=1e-5)


def test_save_and_reload_with_automodel(model: BarcodeBert, tmp_path: Path) -> None:
    model.save_pretrained(tmp_path)
    assert (tmp_path / "config.json").exists() and (tmp_path / "tokenizer_config.json").exists()
    ids, mask = _batch(model)
    auto = AutoModel.from_pretrained(tmp_path).eval()  # stock transformers, no project code
    with torch.no_grad():
        expected = model.embed(ids, mask)
        auto_emb = masked_mean(auto(input_ids=ids, attention_mask=mask).last_hidden_state, mask)
        ours = zoo.create_model("4-2-2", pretrained=tmp_path).eval()
        assert torch.allclose(auto_emb, expected, atol=1e-5)
        assert torch.allclose(ours(ids, mask), model(ids, mask), atol=1e-5)
    assert ours.tokenizer().max_len == 120
    with pytest.raises(ValueError, match="overrides"):
        zoo.create_model("4-2-2", pretrained=tmp_path, hidden_size=64)


def _original_checkpoint(source: BarcodeBert, path: Path, **changes: object) -> None:
    """A file in the original BarcodeBERT format: DDP prefixes, a bert_config dict, the argparse Namespace."""
    cfg = source.config
    bert_config = {
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.hidden_size,
        "num_labels": 256,
        "num_hidden_layers": cfg.num_hidden_layers,
        "num_attention_heads": cfg.num_attention_heads,
        "intermediate_size": cfg.intermediate_size,
        "output_hidden_states": True,
    }
    state = {f"module.{k}": v for k, v in source.state_dict().items()}
    payload = {
        "model": state,
        "bert_config": bert_config,
        "epoch": 3,
        "total_step": 10,
        "config": argparse.Namespace(k_mer=4, n_layers=2, max_len=120, lr=1e-4),
    }
    payload.update(changes)
    torch.save(payload, path)


def test_convert_original_checkpoint(model: BarcodeBert, tmp_path: Path) -> None:
    path = tmp_path / "orig.pt"
    _original_checkpoint(model, path)
    converted = convert_barcodebert_checkpoint(path)
    ids, mask = _batch(model)
    with torch.no_grad():
        assert torch.allclose(converted.embed(ids, mask), model.embed(ids, mask), atol=1e-5)
    assert converted.tokenizer().max_len == 120
    assert zoo.create_model("4-2-2", pretrained=path).config.hidden_size == 32


def test_converter_refuses_what_it_cannot_verify(model: BarcodeBert, tmp_path: Path) -> None:
    bad = tmp_path / "pickle.pt"
    _original_checkpoint(model, bad, extra=Path("/etc"))  # any class beyond tensors/containers
    with pytest.raises(CheckpointError, match="weights_only"):
        convert_barcodebert_checkpoint(bad)
    extra_key = tmp_path / "extra.pt"
    state = {f"module.{k}": v for k, v in model.state_dict().items()} | {"module.evil.weight": torch.zeros(1)}
    _original_checkpoint(model, extra_key, model=state)
    with pytest.raises(CheckpointError, match="unexpected"):
        convert_barcodebert_checkpoint(extra_key)
    good = tmp_path / "good.pt"
    _original_checkpoint(model, good)
    with pytest.raises(CheckpointError, match="sha256"):
        convert_barcodebert_checkpoint(good, sha256="0" * 64)
    not_ckpt = tmp_path / "plain.pt"
    torch.save({"weights": torch.zeros(2)}, not_ckpt)
    with pytest.raises(CheckpointError, match="not an original"):
        convert_barcodebert_checkpoint(not_ckpt)
