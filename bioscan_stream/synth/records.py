"""Records of the synthetic release: barcodes (haplotypes), label depth, sites, ids and sizes -> Arrow rows.

Sits between the tree (`taxonomy.py`, `barcodes.py`, `geography.py`) and the writer (`release.py`):
`build_world` fixes everything per record as small integer arrays (memory ~40 bytes per record), and
`record_table(world, rows, splits)` turns any subset of rows into the 23 metadata columns plus the true box,
so the release can be written chunk by chunk.

How labels are made (paper Table 2, A4.3, A4.4): records of a species share haplotypes (about 2 records per
unique barcode, one dominant haplotype); every haplotype gets one label depth, so all records with the same
barcode carry the same labels. Depths are handed out by quota over a weighted random order of haplotypes
(weights per order/family: Lepidoptera named deeper, Cecidomyiidae almost never below family), so the labelled
share per rank lands on the targets at any sample size: class 99.9%, order 99.7%, family 95.8%,
subfamily 28.6%, genus 23.8%, species 9.2%. A depth that would end on an `unassigned <Family>` filler stops
at family instead. `inferred_ranks` marks ~3% of records whose deepest labels were copied from a
same-barcode record.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from bioscan_stream.constants import ORIGINAL_SIZE, RANKS
from bioscan_stream.layout import chunk_for
from bioscan_stream.sizes import size_fields
from bioscan_stream.synth._taxa import ORDERS
from bioscan_stream.synth.barcodes import BarcodeModel, add_noise, assign_bins, build_barcode_model, to_strings
from bioscan_stream.synth.geography import MISSING_PROVINCE, Sites, build_sites
from bioscan_stream.synth.taxonomy import Taxonomy, build_taxonomy

__all__ = ["World", "build_world", "record_table", "true_taxonomy", "BOX_COLUMNS", "TRUE_RANKS", "TRUE_COLUMNS"]

#: Share of records labelled down to exactly each depth (0 = phylum only .. 6 = species), Table 2.
DEPTH_SHARE = (0.001, 0.002, 0.039, 0.672, 0.048, 0.146, 0.092)
#: Extra columns (beyond the 23) that carry the true box on the 1024x768 original.
BOX_COLUMNS: tuple[str, ...] = ("width_original", "height_original", "x0", "y0", "x1", "y1")
#: Ranks whose true names (before label masking) the images are drawn from.
TRUE_RANKS: tuple[str, ...] = ("order", "family", "genus", "species")
#: Side columns of the spooled release that carry them (never written to the metadata CSV / JSON-LD).
TRUE_COLUMNS: tuple[str, ...] = tuple(f"true_{rank}" for rank in TRUE_RANKS)
_HAPLOTYPE_RATE = 0.6  #: chance that a further record of a species starts a new haplotype (~2 per barcode)
_INFERRED_RATE = 0.05  #: records (not first of their barcode) whose deeper labels were inferred
_BIOSCAN_1M_SHARE = 0.224  #: insect records that were in BIOSCAN-1M (1,128,313 of 5,038,818)
_MISSING_SIZE = 0.007  #: records without `image_measurement_value` (< 1%, A2.2)


@dataclass(frozen=True)
class World:
    """Everything needed to write any row: the tree, the DNA model, and per-haplotype / per-record arrays."""

    tax: Taxonomy
    dna: BarcodeModel
    sites: Sites
    bins: list[str]
    hap_species: np.ndarray
    hap_local: np.ndarray
    hap_depth: np.ndarray
    hap_bin: np.ndarray
    rec_hap: np.ndarray  #: haplotype per record, in output row order
    rec_inferred: np.ndarray
    rec_site: np.ndarray
    rec_no_province: np.ndarray  #: province left empty (~1.8%, Table A4)
    rec_box: np.ndarray  #: (n, 4) int x0, y0, x1, y1
    rec_pixels: np.ndarray  #: mask pixel count, -1 = missing
    rec_1m: np.ndarray  #: index in BIOSCAN-1M, -1 = none
    processid: pa.Array
    sampleid: pa.Array

    @property
    def samples(self) -> int:
        """Number of records."""
        return len(self.rec_hap)


# ---------------------------------------------------------------------------------------------- haplotypes
def _haplotypes(size: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per record its haplotype id; per haplotype its species and local index (0 = dominant haplotype)."""
    n_haps = 1 + rng.binomial(np.maximum(size - 1, 0), _HAPLOTYPE_RATE)
    rec_species = np.repeat(np.arange(len(size)), size)
    local = np.floor(n_haps[rec_species] * rng.random(len(rec_species)) ** 1.8).astype(np.int64)
    key = rec_species.astype(np.int64) * (int(n_haps.max()) + 1) + local
    unique, rec_hap = np.unique(key, return_inverse=True)
    return rec_hap, unique // (int(n_haps.max()) + 1), unique % (int(n_haps.max()) + 1)


