"""COI-like DNA barcodes that evolve down the synthetic tree, and their BINs.

Part of the synthetic release: `records.py` groups records into haplotypes (unique barcodes) and asks this
module for their sequences and BINs. A real 658-bp COI barcode (CANADA-1.5M record CNGBN928-14, *Ablabesmyia
aspera*, via the MIT-licensed BarcodeBERT data) is the root; every node of the tree (class, order, family,
subfamily, genus, species) copies its parent and substitutes bases under an F81 model with codon-position
rates (3rd positions ~15x the 2nd) and gamma site heterogeneity, drawing new bases from the real per-position
composition (3rd positions ~89% A+T), tilted towards A+T or G+C by a bias that drifts down the tree
(`AT_DRIFT`), so related lineages share a base composition as real ones do. Branch lengths make distances
nest: haplotypes of a species differ by < 1%, congeneric species by several %, families and orders by 15-25%
(saturating, as real COI does).

Randomness is counter-based (a splitmix64 hash of seed, level and node id), so any node's sequence can be
computed on its own, in any order and any chunk: the release streams haplotypes chunk by chunk and only the
genus-level sequences are held in memory. Haplotype `j` of a species carries a signature of up to three
substitutions at 3rd positions encoding `j`, so distinct haplotypes are distinct barcodes by construction.
Then real-world noise: leading `N` runs, internal `N`s and IUPAC letters, trimmed ends (~500 bp) and longer
reads (up to ~720 bp), and a start that varies from read to read (`START_SHIFTS`).

Why the start varies (measured on ../shared/fixtures/real_dna, 5,000 CANADA-1.5M barcodes, 2026-11-22): aligned
to the root by the best ungapped shift within +-60 bp, only 42% of real reads begin at the root's first base;
22% begin one base later, 7% ten bases later, and the rest spread over -15..+49 (the table below), and 86% of
the species show two or more different starts among 5 records. BarcodeBERT tokenises non-overlapping k-mers
from the first base, so a start shift changes the k-mer frame: with every read starting at the same base (the
earlier version of this module), a bag of non-overlapping 4-mers (what a mean-pooled random-init BERT
approximates) found the genus of 72% of unseen species on a 100k release and random init 44-56% (a 300-step
MLM model: 31%), where on the real fixture random init finds the family of 26.9% of held-out species and
pretraining helps (40.5%). With the shifts (and the drift below), random init falls to 26-29% and the 4-mer
bag to 47%.

Why composition drifts (same fixture): the A+T share of a species' barcode varies with its lineage (sd 0.042
between the 100 species, 0.004 within a species, 0.022 between the 40 Diptera species; order means from 0.56
to 0.76), while with one stationary composition for the whole tree it varied 4x less (sd 0.010 between species,
order means 0.63-0.67). With the drift (100k release, seed 0): sd 0.029 between species, 0.019 within Diptera,
mean 0.70 (real 0.68).
"""

from __future__ import annotations

import string
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from bioscan_stream.synth.taxonomy import Taxonomy

__all__ = ["CORE_LENGTH", "BarcodeModel", "build_barcode_model", "add_noise", "to_strings", "assign_bins"]

