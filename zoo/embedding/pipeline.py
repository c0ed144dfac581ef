"""The embedding job: shard set -> Ray Data (read | CPU preprocess | model actor pool) -> embedding store.

Flow (`embed_shards`):

1. plan: the input shards of the chosen splits from the shard manifest; the store's existing files whose
   footer names the same encoder and source shard are kept (a rerun after `kill -9` skips them);
2. labels: a Ray task per pending shard reads its label columns and checks its sha256 and count (a damaged
   shard stops the job, named, before anything is written);
3. DNA deduplication: identical barcodes (blake2b digest of the exact member bytes) are embedded once, at
   their first occurrence in job order, and joined back on write;
4. Ray Data: one read task per shard (raw member bytes) -> `map_batches` CPU preprocessing (decode /
   tokenise, rejects marked) -> `map_batches` over an actor pool of model replicas (model built once per
   actor, `inference_mode`, bf16/fp16 autocast on GPU) -> the driver, which writes each shard's Parquet file
   as soon as all of its rows (and the first occurrences they share) are back. The streaming executor
   overlaps all stages with backpressure;
5. `rejects.jsonl`, then `index.json` last: the store is complete when it exists.

Every forward batch is padded to exactly `batch_size` rows of fixed-shape inputs, so a row's embedding does
not depend on which rows share its batch: that, deterministic names and per-shard row order make a resumed
job byte-identical to an uninterrupted one (tested).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Iterator, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import ray
import torch
from tqdm.auto import tqdm

from bioscan_stream.malloc import FORWARD
from bioscan_stream.ray_runtime import ray_runtime
from bioscan_stream.shards.manifest import library_versions
from bioscan_stream.storage import join_url, list_urls, open_url, remove_url, url_exists
from zoo._factory import create_model
from zoo.embedding.sources import (
    DIGEST,
    EMPTY,
    InputShard,
    PayloadsInObjectStore,
    ShardPayloads,
    labels_and_payloads,
    list_input_shards,
)
from zoo.embedding.store import (
    INDEX_FILE,
    REJECTS_FILE,
    STORE_FORMAT,
    STORE_VERSION,
    StoreFile,
    check_store_file,
    store_file_name,
    write_store_file,
)
from zoo.encoder import Preprocessor, is_encoder

__all__ = ["EmbedConfig", "EmbedReport", "EncoderMismatchError", "embed_shards", "encoder_digest"]

log = logging.getLogger(__name__)
_INPUT = "x_"
#: Each result row carries its share of its batch's forward time: their sum is the model's busy time.
_FORWARD_SECONDS = "forward_seconds"
#: Memory reserved per preprocessing task: Ray measured ~0.6 GB per worker (torch + timm imported), 2026-12.
_TASK_MEMORY = 1 << 30
#: Rows per Ray Data call for small inputs (DNA, text). Each call costs Ray Data a few ms whatever its size, a
#: k-mer forward of 256 rows costs less than that, so small rows travel up to ~4,096 at a time (never more than
#: the smallest shard's, so finished shards are still written as the job goes); the actor still runs its
#: forward passes in `batch_size` chunks, so the vectors do not change. Images (~0.6 MB per row as float32
#: tensors) travel in `batch_size` calls.
_SMALL_ROWS_PER_CALL = 4096


def _rows_per_call(batch_size: int, modality: str, smallest_shard: int) -> int:
    """Rows per Ray Data call: `batch_size` for images, else a multiple of it up to ~4,096 or the smallest shard."""
    if modality == "image":
        return batch_size
    return batch_size * max(1, min(_SMALL_ROWS_PER_CALL, smallest_shard) // batch_size)


class EncoderMismatchError(RuntimeError):
    """The output store was made by another encoder (or dtype); refused unless `overwrite`."""


@dataclass(frozen=True)
class EmbedConfig:
    """Everything the embedding job needs (the CLI builds one from its flags).

    Args:
        shards: input shard set folder (local or `s3://`), with its `index.json`.
        out: store folder (local or `s3://`).
        model: zoo model name (`zoo.list_models()`); `pretrained` a local weights file or folder.
        splits: splits to embed, in this order.
        dtype: stored vector type, `float16` or `float32`.
        layout: embedding column layout, `binary` (fast scans) or `list` (SQL arrays); see `zoo.embedding.store`.
        batch_size: rows per forward pass (every pass is padded to it).
        concurrency: model replicas (Ray actors); `num_gpus` per actor (None: 1 when the cluster has GPUs).
        cpus_per_actor: CPU threads each replica uses.
        precision: autocast dtype on GPU (`bf16`, `fp16` or `fp32`); CPU always runs fp32.
        dedup: embed identical barcodes once (DNA encoders).
        seed: seeds random-init weights, so every replica (and every rerun) holds the same model.
        overwrite: replace a store made by another encoder instead of refusing.
        task_env: (name, value) pairs set in every Ray task and actor, e.g. the AWS endpoint variables for
            `s3://` paths when the workers were started without them.
    """

    shards: str
    out: str
    model: str
    splits: tuple[str, ...] = ("train",)
    pretrained: str | None = None
    overrides: tuple[tuple[str, Any], ...] = ()
    dtype: str = "float16"
    layout: str = "binary"
    batch_size: int = 64
    concurrency: int = 1
    num_gpus: float | None = None
    cpus_per_actor: int = 1
    precision: str = "bf16"
    dedup: bool = True
    seed: int = 0
    overwrite: bool = False
    ray_address: str | None = None
    num_cpus: int | None = None
    progress: bool = True
    task_env: tuple[tuple[str, str], ...] = ()

    @property
    def format(self) -> dict[str, str]:
        """What a store file must match besides its encoder and source to be kept by a rerun."""
        return {"dtype": self.dtype, "layout": self.layout}

    @property
    def runtime_env(self) -> dict[str, Any] | None:
        return {"env_vars": dict(self.task_env)} if self.task_env else None

    @property
    def replica_env(self) -> dict[str, Any]:
        """A model replica's `runtime_env`: `task_env` and the forward-pass malloc policy (set at process start)."""
        return {"env_vars": FORWARD.environment() | dict(self.task_env)}


