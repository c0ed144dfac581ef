"""A contact sheet: synthetic originals beside the real fixture photos, so a reader can judge the realism.

Sits beside the synthetic image path (`synth.specimen`), used by `bioscan-stream contact-sheet`. The
synthetic tiles cover the orders of the real fixtures (../shared/fixtures/real_images/<Order>.jpg) with
boxes from tiny to frame-filling; each real photo, when the folder exists, is downscaled into the same
grid. Labels name the source, the order and the box. The PNG is palette-quantised when needed to stay
small enough to commit.
"""

from __future__ import annotations

import io
import math
import os
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from bioscan_stream._atomic import atomic_path
from bioscan_stream.constants import ORIGINAL_SIZE
from bioscan_stream.synth.specimen import render_original
from bioscan_stream.synth.well import stable_rng

#: Orders drawn when no real fixtures name them (the orders of the 18 real fixture photos).
DEFAULT_ORDERS: tuple[str, ...] = (
    "Diptera", "Hymenoptera", "Coleoptera", "Lepidoptera", "Hemiptera", "Trichoptera", "Archaeognatha",
    "Blattodea", "Dermaptera", "Embioptera", "Ephemeroptera", "Neuroptera", "Orthoptera", "Plecoptera",
    "Psocodea", "Strepsiptera", "Thysanoptera", "Zoraptera",
)  # fmt: skip


@dataclass(frozen=True)
class SheetConfig:
    """Contact sheet options: `samples` synthetic tiles, `columns` per row, tile width, PNG size cap."""

    samples: int = 18
    seed: int = 0
    real_dir: Path | None = None
    columns: int = 6
    tile_width: int = 256
    max_bytes: int = 1_400_000


def sample_records(samples: int, *, seed: int, orders: tuple[str, ...] = DEFAULT_ORDERS) -> list[dict[str, object]]:
    """Records cycling through `orders`, box sides log-spaced from ~25 px (tiny) to ~700 px (frame-filling)."""
    rng = stable_rng("contact-sheet", seed)
    records: list[dict[str, object]] = []
    for i in range(samples):
        side = 25 * (700 / 25) ** (i / max(samples - 1, 1))
        aspect = rng.uniform(0.6, 1.6)
        width, height = min(int(side * math.sqrt(aspect)), 1000), min(int(side / math.sqrt(aspect)), 740)
        x0 = int(rng.uniform(max(0, 512 - 380), min(1024 - width, 512 + 380 - width) + 1)) if width < 760 else 10
        y0 = int(rng.uniform(max(0, 384 - 300), min(768 - height, 384 + 300 - height) + 1)) if height < 600 else 10
        order = orders[i % len(orders)]
        records.append({
            "processid": f"CONTACT{i:03d}-{seed}", "order": order, "family": f"{order} family {i % 2}",
            "genus": None, "species": None, "x0": x0, "y0": y0, "x1": x0 + width, "y1": y0 + height,
            "image_measurement_value": int(rng.uniform(0.2, 0.4) * width * height),
        })  # fmt: skip
    return records


def _label(tile: Image.Image, text: str, font: ImageFont.ImageFont | ImageFont.FreeTypeFont) -> Image.Image:
    """The tile with a white caption strip underneath."""
    strip = 18
    out = Image.new("RGB", (tile.width, tile.height + strip), "white")
    out.paste(tile, (0, 0))
    ImageDraw.Draw(out).text((4, tile.height + 3), text, fill=(20, 20, 20), font=font)
    return out


def _tiles(config: SheetConfig) -> list[Image.Image]:
    size = (config.tile_width, round(config.tile_width * ORIGINAL_SIZE[1] / ORIGINAL_SIZE[0]))
    font = ImageFont.load_default()
    real = sorted(config.real_dir.glob("*.jpg")) if config.real_dir and config.real_dir.is_dir() else []
    orders = tuple(p.stem for p in real) or DEFAULT_ORDERS
    tiles = []
    for i, record in enumerate(sample_records(config.samples, seed=config.seed, orders=orders)):
        image = render_original(record, seed=config.seed * 1_000_003 + i).resize(size, Image.Resampling.LANCZOS)
        box = f"{int(record['x1']) - int(record['x0'])}x{int(record['y1']) - int(record['y0'])}"  # type: ignore[call-overload]
        tiles.append(_label(image, f"synthetic {record['order']}, box {box}", font))
    for path in real:
        with Image.open(path) as photo:
            image = photo.convert("RGB").resize(size, Image.Resampling.LANCZOS)
        tiles.append(_label(image, f"REAL {path.stem}", font))
    return tiles


def _png_bytes(sheet: Image.Image, max_bytes: int) -> bytes:
    """PNG of the sheet; palette-quantised (256 colours) when the full-colour PNG is above `max_bytes`."""
    for image in (sheet, sheet.quantize(256, method=Image.Quantize.MEDIANCUT)):
        buffer = io.BytesIO()
        image.save(buffer, format="PNG", optimize=True)
        if buffer.tell() <= max_bytes:
            break
    return buffer.getvalue()


def write_contact_sheet(out: str | os.PathLike[str], config: SheetConfig | None = None) -> Path:
    """Render the sheet and write it atomically to `out` (PNG). Returns the path."""
    config = config or SheetConfig()
    tiles = _tiles(config)
    width, height = tiles[0].size
    rows = -(-len(tiles) // config.columns)
    sheet = Image.new("RGB", (config.columns * width, rows * height), "white")
    for i, tile in enumerate(tiles):
        sheet.paste(tile, ((i % config.columns) * width, (i // config.columns) * height))
    target = Path(out)
    with atomic_path(target) as tmp:
        tmp.write_bytes(_png_bytes(sheet, config.max_bytes))
    return target