CORE_LENGTH = 658
#: Start of each read relative to the core's first base (> 0: the first bases are missing, < 0: extra bases
#: before it) and its frequency per 100 reads: the shifts of the real fixture barcodes (see the module docstring).
START_SHIFTS = {-15: 1, -9: 1, -6: 3, -2: 1, -1: 5, 0: 42, 1: 22, 3: 1, 8: 2, 9: 1, 10: 7, 13: 4, 16: 1, 25: 2, 37: 2}
_MAX_LEAD = -min(START_SHIFTS)
#: End of the longest read-through, in core coordinates.
_READ_END = 720
#: Widest barcode written (the longest read-through plus the longest leading extension).
MAX_LENGTH = _READ_END + _MAX_LEAD
_ROOT = (
    "AACCCTATATTTTATTTTCGGGGCTTGATCTGGAATAGTGGGTACCTCCCTTAGTATCCTTATTCGTACAGAACTTGGGCACCCCGGAGCCTTAATTGGAGACG"
    "ATCAAATTTATAATGTAATTGTAACAGCTCATGCTTTTGTTATAATTTTTTTTATAGTAATGCCTATTTTGATTGGAGGGTTTGGGAATTGACTAGTACCCCTT"
    "ATACTAGGAGCCCCAGATATAGCTTTTCCACGAATAAATAATATAAGATTTTGATTACTACCCCCTTCTTTAACTTTACTTTTATCTAGCTCTATCGTTGAAAAT"
    "GGAGCTGGAACTGGATGAACAGTATATCCCCCATTGGCCTCTGGAATCGCTCATGCCGGAGCTTCTGTTGATTTAGCTATTTTCTCGCTACACTTAGCAGGTATT"
    "TCTTCTATTTTAGGAGCTGTAAATTTTATTACTACTGTTATTAATATGCGCTCAACAGGAATTACACTAGATCGAATGCCACTATTTGTTTGATCTGTTATTAT"
    "TACAGCTGTTTTATTATTATTATCTTTACCAGTATTAGCTGGAGCGATTACTATGCTTTTAACAGACCGGAATTTAAACACATCGTTTTTTGACCCTGCTGGAG"
    "GGGGAGACCCTATTTTATATCAACACTTATTT"
)
_BASES = np.frombuffer(b"ACGT", dtype=np.uint8)
_IUPAC = np.frombuffer(b"RYKMSWBDHV", dtype=np.uint8)
_N = ord("N")
#: Base composition per codon class of the real fixture barcodes (index % 3: 0 = 3rd, 1 = 1st, 2 = 2nd position).
_COMPOSITION = np.array([[0.422, 0.063, 0.047, 0.468], [0.289, 0.142, 0.278, 0.291], [0.144, 0.254, 0.163, 0.439]])
_CODON_RATE = np.array([1.0, 0.22, 0.065])
#: Expected substitutions per (average) site on the branch into each level.
BRANCH: dict[str, float] = {
    "class": 0.30,
    "order": 0.22,
    "family": 0.12,
    "subfamily": 0.03,
    "genus": 0.035,
    "species": 0.08,
}
_LEVEL_SALT = {name: i + 1 for i, name in enumerate((*BRANCH, "haplotype", "noise"))}
#: Standard deviation of the step, per tree level (class .. species), of a lineage's A+T log-odds bias: with
#: 1.5, species' A+T shares spread like the real fixture's within an order (see the module docstring).
AT_DRIFT = 1.5
#: 3rd-codon sites that carry the haplotype signature (inside every read: after leading N, before trimming).
_SIGNATURE_SITES = np.arange(60, 480, 3)[:138].reshape(3, 46)
_SIGNATURE_BASE = 46
#: Candidate substitution events per species branch (expected events: BRANCH["species"] * CORE_LENGTH ~ 53).
_EVENTS = 96

