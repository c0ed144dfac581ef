"""How a synthetic specimen looks, as a function of its taxonomy (order > family > genus > species) and chance.

Part of the synthetic release's image path: `specimen` turns an `Appearance` into drawn body parts.
Each order gets a body plan (fly, midge, wasp, beetle, moth, bug, elongate, spider, springtail, cricket)
and a point in a continuous parameter space (proportions, wings, legs, antennae, colours, pattern,
texture). Every lower rank moves that point by a smaller, name-seeded step, and each individual adds its
own noise: so relatives look alike, an image model can learn the taxonomy, but not from one cue alone.
"""

from __future__ import annotations

import colorsys
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from bioscan_stream.synth.well import stable_rng

#: name: (low, high, generic default). Lengths are fractions of the body axis.
PARAMS: dict[str, tuple[float, float, float]] = {
    "head_l": (0.03, 0.3, 0.14),
    "head_w": (0.06, 0.4, 0.18),
    "eye": (0.0, 0.9, 0.4),
    "thorax_l": (0.1, 0.45, 0.22),
    "thorax_w": (0.08, 0.55, 0.22),
    "waist": (0.0, 0.1, 0.01),
    "abd_l": (0.2, 0.8, 0.45),
    "abd_w": (0.06, 0.6, 0.22),
    "taper": (0.0, 1.0, 0.5),
    "n_seg": (1, 10, 6),
    "wing_l": (0.3, 1.3, 0.8),
    "wing_w": (0.06, 0.5, 0.2),
    "sweep": (0.05, 0.9, 0.3),
    "wing_alpha": (0.22, 0.95, 0.35),
    "wing_val": (0.2, 0.95, 0.7),
    "vein": (0.0, 1.0, 0.5),
    "leg_l": (0.15, 1.3, 0.5),
    "leg_w": (0.004, 0.03, 0.011),
    "leg_spread": (0.4, 1.2, 0.8),
    "ant_l": (0.0, 1.3, 0.3),
    "tail_l": (0.0, 0.6, 0.0),
    "bend": (-0.25, 0.25, 0.0),
    "hue": (-0.04, 0.3, 0.08),
    "sat": (0.1, 0.75, 0.45),
    "val": (0.12, 0.9, 0.45),
    "hue2": (-0.04, 0.3, 0.1),
    "sat2": (0.1, 0.75, 0.4),
    "val2": (0.05, 0.9, 0.3),
    "pattern": (0.0, 1.0, 0.3),
    "texture": (0.0, 0.3, 0.1),
    "leg_tone": (-0.3, 0.3, 0.0),
    "shine": (0.0, 1.0, 0.4),
}
_NAMES = tuple(PARAMS)
_LOW = np.array([PARAMS[n][0] for n in _NAMES])
_HIGH = np.array([PARAMS[n][1] for n in _NAMES])

