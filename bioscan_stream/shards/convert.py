"""Convert a BIOSCAN-5M release into WebDataset shards grouped by split, on Ray (release -> **shards**).

Flow: read + validate the metadata (rejects: malformed rows, unknown splits, bad barcodes) -> global
vocabularies -> a seeded plan per split (`plan.py`) -> one Ray task per shard (`writer.py`: read images
from the extracted tree or the official zips, reject missing/unreadable ones, write the tar) -> the
DNA-only set of unique pretrain + other_heldout barcodes (its own `rejects.jsonl` and `index.json`; with
`images=False` it is the only output, so a metadata-only download suffices) -> `rejects.jsonl`, `vocab.json`
and, last, `index.json` (`manifest.py`). Output goes to a local folder or `s3://bucket/prefix`.

A BIOSCAN-1M release (auto-detected: `release1m.is_release_1m`) goes through the same plan, tasks, journal and
manifest: its records are grouped by their six partition values (`release1m.partition_groups`), each group is
a shard folder, and `index.json` adds `partitionings` (partitioning -> split -> groups), so a stream selects a
partitioning's split as whole groups; targets are the official loader's label indices; no DNA-only set.

Ray: an embedded local runtime with `workers` CPUs by default, or the cluster at `ray_address`; a runtime
that is already initialised (tests, notebooks) is reused and left running. Tasks retry transient I/O
errors (`OSError`, which covers connection errors and timeouts); invalid records in strict mode are not
retried. Reruns resume: finished shards are verified against their journal and skipped.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import ray
from tqdm.auto import tqdm

from bioscan_stream.constants import COLUMNS, SPLITS
from bioscan_stream.layout import CorruptImage, ImageReader, ImageStore, MissingImage
from bioscan_stream.metadata import _resolve as resolve_metadata
from bioscan_stream.metadata import read_metadata
from bioscan_stream.ray_runtime import ray_runtime
from bioscan_stream.release1m import (
    ImageStore1M,
    bad_partition_detail,
    find_metadata_1m,
    is_release_1m,
    partition_groups,
    read_metadata_1m,
    vocabularies_1m,
)
from bioscan_stream.schema import (
    COUNT,
    DNA,
    DNA_PACKAGE,
    DNA_SHARD_MEMBERS,
    DNA_SPLIT,
    IMAGE_SHARD_MEMBERS,
    INDEX_FILE,
    REJECTS_FILE,
    SCHEMA_VERSION,
)
from bioscan_stream.shards.dnaset import DNA_SOURCE_SPLITS, UniqueBarcodes, unique_barcodes
from bioscan_stream.shards.manifest import library_versions, put_via_local, shard_entries, split_totals, write_json
from bioscan_stream.shards.plan import DEFAULT_MIN_SHARDS, DEFAULT_SHARD_BYTES, ShardSpec, plan_split, tar_bytes
from bioscan_stream.shards.writer import (
    JOURNAL_DIR,
    ShardJob,
    ShardResult,
    image_sample,
    journal_url,
    sample_texts,
    sha256_url,
    write_dna_shard,
    write_image_shard,
)
from bioscan_stream.storage import is_s3, join_url, list_urls
from bioscan_stream.validate import UNKNOWN_SPLIT, InvalidRecordError, Reject, RejectsReport, validate_records
from bioscan_stream.vocab import build_vocabularies, encode_labels, save_vocabularies

__all__ = [
    "JOURNAL_DIR",
    "ConvertConfig",
    "ConvertReport",
    "convert_release",
    "plan_release_images",
    "vocabulary_entry",
]

log = logging.getLogger(__name__)

VOCAB_FILE = "vocab.json"
#: Images read per split to estimate bytes per sample for the plan (deterministic, seeded).
_SIZE_SAMPLE = 32
#: Bytes per sample when no image of a split could be read: a 29 KB cropped_256 JPEG plus members.
_FALLBACK_SAMPLE_BYTES = 36_000.0
#: Per worker process: image stores by (root, package, zips), so each zip's central directory is read once
#: per worker (a 5M-entry directory costs seconds), not once per shard.
_STORES: dict[tuple[str, str, tuple[Path, ...]], ImageReader] = {}


@dataclass(frozen=True)
class ConvertConfig:
    """Everything a conversion depends on; the job layer builds it from arguments and environment."""

    root: str
    out: str
    package: str = "cropped_256"
    splits: tuple[str, ...] = SPLITS
    shard_bytes: int = DEFAULT_SHARD_BYTES
    min_shards: int = DEFAULT_MIN_SHARDS
    seed: int = 0
    workers: int | None = None
    strict: bool = False
    dna: bool = True
    #: False: the DNA-only set alone, from the metadata (no image is read; for a metadata-only download).
    images: bool = True
    ray_address: str | None = None
    max_retries: int = 3
    progress: bool = True
    #: (name, value) pairs set in every task's environment, e.g. the AWS endpoint variables for an
    #: `s3://` output when the Ray workers were started without them (`ray start` on another shell).
    task_env: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class ConvertReport:
    """What a run produced: the manifests it wrote (None for a set it did not make) and the shard counts."""

    manifest_url: str | None
    manifest: dict[str, Any] | None
    dna_manifest_url: str | None
    dna_manifest: dict[str, Any] | None
    written: int
    reused: int
    seconds: float


@dataclass(frozen=True)
class _Source:
    """Validated records of the selected splits (row order = plan indices), their targets and the rejects."""

    table: pa.Table
    targets: pa.Table
    vocabularies: dict[str, list[str]]
    rejects: list[Reject]
    read: dict[str, int]
    metadata: str
    metadata_sha256: str
    #: Shard folders to plan, in order: the selected splits, or a 1M release's partition groups.
    splits: tuple[str, ...] = ()
    #: Manifest entries of a 1M release (`release`, `partitionings`); empty for 5M.
    manifest_extra: dict[str, Any] = field(default_factory=dict)


def _load(config: ConvertConfig) -> _Source:
    """Read and validate the metadata; keep the selected splits; encode the targets with global vocabularies."""
    _, metadata_file = resolve_metadata(config.root)
    rejects: list[Reject] = []
    table = read_metadata(config.root, strict=config.strict, rejects=rejects)
    counted = pc.value_counts(table["split"]).to_pylist()
    present = {c["values"]: c["counts"] for c in counted}
    read = {split: int(present.get(split, 0)) for split in config.splits}
    valid, invalid = validate_records(table, strict=config.strict)
    rejects += [r for r in invalid if r.split in config.splits or r.split not in SPLITS]
    vocabularies = build_vocabularies(valid)
    valid = valid.filter(pc.is_in(valid["split"], value_set=pa.array(config.splits, pa.string())))
    targets = pa.table({name: encode_labels(valid[name], vocab) for name, vocab in vocabularies.items()})
    columns = [c for c in COLUMNS if c in valid.column_names]
    return _Source(
        valid.select(columns), targets, vocabularies, rejects, read, str(metadata_file), sha256_url(str(metadata_file)),
        splits=config.splits,
    )  # fmt: skip


def _validate_1m(table: pa.Table, strict: bool) -> tuple[pa.Table, list[Reject]]:
    """`validate_records` (processid, barcode) plus records without a valid group (`unknown_split`); every reject
    carries its record's group as its split, so that the counts add up per group."""
    numbered = table.append_column("__row", pa.array(np.arange(table.num_rows)))
    no_group = pc.is_null(table["split"]).to_numpy(zero_copy_only=False)
    if strict and no_group.any():
        row = int(np.flatnonzero(no_group)[0])
        pid = table["processid"][row].as_py()
        raise InvalidRecordError(Reject(pid, None, UNKNOWN_SPLIT, bad_partition_detail(table, row)))
    valid, invalid = validate_records(numbered.drop_columns(["split"]), strict=strict)
    kept = np.zeros(table.num_rows, dtype=bool)
    kept[valid["__row"].to_numpy()] = True
    groups = table["split"].to_pylist()
    rejects = [replace(r, split=groups[row]) for r, row in zip(invalid, np.flatnonzero(~kept), strict=True)]
    rejects += [
        Reject(table["processid"][int(row)].as_py(), None, UNKNOWN_SPLIT, bad_partition_detail(table, int(row)))
        for row in np.flatnonzero(kept & no_group)
    ]
    return table.filter(pa.array(kept & ~no_group)), rejects


