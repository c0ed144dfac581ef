"""How fast is the embedding job, against the model's own limit and a straightforward loop, and the store's reader?

For a cheap and an expensive model of each modality (k-mer 5 and BarcodeBERT 4-4-4 on DNA; resnet18 and
ViT-B/16 on images), in the same run:

- job: `zoo.embedding.embed_shards` over a synthetic shard set (Ray Data: read | preprocess | one model actor
  with `--cpus-per-actor` threads | write), items/s over all input rows, Ray already started (as on a cluster);
  DNA also with `--no-dedup`, so the ratio to the limit is not flattered by skipped duplicates;
- limit: the same model's forward pass alone on pre-tokenised / pre-decoded in-memory tensors, same batch size
  and threads (target >= 0.9x for the neural models: reading, decoding and writing hidden behind the forward);
- loop: the official `bioscan-dataset` loader (`BIOSCAN5M`, integrity check skipped for the synthetic CSV) +
  a DataLoader with one worker + the same model, one `.npy` at the end (target >= 1.5x for DNA);
- store read: `zoo.embedding.read_embeddings` full scan vs `np.load` of the same vectors (target >= 0.7x).

Allocator: all three run their forward passes under `bioscan_stream.malloc.FORWARD` (the job's replicas get it
from their `runtime_env`, this process and its forked DataLoader worker by `mallopt`), so no side gains from a
malloc policy the others lack (glibc's defaults refault ~100 MB of activations a batch: 1.3-1.4x slower here).

Budget: `--model-threads T` torch threads for the model in all three (default 1). The job's actor gets T
threads and Ray one more CPU slot for reading, decoding and writing; the loop gets T threads and one
DataLoader worker. T=1 on this 2-vCPU box leaves the other vCPU to the job's I/O; T=2 gives the limit the
whole machine, so the job's reading and decoding must fit in what the forward leaves (the two vCPUs are SMT
siblings: a busy neighbour slows a one-thread forward, docs/embeddings.md). Appends to results/embed.jsonl.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import ray
import torch

import zoo
from bioscan_stream.malloc import FORWARD, tune_malloc
from jobs import convert
from zoo.embedding import EmbedConfig, embed_shards, read_embeddings

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parents[1] / "tests"))
from _results import MIN_RUNS, append_result, spread, spread_text  # noqa: E402
from bench_stream import UncheckedBIOSCAN5M  # noqa: E402  (the official loader without its md5 check)
from helpers_dna import with_stub_images  # noqa: E402  (1-pixel JPEGs: DNA runs need no real photos)

#: (model, modality, split, batch size): a cheap and an expensive model per modality, each measured `--rounds`
#: times (a headline needs the median and spread of >= 3 runs; a full run takes about 50 minutes on 2 cores).
#: Shard sets: `dna` (large, metadata-only: the k-mer job must run long enough that Ray's start-up, ~5 s here,
#: is a small part), `dna_small` (BarcodeBERT: ~15 barcodes/s on one core), `image` (real synthetic photos).
CASES = (
    ("kmer_freq_k5", "dna", "pretrain", 256),
    ("barcodebert_4_4_4", "dna_small", "train", 32),
    ("resnet18", "image", "pretrain", 32),
    ("vit_base_patch16_224", "image", "train", 16),
)


def _release(work: Path, name: str, samples: int, *, images: bool) -> tuple[Path, Path]:
    """A synthetic release (`pretrain` + `train`) and its image shard set: (release root, shard set)."""
    from bioscan_stream.synth.release import write_release

    source = work / name
    table = write_release(source, samples=samples, seed=0, images=images, packages=("cropped_256",))
    root = source if images else with_stub_images(source, work / f"{name}_stub", table, splits=("pretrain", "train"))
    out = work / f"{name}_shards"
    assert convert.main([str(root), str(out), "--splits", "pretrain", "train", "--no-dna", "--no-progress"]) == 0
    return root, out / "cropped_256"


def _job(
    shards: Path, out: Path, model: str, split: str, batch: int, threads: int, dedup: bool = True
) -> tuple[float, int]:
    shutil.rmtree(out, ignore_errors=True)  # every run embeds everything (a kept store would be skipped)
    config = EmbedConfig(str(shards), str(out), model, splits=(split,), batch_size=batch, dedup=dedup,
                         cpus_per_actor=threads, overwrite=True, progress=False)  # fmt: skip
    start = time.perf_counter()
    report = embed_shards(config)
    return time.perf_counter() - start, report.rows + report.rejected


def _inputs(model: Any, shards: Path, split: str) -> dict[str, np.ndarray]:
    """Every input of the split, preprocessed in memory (what the limit loop forwards)."""
    from zoo.embedding.sources import list_input_shards, read_shard_samples

    values = [s[model.input_member] for shard in list_input_shards(str(shards), [split])[0]
              for s in read_shard_samples(shard, frozenset({model.input_member}))]  # fmt: skip
    return model.preprocessor()(values).arrays


def _limit(model: Any, arrays: dict[str, np.ndarray], batch: int) -> float:
    """Items/s of the forward pass alone on in-memory tensors, fixed batches (torch's current threads)."""
    tensors = {k: torch.from_numpy(v) for k, v in arrays.items()}
    n = len(next(iter(tensors.values())))
    start = time.perf_counter()
    with torch.inference_mode():
        for i in range(0, n, batch):
            model.embed_batch({k: v[i : i + batch] for k, v in tensors.items()})
    return n / (time.perf_counter() - start)


def _loop(model: Any, root: Path, split: str, batch: int, out: Path) -> float:
    """Items/s of the straightforward loop: official loader + DataLoader(1 worker) + model + one .npy."""
    start = time.perf_counter()
    prep = model.preprocessor()
    if model.modality == "dna":
        dataset = UncheckedBIOSCAN5M(str(root), split=split, modality=("dna",), target_type="species",
                                     dna_transform=lambda seq: seq)  # fmt: skip
    else:
        from timm.data import create_transform

        dataset = UncheckedBIOSCAN5M(str(root), split=split, modality=("image",), target_type="species",
                                     transform=create_transform(**model.data_config))  # fmt: skip
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch, num_workers=1)
    chunks = []
    with torch.inference_mode():
        for values, _ in loader:
            if model.modality == "dna":
                arrays = {k: torch.from_numpy(v) for k, v in prep(list(values)).arrays.items()}
                chunks.append(model.embed_batch(arrays).numpy())
            else:
                chunks.append(model(values).numpy())
    np.save(out, np.concatenate(chunks).astype(np.float16))
    return len(dataset) / (time.perf_counter() - start)


