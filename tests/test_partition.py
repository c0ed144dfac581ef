"""Invariants of the published partition rules (bioscan_stream/partition.py) on generated metadata."""

from __future__ import annotations

import string
from collections import Counter, defaultdict

import numpy as np
import pyarrow as pa
import pytest

from bioscan_stream.constants import SPLITS
from bioscan_stream.partition import (
    assign_partitions,
    flattened_barcode_cap,
    flattened_target,
    flattened_upper,
    is_placeholder_species,
)

SEEN_SPLITS = {"train", "val", "test"}
UNSEEN_SPLITS = {"key_unseen", "val_unseen", "test_unseen"}


def _word(rng: np.random.Generator, length: int) -> str:
    return "".join(rng.choice(list(string.ascii_lowercase), size=length))


def _barcode(rng: np.random.Generator) -> str:
    return "".join(rng.choice(list("ACGT"), size=40))


def _species_records(rng: np.random.Generator, genus: str | None, species: str | None, n: int, *, singletons: bool):
    """n records of one species spread over barcodes of 1..6 records (or all single-record barcodes)."""
    records = []
    while len(records) < n:
        size = 1 if singletons else int(min(rng.geometric(0.45), n - len(records)))
        code = _barcode(rng)
        for _ in range(size):
            padded = "N" * int(rng.integers(0, 3)) + code + "N" * int(rng.integers(0, 3))  # strip before comparing
            records.append((genus, species, padded))
    return records


def generate_metadata(seed: int = 0, *, n_genera: int = 30) -> pa.Table:
    """A long-tailed metadata table: seen, placeholder and heldout species, unknowns and shared barcodes."""
    rng = np.random.default_rng(seed)
    records: list[tuple[str | None, str | None, str]] = []
    genera = [_word(rng, 8).capitalize() for _ in range(n_genera)]
    for i, genus in enumerate(genera):
        for _ in range(int(rng.integers(1, 8))):
            n = int(min(rng.zipf(1.5), 400))
            records += _species_records(rng, genus, f"{genus} {_word(rng, 9)}", n, singletons=False)
        if i % 3 == 0:  # a large species whose barcodes hold one record each: test takes exactly its target
            records += _species_records(
                rng, genus, f"{genus} {_word(rng, 7)}", int(rng.integers(20, 120)), singletons=True
            )
        for k in range(int(rng.integers(0, 4))):  # placeholder species of a seen genus
            name = [f"{genus} Malaise{k:04d}", f"{genus} sp. GG{k}", f"{genus} BioLep{k}"][k % 3]
            records += _species_records(rng, genus, name, int(rng.integers(2, 60)), singletons=False)
        records += _species_records(rng, genus, None, int(rng.integers(5, 40)), singletons=False)  # unknown species
    for k in range(6):  # placeholder genus -> heldout
        records += _species_records(
            rng, f"microMalaise{k:02d}", f"microMalaise{k:02d} Malaise{k}", 12, singletons=False
        )
    records += _species_records(rng, "Unseengenus", "Unseengenus Malaise0001", 30, singletons=False)  # genus not seen
    records += _species_records(rng, None, None, 200, singletons=False)
    return _table(records, rng)


