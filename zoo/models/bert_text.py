"""BERT text encoder of the taxonomy string "order family genus species" (the BIOSCAN-CLIP text tower).

Paper: Gong et al., "CLIBD: Bridging Vision and Genomics for Biodiversity Monitoring at Scale" (BIOSCAN-CLIP,
2024), text encoder BERT-small (4 layers, hidden 512, 8 heads; WordPiece, 20 tokens) over the sample's
taxonomy; ../shared/reference/evaluation.md, "Reference model recipe". Source: a stock `transformers`
`BertModel` (Apache-2.0) and `tokenizers`; this file only wires them to the zoo encoder contract.

Sits in `zoo` on the stream's metadata member (`bioscan_stream.schema.METADATA`, a JSON object): ranks with
a null or empty value are left out of the string; the string is tokenized to a fixed length (always padded to
`max_len`) and embedded as the attention-masked mean of BERT's last layer.

Weights and tokenizer come from a local Hugging Face folder (`pretrained=`, e.g. a saved `prajjwal1/bert-small`
or a folder `BertTextEncoder.save_pretrained` wrote). Without one the model is random and the tokenizer is
built in (`char_tokenizer`): a lower-casing character-level WordPiece vocabulary (89 entries) that needs no
file or download. It spells a name one token per character, so it gets `char_max_len` = 128 tokens instead of
the reference's 20 WordPiece tokens: the longest taxonomy of the real CANADA-1.5M fixture (100 species) has 65
letters, and BIOSCAN's placeholder species names ("Megaselia sp. BOLD:ACZ1234") are longer still.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tokenizers import Tokenizer, decoders, normalizers, pre_tokenizers, processors
from tokenizers.models import WordPiece
from torch import nn
from transformers import BertConfig, BertModel, BertTokenizerFast  # type: ignore[attr-defined]  # a lazy export in 5.x

from bioscan_stream.schema import METADATA
from zoo._registry import get_model_config, register_model
from zoo.encoder import Preprocessed, WeightsError, module_fingerprint
from zoo.models.barcodebert import masked_mean

__all__ = ["BertTextCfg", "BertTextEncoder", "TaxonomyTokens", "char_tokenizer", "taxonomy_text"]

TOKENIZER_FILE = "tokenizer.json"
#: The ranks of the text, in order (BIOSCAN-CLIP's "order family genus species").
TEXT_RANKS = ("order", "family", "genus", "species")
_SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
#: Characters of the built-in vocabulary: word characters (also as `##` continuations) and the punctuation
#: BERT's pre-tokenizer splits off as words of their own.
_WORD_CHARS = string.ascii_lowercase + string.digits
_PUNCTUATION = ".-_:()/,&'+#"
#: Architecture keys of the saved `config.json` that the name's config must match.
_ARCH_KEYS = {
    "num_hidden_layers": "num_layers",
    "hidden_size": "hidden_size",
    "num_attention_heads": "num_heads",
    "intermediate_size": "intermediate_size",
}


@dataclass(frozen=True)
class BertTextCfg:
    """Architecture of one text encoder (the fields of `zoo/model_configs/bert_*_text.json`).

    `max_len` is the token length with a folder's own (WordPiece) tokenizer, as in the reference (20);
    `char_max_len` the length with the built-in character tokenizer, one token per letter.
    """

    num_layers: int
    hidden_size: int
    num_heads: int
    intermediate_size: int
    hidden_act: str = "gelu"
    dropout: float = 0.1
    max_position_embeddings: int = 512
    max_len: int = 20
    char_max_len: int = 128

    @classmethod
    def from_name(cls, name: str) -> BertTextCfg:
        """The config of `name` from its JSON file."""
        config = get_model_config(name)
        if config is None:
            raise ValueError(f"no model config {name!r} (zoo/model_configs/{name}.json)")
        config.pop("family", None)
        return cls(**config)

    def to_bert_config(self, vocab_size: int) -> BertConfig:
        """The `transformers` config for a vocabulary of `vocab_size` tokens."""
        return BertConfig(
            vocab_size=vocab_size,
            hidden_size=self.hidden_size,
            num_hidden_layers=self.num_layers,
            num_attention_heads=self.num_heads,
            intermediate_size=self.intermediate_size,
            hidden_act=self.hidden_act,
            hidden_dropout_prob=self.dropout,
            attention_probs_dropout_prob=self.dropout,
            max_position_embeddings=self.max_position_embeddings,
        )


def char_tokenizer() -> Tokenizer:
    """The built-in tokenizer: BERT normalisation (lower case, accents stripped), BERT pre-tokenization and a
    character WordPiece vocabulary; `[CLS] ... [SEP]`. A word with a character outside it becomes `[UNK]`."""
    vocab = [*_SPECIALS, *_WORD_CHARS, *(f"##{c}" for c in _WORD_CHARS), *_PUNCTUATION]
    tokenizer = Tokenizer(WordPiece({token: i for i, token in enumerate(vocab)}, unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True, strip_accents=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.post_processor = processors.BertProcessing(
        ("[SEP]", vocab.index("[SEP]")), ("[CLS]", vocab.index("[CLS]"))
    )
    tokenizer.decoder = decoders.WordPiece()
    return tokenizer


def taxonomy_text(metadata: Mapping[str, Any]) -> str:
    """The text "order family genus species" of a metadata record; a rank null, empty or not text is left out."""
    words = (metadata.get(rank) for rank in TEXT_RANKS)
    return " ".join(word.strip() for word in words if isinstance(word, str) and word.strip())


def _metadata(value: Any) -> Mapping[str, Any] | None:
    """A metadata member value (JSON bytes/text, or an already decoded object) as a mapping, or None."""
    if isinstance(value, Mapping):
        return value
    try:
        decoded = json.loads(value)
    except (TypeError, ValueError):
        return None
    return decoded if isinstance(decoded, dict) else None


@functools.lru_cache(maxsize=8)
def _fixed_length(tokenizer_json: str, max_len: int) -> Tokenizer:
    """The tokenizer, truncating and always padding to `max_len` (cached: a preprocessor is called per batch)."""
    tokenizer = Tokenizer.from_str(tokenizer_json)
    pad_id = tokenizer.token_to_id("[PAD]")
    tokenizer.enable_truncation(max_len)
    tokenizer.enable_padding(length=max_len, pad_id=pad_id or 0, pad_token="[PAD]")
    return tokenizer


@dataclass(frozen=True)
class TaxonomyTokens:
    """Preprocessor: metadata JSON -> `(input_ids, attention_mask)` int64 `(n, max_len)`.

    Holds the tokenizer itself (its JSON), not a path, so it pickles to Ray tasks. Rejects: `invalid_metadata`
    (not a JSON object) and `empty_taxonomy` (no rank of the text is known).
    """

    tokenizer_json: str
    max_len: int

    def __call__(self, values: Sequence[Any]) -> Preprocessed:
        texts: list[str] = []
        kept: list[int] = []
        rejects: dict[int, str] = {}
        for position, value in enumerate(values):
            metadata = _metadata(value)
            text = taxonomy_text(metadata) if metadata is not None else ""
            if not text:
                rejects[position] = "invalid_metadata" if metadata is None else "empty_taxonomy"
                continue
            texts.append(text)
            kept.append(position)
        return Preprocessed(self.encode(texts), np.asarray(kept, dtype=np.int64), rejects)

    def encode(self, texts: Sequence[str]) -> dict[str, np.ndarray]:
        """Token arrays of taxonomy strings."""
        encodings = _fixed_length(self.tokenizer_json, self.max_len).encode_batch(list(texts))
        ids = np.asarray([e.ids for e in encodings], dtype=np.int64).reshape(len(texts), self.max_len)
        mask = np.asarray([e.attention_mask for e in encodings], dtype=np.int64).reshape(len(texts), self.max_len)
        return {"input_ids": ids, "attention_mask": mask}


class BertTextEncoder(nn.Module):
    """`BertModel` (no pooler) + its tokenizer behind the zoo encoder contract: masked mean of the last layer."""

    modality = "text"
    input_member = METADATA

    def __init__(self, bert: BertModel, tokenizer: Tokenizer, max_len: int, name: str) -> None:
        super().__init__()
        if tokenizer.get_vocab_size() > bert.config.vocab_size:
            raise WeightsError(f"{name}: tokenizer has {tokenizer.get_vocab_size()} tokens, the model embeds fewer")
        self.bert = bert
        self.name = name
        self.tokens = TaxonomyTokens(tokenizer.to_str(), max_len)

    @property
    def embed_dim(self) -> int:
        return int(self.bert.config.hidden_size)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Text embeddings `(n, hidden)`: the attention-masked mean of the last hidden layer."""
        hidden = self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return masked_mean(hidden, attention_mask)

    def preprocessor(self) -> TaxonomyTokens:
        return self.tokens

    def embed_batch(self, arrays: dict[str, torch.Tensor]) -> torch.Tensor:
        return self(arrays["input_ids"], arrays["attention_mask"])

    def input_spec(self) -> dict[str, Any]:
        pipeline = json.loads(self.tokens.tokenizer_json)
        for setting in ("padding", "truncation"):  # the preprocessor's own (max_len), not the pipeline's
            pipeline.pop(setting, None)
        canonical = json.dumps(pipeline, sort_keys=True)
        return {
            "text": " ".join(TEXT_RANKS),
            "tokenizer": "tokenizers.Tokenizer",
            "vocab_size": len(pipeline["model"].get("vocab", {})),
            "tokenizer_sha256": hashlib.sha256(canonical.encode()).hexdigest(),
            "max_len": self.tokens.max_len,
            "padding": "max_length",
            "pooling": "attention-masked mean of the last layer",
        }

    def fingerprint(self) -> dict[str, Any]:
        config = self.bert.config
        arch = {key: getattr(config, key) for key in (*_ARCH_KEYS, "vocab_size", "hidden_act", "layer_norm_eps")}
        return module_fingerprint(self.name, {"family": "bert_text", **arch, **self.input_spec()}, self)

    def save_pretrained(self, directory: str | Path) -> None:
        """Hugging Face folder: the BERT (`config.json` + safetensors, with `text_max_len`) and its tokenizer.

        `tokenizer_config.json` comes from `BertTokenizerFast` (so `AutoTokenizer` loads the folder), but
        `tokenizer.json` is this exact pipeline: transformers 5 re-derives its own on save and load.
        """
        self.bert.config.text_max_len = self.tokens.max_len
        self.bert.save_pretrained(directory)
        tokenizer = Tokenizer.from_str(self.tokens.tokenizer_json)
        BertTokenizerFast(tokenizer_object=tokenizer, model_max_length=self.tokens.max_len).save_pretrained(directory)
        tokenizer.save(str(Path(directory) / TOKENIZER_FILE))


