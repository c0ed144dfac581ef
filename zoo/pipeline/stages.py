"""The pipeline's steps: each stage of a `PipelineConfig` bound to the existing library function that does it.

A `Step` names its input and output manifests (the files whose digests decide whether it must run, see
`zoo.pipeline.run`) and runs one call: `write_release`, `convert_release`, `crop_shards`, `train_worker` /
`fit_with_ray`, `embed_shards`, `run_build`, `evaluate_retrieval`, `evaluate_clustering`, and the report. These
are the functions behind `bioscan-stream synth | shards | crop | pretrain-dna | embed | index | evaluate`, so
each stage also runs alone, locally or through `ray job submit`.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from bioscan_stream.metadata import metadata_path
from bioscan_stream.schema import DNA_PACKAGE, INDEX_FILE
from bioscan_stream.storage import is_s3, join_url, put_file
from zoo.pipeline.config import (
    ClusteringStage,
    CropStage,
    EmbedStage,
    IndexStage,
    PipelineConfig,
    PretrainStage,
    RetrievalStage,
    ShardsStage,
    SynthStage,
)

__all__ = ["RunSettings", "Step", "build_steps"]

#: Every job writes its folder's manifest last (shard sets, stores and indices alike): its presence means done.
MANIFEST = INDEX_FILE


@dataclass(frozen=True)
class RunSettings:
    """How stages run: the Ray cluster (None: embedded local), its CPUs, env for Ray tasks, progress bars."""

    ray_address: str | None = None
    num_cpus: int | None = None
    task_env: tuple[tuple[str, str], ...] = ()
    progress: bool = False


@dataclass(frozen=True)
class Step:
    """One unit of the pipeline: `run()` does the work and returns (items, unit) for the throughput table."""

    name: str
    params: Any
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    run: Callable[[], tuple[int, str]]
    uses_ray: bool = True


@contextmanager
def _local_folder(url: str) -> Iterator[Path]:
    """A local folder to write `url`'s files into: `url` itself, or a temporary one uploaded after for s3://."""
    if not is_s3(url):
        Path(url).mkdir(parents=True, exist_ok=True)
        yield Path(url)
        return
    with tempfile.TemporaryDirectory(prefix="pipeline-") as tmp:
        yield Path(tmp)
        for path in sorted(Path(tmp).rglob("*")):
            if path.is_file():
                put_file(path, join_url(url, str(path.relative_to(tmp))))


@contextmanager
def _torch_threads(threads: int) -> Iterator[None]:
    """Torch's intra-op threads set for the block (0: unchanged), restored after (later stages share the process)."""
    import torch

    saved = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(saved)


def _synth(stage: SynthStage) -> tuple[int, str]:
    from bioscan_stream.synth.release import write_release

    table = write_release(
        stage.out, samples=stage.samples, seed=stage.seed, packages=stage.packages, workers=stage.workers or None
    )
    return table.num_rows, "records"


def _shards(stage: ShardsStage, run: RunSettings) -> tuple[int, str]:
    from bioscan_stream.shards.convert import ConvertConfig, convert_release

    config = ConvertConfig(
        root=stage.release, out=stage.out, package=stage.package, splits=stage.splits, shard_bytes=stage.shard_bytes,
        min_shards=stage.min_shards, seed=stage.seed, workers=stage.workers or None, dna=stage.dna,
        ray_address=run.ray_address, progress=run.progress, task_env=run.task_env,
    )  # fmt: skip
    report = convert_release(config)
    written = sum(t["written"] for t in (report.manifest or {}).get("totals", {}).values())
    return written, "samples"


def _crop(stage: CropStage, run: RunSettings) -> tuple[int, str]:
    from zoo.cropping import CropConfig, crop_shards

    config = CropConfig(
        shards=stage.shards, out=stage.out, detector=stage.detector, preset=stage.preset, packages=stage.packages,
        splits=stage.splits or None, batch_size=stage.batch_size, concurrency=stage.concurrency, review=stage.review,
        ray_address=run.ray_address, num_cpus=run.num_cpus, progress=run.progress, task_env=run.task_env,
    )  # fmt: skip
    return crop_shards(config).read, "images"


