"""Unique barcodes of pretrain + other_heldout: trailing N stripped, duplicates merged with counts."""

from __future__ import annotations

import pyarrow as pa

from bioscan_stream.shards.dnaset import unique_barcodes


def test_strip_merge_and_count_only_source_splits() -> None:
    table = pa.table(
        {
            "split": ["pretrain", "pretrain", "other_heldout", "train", "pretrain", "pretrain"],
            "dna_barcode": ["ACGTNN", "ACGT", "NACGT", "ACGT", "NNNN", "GGAN"],
        }
    )
    unique = unique_barcodes(table)
    assert unique.sequences == ["ACGT", "GGA", "NACGT"]  # leading/internal N kept, code-point order
    assert unique.counts.tolist() == [2, 1, 1]
    assert unique.records == 5  # the train row is not a source
    assert unique.empty == 1
    assert unique.duplicates == 1
    assert int(unique.counts.sum()) + unique.empty == unique.records


def test_selected_splits_only() -> None:
    table = pa.table({"split": ["pretrain", "other_heldout"], "dna_barcode": ["AC", "GT"]})
    assert unique_barcodes(table, splits=("other_heldout",)).sequences == ["GT"]