def _load_1m(config: ConvertConfig) -> _Source:
    """A 1M release: cleaned metadata, the official label indices (vocabularies over every row, as the official
    loader builds them), `nucraw` as `dna_barcode` and the partition group as `split`."""
    metadata_file = find_metadata_1m(config.root)
    assert metadata_file is not None
    rejects: list[Reject] = []
    table = read_metadata_1m(config.root, strict=config.strict, rejects=rejects)
    vocabularies = vocabularies_1m(table)
    groups, partitionings = partition_groups(table)
    table = table.rename_columns(["dna_barcode" if c == "nucraw" else c for c in table.column_names])
    table = table.append_column("split", groups)
    counted = {c["values"]: c["counts"] for c in pc.value_counts(groups).to_pylist() if c["values"] is not None}
    valid, invalid = _validate_1m(table, config.strict)
    targets = pa.table({name: encode_labels(valid[name], vocab) for name, vocab in vocabularies.items()})
    extra = {"release": "bioscan1m", "partitionings": partitionings, "renamed": {"nucraw": "dna_barcode"}}
    return _Source(
        valid, targets, vocabularies, rejects + invalid, dict(sorted(counted.items())), str(metadata_file),
        sha256_url(str(metadata_file)), splits=tuple(sorted(counted)), manifest_extra=extra,
    )  # fmt: skip