def _pretrain(stage: PretrainStage) -> tuple[int, str]:
    from zoo.tasks.dna_sources import StreamSource
    from zoo.tasks.pretrain_loop import PretrainConfig, fit_with_ray, train_worker

    config = PretrainConfig(
        output_dir=str(Path(stage.out).resolve()), model=stage.model, model_overrides=tuple(stage.overrides.items()),
        batch_size=stage.batch_size, epochs=stage.epochs, max_steps=stage.max_steps or None,
        lr_per_64=stage.lr_per_64, checkpoint_every=stage.checkpoint_every, log_every=stage.log_every, seed=stage.seed,
    )  # fmt: skip
    source = StreamSource(stage.shards, seed=stage.seed)
    if stage.workers == 0:
        with _torch_threads(stage.threads):
            train_worker(config, source)
    else:
        fit_with_ray(config, source, workers=stage.workers, gpu=stage.gpu, cpus_per_worker=stage.cpus_per_worker)
    steps = config.total_steps(source.num_sequences(), max(1, stage.workers))
    return steps * stage.batch_size * max(1, stage.workers), "sequences"


def _embed(stage: EmbedStage, run: RunSettings) -> tuple[int, str]:
    from zoo.embedding import EmbedConfig, embed_shards

    config = EmbedConfig(
        shards=stage.shards, out=stage.out, model=stage.model, splits=stage.splits,
        pretrained=stage.pretrained or None, overrides=tuple(stage.overrides.items()), dtype=stage.dtype,
        batch_size=stage.batch_size, concurrency=stage.concurrency, seed=stage.seed, ray_address=run.ray_address,
        num_cpus=run.num_cpus, progress=run.progress, task_env=run.task_env,
    )  # fmt: skip
    return embed_shards(config).rows, "rows"


def _index(stage: IndexStage, store: str, run: RunSettings) -> tuple[int, str]:
    from zoo.embedding import read_store_index
    from zoo.indices import IndexConfig, run_build

    config = IndexConfig(
        store=store, out=stage.out, splits=stage.splits or None, factory=stage.factory, k=stage.k,
        recall_target=stage.recall_target, num_queries=stage.num_queries, num_shards=stage.num_shards, seed=stage.seed,
        ray_address=run.ray_address, num_cpus=run.num_cpus,
    )  # fmt: skip
    run_build(config)
    return int(read_store_index(store)["totals"]["rows"]), "vectors"


def _retrieval(stage: RetrievalStage, config: PipelineConfig) -> tuple[int, str]:
    from zoo.evaluation import RetrievalConfig, evaluate_retrieval, write_retrieval_report

    pairs = tuple(tuple(p.split(":", 1)) for p in stage.pairs)
    indices = tuple((config.index[name].store, config.index[name].out) for name in stage.indices)
    results = evaluate_retrieval(
        RetrievalConfig(
            stores=tuple((name, config.embed[name].out) for name in stage.stores),
            pairs=pairs,  # type: ignore[arg-type]
            seen=stage.split_set,
            unseen=f"{stage.split_set}_unseen",
            indices=indices,
        )
    )
    with _local_folder(stage.out) as folder:
        write_retrieval_report(results, folder)
    queries = sum(rows["seen"] + rows["unseen"] for rows in (s["rows"] for s in results["stores"].values()))
    return int(queries), "queries"


def _clustering(stage: ClusteringStage, config: PipelineConfig) -> tuple[int, str]:
    from zoo.evaluation import ClusteringConfig, evaluate_clustering, write_clustering_report

    results = evaluate_clustering(
        ClusteringConfig(
            stores=tuple((name, config.embed[name].out) for name in stage.stores),
            splits=stage.splits,
            seeds=stage.seeds,
            n_neighbors=stage.n_neighbors,
            n_components=stage.n_components,
        )
    )
    with _local_folder(stage.out) as folder:
        write_clustering_report(results, folder)
    return int(results["n_samples"]), "samples"


