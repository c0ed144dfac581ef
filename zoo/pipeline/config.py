"""The pipeline's config: one TOML file naming each stage's inputs, outputs and parameters (-> `zoo.pipeline.run`).

Each top-level table is a stage (`[synth]`, `[shards]`, ...); `[embed.<name>]` and `[index.<name>]` hold one
table per store / index, named so later stages can refer to them (`stores = ["dna", "kmer"]`). `[pipeline]`
holds the run's own settings (where the stage records live, the Ray runtime). Every key is checked against
the stage's dataclass below: an unknown stage or key, a missing key or a wrong type is one `ConfigError`
line naming the key. Paths are local (relative to the working directory) or `s3://`; see docs/pipeline.md.
"""

from __future__ import annotations

import dataclasses
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bioscan_stream.constants import SPLITS
from bioscan_stream.storage import is_s3

__all__ = [
    "ClusteringStage",
    "ConfigError",
    "CropStage",
    "EmbedStage",
    "IndexStage",
    "PipelineConfig",
    "PretrainStage",
    "ReportStage",
    "RetrievalStage",
    "ShardsStage",
    "SynthStage",
    "load_config",
    "parse_config",
]

#: The stages, in the order they run.
STAGE_ORDER = ("synth", "shards", "crop", "pretrain", "embed", "index", "retrieval", "clustering", "report")
#: The splits the evaluations read (retrieval keys and queries, clustering samples).
EVAL_SPLITS = ("train", "key_unseen", "test", "test_unseen")


class ConfigError(ValueError):
    """A config the pipeline cannot run; the message is one line naming the file and the key."""


@dataclass(frozen=True)
class SynthStage:
    """A synthetic release (`bioscan_stream.synth.release.write_release`); `out` is local. 0 workers: all cores."""

    out: str
    samples: int
    seed: int = 0
    packages: tuple[str, ...] = ("original_256", "cropped_256")
    workers: int = 0


@dataclass(frozen=True)
class ShardsStage:
    """Release -> shard sets `out/<package>` and `out/dna` (`bioscan_stream.shards.convert_release`)."""

    release: str
    out: str
    package: str = "original_256"
    splits: tuple[str, ...] = SPLITS
    shard_bytes: int = 128 << 20
    min_shards: int = 1
    seed: int = 0
    dna: bool = True
    workers: int = 0


@dataclass(frozen=True)
class CropStage:
    """Original shards -> `out/cropped_256` (and/or `out/cropped`), bbox TSV, contact sheet (`zoo.cropping`).

    `splits`: the input's splits to crop (empty: all).
    """

    shards: str
    out: str
    detector: str = "classical"
    preset: str = "bioscan5m"
    packages: tuple[str, ...] = ("cropped_256",)
    splits: tuple[str, ...] = ()
    batch_size: int = 8
    concurrency: int = 1
    review: int = 50


@dataclass(frozen=True)
class PretrainStage:
    """BarcodeBERT MLM pretraining on the DNA set (`zoo.tasks.pretrain_loop`); `out` is local.

    `workers` 0 trains in the pipeline's process (with `threads` torch threads; 0: torch's default), more on
    Ray Train workers; `max_steps` 0: no cap.
    """

    shards: str
    out: str
    model: str = "barcodebert_4_4_4"
    overrides: dict[str, Any] = field(default_factory=dict)
    batch_size: int = 64
    epochs: int = 1
    max_steps: int = 0
    lr_per_64: float = 1e-4
    log_every: int = 20
    checkpoint_every: int = 500
    seed: int = 0
    workers: int = 0
    cpus_per_worker: int = 1
    gpu: bool = False
    threads: int = 0


@dataclass(frozen=True)
class EmbedStage:
    """A shard set -> an embedding store (`zoo.embedding.embed_shards`); `pretrained` a local weights folder."""

    shards: str
    out: str
    model: str
    pretrained: str = ""
    overrides: dict[str, Any] = field(default_factory=dict)
    splits: tuple[str, ...] = EVAL_SPLITS
    batch_size: int = 64
    dtype: str = "float16"
    concurrency: int = 1
    seed: int = 0


