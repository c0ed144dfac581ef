"""Tests of `bioscan-stream embed` (jobs/embed.py -> zoo.embedding): the store, dedup, resume, bad input, Ray jobs.

Input: the session's 20k synthetic release as shards (`synth_shards`: DNA, labels and 1-pixel stub images
for train / test / test_unseen). One in-process Ray runtime is shared by the module (`ray_local`); the
kill -9 and `ray job submit` tests run against the session's `ray start --head` node.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path

import duckdb
import numpy as np
import pyarrow.parquet as pq
import pytest
import ray
from helpers_ray import RayHead

import zoo
from bioscan_stream.storage import put_file
from bioscan_stream.stream.stages import CorruptShardError
from jobs.embed import main
from zoo.embedding import EmbedConfig, EncoderMismatchError, embed_shards, read_embeddings, read_store_index

REPO = Path(__file__).resolve().parents[2]
SPLITS = ("train", "test", "test_unseen")
#: A BarcodeBERT small enough for CPU tests (k=4, 2 layers, 2 heads, 32-d).
TINY_BB = ["--model", "4-2-2", "--set", "hidden_size=32", "--set", "intermediate_size=64"]


@pytest.fixture(scope="module")
def ray_local() -> Iterator[None]:
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def _run(shards: Path, out: Path, *extra: str) -> int:
    return main([str(shards / "cropped_256"), "--out", str(out), "--splits", *SPLITS, "--no-progress", *extra])


def _input_keys(shards: Path) -> list[str]:
    keys = []
    index = json.loads((shards / "cropped_256" / "index.json").read_text())
    for split in SPLITS:
        for entry in index["splits"][split]["shards"]:
            with tarfile.open(shards / "cropped_256" / entry["path"]) as tar:
                keys += list(dict.fromkeys(m.name.split(".", 1)[0] for m in tar.getmembers()))
    return keys


def _store_bytes(store: Path) -> dict[str, str]:
    return {
        str(p.relative_to(store)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(store.rglob("*"))
        if p.is_file()
    }


def test_kmer_store_has_every_input_row_or_reject(ray_local: None, synth_shards: Path, tmp_path: Path) -> None:
    store = tmp_path / "kmer"
    assert _run(synth_shards, store, "--model", "kmer_freq_k4") == 0
    index = read_store_index(str(store))
    rejects = [json.loads(line) for line in (store / "rejects.jsonl").read_text().splitlines()]
    table = read_embeddings(str(store))
    keys = _input_keys(synth_shards)
    assert sorted(table.strings("processid")) == sorted(set(keys) - {r["processid"] for r in rejects})
    assert index["totals"]["read"] == len(keys) == len(table) + len(rejects)
    assert index["dim"] == 256 and index["modality"] == "dna" and index["encoder"]["name"] == "kmer_freq_k4"
    assert table.vectors.dtype == np.float16 and table.vectors.shape == (len(table), 256)
    assert np.allclose(np.linalg.norm(table.vectors.astype(np.float32), axis=1), 1, atol=2e-3)
    # rows keep the shard order: the train file's processids are the train shard's keys, in order
    first = index["splits"]["train"]["files"][0]
    with tarfile.open(synth_shards / "cropped_256" / first["source"]) as tar:
        shard_keys = list(dict.fromkeys(m.name.split(".", 1)[0] for m in tar.getmembers()))
    assert pq.read_table(store / first["path"]).column("processid").to_pylist() == shard_keys
    for entry in (f for s in index["splits"].values() for f in s["files"]):
        assert hashlib.sha256((store / entry["path"]).read_bytes()).hexdigest() == entry["sha256"]


@pytest.mark.parametrize("layout", ["binary", "list"])
def test_store_reads_with_plain_pyarrow_and_duckdb(
    ray_local: None, synth_shards: Path, tmp_path: Path, layout: str
) -> None:
    store = tmp_path / "kmer"
    assert _run(synth_shards, store, "--model", "kmer_freq_k4", "--dtype", "float32", "--layout", layout) == 0
    ours = read_embeddings(str(store), splits=["test"], columns=["processid", "species_code"])
    files = sorted((store / "test").glob("*.parquet"))
    plain = pq.read_table(files).to_pydict()
    assert plain["processid"] == ours.strings("processid").tolist()
    vectors = [np.frombuffer(v, "<f4") if layout == "binary" else v for v in plain["embedding"]]
    assert np.array_equal(np.asarray(vectors, np.float32), ours.vectors)
    assert plain["species_code"] == ours.codes("species").tolist()
    files_glob = f"{store}/test/*.parquet"
    sql = f"SELECT processid, species, embedding FROM read_parquet('{files_glob}', filename=true, file_row_number=true)"
    rows = duckdb.sql(sql + " ORDER BY filename, file_row_number").fetchall()
    assert [r[0] for r in rows] == plain["processid"]
    vectors = [np.frombuffer(r[2], "<f4") if layout == "binary" else r[2] for r in rows]
    assert np.array_equal(np.asarray(vectors, np.float32), ours.vectors)


def test_dna_dedup_gives_the_same_vectors_as_no_dedup(ray_local: None, synth_shards: Path, tmp_path: Path) -> None:
    with_dedup, without = tmp_path / "dedup", tmp_path / "all"
    assert _run(synth_shards, with_dedup, *TINY_BB, "--batch-size", "16") == 0
    assert _run(synth_shards, without, *TINY_BB, "--batch-size", "16", "--no-dedup") == 0
    a, b = read_embeddings(str(with_dedup)), read_embeddings(str(without))
    assert a.strings("processid").tolist() == b.strings("processid").tolist()
    assert np.array_equal(a.vectors, b.vectors)  # bit for bit: batches are padded, rows never interact
    # the stores are byte-identical too: nothing in them records how a vector was computed
    assert _store_bytes(with_dedup) == _store_bytes(without)


def test_rerun_skips_finished_files_and_refuses_another_encoder(
    ray_local: None, synth_shards: Path, tmp_path: Path
) -> None:
    store = tmp_path / "kmer"
    config = EmbedConfig(str(synth_shards / "cropped_256"), str(store), "kmer_freq_k4", splits=SPLITS, progress=False)
    first = embed_shards(config)
    before = _store_bytes(store)
    again = embed_shards(config)
    assert again.files_written == 0 and again.files_kept == first.files_written and again.forward_rows == 0
    assert _store_bytes(store) == before
    with pytest.raises(EncoderMismatchError, match="another encoder"):
        embed_shards(EmbedConfig(config.shards, config.out, "kmer_freq_k5", splits=SPLITS, progress=False))
    assert _store_bytes(store) == before
    embed_shards(EmbedConfig(config.shards, config.out, "kmer_freq_k5", splits=SPLITS, progress=False, overwrite=True))
    assert read_store_index(str(store))["dim"] == 1024


def _tamper(shards: Path, dest: Path, split: str, *, member: str, data: bytes | None) -> tuple[Path, str]:
    """Copy the shard set; replace one sample's `member` in the first shard of `split` (None: truncate the tar)."""
    import shutil

    shutil.copytree(shards / "cropped_256", dest)
    index = json.loads((dest / "index.json").read_text())
    entry = index["splits"][split]["shards"][0]
    path = dest / entry["path"]
    if data is None:
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
        return dest, entry["path"]
    with tarfile.open(path) as tar:
        members = [(m, tar.extractfile(m).read()) for m in tar.getmembers()]  # type: ignore[union-attr]
    victim = next(m.name for m, _ in members if m.name.endswith("." + member)).split(".", 1)[0]
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for info, payload in members:
            if info.name == f"{victim}.{member}":
                payload, info.size = data, len(data)
            tar.addfile(info, io.BytesIO(payload))
    path.write_bytes(out.getvalue())
    entry["sha256"], entry["bytes"] = hashlib.sha256(out.getvalue()).hexdigest(), len(out.getvalue())
    (dest / "index.json").write_text(json.dumps(index))
    return dest, victim


