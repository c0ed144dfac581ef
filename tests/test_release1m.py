"""release1m: the 1M reader equals the official `BIOSCAN1M` loader; the three image containers agree byte for byte."""

from __future__ import annotations

import io
import pickle
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from PIL import Image

from bioscan_stream.layout import CorruptImage, MissingImage
from bioscan_stream.release1m import (
    CONTAINERS,
    HDF5_GROUP,
    LABEL_COLUMNS_1M,
    METADATA_1M_JSONLD,
    METADATA_1M_TSV,
    ImageStore1M,
    clean_labels,
    is_release_1m,
    read_metadata_1m,
    vocabularies_1m,
    write_metadata_1m,
)
from bioscan_stream.validate import InvalidRecordError
from bioscan_stream.vocab import encode_labels


def _official(root: Path, split: str, partitioning: str, monkeypatch: pytest.MonkeyPatch) -> object:
    """The official loader over our synthetic release. Its md5 check of the real TSV cannot pass for a
    synthetic file, so only that check is bypassed; the metadata and images are read by its own code."""
    official = pytest.importorskip("bioscan_dataset.bioscan1m")
    monkeypatch.setattr(official.BIOSCAN1M, "_check_integrity", lambda self, verbose=1: True)
    return official.BIOSCAN1M(
        str(root), split=split, partitioning_version=partitioning, modality=("image", "dna"),
        target_type=list(LABEL_COLUMNS_1M), target_format="index", image_package="cropped_256",
    )  # fmt: skip