#: Body plans: overrides of the generic defaults, plus discrete traits (wings, wings_over, legs, pattern).
PLANS: dict[str, dict[str, float]] = {
    "fly": dict(
        head_l=0.16,
        head_w=0.26,
        eye=0.8,
        thorax_l=0.3,
        thorax_w=0.3,
        abd_l=0.42,
        abd_w=0.26,
        n_seg=5,
        wings=2,
        wing_l=0.85,
        wing_w=0.26,
        sweep=0.35,
        wing_alpha=0.25,
        leg_l=0.7,
        ant_l=0.08,
        val=0.3,
        sat=0.3,
    ),
    "midge": dict(
        head_l=0.08,
        head_w=0.1,
        eye=0.6,
        thorax_l=0.18,
        thorax_w=0.16,
        abd_l=0.6,
        abd_w=0.1,
        n_seg=8,
        wings=2,
        wing_l=0.65,
        wing_w=0.15,
        sweep=0.2,
        leg_l=1.1,
        leg_w=0.01,
        ant_l=0.5,
        val=0.55,
    ),
    "wasp": dict(
        head_l=0.14,
        head_w=0.2,
        eye=0.5,
        thorax_l=0.26,
        thorax_w=0.2,
        waist=0.08,
        abd_l=0.45,
        abd_w=0.22,
        wings=4,
        wing_l=0.7,
        wing_w=0.18,
        sweep=0.25,
        wing_alpha=0.3,
        leg_l=0.7,
        ant_l=0.7,
        val=0.3,
        sat=0.6,
        pattern_kind=1,
    ),
    "beetle": dict(
        head_l=0.12,
        head_w=0.2,
        eye=0.3,
        thorax_l=0.2,
        thorax_w=0.36,
        abd_l=0.6,
        abd_w=0.46,
        n_seg=2,
        taper=0.2,
        wings=0,
        elytra=1,
        leg_l=0.45,
        leg_w=0.03,
        ant_l=0.4,
        val=0.25,
        shine=0.8,
    ),
    "moth": dict(
        head_l=0.1,
        head_w=0.16,
        thorax_l=0.22,
        thorax_w=0.22,
        abd_l=0.5,
        abd_w=0.18,
        wings=2,
        wings_over=1,
        wing_l=0.85,
        wing_w=0.34,
        sweep=0.35,
        wing_alpha=0.9,
        wing_val=0.6,
        leg_l=0.35,
        ant_l=0.55,
        val=0.55,
        sat=0.35,
        pattern_kind=2,
    ),
    "bug": dict(
        head_l=0.12,
        head_w=0.2,
        thorax_l=0.22,
        thorax_w=0.42,
        abd_l=0.55,
        abd_w=0.4,
        wings=2,
        wings_over=1,
        wing_alpha=0.6,
        sweep=0.12,
        wing_w=0.2,
        leg_l=0.4,
        ant_l=0.4,
        hue=0.2,
        sat=0.55,
        val=0.6,
    ),
    "elongate": dict(
        head_l=0.1,
        head_w=0.14,
        thorax_l=0.18,
        thorax_w=0.14,
        abd_l=0.7,
        abd_w=0.14,
        n_seg=9,
        wings=0,
        leg_l=0.35,
        ant_l=0.6,
        tail_l=0.35,
        val=0.5,
        pattern_kind=1,
    ),
    "spider": dict(
        head_l=0.03,
        head_w=0.1,
        eye=0.2,
        thorax_l=0.35,
        thorax_w=0.32,
        abd_l=0.5,
        abd_w=0.42,
        n_seg=1,
        wings=0,
        legs=8,
        leg_l=1.0,
        leg_w=0.03,
        ant_l=0.0,
    ),
    "springtail": dict(
        head_l=0.16,
        head_w=0.16,
        thorax_l=0.2,
        thorax_w=0.16,
        abd_l=0.55,
        abd_w=0.18,
        wings=0,
        leg_l=0.25,
        ant_l=0.35,
        tail_l=0.15,
        val=0.6,
        sat=0.2,
    ),
    "cricket": dict(
        head_l=0.15,
        head_w=0.2,
        thorax_l=0.22,
        thorax_w=0.24,
        abd_l=0.5,
        abd_w=0.22,
        wings=0,
        leg_l=1.1,
        leg_w=0.025,
        ant_l=1.2,
        hue=0.2,
        val=0.55,
    ),
}
_ORDER_PLANS: dict[str, tuple[str, ...]] = {  # first plan is the order's; later ones may be taken by a family
    "Diptera": ("fly", "midge"),
    "Hymenoptera": ("wasp",),
    "Coleoptera": ("beetle",),
    "Lepidoptera": ("moth",),
    "Trichoptera": ("moth",),
    "Hemiptera": ("bug", "fly"),
    "Psocodea": ("bug",),
    "Thysanoptera": ("elongate",),
    "Orthoptera": ("cricket",),
    "Blattodea": ("beetle", "elongate"),
    "Dermaptera": ("elongate",),
    "Archaeognatha": ("elongate",),
    "Zygentoma": ("elongate",),
    "Ephemeroptera": ("elongate",),
    "Plecoptera": ("elongate",),
    "Embioptera": ("elongate",),
    "Zoraptera": ("elongate",),
    "Neuroptera": ("wasp",),
    "Araneae": ("spider",),
    "Trombidiformes": ("spider",),
    "Sarcoptiformes": ("spider",),
    "Mesostigmata": ("spider",),
    "Opiliones": ("spider",),
    "Entomobryomorpha": ("springtail",),
    "Poduromorpha": ("springtail",),
    "Symphypleona": ("springtail",),
    "Strepsiptera": ("fly",),
}
#: Step size per rank, as a fraction of each parameter's range: order > family > genus > species > individual.
_STEPS: tuple[tuple[str, float], ...] = (("order", 0.16), ("family", 0.09), ("genus", 0.05), ("species", 0.03))
_INDIVIDUAL_STEP = 0.025