def _ratio(numerators: list[float], denominators: list[float]) -> dict[str, Any] | float:
    """Per-round ratios as a `spread` (median, min, max), or the one ratio of a single round (`--quick`)."""
    ratios = [a / b for a, b in zip(numerators, denominators, strict=True)]
    return spread(ratios) if len(ratios) >= MIN_RUNS else ratios[0]


def _case(
    name: str, shards: Path, root: Path, split: str, batch: int, work: Path, rounds: int, threads: int
) -> dict[str, Any]:
    """`rounds` runs of the limit, then of the loop, then of the job; each ratio pairs the i-th runs, then is
    summarised. Not interleaved: the loop's DataLoader forks this Ray driver, and a job submitted right after such
    a fork once hung waiting for its first tasks (2026-12-07). DNA's no-dedup job runs once: it is the honesty
    figure beside the headline, not a headline."""
    torch.manual_seed(0)
    model = zoo.create_model(name).eval()
    arrays = _inputs(model, shards, split)

    def job(dedup: bool) -> float:
        torch.set_num_threads(2)
        seconds, items = _job(shards, work / f"store_{name}", name, split, batch, threads, dedup)
        return items / seconds

    torch.set_num_threads(threads)
    runs = {"limit": [_limit(model, arrays, batch) for _ in range(rounds)],
            "loop": [_loop(model, root, split, batch, work / "loop.npy") for _ in range(rounds)]}  # fmt: skip
    runs["job"] = [job(True) for _ in range(rounds)]
    record: dict[str, Any] = {
        "model": name,
        "modality": model.modality,
        "split": split,
        "batch": batch,
        "model_threads": threads,
        "rows": len(next(iter(arrays.values()))),
        "rounds": rounds,
    }
    for measure, rates in runs.items():
        record[measure], record[f"{measure}_runs"] = statistics.median(rates), rates
    record["ratio_vs_limit"] = _ratio(runs["job"], runs["limit"])
    record["ratio_vs_loop"] = _ratio(runs["job"], runs["loop"])
    if model.modality == "dna":
        record["job_no_dedup"] = job(False)
        record["ratio_no_dedup_vs_limit"] = record["job_no_dedup"] / record["limit"]
    return record


