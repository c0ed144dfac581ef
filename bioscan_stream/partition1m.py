"""The six BIOSCAN-1M partition columns by the 1M sampling rules (release -> **1M partitions** -> shards).

Read from the 1M repository's `bioscan_datasplit.py` (github zahrag/BIOSCAN-1M) and written anew here:

- `large_diptera_family`: the Diptera records of the 40 most populated Diptera families (missing family left
  out) are split per family ("regular split": shuffle, then 70 / 10 / 20 % with Python rounding, the
  rounding difference going to train; a family of 3-5 records gives one to test, one to validation, the rest
  to train; a family of 1-2 records is `no_split`).
- `large_insect_order`: records already in a `large_diptera_family` split keep it; every other record with an
  order is split per order by the same regular split.
- `medium_*` / `small_*`: per split of the large parent, a class-stratified subset of `factor * size` records
  (factor 0.7 / 0.1 / 0.2 for train / validation / test; size 200,000 and 50,000 in the paper): classes in
  decreasing size, one record at a time from each class, smallest class first, in table order, until the
  target is reached; the surplus of the last round is taken off the largest class (here: off the largest
  classes in turn when the largest holds fewer than the surplus, as in tiny tables). The 1M code computes
  that surplus as a float and slices `[:-k]`, which empties the largest class when k is 0 or exceeds its
  share; here the surplus is an integer count, so the subset has exactly the target size.

Classes are ordered by decreasing size, ties by first appearance (Python's stable sort of the 1M code).
Random draws use `numpy.random.default_rng([seed, k])` per class, so a seed reproduces the columns.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa

from bioscan_stream.release1m import PARTITIONINGS

__all__ = ["assign_partitions_1m", "subset_sizes", "DIPTERA_FAMILIES", "MEDIUM_SAMPLES", "SMALL_SAMPLES"]

#: Diptera families of the family experiments, and the subset sizes of the medium / small versions.
DIPTERA_FAMILIES = 40
MEDIUM_SAMPLES, SMALL_SAMPLES = 200_000, 50_000
#: Records in the real release (the seed README), to scale the subset sizes of a smaller table.
RELEASE_1M_RECORDS = 1_128_313
_RATIOS = (("train", 0.7), ("validation", 0.1), ("test", 0.2))
_CODES = ("train", "validation", "test", "no_split")
_NO_SPLIT = 3


def subset_sizes(records: int) -> tuple[int, int]:
    """Medium and small subset sizes scaled to a table of `records` rows (the paper's for the real release)."""
    scale = min(1.0, records / RELEASE_1M_RECORDS)
    return max(10, round(MEDIUM_SAMPLES * scale)), max(10, round(SMALL_SAMPLES * scale))


def _classes(labels: Sequence[str | None], rows: np.ndarray) -> dict[str, list[int]]:
    """Label -> its rows (table order), labels by decreasing count, ties by first appearance; missing left out."""
    groups: dict[str, list[int]] = {}
    for row in rows:
        label = labels[row]
        if label is not None:
            groups.setdefault(label, []).append(int(row))
    return dict(sorted(groups.items(), key=lambda kv: -len(kv[1])))


def _regular_split(samples: list[int], rng: np.random.Generator) -> tuple[list[int], list[int], list[int]] | None:
    """(train, validation, test) rows of one class, or None when it is too small to split."""
    shuffled = [samples[i] for i in rng.permutation(len(samples))]
    n = len(shuffled)
    n_tr, n_val, n_ts = (int(round(r * n)) for _, r in _RATIOS)
    if 2 < n < 6:
        return shuffled[2:], [shuffled[1]], [shuffled[0]]
    if n_tr and n_val and n_ts:
        n_tr += n - (n_tr + n_val + n_ts)
        return shuffled[:n_tr], shuffled[n_tr : n_tr + n_val], shuffled[-n_ts:]
    return None


def _split_classes(classes: dict[str, list[int]], codes: np.ndarray, seed: int, salt: int) -> None:
    for k, samples in enumerate(classes.values()):
        parts = _regular_split(samples, np.random.default_rng([seed, salt, k]))
        for code, rows in enumerate(parts or ()):
            codes[rows] = code


def _stratified_subset(classes: dict[str, list[int]], target: int) -> list[int]:
    """Round robin over the classes, smallest first, then the surplus taken off the largest class."""
    taken = {label: 0 for label in classes}
    total = sum(len(v) for v in classes.values())
    target = min(target, total)
    count = 0
    while count < target:
        for label in reversed(list(classes)):
            if taken[label] < len(classes[label]):
                taken[label] += 1
                count += 1
    surplus = count - target
    for label in classes:  # largest first; a class gives up at most what it has taken
        cut = min(surplus, taken[label])
        taken[label], surplus = taken[label] - cut, surplus - cut
    return [row for label, rows in classes.items() for row in rows[: taken[label]]]


def _subset(parent: np.ndarray, labels: Sequence[str | None], size: int) -> np.ndarray:
    codes = np.full(len(parent), _NO_SPLIT, dtype=np.int8)
    for code, (_, factor) in enumerate(_RATIOS):
        classes = _classes(labels, np.flatnonzero(parent == code))
        codes[_stratified_subset(classes, int(factor * size))] = code
    return codes


def assign_partitions_1m(
    table: pa.Table, *, seed: int = 0, medium: int = MEDIUM_SAMPLES, small: int = SMALL_SAMPLES
) -> pa.Table:
    """`table` (needs `order` and `family`, missing = null) with the six partition columns set by the rules.

    Args:
        seed: seeds the per-class shuffles of the regular splits.
        medium, small: subset sizes of the medium / small versions (`subset_sizes` scales them to a table).
    """
    order, family = table["order"].to_pylist(), table["family"].to_pylist()
    n = table.num_rows
    diptera_family = [f if o == "Diptera" else None for o, f in zip(order, family, strict=True)]
    top = dict(list(_classes(diptera_family, np.arange(n)).items())[:DIPTERA_FAMILIES])
    large_family = np.full(n, _NO_SPLIT, dtype=np.int8)
    _split_classes(top, large_family, seed, 0)
    large_order = large_family.copy()
    _split_classes(_classes(order, np.flatnonzero(large_family == _NO_SPLIT)), large_order, seed, 1)
    in_top = set(top)
    family_labels = [f if f in in_top else None for f in diptera_family]
    columns = {
        "large_diptera_family": large_family,
        "medium_diptera_family": _subset(large_family, family_labels, medium),
        "small_diptera_family": _subset(large_family, family_labels, small),
        "large_insect_order": large_order,
        "medium_insect_order": _subset(large_order, order, medium),
        "small_insect_order": _subset(large_order, order, small),
    }
    names = np.asarray(_CODES, dtype=object)
    for name in PARTITIONINGS:
        array = pa.array(names[columns[name]].tolist(), pa.string())
        if name in table.column_names:
            table = table.set_column(table.column_names.index(name), name, array)
        else:
            table = table.append_column(name, array)
    return table