def _quota(key: np.ndarray, weight: np.ndarray, shares: tuple[float, ...], total: int) -> np.ndarray:
    """Class per item: items sorted by descending key fill `shares` of `total` weight in turn (last = rest)."""
    order = np.argsort(-key, kind="stable")
    cum = np.cumsum(weight[order]) / total
    bounds = np.cumsum(shares)[:-1]
    labels = np.empty(len(key), dtype=np.int64)
    labels[order] = np.searchsorted(bounds, cum - 0.5 * weight[order] / total)
    return labels


def _depths(tax: Taxonomy, hap_species: np.ndarray, hap_size: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Label depth per haplotype (0 = phylum .. 6 = species) by weighted quota; see the module docstring."""
    path = tax.species_path()
    total = int(hap_size.sum())
    order_w = np.array([ORDERS[o].identified for o in range(len(ORDERS))]) ** 0.5
    key1 = np.log(rng.random(len(tax.species_genus)))[hap_species] / order_w[path["order"][hap_species]]
    key1 += 0.3 * np.log(rng.random(len(hap_species)))
    s = DEPTH_SHARE
    depth = 2 - _quota(key1, hap_size, (1 - s[0] - s[1] - s[2], s[2], s[1], s[0]), total)
    family_w = tax.family_identified[path["family"][hap_species]]
    key2 = np.log(rng.random(len(tax.species_genus)))[hap_species] / family_w + 0.25 * np.log(rng.random(len(key1)))
    key2[depth < 2] = -np.inf
    deep = 6 - _quota(key2, hap_size, (s[6], s[5], s[4], 1.0 - s[6] - s[5] - s[4]), total)
    depth = np.where(depth == 2, deep, np.where(depth == 1, 2, np.where(depth == 0, 1, 0)))
    unassigned = tax.subfamily_unassigned[path["subfamily"][hap_species]]
    depth[(depth == 4) & unassigned] = 3
    return depth.astype(np.int8)


def _inferred(rec_hap: np.ndarray, hap_depth: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """`inferred_ranks` per record: 0, or k when the ranks from (7 - k) down were copied (A4.4's codes 1-6).

    Only records that share their barcode with an earlier record can have copied labels.
    """
    order = np.argsort(rec_hap, kind="stable")
    not_first = np.zeros(len(rec_hap), dtype=bool)
    not_first[order[1:]] = rec_hap[order[1:]] == rec_hap[order[:-1]]
    depth = hap_depth[rec_hap].astype(np.int64)
    code = np.minimum(6, 7 - depth + rng.geometric(0.55, size=len(rec_hap)) - 1)
    chosen = not_first & (depth > 0) & (rng.random(len(rec_hap)) < _INFERRED_RATE)
    return np.where(chosen, code, 0).astype(np.int8)


# ---------------------------------------------------------------------------------------------- where and who
def _record_sites(sites: Sites, rec_species: np.ndarray, n_species: int, rng: np.random.Generator) -> np.ndarray:
    """Site per record: 85% from the species' home country (species are regional), else anywhere."""
    home = rng.choice(len(sites.country_names), size=n_species, p=sites.country_share)
    anywhere = rng.choice(len(sites.country_names), size=len(rec_species), p=sites.country_share)
    country = np.where(rng.random(len(rec_species)) < 0.85, home[rec_species], anywhere)
    order = np.argsort(sites.country, kind="stable")
    sorted_country, sorted_weight = sites.country[order], sites.weight[order]
    within = np.concatenate([np.cumsum(sorted_weight[sorted_country == c]) for c in range(len(sites.country_names))])
    ladder = sorted_country + np.minimum(within, 1.0 - 1e-12)
    picked = np.searchsorted(ladder, country + rng.random(len(country)) * (1 - 1e-9))
    return order[np.minimum(picked, len(order) - 1)]


def _ids(site: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, pa.Array, pa.Array]:
    """Row order (grouped by BOLD project) and processid / sampleid in the real formats.

    processid = project code + running number + `-` + 2-digit year (`AACTA1040-20`); sampleid = plate +
    well (`BIOUG07089-A06`, some `CBG-`). Projects are tied to sites, two per site.
    """
    n_projects = 2 * (int(site.max()) + 1)
    project = 2 * site + (rng.random(len(site)) < 0.4)
    codes: dict[str, None] = {}
    while len(codes) < n_projects:
        row = rng.integers(0, 26, size=5).tolist()
        codes.setdefault("".join(chr(65 + c) for c in row[: 4 + row[4] % 2]))
    years = rng.choice(np.arange(12, 24), size=n_projects, p=np.linspace(1, 3, 12) / np.linspace(1, 3, 12).sum())
    row_order = np.lexsort((rng.random(len(site)), rng.permutation(n_projects)[project]))
    project = project[row_order]
    first = np.r_[0, np.flatnonzero(project[1:] != project[:-1]) + 1]
    number = np.arange(len(project)) - np.repeat(first, np.diff(np.r_[first, len(project)]))
    number += rng.integers(1, 400, size=n_projects)[project]
    processid = pc.binary_join_element_wise(
        pa.array(list(codes)).take(pa.array(project)),
        pc.cast(pa.array(number), pa.string()),
        "-",
        pc.cast(pa.array(years).take(pa.array(project)), pa.string()),
        "",
    )
    plate, well = np.divmod(np.arange(len(project)) + 95 * int(rng.integers(1, 900)), 95)
    prefix = np.where(rng.random(n_projects) < 0.85, "BIOUG", "CBG-")[project]
    sampleid = pc.binary_join_element_wise(
        pa.array(prefix),
        pc.utf8_lpad(pc.cast(pa.array(plate), pa.string()), 5, "0"),
        "-",
        pa.array(np.frombuffer(b"ABCDEFGH", np.uint8)[well // 12].view("S1").astype(str)),
        pc.utf8_lpad(pc.cast(pa.array(well % 12 + 1), pa.string()), 2, "0"),
        "",
    )
    return row_order, processid, sampleid


def _boxes(tax: Taxonomy, rec_species: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """True box (x0, y0, x1, y1) on the 1024x768 original and mask pixel count, sized by taxon.

    log length = order's typical length + family, genus and species offsets + individual noise: organisms
    run from tiny mites (~1/30 of the frame) to frame-filling moths.
    """
    path = {rank: idx[rec_species] for rank, idx in tax.species_path().items()}
    order_len = np.log([o.length_px for o in ORDERS])[path["order"]]
    offsets = [
        rng.normal(0, sd, size=n)
        for sd, n in ((0.35, len(tax.family_names)), (0.2, len(tax.genus_names)), (0.1, len(tax.species_genus)))
    ]
    log_len = order_len + offsets[0][path["family"]] + offsets[1][path["genus"]] + offsets[2][path["species"]]
    length = np.clip(np.exp(log_len + rng.normal(0, 0.2, size=len(rec_species))), 24, 1000)
    aspect = np.clip(np.array([o.aspect for o in ORDERS])[path["order"]] * rng.lognormal(0, 0.15, len(length)), 0.08, 1)
    short = np.maximum(12, length * aspect)
    flat = rng.random(len(length)) < 0.7
    w = np.minimum(np.where(flat, length, short), ORIGINAL_SIZE[0] - 4).astype(np.int64)
    h = np.minimum(np.where(flat, short, length), ORIGINAL_SIZE[1] - 4).astype(np.int64)
    cx = np.clip(rng.normal(512, 90, len(w)), w / 2 + 1, ORIGINAL_SIZE[0] - w / 2 - 1)
    cy = np.clip(rng.normal(384, 70, len(h)), h / 2 + 1, ORIGINAL_SIZE[1] - h / 2 - 1)
    x0, y0 = np.floor(cx - w / 2).astype(np.int64), np.floor(cy - h / 2).astype(np.int64)
    box = np.stack([x0, y0, x0 + w, y0 + h], axis=1)
    pixels = np.round(w * h * np.clip(rng.normal(0.45, 0.08, len(w)), 0.15, 0.85)).astype(np.int64)
    pixels[rng.random(len(w)) < _MISSING_SIZE] = -1
    return box, pixels


def _bioscan_1m(tax: Taxonomy, rec_species: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Row in BIOSCAN-1M for ~22% of the insect records (distinct indices), -1 for the rest."""
    insect = tax.order_class[tax.family_order[tax.subfamily_family[tax.genus_subfamily[tax.species_genus]]]] == 0
    chosen = insect[rec_species] & (rng.random(len(rec_species)) < _BIOSCAN_1M_SHARE)
    index = np.full(len(rec_species), -1, dtype=np.int64)
    count = int(chosen.sum())
    index[chosen] = rng.permutation(int(count / 0.97) + 1)[:count]
    return index


# ---------------------------------------------------------------------------------------------- assembly
def build_world(samples: int, *, seed: int = 0) -> World:
    """Draw the tree, haplotypes, label depths, BINs, sites, ids and boxes of a `samples`-record release."""
    if samples < 1:
        raise ValueError(f"samples must be >= 1, got {samples}")
    tax = build_taxonomy(samples, seed=seed)
    rng = np.random.default_rng([seed, 4])
    rec_hap, hap_species, hap_local = _haplotypes(tax.species_size, rng)
    hap_size = np.bincount(rec_hap, minlength=len(hap_species))
    hap_depth = _depths(tax, hap_species, hap_size, rng)
    hap_bin, bins = assign_bins(tax, hap_species, hap_local, seed=seed)
    sites = build_sites(np.random.default_rng([seed, 5]))
    rec_species = hap_species[rec_hap]
    site = _record_sites(sites, rec_species, len(tax.species_genus), rng)
    row_order, processid, sampleid = _ids(site, rng)
    rec_hap, site, rec_species = rec_hap[row_order], site[row_order], rec_species[row_order]
    box, pixels = _boxes(tax, rec_species, rng)
    return World(
        tax=tax,
        dna=build_barcode_model(tax, seed=seed),
        sites=sites,
        bins=bins,
        hap_species=hap_species,
        hap_local=hap_local,
        hap_depth=hap_depth,
        hap_bin=hap_bin,
        rec_hap=rec_hap,
        rec_inferred=_inferred(rec_hap, hap_depth, rng),
        rec_site=site,
        rec_no_province=rng.random(len(site)) < MISSING_PROVINCE,
        rec_box=box,
        rec_pixels=pixels,
        rec_1m=_bioscan_1m(tax, rec_species, rng),
        processid=processid,
        sampleid=sampleid,
    )


def _barcodes(world: World, haps: np.ndarray) -> pa.Array:
    """Barcode strings of the given haplotypes (computed on demand, chunk by chunk)."""
    unique, inverse = np.unique(haps, return_inverse=True)
    species = world.hap_species[unique]
    sp_unique, sp_inverse = np.unique(species, return_inverse=True)
    core = world.dna.haplotypes(species, world.hap_local[unique], world.dna.species(sp_unique)[sp_inverse])
    strings = to_strings(*add_noise(core, unique, world.dna))
    return strings.take(pa.array(inverse))


def _rank_names(tax: Taxonomy) -> tuple[list[str], ...]:
    """Names per rank, in `RANKS` order (phylum .. species)."""
    return (
        ["Arthropoda"],
        tax.class_names,
        tax.order_names,
        tax.family_names,
        tax.subfamily_names,
        tax.genus_names,
        tax.species_names,
    )


def _labels(world: World, rec_species: np.ndarray, depth: np.ndarray) -> dict[str, pa.Array]:
    """The 7 rank columns and `taxon` (the deepest label) for records of the given species and depths."""
    names = _rank_names(world.tax)
    path = world.tax.species_path()
    index = [np.zeros(len(rec_species), dtype=np.int64)] + [path[rank][rec_species] for rank in RANKS[1:]]
    columns = {}
    for level, (rank, values) in enumerate(zip(RANKS, names, strict=True)):
        columns[rank] = pa.array(values).take(pa.array(index[level], mask=depth < level))
    offsets = np.cumsum([0] + [len(v) for v in names])
    deepest = np.choose(depth, index) + offsets[depth]
    columns["taxon"] = pa.array([v for values in names for v in values]).take(pa.array(deepest))
    return columns


def true_taxonomy(world: World, rows: np.ndarray) -> pa.Table:
    """True order, family, genus and species (`TRUE_RANKS`) of `rows`, before label masking.

    Every specimen belongs to a species even when its record is labelled only to order (91% of records have no
    species label): the images are drawn from these names, while the metadata keeps the masked labels.
    """
    rec_species = world.hap_species[world.rec_hap[rows]]
    path = world.tax.species_path()
    names = dict(zip(RANKS, _rank_names(world.tax), strict=True))
    return pa.table({rank: pa.array(names[rank]).take(pa.array(path[rank][rec_species])) for rank in TRUE_RANKS})


def _split_and_chunk(processid: pa.Array, splits: np.ndarray | None) -> tuple[pa.Array, pa.Array]:
    """`split` and `chunk` columns (both empty before partitioning); chunks follow `layout.chunk_for`."""
    if splits is None:
        return pa.nulls(len(processid), pa.string()), pa.nulls(len(processid), pa.string())
    chunks = [chunk_for(p, s) for p, s in zip(processid.to_pylist(), splits, strict=True)]
    return pa.array(splits, pa.string()), pa.array(chunks, pa.string())


def record_table(world: World, rows: np.ndarray, splits: np.ndarray | None = None) -> pa.Table:
    """The 23 metadata columns plus the true box (`BOX_COLUMNS`) for `rows` (indices in row order).

    `splits` gives each row's split name (None: leave `split` and `chunk` empty, as before partitioning).
    """
    hap = world.rec_hap[rows]
    rec_species = world.hap_species[hap]
    depth = world.hap_depth[hap].astype(np.int64)
    labels = _labels(world, rec_species, depth)
    site = world.rec_site[rows]
    province = pa.array(world.sites.province).take(pa.array(site))
    no_province = world.rec_no_province[rows]
    bin_index = world.hap_bin[hap]
    box = world.rec_box[rows]
    area, scale = size_fields(box.T, ORIGINAL_SIZE)
    processid = world.processid.take(pa.array(rows))
    split_col, chunk = _split_and_chunk(processid, splits)
    pixels = world.rec_pixels[rows]
    index_1m = world.rec_1m[rows]
    columns = {
        "processid": processid,
        "sampleid": world.sampleid.take(pa.array(rows)),
        "taxon": labels["taxon"],
        **{rank: labels[rank] for rank in RANKS},
        "dna_bin": pa.array(world.bins + [""]).take(pa.array(bin_index, mask=bin_index < 0)),
        "dna_barcode": _barcodes(world, hap),
        "country": pa.array(world.sites.country_names).take(pa.array(world.sites.country[site])),
        "province_state": pc.if_else(pa.array(no_province), pa.scalar(None, pa.string()), province),
        "coord-lat": pa.array(world.sites.lat[site]),
        "coord-lon": pa.array(world.sites.lon[site]),
        "image_measurement_value": pa.array(pixels, mask=pixels < 0),
        "area_fraction": pa.array(area, pa.float64()),
        "scale_factor": pa.array(scale, pa.float64()),
        "inferred_ranks": pa.array(world.rec_inferred[rows].astype(np.int64)),
        "split": split_col,
        "index_bioscan_1M_insect": pa.array(index_1m, mask=index_1m < 0),
        "chunk": chunk,
        "width_original": pa.array(np.full(len(rows), ORIGINAL_SIZE[0], dtype=np.int64)),
        "height_original": pa.array(np.full(len(rows), ORIGINAL_SIZE[1], dtype=np.int64)),
        **{name: pa.array(box[:, i]) for i, name in enumerate(("x0", "y0", "x1", "y1"))},
    }
    return pa.table(columns)
