"""The synthetic tree of life: Arthropoda > classes > orders > families > subfamilies > genera > species.

First step of the synthetic release (`release.py` -> `taxonomy` -> `barcodes` / `records`): it fixes the *true*
taxon of every species and how many records each species has. What a record's label shows (how deep it is
identified) is decided later per barcode in `records.py`.

Shape targets (paper Table 2, A2.3, A4.3): 10 classes, 55 orders with Diptera ~71% and Insecta ~98% of the
records, ~930 families with Cecidomyiidae ~18%; species sizes long-tailed (median 2 records, a few species
with ~0.7% of the records, capped so that small releases are not dominated by one species); genera without
a subfamily sit in `unassigned <Family>`; a share of genera are placeholders (`microMalaise01`,
`gelBioLep01`) and a share of species carry interim names in the real styles (`Megaselia Malaise4749`,
`Anastatus sp. GG28`, `Aristotelia BioLep531`, `Zatypota alborhombartaDHJ03`). The number of species grows
with the number of samples (about one per 16 records, like BINs), so absolute species sizes, and with them
the partition rules' behaviour, stay the same at any scale.
"""

from __future__ import annotations

import functools
import string
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from bioscan_stream.synth._taxa import FAMILY_IDENTIFIED, FAMILY_SUBFAMILIES, ORDERS

__all__ = ["Taxonomy", "TaxonomyConfig", "build_taxonomy"]


@dataclass(frozen=True)
class TaxonomyConfig:
    """Knobs of the tree; defaults are tuned so that the partition rules give the paper's split shares."""

    size_log_median: float = 0.55  #: log of the median species size (~1.7 records)
    size_log_sigma: float = 2.05  #: spread of log species size (mean ~16 records per species, like BINs)
    max_species_share: float = 0.007  #: largest BIN holds 0.69% of the records (Table A5)
    min_species_cap: int = 150  #: size cap for small releases
    species_per_genus: float = 3.0
    family_zipf: float = 1.15
    genus_zipf: float = 1.0
    no_subfamily_family: float = 0.25  #: families whose genera are all `unassigned <Family>`
    unassigned_genus: float = 0.15  #: genera without a subfamily in families that have subfamilies
    placeholder_genus: float = 0.035  #: genera that are themselves placeholders
    interim_species: float = 0.2  #: species of a named genus with an interim name (scaled up with size)


@dataclass(frozen=True)
class Taxonomy:
    """Names per rank and parent links; `species_*` arrays have one entry per true species."""

    class_names: list[str]
    order_names: list[str]
    family_names: list[str]
    subfamily_names: list[str]
    genus_names: list[str]
    species_names: list[str]
    order_class: np.ndarray
    family_order: np.ndarray
    subfamily_family: np.ndarray
    genus_subfamily: np.ndarray
    species_genus: np.ndarray
    species_size: np.ndarray  #: records per species; sums to the number of samples
    subfamily_unassigned: np.ndarray  #: True for the `unassigned <Family>` fillers
    family_identified: np.ndarray  #: relative chance that a family's records are named below family

    def species_path(self) -> dict[str, np.ndarray]:
        """Index of every rank's taxon per species (class .. species)."""
        genus = self.species_genus
        subfamily = self.genus_subfamily[genus]
        family = self.subfamily_family[subfamily]
        order = self.family_order[family]
        return {
            "class": self.order_class[order],
            "order": order,
            "family": family,
            "subfamily": subfamily,
            "genus": genus,
            "species": np.arange(len(genus)),
        }


