"""Synthetic specimen photos: an organism of a given taxonomy filling a given box, lying in a plate well.

Part of the synthetic release's image path: `synth.records` chooses each record's true box and mask pixel
count (`image_measurement_value`); `render_original` draws a 1024x768 photo that honours both (the drawn
organism's bounding box equals the box within a few pixels, its area approximates the count), and
`synth.images` derives the `cropped` / `*_256` packages from it with `bioscan_stream.crop`.

The organism is a list of primitives (polygons and polylines in a body frame: abdomen segments, thorax,
head, eyes, translucent wings with veins, legs, antennae, cerci) built from an `Appearance`, turned to
the angle whose bounding box best matches the box's aspect, then stretched onto the box. Its widths are
scaled until the rasterised area matches the requested pixel count. Drawing uses PIL's blending
`ImageDraw` (no per-pixel Python loops) and touches only the organism's region of the image.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from bioscan_stream.synth.appearance import Appearance, sample_appearance
from bioscan_stream.synth.well import FULL_VIEW, Viewport, pad_outside, render_background, stable_rng

Rgba = tuple[int, int, int, int]


@dataclass(frozen=True)
class Primitive:
    """A filled polygon (`width == 0`) or a polyline of `width` body units, drawn in list order."""

    points: np.ndarray
    rgba: Rgba
    width: float = 0.0
    body: bool = True  # opaque body part: textured, counted as body in the mask
    limb: bool = False  # leg, antenna or cercus: a polyline whose segments scale with the reach


_STEPS_10 = np.linspace(0.0, 1.0, 10)
_CIRCLE_14 = np.linspace(0, 2 * np.pi, 14, endpoint=False)
_COS_14, _SIN_14 = np.cos(_CIRCLE_14), np.sin(_CIRCLE_14)
#: Wing outline: positions along the wing and the two factors of its half-width profile.
_WING_U = np.linspace(0, 1, 12)
_WING_ROUND = np.sin(np.pi * np.clip(_WING_U, 0.02, 1)) ** 0.6
_WING_TAPER = 0.6 + 0.4 * _WING_U


def _rgba(rgb: Sequence[int], shade: float, alpha: int = 255) -> Rgba:
    """`rgb` darkened (or lightened) by `shade`, with `alpha`."""
    r, g, b = (min(255, round(c * shade)) for c in rgb[:3])
    return r, g, b, alpha


@lru_cache(maxsize=16)
def _part_profile(pieces: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The shape-independent factors of `_part` with `pieces` slices (each (pieces, 10)): position along
    the part in [0, 1], the elliptic outline, and the distance from the tail end; the parts of every
    specimen reuse them."""
    edges = np.linspace(-1.0, 1.0, pieces + 1)
    u = edges[:-1, None] + (edges[1:] - edges[:-1])[:, None] * _STEPS_10
    return (u + 1) / 2, np.sqrt(np.maximum(1 - u * u, 0.0)), 1 - u


def _part(x_rear: float, length: float, width: float, taper: float, pieces: int = 1) -> list[np.ndarray]:
    """Egg-shaped outline along the x axis (rear at `x_rear`), cut across into `pieces` slices (segments).

    The tail end narrows by `taper`. All slices are computed in one vectorised pass.
    """
    along, rounding, rest = _part_profile(pieces)
    half = width / 2 * rounding * (1 - taper * 0.3 * rest)
    out = np.empty((pieces, 20, 2))
    out[:, :10, 0] = x_rear + along * length
    out[:, :10, 1] = half
    out[:, 10:] = out[:, 9::-1] * (1.0, -1.0)
    return list(out)


def _ellipse(cx: float, cy: float, rx: float, ry: float) -> np.ndarray:
    out = np.empty((14, 2))
    out[:, 0] = cx + rx * _COS_14
    out[:, 1] = cy + ry * _SIN_14
    return out


def _rotation(angle: float) -> np.ndarray:
    cos, sin = math.cos(angle), math.sin(angle)
    return np.array([[cos, -sin], [sin, cos]])


@lru_cache(maxsize=8)
def _vein_spread(count: int) -> np.ndarray:
    """Where `count` wing veins end across the wing, as fractions of its widest half-width."""
    return np.linspace(-0.4, 0.4, count)