def test_undecodable_image_and_empty_barcode_are_rejects(ray_local: None, synth_shards: Path, tmp_path: Path) -> None:
    pytest.importorskip("timm")
    bad_image, victim = _tamper(synth_shards, tmp_path / "img", "test", member="jpg", data=b"not a jpeg at all")
    store = tmp_path / "store"
    config = EmbedConfig(str(bad_image), str(store), "resnet18", splits=("test",), batch_size=8, progress=False)
    report = embed_shards(config)
    rejects = [json.loads(line) for line in (store / "rejects.jsonl").read_text().splitlines()]
    assert [(r["processid"], r["reason"]) for r in rejects] == [(victim, "undecodable_image")]
    assert report.rows + report.rejected == read_store_index(str(store))["totals"]["read"]
    empty_dna, victim = _tamper(synth_shards, tmp_path / "dna", "test", member="dna.txt", data=b"")
    store = tmp_path / "dna_store"
    embed_shards(EmbedConfig(str(empty_dna), str(store), "kmer_freq_k4", splits=("test",), progress=False))
    rejects = [json.loads(line) for line in (store / "rejects.jsonl").read_text().splitlines()]
    assert [(r["processid"], r["reason"]) for r in rejects] == [(victim, "empty_barcode")]


def test_corrupt_shard_is_named_and_nothing_is_written(ray_local: None, synth_shards: Path, tmp_path: Path) -> None:
    broken, path = _tamper(synth_shards, tmp_path / "broken", "test", member="jpg", data=None)
    store = tmp_path / "store"
    with pytest.raises(Exception, match=path.split("/")[-1]) as error:
        embed_shards(EmbedConfig(str(broken), str(store), "kmer_freq_k4", splits=SPLITS, progress=False))
    assert "corrupt shard" in str(error.value) or isinstance(error.value, CorruptShardError)
    assert not store.exists() or not any(p.is_file() for p in store.rglob("*"))