def _table(records: list[tuple[str | None, str | None, str]], rng: np.random.Generator) -> pa.Table:
    genus, species, barcode = (list(column) for column in zip(*records, strict=True))
    shared = rng.choice(len(records), size=len(records) // 25, replace=False)
    for i in shared.tolist():  # unlabelled records that share a labelled record's barcode
        genus.append(None)
        species.append(None)
        barcode.append(barcode[i])
    n = len(barcode)
    return pa.table(
        {
            "processid": [f"P{i:06d}" for i in range(n)],
            "genus": genus,
            "species": species,
            "dna_barcode": barcode,
            "split": pa.nulls(n, pa.string()),
        }
    )


@pytest.fixture(scope="module")
def partitioned() -> pa.Table:
    return assign_partitions(generate_metadata(0), seed=0)


def _rows(table: pa.Table) -> list[dict]:
    return table.select(["processid", "genus", "species", "dna_barcode", "split"]).to_pylist()


def _species_of_barcode(rows: list[dict]) -> dict[str, str]:
    """Stripped barcode -> its one species (barcodes with one labelled species only)."""
    labels: dict[str, set[str]] = defaultdict(set)
    for row in rows:
        if row["species"] is not None:
            labels[row["dna_barcode"].strip("N")].add(row["species"])
    return {bc: next(iter(s)) for bc, s in labels.items() if len(s) == 1}


@pytest.mark.parametrize(
    "species, genus",
    [
        ("Megaselia Malaise4749", "Megaselia"),
        ("Anastatus sp. GG28", "Anastatus"),
        ("Aristotelia BioLep531", "Aristotelia"),
        ("Megaselia BOLD:ACN5814", "Megaselia"),
        ("Zatypota alborhombartaDHJ03", "Zatypota"),
        ("Odontofroggatia corneri-MIC", "Odontofroggatia"),
        ("microMalaise01 Malaise1237", "microMalaise01"),
        ("Pseudosciara sp.", "Pseudosciara"),
        ("Olixon cf. testaceum", "Olixon"),
        ("Dacnusa aff bella", "Dacnusa"),
        ("Dacnusa n sp", "Dacnusa"),
        ("Dacnusa affinis X", "Dacnusa"),
        ("Dacnusa sp ex bella", "Dacnusa"),
        ("Dacnusa gen bella", "Dacnusa"),
        ("megaselia lucifrons", "Megaselia"),
        ("Phora bella_x", "Phora"),
        ("Phora bella?", "Phora"),
        ("Phora bella", "gelBioLep01"),
        ("Phora bella", "Mallaize"),
    ],
)
def test_placeholders(species: str, genus: str) -> None:
    assert is_placeholder_species(species, genus)


@pytest.mark.parametrize(
    "species, genus",
    [
        ("Megaselia lucifrons", "Megaselia"),
        ("Glyptapanteles meganmiltonae", "Glyptapanteles"),
        ("Pseudomyrmex simplex", None),
        ("Alpinosciara bella", "unassigned Sciaridae"),
        ("Spathius gentilis", "Spathius"),
        (None, "Megaselia"),
    ],
)
def test_established_names(species: str | None, genus: str | None) -> None:
    assert not is_placeholder_species(species, genus)


def test_flattened_formula() -> None:
    assert [flattened_target(n) for n in (7, 8, 12, 92, 500)] == [0, 4, 5, 25, 25]
    assert [flattened_upper(n) for n in (7, 8, 11, 92)] == [0, 4, 5, 32]
    assert [flattened_barcode_cap(nb) for nb in (2, 3, 5, 8, 20)] == [1, 1, 2, 3, 7]


def test_every_row_gets_a_split_and_columns_pass_through(partitioned: pa.Table) -> None:
    source = generate_metadata(0)
    assert partitioned.schema == source.schema
    assert partitioned.column("processid").equals(source.column("processid"))
    assert set(partitioned.column("split").to_pylist()) == set(SPLITS)


def test_no_barcode_crosses_splits(partitioned: pa.Table) -> None:
    splits_of: dict[str, set[str]] = defaultdict(set)
    for row in _rows(partitioned):
        splits_of[row["dna_barcode"].strip("N")].add(row["split"])
    assert all(len(s) == 1 for s in splits_of.values())


def test_species_sets_are_disjoint(partitioned: pa.Table) -> None:
    species_in: dict[str, set[str]] = defaultdict(set)
    for row in _rows(partitioned):
        if row["species"] is not None:
            species_in[row["split"]].add(row["species"])
    seen = set().union(*(species_in[s] for s in SEEN_SPLITS))
    unseen = set().union(*(species_in[s] for s in UNSEEN_SPLITS))
    heldout = species_in["other_heldout"]
    assert seen and unseen and heldout
    assert not seen & unseen and not seen & heldout and not unseen & heldout
    assert not any(is_placeholder_species(s, s.split()[0]) for s in seen)
    assert all(is_placeholder_species(s, s.split()[0]) for s in unseen | heldout)
    assert "Unseengenus Malaise0001" in heldout  # its genus has no seen species


def test_unlabelled_records_follow_their_barcode(partitioned: pa.Table) -> None:
    rows = _rows(partitioned)
    owner = _species_of_barcode(rows)
    split_of = {row["dna_barcode"].strip("N"): row["split"] for row in rows if row["species"] is not None}
    for row in rows:
        if row["species"] is None:
            barcode = row["dna_barcode"].strip("N")
            assert row["split"] == (split_of[barcode] if barcode in owner else "pretrain")


def test_test_counts_follow_the_flattened_formula(partitioned: pa.Table) -> None:
    rows = _rows(partitioned)
    owner = _species_of_barcode(rows)
    size, test_size = Counter(), Counter()
    barcodes, test_barcodes = defaultdict(set), defaultdict(set)
    for row in rows:
        barcode = row["dna_barcode"].strip("N")
        if row["split"] in SEEN_SPLITS | UNSEEN_SPLITS:
            species = owner[barcode]
            size[species] += 1
            barcodes[species].add(barcode)
            if row["split"] in ("test", "test_unseen"):
                test_size[species] += 1
                test_barcodes[species].add(barcode)
    assert len(test_size) > 10
    for species, t in test_size.items():
        n, nb = size[species], len(barcodes[species])
        assert 3 <= t <= flattened_upper(n), species
        assert len(test_barcodes[species]) <= flattened_barcode_cap(nb) and len(test_barcodes[species]) < nb
        if nb == n and n >= 20:  # one record per barcode: the target is met exactly
            assert t == flattened_target(n), species


def test_val_takes_about_five_percent(partitioned: pa.Table) -> None:
    counts = Counter(partitioned.column("split").to_pylist())
    seen = counts["train"] + counts["val"] + counts["test"]
    assert 0.02 <= counts["val"] / seen <= 0.08
    rest = counts["key_unseen"] + counts["val_unseen"]
    assert 0.10 <= counts["val_unseen"] / rest <= 0.30


def test_deterministic_for_a_seed_and_row_order() -> None:
    table = generate_metadata(1)
    first = assign_partitions(table, seed=3).column("split")
    assert assign_partitions(table, seed=3).column("split").equals(first)
    assert not assign_partitions(table, seed=4).column("split").equals(first)
    order = np.random.default_rng(0).permutation(table.num_rows)
    shuffled = assign_partitions(table.take(order), seed=3)
    assert shuffled.column("split").to_pylist() == first.take(order).to_pylist()
    chunked = pa.concat_tables([table.slice(start, 500) for start in range(0, table.num_rows, 500)])
    assert chunked.column("dna_barcode").num_chunks > 1
    assert assign_partitions(chunked, seed=3).column("split").to_pylist() == first.to_pylist()


def test_conflicting_barcode_goes_to_pretrain_and_split_column_is_appended() -> None:
    table = pa.table(
        {
            "genus": ["Phora", "Megaselia", "Megaselia", "Megaselia", None],
            "species": ["Phora bella", "Megaselia lucifrons", "Megaselia lucifrons", "Megaselia lucifrons", None],
            "dna_barcode": ["NACGT", "ACGTN", "TTTT", None, "NNNN"],
        }
    )
    out = assign_partitions(table)
    assert out.column_names[-1] == "split"
    # a record without a barcode (null or only N) is a group of its own
    assert out.column("split").to_pylist() == ["pretrain", "pretrain", "train", "train", "pretrain"]


def test_empty_table() -> None:
    table = pa.table(
        {
            "genus": pa.array([], pa.string()),
            "species": pa.array([], pa.string()),
            "dna_barcode": pa.array([], pa.string()),
            "split": pa.array([], pa.string()),
        }
    )
    assert assign_partitions(table).num_rows == 0


def test_single_record_barcodes_meet_the_target_exactly() -> None:
    sizes = {"Phora bella": 40, "Phora nigra": 100, "Phora alba": 8}
    species = [name for name, n in sizes.items() for _ in range(n)]
    table = pa.table(
        {
            "genus": ["Phora"] * len(species),
            "species": species,
            "dna_barcode": [f"ACGT{i:05d}".replace("0", "A") for i in range(len(species))],
        }
    )
    out = Counter(zip(species, assign_partitions(table, seed=5).column("split").to_pylist(), strict=True))
    assert out["Phora bella", "test"] == flattened_target(40) == 12
    assert out["Phora nigra", "test"] == 25
    assert out["Phora alba", "test"] == 3  # barcode cap floor(1 + 6/3) = 3 < target 4, and 3 is the minimum