# ---------------------------------------------------------------------------------------------- names
_PREFIX = (
    "Mega",
    "Pseudo",
    "Micro",
    "Neo",
    "Para",
    "Eu",
    "Lepto",
    "Brachy",
    "Dasy",
    "Tricho",
    "Chloro",
    "Ortho",
    "Poly",
    "Hetero",
    "Xeno",
    "Cyrto",
    "Platy",
    "Steno",
    "Melano",
    "Phyllo",
    "Acro",
    "Allo",
    "Anthro",
    "Bra",
    "Cala",
    "Dolicho",
    "Glypto",
    "Hypo",
    "Lasio",
    "Meta",
    "Oxy",
    "Peri",
    "Rhabdo",
    "Sym",
    "Tachy",
    "Zy",
)
_MIDDLE = (
    "sel",
    "sci",
    "myz",
    "cer",
    "pter",
    "gast",
    "phor",
    "rhyn",
    "cosm",
    "derm",
    "thrix",
    "cnem",
    "tars",
    "phag",
    "lab",
    "pod",
    "scel",
    "ton",
    "mer",
    "nom",
    "chir",
    "dact",
    "gon",
    "lop",
    "cheir",
    "soma",
    "stom",
    "trop",
    "zet",
    "bol",
)
_ENDING = (
    "ia",
    "a",
    "us",
    "ella",
    "omyia",
    "ops",
    "ites",
    "ina",
    "ula",
    "opsis",
    "oides",
    "ocera",
    "ura",
    "ix",
    "um",
    "ata",
    "ius",
    "odes",
)
_ROOT = (
    "nigr",
    "flav",
    "alb",
    "ruf",
    "brev",
    "long",
    "macul",
    "pict",
    "fusc",
    "minut",
    "tenu",
    "lat",
    "crass",
    "gracil",
    "hirt",
    "pallid",
    "obscur",
    "virid",
    "cyan",
    "aur",
    "orn",
    "spin",
    "sericat",
    "bicol",
    "trifasc",
    "punct",
    "strig",
    "costal",
    "angust",
    "robust",
    "silvatic",
    "montan",
    "tropic",
    "rivular",
    "umbros",
)
_EPITHET_END = (
    "a",
    "us",
    "um",
    "ipes",
    "ipennis",
    "icornis",
    "ata",
    "iventris",
    "oides",
    "ella",
    "ina",
    "alis",
    "iceps",
    "ensis",
    "icola",
    "ulus",
)
_PATRON = (
    "janzen",
    "hallwachs",
    "smith",
    "whitfield",
    "hebert",
    "dewaard",
    "brown",
    "sharkey",
    "fernandez",
    "chavarri",
    "zuniga",
    "espinoza",
    "rodriguez",
    "miller",
    "burns",
    "solis",
    "gamboa",
    "lopez",
)


def _latin(rng: np.random.Generator, parts: tuple[tuple[str, ...], ...]) -> str:
    """One name made of a random choice from each part."""
    return "".join(part[rng.integers(len(part))] for part in parts)


_Maker = Callable[[np.random.Generator], str]


def _unique_names(rng: np.random.Generator, count: int, make: _Maker, taken: set[str]) -> list[str]:
    """`count` names from `make(rng)` not in `taken` (which grows): generated names never repeat."""
    names: list[str] = []
    while len(names) < count:
        name = make(rng)
        if name not in taken:
            taken.add(name)
            names.append(name)
    return names


def _genus_name(rng: np.random.Generator) -> str:
    parts = (_PREFIX, _MIDDLE, _MIDDLE, _ENDING) if rng.random() < 0.5 else (_PREFIX, _MIDDLE, _ENDING)
    return _latin(rng, parts)


def _family_stem(rng: np.random.Generator) -> str:
    parts = (_PREFIX, _MIDDLE) if rng.random() < 0.3 else (_PREFIX, _MIDDLE, ("o", "i", "e"), _MIDDLE)
    return _latin(rng, parts).capitalize()


def _epithet(rng: np.random.Generator) -> str:
    if rng.random() < 0.2:
        return _PATRON[rng.integers(len(_PATRON))] + ("i" if rng.random() < 0.7 else "orum")
    parts = (_ROOT, _EPITHET_END) if rng.random() < 0.3 else (_ROOT, ("i", "o"), _ROOT, _EPITHET_END)
    return _latin(rng, parts)


def _binomial(genus: str, rng: np.random.Generator) -> str:
    return f"{genus} {_epithet(rng)}"


def _numbered_name(genus: str, tag: str, rng: np.random.Generator) -> str:
    """`<placeholder genus> Malaise01234`: the species of a placeholder genus."""
    return f"{genus} {tag}{int(rng.integers(1, 99999)):04d}"


def _interim_name(rng: np.random.Generator, *, genus: str, order: str, family: str) -> str:
    """A placeholder species in a named genus, in one of the release's styles (Table A8)."""
    number = int(rng.integers(1, 9999))
    style = rng.random()
    if order == "Lepidoptera" and style < 0.6:
        return f"{genus} BioLep{number}"
    if family in ("Braconidae", "Ichneumonidae") and style < 0.4:
        return f"{genus} {_epithet(rng)}DHJ{number % 100:02d}" if style < 0.15 else f"{genus} Whitfield{number}"
    if style < 0.55:
        return f"{genus} Malaise{number:04d}"
    if style < 0.85:
        letters = "".join(rng.choice(list(string.ascii_uppercase), size=int(rng.integers(1, 4))))
        return f"{genus} sp. {letters}{number % 100}" if rng.random() < 0.7 else f"{genus} sp. {number % 100}{letters}"
    return f"{genus} Janzen{number:02d}"