_M1, _M2, _GOLD = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB), np.uint64(0x9E3779B97F4A7C15)


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser on a uint64 array (wrapping arithmetic)."""
    x = x ^ (x >> np.uint64(30))
    x = x * _M1
    x = x ^ (x >> np.uint64(27))
    x = x * _M2
    return x ^ (x >> np.uint64(31))


def _uniform(keys: np.ndarray, salt: int, width: int) -> np.ndarray:
    """(len(keys), width) uniforms in [0, 1), a pure function of (key, salt, column)."""
    base = _mix(keys.astype(np.uint64) * _GOLD + np.uint64(salt & 0xFFFFFFFFFFFF))
    cols = np.arange(1, width + 1, dtype=np.uint64) * _GOLD
    return (_mix(base[:, None] ^ cols[None, :]) >> np.uint64(11)).astype(np.float64) * 2.0**-53


@dataclass(frozen=True)
class BarcodeModel:
    """Site rates, per-site composition, and the genus-level sequences (base codes 0..3) of one release."""

    seed: int
    site_rate: np.ndarray  #: relative substitution rate per core site (mean 1)
    cum_composition: np.ndarray  #: (3, CORE_LENGTH) cumulative A, A+C, A+C+G per site
    genus_seqs: np.ndarray  #: (n_genera, CORE_LENGTH) uint8 codes
    species_genus: np.ndarray
    genus_bias: np.ndarray  #: A+T log-odds bias of each genus's lineage (substitutions draw with it)

    def _salt(self, level: str) -> int:
        return (self.seed * 1_000_003 + _LEVEL_SALT[level]) * 7919

    def species(self, ids: np.ndarray) -> np.ndarray:
        """Core sequences (codes 0..3) of the given species, computed on demand."""
        genus = self.species_genus[ids]
        bias = _drift(self.genus_bias[genus], ids, self._salt("species"))
        return _remove_stops(
            _evolve_sparse(self.genus_seqs[genus], ids, self._salt("species"), BRANCH["species"], self, bias=bias)
        )

    def haplotypes(self, species: np.ndarray, local: np.ndarray, species_seqs: np.ndarray) -> np.ndarray:
        """Core haplotype sequences: the species' sequence plus the signature of `local` and 0-3 extra changes.

        `species_seqs` are the rows of `species(...)` for each entry of `species`.
        """
        seqs = species_seqs.copy()
        rows = np.arange(len(species))
        rot = _mix(species.astype(np.uint64) + np.uint64(self._salt("haplotype"))) % np.uint64(_SIGNATURE_BASE)
        digits = local.astype(np.int64)
        for group in range(3):
            digit = digits % _SIGNATURE_BASE
            digits //= _SIGNATURE_BASE
            site = _SIGNATURE_SITES[group][(digit - 1 + rot.astype(np.int64)) % _SIGNATURE_BASE]
            hit = digit > 0
            seqs[rows[hit], site[hit]] = (seqs[rows[hit], site[hit]] + 1 + (species[hit] + digit[hit]) % 3) % 4
        u = _uniform(species * 131_071 + local, self._salt("haplotype"), 6)
        free = np.setdiff1d(np.arange(CORE_LENGTH), _SIGNATURE_SITES.ravel())
        weight = np.cumsum(self.site_rate[free])
        for k in range(3):
            site = free[np.minimum(np.searchsorted(weight, u[:, k] * weight[-1]), len(free) - 1)]
            hit = u[:, 3 + k] < (0.5, 0.25, 0.1)[k]
            seqs[rows[hit], site[hit]] = (seqs[rows[hit], site[hit]] + 1 + (local[hit] % 3)) % 4
        return _remove_stops(seqs)


def _remove_stops(seqs: np.ndarray) -> np.ndarray:
    """Turn in-frame stop codons (TAA, TAG in the invertebrate mitochondrial code) into lysine (AAA, AAG), in place.

    Real COI barcodes have none; the reading frame starts at index 1 (index % 3 == 0 is a 3rd position, see
    `_COMPOSITION`). Only 1st positions change, so haplotype signatures (3rd positions) stay intact.
    """
    first, second, third = seqs[:, 1:656:3], seqs[:, 2:657:3], seqs[:, 3:658:3]
    first[(first == 3) & (second == 0) & ((third == 0) | (third == 2))] = 0
    return seqs


def _drift(parent_bias: np.ndarray, keys: np.ndarray, salt: int) -> np.ndarray:
    """A+T bias of each child lineage: its parent's plus a normal step of sd `AT_DRIFT`."""
    u = _uniform(keys, salt + 2, 2)
    normal = np.sqrt(-2.0 * np.log1p(-u[:, 0])) * np.cos(2.0 * np.pi * u[:, 1])
    return parent_bias + AT_DRIFT * normal


