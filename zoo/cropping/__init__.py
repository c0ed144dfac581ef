"""Cropping at scale: the Ray crop job (original shards or a release -> detector -> `cropped` / `cropped_256` shards).

report = crop_shards(CropConfig("OUT/original_full", "OUT", detector="classical", preset="bioscan5m"))
report = crop_shards(CropConfig("RELEASE", "OUT", package="original_full"))   # a release tree / zips, no shards
boxes = read_bbox("OUT/BIOSCAN_5M_Insect_bbox.tsv")   # bioscan_stream.metadata: the official bbox columns
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from bioscan_stream._lazy import lazy_exports

if TYPE_CHECKING:
    from zoo.cropping.pipeline import CropConfig as CropConfig
    from zoo.cropping.pipeline import CropReport as CropReport
    from zoo.cropping.pipeline import crop_shards as crop_shards

__all__ = ["CropConfig", "CropReport", "crop_shards"]

__getattr__ = lazy_exports(
    __name__,
    {
        "CropConfig": "zoo.cropping.pipeline",
        "CropReport": "zoo.cropping.pipeline",
        "crop_shards": "zoo.cropping.pipeline",
    },
)
