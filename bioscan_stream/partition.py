"""The published BIOSCAN-5M partition rules: raw labels -> the 8 splits.

Sits between reading a metadata table (`metadata.read_metadata`) and writing it back
(`jobs/partition_metadata.py`); everything downstream (shards, loaders, evaluation) trusts the `split`
column this module writes. Sources: the paper's section 4.1 and appendix A4.5, the release's partition script
(bioscan-ml/BIOSCAN-5M, MIT) and ../shared/reference/partitioning.md.

Decisions where the written rules leave room (each keeps "no barcode crosses splits" exact):

- Moves are by *barcode group*: the barcode with leading and trailing `N` stripped. A record without a
  barcode (null or only `N`) is a group of its own.
- A group whose labelled records all carry one species follows that species, and so do the group's records
  *without* a species label: the paper moves every record that carries a selected barcode, so an unlabelled
  record that shares a barcode with a `test` record goes to `test` too. A species' size `n` counts all
  records of its groups, so the test bounds hold for the samples that really move.
- A group whose records carry two or more species goes to `pretrain` as a whole: the release's cleaning (A4.4)
  drops a species label that a barcode's annotations disagree on, and any other choice would put one species
  into two species sets.
- A species' genus is its most frequent genus, or the first word of the species when no genus is given (A4.4).
- Barcode caps are at least one barcode (as in the release script, where the cap is checked after a barcode
  is added), so a species with 2 barcodes can enter `test`; a species with a single barcode is never split.
- The long-tail val rule visits species in a seeded random order (the release script went alphabetically).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from bioscan_stream.constants import SPLITS

__all__ = [
    "is_placeholder_species",
    "assign_partitions",
    "flattened_target",
    "flattened_upper",
    "flattened_barcode_cap",
    "dictionary_indices",
]

_MALAISE = re.compile(r"[mM]+[aA]+[lLiI]+[aA]+[iIlL]+[sSzZ]+[eE]+")
#: Open-nomenclature markers (release script), searched in genus and species.
_OPEN_NOMENCLATURE = re.compile(r"\baff\b|\bn[.\s]+sp\b|\bsp\s+ex\b|\bgen\b|\bsp\b\.?[\s\w]+|affinis\s+[0-9A-Z]+")
#: Species-only signs of a placeholder: lowercase start, a digit, `.`, `_`, `?`, a capital after the first character.
_SPECIES_PLACEHOLDER = re.compile(r"^[a-z]|[0-9._?]|.[A-Z]")
_GENUS_FILLERS = ("unclassified", "unassigned")

_SPLIT_INDEX = {name: i for i, name in enumerate(SPLITS)}
_PRETRAIN, _TRAIN, _VAL, _TEST = (_SPLIT_INDEX[s] for s in ("pretrain", "train", "val", "test"))
_KEY_UNSEEN, _VAL_UNSEEN, _TEST_UNSEEN = (_SPLIT_INDEX[s] for s in ("key_unseen", "val_unseen", "test_unseen"))
_OTHER_HELDOUT = _SPLIT_INDEX["other_heldout"]

#: Species-set codes.
_SEEN, _UNSEEN, _HELDOUT = 0, 1, 2
#: Placeholder species with at least this many samples and a seen genus become unseen (A4.5).
UNSEEN_MIN_SAMPLES = 8
VAL_FRACTION = 0.05
VAL_MIN_SPECIES_SAMPLES = 20
VAL_UNSEEN_FRACTION = 0.20
LONG_TAIL_SIZES = (7, 19)
TEST_MIN_SAMPLES = 3


def _is_placeholder_genus(genus: str) -> bool:
    """A genus that is itself a placeholder (`microMalaise01`, `gelBioLep01`), fillers excepted."""
    if _MALAISE.search(genus):
        return True
    return genus[:1].islower() and not genus.startswith(_GENUS_FILLERS)


def is_placeholder_species(species: str | None, genus: str | None) -> bool:
    """True if `species` is not an established scientific name (paper A4.5, release script).

    The checks run on the species value as the release stores it, the full binomial `Genus epithet`:
    an established name has exactly one capital (its first character), no digit and no punctuation, so
    `Megaselia lucifrons` passes while `Megaselia Malaise4749`, `Anastatus sp. GG28` and
    `Aristotelia BioLep531` do not. A missing species is not a placeholder (it is *unknown*).
    """
    if not species:
        return False
    if _MALAISE.search(species) or _SPECIES_PLACEHOLDER.search(species) or _OPEN_NOMENCLATURE.search(species):
        return True
    if not genus:
        return False
    return _is_placeholder_genus(genus) or bool(_OPEN_NOMENCLATURE.search(genus))


# ---------------------------------------------------------------------------------------------- selection rules
def flattened_target(n: int) -> int:
    """Flattened test target: 4 samples at n = 8, +1 per 4 samples, capped at 25 (reached at n = 92)."""
    return 0 if n < 8 else min(math.floor(4 + (n - 8) / 4), 25)


def flattened_upper(n: int) -> int:
    """Most test samples a species may give."""
    return 0 if n < 8 else math.floor(4 + (n - 8) / 3)


def flattened_barcode_cap(nb: int) -> int:
    """Most test barcodes a species may give (at least one, see the module docstring)."""
    return max(1, math.floor(1 + (nb - 2) / 3)) if nb >= 3 else 1


@dataclass(frozen=True)
class _Quota:
    """Target, upper bound and barcode cap of one species in one selection pass."""

    target: float
    upper: float
    max_barcodes: int
    lower: int = 0


def _test_quota(n: int, nb: int) -> _Quota:
    return _Quota(flattened_target(n), flattened_upper(n), flattened_barcode_cap(nb), TEST_MIN_SAMPLES)


def _fraction_quota(n: int, nb: int, fraction: float, min_samples: int) -> _Quota:
    """Val-style quota: `fraction` of the samples, upper 2x that, barcode cap `fraction` of the barcodes."""
    target = 0.0 if n < min_samples else fraction * n
    return _Quota(target, 2 * fraction * n, max(1, math.ceil(fraction * nb)))


def _val_quota(n: int, nb: int) -> _Quota:
    return _fraction_quota(n, nb, VAL_FRACTION, VAL_MIN_SPECIES_SAMPLES)


def _val_unseen_quota(n: int, nb: int) -> _Quota:
    return _fraction_quota(n, nb, VAL_UNSEEN_FRACTION, 0)


def _draw_barcodes(sizes: np.ndarray, quota: _Quota, rng: np.random.Generator) -> np.ndarray:
    """Positions of the barcodes (by group size) drawn for one species; empty when the quota cannot be met.

    Barcodes that fit in the remaining target are drawn at random; when none fits, the smallest one is
    taken if it stays within the upper bound and brings the total closer to the target (the release
    script's overshoot step). A species with a single barcode is never split.
    """
    if quota.target <= 0 or len(sizes) < 2:
        return np.empty(0, dtype=np.int64)
    free = np.ones(len(sizes), dtype=bool)
    chosen: list[int] = []
    alloc = 0
    while alloc < quota.target and len(chosen) < quota.max_barcodes and free.any():
        remaining = quota.target - alloc
        fits = np.flatnonzero(free & (sizes <= remaining))
        if len(fits):
            pick = int(fits[rng.integers(len(fits))])
        else:
            options = np.flatnonzero(free)
            pick = int(options[np.argmin(sizes[options])])
            if alloc + sizes[pick] > quota.upper or sizes[pick] - remaining >= remaining:
                break
        chosen.append(pick)
        free[pick] = False
        alloc += int(sizes[pick])
    if alloc < quota.lower or alloc == 0:
        return np.empty(0, dtype=np.int64)
    return np.asarray(chosen, dtype=np.int64)


# ---------------------------------------------------------------------------------------------- table encoding
def dictionary_indices(column: pa.ChunkedArray | pa.Array) -> tuple[np.ndarray, pa.Array]:
    """Per-row index into the column's distinct values (-1 for null), and those values (also used by `stats`).

    The column is never concatenated: 5M barcodes are > 2 GiB of text, beyond a 32-bit-offset string array.
    """
    chunked = column if isinstance(column, pa.ChunkedArray) else pa.chunked_array([column])
    encoded = pc.dictionary_encode(chunked)
    # NOTE: the kernel gives every chunk the same final dictionary; `unify_dictionaries` re-hashes it per chunk
    # (79 chunks x 2.5M barcodes of 658 nt took minutes here), so it only runs if that ever stops holding.
    if len({len(chunk.dictionary) for chunk in encoded.chunks}) > 1:
        encoded = encoded.unify_dictionaries()
    if encoded.num_chunks == 0:
        return np.empty(0, dtype=np.int64), pa.array([], pa.string())
    indices = [pc.fill_null(chunk.indices.cast(pa.int64()), -1).to_numpy() for chunk in encoded.chunks]
    return np.concatenate(indices), encoded.chunk(0).dictionary


def _sorted_codes(column: pa.ChunkedArray | pa.Array) -> tuple[np.ndarray, pa.Array, np.ndarray]:
    """Codes of a string column in sorted-value order (null and "" -> -1), its dictionary and sort order.

    Sorted codes make the partition independent of row order.
    """
    indices, dictionary = dictionary_indices(column)
    order = pc.array_sort_indices(dictionary).to_numpy()
    rank = np.empty(len(dictionary) + 1, dtype=np.int64)
    rank[order] = np.arange(len(dictionary))
    rank[-1] = -1  # index -1 (null) -> code -1
    codes = rank[indices]
    if len(order) and dictionary[int(order[0])].as_py() == "":  # "" sorts first: drop it and shift the codes
        codes = np.where(codes == 0, -1, codes - 1)
        order = order[1:]
    return codes, dictionary, order


def _encode(column: pa.ChunkedArray | pa.Array) -> tuple[np.ndarray, list[str]]:
    """Sorted codes of a label column and its sorted distinct values."""
    codes, dictionary, order = _sorted_codes(column)
    return codes, dictionary.take(pa.array(order, type=pa.int64())).to_pylist()


@dataclass(frozen=True)
class _Groups:
    """Barcode groups: the unit every move is made in."""

    of_row: np.ndarray  #: group code per record
    size: np.ndarray  #: records per group
    species: np.ndarray  #: species code per group; -1 no label, -2 conflicting labels


def _barcode_groups(barcode: pa.ChunkedArray, species: np.ndarray, n_species: int) -> _Groups:
    """Group records by N-stripped barcode; a record without a barcode is a group of its own."""
    # Strip the distinct barcodes, not the 5M rows: half the work and no second copy of the column.
    raw, raw_values = dictionary_indices(barcode)
    value_group, _, order = _sorted_codes(pc.utf8_trim(raw_values, "N"))
    of_row = np.append(value_group, -1)[raw]
    missing = of_row < 0
    of_row[missing] = len(order) + np.arange(int(missing.sum()))
    n_groups = len(order) + int(missing.sum())
    labelled = species >= 0
    pairs = np.unique(of_row[labelled] * max(n_species, 1) + species[labelled])
    group, group_species = pairs // max(n_species, 1), pairs % max(n_species, 1)
    resolved = np.full(n_groups, -1, dtype=np.int64)
    resolved[group] = group_species
    resolved[np.bincount(group, minlength=n_groups) > 1] = -2
    return _Groups(of_row, np.bincount(of_row, minlength=n_groups), resolved)


def _species_genus(
    species: np.ndarray, genus: np.ndarray, species_names: list[str], genus_names: list[str]
) -> list[str]:
    """Each species' most frequent genus, or the first word of its name when no record gives one (A4.4)."""
    both = (species >= 0) & (genus >= 0)
    pairs, counts = np.unique(species[both] * max(len(genus_names), 1) + genus[both], return_counts=True)
    sp, ge = pairs // max(len(genus_names), 1), pairs % max(len(genus_names), 1)
    order = np.lexsort((-counts, sp))  # per species, the most frequent genus first
    first = order[np.r_[True, sp[order][1:] != sp[order][:-1]]] if len(order) else order
    result = [name.split(" ")[0] for name in species_names]
    for s, g in zip(sp[first].tolist(), ge[first].tolist(), strict=True):
        result[s] = genus_names[g]
    return result


def _species_sets(species_names: list[str], genera: list[str], n: np.ndarray) -> np.ndarray:
    """Species set per species code: seen, unseen (placeholder of a seen genus, >= 8 samples) or heldout."""
    placeholder = np.array(
        [is_placeholder_species(s, g) for s, g in zip(species_names, genera, strict=True)], dtype=bool
    )
    seen_genera = {g for g, p, k in zip(genera, placeholder, n, strict=True) if not p and k > 0}
    seen_genus = np.array([g in seen_genera for g in genera], dtype=bool)
    sets = np.full(len(species_names), _HELDOUT, dtype=np.int8)
    sets[~placeholder] = _SEEN
    sets[placeholder & seen_genus & (n >= UNSEEN_MIN_SAMPLES)] = _UNSEEN
    return sets


# ---------------------------------------------------------------------------------------------- selection passes
@dataclass(frozen=True)
class _Candidates:
    """The groups of one split, sorted by species then group code, with each species' slice."""

    groups: np.ndarray
    species: np.ndarray  #: species code per slice
    starts: np.ndarray  #: slice start per species (with a final end)

    def slices(self) -> list[tuple[int, np.ndarray]]:
        """(species code, its group codes) per species."""
        bounds = self.starts.tolist()
        return [
            (int(s), self.groups[a:b]) for s, a, b in zip(self.species.tolist(), bounds[:-1], bounds[1:], strict=True)
        ]


def _candidates(
    split: np.ndarray, groups: _Groups, sets: np.ndarray, *, from_split: int, species_set: int
) -> _Candidates:
    """Groups now in `from_split` whose species is in `species_set`."""
    labelled = groups.species >= 0
    mask = (split == from_split) & labelled
    mask[labelled] &= sets[groups.species[labelled]] == species_set
    codes = np.flatnonzero(mask)
    codes = codes[np.argsort(groups.species[codes], kind="stable")]
    species = groups.species[codes]
    starts = np.flatnonzero(np.r_[True, species[1:] != species[:-1]]) if len(codes) else np.empty(0, np.int64)
    return _Candidates(codes, species[starts], np.r_[starts, len(codes)].astype(np.int64))


def _select(
    split: np.ndarray,
    groups: _Groups,
    cands: _Candidates,
    quota: Callable[[int, int], _Quota],
    to_split: int,
    rng: np.random.Generator,
) -> None:
    """Move the groups drawn per species (quota(n, nb) -> _Quota) to `to_split`, in place."""
    for _, codes in cands.slices():
        sizes = groups.size[codes]
        chosen = _draw_barcodes(sizes, quota(int(sizes.sum()), len(codes)), rng)
        split[codes[chosen]] = to_split


def _select_long_tail(
    split: np.ndarray, groups: _Groups, cands: _Candidates, n_test: np.ndarray, rng: np.random.Generator
) -> None:
    """Val's long tail: one single-sample barcode per species of 7..19 remaining samples, up to 5% of the tail.

    The tail is every seen record whose species has < 20 samples left after test (paper A4.5); a species
    whose test share already exceeds its flattened target is skipped.
    """
    slices = cands.slices()
    remaining = np.array([int(groups.size[codes].sum()) for _, codes in slices], dtype=np.int64)
    target = round(VAL_FRACTION * int(remaining[remaining < VAL_MIN_SPECIES_SAMPLES].sum()))
    low, high = LONG_TAIL_SIZES
    alloc = 0
    for i in rng.permutation(len(slices)):
        if alloc >= target:
            break
        species, codes = slices[i]
        n = int(remaining[i])
        if not low <= n <= high or n_test[species] > flattened_target(n + n_test[species]):
            continue
        singles = codes[groups.size[codes] == 1]
        if len(singles):
            split[singles[rng.integers(len(singles))]] = _VAL
            alloc += 1


def _place_seen(split: np.ndarray, groups: _Groups, sets: np.ndarray, rngs: list[np.random.Generator]) -> None:
    """Seen groups (all in train on entry) -> test (flattened), val (5% + long tail), rest train."""
    _select(
        split,
        groups,
        _candidates(split, groups, sets, from_split=_TRAIN, species_set=_SEEN),
        _test_quota,
        _TEST,
        rngs[0],
    )
    in_test = (split == _TEST) & (groups.species >= 0)
    n_test = np.bincount(groups.species[in_test], weights=groups.size[in_test], minlength=len(sets)).astype(np.int64)
    cands = _candidates(split, groups, sets, from_split=_TRAIN, species_set=_SEEN)
    _select(split, groups, cands, _val_quota, _VAL, rngs[1])
    # The long tail sees the pre-val candidates, as in the release script: its species (7..19 samples) got
    # nothing from the 5% pass (which starts at 20), so nothing is counted or moved twice.
    _select_long_tail(split, groups, cands, n_test, rngs[2])


def _place_unseen(split: np.ndarray, groups: _Groups, sets: np.ndarray, rngs: list[np.random.Generator]) -> None:
    """Unseen groups (all in key_unseen on entry) -> test_unseen (as test), val_unseen (20%), rest key_unseen."""
    cands = _candidates(split, groups, sets, from_split=_KEY_UNSEEN, species_set=_UNSEEN)
    _select(split, groups, cands, _test_quota, _TEST_UNSEEN, rngs[3])
    cands = _candidates(split, groups, sets, from_split=_KEY_UNSEEN, species_set=_UNSEEN)
    _select(split, groups, cands, _val_unseen_quota, _VAL_UNSEEN, rngs[4])


def assign_partitions(table: pa.Table, *, seed: int = 0) -> pa.Table:
    """Return `table` with its `split` column set to the 8 published partitions.

    Needs the columns `genus`, `species` and `dna_barcode` (other columns pass through unchanged, and a
    missing `split` column is appended). The same table and seed give the same partition whatever the row
    order. See the module docstring for how shared barcodes and unlabelled records are handled.
    """
    species, species_names = _encode(table.column("species"))
    genus, genus_names = _encode(table.column("genus"))
    groups = _barcode_groups(table.column("dna_barcode"), species, len(species_names))
    has_species = groups.species >= 0
    n = np.bincount(groups.species[has_species], weights=groups.size[has_species], minlength=len(species_names))
    sets = _species_sets(species_names, _species_genus(species, genus, species_names, genus_names), n.astype(np.int64))
    split = np.full(len(groups.size), _PRETRAIN, dtype=np.int8)
    initial = np.array([_TRAIN, _KEY_UNSEEN, _OTHER_HELDOUT], dtype=np.int8)
    split[has_species] = initial[sets[groups.species[has_species]]]
    rngs = [np.random.default_rng([seed, stage]) for stage in range(5)]
    _place_seen(split, groups, sets, rngs)
    _place_unseen(split, groups, sets, rngs)
    return _with_split(table, split[groups.of_row])


def _with_split(table: pa.Table, codes: np.ndarray) -> pa.Table:
    """Set (or append) the `split` column from split codes, keeping the column's type."""
    names = pa.DictionaryArray.from_arrays(pa.array(codes, type=pa.int8()), pa.array(SPLITS, type=pa.string()))
    if "split" not in table.column_names:
        return table.append_column("split", names.cast(pa.string()))
    index = table.column_names.index("split")
    return table.set_column(index, table.schema.field(index), names.cast(table.schema.field(index).type))