def _draw_bases(v: np.ndarray, cum: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """Bases (codes 0..3) from uniforms `v`, per-site cumulative composition `cum` (3, ...) tilted by `bias`.

    The tilt multiplies the odds of A and T by exp(bias) (broadcast against `v`).
    """
    at = np.exp(bias)
    p_a, p_c, p_g = cum[0], cum[1] - cum[0], cum[2] - cum[1]
    total = (p_a + 1.0 - cum[2]) * at + p_c + p_g
    first = p_a * at / total
    new = (v > first).astype(np.uint8)
    new += v > first + p_c / total
    new += v > first + (p_c + p_g) / total
    return new


def _evolve(
    parent: np.ndarray, keys: np.ndarray, salt: int, branch: float, model: BarcodeModel, *, bias: np.ndarray
) -> np.ndarray:
    """F81 substitutions along one branch for each row, new bases tilted by the row's A+T `bias`.

    Blocks of 4096 rows bound the temporaries.
    """
    out = parent.copy()
    p_change = 1.0 - np.exp(-branch * model.site_rate)
    for start in range(0, len(out), 4096):
        rows = slice(start, start + 4096)
        hit = _uniform(keys[rows], salt, CORE_LENGTH) < p_change
        v = _uniform(keys[rows], salt + 1, CORE_LENGTH)
        new = _draw_bases(v, model.cum_composition, bias[rows, None])
        out[rows] = np.where(hit, new, out[rows])
    return out


def _evolve_sparse(
    parent: np.ndarray, keys: np.ndarray, salt: int, branch: float, model: BarcodeModel, *, bias: np.ndarray
) -> np.ndarray:
    """The same substitution process as `_evolve` drawn as events (sites chosen by rate), ~5x cheaper.

    Each of `_EVENTS` candidate events happens with probability branch * CORE_LENGTH / _EVENTS (a binomial
    stand-in for the Poisson number of events); a later event at the same site overwrites an earlier one.
    """
    out = parent.copy()
    chance = min(1.0, branch * CORE_LENGTH / _EVENTS)
    cum_rate = np.cumsum(model.site_rate) / model.site_rate.sum()
    for start in range(0, len(out), 4096):
        block = slice(start, start + 4096)
        u = _uniform(keys[block], salt, 3 * _EVENTS)
        site = np.minimum(np.searchsorted(cum_rate, u[:, _EVENTS : 2 * _EVENTS]), CORE_LENGTH - 1)
        v = u[:, 2 * _EVENTS :]
        new = _draw_bases(v, model.cum_composition[:, site], bias[block, None])
        active = u[:, :_EVENTS] < chance
        rows = np.broadcast_to(np.arange(start, start + len(v))[:, None], site.shape)
        out[rows[active], site[active]] = new[active]
    return out


def build_barcode_model(tax: Taxonomy, *, seed: int = 0) -> BarcodeModel:
    """Evolve root -> classes -> orders -> families -> subfamilies -> genera and keep the genus sequences."""
    rng = np.random.default_rng([seed, 2])
    codon = np.arange(CORE_LENGTH) % 3
    rate = _CODON_RATE[codon] * rng.gamma(0.6, 1 / 0.6, size=CORE_LENGTH)
    cum = np.cumsum(_COMPOSITION[codon], axis=1)[:, :3].T.copy()
    none = np.empty((0, CORE_LENGTH), np.uint8)
    model = BarcodeModel(seed, rate / rate.mean(), cum, none, tax.species_genus, np.zeros(0))
    root = np.searchsorted(np.frombuffer(b"ACGT", np.uint8), np.frombuffer(_ROOT.encode(), np.uint8))
    seqs, bias = root.astype(np.uint8)[None, :], np.zeros(1)
    parents = {
        "class": np.zeros(len(tax.class_names), dtype=np.int64),
        "order": tax.order_class,
        "family": tax.family_order,
        "subfamily": tax.subfamily_family,
        "genus": tax.genus_subfamily,
    }
    for level, parent in parents.items():
        keys = np.arange(len(parent), dtype=np.int64)
        bias = _drift(bias[parent], keys, model._salt(level))
        seqs = _evolve(seqs[parent], keys, model._salt(level), BRANCH[level], model, bias=bias)
    return BarcodeModel(seed, model.site_rate, cum, seqs, tax.species_genus, bias)


def add_noise(core: np.ndarray, hap_ids: np.ndarray, model: BarcodeModel) -> tuple[np.ndarray, np.ndarray]:
    """Reads as sequenced: ASCII (n, MAX_LENGTH) and lengths, with trims, read-through, N runs and IUPAC letters.

    Noise never touches signature sites (internal noise shifts off them, runs sit after them, no start shift
    reaches them), so distinct haplotypes stay distinct strings. Rates: ~62% end at the core's end, ~28% are
    trimmed to 500-657 bp of core, ~10% read through up to 62 bp further; then the start shifts (`START_SHIFTS`);
    ~10% with a leading N run, ~7% with internal Ns, ~2% with a run of Ns, ~2% with IUPAC letters.
    Rare kinds of noise are applied to their rows only (this function runs on every haplotype of the release).
    """
    n = len(core)
    u = _uniform(hap_ids, model._salt("noise"), 16)
    ascii_ = np.empty((n, MAX_LENGTH), dtype=np.uint8)
    ascii_[:, :CORE_LENGTH] = _BASES[core]
    length = np.full(n, CORE_LENGTH, dtype=np.int64)
    trimmed = u[:, 0] < 0.28
    length[trimmed] = CORE_LENGTH - 1 - (u[trimmed, 1] ** 1.5 * 158).astype(np.int64)
    longer = np.flatnonzero(u[:, 0] > 0.90)
    length[longer] = CORE_LENGTH + 1 + (u[longer, 1] * (_READ_END - CORE_LENGTH - 1)).astype(np.int64)
    tail = _uniform(hap_ids[longer], model._salt("noise") + 1, _READ_END - CORE_LENGTH)
    third = model.cum_composition[:, 0]
    ascii_[longer, CORE_LENGTH:_READ_END] = _BASES[
        (tail > third[0]) + (tail > third[1]).astype(np.int64) + (tail > third[2])
    ]
    columns = np.arange(MAX_LENGTH)[None, :]
    run = np.flatnonzero(u[:, 11] < 0.02)
    start = 482 + (u[run, 9, None] * 40).astype(np.int64)
    stop = start + 5 + (u[run, 10, None] * 25).astype(np.int64)
    ascii_[run] = np.where((columns >= start) & (columns < stop), _N, ascii_[run])
    signature = np.zeros(MAX_LENGTH, dtype=bool)
    signature[_SIGNATURE_SITES.ravel()] = True
    rows = np.arange(n)
    for k, rate in enumerate((0.07, 0.05, 0.03, 0.02)):
        site = 50 + (u[:, 4 + k] * 440).astype(np.int64)
        site += signature[site]
        hit = u[:, 8] < rate
        ascii_[rows[hit], site[hit]] = _N
    site = 50 + (u[:, 12] * 440).astype(np.int64)
    site += signature[site]
    hit = u[:, 13] < 0.02
    ascii_[rows[hit], site[hit]] = _IUPAC[(u[hit, 14] * len(_IUPAC)).astype(np.int64)]
    shift = _shift_starts(ascii_, hap_ids, model)
    lead = np.flatnonzero(u[:, 2] < 0.10)
    # the run stops before the first signature site, wherever the start shift has moved it
    run_end = np.minimum(1 + (u[lead, 3] ** 2 * 45).astype(np.int64), _SIGNATURE_SITES.min() - shift[lead])
    ascii_[lead] = np.where(columns < run_end[:, None], _N, ascii_[lead])
    return ascii_, length - shift


def _shift_starts(ascii_: np.ndarray, hap_ids: np.ndarray, model: BarcodeModel) -> np.ndarray:
    """Move each read's start by a shift drawn from `START_SHIFTS`, in place; returns the shifts.

    A positive shift drops the first bases; a negative one prepends bases drawn from the 3rd-position
    composition (the primer-side flank is not modelled further). Only the columns before 60 move in or out,
    so the signature sites stay inside every read.
    """
    shifts = np.array(list(START_SHIFTS))
    cum = np.cumsum(list(START_SHIFTS.values())) / sum(START_SHIFTS.values())
    u = _uniform(hap_ids, model._salt("noise") + 2, 1 + _MAX_LEAD)
    shift = shifts[np.minimum(np.searchsorted(cum, u[:, 0], side="right"), len(shifts) - 1)]
    third = model.cum_composition[:, 0]
    flank = _BASES[(u[:, 1:] > third[0]) + (u[:, 1:] > third[1]).astype(np.int64) + (u[:, 1:] > third[2])]
    for value in np.unique(shift[shift != 0]).tolist():
        rows = np.flatnonzero(shift == value)
        if value > 0:
            ascii_[rows, :-value] = ascii_[rows, value:]
        else:
            ascii_[rows, -value:] = ascii_[rows, :value].copy()
            ascii_[rows, :-value] = flank[rows, :-value]
    return shift


def to_strings(ascii_: np.ndarray, length: np.ndarray) -> pa.Array:
    """Rows of an ASCII matrix cut to their lengths, as one Arrow string array (no per-row Python)."""
    keep = np.arange(ascii_.shape[1])[None, :] < length[:, None]
    data = np.ascontiguousarray(ascii_)[keep].tobytes()
    offsets = np.zeros(len(length) + 1, dtype=np.int32)
    np.cumsum(length, out=offsets[1:])
    return pa.StringArray.from_buffers(len(length), pa.py_buffer(offsets.tobytes()), pa.py_buffer(data))


def bin_names(count: int, rng: np.random.Generator) -> list[str]:
    """`count` distinct BIN codes in BOLD's style, `BOLD:AAA0001` .. `BOLD:AFZ9999`."""
    codes = rng.choice(6 * 26 * 9999, size=count, replace=False)
    second, rest = np.divmod(codes, 26 * 9999)
    third, number = np.divmod(rest, 9999)
    upper = string.ascii_uppercase
    triples = zip(second.tolist(), third.tolist(), number.tolist(), strict=True)
    return [f"BOLD:A{upper[a]}{upper[b]}{c + 1:04d}" for a, b, c in triples]


def assign_bins(
    tax: Taxonomy, hap_species: np.ndarray, hap_local: np.ndarray, *, seed: int = 0
) -> tuple[np.ndarray, list[str]]:
    """BIN index per haplotype (-1 = none) and the BIN codes: BINs track species, with splits and merges.

    ~4% of species with 3+ haplotypes split into two BINs (odd haplotypes), ~3% share the BIN of the species
    before them in the same genus (a merge), and ~0.3% of haplotypes carry no BIN (Table 2: 99.7% labelled).
    """
    rng = np.random.default_rng([seed, 3])
    n_species = len(tax.species_genus)
    n_haps = np.bincount(hap_species, minlength=n_species)
    species_bin = np.arange(n_species)
    order = np.argsort(tax.species_genus, kind="stable")
    same_genus = np.r_[False, tax.species_genus[order][1:] == tax.species_genus[order][:-1]]
    merge = same_genus & (rng.random(n_species) < 0.03)
    species_bin[order[merge]] = species_bin[order[np.flatnonzero(merge) - 1]]
    split = (n_haps >= 3) & (rng.random(n_species) < 0.04)
    split_bin = np.full(n_species, -1)
    split_bin[split] = n_species + np.arange(int(split.sum()))
    hap_bin = species_bin[hap_species]
    odd = split[hap_species] & (hap_local % 2 == 1)
    hap_bin[odd] = split_bin[hap_species[odd]]
    used, hap_bin = np.unique(hap_bin, return_inverse=True)
    hap_bin[rng.random(len(hap_bin)) < 0.003] = -1
    return hap_bin, bin_names(len(used), rng)