@pytest.mark.filterwarnings("ignore:The target_type includes")
@pytest.mark.parametrize(("partitioning", "split"), [("large_insect_order", "train"), ("small_diptera_family", "all")])
def test_reader_equals_official_loader(
    release_1m: tuple[Path, pa.Table], partitioning: str, split: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    root, _ = release_1m
    dataset = _official(root, split, partitioning, monkeypatch)
    df = dataset.metadata  # type: ignore[attr-defined]
    ours = read_metadata_1m(root)
    vocabularies = vocabularies_1m(ours)
    if split != "all":
        ours = ours.filter(pc.equal(ours[partitioning], split))
    assert len(df) == ours.num_rows > 100
    assert df["processid"].tolist() == ours["processid"].to_pylist()
    assert df["nucraw"].tolist() == [s[:660] for s in ours["nucraw"].to_pylist()]
    assert df["chunk_number"].astype(int).tolist() == ours["chunk_number"].to_pylist()
    for column in LABEL_COLUMNS_1M:
        labels = [x if isinstance(x, str) else None for x in df[column].astype(object)]
        assert labels == ours[column].to_pylist(), column
        codes = encode_labels(ours[column], vocabularies[column])
        assert np.array_equal(df[f"{column}_index"].to_numpy().astype(np.int64), codes), column
    image, dna, targets = dataset[3]  # type: ignore[index]
    store = ImageStore1M.open(root, "cropped_256", container="hdf5")
    row = ours.slice(3, 1).to_pylist()[0]
    assert image.tobytes() == Image.open(io.BytesIO(store.read(row["processid"]))).tobytes()
    assert dna == row["nucraw"][:660]
    assert list(targets) == [encode_labels([row[c]], vocabularies[c])[0] for c in LABEL_COLUMNS_1M]


def test_tsv_and_jsonld_read_identically(release_1m: tuple[Path, pa.Table]) -> None:
    root, table = release_1m
    tsv, jsonld = read_metadata_1m(root / METADATA_1M_TSV), read_metadata_1m(root / METADATA_1M_JSONLD)
    assert tsv.equals(jsonld) and tsv.num_rows == table.num_rows and is_release_1m(root)
    raw = read_metadata_1m(root, ["processid", "tribe", "subspecies"], clean=False)
    assert set(raw["tribe"].to_pylist()) == {"not_classified"}  # what the file holds; clean=True maps it
    assert raw["processid"].to_pylist() == table["processid"].to_pylist()


def test_three_containers_give_identical_bytes(release_1m: tuple[Path, pa.Table]) -> None:
    root, table = release_1m
    stores = {c: ImageStore1M.open(root, "cropped_256", container=c) for c in CONTAINERS}
    assert table["chunk_number"].to_pylist()[-1] > 10  # many part folders
    for pid in table["processid"].to_pylist():
        images = {c: store.read(pid) for c, store in stores.items()}
        assert images["tree"] == images["zip"] == images["hdf5"], pid
        assert images["tree"][:3] == b"\xff\xd8\xff"


def test_hdf5_is_opened_once_per_process(release_1m: tuple[Path, pa.Table], monkeypatch: pytest.MonkeyPatch) -> None:
    import h5py

    root, table = release_1m
    opened: list[str] = []
    real_file = h5py.File
    monkeypatch.setattr(h5py, "File", lambda path, *a, **k: opened.append(str(path)) or real_file(path, *a, **k))
    store = ImageStore1M.open(root, "cropped_256", container="hdf5")
    pids = table["processid"].to_pylist()
    for pid in pids[:200]:
        store.read(pid)
    assert opened == [str(store.hdf5)]
    copy = pickle.loads(pickle.dumps(store))  # what a Ray task receives: no handle travels
    assert copy._h5 is None and copy.read(pids[0]) == store.read(pids[0]) and len(opened) == 2
    store.close()
    copy.close()


def test_corrupt_hdf5_entry_and_missing_part_are_named(release_1m: tuple[Path, pa.Table], tmp_path: Path) -> None:
    import h5py

    source, table = release_1m
    root = tmp_path / "release"
    shutil.copytree(source, root)
    rows = table.select(["processid", "chunk_number", "image_file"]).to_pylist()
    with h5py.File(root / "bioscan1m" / "cropped_256.hdf5", "r+") as handle:
        del handle[HDF5_GROUP][rows[0]["image_file"]]
        handle[HDF5_GROUP].create_dataset(rows[0]["image_file"], data=np.zeros((4, 4), np.float32))
    with pytest.raises(CorruptImage, match=rf"{rows[0]['image_file']}: holds float32 of shape \(4, 4\)"):
        ImageStore1M.open(root, "cropped_256", container="hdf5").read(rows[0]["processid"])
    shutil.rmtree(root / "bioscan1m" / "images" / "cropped_256" / f"part{rows[-1]['chunk_number']}")
    with pytest.raises(MissingImage, match=rf"part{rows[-1]['chunk_number']}/{rows[-1]['image_file']}"):
        ImageStore1M.open(root, "cropped_256", container="tree").read(rows[-1]["processid"])
    assert ImageStore1M.open(root, "cropped_256").read(rows[-1]["processid"])[:2] == b"\xff\xd8"  # zip fallback
    with pytest.raises(FileNotFoundError, match="original_full"):
        ImageStore1M.open(root, "original_full")


def test_clean_labels_follows_the_official_rules() -> None:
    nc = "not_classified"
    rows = [  # family, subfamily, tribe, genus, species
        ("Asteiidae", nc, nc, "Asteia", nc),
        ("Muscidae", "Muscinae", nc, nc, "Musca domestica"),
        ("Sciaridae", nc, nc, "Bradysia", nc),
        ("Cecidomyiidae", nc, nc, nc, nc),
        ("Tachinidae", nc, "Blondeliini", "Nemorilla", nc),
    ]
    table = pa.table(
        {c: [r[i] for r in rows] for i, c in enumerate(("family", "subfamily", "tribe", "genus", "species"))}
    )
    table = table.append_column("uri", pa.array([nc] * 5)).append_column("order", pa.array(["Diptera"] * 5))
    cleaned = clean_labels(table).to_pydict()
    assert cleaned["tribe"] == ["Asteiini", "unassigned Muscinae", "unassigned Sciaridae", None, "Winthemiini"]
    assert cleaned["genus"] == ["Asteia", "Musca", "Bradysia", None, "Nemorilla"]
    assert cleaned["subfamily"] == [
        "unassigned Asteiidae",
        "Muscinae",
        "unassigned Sciaridae",
        None,
        "unassigned Tachinidae",
    ]
    assert cleaned["uri"] == [None] * 5 and cleaned["species"][1] == "Musca domestica"


def test_written_metadata_round_trips(tmp_path: Path) -> None:
    table = pa.table({"processid": ["A-1", "B-2"], "order": ["Diptera", None], "chunk_number": [1, 2],
                      "image_file": ["A-1.jpg", "x.jpg"]})  # fmt: skip
    write_metadata_1m(table, tmp_path)
    text = (tmp_path / METADATA_1M_TSV).read_text().splitlines()
    assert text[0].split("\t")[:3] == ["sampleid", "processid", "uri"] and "not_classified" in text[2]
    back = read_metadata_1m(tmp_path, ["processid", "order", "chunk_number", "image_file"])
    assert back.to_pydict() == table.to_pydict()
    with pytest.raises(FileNotFoundError, match="no BIOSCAN-1M metadata"):
        read_metadata_1m(tmp_path / "nowhere")


def test_a_malformed_row_is_a_named_reject(tmp_path: Path) -> None:
    table = pa.table({"processid": ["A-1", "B-2", "C-3"], "chunk_number": [1, 1, 1]})
    path = write_metadata_1m(table, tmp_path)
    lines = path.read_text().splitlines()
    lines[2] = "\t".join(lines[2].split("\t")[:5])  # B-2 lost its last 23 fields
    path.write_text("\n".join(lines) + "\n")
    rejects: list = []
    back = read_metadata_1m(tmp_path, ["processid"], rejects=rejects)
    assert back["processid"].to_pylist() == ["A-1", "C-3"]
    assert len(rejects) == 1 and rejects[0].reason == "malformed_row" and "found 5" in rejects[0].detail
    with pytest.raises(InvalidRecordError, match="malformed_row"):
        read_metadata_1m(tmp_path, strict=True)


def test_optional_columns_may_be_absent_required_ones_not(tmp_path: Path) -> None:
    table = pa.table({"processid": ["A-1"], "order": ["Diptera"], "chunk_number": [1], "image_file": ["A-1.jpg"]})
    path = write_metadata_1m(table, tmp_path)
    header, row = (line.split("\t") for line in path.read_text().splitlines())
    keep = [i for i, name in enumerate(header) if not name.startswith("copyright") and name != "author"]
    path.write_text("\n".join("\t".join(fields[i] for i in keep) for fields in (header, row)) + "\n")
    back = read_metadata_1m(tmp_path)
    assert back["copyright_holder"].to_pylist() == [None] and back["order"].to_pylist() == ["Diptera"]
    keep = [i for i, name in enumerate(header) if name != "image_file"]
    path.write_text("\n".join("\t".join(fields[i] for i in keep) for fields in (header, row)) + "\n")
    with pytest.raises(ValueError, match=r"lacks column\(s\) \['image_file'\]"):
        read_metadata_1m(tmp_path)
    assert read_metadata_1m(tmp_path, ["processid", "order"])["processid"].to_pylist() == ["A-1"]
