"""The pipeline end to end on a tiny config (zoo/pipeline -> every stage's library function -> the report).

One run per module (`tiny_run`, ~1-3 min on 2 cores): every stage runs, the counts add up from stage to
stage, a rerun does no work, a changed parameter reruns that stage and what follows it, the report renders
in headless Chromium with every image loaded, and (slow) a `kill -9` mid-run resumes to the same bytes.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers_pipeline import STEPS, step_lines, write_tiny_config

from jobs.pipeline import main as pipeline_main
from zoo.embedding import read_store_index
from zoo.pipeline import load_config

REPO = Path(__file__).resolve().parents[3]


def _files(root: Path) -> dict[str, tuple[int, str]]:
    """relative path -> (mtime_ns, sha256) of every file under root."""
    return {
        str(p.relative_to(root)): (p.stat().st_mtime_ns, hashlib.sha256(p.read_bytes()).hexdigest())
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, str]:
    """The tiny pipeline, run once: (root, config path, its stdout)."""
    root = tmp_path_factory.mktemp("pipeline") / "tiny"
    config = write_tiny_config(root)
    out = tmp_path_factory.mktemp("pipeline-out") / "stdout.txt"
    with open(out, "w") as f, _redirect(f):
        assert pipeline_main([str(config)]) == 0
    return root, config, out.read_text()


class _redirect:
    """sys.stdout into a file for the block (capsys is function-scoped; the fixture is per module)."""

    def __init__(self, f: object) -> None:
        self.f, self.saved = f, sys.stdout

    def __enter__(self) -> None:
        sys.stdout = self.f  # type: ignore[assignment]

    def __exit__(self, *exc: object) -> None:
        sys.stdout = self.saved


def test_every_stage_runs_and_the_counts_add_up(tiny_run: tuple[Path, Path, str]) -> None:
    root, _, stdout = tiny_run
    records = {name: json.loads((root / "state" / f"{name}.json").read_text()) for name in STEPS}
    assert [line.split()[0] for line in step_lines(stdout)] == STEPS
    shards = json.loads((root / "shards" / "original_256" / "index.json").read_text())
    evaluated = sum(shards["totals"][s]["written"] for s in ("train", "key_unseen", "test", "test_unseen"))
    assert records["synth"]["items"] == 600
    assert records["shards"]["items"] == sum(t["written"] for t in shards["totals"].values())
    assert records["crop"]["items"] == evaluated  # the crop stage read exactly the evaluation splits
    crops = json.loads((root / "crops" / "cropped_256" / "index.json").read_text())
    cropped = sum(t["written"] for t in crops["totals"].values())
    for name in ("dna", "kmer"):
        store = read_store_index(str(root / "stores" / name))
        assert store["totals"]["rows"] == records[f"embed.{name}"]["items"]
        assert store["totals"]["rows"] + store["totals"].get("rejected", 0) >= cropped > 0
    retrieval = json.loads((root / "eval" / "retrieval.json").read_text())
    assert set(retrieval["pairs"]) == {"dna->dna", "kmer->kmer"}
    assert "ann" in retrieval["pairs"]["kmer->kmer"]
    kmer_genus = retrieval["pairs"]["kmer->kmer"]["grid"]["seen"]["micro"]["genus"]["1"]
    assert kmer_genus > 0.5, kmer_genus  # the k-mer baseline finds the genus of seen species
    for record in records.values():
        assert record["seconds"] > 0 and record["peak_memory_bytes"] > 50 << 20
    # the pretraining ran its 4 steps and the DNA store was embedded with those weights
    assert [json.loads(x)["step"] for x in (root / "run" / "metrics.jsonl").read_text().splitlines()] == [2, 4]
    report = (root / "report" / "index.md").read_text()
    for section in ("Dataset statistics", "contact sheet", "DNA pretraining", "**Top-1**", "clustering", "items/s"):
        assert section in report, section
    for image in ("stats.png", "contact_sheet.png", "loss_curve.png", "retrieval.png", "umap.png"):
        assert f"]({image})" in report and (root / "report" / image).stat().st_size > 5_000, image


def test_a_rerun_does_no_work(tiny_run: tuple[Path, Path, str], capsys: pytest.CaptureFixture[str]) -> None:
    root, config, _ = tiny_run
    before = _files(root)
    assert pipeline_main([str(config)]) == 0
    lines = step_lines(capsys.readouterr().out)
    assert len(lines) == len(STEPS) and all("skipped: complete" in line for line in lines), lines
    assert _files(root) == before  # not one file rewritten


def test_a_changed_parameter_reruns_that_stage_and_what_follows(
    tiny_run: tuple[Path, Path, str], capsys: pytest.CaptureFixture[str]
) -> None:
    root, config, _ = tiny_run
    changed = write_tiny_config(root, **{"n_neighbors = 10": "n_neighbors = 8"})
    assert changed == config
    try:
        assert pipeline_main([str(config)]) == 0
        ran = [line.split()[0] for line in step_lines(capsys.readouterr().out) if "skipped" not in line]
        assert ran == ["clustering", "report"], ran
        assert json.loads((root / "eval" / "clustering.json").read_text())["protocol"]["umap"]["n_neighbors"] == 8
    finally:
        write_tiny_config(root)


def _chromium() -> str:
    """The chromium binary; installed with apt-get when missing and we are root, else the test skips."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        pytest.skip("chromium is not installed and cannot be installed here (needs root and apt-get)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-q", "--no-install-recommends", "chromium"]
    if subprocess.run(install, env=env, capture_output=True).returncode != 0:
        subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True)
        result = subprocess.run(install, env=env, capture_output=True, text=True)
        if result.returncode != 0:
            pytest.skip(f"apt-get install chromium failed: {result.stderr.strip().splitlines()[-1:]}")
    return shutil.which("chromium") or pytest.skip("chromium installed but not on PATH")