def _polyline(start: tuple[float, float], angles: list[float], lengths: list[float]) -> np.ndarray:
    """Joint positions of a limb made of straight segments with absolute `angles` (radians, 0 = head)."""
    x, y = float(start[0]), float(start[1])
    joints = [(x, y)]
    for angle, length in zip(angles, lengths, strict=True):
        x, y = x + length * math.cos(angle), y + length * math.sin(angle)
        joints.append((x, y))
    return np.array(joints)


def _body_axis(app: Appearance, thick: float, reach: float) -> dict[str, float]:
    """Positions along the body axis, centred on 0, head towards +x."""
    total = app["abd_l"] + app["waist"] + app["thorax_l"] + app["head_l"]
    rear = -total / 2
    thorax = rear + app["abd_l"] + app["waist"]
    return {
        "rear": rear,
        "thorax": thorax,
        "head": thorax + app["thorax_l"],
        "front": total / 2,
        "thorax_c": thorax + app["thorax_l"] / 2,
        "thick": thick,
        "reach": reach,
    }


def _abdomen(app: Appearance, axis: dict[str, float], rng: np.random.Generator) -> list[Primitive]:
    """Abdomen as segments, striped / two-coloured / spotted by the pattern kind, with elytra for beetles."""
    width, n = app["abd_w"] * axis["thick"], max(1, round(app["n_seg"]))
    main, second = app.rgb(), app.rgb("2")
    if app.pattern_kind == 3:
        main = second
    slices = _part(axis["rear"], app["abd_l"], width, app["taper"], n)
    parts = []
    for i in range(n):
        stripe = app.pattern_kind == 1 and i % 2 == 1
        colour = (
            tuple(round(a + (b - a) * 0.6 * app["pattern"]) for a, b in zip(main, second, strict=True))
            if stripe
            else main
        )
        shade = 0.8 + 0.2 * i / n
        parts.append(Primitive(slices[i], _rgba(colour, shade)))
    if app.pattern_kind == 2:
        for _ in range(int(2 + 6 * app["pattern"])):
            x = axis["rear"] + rng.uniform(0.15, 0.85) * app["abd_l"]
            r = rng.uniform(0.05, 0.12) * width
            parts.append(Primitive(_ellipse(x, rng.uniform(-0.25, 0.25) * width, r, r), (*second, 255)))
    if app.elytra:
        parts.append(
            Primitive(
                np.array([[axis["rear"] + 0.03 * app["abd_l"], 0.0], [axis["thorax"], 0.0]]),
                (*app.rgb(shade=0.5), 255),
                width=0.012,
            )
        )
    return parts


def _front_parts(app: Appearance, axis: dict[str, float]) -> list[Primitive]:
    """Waist, thorax, head and eyes."""
    thick = axis["thick"]
    parts = []
    if app["waist"] > 0.02:
        parts.append(
            Primitive(
                _part(axis["thorax"] - app["waist"] - 0.01, app["waist"] + 0.02, 0.05 * thick, 0.0)[0],
                (*app.rgb(shade=0.8), 255),
            )
        )
    overlap = 0.15 * app["thorax_l"]  # parts overlap a little so the body reads as one animal
    parts.append(
        Primitive(
            _part(axis["thorax"] - overlap, app["thorax_l"] + 1.5 * overlap, app["thorax_w"] * thick, 0.1)[0],
            (*app.rgb(), 255),
        )
    )
    head_w = app["head_w"] * thick
    parts.append(
        Primitive(_part(axis["head"] - overlap, app["head_l"] + overlap, head_w, -0.2)[0], (*app.rgb(shade=0.8), 255))
    )
    radius = max(app["eye"], 0.08) * head_w * 0.24
    eye = (*app.rgb("2", shade=0.5), 255) if app.plan == "fly" else (*app.rgb(shade=0.35), 255)
    for side in (-1, 1):
        centre_x = axis["head"] + 0.6 * app["head_l"]
        parts.append(Primitive(_ellipse(centre_x, side * head_w * 0.28, radius, radius * 1.2), eye))
    return parts