def _check_architecture(name: str, cfg: BertTextCfg, config: BertConfig, folder: Path) -> None:
    """WeightsError when a folder's BERT is not the architecture `name` stands for."""
    if getattr(config, "model_type", None) != "bert":
        raise WeightsError(f"{folder}: config.json is a {getattr(config, 'model_type', None)!r} model, not a BERT")
    wrong = {
        key: (getattr(config, key, None), getattr(cfg, field))
        for key, field in _ARCH_KEYS.items()
        if getattr(config, key, None) != getattr(cfg, field)
    }
    if wrong:
        raise WeightsError(f"{folder}: not a {name} (folder vs name: {wrong})")


def _load_bert(folder: Path) -> BertModel:
    """The folder's BERT, strictly: missing or reshaped weights are a WeightsError (extra heads are ignored)."""
    try:
        loaded: Any = BertModel.from_pretrained(
            folder, add_pooling_layer=False, output_loading_info=True, local_files_only=True
        )
    except (OSError, RuntimeError, ValueError) as err:
        raise WeightsError(f"{folder}: the weights do not load into its config.json's BERT ({err})") from err
    bert, info = loaded
    missing, mismatched = sorted(info["missing_keys"]), sorted(info["mismatched_keys"])
    if missing or mismatched:
        raise WeightsError(f"{folder}: weights missing for {missing[:5]}, shapes differ for {mismatched[:5]}")
    return bert


