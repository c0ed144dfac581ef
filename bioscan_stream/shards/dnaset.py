"""The DNA-only pretraining set: unique barcodes of `pretrain` + `other_heldout` (metadata -> **dnaset** -> shards).

BarcodeBERT pretrains on barcodes alone, so it should never download image bytes. Trailing `N`s are
padding (no information) and are stripped first; identical sequences are then merged into one sample
whose `count.txt` says how many records carry it (about 2 records per barcode in the real release).
Sequences that are empty after stripping carry nothing and are counted, not written.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

__all__ = ["DNA_SOURCE_SPLITS", "UniqueBarcodes", "unique_barcodes"]

#: The splits whose barcodes form the pretraining set (paper: pretrain + other_heldout).
DNA_SOURCE_SPLITS: tuple[str, ...] = ("pretrain", "other_heldout")


@dataclass(frozen=True)
class UniqueBarcodes:
    """Unique stripped sequences (sorted by code point) with their record counts."""

    sequences: list[str]
    counts: np.ndarray
    records: int
    empty: int
    #: Records per source split that went into the set (as a sample, a merged duplicate or an empty one).
    records_per_split: dict[str, int]

    @property
    def duplicates(self) -> int:
        """Records merged into an earlier identical sequence."""
        return self.records - self.empty - len(self.sequences)


def unique_barcodes(table: pa.Table, *, splits: tuple[str, ...] = DNA_SOURCE_SPLITS) -> UniqueBarcodes:
    """Unique barcodes of the rows of `splits` in a validated table (vectorised: 5M rows in seconds)."""
    rows = table.filter(pc.is_in(table["split"], value_set=pa.array(splits, pa.string())))
    stripped = pc.utf8_rtrim(rows["dna_barcode"].combine_chunks(), characters="N")
    nonempty = stripped.filter(pc.greater(pc.utf8_length(stripped), 0))
    counted = pc.value_counts(nonempty)
    values, counts = counted.field("values"), counted.field("counts")
    order = pc.sort_indices(values)
    per_split = {c["values"]: c["counts"] for c in pc.value_counts(rows["split"]).to_pylist()}
    return UniqueBarcodes(
        sequences=values.take(order).to_pylist(),
        counts=counts.take(order).to_numpy().astype(np.int64),
        records=rows.num_rows,
        empty=rows.num_rows - len(nonempty),
        records_per_split={split: int(per_split.get(split, 0)) for split in splits},
    )