def _legs(app: Appearance, axis: dict[str, float], rng: np.random.Generator) -> list[Primitive]:
    """Legs (6 or 8) as three-segment polylines from the thorax; each individual has its own pose."""
    leg_rgb = (*app.rgb(shade=1.0 + app["leg_tone"]), 255)
    pairs = app.legs // 2
    parts = []
    for i in range(pairs):
        base = math.radians(55 + 80 * i / max(pairs - 1, 1))
        base = np.pi / 2 + (base - np.pi / 2) * app["leg_spread"]
        hind = app.plan == "cricket" and i == pairs - 1
        length = app["leg_l"] * axis["reach"] * (1.4 if hind else 1.0)
        for side in (-1, 1):
            angle = base + rng.normal(0, 0.2)
            knee = angle + (0.5 + rng.normal(0, 0.25)) * (
                1 if i == pairs - 1 else -1 if i == 0 else (-1, 1)[int(rng.integers(2))]  # = rng.choice([-1, 1])
            )
            start = (
                axis["thorax_c"] + app["thorax_l"] * (0.35 - 0.7 * i / max(pairs - 1, 1)),
                side * app["thorax_w"] * axis["thick"] * 0.3,
            )
            points = _polyline(
                start, [side * angle, side * knee, side * (knee + 0.3)], [0.42 * length, 0.43 * length, 0.15 * length]
            )
            parts.append(
                Primitive(
                    points,
                    leg_rgb,
                    width=app["leg_w"] * (1.8 if hind else 1.0) * (0.7 + 0.3 * axis["thick"]),
                    limb=True,
                )
            )
    return parts


def _feelers(app: Appearance, axis: dict[str, float], rng: np.random.Generator) -> list[Primitive]:
    """Antennae from the head and cerci from the abdomen tip, as thin two-segment polylines."""
    leg_rgb = (*app.rgb(shade=1.0 + app["leg_tone"]), 255)
    parts = []
    for side in (-1, 1):
        if app["ant_l"] > 0.03:
            angle = rng.uniform(0.25, 0.7)
            points = _polyline(
                (axis["front"] - 0.01, side * 0.02),
                [side * angle, side * (angle + rng.normal(0, 0.3))],
                [app["ant_l"] * axis["reach"] * 0.5] * 2,
            )
            parts.append(Primitive(points, leg_rgb, width=app["leg_w"] * 0.7 * (0.7 + 0.3 * axis["thick"]), limb=True))
        if app["tail_l"] > 0.05:
            angle = np.pi - rng.uniform(0.1, 0.4)
            points = _polyline(
                (axis["rear"] + 0.01, 0.0), [side * angle, side * angle], [app["tail_l"] * axis["reach"] / 2] * 2
            )
            parts.append(Primitive(points, leg_rgb, width=app["leg_w"] * (0.7 + 0.3 * axis["thick"]), limb=True))
    return parts


