"""Facts of the BIOSCAN-5M release that every layer shares (columns, partitions, packages, pixel scale).

Sources: ../shared/reference/dataset-format.md, the paper's appendix A1-A4 and the official loader
(`bioscan-dataset` 1.3.0). Nothing here is computed; it is the format, written down once.
"""

from __future__ import annotations

import importlib.util

#: The 23 metadata columns, in CSV order.
COLUMNS: tuple[str, ...] = (
    "processid",
    "sampleid",
    "taxon",
    "phylum",
    "class",
    "order",
    "family",
    "subfamily",
    "genus",
    "species",
    "dna_bin",
    "dna_barcode",
    "country",
    "province_state",
    "coord-lat",
    "coord-lon",
    "image_measurement_value",
    "area_fraction",
    "scale_factor",
    "inferred_ranks",
    "split",
    "index_bioscan_1M_insect",
    "chunk",
)

#: The 7 taxonomic ranks, coarse to fine.
RANKS: tuple[str, ...] = ("phylum", "class", "order", "family", "subfamily", "genus", "species")
#: Categorical label columns that get a global vocabulary (the ranks plus the BIN).
LABEL_COLUMNS: tuple[str, ...] = (*RANKS, "dna_bin")

#: The 8 partitions, in the order the paper lists them.
SPLITS: tuple[str, ...] = (
    "pretrain",
    "train",
    "val",
    "test",
    "key_unseen",
    "val_unseen",
    "test_unseen",
    "other_heldout",
)
#: Hex characters of md5(processid) used as the image sub-folder, per split (0 = no chunk folder).
CHUNK_LENGTH: dict[str, int] = {
    "pretrain": 2,
    "train": 1,
    "other_heldout": 1,
    "val": 0,
    "test": 0,
    "key_unseen": 0,
    "val_unseen": 0,
    "test_unseen": 0,
}
#: Splits shipped in the per-partition `eval` zip package.
EVAL_SPLITS: tuple[str, ...] = ("val", "test", "key_unseen", "val_unseen", "test_unseen", "other_heldout")

#: Image packages of the release.
PACKAGES: tuple[str, ...] = ("original_full", "cropped", "original_256", "cropped_256")
ORIGINAL_SIZE: tuple[int, int] = (1024, 768)

METADATA_CSV = "bioscan5m/metadata/csv/BIOSCAN_5M_Insect_Dataset_metadata.csv"
METADATA_JSONLD = "bioscan5m/metadata/jsonld/BIOSCAN_5M_Insect_Dataset_metadata.jsonld"
METADATA_ZIP = "BIOSCAN_5M_Insect_Dataset_metadata_MultiTypes.zip"
BBOX_TSV = "BIOSCAN_5M_Insect_bbox.tsv"
BBOX_COLUMNS: tuple[str, ...] = (
    "processid",
    "width_original",
    "height_original",
    "x0",
    "y0",
    "x1",
    "y1",
    "scale_factor",
    "area_fraction",
)
IMAGES_DIR = "bioscan5m/images"

#: mm per pixel of a 1024x768 original (paper A4.1).
MM_PER_PIXEL_ORIGINAL = 0.1554
#: RGB mean / std of cropped_256 used by the official loader.
BIOSCAN_MEAN: tuple[float, float, float] = (0.76281859, 0.76503749, 0.76373138)
BIOSCAN_STD: tuple[float, float, float] = (0.14205404, 0.15642502, 0.17309470)

#: DNA is truncated to 660 nucleotides by the official loader (658-bp COI plus 2).
DNA_MAX_LEN = 660

#: Crop procedure of the 5M release (cropping.md).
CROP_EXPAND_RATIO = 1.4
CROP_ASPECT = 4 / 3
CROP_PAD_RGB: tuple[int, int, int] = (204, 218, 243)
RESIZED_SHORT_SIDE = 256

_FAISS_AVAILABLE = importlib.util.find_spec("faiss") is not None
_PILLOW_SIMD = False
try:  # pillow-simd reports a version with a ".postN" suffix
    import PIL

    _PILLOW_SIMD = ".post" in PIL.__version__
except ImportError:  # pragma: no cover - pillow is a hard dependency
    pass
