"""partition1m: the six BIOSCAN-1M partition columns follow the 1M sampling rules."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pyarrow as pa
import pytest

from bioscan_stream.partition1m import _regular_split, _stratified_subset, assign_partitions_1m, subset_sizes
from bioscan_stream.release1m import PARTITIONINGS, SPLITS_1M


@pytest.mark.parametrize(("n", "sizes"), [(1, None), (2, None), (3, (1, 1, 1)), (5, (3, 1, 1)), (10, (7, 1, 2)),
                                          (15, (10, 2, 3)), (101, (71, 10, 20))])  # fmt: skip
def test_regular_split_sizes(n: int, sizes: tuple[int, int, int] | None) -> None:
    import numpy as np

    parts = _regular_split(list(range(n)), np.random.default_rng(0))
    if sizes is None:
        assert parts is None
        return
    assert parts is not None and tuple(len(p) for p in parts) == sizes
    assert sorted(r for p in parts for r in p) == list(range(n))


def test_stratified_subset_takes_round_robin_from_the_smallest_class() -> None:
    classes = {"big": list(range(100)), "mid": list(range(100, 110)), "small": [200, 201]}
    chosen = _stratified_subset(classes, 11)
    assert Counter("big" if r < 100 else "mid" if r < 200 else "small" for r in chosen) == {
        "big": 4,
        "mid": 5,
        "small": 2,
    }
    assert chosen[:4] == [0, 1, 2, 3]  # table order within a class
    assert len(_stratified_subset(classes, 1_000)) == 112  # capped at what there is


def test_partitions_of_a_table(tmp_path: Path) -> None:
    orders = ["Diptera"] * 300 + ["Hymenoptera"] * 40 + ["Coleoptera"] * 4 + ["Odonata"] * 2 + [None] * 3
    families = [f"F{i % 45:02d}" if i % 50 else None for i in range(300)] + [None] * 49
    table = assign_partitions_1m(pa.table({"order": orders, "family": families}), seed=3, medium=60, small=20)
    cols = {name: table[name].to_pylist() for name in PARTITIONINGS}
    assert all(set(v) <= set(SPLITS_1M) for v in cols.values())
    fam = cols["large_diptera_family"]
    split_families = {families[i] for i, s in enumerate(fam) if s != "no_split"}
    assert len(split_families) <= 40 and all(orders[i] == "Diptera" for i, s in enumerate(fam) if s != "no_split")
    for i, split in enumerate(fam):  # the order experiment keeps the family experiment's splits
        if split != "no_split":
            assert cols["large_insect_order"][i] == split
    order = cols["large_insect_order"]
    assert Counter(order[i] for i in range(340, 344)) == {"train": 2, "validation": 1, "test": 1}  # 4 Coleoptera
    assert {order[i] for i in range(344, 349)} == {"no_split"}  # 2 Odonata and 3 without order
    for size, prefix in ((60, "medium"), (20, "small")):
        for name in (f"{prefix}_diptera_family", f"{prefix}_insect_order"):
            parent = cols["large_" + name.split("_", 1)[1]]
            counts = Counter(cols[name])
            assert (counts["train"], counts["validation"], counts["test"]) == (
                int(0.7 * size),
                int(0.1 * size),
                int(0.2 * size),
            )
            assert all(parent[i] == s for i, s in enumerate(cols[name]) if s != "no_split")
    again = assign_partitions_1m(pa.table({"order": orders, "family": families}), seed=3, medium=60, small=20)
    assert again.equals(table)
    assert subset_sizes(1_128_313) == (200_000, 50_000)
