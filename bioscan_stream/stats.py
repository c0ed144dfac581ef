"""Table 2 / Table 3 statistics of a metadata table: per rank, per split, and the long tail of species.

Sits beside the release reader (release -> metadata -> **stats**): `compute_stats` turns a table from
`metadata.read_metadata` into a JSON-ready dict, `format_stats` renders it for the terminal and
`plot_stats` draws split sizes and the species rank-frequency curve. Definitions follow the paper
(../shared/seeds/002, section 3 and A2.3): *categories* are distinct non-missing values, *labelled* counts
records with a value, and the imbalance ratio IR is the size of the largest category over the smallest.
Everything is computed with pyarrow kernels, so the 5,150,850-row release is summarised in seconds.
"""

from __future__ import annotations

import io
import os
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from bioscan_stream._atomic import atomic_path
from bioscan_stream.constants import LABEL_COLUMNS, SPLITS
from bioscan_stream.partition import dictionary_indices

__all__ = ["STATS_COLUMNS", "compute_stats", "format_stats", "plot_stats"]

#: Table 2's rows: the 7 ranks, the BIN and the barcode itself.
ATTRIBUTES: tuple[str, ...] = (*LABEL_COLUMNS, "dna_barcode")
#: The metadata columns `compute_stats` reads (project to these when loading the release).
STATS_COLUMNS: tuple[str, ...] = (*ATTRIBUTES, "split")
#: Long-tail curves drawn beside the overall one (the flattened test shows against train).
_CURVE_SPLITS = ("train", "val", "test", "key_unseen", "test_unseen", "other_heldout")


def _category_counts(column: pa.ChunkedArray) -> tuple[pa.Array, np.ndarray, np.ndarray]:
    """Distinct values, their counts, and the positions of the non-null ones, largest first (ties by value).

    Only positions are sorted and only the two extremes become Python objects: the 2.5M distinct barcodes
    of the release are never copied or converted.
    """
    counted = pc.value_counts(column)
    values, counts = counted.field("values"), counted.field("counts")
    keys = pa.table({"count": counts, "value": values})
    order = pc.sort_indices(keys, sort_keys=[("count", "descending"), ("value", "ascending")]).to_numpy()
    valid = np.asarray(values.is_valid())
    return values, counts.to_numpy(), order[valid[order]]


def _attribute_stats(column: pa.ChunkedArray, total: int, names: pa.Array | None = None) -> dict[str, Any]:
    """Categories, labelled count and share, IR, and the most / least populated category of one column.

    `names` maps the values of a code column (see `_with_barcode_codes`) back to the text they stand for.
    """
    values, counts, order = _category_counts(column)
    if names is not None:
        values = names.take(values)
    labelled = total - column.null_count
    stats: dict[str, Any] = {
        "categories": len(order),
        "labelled": labelled,
        "labelled_pct": 100 * labelled / total if total else 0.0,
        "unlabelled": total - labelled,
        "imbalance_ratio": None,
        "most": None,
        "least": None,
    }
    if len(order):
        most, least = int(order[0]), int(order[-1])
        stats["imbalance_ratio"] = int(counts[most]) / int(counts[least])
        stats["most"] = {
            "name": values[most].as_py(),
            "size": int(counts[most]),
            "share_pct": float(100 * counts[most] / total),
        }
        stats["least"] = {"name": values[least].as_py(), "size": int(counts[least])}
    return stats


def _split_stats(table: pa.Table) -> dict[str, dict[str, int]]:
    """Samples, unique barcodes and distinct species per split, in the paper's split order."""
    aggregations: list[tuple[Any, str]] = [([], "count_all")]
    aggregations += [(c, "count_distinct") for c in ("dna_barcode", "species") if c in table.column_names]
    grouped = table.group_by("split").aggregate(aggregations).to_pylist()
    rows = {
        row["split"]: {
            "samples": row["count_all"],
            "barcodes": row.get("dna_barcode_count_distinct"),
            "species": row.get("species_count_distinct"),
        }
        for row in grouped
    }
    order = [s for s in SPLITS if s in rows] + sorted((s for s in rows if s not in SPLITS), key=str)
    return {str(s) if s is not None else "<none>": rows[s] for s in order}


def _long_tail(table: pa.Table) -> dict[str, list[int]]:
    """Species sizes sorted largest first: overall and per split (the rank-frequency curves)."""
    _, counts, order = _category_counts(table.column("species"))
    curves = {"all": counts[order].tolist()}
    if "split" in table.column_names:
        pairs = table.select(["split", "species"]).filter(pc.is_valid(table.column("species")))
        grouped = pairs.group_by(["split", "species"]).aggregate([([], "count_all")])
        for split in SPLITS:
            sizes = grouped.filter(pc.equal(grouped.column("split"), split)).column("count_all")
            if len(sizes):
                curves[split] = sorted(sizes.to_pylist(), reverse=True)
    return curves


def _with_barcode_codes(table: pa.Table) -> tuple[pa.Table, pa.Array | None]:
    """`table` with `dna_barcode` replaced by integer codes, and the distinct barcodes.

    Counting and per-split distinct counts then hash integers instead of 658-character strings.
    """
    if "dna_barcode" not in table.column_names:
        return table, None
    indices, names = dictionary_indices(table.column("dna_barcode"))
    codes = pa.array(indices, mask=indices < 0)
    return table.set_column(table.column_names.index("dna_barcode"), "dna_barcode", codes), names