@dataclass
class EmbedReport:
    """What a run did: counts, files written vs kept from an earlier run, forward passes, seconds per phase."""

    store: str
    rows: int = 0
    rejected: int = 0
    files_written: int = 0
    files_kept: int = 0
    forward_rows: int = 0
    seconds: dict[str, float] = field(default_factory=dict)


def build_encoder(config: EmbedConfig) -> Any:
    """The model of `config`, seeded, in eval mode; TypeError if it does not meet the encoder contract."""
    torch.manual_seed(config.seed)
    model = create_model(config.model, pretrained=config.pretrained, **dict(config.overrides))
    if not is_encoder(model):
        raise TypeError(f"model {config.model!r} is not an encoder (it lacks the zoo.encoder.Encoder methods)")
    return model.eval()


def encoder_digest(fingerprint: dict[str, Any]) -> str:
    """sha256 of the canonical JSON of an encoder fingerprint: the identity a store records."""
    return hashlib.sha256(json.dumps(fingerprint, sort_keys=True).encode()).hexdigest()


@dataclass(frozen=True)
class _Preprocess:
    """CPU stage: payload bytes -> fixed-shape input arrays (zeros on rejected rows) + a reject column."""

    preprocessor: Preprocessor

    def __call__(self, batch: pa.Table) -> dict[str, np.ndarray]:
        payloads = batch.column("payload").to_pylist()
        done = self.preprocessor(payloads)
        n = len(payloads)
        out: dict[str, np.ndarray] = {
            "shard": batch.column("shard").to_numpy(),
            "row": batch.column("row").to_numpy(),
            "reject": np.array([done.rejects.get(i, "") for i in range(n)], dtype=object),
        }
        for name, array in done.arrays.items():
            full = np.zeros((n, *array.shape[1:]), dtype=array.dtype)
            full[done.kept] = array
            out[_INPUT + name] = full
        return out