@dataclass(frozen=True)
class Appearance:
    """Continuous parameters (see PARAMS) plus the discrete traits of one specimen's body plan."""

    values: Mapping[str, float]
    plan: str
    wings: int
    wings_over: bool
    elytra: bool
    legs: int
    pattern_kind: int  # 0 plain, 1 stripes, 2 spots, 3 two-coloured abdomen

    def __getitem__(self, name: str) -> float:
        return self.values[name]

    def rgb(self, which: str = "", *, shade: float = 1.0) -> tuple[int, int, int]:
        """Body colour (`which=""`) or pattern colour (`"2"`), optionally darkened/lightened by `shade`."""
        r, g, b = colorsys.hsv_to_rgb(
            self[f"hue{which}"] % 1.0, self[f"sat{which}"], min(1.0, self[f"val{which}"] * shade)
        )
        return round(r * 255), round(g * 255), round(b * 255)


def _plan_for(lineage: list[str]) -> str:
    """The order's body plan; a family may take the order's alternative plan (e.g. midges among flies)."""
    order = lineage[0] if lineage else ""
    plans = _ORDER_PLANS.get(order) or (sorted(PLANS)[stable_rng("plan", order).integers(len(PLANS))],)
    if len(plans) > 1 and len(lineage) > 1 and stable_rng("plan", *lineage[:2]).random() < 0.4:
        return plans[1]
    return plans[0]


def _lineage(record: Mapping[str, object]) -> list[str]:
    """Known ranks from the order down, stopping at the first missing one (a name only means something in
    the context of its parents)."""
    lineage: list[str] = []
    for rank, _ in _STEPS:
        name = record.get(rank)
        if not name:
            break
        lineage.append(str(name))
    return lineage


@lru_cache(maxsize=16384)
def _lineage_point(lineage: tuple[str, ...]) -> tuple[str, np.ndarray, int]:
    """(body plan, point in parameter space, default pattern kind) of a lineage: deterministic in the names,
    so cached per process (a run draws many specimens of the same taxa)."""
    plan = _plan_for(list(lineage))
    traits = PLANS[plan]
    values = np.array([float(traits.get(n, PARAMS[n][2])) for n in _NAMES])
    span = _HIGH - _LOW
    for depth, (_, step) in enumerate(_STEPS[: len(lineage)]):
        values += stable_rng("taxon", *lineage[: depth + 1]).normal(0, step, len(values)) * span
    kind_rng = stable_rng("pattern", *lineage[:2])
    pattern_kind = int(traits.get("pattern_kind", 0)) if kind_rng.random() < 0.6 else int(kind_rng.integers(4))
    values.flags.writeable = False  # shared by every specimen of the lineage
    return plan, values, pattern_kind


def sample_appearance(record: Mapping[str, object], rng: np.random.Generator) -> Appearance:
    """The appearance of one specimen: its lineage's point in parameter space plus individual noise from `rng`."""
    plan, point, pattern_kind = _lineage_point(tuple(_lineage(record)))
    traits = PLANS[plan]
    values = np.clip(point + rng.normal(0, _INDIVIDUAL_STEP, len(point)) * (_HIGH - _LOW), _LOW, _HIGH)
    return Appearance(
        values=dict(zip(_NAMES, values.tolist(), strict=True)),
        plan=plan,
        wings=int(traits.get("wings", 2)),
        wings_over=bool(traits.get("wings_over", 0)),
        elytra=bool(traits.get("elytra", 0)),
        legs=int(traits.get("legs", 6)),
        pattern_kind=pattern_kind,
    )