def compute_stats(table: pa.Table) -> dict[str, Any]:
    """Statistics of a metadata table as a JSON-ready dict.

    Keys: `samples`; `ranks` (per rank, `dna_bin` and `dna_barcode` present in the table: categories,
    labelled / unlabelled counts, labelled_pct, imbalance_ratio, most / least populated with share);
    `splits` (per split: samples, barcodes = unique barcodes, species = distinct non-missing species);
    `barcodes` (unique, samples_per_barcode); `long_tail` (species sizes, largest first, overall and per split).
    """
    total = table.num_rows
    table, barcode_names = _with_barcode_codes(table)
    stats: dict[str, Any] = {
        "samples": total,
        "ranks": {
            a: _attribute_stats(table.column(a), total, barcode_names if a == "dna_barcode" else None)
            for a in ATTRIBUTES
            if a in table.column_names
        },
    }
    if "split" in table.column_names:
        stats["splits"] = _split_stats(table)
    if "dna_barcode" in table.column_names:
        unique = stats["ranks"]["dna_barcode"]["categories"]
        stats["barcodes"] = {"unique": unique, "samples_per_barcode": total / unique if unique else None}
    if "species" in table.column_names:
        stats["long_tail"] = _long_tail(table)
    return stats


def _format_ratio(ratio: float | None) -> str:
    """IR as the paper prints it (whole numbers), with one decimal for small ratios."""
    return "-" if ratio is None else f"{ratio:,.0f}" if ratio >= 100 else f"{ratio:.1f}"


def _rank_table(stats: dict[str, Any]) -> Any:
    from rich.table import Table

    table = Table(title=f"By attribute (Table 2), {stats['samples']:,d} records")
    for name in ("attribute", "IR", "categories", "labelled", "labelled %", "most populated", "share %"):
        table.add_column(name, justify="left" if name in ("attribute", "most populated") else "right")
    for name, row in stats["ranks"].items():
        ir = _format_ratio(row["imbalance_ratio"])
        most = row["most"] or {"name": "-", "share_pct": 0.0}
        label = most["name"] if name != "dna_barcode" else f"{most['name'][:12]}..."
        table.add_row(
            name, ir, f"{row['categories']:,d}", f"{row['labelled']:,d}", f"{row['labelled_pct']:.1f}",
            str(label), f"{most['share_pct']:.1f}",
        )  # fmt: skip
    return table


def _split_table(stats: dict[str, Any]) -> Any:
    from rich.table import Table

    table = Table(title="By split (Table 3)")
    for name in ("split", "samples", "%", "barcodes", "species"):
        table.add_column(name, justify="left" if name == "split" else "right")
    for split, row in stats["splits"].items():
        share = 100 * row["samples"] / stats["samples"] if stats["samples"] else 0.0
        barcodes = "-" if row["barcodes"] is None else f"{row['barcodes']:,d}"
        species = "-" if row["species"] is None else f"{row['species']:,d}"
        table.add_row(split, f"{row['samples']:,d}", f"{share:.1f}", barcodes, species)
    return table


def format_stats(stats: dict[str, Any], *, width: int = 110) -> str:
    """The statistics as terminal tables (rich): by attribute, by split, then barcode totals."""
    from rich.console import Console

    buffer = io.StringIO()
    console = Console(file=buffer, width=width, force_terminal=False, color_system=None)
    console.print(_rank_table(stats))
    if "splits" in stats:
        console.print(_split_table(stats))
    if "barcodes" in stats and stats["barcodes"]["unique"]:
        barcodes = stats["barcodes"]
        console.print(
            f"unique barcodes: {barcodes['unique']:,d}; samples per barcode: {barcodes['samples_per_barcode']:.2f}"
        )
    return buffer.getvalue()


def plot_stats(stats: dict[str, Any], path: str | os.PathLike[str]) -> None:
    """PNG: split sizes (samples and unique barcodes, log scale) beside the species long tail (log-log)."""
    from matplotlib.figure import Figure  # no pyplot: no global backend, no figure registry

    fig = Figure(figsize=(13, 4.8), layout="constrained")
    left, right = fig.subplots(1, 2)
    splits = stats.get("splits", {})
    positions = range(len(splits))
    left.bar([p - 0.2 for p in positions], [r["samples"] for r in splits.values()], width=0.4, label="samples")
    left.bar([p + 0.2 for p in positions], [r["barcodes"] or 0 for r in splits.values()], width=0.4, label="barcodes")
    left.set(yscale="log", title="Split sizes", ylabel="count (log)")
    left.set_xticks(list(positions), list(splits), rotation=30, ha="right")
    left.legend()
    for name, sizes in stats.get("long_tail", {}).items():
        if sizes and (name == "all" or name in _CURVE_SPLITS):
            right.plot(range(1, len(sizes) + 1), sizes, label=name, lw=2.2 if name == "all" else 1.2)
    right.set(xscale="log", yscale="log", title="Long tail: species rank-frequency", xlabel="species rank")
    right.set(ylabel="samples per species")
    if right.lines:
        right.legend(fontsize="small")
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