@dataclass(frozen=True)
class IndexStage:
    """A FAISS index of the store of embed stage `store` (`zoo.indices.run_build`); `splits` empty: all.

    An index that retrieval searches holds the key splits only (`train`, `key_unseen`).
    """

    store: str
    out: str
    splits: tuple[str, ...] = ()
    factory: str = "auto"
    recall_target: float = 0.95
    k: int = 10
    num_queries: int = 1000
    num_shards: int = 1
    seed: int = 0


@dataclass(frozen=True)
class RetrievalStage:
    """Retrieval over embed stages' stores; `pairs` as `query:key`, `indices` index stages also searched."""

    stores: tuple[str, ...]
    out: str
    pairs: tuple[str, ...] = ()
    indices: tuple[str, ...] = ()
    split_set: str = "test"


@dataclass(frozen=True)
class ClusteringStage:
    """Zero-shot clustering (UMAP + Ward) of embed stages' stores, with the 2-D UMAP scatter."""

    stores: tuple[str, ...]
    out: str
    splits: tuple[str, ...] = ("test", "test_unseen")
    seeds: tuple[int, ...] = (0,)
    n_neighbors: int = 30
    n_components: int = 50


@dataclass(frozen=True)
class ReportStage:
    """The report folder (`index.html`, `index.md`, PNGs) from the other stages' outputs; `out` is local."""

    out: str
    title: str = "bioscan-stream pipeline report"


@dataclass(frozen=True)
class PipelineConfig:
    """A whole pipeline: its own settings and the stages the file names (absent ones are None / empty).

    Args:
        source: the config file (for messages).
        state: folder of the stage records (`<stage>.json`: fingerprint, outputs, measurements), local or s3://.
        ray_address: Ray cluster to use ("" : `RAY_ADDRESS` as the job passes it, else an embedded local one).
        num_cpus: CPUs of the embedded local Ray runtime (0: all).
    """

    source: str
    state: str
    ray_address: str = ""
    num_cpus: int = 0
    synth: SynthStage | None = None
    shards: ShardsStage | None = None
    crop: CropStage | None = None
    pretrain: PretrainStage | None = None
    embed: dict[str, EmbedStage] = field(default_factory=dict)
    index: dict[str, IndexStage] = field(default_factory=dict)
    retrieval: RetrievalStage | None = None
    clustering: ClusteringStage | None = None
    report: ReportStage | None = None


_SINGLE: dict[str, type] = {
    "synth": SynthStage,
    "shards": ShardsStage,
    "crop": CropStage,
    "pretrain": PretrainStage,
    "retrieval": RetrievalStage,
    "clustering": ClusteringStage,
    "report": ReportStage,
}
_NAMED: dict[str, type] = {"embed": EmbedStage, "index": IndexStage}


def _type_name(value: Any) -> str:
    return {bool: "boolean", int: "integer", float: "float", str: "string", list: "array", dict: "table"}.get(
        type(value), type(value).__name__
    )