#: Appended to a copy of the page: after `load`, record each image's state into the DOM that --dump-dom prints.
_CHECK = """<script>
window.addEventListener("load", () => {
  const images = [...document.images].map(i => ({src: i.getAttribute("src"), ok: i.complete && i.naturalWidth > 0}));
  const out = document.createElement("pre");
  out.id = "image-check";
  out.textContent = JSON.stringify({title: document.title, h2: document.querySelectorAll("h2").length,
                                    tables: document.querySelectorAll("table").length, images});
  document.body.appendChild(out);
});
</script>"""


def test_the_report_renders_in_headless_chromium_with_every_image(
    tiny_run: tuple[Path, Path, str], tmp_path: Path
) -> None:
    root, _, _ = tiny_run
    chromium = _chromium()
    page = root / "report" / "index.html"
    check = root / "report" / ".browser-check.html"  # beside the page, so its relative image names resolve
    check.write_text(page.read_text().replace("</body>", _CHECK + "</body>"))
    try:
        args = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--allow-file-access-from-files",
                f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=10000"]  # fmt: skip
        result = subprocess.run([*args, "--dump-dom", check.as_uri()], capture_output=True, text=True, timeout=120)
        shot = subprocess.run([*args, f"--screenshot={tmp_path / 'page.png'}", "--window-size=1280,4000",
                               page.as_uri()], capture_output=True, text=True, timeout=120)  # fmt: skip
    finally:
        check.unlink()
    assert result.returncode == 0, result.stderr[-2000:]
    start = result.stdout.index('<pre id="image-check">') + len('<pre id="image-check">')
    state = json.loads(result.stdout[start : result.stdout.index("</pre>", start)].replace("&quot;", '"'))
    assert state["title"] == load_config(tiny_run[1]).report.title  # type: ignore[union-attr]
    assert state["h2"] >= 6 and state["tables"] >= 3
    assert len(state["images"]) == 5 and all(image["ok"] for image in state["images"]), state["images"]
    assert shot.returncode == 0 and (tmp_path / "page.png").stat().st_size > 50_000


def _deterministic(root: Path) -> dict[str, str]:
    """sha256 of the outputs a rerun must reproduce byte for byte: every tar, Parquet file, FAISS index, table and
    rejects list of the release, shards, crops, k-mer store and its index.

    Left out: the `index.json` manifests (they name the run's own paths, so the two runs' folders differ, hence
    also the digests of upstream manifests they record, and the index build's timings); pretraining (a resumed
    run continues from its checkpoint, not bit for bit) and what reads it, the evaluations, the report and the
    stage records (timings).
    """
    keep = ("release/", "shards/", "crops/", "stores/kmer/", "indices/kmer/")
    return {
        rel: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != "index.json" and (rel := str(p.relative_to(root))).startswith(keep)
    }


@pytest.mark.slow
def test_kill_9_mid_run_then_rerun_gives_the_same_results(tiny_run: tuple[Path, Path, str], tmp_path: Path) -> None:
    """The pipeline (driver + embedded Ray, one process group) is SIGKILLed once the crop stage has finished;
    the rerun skips the finished stages and ends with the bytes of the uninterrupted run."""
    whole = tiny_run[0]
    root = tmp_path / "tiny"
    config = write_tiny_config(root)
    command = [sys.executable, "-m", "jobs.pipeline", str(config)]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("RAY_ADDRESS", None)
    proc = subprocess.Popen(command, env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)  # fmt: skip
    deadline = time.monotonic() + 600
    while not (root / "state" / "crop.json").exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(2)  # into the pretraining
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (root / "state" / "report.json").exists()
    result = subprocess.run(command, env=env, cwd=REPO, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    skipped = [line.split()[0] for line in step_lines(result.stdout) if "skipped: complete" in line]
    assert skipped[:3] == ["synth", "shards", "crop"], result.stdout
    expected = _deterministic(whole)
    assert len(expected) > 50 and _deterministic(root) == expected
    assert (root / "report" / "index.html").exists()