def _bytes_per_sample(source: _Source, store: ImageReader, rows: np.ndarray, seed: int) -> float:
    """Mean tar bytes of a seeded sample of the split's records (members as they will be written)."""
    rng = np.random.default_rng(seed)
    chosen = np.sort(rng.choice(rows, size=min(_SIZE_SAMPLE, len(rows)), replace=False))
    records, targets = source.table.take(chosen), source.targets.take(chosen)
    metadata, target_texts = sample_texts(records, targets)
    sizes = []
    for i, row in enumerate(records.select(["processid", "split", "dna_barcode"]).to_pylist()):
        try:
            image = store.read(row["processid"], row["split"])
        except (MissingImage, CorruptImage):
            continue
        sample = image_sample(row["processid"], image, row["dna_barcode"] or "", metadata[i], target_texts[i])
        sizes.append(
            tar_bytes({k: len(v.encode() if isinstance(v, str) else v) for k, v in sample.items() if k[0] != "_"})
        )
    return float(np.mean(sizes)) if sizes else _FALLBACK_SAMPLE_BYTES


def _image_plan(config: ConvertConfig, source: _Source, store: ImageReader) -> list[ShardSpec]:
    splits = np.asarray(source.table["split"].to_numpy(zero_copy_only=False))
    specs: list[ShardSpec] = []
    for split in source.splits:
        rows = np.flatnonzero(splits == split)
        if len(rows) == 0:
            continue
        per_sample = _bytes_per_sample(source, store, rows, config.seed)
        specs += plan_split(
            split, rows, bytes_per_sample=per_sample, seed=config.seed,
            shard_bytes=config.shard_bytes, min_shards=config.min_shards,
        )  # fmt: skip
    return specs


def _check_splits(splits: Sequence[str]) -> None:
    unknown = [s for s in splits if s not in SPLITS]
    if unknown:
        raise ValueError(f"unknown split(s) {unknown}; expected some of {', '.join(SPLITS)}")


def plan_release_images(config: ConvertConfig) -> tuple[_Source, list[ShardSpec]]:
    """The validated records of a 5M release and the image shard plan `convert_release(config)` follows.

    For jobs that read a release shard by shard as the converter would write it (the crop job).
    """
    _check_splits(config.splits)
    source = _load(config)
    return source, _image_plan(config, source, ImageStore.open(config.root, config.package))


def _job(config: ConvertConfig, folder: str, spec: ShardSpec) -> ShardJob:
    base = join_url(config.out, folder)
    return ShardJob(spec.path, join_url(base, spec.path), journal_url(base, spec.path), strict=config.strict)


