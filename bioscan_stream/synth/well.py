"""The empty well of a specimen plate, as the BIOSCAN camera sees it (the backdrop of every synthetic photo).

Part of the synthetic release's image path: `specimen.render_view` paints an organism onto this backdrop.
Real originals (../shared/fixtures/real_images) show a round well filling the frame: a light grey-blue,
unevenly lit floor with concentric reflection arcs, a thin dark edge, a bright rim with prismatic
sparkle, and the out-of-focus plate outside it, plus the odd bubble and fibre.

Everything is a function of original-image coordinates (1024x768), evaluated on whatever window a
`Viewport` asks for, so a 341x256 crop can be rendered directly with the geometry of cropping the full
original. The smooth lighting field (numpy, on a grid 3x coarser, resampled per window) is the expensive part,
so each process renders a pool of `WELL_POOL` wells once and every photo resamples its window of one of
them, mirrored and tinted by the photo's seed; bubbles and fibres are drawn per photo at output resolution.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw

from bioscan_stream.constants import CROP_PAD_RGB, ORIGINAL_SIZE


@dataclass(frozen=True)
class Viewport:
    """A window `box` (x0, y0, x1, y1) of the original image rendered at pixel `size` (width, height).

    Pixels outside the original image get the crop tool's pad colour, so a viewport equal to a crop
    window reproduces the padded crop.
    """

    box: tuple[float, float, float, float]
    size: tuple[int, int]

    @property
    def scale(self) -> tuple[float, float]:
        """Output pixels per original pixel along x and y."""
        return self.size[0] / (self.box[2] - self.box[0]), self.size[1] / (self.box[3] - self.box[1])

    def to_pixels(self, points: np.ndarray) -> np.ndarray:
        """Map (n, 2) original coordinates to output pixel coordinates."""
        sx, sy = self.scale
        return (points - np.array(self.box[:2])) * np.array([sx, sy])


#: Distinct well lightings per process: each photo takes one, mirrored (4 ways) and tinted by its seed.
WELL_POOL = 16

FULL_VIEW = Viewport((0.0, 0.0, float(ORIGINAL_SIZE[0]), float(ORIGINAL_SIZE[1])), ORIGINAL_SIZE)


def stable_rng(*parts: object) -> np.random.Generator:
    """A generator seeded by a hash of `parts`, identical in every process and Python run."""
    digest = hashlib.blake2b("\x1f".join(map(str, parts)).encode(), digest_size=8).digest()
    return np.random.default_rng(int.from_bytes(digest, "little"))


@dataclass(frozen=True)
class WellParams:
    """The lighting of one well: centre, radius, colours, uneven light, reflection arcs, rim sparkle."""

    centre: tuple[float, float]
    radius: float
    rim_width: float
    floor_rgb: np.ndarray
    outside_rgb: np.ndarray
    waves: np.ndarray  # (k, 4): amplitude, kx, ky, phase of the uneven lighting
    arcs: np.ndarray  # (k, 5): amplitude, radius, width, lobes, phase of the reflection arcs
    sparkle: np.ndarray  # (k, 3, 2): per-channel lobes and phases of the rim sparkle

    @classmethod
    def sample(cls, rng: np.random.Generator) -> WellParams:
        """Draw a well; ranges read off the real fixture photos."""
        radius = rng.uniform(430, 495)
        tint = rng.normal(0, 2.5, 3) + np.array([-3.0, 0.0, 5.0]) * rng.uniform(0, 1.6)
        arcs = [rng.uniform(6, 20, 4), radius * rng.uniform(0.1, 0.92, 4), rng.uniform(5, 22, 4)]
        return cls(
            centre=(512 + rng.normal(0, 25), 384 + rng.normal(0, 15)),
            radius=radius,
            rim_width=rng.uniform(14, 30),
            floor_rgb=np.array([199.0, 203.0, 209.0]) + rng.normal(0, 7) + tint,
            outside_rgb=np.array([224.0, 224.0, 230.0]) + rng.normal(0, 5) + tint * 0.5,
            waves=np.column_stack([rng.uniform(2, 7, 3), rng.normal(0, 0.006, (3, 2)), rng.uniform(0, 6.3, 3)]),
            arcs=np.column_stack([*arcs, rng.integers(0, 4, 4), rng.uniform(0, 6.3, 4)]),
            sparkle=np.stack([rng.integers(30, 160, (5, 3)), rng.uniform(0, 6.3, (5, 3))], axis=2),
        )


@dataclass(frozen=True)
class WellDetails:
    """What makes one photo's well its own: which pooled well, mirrored how, tinted, bubbles and fibres."""

    index: int
    flip: tuple[bool, bool]  # left-right, top-bottom
    tint: np.ndarray
    bubbles: np.ndarray  # (k, 3): x, y, radius
    fibres: np.ndarray  # (k, 4, 2): control points of thin fibres

    @classmethod
    def sample(cls, rng: np.random.Generator) -> WellDetails:
        index = int(rng.integers(WELL_POOL))
        flip = (bool(rng.integers(2)), bool(rng.integers(2)))
        params = _pool_params(index)
        centre = (
            ORIGINAL_SIZE[0] - params.centre[0] if flip[0] else params.centre[0],
            ORIGINAL_SIZE[1] - params.centre[1] if flip[1] else params.centre[1],
        )
        n_bubbles = rng.poisson(1.5)
        angles = rng.uniform(0, 2 * np.pi, n_bubbles)
        dists = params.radius * np.sqrt(rng.uniform(0.02, 0.85, n_bubbles))
        bubbles = np.column_stack(
            [centre[0] + dists * np.cos(angles), centre[1] + dists * np.sin(angles), rng.uniform(3, 16, n_bubbles)]
        )
        fibre_starts = rng.uniform([150, 100], [870, 670], (rng.poisson(1.0), 1, 2))
        fibres = fibre_starts + np.cumsum(rng.normal(0, 14, (len(fibre_starts), 4, 2)), axis=1)
        tint = rng.normal(0, 3, 3) + rng.normal(0, 6)
        return cls(index, flip, tint, bubbles, fibres)