def _wings(app: Appearance, axis: dict[str, float], rng: np.random.Generator) -> list[Primitive]:
    """Translucent (or, for moths and bugs, nearly opaque) wings with darker veins, pointing backwards."""
    if app.wings == 0:
        return []
    tint = app.rgb() if app.wings_over else tuple(round(255 * app["wing_val"] * w) for w in (0.78, 0.74, 0.68))
    alpha = round(255 * app["wing_alpha"])
    parts = []
    for pair in range(app.wings // 2):
        scale = 1.0 - 0.25 * pair
        for side in (-1, 1):
            angle = side * (np.pi - app["sweep"] * (1 + 0.3 * pair) - rng.normal(0, 0.08))
            half = app["wing_w"] * (0.5 + 0.5 * axis["thick"]) * scale / 2 * _WING_ROUND * _WING_TAPER
            local = np.empty((24, 2))
            local[:12, 0], local[12:, 0] = _WING_U, _WING_U[::-1]
            local[:12, 1], local[12:, 1] = half, -half[::-1]
            local[:, 0] *= app["wing_l"] * scale
            rotation = _rotation(angle)
            base = np.array([axis["thorax_c"] + 0.1 * app["thorax_l"], side * app["thorax_w"] * axis["thick"] * 0.2])
            parts.append(Primitive(local @ rotation.T + base, _rgba(tint, 1.0, alpha), body=app.wings_over))
            # veins: one polyline out to each vein tip and back to the base (one primitive instead of 2-4)
            tips = _vein_spread(2 + round(2 * app["vein"])) * half.max()
            line = np.zeros((2 * len(tips) + 1, 2))
            line[1::2, 0], line[1::2, 1] = 0.9 * app["wing_l"] * scale, tips
            vein = _rgba(tint, 0.6, min(255, alpha + 30))
            parts.append(Primitive(line @ rotation.T + base, vein, width=0.004, body=False))
    return parts


def _highlights(app: Appearance, axis: dict[str, float]) -> list[Primitive]:
    """Soft specular highlights on thorax and abdomen (shiny beetles get strong ones)."""
    light = (255, 255, 255, round(55 * app["shine"]))
    thick = axis["thick"]
    return [
        Primitive(
            _ellipse(
                axis["thorax_c"], 0.15 * app["thorax_w"] * thick, 0.25 * app["thorax_l"], 0.12 * app["thorax_w"] * thick
            ),
            light,
            body=False,
        ),
        Primitive(
            _ellipse(
                axis["rear"] + 0.6 * app["abd_l"],
                0.15 * app["abd_w"] * thick,
                0.25 * app["abd_l"],
                0.1 * app["abd_w"] * thick,
            ),
            light,
            body=False,
        ),
    ]


def build_primitives(app: Appearance, thick: float, pose_seed: int, *, reach: float = 1.0) -> list[Primitive]:
    """All primitives of the organism in drawing order, in the (unbent) body frame.

    Every coordinate and width is linear in `thick` and the random draws do not depend on it, so two
    builds give the organism at any thickness (`_Shape`). `reach` scales legs, antennae and cerci.
    """
    rng = np.random.default_rng(pose_seed)
    axis = _body_axis(app, thick, reach)
    wings = _wings(app, axis, rng)
    limbs = _legs(app, axis, rng) + _feelers(app, axis, rng)
    parts = ([] if app.wings_over else wings) + limbs + _abdomen(app, axis, rng)
    return parts + _front_parts(app, axis) + (wings if app.wings_over else []) + _highlights(app, axis)


@dataclass(frozen=True)
class _Shape:
    """The organism packed into flat arrays: primitive `i` is `points[bounds[i]:bounds[i + 1]]`.

    Coordinates are linear in the thickness and in the reach (leg and antenna length) with no cross
    term, and widths are linear in the thickness, so two `build_primitives` calls give the organism at
    any (thickness, reach) with a few vector operations (the area fit calls `at` often): at reach 0 a
    limb shrinks onto its first point and everything else stays, so the reach term is read off one build.
    """

    base: np.ndarray  # thickness 0, reach 1
    thick_delta: np.ndarray
    reach_delta: np.ndarray
    widths: np.ndarray
    width_delta: np.ndarray
    bounds: np.ndarray
    bend: float

    @classmethod
    def build(cls, app: Appearance, pose_seed: int) -> tuple[list[Primitive], _Shape]:
        """The primitives (thickness 0, for colours and kinds) and the packed shape."""
        thin = build_primitives(app, 0.0, pose_seed)
        unit = build_primitives(app, 1.0, pose_seed)
        base = np.vstack([p.points for p in thin])
        reach_delta = np.vstack([p.points - p.points[0] if p.limb else np.zeros_like(p.points) for p in thin])
        widths = np.array([p.width for p in thin])
        shape = cls(
            base=base,
            thick_delta=np.vstack([p.points for p in unit]) - base,
            reach_delta=reach_delta,
            widths=widths,
            width_delta=np.array([p.width for p in unit]) - widths,
            bounds=np.cumsum([0] + [len(p.points) for p in thin]),
            bend=app["bend"],
        )
        return thin, shape

    def at(self, thick: float, reach: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
        """(points, widths) at `thick` and `reach`, bent along the body axis."""
        points = self.base + thick * self.thick_delta + (reach - 1.0) * self.reach_delta
        points[:, 1] += self.bend * points[:, 0] ** 2
        return points, self.widths + thick * self.width_delta


@dataclass(frozen=True)
class Placement:
    """Affine map from the body frame to original pixels (`points @ matrix.T + offset`)."""

    matrix: np.ndarray
    offset: np.ndarray

    @property
    def width_scale(self) -> float:
        """Original pixels per body unit, for line widths."""
        return float(np.sqrt(abs(np.linalg.det(self.matrix))))

    def apply(self, points: np.ndarray) -> np.ndarray:
        return points @ self.matrix.T + self.offset


#: Candidate body angles (5 degree steps over a half turn): the x extent at angle i + 18 is the y extent at i.
_ANGLES = np.linspace(0, np.pi, 36, endpoint=False)
_ANGLES_COS, _ANGLES_SIN = np.cos(_ANGLES), np.sin(_ANGLES)


def _choose_rotation(points: np.ndarray, aspect: float, rng: np.random.Generator) -> np.ndarray:
    """A rotation (and mirror) whose bounding box has about the target aspect, so the stretch stays mild."""
    xs = points[:, :1] * _ANGLES_COS - points[:, 1:] * _ANGLES_SIN
    width = xs.max(axis=0) - xs.min(axis=0)
    ratio = (width + 1e-9) / (np.roll(width, -len(_ANGLES) // 2) + 1e-9)  # height = width a quarter turn on
    error = np.abs(np.log(ratio / aspect)) + rng.uniform(0, 0.2, len(_ANGLES))
    angle = _ANGLES[int(np.argmin(error))] + np.pi * rng.integers(2)
    return _rotation(angle) @ np.diag([1.0, (-1.0, 1.0)[int(rng.integers(2))]])  # = rng.choice([-1.0, 1.0])


def _fit(points: np.ndarray, widths: np.ndarray, rotation: np.ndarray, box: tuple[int, int, int, int]) -> Placement:
    """Stretch the rotated organism so its drawn pixels span exactly `box` (x1, y1 exclusive)."""
    rotated = points @ rotation.T
    low = rotated.min(axis=0)
    span = rotated.max(axis=0) - low + 1e-9
    size = np.array([box[2] - box[0] - 1, box[3] - box[1] - 1], dtype=float)
    widest, limit = float(widths.max()), float(size.min()) / 4
    margin = 0.0
    for _ in range(2):  # line ends poke out by half their width: shrink by that, once re-estimated
        stretch = np.maximum(size - 2 * margin, 1.0) / span
        margin = min(widest * math.sqrt(stretch[0] * stretch[1]) / 2, limit)
    offset = np.array(box[:2], dtype=float) + margin - low * stretch
    return Placement(np.diag(stretch) @ rotation, offset)


def _pixel_width(width: float, scale: float) -> int:
    return max(1, round(width * scale))


def _coordinate_lists(points: np.ndarray, bounds: np.ndarray) -> list[list[float]]:
    """Flat [x0, y0, x1, y1, ...] lists of each primitive (what `ImageDraw` takes), converted in one pass."""
    coords, cuts = points.ravel().tolist(), (2 * bounds).tolist()
    return [coords[start:stop] for start, stop in zip(cuts[:-1], cuts[1:], strict=True)]


def _raster_area(points: np.ndarray, widths: np.ndarray, bounds: np.ndarray, *, max_side: int = 128) -> float:
    """Pixel count of the primitives (original pixel `points`, pixel `widths`, 0 = polygon), rasterised at
    most `max_side` pixels wide and scaled back."""
    low = points.min(axis=0) - 4
    extent = points.max(axis=0) + 4 - low
    q = min(1.0, max_side / float(extent.max()))
    mask = Image.new("L", (int(extent[0] * q) + 2, int(extent[1] * q) + 2))
    draw = ImageDraw.Draw(mask)
    for width, xy in zip(widths.tolist(), _coordinate_lists((points - low) * q, bounds), strict=True):
        if width:
            draw.line(xy, fill=255, width=_pixel_width(width, q), joint="curve")
        else:
            draw.polygon(xy, fill=255)
    return mask.histogram()[255] / (q * q)


def mask_area(organism: Organism) -> float:
    """The organism's pixel count on the 1024x768 original (what `image_measurement_value` records)."""
    placement = organism.placement
    points = placement.apply(np.vstack([p.points for p in organism.prims]))
    widths = np.array([p.width for p in organism.prims]) * placement.width_scale
    return _raster_area(points, widths, np.cumsum([0] + [len(p.points) for p in organism.prims]))


@dataclass(frozen=True)
class Organism:
    """Everything needed to draw one specimen at any scale."""

    appearance: Appearance
    prims: list[Primitive]
    placement: Placement


def _pixel_count(record: Mapping[str, object]) -> float | None:
    """The record's mask pixel count, or None when missing (null, NaN or not positive: no area to match)."""
    value = record.get("image_measurement_value")
    try:
        count = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return count if math.isfinite(count) and count > 0 else None


def plan_organism(record: Mapping[str, object], *, seed: int) -> Organism:
    """Appearance, pose and placement of `record`'s organism: fills its box, about its pixel count in area.

    The area is matched by scaling the body's widths; when the organism would have to get much fatter,
    its legs and antennae are shortened first, so a compact specimen stays insect-shaped, not a balloon.
    """
    rng = stable_rng("organism", seed)
    app = sample_appearance(record, rng)
    pose_seed = int(rng.integers(2**32))
    x0, y0, x1, y1 = (int(record[k]) for k in ("x0", "y0", "x1", "y1"))  # type: ignore[call-overload]
    box = (x0, y0, x1, y1)
    aspect = (box[2] - box[0]) / (box[3] - box[1])
    target = _pixel_count(record)
    thin, shape = _Shape.build(app, pose_seed)
    thick, reach = 1.0, 1.0
    points, widths = shape.at(thick)
    rotation = _choose_rotation(points, aspect, rng)
    placement = _fit(points, widths, rotation, box)
    for step in range(4 if target is not None else 0):  # area grows ~linearly with thickness: fixed-point steps
        area = _raster_area(placement.apply(points), widths * placement.width_scale, shape.bounds)
        ratio = (target or 0.0) / max(area, 1.0)
        if abs(ratio - 1) < 0.04:
            break
        if step == 0 and ratio > 1.8:
            reach = float(np.clip(ratio**-0.6, 0.4, 1.0))
            rotation = _choose_rotation(shape.at(thick, reach)[0], aspect, rng)
        else:
            thick = float(np.clip(thick * ratio, 0.15, 6.0))
        points, widths = shape.at(thick, reach)
        placement = _fit(points, widths, rotation, box)
    prims = [
        Primitive(points[a:b], p.rgba, float(w), p.body, p.limb)
        for p, a, b, w in zip(thin, shape.bounds[:-1], shape.bounds[1:], widths, strict=True)
    ]
    return Organism(app, prims, placement)


#: Rounded shading of a body pixel by its blurred body-mask value v (0-255): 0.55 + 0.45 * sqrt(v / 255),
#: darker towards the edges; a table, so the per-pixel work is one lookup.
_SHADE = 0.55 + 0.45 * np.sqrt(np.arange(256, dtype=np.float32) / 255)


@lru_cache(maxsize=1)
def _noise_tile() -> np.ndarray:
    """A fixed 384x384 tile of blotchy plus fine noise (unit scale) used as body texture."""
    rng = np.random.default_rng(12345)
    coarse = Image.fromarray(rng.normal(0, 1, (96, 96)).astype(np.float32), "F").resize(
        (384, 384), Image.Resampling.BICUBIC
    )
    return (np.asarray(coarse) + 0.5 * rng.normal(0, 1, (384, 384))).astype(np.float32)


def _texture(size: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """A (h, w) window of the noise tile at a random offset (a view when it fits, wrapped otherwise)."""
    tile, (width, height) = _noise_tile(), size
    if width <= 384 and height <= 384:
        y0, x0 = int(rng.integers(385 - height)), int(rng.integers(385 - width))
        return tile[y0 : y0 + height, x0 : x0 + width]
    ys = (rng.integers(384) + np.arange(height)) % 384
    xs = (rng.integers(384) + np.arange(width)) % 384
    return tile[np.ix_(ys, xs)]


def _region(points: np.ndarray, pad: int, size: tuple[int, int]) -> tuple[int, int, int, int] | None:
    """Pixel bounds of the organism (all its points) on the output, clipped to it; None when it lies outside."""
    x0, y0 = np.floor(points.min(axis=0)).astype(int) - pad
    x1, y1 = np.ceil(points.max(axis=0)).astype(int) + pad
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, size[0]), min(y1, size[1])
    return (int(x0), int(y0), int(x1), int(y1)) if x1 > x0 and y1 > y0 else None


def _paint(
    drawn: Image.Image, prims: list[Primitive], coordinates: list[list[float]], scale: float
) -> tuple[Image.Image, Image.Image]:
    """Draw the primitives (blending; flat pixel `coordinates` each) onto `drawn`; return the organism mask
    and the opaque-body mask."""
    mask, body = Image.new("L", drawn.size), Image.new("L", drawn.size)
    pen, mask_pen, body_pen = ImageDraw.Draw(drawn, "RGBA"), ImageDraw.Draw(mask), ImageDraw.Draw(body)
    for prim, xy in zip(prims, coordinates, strict=True):
        if prim.width:
            width = _pixel_width(prim.width, scale)
            pen.line(xy, fill=prim.rgba, width=width, joint="curve")
            mask_pen.line(xy, fill=255, width=width, joint="curve")
            continue
        edge = _rgba(prim.rgba[:3], 0.55, prim.rgba[3]) if prim.body else None
        pen.polygon(xy, fill=prim.rgba, outline=edge)
        if prim.body or prim.rgba[3] > 20:  # faint overlays (highlights) neither add to nor cut the masks
            mask_pen.polygon(xy, fill=255)
        if prim.body:
            body_pen.polygon(xy, fill=255)
    return mask, body


def draw_organism(image: Image.Image, organism: Organism, viewport: Viewport, *, seed: int) -> None:
    """Paint the organism onto `image` (a render of `viewport`), in place.

    On top of the flat drawing: texture (blotchy noise), rounded shading (bodies darken towards their
    edges: a blurred body mask), and soft edges (a slight blur, composited through a blurred mask).
    """
    scale = float(np.mean(viewport.scale)) * organism.placement.width_scale
    bounds = np.cumsum([0] + [len(p.points) for p in organism.prims])
    stacked = viewport.to_pixels(organism.placement.apply(np.vstack([p.points for p in organism.prims])))
    region = _region(stacked, 6 + max(_pixel_width(p.width, scale) for p in organism.prims), image.size)
    if region is None:
        return
    background = image.crop(region)
    drawn = background.copy()
    mask, body = _paint(drawn, organism.prims, _coordinate_lists(stacked - region[:2], bounds), scale)
    radius = max(1.0, 0.03 * float(np.hypot(*drawn.size)))
    shade = _SHADE[np.asarray(body.filter(ImageFilter.BoxBlur(radius)))]
    grain = organism.appearance["texture"] * _texture(drawn.size, stable_rng("texture", seed))
    grain += 1
    factor = np.where(np.asarray(body) > 0, grain * shade, np.float32(1.0))
    pixels = np.asarray(drawn, dtype=np.float32)  # a fresh array: scaled in place
    pixels *= factor[..., None]
    blur = ImageFilter.BoxBlur(0.8)  # stands in for the anti-aliasing of a downscaled photo (Gaussian: 2.5x slower)
    drawn = Image.fromarray(np.clip(pixels, 0, 255, out=pixels).astype(np.uint8), "RGB").filter(blur)
    image.paste(Image.composite(drawn, background, mask.filter(blur)), region[:2])


def render_view(record: Mapping[str, object], *, seed: int, viewport: Viewport = FULL_VIEW) -> Image.Image:
    """The photo of `record` seen through `viewport` (a crop window at any resolution, padded past the edges)."""
    image = render_background(seed, viewport)
    draw_organism(image, plan_organism(record, seed=seed), viewport, seed=seed)
    pad_outside(image, viewport)
    return image


def render_original(record: Mapping[str, object], *, seed: int) -> Image.Image:
    """The 1024x768 RGB `original_full` photo of `record` (keys processid, order..species, x0..y1,
    image_measurement_value); deterministic in `seed`."""
    return render_view(record, seed=seed)