class _EmbedActor:
    """Model replica: built once per actor, then fixed-size padded forward passes over its batches."""

    def __init__(self, config: EmbedConfig, expected: str) -> None:
        torch.set_num_threads(config.cpus_per_actor)
        self.model = build_encoder(config)
        digest = encoder_digest(self.model.fingerprint())
        if digest != expected:
            raise RuntimeError(f"replica built a different {config.model} ({digest[:12]} != {expected[:12]})")
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.model.to(self.device)
        self.batch_size = config.batch_size
        self.out_dtype = np.dtype(config.dtype)  # cast here: half the bytes back to the driver for float16
        dtypes = {"bf16": torch.bfloat16, "fp16": torch.float16}
        self.autocast = dtypes.get(config.precision) if self.device.type == "cuda" else None

    def _forward(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        n = len(next(iter(inputs.values())))
        out = np.zeros((n, self.model.embed_dim), np.float32)
        for start in range(0, n, self.batch_size):
            stop = min(start + self.batch_size, n)
            chunk = {}
            for name, array in inputs.items():
                padded = np.zeros((self.batch_size, *array.shape[1:]), dtype=array.dtype)
                padded[: stop - start] = array[start:stop]
                chunk[name] = torch.from_numpy(padded).to(self.device, non_blocking=True)
            autocast = torch.autocast("cuda", self.autocast) if self.autocast else nullcontext()
            with torch.inference_mode(), autocast:
                out[start:stop] = self.model.embed_batch(chunk)[: stop - start].float().cpu().numpy()
        return out

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        ok = batch["reject"] == ""
        inputs = {k.removeprefix(_INPUT): v[ok] for k, v in batch.items() if k.startswith(_INPUT)}
        embedding = np.zeros((len(ok), self.model.embed_dim), self.out_dtype)
        start = time.perf_counter()
        if ok.any():
            embedding[ok] = self._forward(inputs)
        share = np.full(len(ok), (time.perf_counter() - start) / max(len(ok), 1))
        return {"shard": batch["shard"], "row": batch["row"], "reject": batch["reject"], "embedding": embedding,
                _FORWARD_SECONDS: share}  # fmt: skip


@dataclass
class _Shard:
    """A pending input shard: labels, where each row's vector comes from, and which units it waits for."""

    info: InputShard
    labels: pa.Table
    owner: np.ndarray  # (rows, 2): (owner shard number, owner row); -1 = rejected before the model
    reasons: dict[int, str]
    sent: np.ndarray  # rows of this shard sent through the model (first occurrences)
    needs: set[int]


def _label_tables(config: EmbedConfig, pending: list[InputShard], with_dna: bool) -> tuple[list[pa.Table], dict]:
    """Every pending shard's label table, and (DNA) object refs of its barcodes by shard number."""
    task: Any = ray.remote(labels_and_payloads).options(num_cpus=1, num_returns=2, runtime_env=config.runtime_env)  # type: ignore[call-overload]
    refs = [task.remote(shard, with_dna) for shard in pending]
    tables = list(ray.get([labels for labels, _ in refs]))
    return tables, ({s.number: payloads for s, (_, payloads) in zip(pending, refs, strict=True)} if with_dna else {})


def _plan_rows(pending: list[InputShard], tables: list[pa.Table], dedup: bool) -> list[_Shard]:
    """Owner of every row: itself, or (with dedup) the first row in job order with the same barcode."""
    with_dna = bool(tables) and DIGEST in tables[0].column_names
    sizes = [t.num_rows for t in tables]
    shard_of = np.repeat([s.number for s in pending], sizes).astype(np.int64)
    row_of = np.concatenate([np.arange(n) for n in sizes]) if sizes else np.zeros(0, np.int64)
    empty = np.concatenate([t.column(EMPTY).to_numpy(zero_copy_only=False) for t in tables]) if with_dna else None
    first = np.arange(len(shard_of))
    if with_dna and dedup and len(first):
        raw = b"".join(b for t in tables for b in t.column(DIGEST).to_pylist())
        keys = np.frombuffer(raw, dtype="V16")
        _, first_index, inverse = np.unique(keys, return_index=True, return_inverse=True)
        first = first_index[inverse]
    owner = np.stack([shard_of[first], row_of[first]], axis=1)
    if empty is not None:
        owner[empty] = -1
    plans, start = [], 0
    for shard, table, size in zip(pending, tables, sizes, strict=True):
        mine = owner[start : start + size]
        reasons = {int(r): "empty_barcode" for r in np.flatnonzero(mine[:, 0] < 0)}
        sent = np.flatnonzero((mine[:, 0] == shard.number) & (mine[:, 1] == np.arange(size)))
        needs = set(np.unique(mine[mine[:, 0] >= 0, 0]).tolist())
        labels = table.drop_columns([c for c in (DIGEST, EMPTY) if c in table.column_names])
        plans.append(_Shard(shard, labels, mine, reasons, sent, needs))
        start += size
    return plans


class _Assembler:
    """Driver side: collects embedded rows per owner shard and writes each shard once everything it needs is in."""

    def __init__(self, config: EmbedConfig, plans: list[_Shard], digest: str, dim: int) -> None:
        self.config, self.digest, self.dim = config, digest, dim
        self.plans = {p.info.number: p for p in plans}
        self.vectors: dict[int, np.ndarray] = {}
        self.model_rejects: dict[int, dict[int, str]] = {p.info.number: {} for p in plans}
        self.missing = {p.info.number: len(p.sent) for p in plans}
        self.users: dict[int, int] = {n: 0 for n in self.plans}
        for plan in plans:
            for unit in plan.needs:
                self.users[unit] += 1
        self.written: list[StoreFile] = []
        self.rejects: dict[int, list[dict[str, Any]]] = {}
        self.forward_seconds = 0.0

    def start(self) -> None:
        """Write the shards that need no forward pass at all (every row a duplicate or a reject)."""
        self._write_ready()

    def add(self, batch: dict[str, np.ndarray]) -> int:
        """Take one batch of results; write the shards it completes. Returns the rows taken."""
        shards, rows = batch["shard"].astype(np.int64), batch["row"].astype(np.int64)
        self.forward_seconds += float(batch[_FORWARD_SECONDS].sum())
        for number in np.unique(shards).tolist():
            pick = shards == number
            if number not in self.vectors:
                self.vectors[number] = np.zeros((self.plans[number].info.samples, self.dim), self.config.dtype)
            self.vectors[number][rows[pick]] = batch["embedding"][pick]
            for row, reason in zip(rows[pick].tolist(), batch["reject"][pick].tolist(), strict=True):
                if reason:
                    self.model_rejects[number][row] = reason
            self.missing[number] -= int(pick.sum())
        self._write_ready()
        return len(rows)

    def _write_ready(self) -> None:
        done = {n for n, left in self.missing.items() if left == 0}
        for number in [n for n, p in self.plans.items() if p.needs <= done and n not in self.rejects]:
            self._write(self.plans[number])

    def _write(self, plan: _Shard) -> None:
        owner = plan.owner
        reasons = dict(plan.reasons)
        for row in np.flatnonzero(owner[:, 0] >= 0).tolist():
            reason = self.model_rejects[int(owner[row, 0])].get(int(owner[row, 1]))
            if reason:
                reasons[row] = reason
        keep = np.array([r not in reasons for r in range(len(owner))], dtype=bool)
        vectors = np.zeros((int(keep.sum()), self.dim), self.config.dtype)
        for unit in plan.needs:
            mine = owner[keep, 0] == unit
            vectors[mine] = self.vectors[unit][owner[keep][mine, 1]]
        ids = plan.labels.column("processid").to_pylist()
        info = plan.info
        rejects = [
            {"processid": ids[r], "split": info.split, "shard": info.path, "reason": reasons[r]}
            for r in sorted(reasons)
        ]
        meta = {"encoder": self.digest, "source": info.path, "source_sha256": info.sha256, **self.config.format}
        labels = plan.labels.filter(pa.array(keep))
        self.written.append(
            write_store_file(
                self.config.out,
                store_file_name(info.path),
                labels,
                vectors,
                dtype=self.config.dtype,
                layout=self.config.layout,
                meta={**meta, "rejects": rejects},
            )
        )
        self.rejects[info.number] = rejects
        for unit in plan.needs:
            self.users[unit] -= 1
            if self.users[unit] == 0:
                self.vectors.pop(unit, None)


def _run_pipeline(config: EmbedConfig, model: Any, assembler: _Assembler, payloads: dict) -> int:
    """Ray Data over the shards' first-occurrence rows; returns the rows that went through the model.

    `payloads` (DNA): the label pass's barcodes in the object store, read instead of the shards a second time.
    """
    work = [(p.info, p.sent) for p in assembler.plans.values() if len(p.sent)]
    assembler.start()
    if not work:
        return 0
    ray.data.DataContext.get_current().enable_progress_bars = config.progress
    gpus = config.num_gpus if config.num_gpus is not None else (1.0 if ray.cluster_resources().get("GPU") else 0.0)
    call_rows = _rows_per_call(config.batch_size, model.modality, min(len(rows) for _, rows in work))
    source = (
        ShardPayloads(work, model.input_member, PayloadsInObjectStore(payloads, model.input_member))
        if payloads
        else ShardPayloads(work, model.input_member)
    )
    ds = ray.data.read_datasource(source, override_num_blocks=len(work), runtime_env=config.runtime_env)
    # Its own CPU tasks: the memory request differs from the actors' remote args, which keeps Ray from fusing
    # the decode into the model actors (that would serialise decoding with the forward passes).
    ds = ds.map_batches(
        _Preprocess(model.preprocessor()),
        batch_format="pyarrow",
        batch_size=call_rows,
        memory=_TASK_MEMORY,
        runtime_env=config.runtime_env,
    )
    ds = ds.map_batches(
        _EmbedActor,
        fn_constructor_kwargs={"config": config, "expected": encoder_digest(model.fingerprint())},
        batch_format="numpy",
        batch_size=call_rows,
        compute=ray.data.ActorPoolStrategy(size=config.concurrency),
        num_cpus=config.cpus_per_actor,
        num_gpus=gpus,
        runtime_env=config.replica_env,  # its activations reuse freed heap (resnet18: 25-28 -> 21 ms an image)
    )
    total = sum(len(rows) for _, rows in work)
    with tqdm(total=total, desc=f"embed {config.model}", unit="row", disable=not config.progress) as bar:
        for batch in ds.iter_batches(batch_format="numpy", batch_size=None):
            bar.update(assembler.add(batch))
    return total


def _existing_files(config: EmbedConfig, digest: str) -> dict[str, StoreFile]:
    """Store files already present, by path; refuses (or, with `overwrite`, deletes) another encoder's store."""
    urls = list_urls(config.out, suffix=".parquet") if url_exists(config.out) or config.out.startswith("s3://") else []
    base = config.out.rstrip("/") + "/"
    found = {u.removeprefix(base): check_store_file(config.out, u.removeprefix(base), {}) for u in urls}
    foreign = sorted(
        p
        for p, f in found.items()
        if f is None or {k: f.meta.get(k) for k in ("encoder", *config.format)} != {"encoder": digest, **config.format}
    )
    if foreign and not config.overwrite:
        raise EncoderMismatchError(
            f"{config.out} holds {len(foreign)} file(s) made by another encoder, dtype or layout (e.g. {foreign[0]}): "
            "choose another --out, or pass --overwrite to replace them"
        )
    if config.overwrite and foreign:
        for name in [*found, INDEX_FILE, REJECTS_FILE]:
            remove_url(join_url(config.out, name))
        return {}
    return {p: f for p, f in found.items() if f is not None}


def _split_entry(split: str, mine: list[InputShard], files: dict[int, StoreFile]) -> dict[str, Any]:
    """A split's counts and files for `index.json`; raises if its rows and rejects do not add up to what was read."""
    entries: list[dict[str, Any]] = [
        {"path": files[s.number].path, "rows": files[s.number].rows, "bytes": files[s.number].bytes,
         "sha256": files[s.number].sha256, "source": s.path, "source_sha256": s.sha256}
        for s in mine
    ]  # fmt: skip
    reasons: dict[str, int] = {}
    for r in (r for s in mine for r in files[s.number].meta["rejects"]):
        reasons[r["reason"]] = reasons.get(r["reason"], 0) + 1
    read, rows = sum(s.samples for s in mine), sum(e["rows"] for e in entries)
    if rows + sum(reasons.values()) != read:
        raise RuntimeError(f"split {split}: {rows} rows + {sum(reasons.values())} rejects != {read} samples read")
    return {"read": read, "rows": rows, "rejected": read - rows, "rejected_by_reason": reasons, "files": entries}


def _publish(
    config: EmbedConfig, model: Any, shards: list[InputShard], files: dict[int, StoreFile], manifest: dict[str, Any]
) -> tuple[int, int]:
    """`rejects.jsonl`, then `index.json` (deterministic: no timings; those go into the job's report)."""
    splits = {split: _split_entry(split, [s for s in shards if s.split == split], files) for split in config.splits}
    rejects = [r for s in shards for r in files[s.number].meta["rejects"]]
    with open_url(join_url(config.out, REJECTS_FILE), "wb") as out:
        out.write("".join(json.dumps(r, sort_keys=True) + "\n" for r in rejects).encode())
    fingerprint = model.fingerprint()
    index = {
        "format": STORE_FORMAT,
        "version": STORE_VERSION,
        "model": config.model,
        "pretrained": config.pretrained,
        "encoder": fingerprint,
        "encoder_sha256": encoder_digest(fingerprint),
        "modality": model.modality,
        "dim": model.embed_dim,
        "dtype": config.dtype,
        "layout": config.layout,
        "transform": model.input_spec(),
        "source": {
            "shards": config.shards,
            "manifest_sha256": hashlib.sha256(json.dumps(manifest, sort_keys=True).encode()).hexdigest(),
        },
        "totals": {key: sum(s[key] for s in splits.values()) for key in ("read", "rows", "rejected")},
        "splits": splits,
        "libraries": library_versions(),
    }
    with open_url(join_url(config.out, INDEX_FILE), "wb") as out:
        out.write(json.dumps(index, indent=1).encode())
    return index["totals"]["rows"], index["totals"]["rejected"]


def embed_shards(config: EmbedConfig) -> EmbedReport:
    """Run the embedding job of `config` (see the module docstring); returns what it did."""
    clock, report = time.perf_counter(), EmbedReport(config.out)
    shards, manifest = list_input_shards(config.shards, config.splits)
    model = build_encoder(config)
    digest = encoder_digest(model.fingerprint())
    existing = _existing_files(config, digest)
    files: dict[int, StoreFile] = {}
    for shard in shards:
        found = existing.get(store_file_name(shard.path))
        if found is not None and found.meta.get("source_sha256") == shard.sha256:
            files[shard.number] = found
    pending = [s for s in shards if s.number not in files]
    report.files_kept = len(files)
    with ray_runtime(config.ray_address, num_cpus=config.num_cpus):
        tables, payloads = _label_tables(config, pending, with_dna=model.modality == "dna")
        report.seconds["labels"] = time.perf_counter() - clock
        assembler = _Assembler(config, _plan_rows(pending, tables, config.dedup), digest, model.embed_dim)
        report.forward_rows = _run_pipeline(config, model, assembler, payloads)
        del payloads  # the barcodes leave the object store
    report.seconds["embed"] = time.perf_counter() - clock - report.seconds["labels"]
    report.seconds["forward"] = assembler.forward_seconds
    files.update({s.number: f for s, f in zip(pending, _in_order(assembler, pending), strict=True)})
    report.files_written = len(pending)
    report.rows, report.rejected = _publish(config, model, shards, files, manifest)
    report.seconds["total"] = time.perf_counter() - clock
    return report


def _in_order(assembler: _Assembler, pending: Sequence[InputShard]) -> Iterator[StoreFile]:
    by_path = {f.path: f for f in assembler.written}
    for shard in pending:
        path = store_file_name(shard.path)
        if path not in by_path:
            raise RuntimeError(f"shard {shard.path} was never written: the pipeline lost rows")
        yield by_path[path]