def test_bad_model_names_list_the_known_ones(
    synth_shards: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(KeyError, match="kmer_freq_k4"):
        zoo.create_model("no_such_encoder")
    assert _run(synth_shards, tmp_path / "s", "--model", "no_such_encoder") == 2
    assert "known:" in capsys.readouterr().err


@pytest.mark.s3
def test_s3_in_and_out(ray_local: None, synth_shards: Path, s3_bucket: str) -> None:
    source = synth_shards / "cropped_256"
    for path in source.rglob("*"):
        if path.is_file() and "_journal" not in path.parts:
            put_file(path, f"{s3_bucket}/shards/{path.relative_to(source)}")
    store = f"{s3_bucket}/store"
    task_env = tuple((k, v) for k, v in os.environ.items() if k.startswith("AWS_"))  # workers predate the server
    config = EmbedConfig(
        f"{s3_bucket}/shards", store, "kmer_freq_k4", splits=("test",), progress=False, task_env=task_env
    )
    embed_shards(config)
    remote = read_embeddings(store)
    assert len(remote) == read_store_index(store)["totals"]["rows"] > 0
    assert remote.vectors.shape[1] == 256


def test_kill_9_then_rerun_is_byte_identical(synth_shards: Path, tmp_path: Path) -> None:
    """The job (driver + its embedded Ray, one process group) is killed with SIGKILL once some files are
    written; the rerun finishes the same bytes as an uninterrupted run."""
    args = [str(synth_shards / "cropped_256"), "--splits", *SPLITS, "--no-progress", *TINY_BB]
    args += ["--batch-size", "4", "--num-cpus", "2"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("RAY_ADDRESS", None)
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    run = [sys.executable, "-m", "jobs.embed"]
    subprocess.run([*run, *args, "--out", str(whole)], env=env, cwd=REPO, check=True, capture_output=True, timeout=600)
    total = len(list(whole.rglob("*.parquet")))
    proc = subprocess.Popen(
        [*run, *args, "--out", str(killed)], env=env, cwd=REPO, stderr=subprocess.DEVNULL, start_new_session=True
    )
    deadline = time.monotonic() + 300
    while not list(killed.rglob("*.parquet")) and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    partial = len(list(killed.rglob("*.parquet")))
    assert 0 < partial < total and not (killed / "index.json").exists()
    subprocess.run([*run, *args, "--out", str(killed)], env=env, cwd=REPO, check=True, capture_output=True, timeout=600)
    assert _store_bytes(killed) == _store_bytes(whole)


def test_ray_job_submit(ray_head: RayHead, synth_shards: Path, tmp_path: Path) -> None:
    store = tmp_path / "store"
    command = ["python", "-m", "jobs.embed", str(synth_shards / "cropped_256"), "--out", str(store)]
    result = ray_head.submit(
        [*command, "--model", "kmer_freq_k5", "--splits", "test", "--no-progress"], working_dir=REPO
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert read_store_index(str(store))["encoder"]["name"] == "kmer_freq_k5"
