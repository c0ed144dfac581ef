"""CLIP-style image-DNA-text model: three zoo encoders, linear heads to one shared space, L2-normalised.

Paper: Gong et al., "CLIBD: Bridging Vision and Genomics for Biodiversity Monitoring at Scale" (BIOSCAN-CLIP,
2024), the third benchmark of BIOSCAN-5M (Gharaee et al., NeurIPS 2024 D&B, section 4.4);
../shared/reference/evaluation.md, "Reference model recipe". Source: the public BIOSCAN-CLIP code (MIT) was read
to learn the recipe's quirks; this is a re-implementation on the zoo's own encoders and `peft`, not a copy.

Sits in `zoo` on the encoder families (`timm_image`, `barcodebert`, `bert_text`): each tower is a zoo encoder
plus a `Linear` head, and is itself a zoo encoder (`ClipTower`), so the embedding job takes a trained tower by
name: `embed --model clip:RUN/image` (or `/dna`, `/text`), RUN being a training run folder or its `model/`.
Any two or three modalities. Fine-tuning is LoRA (`peft`, rank 4 on attention query and value of every layer,
backbones frozen, heads trainable) or full.

Two recipes (`RECIPES`), picked by name:

- `bioscan5m-paper`, the published one with its quirks kept: fixed temperature 0.07; negatives local to each
  GPU; the DNA embedding is `softmax(last hidden layer, dim=-1)` averaged over all 133 tokens, padding
  included (132 5-mers after a prefix id 0); images in [0, 1], not mean/std normalised; Adam, lr 1e-3, constant.
- `corrected`: attention-masked mean DNA pooling without the prefix, negatives gathered over all ranks with
  gradients, learnable temperature (logit scale clamped to 100), AdamW with warmup + cosine, images normalised
  with the backbone's own mean/std, bf16 autocast on GPU.

Saved models are folders: `config.json` (architecture, recipe, modalities) and `model.safetensors` (every
weight, LoRA adapters included). Loading is strict: another recipe's checkpoint, or weights of other shapes,
are a `zoo.encoder.WeightsError`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from zoo._registry import get_model_config, register_model, register_model_family
from zoo.encoder import MODALITIES, WeightsError, module_fingerprint
from zoo.models.barcodebert import masked_mean

__all__ = [
    "RECIPES",
    "ClipCfg",
    "ClipInputError",
    "ClipModel",
    "ClipRecipe",
    "ClipTower",
    "load_clip",
    "tower_inputs",
]

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
#: Where a training run keeps its exported model (`clip:RUN/image` also accepts RUN/model itself).
RUN_MODEL_DIR = "model"
#: peft target modules (regex over full module names): attention query and value of every layer.
_LORA_TARGETS = {
    "image": r".*attn\.qkv\.(q|v)",
    "dna": r".*attention\.self\.(query|value)",
    "text": r".*attention\.self\.(query|value)",
}


class ClipInputError(ValueError):
    """A batch the model cannot use: a modality the model needs is missing, or inputs of mismatched sizes."""


@dataclass(frozen=True)
class ClipRecipe:
    """How a CLIP model is pooled, normalised and trained (see the module docstring for the two named ones)."""

    name: str
    temperature: float = 0.07
    learn_temperature: bool = False
    #: Upper clamp of the learnable logit scale 1/T (open_clip's 100).
    max_logit_scale: float = 100.0
    gather_negatives: bool = False
    #: "softmax_mean" (the paper's: softmax over features, unmasked mean) or "masked_mean".
    dna_pooling: str = "softmax_mean"
    #: Prefix every barcode with token id 0 (attended), as the reference's 133-token input.
    dna_prefix_token: bool = True
    #: "unit" ([0, 1], the paper's) or "backbone" (the timm backbone's mean/std).
    image_normalization: str = "unit"
    optimizer: str = "adam"
    lr: float = 1e-3
    weight_decay: float = 0.0
    #: Fraction of the steps spent in linear warmup (cosine schedule only).
    warmup_fraction: float = 0.0
    #: "constant" or "cosine" (after warmup, to 0 at the last step).
    schedule: str = "constant"
    #: bf16 autocast when training on CUDA (never on CPU).
    bf16: bool = False


RECIPES: dict[str, ClipRecipe] = {
    "bioscan5m-paper": ClipRecipe(name="bioscan5m-paper"),
    "corrected": ClipRecipe(
        name="corrected",
        learn_temperature=True,
        gather_negatives=True,
        dna_pooling="masked_mean",
        dna_prefix_token=False,
        image_normalization="backbone",
        optimizer="adamw",
        weight_decay=0.01,
        warmup_fraction=0.05,
        schedule="cosine",
        bf16=True,
    ),
}


def get_recipe(name: str) -> ClipRecipe:
    """The named recipe; ValueError listing the known ones."""
    if name not in RECIPES:
        raise ValueError(f"unknown CLIP recipe {name!r}; known: {sorted(RECIPES)}")
    return RECIPES[name]


@dataclass(frozen=True)
class ClipCfg:
    """Architecture of one CLIP model (the fields of `zoo/model_configs/clip_*.json`).

    Towers are zoo model names with architecture overrides; `*_pretrained` are local weight paths of the
    towers (None: random init, as nothing is downloaded).
    """

    image: str | None
    dna: str | None
    text: str | None
    embed_dim: int = 768
    image_overrides: Mapping[str, Any] = field(default_factory=dict)
    dna_overrides: Mapping[str, Any] = field(default_factory=dict)
    text_overrides: Mapping[str, Any] = field(default_factory=dict)
    image_pretrained: str | None = None
    dna_pretrained: str | None = None
    text_pretrained: str | None = None
    #: "lora" (adapters + heads train, backbones frozen) or "full".
    finetune: str = "lora"
    lora_rank: int = 4
    lora_alpha: int = 4
    recipe: str = "bioscan5m-paper"
    #: The modalities to build (any two or three of image, dna, text); () = every tower named above.
    modalities: tuple[str, ...] = ()

    @classmethod
    def from_name(cls, name: str, **overrides: Any) -> ClipCfg:
        """The config of `name` (its JSON file) with field overrides."""
        config = get_model_config(name)
        if config is None or config.pop("family", None) != "clip":
            raise ValueError(f"no CLIP model config {name!r} (zoo/model_configs/{name}.json)")
        unknown = set(overrides) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"{name}: unknown CLIP config fields {sorted(unknown)}")
        config.update(overrides)
        config["modalities"] = tuple(config.get("modalities") or ())
        return cls(**config).validated()

    @property
    def present(self) -> tuple[str, ...]:
        """The modalities this config builds, in canonical order."""
        wanted = self.modalities or tuple(m for m in MODALITIES if getattr(self, m))
        return tuple(m for m in MODALITIES if m in wanted)

    def validated(self) -> ClipCfg:
        """Self, or ValueError for an unknown recipe/fine-tuning mode or fewer than two modalities."""
        get_recipe(self.recipe)
        if self.finetune not in ("lora", "full"):
            raise ValueError(f"finetune must be 'lora' or 'full', not {self.finetune!r}")
        unknown = set(self.modalities) - set(MODALITIES)
        missing = [m for m in self.present if not getattr(self, m)]
        if unknown or missing or len(self.present) < 2:
            raise ValueError(
                f"a CLIP model needs two or three of {MODALITIES} with a tower each: modalities {self.modalities}, "
                f"towers { ({m: getattr(self, m) for m in MODALITIES}) }"
            )
        return self

    def to_json(self) -> dict[str, Any]:
        return {"family": "clip", **dataclasses.asdict(self), "modalities": list(self.present)}


class QkvSplit(nn.Module):
    """timm's fused attention `qkv` Linear as three Linears `q`, `k`, `v` (outputs concatenated: same function),
    so LoRA can adapt query and value alone, as the reference does."""

    def __init__(self, qkv: nn.Linear) -> None:
        super().__init__()
        dim = qkv.out_features // 3
        for i, name in enumerate("qkv"):
            part = nn.Linear(qkv.in_features, dim, bias=qkv.bias is not None)
            with torch.no_grad():
                part.weight.copy_(qkv.weight[i * dim : (i + 1) * dim])
                if qkv.bias is not None:
                    part.bias.copy_(qkv.bias[i * dim : (i + 1) * dim])
            self.add_module(name, part)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([getattr(self, name)(x) for name in "qkv"], dim=-1)


def _split_qkv(module: nn.Module) -> int:
    """Replace every fused `attn.qkv` Linear below `module` by a `QkvSplit`; returns how many."""
    count = 0
    for child in module.modules():
        qkv = getattr(child, "qkv", None)
        if isinstance(qkv, nn.Linear) and qkv.out_features % 3 == 0:
            child.qkv = QkvSplit(qkv)
            count += 1
    return count


def apply_lora(backbone: nn.Module, modality: str, *, rank: int, alpha: int) -> None:
    """LoRA (peft) on attention query and value of every layer; freezes everything else of the backbone."""
    from peft import LoraConfig, inject_adapter_in_model

    if modality == "image" and _split_qkv(backbone) == 0:
        raise ValueError("LoRA needs an attention backbone (a ViT with fused qkv); use finetune='full'")
    config = LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=0.0, target_modules=_LORA_TARGETS[modality])
    inject_adapter_in_model(config, backbone)
    for name, parameter in backbone.named_parameters():
        parameter.requires_grad_(".lora_" in name)


def encoder_width(encoder: Any) -> int:
    """The `embed_dim` of a zoo encoder."""
    return int(encoder.embed_dim)


class ClipTower(nn.Module):
    """One modality's backbone (a zoo encoder) + head + L2 normalisation, behind the zoo encoder contract.

    `embed_batch` takes the arrays of the backbone's own preprocessor (uint8 pixels, barcode or taxonomy
    tokens) and pools them as the recipe says, so a trained tower embeds exactly as it trained.
    """

    def __init__(self, modality: str, backbone: nn.Module, embed_dim: int, recipe: ClipRecipe, name: str) -> None:
        super().__init__()
        if getattr(backbone, "modality", None) != modality:
            raise ValueError(f"{name}: the {modality} tower got a {getattr(backbone, 'modality', '?')} encoder")
        self.modality, self.name, self.recipe = modality, name, recipe
        self.input_member = str(backbone.input_member)
        self.backbone: Any = backbone  # a zoo encoder (timm_image, barcodebert or bert_text)
        self.head = nn.Linear(encoder_width(backbone), embed_dim)
        self.embed_dim = embed_dim

    def features(self, arrays: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Backbone features before the head, pooled and normalised per recipe."""
        if self.modality == "image":
            return self.backbone(self._pixels(arrays["image"]))
        ids, mask = arrays["input_ids"], arrays["attention_mask"]
        if ids.shape != mask.shape:
            raise ClipInputError(f"{self.modality}: input_ids {tuple(ids.shape)} vs attention_mask {tuple(mask.shape)}")
        if self.modality == "text":
            return self.backbone(ids, mask)
        if self.recipe.dna_prefix_token:  # the reference's 133 tokens: id 0 first, attended
            ids = F.pad(ids, (1, 0), value=0)
            mask = F.pad(mask, (1, 0), value=1)
        hidden = self.backbone.encode(ids, mask)
        if self.recipe.dna_pooling == "softmax_mean":
            return hidden.softmax(dim=-1).mean(dim=1)  # NOTE: the reference's bug, kept: padding is averaged too
        return masked_mean(hidden, mask)

    def _pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        from bioscan_stream.stream.transforms import normalize_batch

        if pixels.dtype != torch.uint8:
            raise ClipInputError(f"image: expected uint8 pixels (n, 3, H, W), got {pixels.dtype}")
        config = self.backbone.data_config
        if self.recipe.image_normalization == "unit":
            mean, std = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
        else:
            mean, std = tuple(config["mean"]), tuple(config["std"])
        dtype = next(self.backbone.parameters()).dtype
        return normalize_batch(pixels, mean, std).to(dtype)  # type: ignore[arg-type]

    def embed_batch(self, arrays: dict[str, torch.Tensor]) -> torch.Tensor:
        """L2-normalised embeddings `(n, embed_dim)` in the shared space."""
        return F.normalize(self.head(self.features(arrays)).float(), dim=-1)

    def forward(self, arrays: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.embed_batch(arrays)

    def preprocessor(self) -> Any:
        return self.backbone.preprocessor()

    def input_spec(self) -> dict[str, Any]:
        recipe: dict[str, Any] = {"recipe": self.recipe.name, "image_normalization": self.recipe.image_normalization}
        if self.modality == "dna":
            pooling = {"dna_pooling": self.recipe.dna_pooling, "dna_prefix_token": self.recipe.dna_prefix_token}
            recipe = {**recipe, **pooling}
        return {**self.backbone.input_spec(), **recipe, "head": [int(self.head.in_features), self.embed_dim]}

    def fingerprint(self) -> dict[str, Any]:
        arch = {"family": "clip_tower", "modality": self.modality, "backbone": self.backbone.fingerprint()["name"]}
        return module_fingerprint(self.name, {**arch, **self.input_spec()}, self)


def tower_inputs(batch: Mapping[str, Any], modality: str) -> dict[str, torch.Tensor]:
    """A training batch's arrays for one tower: `image`; `dna`/`dna_mask`; `text`/`text_mask`."""
    if modality == "image":
        names = {"image": "image"}
    else:
        names = {"input_ids": modality, "attention_mask": f"{modality}_mask"}
    missing = [key for key in names.values() if not isinstance(batch.get(key), torch.Tensor)]
    if missing:
        raise ClipInputError(f"the batch has no {missing} for the {modality} tower (it holds {sorted(batch)})")
    return {name: batch[key] for name, key in names.items()}


class ClipModel(nn.Module):
    """Towers per modality (`towers[m]`, each a `ClipTower`) and the logit scale 1/T of the recipe."""

    def __init__(self, cfg: ClipCfg, towers: Mapping[str, nn.Module], name: str) -> None:
        super().__init__()
        self.cfg, self.name, self.recipe = cfg, name, get_recipe(cfg.recipe)
        self.towers = nn.ModuleDict(
            {m: ClipTower(m, towers[m], cfg.embed_dim, self.recipe, f"{name}/{m}") for m in cfg.present}
        )
        scale = torch.tensor(math.log(1 / self.recipe.temperature))
        self.log_logit_scale = nn.Parameter(scale, requires_grad=self.recipe.learn_temperature)

    @property
    def modalities(self) -> tuple[str, ...]:
        return tuple(self.towers)

    def tower(self, modality: str) -> ClipTower:
        """The tower of `modality` (typed access to `towers[modality]`)."""
        tower = self.towers[modality]
        assert isinstance(tower, ClipTower)
        return tower

    def logit_scale(self) -> torch.Tensor:
        """1/T, clamped to the recipe's maximum."""
        return self.log_logit_scale.clamp(max=math.log(self.recipe.max_logit_scale)).exp()

    def forward(self, batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        """L2-normalised features of every modality of the model, `{m: (n, embed_dim)}` with one n."""
        features = {m: tower(tower_inputs(batch, m)) for m, tower in self.towers.items()}
        sizes = {m: len(f) for m, f in features.items()}
        if len(set(sizes.values())) > 1:
            raise ClipInputError(f"modalities of one batch differ in size: {sizes}")
        return features

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    def save_pretrained(self, folder: str | Path) -> None:
        """`config.json` + `model.safetensors` (every weight, adapters included) into `folder`."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / CONFIG_FILE).write_text(json.dumps({"name": self.name, **self.cfg.to_json()}, indent=2) + "\n")
        state = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        save_file(state, str(folder / WEIGHTS_FILE), metadata={"recipe": self.recipe.name})


def _build_tower(cfg: ClipCfg, modality: str) -> nn.Module:
    """The zoo encoder of one tower, with LoRA applied or every weight trainable."""
    from zoo._factory import create_model  # here: the factory imports the families, this one included

    overrides = dict(getattr(cfg, f"{modality}_overrides"))
    backbone = create_model(getattr(cfg, modality), pretrained=getattr(cfg, f"{modality}_pretrained"), **overrides)
    backbone.train()
    if cfg.finetune == "lora":
        apply_lora(backbone, modality, rank=cfg.lora_rank, alpha=cfg.lora_alpha)
    else:
        backbone.requires_grad_(True)
    return backbone


def build_clip(cfg: ClipCfg, name: str) -> ClipModel:
    """A CLIP model of `cfg`: towers from the zoo (random or `*_pretrained` weights), random heads."""
    return ClipModel(cfg, {m: _build_tower(cfg, m) for m in cfg.validated().present}, name)


def _read_folder_config(folder: Path) -> dict[str, Any]:
    try:
        config = json.loads((folder / CONFIG_FILE).read_text())
    except (OSError, ValueError) as err:
        raise WeightsError(f"{folder}: not a saved CLIP model (no readable {CONFIG_FILE}: {err})") from err
    if config.get("family") != "clip":
        raise WeightsError(f"{folder}: {CONFIG_FILE} is a {config.get('family')!r} model, not a CLIP model")
    return config


def load_clip(folder: str | Path, *, recipe: str | None = None) -> ClipModel:
    """A saved CLIP model, strictly; `recipe` (when given) must be the one it was trained with."""
    folder = Path(folder)
    if (folder / RUN_MODEL_DIR / CONFIG_FILE).is_file():
        folder = folder / RUN_MODEL_DIR
    config = _read_folder_config(folder)
    name = str(config.pop("name", folder.name))
    config.pop("family")
    if recipe is not None and recipe != config.get("recipe"):
        raise WeightsError(f"{folder}: trained with recipe {config.get('recipe')!r}, not {recipe!r}")
    fields = {f.name for f in dataclasses.fields(ClipCfg)}
    kwargs: dict[str, Any] = {k: (tuple(v) if k == "modalities" else v) for k, v in config.items() if k in fields}
    cfg = ClipCfg(**kwargs)
    # the towers' own weights come from the file: never re-read the tower paths of the training run
    cfg = dataclasses.replace(cfg, image_pretrained=None, dna_pretrained=None, text_pretrained=None)
    model = build_clip(cfg, name)
    load_clip_weights(model, load_file(str(folder / WEIGHTS_FILE)), folder / WEIGHTS_FILE)
    return model.eval()


def load_clip_weights(model: ClipModel, state: Mapping[str, torch.Tensor], source: str | Path) -> None:
    """Load `state` into `model` strictly; WeightsError naming missing, unexpected and reshaped keys."""
    expected = model.state_dict()
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    reshaped = sorted(k for k in set(state) & set(expected) if state[k].shape != expected[k].shape)
    if missing or unexpected or reshaped:
        shapes = [(k, tuple(state[k].shape), tuple(expected[k].shape)) for k in reshaped[:3]]
        raise WeightsError(
            f"{source}: weights do not fit {model.name}: missing {missing[:3]}, unexpected {unexpected[:3]}, "
            f"shapes differ for {shapes} (towers of other widths?)"
        )
    model.load_state_dict(state)


_EXPORT_PATTERN = re.compile(r"clip:(?P<run>.+)/(?P<modality>image|dna|text)")


def _is_clip_export(name: str) -> bool:
    """`clip:RUN/image`, `clip:RUN/dna`, `clip:RUN/text`."""
    return _EXPORT_PATTERN.fullmatch(name) is not None


@register_model_family(_is_clip_export)
def clip_export(name: str, pretrained: str | Path | None = None, **overrides: Any) -> ClipTower:
    """One trained tower of a CLIP run as an encoder of the embedding job (`embed --model clip:RUN/image`)."""
    match = _EXPORT_PATTERN.fullmatch(name)
    assert match is not None
    if pretrained is not None or overrides:
        raise ValueError(f"{name}: the run folder holds the weights; no pretrained= or overrides apply")
    model = load_clip(match["run"])
    modality = match["modality"]
    if modality not in model.towers:
        raise ValueError(f"{name}: the run trained {model.modalities}, not {modality!r}")
    tower = model.tower(modality)
    tower.name = name.removeprefix("clip:")
    return tower.eval()


def _create_clip(name: str, pretrained: str | Path | None = None, **overrides: Any) -> ClipModel:
    """Random-init CLIP of `name` with field overrides, or a saved folder (whose recipe must match)."""
    if pretrained is not None:
        recipe = overrides.pop("recipe", None)
        if overrides:
            raise ValueError(f"architecture overrides {sorted(overrides)} cannot apply to a saved CLIP model")
        return load_clip(pretrained, recipe=recipe)
    if "modalities" in overrides:
        overrides["modalities"] = tuple(overrides["modalities"])
    return build_clip(ClipCfg.from_name(name, **overrides), name)


@register_model
def clip_vitb16_barcodebert_bertsmall(pretrained: str | Path | None = None, **overrides: Any) -> ClipModel:
    """The reference: ViT-B/16, BarcodeBERT 5-mer 12 layers, BERT-small text; 768-d; LoRA rank 4."""
    return _create_clip("clip_vitb16_barcodebert_bertsmall", pretrained, **overrides)


@register_model
def clip_small(pretrained: str | Path | None = None, **overrides: Any) -> ClipModel:
    """ViT-Ti/16 at 64 px, BarcodeBERT 5-mer 4x256, BERT-tiny text; 128-d: the CPU benchmark shape."""
    return _create_clip("clip_small", pretrained, **overrides)


@register_model
def clip_tiny(pretrained: str | Path | None = None, **overrides: Any) -> ClipModel:
    """2-layer ViT at 32 px, 2-layer BarcodeBERT 5-mer (64-d), BERT-tiny text; 32-d: seconds-fast for tests."""
    return _create_clip("clip_tiny", pretrained, **overrides)
