"""BIOSCAN-1M statistics as the seed README and the 1M repository print them (release -> 1M metadata -> **stats**).

`compute_stats_1m` turns a table from `release1m.read_metadata_1m` into a JSON-ready dict: per taxonomic rank the
number of subgroups and of not-classified records (the 1M code's "Taxonomy Group Ranking"), every order and every
Diptera family with its record count (the README's order list; the two experiments' classes are the 16 most
populated orders and the 40 most populated Diptera families), and the train / validation / test / no_split sizes of
the six partitionings. `format_stats_1m` renders it; `plot_stats_1m` draws the two class distributions (the 1M
paper's class-imbalance figure).
"""

from __future__ import annotations

import io
import os
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from bioscan_stream._atomic import atomic_path
from bioscan_stream.partition1m import DIPTERA_FAMILIES
from bioscan_stream.release1m import LABEL_COLUMNS_1M, PARTITIONINGS, SPLITS_1M

__all__ = ["STATS_1M_COLUMNS", "compute_stats_1m", "format_stats_1m", "plot_stats_1m", "INSECT_ORDERS"]

#: Classes of the order experiment (the README's 16 orders).
INSECT_ORDERS = 16
#: Columns `compute_stats_1m` reads.
STATS_1M_COLUMNS: tuple[str, ...] = (*LABEL_COLUMNS_1M, *PARTITIONINGS)


def _counts(column: pa.ChunkedArray | pa.Array) -> list[list[Any]]:
    """[name, count] of each non-missing value, largest first, ties by name."""
    counted = [(c["values"], c["counts"]) for c in pc.value_counts(column).to_pylist() if c["values"] is not None]
    return [[name, count] for name, count in sorted(counted, key=lambda kv: (-kv[1], kv[0]))]


def compute_stats_1m(table: pa.Table) -> dict[str, Any]:
    """Ranks, orders, Diptera families and partition sizes of a (cleaned) 1M metadata table."""
    ranks = {
        rank: {"subgroups": len(pc.drop_null(pc.unique(table[rank]))), "not_classified": table[rank].null_count}
        for rank in LABEL_COLUMNS_1M
        if rank in table.column_names
    }
    diptera = table.filter(pc.fill_null(pc.equal(table["order"], "Diptera"), False))
    partitions = {}
    for name in PARTITIONINGS:
        if name in table.column_names:
            counted = {c["values"]: c["counts"] for c in pc.value_counts(table[name]).to_pylist()}
            partitions[name] = {split: int(counted.get(split, 0)) for split in SPLITS_1M}
    return {
        "records": table.num_rows,
        "ranks": ranks,
        "orders": _counts(table["order"]),
        "diptera_families": _counts(diptera["family"]),
        "experiments": {"insect_order": INSECT_ORDERS, "diptera_family": DIPTERA_FAMILIES},
        "partitionings": partitions,
    }


def _class_table(title: str, rows: list[list[Any]], chosen: int) -> Any:
    from rich.table import Table

    table = Table(title=title)
    for name in ("#", "name", "records", f"top {chosen}"):
        table.add_column(name, justify="left" if name == "name" else "right")
    for k, (name, count) in enumerate(rows, start=1):
        table.add_row(str(k), str(name), f"{count:,d}", "yes" if k <= chosen else "-")
    return table


def format_stats_1m(stats: dict[str, Any], *, width: int = 110) -> str:
    """Terminal tables: taxonomy group ranking, orders, Diptera families (experiment classes marked), partitions."""
    from rich.console import Console
    from rich.table import Table

    buffer = io.StringIO()
    console = Console(file=buffer, width=width, force_terminal=False, color_system=None)
    ranking = Table(title=f"BIOSCAN-1M: {stats['records']:,d} records, taxonomy group ranking")
    for name in ("rank", "subgroups", "not classified"):
        ranking.add_column(name, justify="left" if name == "rank" else "right")
    for rank, row in stats["ranks"].items():
        ranking.add_row(rank, f"{row['subgroups']:,d}", f"{row['not_classified']:,d}")
    console.print(ranking)
    console.print(_class_table("Orders", stats["orders"], stats["experiments"]["insect_order"]))
    console.print(_class_table("Diptera families", stats["diptera_families"], stats["experiments"]["diptera_family"]))
    parts = Table(title="Partitionings (records per split)")
    for name in ("partitioning", *SPLITS_1M):
        parts.add_column(name, justify="left" if name == "partitioning" else "right")
    for name, row in stats["partitionings"].items():
        parts.add_row(name, *(f"{row[s]:,d}" for s in SPLITS_1M))
    console.print(parts)
    return buffer.getvalue()


def plot_stats_1m(stats: dict[str, Any], path: str | os.PathLike[str]) -> None:
    """PNG: records per order (top 16) and per Diptera family (top 40), log scale."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(13, 7), layout="constrained")
    for axis, key, top, title in zip(
        fig.subplots(2, 1), ("orders", "diptera_families"), (INSECT_ORDERS, DIPTERA_FAMILIES),
        ("Insect orders", "Diptera families"), strict=True,
    ):  # fmt: skip
        rows = stats[key][:top]
        axis.bar(range(len(rows)), [count for _, count in rows])
        axis.set_xticks(range(len(rows)), [name for name, _ in rows], rotation=60, ha="right", fontsize="small")
        axis.set(yscale="log", ylabel="records (log)", title=f"{title}: the {top} most populated")
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