def _coerce(where: str, key: str, hint: Any, value: Any) -> Any:
    """`value` as the field type `hint` (TOML arrays become tuples), or ConfigError naming `where.key`."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    expected = {str: "a string", int: "an integer", float: "a number", bool: "true or false"}
    if origin is tuple:
        if not isinstance(value, list):
            raise ConfigError(f"{where} key {key!r} must be an array, got {_type_name(value)} {value!r}")
        return tuple(_coerce(where, f"{key}[{i}]", args[0], item) for i, item in enumerate(value))
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where} key {key!r} must be a table, got {_type_name(value)} {value!r}")
        return dict(value)
    ok = (
        isinstance(value, bool)
        if hint is bool
        else isinstance(value, (int, float)) and not isinstance(value, bool)
        if hint is float
        else isinstance(value, hint) and not isinstance(value, bool)
    )
    if not ok:
        raise ConfigError(f"{where} key {key!r} must be {expected[hint]}, got {_type_name(value)} {value!r}")
    return float(value) if hint is float else value


def _required(spec: dataclasses.Field[Any]) -> bool:
    return spec.default is dataclasses.MISSING and spec.default_factory is dataclasses.MISSING


def _build(cls: type, where: str, table: Any) -> Any:
    """One stage dataclass from its TOML table: unknown, missing and mistyped keys are refused by name."""
    if not isinstance(table, dict):
        raise ConfigError(f"{where} must be a table, got {_type_name(table)}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    unknown = sorted(set(table) - set(fields))
    if unknown:
        raise ConfigError(f"{where} has unknown key {unknown[0]!r} (known: {', '.join(fields)})")
    missing = [n for n, f in fields.items() if _required(f) and n not in table]
    if missing:
        raise ConfigError(f"{where} is missing key {missing[0]!r}")
    return cls(**{key: _coerce(where, key, hints[key], value) for key, value in table.items()})


def _check_local(where: str, key: str, url: str) -> None:
    if is_s3(url):
        raise ConfigError(f"{where} key {key!r} must be a local path (this stage's job writes local files): {url}")


def _check_splits(where: str, splits: tuple[str, ...]) -> None:
    unknown = [s for s in splits if s not in SPLITS]
    if unknown:
        raise ConfigError(f"{where} key 'splits' has unknown split {unknown[0]!r} (known: {', '.join(SPLITS)})")


def _check_references(config: PipelineConfig, where: str) -> None:
    """Names that point at other stages exist, splits are known, outputs only local jobs write are local."""
    named = [(f"embed.{n}", s) for n, s in config.embed.items()] + [(f"index.{n}", s) for n, s in config.index.items()]
    for name, stage in [(n, getattr(config, n)) for n in ("shards", "crop", "clustering")] + named:
        if stage is not None:
            _check_splits(f"{where}: [{name}]", stage.splits)
    if config.synth:
        _check_local(f"{where}: [synth]", "out", config.synth.out)
    if config.shards:
        _check_local(f"{where}: [shards]", "release", config.shards.release)
    if config.pretrain:
        _check_local(f"{where}: [pretrain]", "out", config.pretrain.out)
    if config.report:
        _check_local(f"{where}: [report]", "out", config.report.out)
    for name, index in config.index.items():
        if index.store not in config.embed:
            raise ConfigError(f"{where}: [index.{name}] key 'store' names no [embed.{index.store}] stage")
    for stage_name, stage in (("retrieval", config.retrieval), ("clustering", config.clustering)):
        for store in stage.stores if stage else ():
            if store not in config.embed:
                raise ConfigError(f"{where}: [{stage_name}] key 'stores' names no [embed.{store}] stage")
    if config.retrieval:
        for pair in config.retrieval.pairs:
            query, sep, key = pair.partition(":")
            if not sep or query not in config.embed or key not in config.embed:
                raise ConfigError(f"{where}: [retrieval] key 'pairs' entry {pair!r} must be QUERY:KEY of embed stages")
        for index_name in config.retrieval.indices:
            if index_name not in config.index:
                raise ConfigError(f"{where}: [retrieval] key 'indices' names no [index.{index_name}] stage")


@dataclass(frozen=True)
class _Settings:
    """The `[pipeline]` table (see `PipelineConfig`)."""

    state: str
    ray_address: str = ""
    num_cpus: int = 0


def parse_config(data: dict[str, Any], source: str) -> PipelineConfig:
    """A `PipelineConfig` from parsed TOML; `source` names the file in messages."""
    unknown = sorted(set(data) - set(STAGE_ORDER) - {"pipeline"})
    if unknown:
        raise ConfigError(f"{source}: unknown stage [{unknown[0]}] (known: pipeline, {', '.join(STAGE_ORDER)})")
    settings = data.get("pipeline")
    if settings is None:
        raise ConfigError(f"{source}: missing table [pipeline] (key 'state': folder of the stage records)")
    pipeline = _build(_Settings, f"{source}: [pipeline]", settings)
    values: dict[str, Any] = {"source": source, **dataclasses.asdict(pipeline)}
    for name, cls in _SINGLE.items():
        if name in data:
            values[name] = _build(cls, f"{source}: [{name}]", data[name])
    for name, cls in _NAMED.items():
        tables = data.get(name, {})
        if not isinstance(tables, dict):
            raise ConfigError(f"{source}: [{name}] must hold named tables such as [{name}.dna]")
        values[name] = {key: _build(cls, f"{source}: [{name}.{key}]", table) for key, table in tables.items()}
    config = PipelineConfig(**values)
    _check_references(config, source)
    return config


def load_config(path: str | Path) -> PipelineConfig:
    """Read and check a pipeline TOML file; every problem is one `ConfigError` line."""
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"{path}: cannot read: {error}") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path}: not valid TOML: {error}") from None
    return parse_config(data, str(path))
