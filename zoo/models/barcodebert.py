"""BarcodeBERT: a BERT encoder over non-overlapping DNA k-mers with a k-mer prediction head.

Paper: Arias et al., "BarcodeBERT: Transformers for Biodiversity Analysis" (2023), and its BIOSCAN-5M
configurations (Gharaee et al., "BIOSCAN-5M", NeurIPS 2024 D&B, section 4.2 and appendix A5).
Source: the public BarcodeBERT code (MIT licence); this is a re-implementation, not a copy.

Sits in `zoo` on top of `bioscan_stream.dna.KmerTokenizer`: ids/masks in, k-mer logits (pretraining) or
masked mean-pooled embeddings (probes) out. The encoder is a stock `transformers` BERT, so a saved folder
loads with `transformers.AutoModel` without this project; the k-mer tokenizer settings travel in
`config.json` (`kmer_k`, `kmer_max_len`) and in `tokenizer_config.json` beside it.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from transformers import BertConfig, BertModel
from transformers.models.bert.modeling_bert import BertPreTrainedModel

from bioscan_stream.constants import DNA_MAX_LEN
from bioscan_stream.dna import N_SPECIAL, KmerTokenizer
from bioscan_stream.schema import DNA
from zoo._registry import get_model_config, register_model, register_model_pattern
from zoo.encoder import Preprocessed, module_fingerprint

__all__ = [
    "BarcodeBert",
    "BarcodeTokens",
    "BarcodeBertCfg",
    "CheckpointError",
    "convert_barcodebert_checkpoint",
    "masked_mean",
]

TOKENIZER_CONFIG = "tokenizer_config.json"
#: `barcodebert_8_4_4`, `barcodebert-8-4-4` or just `8-4-4`: k-mer length, layers, heads.
NAME_PATTERN = r"(?:barcodebert[_-])?(\d+)[_-](\d+)[_-](\d+)"


@dataclass(frozen=True)
class BarcodeBertCfg:
    """Architecture of one BarcodeBERT (the fields of `zoo/model_configs/barcodebert_*.json`)."""

    k: int
    num_layers: int
    num_heads: int
    hidden_size: int = 768
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    dropout: float = 0.1
    max_position_embeddings: int = 512
    max_len: int = DNA_MAX_LEN

    @classmethod
    def from_name(cls, name: str) -> BarcodeBertCfg:
        """Config of a name: its JSON file if one exists, else parsed from `k-L-H`."""
        json_cfg = get_model_config(name)
        if json_cfg is not None:
            json_cfg.pop("family", None)
            return cls(**json_cfg)
        match = re.fullmatch(NAME_PATTERN, name)
        if match is None:
            raise ValueError(f"{name!r} is not a BarcodeBERT name (expected e.g. 'barcodebert_8_4_4' or '8-4-4')")
        k, layers, heads = map(int, match.groups())
        return cls(k=k, num_layers=layers, num_heads=heads)

    def to_bert_config(self, **extra: Any) -> BertConfig:
        """The `transformers` config; `extra` passes e.g. `attn_implementation="eager"`."""
        config = BertConfig(
            vocab_size=4**self.k + N_SPECIAL,
            hidden_size=self.hidden_size,
            num_hidden_layers=self.num_layers,
            num_attention_heads=self.num_heads,
            intermediate_size=self.intermediate_size,
            hidden_act=self.hidden_act,
            hidden_dropout_prob=self.dropout,
            attention_probs_dropout_prob=self.dropout,
            max_position_embeddings=self.max_position_embeddings,
            **extra,
        )
        return with_kmer_settings(config, k=self.k, max_len=self.max_len)


def with_kmer_settings(config: BertConfig, *, k: int, max_len: int) -> BertConfig:
    """Store the tokenizer settings in the config (saved in config.json; ignored by `AutoModel`)."""
    config.kmer_k = k
    config.kmer_max_len = max_len
    return config


def masked_mean(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over attended tokens, `(n, T, d), (n, T) -> (n, d)`; a row with no attended token gives zeros."""
    weights = mask.to(hidden.dtype).unsqueeze(-1)
    return (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp_min(1.0)


@dataclass(frozen=True)
class BarcodeTokens:
    """Preprocessor of the embedding job: barcodes -> `(ids, mask)` at offset 0; an empty barcode is a reject."""

    k: int
    max_len: int = DNA_MAX_LEN

    def __call__(self, values: Sequence[Any]) -> Preprocessed:
        seqs = [v.decode("utf-8", "replace") if isinstance(v, bytes | bytearray) else str(v) for v in values]
        kept = np.asarray([i for i, s in enumerate(seqs) if s.strip()], dtype=np.int64)
        rejects = {i: "empty_barcode" for i, s in enumerate(seqs) if not s.strip()}
        ids, mask = KmerTokenizer(self.k, self.max_len).encode_batch([seqs[i] for i in kept.tolist()])
        return Preprocessed({"input_ids": ids, "attention_mask": mask}, kept, rejects)


class BarcodeBert(BertPreTrainedModel):
    """BERT encoder (no pooler) + Dropout + Linear(hidden, 4^k): `BertForTokenClassification`'s layout.

    State-dict names equal those of the original checkpoints (`bert.*`, `classifier.*`), and the encoder
    sits under `bert`, the base-model prefix, so `AutoModel.from_pretrained(folder)` gets it alone.
    """

    def __init__(self, config: BertConfig) -> None:
        super().__init__(config)
        self.bert = BertModel(config, add_pooling_layer=False)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.classifier = nn.Linear(config.hidden_size, config.vocab_size - N_SPECIAL)
        self.post_init()

    @property
    def k(self) -> int:
        """k-mer length (from the vocabulary size, which is 4^k + 2)."""
        return round(math.log(self.config.vocab_size - N_SPECIAL, 4))

    def tokenizer(self) -> KmerTokenizer:
        """The tokenizer this model was trained with."""
        return KmerTokenizer(k=self.k, max_len=getattr(self.config, "kmer_max_len", DNA_MAX_LEN))

    def encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Last hidden layer, `(n, T, hidden)`."""
        return self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state

    def kmer_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """The head alone, `(..., hidden) -> (..., 4^k)` (training fuses it with the loss instead)."""
        return self.classifier(self.dropout(hidden))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        """k-mer logits `(n, T, 4^k)`; class c is the k-mer with id c + 2."""
        return self.kmer_logits(self.encode(input_ids, attention_mask))

    def embed(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Barcode embeddings: the attention-masked mean of the last hidden layer, `(n, hidden)`."""
        return masked_mean(self.encode(input_ids, attention_mask), attention_mask)

    # The encoder contract (zoo.encoder.Encoder): what the embedding job needs.
    modality = "dna"
    input_member = DNA

    @property
    def embed_dim(self) -> int:
        return int(self.config.hidden_size)

    def preprocessor(self) -> BarcodeTokens:
        tok = self.tokenizer()
        return BarcodeTokens(tok.k, tok.max_len)

    def embed_batch(self, arrays: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.embed(arrays["input_ids"], arrays["attention_mask"])

    def input_spec(self) -> dict[str, Any]:
        tok = self.tokenizer()
        return {"tokenizer": "bioscan_stream.dna.KmerTokenizer", "k": tok.k, "max_len": tok.max_len, "offset": 0}

    def fingerprint(self) -> dict[str, Any]:
        arch = {key: getattr(self.config, key) for key in _ARCH_KEYS if hasattr(self.config, key)}
        name = f"barcodebert_{self.k}_{self.config.num_hidden_layers}_{self.config.num_attention_heads}"
        return module_fingerprint(name, {"family": "barcodebert", **arch, **self.input_spec()}, self)

    def save_pretrained(self, save_directory: str | Path, **kwargs: Any) -> None:  # type: ignore[override]
        """Hugging Face folder (config.json + safetensors) plus `tokenizer_config.json` with k and max_len."""
        super().save_pretrained(save_directory, **kwargs)
        tok = self.tokenizer()
        settings = {"tokenizer_class": "bioscan_stream.dna.KmerTokenizer", "k": tok.k, "max_len": tok.max_len}
        (Path(save_directory) / TOKENIZER_CONFIG).write_text(json.dumps(settings, indent=2) + "\n")


class CheckpointError(ValueError):
    """An original checkpoint that cannot be loaded safely or does not match a BarcodeBERT."""


#: Keys of the original `bert_config` dict that define the architecture (others, e.g. num_labels, are dropped).
_ARCH_KEYS = (
    "vocab_size",
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "intermediate_size",
    "hidden_act",
    "hidden_dropout_prob",
    "attention_probs_dropout_prob",
    "max_position_embeddings",
    "type_vocab_size",
    "layer_norm_eps",
    "pad_token_id",
    "initializer_range",
)


def checkpoint_filter_fn(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Strip the DDP `module.` prefixes of the original training code."""
    return {key.removeprefix("module."): value for key, value in state_dict.items()}


def _load_original(path: Path, sha256: str | None) -> dict[str, Any]:
    """`torch.load(weights_only=True)`, allowing only `argparse.Namespace` (the saved training arguments)."""
    if sha256 is not None:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        if digest != sha256.lower():
            raise CheckpointError(f"{path}: sha256 {digest} does not match the expected {sha256}")
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001  (any unpickling failure means: not verifiable, refuse)
        raise CheckpointError(f"{path}: refused, it cannot be loaded with weights_only=True ({err})") from err
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("model"), dict) or "bert_config" not in ckpt:
        raise CheckpointError(f"{path}: not an original BarcodeBERT checkpoint (needs 'model' and 'bert_config')")
    return ckpt


def _config_from_original(ckpt: dict[str, Any], path: Path) -> BertConfig:
    """Our config from the original `bert_config` dict (+ `max_len` from the saved argparse config)."""
    raw = dict(ckpt["bert_config"])
    n_kmers = raw.get("vocab_size", 0) - N_SPECIAL
    k = round(math.log(n_kmers, 4)) if n_kmers > 0 else 0
    if n_kmers <= 0 or 4**k != n_kmers:
        raise CheckpointError(f"{path}: vocab_size {raw.get('vocab_size')} is not 4^k + 2 (the BIOSCAN-5M format)")
    args = ckpt.get("config")
    max_len = int(getattr(args, "max_len", DNA_MAX_LEN) or DNA_MAX_LEN)
    arch = {key: raw[key] for key in _ARCH_KEYS if key in raw}
    return with_kmer_settings(BertConfig(**arch), k=k, max_len=max_len)


def convert_barcodebert_checkpoint(path: str | Path, *, sha256: str | None = None) -> BarcodeBert:
    """Load an original BarcodeBERT `torch.save` checkpoint (e.g. from its pretraining script) as a `BarcodeBert`.

    Refuses (CheckpointError) a file that needs arbitrary unpickling, a wrong sha256 when one is given, and a
    state dict whose keys or shapes differ from the architecture in its own `bert_config`.
    """
    path = Path(path)
    ckpt = _load_original(path, sha256)
    model = BarcodeBert(_config_from_original(ckpt, path))
    state = checkpoint_filter_fn(ckpt["model"])
    expected = model.state_dict()
    state = {key: value for key, value in state.items() if not key.endswith("position_ids")}  # buffer in old HF
    missing = sorted(set(expected) - set(state) - {"bert.embeddings.position_ids", "bert.embeddings.token_type_ids"})
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise CheckpointError(f"{path}: state dict mismatch; missing {missing[:5]}, unexpected {unexpected[:5]}")
    wrong = [key for key, value in state.items() if value.shape != expected[key].shape]
    if wrong:
        raise CheckpointError(f"{path}: shapes differ from bert_config for {wrong[:5]}")
    model.load_state_dict(state, strict=False)
    return model.eval()


def _create_barcodebert(name: str, pretrained: str | Path | None = None, **overrides: Any) -> BarcodeBert:
    """Random-init model of `name` with optional field overrides, or weights from a folder / original file."""
    attn = overrides.pop("attn_implementation", None)
    extra = {"attn_implementation": attn} if attn else {}
    if pretrained is not None:
        if overrides:
            raise ValueError(f"architecture overrides {sorted(overrides)} cannot apply to pretrained weights")
        path = Path(pretrained)
        if path.is_dir():
            return BarcodeBert.from_pretrained(path, **extra)
        return convert_barcodebert_checkpoint(path)
    cfg = dataclasses.replace(BarcodeBertCfg.from_name(name), **overrides)
    return BarcodeBert(cfg.to_bert_config(**extra))


@register_model
def barcodebert_4_12_12(pretrained: str | Path | None = None, **overrides: Any) -> BarcodeBert:
    """The original BarcodeBERT (k=4, 12 layers, 12 heads, ~86M parameters)."""
    return _create_barcodebert("barcodebert_4_12_12", pretrained, **overrides)


@register_model
def barcodebert_8_4_4(pretrained: str | Path | None = None, **overrides: Any) -> BarcodeBert:
    """k=8, 4 layers, 4 heads (129.5M parameters): the best configuration on BIOSCAN-5M."""
    return _create_barcodebert("barcodebert_8_4_4", pretrained, **overrides)


@register_model
def barcodebert_4_4_4(pretrained: str | Path | None = None, **overrides: Any) -> BarcodeBert:
    """k=4, 4 layers, 4 heads (~29M parameters)."""
    return _create_barcodebert("barcodebert_4_4_4", pretrained, **overrides)


@register_model
def barcodebert_6_6_6(pretrained: str | Path | None = None, **overrides: Any) -> BarcodeBert:
    """k=6, 6 layers, 6 heads (~49M parameters)."""
    return _create_barcodebert("barcodebert_6_6_6", pretrained, **overrides)


@register_model_pattern(NAME_PATTERN)
def barcodebert_any(name: str, pretrained: str | Path | None = None, **overrides: Any) -> BarcodeBert:
    """Any `k-L-H` BarcodeBERT, e.g. `barcodebert_5_8_8` or `6-12-12`."""
    return _create_barcodebert(name, pretrained, **overrides)
