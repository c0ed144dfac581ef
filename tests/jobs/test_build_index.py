"""Tests of `bioscan-stream index` / `search` (jobs/build_index.py, jobs/search_index.py -> zoo.indices).

In-process `main(argv)` runs on small clustered stores (tests/helpers_store.py), the error exits, and one
`ray job submit` of a sharded build against the session's `ray start --head` node.
"""

from __future__ import annotations

import json
from pathlib import Path

import faiss
import pytest
from helpers_ray import RayHead
from helpers_store import clustered_vectors, write_test_store

from jobs import build_index, search_index
from jobs.cli import main as cli

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("index-job")
    x = clustered_vectors(2600, 24, clusters=20, seed=5)
    write_test_store(root / "db", x[:2500], [f"DB{i:04d}" for i in range(2500)], "train", rows_per_file=1000)
    write_test_store(root / "q", x[2500:], [f"Q{i:03d}" for i in range(100)], "test")
    return root / "db", root / "q"


def test_index_then_search(stores: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db, queries = stores
    out = tmp_path / "ix"
    assert cli(["index", str(db), "--out", str(out), "--factory", "IVF16,Flat", "--threads", "1"]) == 0
    meta = json.loads(capsys.readouterr().out)
    assert meta["factory"] == "IVF16,Flat" and meta["recall"]["meets_target"] and meta["n"] == 2500
    assert faiss.read_index(str(out / "index.faiss")).ntotal == 2500
    assert search_index.main([str(out), "--store", str(queries), "--k", "5", "--out", str(tmp_path / "n.jsonl")]) == 0
    rows = [json.loads(line) for line in (tmp_path / "n.jsonl").read_text().splitlines()]
    assert len(rows) == 100 and rows[0]["query"] == "Q000" and len(rows[0]["neighbours"]) == 5
    assert (
        all(n.startswith("DB") for n in rows[0]["neighbours"]) and rows[0]["scores"] == sorted(rows[0]["scores"])[::-1]
    )
    assert search_index.main([str(out), "--store", str(queries), "--k", "3", "--nprobe", "16"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 100


def test_bad_input_exits_2_with_a_message(
    stores: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db, queries = stores
    out = tmp_path / "ix"
    assert build_index.main([str(db), "--out", str(out), "--factory", "HNSW8,PQ4"]) == 2
    assert "unsupported factory" in capsys.readouterr().err
    assert build_index.main([str(tmp_path / "nothing"), "--out", str(out)]) == 2
    assert "not an embedding store" in capsys.readouterr().err
    assert build_index.main([str(db), "--out", str(out), "--factory", "Flat", "--threads", "1"]) == 0
    other = tmp_path / "other"
    write_test_store(other, clustered_vectors(10, 24), [f"O{i}" for i in range(10)], "test", encoder={"name": "x"})
    capsys.readouterr()
    assert search_index.main([str(out), "--store", str(other)]) == 2
    assert "encoder" in capsys.readouterr().err


def test_ray_job_submit_sharded(ray_head: RayHead, stores: tuple[Path, Path], tmp_path: Path) -> None:
    db, _ = stores
    out = tmp_path / "ix"
    command = ["python", "-m", "jobs.build_index", str(db), "--out", str(out), "--factory", "IVF16,SQ8"]
    result = ray_head.submit([*command, "--num-shards", "3", "--threads", "1"], working_dir=REPO)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    meta = json.loads((out / "index.json").read_text())
    assert meta["n"] == 2500 and len(meta["shards"]) == 3 and not (out / "_partial").exists()


def test_kill_9_then_rerun_gives_the_same_index(tmp_path: Path) -> None:
    """The build (driver + its embedded Ray, one process group) is killed with SIGKILL once a shard is on disk;
    the rerun skips the finished shards and writes the same index and ids as an uninterrupted build."""
    import os
    import signal
    import subprocess
    import sys
    import time

    x = clustered_vectors(60_000, 64, clusters=200, seed=7)
    write_test_store(tmp_path / "db", x, [f"DB{i:05d}" for i in range(60_000)], "train", rows_per_file=10_000)
    args = [sys.executable, "-m", "jobs.build_index", str(tmp_path / "db"), "--factory", "IVF64,Flat"]
    args += ["--num-shards", "6", "--threads", "1", "--num-cpus", "1"]
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    subprocess.run([*args, "--out", str(whole)], env=env, cwd=REPO, check=True, capture_output=True, timeout=600)
    proc = subprocess.Popen([*args, "--out", str(killed)], env=env, cwd=REPO, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.monotonic() + 300
    while not list(killed.rglob("shard-*.faiss")) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert list(killed.rglob("shard-*.faiss")) and not (killed / "index.json").exists()
    subprocess.run([*args, "--out", str(killed)], env=env, cwd=REPO, check=True, capture_output=True, timeout=600)
    meta = json.loads((killed / "index.json").read_text())
    assert any(s["skipped"] for s in meta["shards"]) and meta["n"] == 60_000
    for name in ("index.faiss", "ids.parquet"):
        assert (killed / name).read_bytes() == (whole / name).read_bytes(), name
