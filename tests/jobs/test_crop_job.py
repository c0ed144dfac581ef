"""Tests of `bioscan-stream crop` (jobs/crop.py -> zoo.cropping): shards, bbox table, presets, bad input, resume, Ray.

Input: a 24-record synthetic release with `original_full` photos (true boxes in its bbox table), converted to
shards once per module; for a release-tree input, a 24-record `original_256` release with one image missing and
one not a JPEG, read as a tree and as the official zip, and compared with cropping its converted shards. One
in-process Ray runtime is shared by the module (`ray_local`); the kill -9 and `ray job submit` tests (marked slow)
run the job as a process, the latter on the session's `ray start --head`.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import ray
import torch
from helpers_detr import TINY_DETR
from helpers_ray import RayHead
from PIL import Image

from bioscan_stream.constants import BBOX_TSV, IMAGES_DIR
from bioscan_stream.crop import crop_with_preset
from bioscan_stream.layout import image_relpath, zip_package_names
from bioscan_stream.metadata import read_bbox, read_metadata
from bioscan_stream.schema import IMAGE, METADATA
from bioscan_stream.shards.convert import ConvertConfig, convert_release
from bioscan_stream.shards.verify import verify_shards
from bioscan_stream.sizes import size_fields
from bioscan_stream.storage import put_file, read_bytes, url_exists
from bioscan_stream.synth.images import encode_jpeg
from jobs.crop import main
from zoo.cropping import CropConfig, crop_shards
from zoo.cropping.shard import CropSettings, RowDetection, crop_shard, original_box, original_size
from zoo.embedding.sources import list_input_shards, read_shard_samples

REPO = Path(__file__).resolve().parents[2]
SAMPLES = 24


@pytest.fixture(scope="module")
def ray_local() -> Iterator[None]:
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def originals(ray_local: None, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """OUT/original_full of a 24-record synthetic release (~10 s); its release root is OUT/../release."""
    from bioscan_stream.synth.release import write_release

    tmp = tmp_path_factory.mktemp("crop-originals")
    write_release(tmp / "release", samples=SAMPLES, seed=1, packages=("original_full",), workers=1)
    shards = tmp / "shards"
    convert_release(ConvertConfig(str(tmp / "release"), str(shards), package="original_full", dna=False, min_shards=2))
    return tmp / "shards" / "original_full"


class NeedsUnpickling:
    """Only full unpickling rebuilds this (like a Lightning checkpoint's pickled hyper-parameters)."""


def _config(shards: Path, out: Path, **options: object) -> CropConfig:
    return CropConfig(str(shards), str(out), progress=False, **options)  # type: ignore[arg-type]


def _tree_bytes(root: Path) -> dict[str, str]:
    files = sorted(p for p in root.rglob("*") if p.is_file())
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def _crops_bytes(out: Path) -> dict[str, str]:
    """`_tree_bytes` of what depends on the crops only: not the manifests' `source` nor the journal's input digest."""
    return {k: v for k, v in _tree_bytes(out).items() if not k.endswith("index.json") and not k.startswith("_journal")}


@pytest.fixture(scope="module")
def release_256(ray_local: None, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """A 24-record `original_256` release tree with one image deleted and one replaced by text (~3 s), and the
    expected reject reason of those two records."""
    from bioscan_stream.synth.release import write_release

    root = tmp_path_factory.mktemp("crop-release") / "release"
    table = write_release(root, samples=SAMPLES, seed=2, packages=("original_256",), workers=1)
    (missing, split_a), (broken, split_b) = [(r["processid"], r["split"]) for r in table.slice(3, 2).to_pylist()]
    (root / image_relpath(missing, split_a, "original_256")).unlink()
    (root / image_relpath(broken, split_b, "original_256")).write_bytes(b"not a jpeg at all")
    return root, {missing: "missing_image", broken: "unreadable_image"}


@pytest.fixture(scope="module")
def release_crops(release_256: tuple[Path, dict[str, str]], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The crop job's output for the release tree (`--package original_256`)."""
    out = tmp_path_factory.mktemp("crop-release-out")
    crop_shards(_config(release_256[0], out, package="original_256"))
    return out


def test_a_release_tree_crops_like_its_converted_shards(
    release_256: tuple[Path, dict[str, str]], release_crops: Path, tmp_path: Path
) -> None:
    root, damaged = release_256
    convert_release(ConvertConfig(str(root), str(tmp_path / "shards"), package="original_256", dna=False))
    from_shards = tmp_path / "from_shards"
    crop_shards(_config(tmp_path / "shards" / "original_256", from_shards))
    crops, expected = _crops_bytes(release_crops), _crops_bytes(from_shards)
    rejects_file = "cropped_256/rejects.jsonl"
    assert crops.pop(rejects_file) == crops.pop("cropped/rejects.jsonl") != expected.pop(rejects_file)
    assert crops == {k: v for k, v in expected.items() if k != "cropped/rejects.jsonl"}  # names, order, crops, tables
    # the records the shards lack are the release's rejects, reported as the converter reports them
    converter_rejects = (tmp_path / "shards" / "original_256" / "rejects.jsonl").read_bytes()
    assert (release_crops / rejects_file).read_bytes() == converter_rejects
    index = json.loads((release_crops / "cropped_256" / "index.json").read_text())
    converted = json.loads((tmp_path / "shards" / "original_256" / "index.json").read_text())
    assert [s["path"] for e in index["splits"].values() for s in e["shards"]] == [
        s["path"] for e in converted["splits"].values() for s in e["shards"]
    ]
    rows = read_metadata(root).to_pylist()
    assert {split: t["read"] for split, t in index["totals"].items()} == {
        split: sum(r["split"] == split for r in rows) for split in index["totals"]
    }  # every metadata row of every split: a crop or a reject
    rejects = [json.loads(line) for line in (release_crops / "cropped_256" / "rejects.jsonl").read_text().splitlines()]
    assert {r["processid"]: r["reason"] for r in rejects} == damaged
    assert index["source"]["root"] == str(root) and index["source"]["package"] == "original_256"
    assert verify_shards(str(release_crops / "cropped_256")).ok and verify_shards(str(release_crops / "cropped")).ok
    before = _tree_bytes(release_crops)
    again = crop_shards(_config(root, release_crops, package="original_256"))  # a rerun keeps every shard
    assert again.shards_written == 0 and again.shards_kept == len(list((release_crops / "_journal").glob("*.json")))
    assert _tree_bytes(release_crops) == before
    (release_crops / "cropped" / "train" / "train-000001.tar").unlink()  # a lost output: only its shard is redone
    again = crop_shards(_config(root, release_crops, package="original_256"))
    assert again.shards_written == 1 and _tree_bytes(release_crops) == before


def test_a_release_read_from_its_zip_crops_like_its_tree(
    release_256: tuple[Path, dict[str, str]], release_crops: Path, tmp_path: Path
) -> None:
    tree, damaged = release_256
    root = tmp_path / "zipped"
    shutil.copytree(tree, root, ignore=shutil.ignore_patterns("images"))  # metadata only
    with zipfile.ZipFile(root / zip_package_names("original_256")[0], "w") as archive:
        for path in sorted((tree / IMAGES_DIR).rglob("*.jpg")):
            archive.write(path, str(path.relative_to(tree)))
    out = tmp_path / "out"
    report = crop_shards(_config(root, out, package="original_256", packages=("cropped_256",)))
    assert report.read == SAMPLES and report.rejected == len(damaged)

    def tars(folder: Path) -> dict[str, str]:
        return {k: v for k, v in _tree_bytes(folder / "cropped_256").items() if k.endswith(".tar")}

    assert tars(out) == tars(release_crops)
    assert (out / BBOX_TSV).read_bytes() == (release_crops / BBOX_TSV).read_bytes()
    rejects = [json.loads(line) for line in (out / "cropped_256" / "rejects.jsonl").read_text().splitlines()]
    assert {r["processid"]: r["reason"] for r in rejects} == damaged


def _samples(shard_set: Path) -> dict[str, dict[str, bytes]]:
    """Every sample of a shard set by processid (members as bytes)."""
    found = {}
    shards, _ = list_input_shards(str(shard_set), tuple(json.loads((shard_set / "index.json").read_text())["splits"]))
    for shard in shards:
        for sample in read_shard_samples(shard, frozenset({IMAGE, METADATA})):
            found[sample["__key__"]] = sample
    return found


def test_job_writes_verified_shards_bbox_table_and_review(originals: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    report = crop_shards(_config(originals, out))
    assert report.read == SAMPLES == report.cropped + report.rejected and report.shards_kept == 0
    for package in ("cropped", "cropped_256"):
        checked = verify_shards(str(out / package))
        assert checked.ok, checked.problems
        assert checked.samples == report.cropped
    boxes = read_bbox(out).to_pylist()
    assert len(boxes) == report.cropped
    inputs, crops, small = _samples(originals), _samples(out / "cropped"), _samples(out / "cropped_256")
    truth = {row["processid"]: row for row in read_bbox(originals.parents[1] / "release").to_pylist()}
    ious = []
    for row in boxes:
        box = (row["x0"], row["y0"], row["x1"], row["y1"])
        assert (row["area_fraction"], row["scale_factor"]) == size_fields(box, (1024, 768))
        with Image.open(io.BytesIO(inputs[row["processid"]][IMAGE])) as original:
            cropped, cropped_256 = crop_with_preset(original.convert("RGB"), box, "bioscan5m")
        assert crops[row["processid"]][IMAGE] == encode_jpeg(cropped)  # the crop is crop.py's, encoded once
        assert small[row["processid"]][IMAGE] == encode_jpeg(cropped_256)
        metadata = json.loads(small[row["processid"]][METADATA])
        assert (metadata["area_fraction"], metadata["scale_factor"]) == (row["area_fraction"], row["scale_factor"])
        true = truth[row["processid"]]
        t = (true["x0"], true["y0"], true["x1"], true["y1"])
        inter = max(0, min(box[2], t[2]) - max(box[0], t[0])) * max(0, min(box[3], t[3]) - max(box[1], t[1]))
        ious.append(inter / ((box[2] - box[0]) * (box[3] - box[1]) + (t[2] - t[0]) * (t[3] - t[1]) - inter))
    assert np.mean(ious) >= 0.8  # the classical detector on synthetic originals (its own tests hold it to 0.9)
    review = [line.split("\t") for line in (out / "review.tsv").read_text().splitlines()]
    scores = [float(r[2]) for r in review[1:]]
    assert review[0][:3] == ["processid", "split", "score"] and scores == sorted(scores) and len(scores) == len(boxes)
    assert (out / "contact_sheet.png").read_bytes().startswith(b"\x89PNG")
    before = _tree_bytes(out)
    again = crop_shards(_config(originals, out))
    assert again.shards_written == 0 and again.shards_kept == report.shards_written
    assert _tree_bytes(out) == before


def _tamper(shards: Path, dest: Path, replacements: list[bytes]) -> tuple[Path, list[str]]:
    """Copy the shard set; replace the first images of its first shard with `replacements`; fix the manifest."""
    shutil.copytree(shards, dest)
    index = json.loads((dest / "index.json").read_text())
    entry = next(e for split in index["splits"].values() for e in split["shards"])
    path = dest / entry["path"]
    with tarfile.open(path) as tar:
        members = [(m, tar.extractfile(m).read()) for m in tar.getmembers()]  # type: ignore[union-attr]
    victims = list(dict.fromkeys(m.name.split(".", 1)[0] for m, _ in members))[: len(replacements)]
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for info, payload in members:
            key, ext = info.name.split(".", 1)
            if ext == IMAGE and key in victims:
                payload = replacements[victims.index(key)]
                info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    path.write_bytes(out.getvalue())
    entry["sha256"], entry["bytes"] = hashlib.sha256(out.getvalue()).hexdigest(), len(out.getvalue())
    (dest / "index.json").write_text(json.dumps(index))
    return dest, victims


def test_bad_images_are_rejects_and_the_bioscan1m_preset_keeps_the_expanded_box(
    originals: Path, tmp_path: Path
) -> None:
    black = encode_jpeg(Image.new("RGB", (1024, 768), (0, 0, 0)))
    grey = encode_jpeg(Image.new("RGB", (1024, 768), (128, 128, 128)))
    shards, victims = _tamper(originals, tmp_path / "bad", [b"not a jpeg at all", black, grey])
    out = tmp_path / "out"
    report = crop_shards(_config(shards, out, preset="bioscan1m", packages=("cropped_256",)))
    rejects = [json.loads(line) for line in (out / "cropped_256" / "rejects.jsonl").read_text().splitlines()]
    reasons = {r["processid"]: r["reason"] for r in rejects}
    assert reasons == dict(zip(victims, ["unreadable_image", "no_detection", "no_detection"], strict=True))
    assert all(r["detail"] for r in rejects) and "uniform" in rejects[1]["detail"]
    assert report.cropped + report.rejected == report.read == SAMPLES and verify_shards(str(out / "cropped_256")).ok
    assert not (out / "cropped").exists()
    inputs, small = _samples(shards), _samples(out / "cropped_256")
    ratios = []
    for row in read_bbox(out).to_pylist():
        box = (row["x0"], row["y0"], row["x1"], row["y1"])
        with Image.open(io.BytesIO(inputs[row["processid"]][IMAGE])) as original:
            _, expected = crop_with_preset(original.convert("RGB"), box, "bioscan1m")
        assert small[row["processid"]][IMAGE] == encode_jpeg(expected) and min(expected.size) == 256
        ratios.append(expected.width / expected.height)
    assert len(ratios) == report.cropped and any(abs(r - 4 / 3) > 0.05 for r in ratios)  # no 4:3, no rotation


def test_box_outside_the_image_is_a_reject_and_a_partly_outside_box_is_clipped(originals: Path, tmp_path: Path) -> None:
    shards, _ = list_input_shards(str(originals), ("pretrain",))
    shard = shards[0]
    settings = CropSettings(str(tmp_path), ("cropped_256",), "bioscan5m", "original_full", "test")
    rows = [RowDetection(0, (-80.0, -60.0, -10.0, -5.0), 0.9), RowDetection(1, (-100.0, 700.0, 200.0, 900.0), 0.8)]
    rows += [RowDetection(r, (300.0, 200.0, 600.0, 500.0), 0.7) for r in range(2, shard.samples)]
    made = crop_shard(shard, rows, settings)
    assert [(r.reason, r.detail.split(" ")[0]) for r in made.rejects] == [("box_outside_image", "box")]
    clipped = made.boxes[0]
    assert (clipped.x0, clipped.y0, clipped.x1, clipped.y1) == (0, 700, 200, 768)
    assert made.shards["cropped_256"].samples == shard.samples - 1


def test_original_256_boxes_are_reported_in_original_pixels() -> None:
    assert original_size((341, 256), "original_256") == (1024, 768)
    assert original_size((256, 341), "original_256") == (768, 1023)  # a portrait one: scaled back by 3
    assert original_size((341, 256), "original_full") == (341, 256)
    assert original_box((100.2, 50, 200, 150), (341, 256), (1024, 768)) == (301, 150, 601, 450)
    assert original_box((-5, -5, 400, 300), (341, 256), (1024, 768)) == (0, 0, 1024, 768)


def test_bad_arguments_fail_clearly(originals: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = str(tmp_path / "out")
    assert main([str(originals), "--out", out, "--detector", "detr", "--checkpoint", str(tmp_path / "no.ckpt")]) == 2
    assert "does not exist" in capsys.readouterr().err
    pickled = tmp_path / "pickled.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": NeedsUnpickling()}, pickled)
    assert main([str(originals), "--out", out, "--detector", "detr", "--checkpoint", str(pickled)]) == 2
    assert "weights_only" in capsys.readouterr().err
    assert main([str(originals), "--out", out, "--packages", "cropped_512"]) == 2
    assert "choose from" in capsys.readouterr().err
    assert main([str(tmp_path / "nothing"), "--out", out]) == 2
    assert "no shard manifest" in capsys.readouterr().err
    release = str(originals.parents[1] / "release")
    assert main([release, "--out", out]) == 2
    assert "is a release root: name its images with --package original_full|original_256" in capsys.readouterr().err
    assert main([release, "--package", "original_256", "--out", out]) == 2
    assert "no images of package 'original_256'" in capsys.readouterr().err
    assert main([release, "--package", "original_full", "--splits", "trian", "--out", out]) == 2
    assert "unknown split(s) ['trian']" in capsys.readouterr().err
    assert not Path(out).exists()


def test_detr_through_the_job(originals: Path, tmp_path: Path) -> None:
    from zoo.detectors.detr import load_detr

    load_detr(None, architecture=TINY_DETR).save_pretrained(tmp_path / "tiny_detr")
    out = tmp_path / "out"
    args = [str(originals), "--out", str(out), "--detector", "detr", "--checkpoint", str(tmp_path / "tiny_detr")]
    assert main([*args, "--splits", "train", "--packages", "cropped_256", "--batch-size", "4", "--no-progress"]) == 0
    index = json.loads((out / "cropped_256" / "index.json").read_text())
    assert index["parameters"]["detector"]["name"] == "detr" and verify_shards(str(out / "cropped_256")).ok
    assert len(read_bbox(out)) == index["totals"]["train"]["written"] > 0


@pytest.mark.s3
def test_s3_in_and_out(originals: Path, s3_bucket: str) -> None:
    for path in originals.rglob("*"):
        if path.is_file() and "_journal" not in path.parts:
            put_file(path, f"{s3_bucket}/shards/{path.relative_to(originals)}")
    task_env = tuple((k, v) for k, v in os.environ.items() if k.startswith("AWS_"))  # workers predate the server
    config = CropConfig(
        f"{s3_bucket}/shards", f"{s3_bucket}/out", packages=("cropped_256",), splits=("train",), progress=False,
        task_env=task_env,
    )  # fmt: skip
    report = crop_shards(config)
    checked = verify_shards(f"{s3_bucket}/out/cropped_256")
    assert checked.ok and checked.samples == report.cropped > 0
    bbox = read_bytes(f"{s3_bucket}/out/BIOSCAN_5M_Insect_bbox.tsv").decode().splitlines()
    assert len(bbox) == report.cropped + 1 and url_exists(f"{s3_bucket}/out/review.tsv")
    assert crop_shards(config).shards_written == 0  # the rerun keeps the S3 shards


@pytest.mark.slow
@pytest.mark.parametrize("source", ["shards", "release"])
def test_kill_9_then_rerun_is_byte_identical(originals: Path, tmp_path: Path, source: str) -> None:
    """The job (driver + its embedded Ray, one process group) is killed with SIGKILL once a shard is finished;
    the rerun completes the same bytes as an uninterrupted run (input: the shard set, or the release tree)."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("RAY_ADDRESS", None)
    release = [str(originals.parents[1] / "release"), "--package", "original_full"]
    inputs = [str(originals)] if source == "shards" else release
    run = [sys.executable, "-m", "jobs.crop", *inputs, "--no-progress", "--num-cpus", "2", "--batch-size", "2"]
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    subprocess.run([*run, "--out", str(whole)], env=env, cwd=REPO, check=True, capture_output=True, timeout=600)
    proc = subprocess.Popen(
        [*run, "--out", str(killed)], env=env, cwd=REPO, stderr=subprocess.DEVNULL, start_new_session=True
    )
    deadline = time.monotonic() + 300
    while not list(killed.glob("_journal/*.json")) and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert list(killed.glob("_journal/*.json")) and not (killed / "cropped" / "index.json").exists()
    subprocess.run([*run, "--out", str(killed)], env=env, cwd=REPO, check=True, capture_output=True, timeout=600)
    assert _tree_bytes(killed) == _tree_bytes(whole)


@pytest.mark.slow
def test_ray_job_submit(ray_head: RayHead, originals: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    command = ["python", "-m", "jobs.crop", str(originals), "--out", str(out), "--packages", "cropped_256"]
    result = ray_head.submit([*command, "--splits", "train", "--no-progress"], working_dir=REPO)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert verify_shards(str(out / "cropped_256")).ok and len(read_bbox(out)) > 0