def _image_task(job: ShardJob, store: ImageReader, rows: list[int], table: pa.Table, targets: pa.Table) -> ShardResult:
    """Ray task body: the shard's records (zero-copy from the object store) -> tar."""
    cached = _STORES.setdefault((str(store.root), store.package, store.zips), store)
    index = pa.array(rows, pa.int64())
    return write_image_shard(job, cached, table.take(index), targets.take(index))


def _run(calls: Sequence[tuple[Any, tuple[Any, ...]]], config: ConvertConfig, what: str) -> list[ShardResult]:
    """Submit `(remote function, args)` calls with at most two per worker in flight; results in call order.

    Two, not one: a queued task starts the moment a worker frees up, instead of after a round trip through
    this driver (result fetch + submit + lease: ~10 ms per shard here, 5% of a small conversion).
    """
    window = 2 * (config.workers or max(1, int(ray.cluster_resources().get("CPU", 1))))
    pending: dict[Any, int] = {}
    results: list[ShardResult | None] = [None] * len(calls)
    queue = iter(enumerate(calls))
    with tqdm(total=len(calls), desc=what, unit="shard", disable=not config.progress) as bar:
        while True:
            while len(pending) < window and (item := next(queue, None)) is not None:
                position, (remote, args) = item
                pending[remote.remote(*args)] = position
            if not pending:
                break
            done, _ = ray.wait(list(pending), num_returns=1)
            for ref in done:
                results[pending.pop(ref)] = ray.get(ref)
                bar.update(1)
    return [r for r in results if r is not None]


def _remote(function: Any, config: ConvertConfig) -> Any:
    """A Ray task of `function` that retries transient I/O errors only (strict-mode rejects fail at once)."""
    options: dict[str, Any] = {"num_cpus": 1, "max_retries": config.max_retries, "retry_exceptions": [OSError]}
    if config.task_env:
        options["runtime_env"] = {"env_vars": dict(config.task_env)}
    return ray.remote(function).options(**options)


def _convert_images(config: ConvertConfig, source: _Source) -> list[ShardResult]:
    store: ImageReader
    if source.manifest_extra.get("release") == "bioscan1m":
        records = source.table.select(["processid", "chunk_number", "image_file"])
        store = ImageStore1M.open(config.root, config.package, records=records)
    else:
        store = ImageStore.open(config.root, config.package)
    specs = _image_plan(config, source, store)
    table_ref, targets_ref, store_ref = ray.put(source.table), ray.put(source.targets), ray.put(store)
    task = _remote(_image_task, config)
    calls = [(task, (_job(config, config.package, s), store_ref, list(s.rows), table_ref, targets_ref)) for s in specs]
    return _run(calls, config, f"{config.package} shards")


def _parameters(config: ConvertConfig) -> dict[str, Any]:
    return {
        "package": config.package,
        "splits": list(config.splits),
        "seed": config.seed,
        "shard_bytes": config.shard_bytes,
        "min_shards": config.min_shards,
        "strict": config.strict,
    }


def _source_entry(config: ConvertConfig, source: _Source) -> dict[str, Any]:
    return {"root": str(config.root), "metadata": Path(source.metadata).name, "metadata_sha256": source.metadata_sha256}


def vocabulary_entry(vocabularies: dict[str, list[str]]) -> dict[str, Any]:
    """The manifest's `vocabularies` entry: the file beside it, target names, sizes, the missing code."""
    sizes = {name: len(v) for name, v in vocabularies.items()}
    return {"file": VOCAB_FILE, "targets": list(vocabularies), "sizes": sizes, "missing": -1}


