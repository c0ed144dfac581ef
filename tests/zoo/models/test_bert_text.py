"""Tests of zoo.models.bert_text: taxonomy strings, fixed-length tokens, masked-mean embeddings, local folders."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # belt and braces: nothing here may reach the hub

import csv  # noqa: E402
import json  # noqa: E402
import pickle  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402
from transformers import BertConfig, BertForPreTraining, BertModel  # noqa: E402

import zoo  # noqa: E402
from zoo.encoder import WeightsError, is_encoder  # noqa: E402
from zoo.models.barcodebert import masked_mean  # noqa: E402
from zoo.models.bert_text import BertTextCfg, BertTextEncoder, char_tokenizer, taxonomy_text  # noqa: E402

RECORDS = [
    {"order": "Diptera", "family": "Phoridae", "genus": "Megaselia", "species": "Megaselia sp. BOLD:ACZ1234"},
    {"order": "Hymenoptera", "family": None, "genus": "", "species": None, "processid": "X1"},
    {"order": "Lepidoptera", "family": "Geometridae", "genus": "Eupithecia", "species": None},
]


@pytest.fixture(scope="module")
def tiny() -> BertTextEncoder:
    torch.manual_seed(0)
    return zoo.create_model("bert_tiny_text")


def _tokens(model: BertTextEncoder, records: list[dict[str, object]] = RECORDS) -> dict[str, torch.Tensor]:
    done = model.preprocessor()([json.dumps(r).encode() for r in records])
    return {name: torch.from_numpy(array) for name, array in done.arrays.items()}


def _embed(model: BertTextEncoder, tokens: dict[str, torch.Tensor]) -> torch.Tensor:
    with torch.no_grad():
        return model.embed_batch(tokens)


def test_taxonomy_text_leaves_out_unknown_ranks() -> None:
    assert taxonomy_text(RECORDS[0]) == "Diptera Phoridae Megaselia Megaselia sp. BOLD:ACZ1234"
    assert taxonomy_text(RECORDS[1]) == "Hymenoptera"
    assert taxonomy_text({"order": " Diptera ", "family": 3, "species": "  "}) == "Diptera"


@pytest.mark.parametrize(("name", "dim"), [("bert_tiny_text", 32), ("bert_small_text", 512)])
def test_embed_batch_has_the_stated_width(name: str, dim: int) -> None:
    model = zoo.create_model(name)
    assert is_encoder(model) and model.modality == "text" and model.input_member == "json"
    assert model.embed_dim == dim and not model.training
    emb = _embed(model, _tokens(model))
    assert emb.shape == (3, dim) and emb.dtype == torch.float32 and torch.isfinite(emb).all()


def test_bert_small_text_is_the_reference_architecture() -> None:
    cfg = BertTextCfg.from_name("bert_small_text")
    assert (cfg.num_layers, cfg.hidden_size, cfg.num_heads, cfg.intermediate_size, cfg.max_len) == (4, 512, 8, 2048, 20)
    config = zoo.create_model("bert_small_text").bert.config
    assert (config.num_hidden_layers, config.hidden_size, config.num_attention_heads) == (4, 512, 8)


def test_preprocessor_fixed_shapes_and_rejects(tiny: BertTextEncoder) -> None:
    values = [json.dumps(RECORDS[0]).encode(), b"not json", json.dumps({"order": None}), "[1, 2]", RECORDS[2], None]
    done = pickle.loads(pickle.dumps(tiny.preprocessor()))(values)
    assert done.kept.tolist() == [0, 4]
    assert done.rejects == {1: "invalid_metadata", 2: "empty_taxonomy", 3: "invalid_metadata", 5: "invalid_metadata"}
    ids, mask = done.arrays["input_ids"], done.arrays["attention_mask"]
    assert ids.shape == mask.shape == (2, 128) and ids.dtype == mask.dtype == np.int64
    # one token per letter, digit or punctuation mark, plus [CLS] and [SEP]; padded with [PAD] = 0
    assert mask[1].sum() == len("LepidopteraGeometridaeEupithecia") + 2 and (ids[mask == 0] == 0).all()
    assert tiny.preprocessor()([]).arrays["input_ids"].shape == (0, 128)


def test_char_tokenizer_is_case_and_accent_insensitive() -> None:
    tokenizer = char_tokenizer()
    assert tokenizer.encode("Diptera Phoridae").ids == tokenizer.encode("diptera phoridaé").ids
    assert tokenizer.encode("ab").tokens == ["[CLS]", "a", "##b", "[SEP]"]


def test_real_taxonomies_fit_the_builtin_length(shared_fixtures: Path, tiny: BertTextEncoder) -> None:
    path = shared_fixtures / "real_dna" / "canada1.5m_unseen_100species.tsv"
    if not path.is_file():
        pytest.skip("no real taxonomy fixture")
    with path.open() as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    ranks = ("order", "family", "genus", "species")
    records = [{rank: row[f"{rank}_name"] for rank in ranks} for row in rows[::50]]
    done = tiny.preprocessor()(records)
    assert len(done.kept) == 100 and done.arrays["attention_mask"].sum(axis=1).max() < 128  # never truncated
    assert (done.arrays["input_ids"] != 1).all()  # no [UNK]


def test_embedding_depends_only_on_the_row_and_its_mask(tiny: BertTextEncoder) -> None:
    tokens = _tokens(tiny)
    emb = _embed(tiny, tokens)
    changed = dict(tokens, input_ids=tokens["input_ids"].masked_fill(tokens["attention_mask"] == 0, 7))
    assert torch.allclose(_embed(tiny, changed), emb, atol=1e-5)
    assert torch.allclose(_embed(tiny, {k: v[1:2] for k, v in tokens.items()}), emb[1:2], atol=1e-5)
    hidden = tiny.bert(**tokens).last_hidden_state
    assert torch.allclose(masked_mean(hidden, tokens["attention_mask"]), emb, atol=1e-6)


def test_save_and_reload_keeps_fingerprint_and_embeddings(tiny: BertTextEncoder, tmp_path: Path) -> None:
    tiny.save_pretrained(tmp_path)
    with torch.random.fork_rng():
        torch.manual_seed(5)
        reloaded = zoo.create_model("bert_tiny_text", pretrained=tmp_path)
    assert reloaded.preprocessor() == tiny.preprocessor()  # tokenizer and length travel with the folder
    assert reloaded.fingerprint() == tiny.fingerprint()
    assert torch.equal(_embed(reloaded, _tokens(reloaded)), _embed(tiny, _tokens(tiny)))


def _wordpiece_folder(folder: Path) -> BertForPreTraining:
    """A folder shaped like a published BERT (prajjwal1/bert-small): `bert.` prefix, pooler and MLM heads,
    a WordPiece `vocab.txt` and no tokenizer.json."""
    from transformers import BertTokenizerFast

    words = ["diptera", "phor", "##idae", "mega", "##selia", "sp", ".", "hymen", "##optera"]
    folder.mkdir()
    (folder / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]) + "\n")
    BertTokenizerFast(vocab_file=str(folder / "vocab.txt")).save_pretrained(folder)
    (folder / "tokenizer.json").unlink(missing_ok=True)
    config = BertConfig(vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)
    torch.manual_seed(3)
    model = BertForPreTraining(config).eval()
    model.save_pretrained(folder)
    return model


def test_published_style_folder_uses_its_wordpiece_and_20_tokens(tmp_path: Path) -> None:
    source = _wordpiece_folder(tmp_path / "bert")
    model = zoo.create_model("bert_tiny_text", pretrained=tmp_path / "bert")
    tokens = _tokens(model, RECORDS[:2])
    assert tokens["input_ids"].shape == (2, 20)  # the reference length: truncated, always padded
    assert tokens["input_ids"][1, :4].tolist() == [2, 12, 13, 3]  # [CLS] hymen ##optera [SEP]
    with torch.no_grad():
        hidden = source.bert(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"]).last_hidden_state
    assert torch.allclose(_embed(model, tokens), masked_mean(hidden, tokens["attention_mask"]), atol=1e-5)


def test_wrong_weights_are_refused(tiny: BertTextEncoder, tmp_path: Path) -> None:
    tiny.save_pretrained(tmp_path / "tiny")
    with pytest.raises(WeightsError, match="not a bert_small_text"):
        zoo.create_model("bert_small_text", pretrained=tmp_path / "tiny")
    state = load_file(tmp_path / "tiny" / "model.safetensors")
    key = next(k for k in state if k.endswith("intermediate.dense.weight"))
    save_file({**state, key: torch.zeros(48, 32)}, tmp_path / "tiny" / "model.safetensors")
    with pytest.raises(WeightsError, match="do not load"):
        zoo.create_model("bert_tiny_text", pretrained=tmp_path / "tiny")
    bare = tmp_path / "bare"
    BertModel(tiny.bert.config, add_pooling_layer=False).save_pretrained(bare)
    with pytest.raises(WeightsError, match="no tokenizer"):
        zoo.create_model("bert_tiny_text", pretrained=bare)
    with pytest.raises(WeightsError, match="no config.json"):
        zoo.create_model("bert_tiny_text", pretrained=tmp_path / "tiny" / "model.safetensors")


def test_fingerprint_changes_when_one_weight_changes() -> None:
    torch.manual_seed(0)
    model = zoo.create_model("bert_tiny_text")
    before = model.fingerprint()
    assert before["name"] == "bert_tiny_text" and before["architecture"]["max_len"] == 128
    with torch.no_grad():
        model.bert.encoder.layer[0].attention.self.query.weight[0, 0] += 1e-3
    after = model.fingerprint()
    assert after["weights_sha256"] != before["weights_sha256"]
    assert after["architecture_sha256"] == before["architecture_sha256"]