def _store_read(store: Path, rounds: int) -> dict[str, Any]:
    """Full-scan GB/s of the store reader vs np.load of the same vectors (both from the page cache)."""
    vectors = read_embeddings(str(store)).vectors
    npy = store.parent / "same.npy"
    np.save(npy, vectors)
    read_embeddings(str(store))
    np.load(npy)

    def rate(fn: Callable[[], Any]) -> float:
        start = time.perf_counter()
        fn()
        return vectors.nbytes / (time.perf_counter() - start) / 1e9

    runs: dict[str, list[float]] = {"store": [], "store_vectors_only": [], "npy": []}
    for _ in range(rounds):  # interleaved, as in `_case`
        runs["store"].append(rate(lambda: read_embeddings(str(store))))
        runs["store_vectors_only"].append(rate(lambda: read_embeddings(str(store), columns=[])))
        runs["npy"].append(rate(lambda: np.load(npy)))
    summary: dict[str, Any] = {"bytes": int(vectors.nbytes)}
    for name, rates in runs.items():
        summary[f"{name}_gbps"], summary[f"{name}_runs"] = statistics.median(rates), rates
    summary["ratio"] = _ratio(runs["store"], runs["npy"])
    summary["ratio_vectors_only"] = _ratio(runs["store_vectors_only"], runs["npy"])
    return summary


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dna-samples", type=int, default=250_000, help="metadata-only release (pretrain ~90%%)")
    p.add_argument(
        "--dna-small-samples",
        type=int,
        default=24_000,
        help="release for BarcodeBERT (train ~4%%: ~1,000 rows, so start-up is a small part)",
    )
    p.add_argument(
        "--image-samples",
        type=int,
        default=8_000,
        help="release with real synthetic photos (the job's ~6 s start-up is ~5%% of a resnet18 run)",
    )
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--quick", action="store_true", help="10k / 600 samples, 1 round")
    p.add_argument("--models", nargs="+", default=[c[0] for c in CASES])
    p.add_argument("--model-threads", type=int, default=1, help="torch threads of the model in all three measures")
    args = p.parse_args(argv)
    tune_malloc(FORWARD, environ=False)  # before any thread starts; Ray's workers must not inherit it
    if args.quick:
        args.dna_samples, args.dna_small_samples, args.image_samples, args.rounds = 10_000, 2_000, 600, 1
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-embed-") as tmp:
        work = Path(tmp)
        sets = {"dna": _release(work, "dna", args.dna_samples, images=False),
                "dna_small": _release(work, "dna_small", args.dna_small_samples, images=False),
                "image": _release(work, "image", args.image_samples, images=True)}  # fmt: skip
        ray.init(num_cpus=args.model_threads + 1, include_dashboard=False, log_to_driver=False)
        for name, modality, split, batch in (c for c in CASES if c[0] in args.models):
            root, shards = sets[modality]
            results.append(_case(name, shards, root, split, batch, work, args.rounds, args.model_threads))
            print(_line(results[-1]), flush=True)
        read = _store_read(work / "store_kmer_freq_k5", max(5, args.rounds)) if "kmer_freq_k5" in args.models else {}
        ray.shutdown()
    if read:
        print(
            f"store full scan {read['store_gbps']:.2f} GB/s ({read['store_vectors_only_gbps']:.2f} vectors only) "
            f"vs np.load {read['npy_gbps']:.2f} GB/s: {spread_text(read['ratio'])} "
            f"({spread_text(read['ratio_vectors_only'])})"
        )
    # Another thread budget is a different measurement: recorded, kept off the dashboard's headline history
    experiment = f"--model-threads {args.model_threads}" if args.model_threads != 1 else ""
    append_result("embed", {"quick": args.quick, "experiment": experiment, "cases": results, "store_read": read})
    return 0


def _line(r: dict[str, Any]) -> str:
    extra = (
        f", no-dedup {r['job_no_dedup']:.0f}/s = {r['ratio_no_dedup_vs_limit']:.2f}x limit"
        if "job_no_dedup" in r
        else ""
    )
    return (f"{r['model']:<22} {r['rows']:>6} rows, {r['rounds']} round(s): job {r['job']:.1f}/s, "
            f"limit {r['limit']:.1f}/s ({spread_text(r['ratio_vs_limit'])}), "
            f"loop {r['loop']:.1f}/s ({spread_text(r['ratio_vs_loop'])}){extra}")  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
