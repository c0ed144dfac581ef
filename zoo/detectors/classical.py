"""The `classical` detector: the insect found against the well floor, no weights (crop job -> **detector**).

The default detector of the crop job (`zoo.detectors.create_detector("classical")`). BIOSCAN photos show one
organism lying in a round plate well: a smooth grey-blue floor, a bright/dark rim around it, out-of-focus
plate beyond (../shared/reference/cropping.md). The detector works on a reduced copy of the photo (height
`work_height`, 256 by default) and maps its box back to original pixels:

1. the well (at half the working resolution): the floor's colour is the most common one among smooth pixels
   (not the centre's: a large insect covers it); floor-like pixels form one region, and the circle through the
   most points of its outline (RANSAC: the insect and leaks bite into the outline, the rim's arcs do not) is
   the well; everything beyond `rim_margin` inside it is left out, so the rim cannot merge into the box;
2. the floor's lighting: a quadratic surface per opponent colour channel (luminance, red-green, yellow-blue),
   fitted robustly to the floor pixels (insect, specks and reflections fall out as outliers);
3. the insect: per pixel, how much darker and how differently coloured than the floor it is (brighter counts
   at `bright_weight`: the well's reflections are bright but keep the floor's tint), against thresholds
   scaled by the floor's own noise; hysteresis from strong seeds down to the weak threshold reaches faint
   legs, antennae and wing veins; the strongest component is the body;
4. fragments (legs that break up at low resolution) join the body when they are darker than the floor, lie
   within `join_distance` (and a quarter of the body's size) of its pixels and do not touch the rim; where
   the body meets the rim margin it may continue over the rim through dark pixels near the contact (a fly's
   head, a wing tip), a bounded reach, so the rim's own dark edge adds a few pixels at most;
5. a confidence in [0, 1]: the share of the well's foreground the organism holds, its seed strength, how much
   joined fragments grew its box, and rim or frame contact (x0.7: the box may be cut there) or no well
   found (x0.6).

Images that are not a well photo (uniform, black) and empty wells come back with no box and a reason.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from PIL import Image
from scipy import ndimage

from zoo.detectors.base import Box, Detection, register_detector

__all__ = ["ClassicalConfig", "ClassicalDetector"]


@dataclass(frozen=True)
class ClassicalConfig:
    """Settings of the classical detector (written into the crop job's manifest through `fingerprint()`)."""

    work_height: int = 256  # the photo is reduced by an integer factor to about this height
    rim_margin: float = 0.025  # fraction of the working height kept clear inside the fitted rim
    strong_sigma: float = 9.0  # seed pixels: this many floor-noise units from the floor
    weak_sigma: float = 3.5  # pixels reached from the seeds (legs, antennae, wings)
    min_contrast: float = 12.0  # and at least this far from the floor in colour units, whatever the noise
    bright_weight: float = 0.1  # weight of "brighter than the floor" (reflections are bright, floor-tinted)
    join_distance: float = 0.03  # fragments within this fraction of the working height join the body
    min_seed_pixels: int = 3  # a component needs this many seed pixels to count


@dataclass
class _Analysis:
    """One photo's result in working pixels, with the factor back to original pixels."""

    scale: tuple[float, float]
    box: tuple[int, int, int, int] | None
    score: float
    reason: str = ""


def _working_image(image: np.ndarray, work_height: int) -> tuple[np.ndarray, tuple[float, float]]:
    """The photo reduced by an integer factor (box average) to about `work_height`, as float32, and the factor.

    Working pixel j covers original pixels [factor * j, factor * (j + 1)) (a last, partial block is clipped when
    mapping back): the scale is the factor itself, not width / reduced width (1024 / 342 put right edges 1 px in).
    """
    factor = max(1, image.shape[0] // work_height)
    if factor == 1:
        return image.astype(np.float32), (1.0, 1.0)
    return np.asarray(Image.fromarray(image).reduce(factor), dtype=np.float32), (float(factor), float(factor))


def _opponent(work: np.ndarray) -> np.ndarray:
    """(3, h, w): luminance, red-green, yellow-blue (insects are brown/dark; the floor grey-blue)."""
    red, green, blue = work[..., 0], work[..., 1], work[..., 2]
    return np.stack([(red + green + blue) / 3, red - green, (red + green) / 2 - blue])


def _half(opp: np.ndarray) -> np.ndarray:
    """(3, h // 2, w // 2): 2x2 block means (four strided slices: 3x faster than a reshaped mean)."""
    _, height, width = opp.shape
    even = opp[:, : height // 2 * 2, : width // 2 * 2]
    return (even[:, ::2, ::2] + even[:, 1::2, ::2] + even[:, ::2, 1::2] + even[:, 1::2, 1::2]) * 0.25


def _fit_circle(points: np.ndarray) -> tuple[float, float, float] | None:
    """Algebraic (Kasa) least-squares circle through (n, 2) points, or None when it is degenerate."""
    if len(points) < 3:
        return None
    x, y = points[:, 0], points[:, 1]
    design = np.column_stack([x, y, np.ones_like(x)])
    try:  # normal equations: a 3x3 solve (lstsq's SVD costs milliseconds on a loaded box)
        solution = np.linalg.solve(design.T @ design, design.T @ (x * x + y * y))
    except np.linalg.LinAlgError:
        return None
    cx, cy = solution[0] / 2, solution[1] / 2
    r2 = solution[2] + cx * cx + cy * cy
    return (float(cx), float(cy), float(np.sqrt(r2))) if r2 > 0 else None


def _ransac_circle(
    points: np.ndarray, tolerance: float, radius_range: tuple[float, float], trials: int = 256
) -> tuple[float, float, float] | None:
    """The circle through the most `points` (within `tolerance`): the rim's arcs, not the insect or leaks.

    Circles through random point triples (a fixed seed: the same photo always gives the same box), scored all
    at once; the winner is refitted by least squares to its inliers.
    """
    if len(points) < 20:
        return None
    rng = np.random.default_rng(0)
    if len(points) > 800:
        points = points[rng.choice(len(points), 800, replace=False)]
    triples = points[rng.integers(0, len(points), (trials, 3))]  # (t, 3, 2)
    (ax, ay), (bx, by), (cx, cy) = (triples[:, i].T for i in range(3))
    det = 2 * (ax * (by - cy) + bx * (cy - ay) + cx * (ay - by))
    ok = np.abs(det) > 1e-6
    det = np.where(ok, det, 1.0)
    a2, b2, c2 = ax * ax + ay * ay, bx * bx + by * by, cx * cx + cy * cy
    ux = (a2 * (by - cy) + b2 * (cy - ay) + c2 * (ay - by)) / det
    uy = (a2 * (cx - bx) + b2 * (ax - cx) + c2 * (bx - ax)) / det
    radius = np.hypot(ax - ux, ay - uy)
    ok &= (radius > radius_range[0]) & (radius < radius_range[1])
    if not ok.any():
        return None
    ux, uy, radius = ux[ok], uy[ok], radius[ok]
    distance = np.hypot(points[:, None, 0] - ux, points[:, None, 1] - uy)  # (n, t)
    support = (np.abs(distance - radius) < tolerance).sum(0)
    best = int(np.argmax(support))
    inliers = np.abs(distance[:, best] - radius[best]) < tolerance
    return _fit_circle(points[inliers])


def _floor_reference(opp: np.ndarray, gradient: np.ndarray) -> np.ndarray:
    """The floor's colour: the most common luminance among smooth pixels, and the median colour there.

    A mode, not a median of the centre, because a frame-filling insect covers the centre.
    """
    smooth = gradient <= np.median(gradient)  # <=: a flat synthetic floor has a median gradient of 0
    luminance = opp[0][smooth]
    counts, edges = np.histogram(luminance, bins=64, range=(0, 256))
    counts = np.convolve(counts, np.ones(3), mode="same")
    peak = edges[np.argmax(counts)] + 2.0
    near = np.abs(luminance - peak) < 8
    return np.median(opp[:, smooth][:, near], axis=1)


def _outline(mask: np.ndarray) -> np.ndarray:
    """Pixels of `mask` with a 4-neighbour outside it, or on the frame (an erosion, by array shifts: faster)."""
    interior = np.zeros_like(mask)
    interior[1:-1, 1:-1] = mask[1:-1, 1:-1] & mask[:-2, 1:-1] & mask[2:, 1:-1] & mask[1:-1, :-2] & mask[1:-1, 2:]
    return mask & ~interior


def _holes(mask: np.ndarray) -> np.ndarray:
    """The parts of ~mask that do not reach the frame (a labelling: `binary_fill_holes` is 10x slower)."""
    labels, _ = ndimage.label(~mask)
    border = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
    return (labels > 0) & ~np.isin(labels, border)


def _well_circle(opp: np.ndarray, reference: np.ndarray, gradient: np.ndarray) -> tuple[float, float, float] | None:
    """The well's inner circle (cx, cy, r) in working pixels, from the outline of the floor region."""
    _, height, width = opp.shape
    floorlike = (np.abs(opp[0] - reference[0]) < 22) & (np.abs(opp[1:] - reference[1:, None, None]).max(0) < 10)
    floorlike &= gradient < 40
    labels, count = ndimage.label(floorlike)
    if count == 0:
        return None
    floor = labels == np.argmax(np.bincount(labels.ravel())[1:]) + 1
    floor |= _holes(floor)
    outline = _outline(floor)
    outline[[0, -1], :] = outline[:, [0, -1]] = False  # the frame edge is not the rim
    ys, xs = np.nonzero(outline)
    points = np.column_stack([xs, ys]).astype(np.float64)
    return _ransac_circle(points, 0.012 * height, (0.4 * height, 0.75 * width))


def _floor_lighting(opp: np.ndarray, inside: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """(3, h, w) floor colour per pixel: a quadratic surface per channel, fitted robustly to floor pixels.

    Pixels far from the floor's colour (the insect) are left out before the fit, and the worst residuals are
    dropped once after it, so a large insect does not tilt the floor.
    """
    _, height, width = opp.shape
    ys, xs = np.nonzero(inside[::4, ::4])
    ys, xs = ys * 4, xs * 4
    samples = opp[:, ys, xs]
    keep = (np.abs(samples[0] - reference[0]) < 30) & (np.abs(samples[1:] - reference[1:, None]).max(0) < 12)
    u, v = (xs - width / 2) / height, (ys - height / 2) / height
    design = np.column_stack([np.ones_like(u), u, v, u * u, u * v, v * v])
    if keep.sum() < 12:
        return np.broadcast_to(reference[:, None, None], opp.shape).astype(np.float32)
    for _ in range(2):
        rows = design[keep]
        coef = np.linalg.solve(rows.T @ rows + 1e-6 * np.eye(6), rows.T @ samples[:, keep].T)  # (6, 3)
        residual = np.abs(design @ coef - samples.T).max(1)
        keep &= residual < max(3 * np.median(residual[keep]), 2.0)
    gu = (np.arange(width, dtype=np.float32) - width / 2) / height
    gv = (np.arange(height, dtype=np.float32) - height / 2) / height
    c = coef.astype(np.float32)
    rows = c[0, :, None] + c[1, :, None] * gu + c[3, :, None] * gu * gu  # (3, w): the terms in u alone
    cols = c[2, :, None] * gv + c[5, :, None] * gv * gv  # (3, h): the terms in v alone
    return rows[:, None, :] + cols[:, :, None] + (c[4, :, None] * gv)[:, :, None] * gu  # + the u*v term


def _foreground_score(opp: np.ndarray, floor: np.ndarray, config: ClassicalConfig) -> np.ndarray:
    """Distance of each pixel from the floor: darker and colour shifts in full, brighter at `bright_weight`.

    The well's reflections (spots and arcs up to 60 levels brighter) keep the floor's tint (measured on the
    fixture photos: c1, c2 within 5 of the floor's), so they score low while pale yellow or green insects
    still stand out by colour.
    """
    darker = floor[0] - opp[0]
    shade = np.maximum(darker, -config.bright_weight * darker)
    return shade + np.hypot(opp[1] - floor[1], opp[2] - floor[2])


def _inside_mask(shape: tuple[int, int], circle: tuple[float, float, float] | None, margin: float) -> np.ndarray:
    """Pixels inside the well, `margin` pixels clear of the rim; without a circle, all but a frame band."""
    height, width = shape
    if circle is None:
        inside = np.zeros(shape, dtype=bool)
        band = max(1, round(margin))
        inside[band:-band, band:-band] = True
        return inside
    ys, xs = np.ogrid[0:height, 0:width]
    return (xs - circle[0]) ** 2 + (ys - circle[1]) ** 2 < (circle[2] - margin) ** 2


def _thresholds(score: np.ndarray, inside: np.ndarray, config: ClassicalConfig) -> tuple[float, float]:
    """(weak, strong) score thresholds from the floor's own noise (robust spread of the score in the well)."""
    values = score[::2, ::2][inside[::2, ::2]]  # a quarter of the pixels: the same statistics, 4x cheaper
    noise = 1.4826 * float(np.median(np.abs(values - np.median(values)))) + float(np.median(values))
    weak = max(config.weak_sigma * noise, config.min_contrast)
    return weak, max(config.strong_sigma * noise, 2.5 * config.min_contrast)


def _join_fragments(labels: np.ndarray, main: int, candidates: np.ndarray, gap: int) -> np.ndarray:
    """Lookup by label (index 0: background, False): the body `main` plus `candidates` within `gap` pixels of it.

    Grown in up to three rings (a leg broken in three pieces at low resolution joins whole); proximity is
    to the body's pixels, not its box, so a fibre or bubble beside a large insect stays out.
    """
    members = np.zeros(len(candidates) + 1, dtype=bool)
    members[main + 1] = True
    allowed = np.concatenate([[False], candidates])
    for _ in range(3):
        near = ndimage.maximum_filter(members[labels].view(np.uint8), size=2 * gap + 1).view(bool)
        found = np.zeros_like(members)
        found[labels[near]] = True
        added = found & allowed & ~members
        if not added.any():
            break
        members |= added
    return members


Circle = tuple[float, float, float]  # cx, cy, r in working pixels


def _find_well(
    opp: np.ndarray, half: np.ndarray, config: ClassicalConfig
) -> tuple[Circle | None, np.ndarray, np.ndarray]:
    """(circle or None, floor colour per pixel, pixels inside the well clear of the rim), in working pixels.

    The floor's colour and the rim are found on `half` (half the working resolution: enough, and 4x cheaper).
    """
    height, width = opp.shape[1:]
    gradient = np.hypot(ndimage.sobel(half[0], 0), ndimage.sobel(half[0], 1))
    reference = _floor_reference(half, gradient)
    circle = _well_circle(half, reference, gradient)
    circle = None if circle is None else (2 * circle[0] + 0.5, 2 * circle[1] + 0.5, 2 * circle[2])
    inside = _inside_mask((height, width), circle, config.rim_margin * height)
    return circle, _floor_lighting(opp, inside, reference), inside


def _analyse(image: np.ndarray, config: ClassicalConfig) -> _Analysis:
    """Find the insect in one RGB photo (see the module docstring for the steps)."""
    work, scale = _working_image(image, config.work_height)
    opp = _opponent(work)
    half = _half(opp)
    if float(np.percentile(half[0], 90)) < 40.0:  # a well floor is light grey (175-215 on the fixture photos)
        return _Analysis(scale, None, 0.0, "dark_image")
    if float(half[0].std()) < 3.0:  # no rim, no floor lighting, no organism
        return _Analysis(scale, None, 0.0, "uniform_image")
    circle, floor, inside = _find_well(opp, half, config)
    score = _foreground_score(opp, floor, config)
    score[~inside] = 0.0  # the rim margin and the rim: only reached from the body (`_reach_over_rim`)
    found = _organism(score, floor[0] - opp[0], inside, config)
    if found is None:
        return _Analysis(scale, None, 0.0, "no_specimen_found")
    box, confidence = found
    return _Analysis(scale, box, round(confidence * (1.0 if circle else 0.6), 4))


def _organism(
    score: np.ndarray, darker: np.ndarray, inside: np.ndarray, config: ClassicalConfig
) -> tuple[tuple[int, int, int, int], float] | None:
    """(box, confidence) of the organism: seeds -> body -> fragments -> over the rim; None if no seed."""
    weak, strong = _thresholds(score, inside, config)
    labels, count = ndimage.label(score > weak, np.ones((3, 3), bool))
    flat = labels.ravel()
    seeds = np.bincount(labels[score > strong], minlength=count + 1)[1:]
    if not (seeds >= config.min_seed_pixels).any():
        return None
    mass = np.bincount(flat, weights=score.ravel(), minlength=count + 1)[1:]
    main = int(np.argmax(np.where(seeds >= config.min_seed_pixels, mass, -1.0)))
    # fragments that may join the body: darker than the floor on average (legs, antennae, specks), not the
    # floor-tinted fringes of reflections, and not touching the rim (its dark edge where the circle is off)
    darkness = np.bincount(flat, weights=darker.ravel(), minlength=count + 1)[1:]
    rim = _outline(inside)
    touches_rim = np.bincount(labels[rim], minlength=count + 1)[1:] > 0
    rows, cols = ndimage.find_objects((labels == main + 1).view(np.uint8))[0]  # type: ignore[misc]
    body_height, body_width = rows.stop - rows.start, cols.stop - cols.start
    # within `join_distance`, but no farther than a quarter of the body's size: a fibre or bubble beside a small
    # insect would double its box
    gap = max(1, round(min(config.join_distance * score.shape[0], 0.25 * max(body_height, body_width))))
    members = _join_fragments(labels, main, (darkness > 0) & ~touches_rim, gap)
    selected = members[labels]
    if (selected & rim).any():
        selected = _reach_over_rim(selected, selected & rim, ~inside & (darker > weak), 2 * gap)
    ys, xs = np.nonzero(selected.any(axis=1))[0], np.nonzero(selected.any(axis=0))[0]
    box = (int(xs[0]), int(ys[0]), int(xs[-1]) + 1, int(ys[-1]) + 1)
    growth = (box[2] - box[0]) * (box[3] - box[1]) / (body_height * body_width)
    return box, _confidence(mass, seeds, members[1:], growth, bool((selected & rim).any()))


def _reach_over_rim(selected: np.ndarray, contact: np.ndarray, dark_beyond: np.ndarray, reach: int) -> np.ndarray:
    """`selected` plus the dark pixels beyond the well margin connected to it within `reach` of its rim contact.

    An insect lying over the rim (a fly's head, a leg, a wing tip) continues past the margin; only dark pixels
    near where the body meets the margin may join, so the rim's own dark edge adds at most `reach` pixels.
    """
    near = ndimage.maximum_filter(contact.view(np.uint8), size=2 * reach + 1).view(bool)
    grown, _ = ndimage.label(selected | (dark_beyond & near), np.ones((3, 3), bool))
    keep = np.zeros(grown.max() + 1, dtype=bool)
    keep[grown[selected]] = True
    keep[0] = False
    return keep[grown]


def _confidence(mass: np.ndarray, seeds: np.ndarray, members: np.ndarray, growth: float, touches: bool) -> float:
    """How sure the box is, in [0, 1]: a product of what makes a box doubtful on the fixtures and synthetic wells.

    The share of the well's foreground mass the organism holds (specks and fibres elsewhere lower it), its seed
    strength (a faint speck is no insect), how much joined fragments grew the body's box (`growth`, area ratio:
    a fibre or bubble joined by mistake doubles a small insect's box), and rim or frame contact (the box may be
    cut there).
    """
    isolation = float(mass[members].sum() / mass.sum())
    strength = min(1.0, float(seeds[members].sum()) / 12.0)
    joined = min(1.0, 1.5 / growth)
    return round(isolation * strength * joined * (0.7 if touches else 1.0), 4)


@register_detector("classical")
class ClassicalDetector:
    """The insect against the well floor, found without weights (see the module docstring)."""

    name = "classical"

    def __init__(self, **settings: Any) -> None:
        """Settings are `ClassicalConfig` fields (e.g. `work_height=512`)."""
        self.config = ClassicalConfig(**settings)

    def detect(self, images: Sequence[np.ndarray]) -> list[Detection]:
        """One detection per RGB uint8 photo, its box in the photo's own pixels."""
        return [self._detect_one(np.asarray(image)) for image in images]

    def _detect_one(self, image: np.ndarray) -> Detection:
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8 or min(image.shape[:2]) < 16:
            return Detection(None, 0.0, f"not_an_rgb_photo: shape {image.shape}, dtype {image.dtype}")
        analysis = _analyse(image, self.config)
        if analysis.box is None:
            return Detection(None, 0.0, analysis.reason)
        return Detection(_to_original(analysis.box, analysis.scale, image.shape[:2]), analysis.score)

    def fingerprint(self) -> dict[str, Any]:
        """Name and settings (no weights)."""
        return {"name": self.name, **asdict(self.config)}


def _to_original(box: tuple[int, int, int, int], scale: tuple[float, float], shape: tuple[int, int]) -> Box:
    """A working-pixel box (end exclusive) in original pixels, clipped to the photo."""
    sx, sy = scale
    height, width = shape
    return (
        round(min(box[0] * sx, width), 1),
        round(min(box[1] * sy, height), 1),
        round(min(box[2] * sx, width), 1),
        round(min(box[3] * sy, height), 1),
    )