def _publish_images(config: ConvertConfig, source: _Source, results: list[ShardResult]) -> tuple[str, dict[str, Any]]:
    """rejects.jsonl and vocab.json, then index.json last (its presence means the set is complete)."""
    base = join_url(config.out, config.package)
    rejects = source.rejects + [r for result in results for r in result.rejects]
    put_via_local(RejectsReport(list(rejects)).write, join_url(base, REJECTS_FILE), REJECTS_FILE)
    put_via_local(lambda p: save_vocabularies(source.vocabularies, p), join_url(base, VOCAB_FILE), VOCAB_FILE)
    splits = shard_entries(results, source.splits)
    manifest: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "kind": "image",
        "package": config.package,
        "key": "processid",
        "members": list(IMAGE_SHARD_MEMBERS),
        "splits": splits,
        "totals": split_totals(source.read, {s: e["samples"] for s, e in splits.items()}, rejects),
        "rejects": {"file": REJECTS_FILE, "count": len(rejects)},
        "vocabularies": vocabulary_entry(source.vocabularies),
        "source": _source_entry(config, source),
        "parameters": _parameters(config),
        "versions": library_versions(),
        **source.manifest_extra,
    }
    url = join_url(base, INDEX_FILE)
    write_json(url, manifest)
    return url, manifest


def _dna_task(job: ShardJob, sequences: list[str], counts: list[int]) -> ShardResult:
    return write_dna_shard(job, sequences, counts)


def _dna_rejects(source: _Source, splits: tuple[str, ...]) -> list[Reject]:
    """Metadata rejects of the source splits, and those of no known split (a malformed row may be one of them)."""
    return [r for r in source.rejects if r.split in splits or r.split not in SPLITS]


def _dna_manifest(
    config: ConvertConfig,
    source: _Source,
    unique: UniqueBarcodes,
    splits: tuple[str, ...],
    results: list[ShardResult],
    rejects: list[Reject],
) -> dict[str, Any]:
    """Totals: the set itself, then per source split read = records in the set + rejected (self-contained)."""
    entries = shard_entries(results, [DNA_SPLIT])
    totals: dict[str, Any] = {
        DNA_SPLIT: {
            "records": unique.records,
            "samples": entries[DNA_SPLIT]["samples"],
            "duplicates": unique.duplicates,
            "empty_after_strip": unique.empty,
        }
    }
    totals |= split_totals({s: source.read[s] for s in splits}, unique.records_per_split, rejects)
    return {
        "schema_version": SCHEMA_VERSION,
        "kind": "dna",
        "key": "sha256(dna.txt)[:32]",
        "members": list(DNA_SHARD_MEMBERS),
        "source_splits": list(splits),
        "splits": entries,
        "totals": totals,
        "rejects": {"file": REJECTS_FILE, "count": len(rejects)},
        "source": _source_entry(config, source),
        "parameters": {**_parameters(config), "strip_trailing_n": True},
        "versions": library_versions(),
    }


def _convert_dna(config: ConvertConfig, source: _Source) -> tuple[str, dict[str, Any], list[ShardResult]]:
    """The DNA-only set from the selected source splits; its own index.json under OUT/dna."""
    splits = tuple(s for s in DNA_SOURCE_SPLITS if s in config.splits)
    unique = unique_barcodes(source.table, splits=splits)
    sizes = [tar_bytes({DNA: len(seq), COUNT: 8}) for seq in unique.sequences[:4096]]
    specs = plan_split(
        DNA_SPLIT, np.arange(len(unique.sequences)), bytes_per_sample=float(np.mean(sizes)) if sizes else 1.0,
        seed=config.seed, shard_bytes=config.shard_bytes, min_shards=config.min_shards,
    )  # fmt: skip
    task = _remote(_dna_task, config)
    calls = []
    for spec in specs:
        sequences, counts = [unique.sequences[r] for r in spec.rows], unique.counts[list(spec.rows)].tolist()
        calls.append((task, (_job(config, DNA_PACKAGE, spec), sequences, counts)))
    results = _run(calls, config, "dna shards")
    base = join_url(config.out, DNA_PACKAGE)
    rejects = _dna_rejects(source, splits)
    put_via_local(RejectsReport(rejects).write, join_url(base, REJECTS_FILE), REJECTS_FILE)
    url, manifest = join_url(base, INDEX_FILE), _dna_manifest(config, source, unique, splits, results, rejects)
    write_json(url, manifest)
    return url, manifest, results