def _grid(viewport: Viewport, factor: int) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
    """Original-image coordinates of the pixel centres of a grid `factor` times coarser than the output."""
    width, height = max(2, -(-viewport.size[0] // factor)), max(2, -(-viewport.size[1] // factor))
    x0, y0, x1, y1 = viewport.box
    xs = (x0 + (np.arange(width, dtype=np.float32) + 0.5) * (x1 - x0) / width)[None, :]
    ys = (y0 + (np.arange(height, dtype=np.float32) + 0.5) * (y1 - y0) / height)[:, None]
    return xs, ys, (width, height)


_ANGLE_BINS = 1024
_RADIUS_BINS_PER_PIXEL = 2


def _radial_tables(params: WellParams) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-radius lookup tables: RGB base (floor -> edge -> rim -> outside), rim band weight, outside weight."""
    r = np.arange(0, 1400, 1 / _RADIUS_BINS_PER_PIXEL, dtype=np.float32)
    u = r - params.radius
    inside = np.clip(0.5 - (u - 1.5) / 3.0, 0.0, 1.0)
    light = -14 * np.minimum(r / params.radius, 1.0) ** 6 + 16 * np.exp(-(((u + 28) / 14) ** 2))
    light -= 55 * np.exp(-((u / 2.5) ** 2)) + 14 * np.exp(-(((u - params.rim_width - 30) / 18) ** 2))
    light += (1 - inside) * 9 * np.cos(2 * np.pi * u / 45) * np.exp(-np.maximum(u, 0) / 250)  # glass rings
    band = np.exp(-(((u - 4 - params.rim_width / 2) / (params.rim_width / 2)) ** 2))
    base = inside[:, None] * params.floor_rgb + (1 - inside[:, None]) * params.outside_rgb + light[:, None]
    return base.astype(np.float32), band.astype(np.float32), (1 - inside).astype(np.float32)


def _arc_lobes(params: WellParams) -> np.ndarray:
    """Per-angle brightness (k, bins) of each reflection arc: full rings to three-lobed arcs."""
    theta = np.linspace(-np.pi, np.pi, _ANGLE_BINS, endpoint=False, dtype=np.float32)
    return ((0.6 + 0.4 * np.cos(params.arcs[:, 3:4] * theta + params.arcs[:, 4:5])) ** 2).astype(np.float32)


def _rim_tables(params: WellParams) -> tuple[np.ndarray, np.ndarray]:
    """Per-angle lookup tables of the rim sparkle (bins, 3) and of the outside shading (bins, 3)."""
    theta = np.linspace(-np.pi, np.pi, _ANGLE_BINS, endpoint=False, dtype=np.float32)
    spikes = sum(np.cos(k * theta + ph) for k, ph in params.sparkle[:, 0])
    white = 22 + 9 * np.maximum(spikes, -1.5)
    colour = np.stack([sum(np.cos(k * theta + ph) for k, ph in params.sparkle[:, c]) for c in range(3)], axis=1)
    sparkle = white[:, None] + 2.5 * colour
    outside = 5 * np.cos(3 * theta[:, None] + params.sparkle[0, :, 1]) + 4 * np.cos(11 * theta[:, None])
    return sparkle.astype(np.float32), outside.astype(np.float32)


def _field(params: WellParams, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """(h, w, 3) float RGB of the smooth well: floor, reflections, dark edge, sparkling rim, outside.

    Radial and angular parts come from lookup tables indexed per pixel, which keeps a 512x384 field at a
    few milliseconds (direct `exp`/`cos` per pixel cost ~50 ms).
    """
    dx, dy = xs - params.centre[0], ys - params.centre[1]
    r = np.sqrt(dx * dx + dy * dy)
    r_idx = np.minimum((r * _RADIUS_BINS_PER_PIXEL).astype(np.int32), 1400 * _RADIUS_BINS_PER_PIXEL - 1)
    t_idx = ((np.arctan2(dy, dx) + np.pi) * (_ANGLE_BINS / (2 * np.pi))).astype(np.int32) % _ANGLE_BINS
    base, band, outside = _radial_tables(params)
    lobes = _arc_lobes(params)
    # uneven lighting: separable waves (one full-size add instead of a dozen full-size products)
    waves_x = sum(a * np.sin(kx * xs + ph) for a, kx, _, ph in params.waves)
    waves_y = sum(a * np.sin(ky * ys + 2 * ph) for a, _, ky, ph in params.waves)
    light = (waves_x + waves_y).astype(np.float32)
    grid_r = np.arange(0, 1400, 1 / _RADIUS_BINS_PER_PIXEL, dtype=np.float32)
    r_low, r_high = float(r.min()), float(r.max())
    for (amp, radius, width, _, _), lobe in zip(params.arcs, lobes, strict=True):
        if r_low - 3 * width < radius < r_high + 3 * width:  # a crop spans few radii: skip the arcs it misses
            light += (amp * np.exp(-(((grid_r - radius) / width) ** 2))).astype(np.float32)[r_idx] * lobe[t_idx]
    out = base[r_idx] + light[..., None]
    if r_high > params.radius - 10:  # the rim and beyond
        sparkle, shade = _rim_tables(params)
        out += band[r_idx][..., None] * sparkle[t_idx] + outside[r_idx][..., None] * shade[t_idx]
    return out


def pad_outside(image: Image.Image, viewport: Viewport) -> None:
    """Paint the crop tool's pad colour wherever the viewport lies past the edge of the 1024x768 original."""
    left, top = viewport.to_pixels(np.zeros((1, 2)))[0]
    right, bottom = viewport.to_pixels(np.array([ORIGINAL_SIZE], dtype=float))[0]
    left, top, right, bottom = round(left), round(top), round(right), round(bottom)
    width, height = image.size
    draw = ImageDraw.Draw(image)
    for box in ((0, 0, width, top), (0, bottom, width, height), (0, 0, left, height), (right, 0, width, height)):
        if box[2] > box[0] and box[3] > box[1]:
            draw.rectangle((box[0], box[1], box[2] - 1, box[3] - 1), fill=CROP_PAD_RGB)


def _draw_details(image: Image.Image, details: WellDetails, viewport: Viewport) -> None:
    """Bubbles (dark outline, bright highlight) and thin fibres, at full output resolution."""
    draw = ImageDraw.Draw(image, "RGBA")
    scale = float(np.mean(viewport.scale))
    for x, y, radius in details.bubbles:
        (px, py), pr = viewport.to_pixels(np.array([[x, y]]))[0], radius * scale
        draw.ellipse(
            (px - pr, py - pr, px + pr, py + pr),
            fill=(230, 234, 240, 60),
            outline=(120, 125, 135, 120),
            width=max(1, round(pr / 5)),
        )
        hr = max(1.0, pr / 4)
        draw.ellipse(
            (px - pr / 2 - hr, py - pr / 2 - hr, px - pr / 2 + hr, py - pr / 2 + hr), fill=(255, 255, 255, 170)
        )
    for fibre in details.fibres:
        points = [tuple(p) for p in viewport.to_pixels(fibre)]
        draw.line(points, fill=(90, 85, 80, 110), width=max(1, round(1.2 * scale)), joint="curve")


@lru_cache(maxsize=WELL_POOL)
def _pool_params(index: int) -> WellParams:
    return WellParams.sample(stable_rng("well-pool", index))


#: The pooled wells' lighting field is evaluated every `_COARSE`-th original pixel (its finest feature,
#: the dark edge, is ~5 pixels wide); every window is resampled bilinearly from that coarse image.
_COARSE = 3


@lru_cache(maxsize=WELL_POOL)
def _pooled_well(index: int) -> Image.Image:
    """Pooled well `index` on the coarse grid (342x256 for the 1024x768 original; rendered once per process,
    deterministic in `index`)."""
    xs, ys, _ = _grid(FULL_VIEW, _COARSE)
    field = np.clip(_field(_pool_params(index), xs, ys), 0, 255)
    return Image.fromarray(field.astype(np.uint8), "RGB")


def _inside(viewport: Viewport) -> tuple[int, int, int, int]:
    """Output pixels (x0, y0, x1, y1) covering the part of the viewport inside the original, rounded outwards
    (past the edge `pad_outside` paints over them)."""
    (left, top), (right, bottom) = viewport.to_pixels(np.array([[0.0, 0.0], ORIGINAL_SIZE], dtype=float))
    width, height = viewport.size
    return (
        max(0, math.floor(left)),
        max(0, math.floor(top)),
        min(width, math.ceil(right)),
        min(height, math.ceil(bottom)),
    )


def _window(well: Image.Image, viewport: Viewport, flip: tuple[bool, bool]) -> Image.Image:
    """`viewport` of the (mirrored) coarse well: one bilinear `resize` of the window's part inside the
    original (~0.6 ms for 341x256, against 2 ms for an affine `transform` of a full-size well), on the pad
    colour."""
    x0, y0, x1, y1 = _inside(viewport)
    if x1 <= x0 or y1 <= y0:
        return Image.new("RGB", viewport.size, CROP_PAD_RGB)
    sx, sy = viewport.scale
    qx, qy = well.width / ORIGINAL_SIZE[0], well.height / ORIGINAL_SIZE[1]
    left, top = viewport.box[0] + x0 / sx, viewport.box[1] + y0 / sy
    right, bottom = viewport.box[0] + x1 / sx, viewport.box[1] + y1 / sy
    if flip[0]:
        left, right = ORIGINAL_SIZE[0] - right, ORIGINAL_SIZE[0] - left
    if flip[1]:
        top, bottom = ORIGINAL_SIZE[1] - bottom, ORIGINAL_SIZE[1] - top
    source = (max(0.0, left * qx), max(0.0, top * qy), min(well.width, right * qx), min(well.height, bottom * qy))
    part = well.resize((x1 - x0, y1 - y0), Image.Resampling.BILINEAR, box=source)
    if flip[0]:
        part = part.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    if flip[1]:
        part = part.transpose(Image.Transpose.FLIP_TOP_BOTTOM)
    if part.size == viewport.size:  # the whole window lies inside the original (most crops)
        return part
    out = Image.new("RGB", viewport.size, CROP_PAD_RGB)
    out.paste(part, (x0, y0))
    return out


def render_background(seed: int, viewport: Viewport = FULL_VIEW) -> Image.Image:
    """The empty well of photo `seed` seen through `viewport` (RGB, not yet padded). Deterministic in `seed`.

    The lighting comes from a pool of `WELL_POOL` wells rendered once per process (the field is the
    expensive part: ~25 ms per 1024x768 photo, against ~0.6 ms to resample a cached one at 341x256); each photo
    mirrors and tints its pooled well and gets its own bubbles and fibres.
    """
    details = WellDetails.sample(stable_rng("well", seed))
    image = _window(_pooled_well(details.index), viewport, details.flip)
    lut = np.clip(np.arange(256)[None, :] + details.tint[:, None], 0, 255).astype(np.uint8)
    image = image.point(lut.ravel().tolist())
    _draw_details(image, details, viewport)
    return image