def release_root(config: PipelineConfig) -> str | None:
    """The release the pipeline reads: the synth stage's output, else the shards stage's input."""
    return config.synth.out if config.synth else config.shards.release if config.shards else None


def _shard_manifests(stage: ShardsStage) -> tuple[str, ...]:
    packages = (stage.package, DNA_PACKAGE) if stage.dna else (stage.package,)
    return tuple(join_url(stage.out, package, MANIFEST) for package in packages)


def _model_files(folder: str) -> tuple[str, ...]:
    """The files of a Hugging Face weights folder that identify it (the pretrain stage writes it last)."""
    return (join_url(folder, "config.json"), join_url(folder, "model.safetensors")) if folder else ()


def _stage_steps(config: PipelineConfig, run: RunSettings) -> Iterator[Step]:
    from zoo.tasks.pretrain_loop import METRICS, MODEL_DIR

    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    if (synth := config.synth) is not None:
        yield Step("synth", synth, (), (str(metadata_path(synth.out)),), partial(_synth, synth), uses_ray=False)
    if (shards := config.shards) is not None:
        release = (str(metadata_path(shards.release)),)
        yield Step("shards", shards, release, _shard_manifests(shards), partial(_shards, shards, run))
    if (crop := config.crop) is not None:
        outputs = tuple(join_url(crop.out, package, MANIFEST) for package in crop.packages)
        yield Step("crop", crop, (join_url(crop.shards, MANIFEST),), outputs, partial(_crop, crop, run))
    if (pretrain := config.pretrain) is not None:
        outputs = (join_url(pretrain.out, METRICS), *_model_files(join_url(pretrain.out, MODEL_DIR)))
        inputs = (join_url(pretrain.shards, MANIFEST),)
        yield Step("pretrain", pretrain, inputs, outputs, partial(_pretrain, pretrain), uses_ray=pretrain.workers > 0)
    for name, embed in config.embed.items():
        inputs = (join_url(embed.shards, MANIFEST), *_model_files(embed.pretrained))
        yield Step(f"embed.{name}", embed, inputs, (join_url(embed.out, MANIFEST),), partial(_embed, embed, run))
    for name, index in config.index.items():
        store = config.embed[index.store].out
        inputs, outputs = (join_url(store, MANIFEST),), (join_url(index.out, MANIFEST),)
        uses_ray = index.num_shards > 1
        yield Step(f"index.{name}", index, inputs, outputs, partial(_index, index, store, run), uses_ray=uses_ray)


def build_steps(config: PipelineConfig, run: RunSettings) -> list[Step]:
    """The config's stages as steps, in pipeline order."""
    from zoo.pipeline.report import report_inputs, write_report

    steps = list(_stage_steps(config, run))
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    if (retrieval := config.retrieval) is not None:
        inputs = tuple(join_url(config.embed[s].out, MANIFEST) for s in retrieval.stores)
        inputs += tuple(join_url(config.index[i].out, MANIFEST) for i in retrieval.indices)
        outputs = (join_url(retrieval.out, "retrieval.json"),)
        steps.append(Step("retrieval", retrieval, inputs, outputs, partial(_retrieval, retrieval, config), False))
    if (clustering := config.clustering) is not None:
        inputs = tuple(join_url(config.embed[s].out, MANIFEST) for s in clustering.stores)
        outputs = (join_url(clustering.out, "clustering.json"),)
        steps.append(Step("clustering", clustering, inputs, outputs, partial(_clustering, clustering, config), False))
    if (report := config.report) is not None:
        outputs = (join_url(report.out, "index.html"), join_url(report.out, "index.md"))
        inputs = report_inputs(config, [step.name for step in steps])
        steps.append(Step("report", report, inputs, outputs, partial(write_report, config), uses_ray=False))
    return steps
