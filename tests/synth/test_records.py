"""The 20k synthetic release against the real release's statistics (Table 2, Table 3) and its own rules."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from bioscan_stream.constants import COLUMNS, RANKS, SPLITS
from bioscan_stream.layout import chunk_for
from bioscan_stream.metadata import read_metadata
from bioscan_stream.sizes import size_fields
from bioscan_stream.stats import compute_stats

#: Labelled share per rank of the real release (Table 2) and the tolerance (percentage points) at 20k records.
REAL_LABELLED = {
    "class": 99.9,
    "order": 99.7,
    "family": 95.8,
    "subfamily": 28.6,
    "genus": 23.8,
    "species": 9.2,
    "dna_bin": 99.7,
}
RANK_TOLERANCE = 2.0
#: Share of records per split (Table 3) and the tolerance at 20k records: only ~1,800 records carry a species,
#: and one species can hold 150, so the small splits are checked within a factor of 3.
REAL_SPLIT_PCT = {
    "pretrain": 90.8,
    "train": 5.6,
    "val": 0.29,
    "test": 0.76,
    "key_unseen": 0.71,
    "val_unseen": 0.17,
    "test_unseen": 0.15,
    "other_heldout": 1.49,
}
SPLIT_TOLERANCE = {"pretrain": 1.0, "train": 2.0, "other_heldout": 1.5}
SMALL_SPLIT_FACTOR = 3.0


@pytest.fixture(scope="module")
def stats(release_20k: tuple[Path, pa.Table]) -> dict:
    return compute_stats(read_metadata(release_20k[0]))


def test_rank_completeness_matches_table_2(stats: dict) -> None:
    for rank, pct in REAL_LABELLED.items():
        assert stats["ranks"][rank]["labelled_pct"] == pytest.approx(pct, abs=RANK_TOLERANCE), rank


def test_split_proportions_match_table_3(stats: dict) -> None:
    total = stats["samples"]
    for split, real in REAL_SPLIT_PCT.items():
        pct = 100 * stats["splits"][split]["samples"] / total
        if split in SPLIT_TOLERANCE:
            assert pct == pytest.approx(real, abs=SPLIT_TOLERANCE[split]), split
        else:
            assert real / SMALL_SPLIT_FACTOR < pct < real * SMALL_SPLIT_FACTOR, split


def test_samples_per_barcode_and_long_tail(stats: dict) -> None:
    assert stats["barcodes"]["samples_per_barcode"] == pytest.approx(2.07, abs=0.3)
    sizes = np.array(stats["long_tail"]["all"])
    assert (sizes == 1).mean() > 0.2  # many singleton species
    assert np.median(sizes) <= 4  # real median 2
    assert sizes.max() > 20 * np.median(sizes)  # a few huge species


def test_order_and_geography_shares(release_20k: tuple[Path, pa.Table]) -> None:
    table = release_20k[1]
    share = lambda col, value: float(pc.sum(pc.equal(table[col], value)).as_py() / table.num_rows)  # noqa: E731
    assert share("order", "Diptera") == pytest.approx(0.71, abs=0.05)
    assert share("class", "Insecta") == pytest.approx(0.978, abs=0.015)
    assert share("country", "Costa Rica") == pytest.approx(0.62, abs=0.1)
    assert len(pc.unique(table["country"])) >= 30
    sites = set(zip(table["coord-lat"].to_pylist(), table["coord-lon"].to_pylist(), strict=True))
    assert len(sites) > 500


def test_labels_are_consistent(release_20k: tuple[Path, pa.Table]) -> None:
    rows = release_20k[1].select([*RANKS, "taxon", "inferred_ranks", "dna_barcode"]).to_pylist()
    by_barcode: dict[str, tuple] = {}
    for row in rows:
        labels = [row[r] for r in RANKS]
        depth = max(i for i, v in enumerate(labels) if v is not None)
        assert all(v is not None for v in labels[:depth]), row  # no holes above the deepest label
        assert row["taxon"] == labels[depth]
        assert row["inferred_ranks"] == 0 or row["inferred_ranks"] >= 7 - depth
        if row["species"]:
            assert row["species"].split(" ")[0] == row["genus"]
        if row["genus"]:
            assert row["subfamily"]  # unassigned <Family> fills the hole
        if depth == 4:
            assert not row["subfamily"].startswith("unassigned")  # a filler never ends a label
        assert by_barcode.setdefault(row["dna_barcode"], tuple(labels)) == tuple(labels)
    assert 0.01 < np.mean([r["inferred_ranks"] > 0 for r in rows]) < 0.06


def test_ids_sizes_and_chunks(release_20k: tuple[Path, pa.Table]) -> None:
    table = release_20k[1]
    assert table.column_names[: len(COLUMNS)] == list(COLUMNS)
    pids = table["processid"].to_pylist()
    assert len(set(pids)) == len(pids)
    assert all(re.fullmatch(r"[A-Z]{4,5}\d+-\d{2}", p) for p in pids)
    assert all(re.fullmatch(r"(BIOUG|CBG-)\d{5}-[A-H](0[1-9]|1[0-2])", s) for s in table["sampleid"].to_pylist())
    assert set(table["split"].to_pylist()) == set(SPLITS)
    splits, chunks = table["split"].to_pylist()[:3000], table["chunk"].to_pylist()[:3000]
    for p, s, c in zip(pids[:3000], splits, chunks, strict=True):
        assert (c or "") == chunk_for(p, s)
    box = np.stack([table[c].to_numpy() for c in ("x0", "y0", "x1", "y1")])
    assert (box[0] >= 0).all() and (box[2] <= 1024).all() and (box[1] >= 0).all() and (box[3] <= 768).all()
    area, scale = size_fields(box, (1024, 768))
    assert np.allclose(area, table["area_fraction"].to_numpy()) and np.allclose(scale, table["scale_factor"].to_numpy())
    frac = table["area_fraction"].to_numpy()
    assert frac.min() < 0.01 and frac.max() > 0.5  # tiny to frame-filling
    pixels = table["image_measurement_value"].to_numpy(zero_copy_only=False)
    box_area = (box[2] - box[0]) * (box[3] - box[1])
    valid = ~np.isnan(pixels.astype(float))
    assert 0.0 < valid.mean() < 1.0 and (pixels[valid] < box_area[valid]).all()
    index_1m = table["index_bioscan_1M_insect"]
    assert 0.15 < index_1m.is_valid().to_numpy(zero_copy_only=False).mean() < 0.3
    assert len(pc.unique(index_1m.drop_null())) == len(index_1m.drop_null())