def _clean_tmp(config: ConvertConfig) -> None:
    """Remove temporary files a killed run left in a local output (`.<name>.tmp-<pid>`, never read as shards)."""
    if is_s3(config.out):
        return  # S3 objects appear only when complete (single PUT / completed multipart)
    for folder in (config.package, DNA_PACKAGE):
        for tmp in Path(config.out, folder).rglob(".*.tmp*"):
            log.info("removing unfinished %s", tmp)
            tmp.unlink(missing_ok=True)


def _remove_stale(config: ConvertConfig, folder: str, results: Sequence[ShardResult]) -> None:
    """Delete shards and journal records of an earlier plan (e.g. another shard size) that this plan has not.

    Local output only; on S3 they are reported. `index.json` lists the current shards either way, but a
    reader that globs `train-*.tar` must not pick up an old one.
    """
    keep = {r.path for r in results}
    base = join_url(config.out, folder)
    stale = [u for u in list_urls(base, suffix=".tar") if u[len(base) :].strip("/") not in keep]
    for url in stale:
        if is_s3(url):
            log.warning("stale shard %s is not in this plan (not listed in index.json)", url)
            continue
        log.warning("removing stale shard %s (not in this plan)", url)
        Path(url).unlink()
        Path(journal_url(base, url)).unlink(missing_ok=True)


def convert_release(config: ConvertConfig) -> ConvertReport:
    """Convert `config.root` into shards under `config.out`; see the module docstring for the flow.

    Raises:
        InvalidRecordError: in strict mode, for the first record that would be rejected.
        FileNotFoundError: no metadata or no images of the package under the root.
    """
    _check_splits(config.splits)
    release_1m = is_release_1m(config.root)
    make_dna = config.dna and not release_1m and any(s in config.splits for s in DNA_SOURCE_SPLITS)
    if not config.images and not make_dna:
        raise ValueError(f"nothing to write: images are off and the DNA set needs one of {DNA_SOURCE_SPLITS}")
    start = time.perf_counter()
    _clean_tmp(config)
    source = _load_1m(config) if release_1m else _load(config)
    results: list[ShardResult] = []
    dna_results: list[ShardResult] = []
    dna_url: str | None = None
    dna_manifest: dict[str, Any] | None = None
    with ray_runtime(config.ray_address, num_cpus=config.workers):
        if config.images:
            results = _convert_images(config, source)
        if make_dna:
            dna_url, dna_manifest, dna_results = _convert_dna(config, source)
    url: str | None = None
    manifest: dict[str, Any] | None = None
    if config.images:
        _remove_stale(config, config.package, results)
        url, manifest = _publish_images(config, source, results)
    if dna_url is not None:
        _remove_stale(config, DNA_PACKAGE, dna_results)
    everything = results + dna_results
    reused = sum(r.reused for r in everything)
    seconds = time.perf_counter() - start
    return ConvertReport(url, manifest, dna_url, dna_manifest, len(everything) - reused, reused, seconds)


def report_summary(report: ConvertReport) -> str:
    """Terminal lines: per split written / rejected / read, the DNA set, then shards written and reused."""
    lines = [f"{'split':<14}{'written':>10}{'rejected':>10}{'read':>10}"]
    for split, t in (report.manifest or {}).get("totals", {}).items():
        lines.append(f"{split:<14}{t['written']:>10}{t['rejected']:>10}{t['read']:>10}")
    totals = (report.manifest or {}).get("totals", {})
    for name, splits in (report.manifest or {}).get("partitionings", {}).items():  # a 1M set: splits of each version
        sizes = {split: sum(totals.get(g, {}).get("written", 0) for g in groups) for split, groups in splits.items()}
        lines.append(f"{name:<22}" + "  ".join(f"{split} {n:,d}" for split, n in sizes.items()))
    if report.dna_manifest is not None:
        dna = report.dna_manifest["totals"][DNA_SPLIT]
        lines.append(
            f"dna set: {dna['samples']} unique barcodes from {dna['records']} records "
            f"({dna['duplicates']} duplicates merged, {dna['empty_after_strip']} empty) -> {report.dna_manifest_url}"
        )
    targets = " and ".join(u for u in (report.manifest_url, report.dna_manifest_url) if u)
    lines.append(f"shards: {report.written} written, {report.reused} reused, {report.seconds:.1f} s -> {targets}")
    return "\n".join(lines)