def _load_tokenizer(folder: Path) -> Tokenizer:
    """The folder's `tokenizer.json` as it is, else the BERT tokenizer transformers builds from its `vocab.txt`."""
    if (folder / TOKENIZER_FILE).is_file():
        return Tokenizer.from_file(str(folder / TOKENIZER_FILE))
    if not (folder / "vocab.txt").is_file():
        raise WeightsError(f"{folder}: no tokenizer ({TOKENIZER_FILE} or vocab.txt) beside the weights")
    return BertTokenizerFast.from_pretrained(folder, local_files_only=True).backend_tokenizer


def _from_folder(name: str, cfg: BertTextCfg, folder: Path, max_len: int | None) -> BertTextEncoder:
    """Encoder from a local Hugging Face folder; its tokenizer length: `max_len`, the saved one, or `cfg.max_len`."""
    if not (folder / "config.json").is_file():
        raise WeightsError(f"{folder}: not a Hugging Face model folder (no config.json)")
    _check_architecture(name, cfg, BertConfig.from_pretrained(folder, local_files_only=True), folder)
    bert = _load_bert(folder)
    length = max_len or getattr(bert.config, "text_max_len", None) or cfg.max_len
    return BertTextEncoder(bert, _load_tokenizer(folder), int(length), name)


def _create_bert_text(name: str, pretrained: str | Path | None = None, **overrides: Any) -> BertTextEncoder:
    """Random init with the built-in tokenizer (field overrides allowed), or a local folder (only `max_len`)."""
    cfg = BertTextCfg.from_name(name)
    if pretrained is not None:
        max_len = overrides.pop("max_len", None)
        if overrides:
            raise ValueError(f"architecture overrides {sorted(overrides)} cannot apply to pretrained weights")
        return _from_folder(name, cfg, Path(pretrained), max_len).eval()
    cfg = dataclasses.replace(cfg, **overrides)
    tokenizer = char_tokenizer()
    bert = BertModel(cfg.to_bert_config(tokenizer.get_vocab_size()), add_pooling_layer=False)
    return BertTextEncoder(bert, tokenizer, cfg.char_max_len, name).eval()


@register_model
def bert_small_text(pretrained: str | Path | None = None, **overrides: Any) -> BertTextEncoder:
    """BERT-small (4 layers, hidden 512, 8 heads): the BIOSCAN-CLIP text encoder, 512-d."""
    return _create_bert_text("bert_small_text", pretrained, **overrides)


@register_model
def bert_tiny_text(pretrained: str | Path | None = None, **overrides: Any) -> BertTextEncoder:
    """2 layers, hidden 32, 2 heads: a seconds-fast text encoder for tests."""
    return _create_bert_text("bert_tiny_text", pretrained, **overrides)