def _placeholder_genus_name(rng: np.random.Generator, *, family: str, order: str) -> str:
    """A placeholder genus: lowercase family stem + Malaise/BioLep + number (`microMalaise01`, `gelBioLep01`)."""
    stem = family[: int(rng.integers(3, 6))].lower()
    tag = "BioLep" if order == "Lepidoptera" else "Malaise"
    return f"{stem}{tag}{int(rng.integers(1, 9999)):0{2 if rng.random() < 0.5 else 4}d}"


# ---------------------------------------------------------------------------------------------- tree
def _families(rng: np.random.Generator, cfg: TaxonomyConfig) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Family names, their order index and their share of all records (real names first, Zipf shares)."""
    names: list[str] = []
    order_of: list[int] = []
    share: list[np.ndarray] = []
    taken: set[str] = {f for order in ORDERS for f in order.families}
    for index, order in enumerate(ORDERS):
        extra = _unique_names(rng, max(0, order.n_families - len(order.families)), _family_stem, taken)
        family = list(order.families) + [stem + "idae" for stem in extra]
        weight = 1.0 / np.arange(1, len(family) + 1) ** cfg.family_zipf
        names += family
        order_of += [index] * len(family)
        share.append(order.share * weight / weight.sum())
    total = np.concatenate(share)
    return names, np.asarray(order_of), total / total.sum()


def _species_sizes(samples: int, rng: np.random.Generator, cfg: TaxonomyConfig) -> np.ndarray:
    """Capped log-normal species sizes summing to exactly `samples`."""
    cap = max(cfg.min_species_cap, int(cfg.max_species_share * samples))
    sizes: list[np.ndarray] = []
    total = 0
    while total < samples:
        draw = np.ceil(np.exp(rng.normal(cfg.size_log_median, cfg.size_log_sigma, size=max(64, samples // 12))))
        draw = np.minimum(draw, cap).astype(np.int64)
        sizes.append(draw)
        total += int(draw.sum())
    size = np.concatenate(sizes)
    cut = int(np.searchsorted(np.cumsum(size), samples))
    size = size[: cut + 1].copy()
    size[-1] -= int(size.sum()) - samples
    return size[size > 0]


def _zipf_choice(rng: np.random.Generator, n_items: int, size: int, exponent: float) -> np.ndarray:
    """Indices in [0, n_items) with Zipf-like weights (item 0 the largest)."""
    weight = 1.0 / np.arange(1, n_items + 1) ** exponent
    return rng.choice(n_items, size=size, p=weight / weight.sum())


def _genera_and_subfamilies(
    species_family: np.ndarray, family_names: list[str], rng: np.random.Generator, cfg: TaxonomyConfig
) -> tuple[np.ndarray, np.ndarray, list[str], np.ndarray, np.ndarray]:
    """Per family: species -> genera (Zipf), genera -> subfamilies or `unassigned <Family>`.

    Returns species_genus, genus_subfamily, subfamily names, subfamily_family, subfamily_unassigned.
    """
    species_genus = np.empty(len(species_family), dtype=np.int64)
    genus_subfamily: list[np.ndarray] = []
    sub_names: list[str] = []
    sub_family: list[int] = []
    sub_unassigned: list[bool] = []
    taken: set[str] = set()
    n_genera = 0
    for family in np.unique(species_family).tolist():
        members = np.flatnonzero(species_family == family)
        n_gen = max(1, int(round(len(members) / cfg.species_per_genus * rng.lognormal(0, 0.3))))
        species_genus[members] = n_genera + _zipf_choice(rng, n_gen, len(members), cfg.genus_zipf)
        name = family_names[family]
        real = FAMILY_SUBFAMILIES.get(name, ())
        n_sub = 0 if rng.random() < cfg.no_subfamily_family and not real else 1 + rng.poisson(0.4 * np.log1p(n_gen))
        n_sub = max(n_sub, len(real)) if real else n_sub
        generated = _unique_names(rng, max(0, n_sub - len(real)), _family_stem, taken)
        first = len(sub_names)
        sub_names += [*real[:n_sub], *(stem + "inae" for stem in generated), f"unassigned {name}"]
        sub_family += [family] * (n_sub + 1)
        sub_unassigned += [False] * n_sub + [True]
        choice = _zipf_choice(rng, n_sub, n_gen, 1.0) if n_sub else np.full(n_gen, n_sub)
        choice[rng.random(n_gen) < cfg.unassigned_genus] = n_sub
        genus_subfamily.append(first + choice)
        n_genera += n_gen
    return (
        species_genus,
        np.concatenate(genus_subfamily),
        sub_names,
        np.asarray(sub_family),
        np.asarray(sub_unassigned),
    )


def _genus_names(
    genus_family: np.ndarray,
    family_names: list[str],
    family_order: np.ndarray,
    rng: np.random.Generator,
    cfg: TaxonomyConfig,
) -> tuple[list[str], np.ndarray]:
    """Generated Latin-ish genus names, a share of them placeholders; returns names and the placeholder flags."""
    placeholder = rng.random(len(genus_family)) < cfg.placeholder_genus
    taken: set[str] = set()
    names = _unique_names(rng, len(genus_family), _genus_name, taken)
    for g in np.flatnonzero(placeholder).tolist():
        family = family_names[genus_family[g]]
        order = ORDERS[family_order[genus_family[g]]].name
        make = functools.partial(_placeholder_genus_name, family=family, order=order)
        names[g] = _unique_names(rng, 1, make, taken)[0]
    return names, placeholder


def _species_names(
    tax_genus: np.ndarray,
    size: np.ndarray,
    genus_names: list[str],
    genus_placeholder: np.ndarray,
    context: list[tuple[str, str]],
    rng: np.random.Generator,
    cfg: TaxonomyConfig,
) -> list[str]:
    """Binomials (`Genus epithet`), interim names in named genera, and `<placeholder genus> Malaise1234`.

    Interim names go more often to abundant species (taxonomists name the morphospecies they keep meeting;
    real unseen species average 58 records, heldout ones 8). `context` gives (order, family) per genus, for
    the styles that belong to one group (BioLep, DHJ).
    """
    taken: set[str] = set()
    boost = np.clip(0.4 + 0.25 * np.log2(size), 0.4, 2.2)
    interim = rng.random(len(tax_genus)) < cfg.interim_species * boost
    names: list[str] = []
    for s, g in enumerate(tax_genus.tolist()):
        genus = genus_names[g]
        order, family = context[g]
        if genus_placeholder[g]:
            make: _Maker = functools.partial(_numbered_name, genus, "BioLep" if order == "Lepidoptera" else "Malaise")
        elif interim[s]:
            make = functools.partial(_interim_name, genus=genus, order=order, family=family)
        else:
            make = functools.partial(_binomial, genus)
        names += _unique_names(rng, 1, make, taken)
    return names


def build_taxonomy(samples: int, *, seed: int = 0, config: TaxonomyConfig | None = None) -> Taxonomy:
    """Draw the tree and the species sizes for a release of `samples` records (deterministic for a seed)."""
    cfg = config or TaxonomyConfig()
    rng = np.random.default_rng([seed, 1])
    class_names = list(dict.fromkeys(order.klass for order in ORDERS))
    family_names, family_order, family_share = _families(rng, cfg)
    size = _species_sizes(samples, rng, cfg)
    species_family = rng.choice(len(family_names), size=len(size), p=family_share)
    species_genus, genus_subfamily, sub_names, sub_family, sub_unassigned = _genera_and_subfamilies(
        species_family, family_names, rng, cfg
    )
    used, species_genus = np.unique(species_genus, return_inverse=True)
    genus_subfamily = genus_subfamily[used]
    genus_family = sub_family[genus_subfamily]
    genus_names, genus_placeholder = _genus_names(genus_family, family_names, family_order, rng, cfg)
    context = [(ORDERS[family_order[f]].name, family_names[f]) for f in genus_family.tolist()]
    identified = np.array(
        [
            ORDERS[o].identified * FAMILY_IDENTIFIED.get(f, 1.0)
            for f, o in zip(family_names, family_order.tolist(), strict=True)
        ]
    )
    return Taxonomy(
        class_names=class_names,
        order_names=[order.name for order in ORDERS],
        family_names=family_names,
        subfamily_names=sub_names,
        genus_names=genus_names,
        species_names=_species_names(species_genus, size, genus_names, genus_placeholder, context, rng, cfg),
        order_class=np.array([class_names.index(order.klass) for order in ORDERS]),
        family_order=family_order,
        subfamily_family=sub_family,
        genus_subfamily=genus_subfamily,
        species_genus=species_genus.astype(np.int64),
        species_size=size,
        subfamily_unassigned=sub_unassigned,
        family_identified=identified * rng.lognormal(0.0, 0.4, size=len(family_names)),
    )
