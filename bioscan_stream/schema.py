"""Sample keys shared by the shard writer (write side) and the stream (read side).

A shard is a WebDataset tar: members `<__key__>.<ext>` grouped by key. The key is the BIOSCAN
`processid` (image shards) or the barcode's content hash (DNA-only shards). These names are the whole
contract between `bioscan_stream.shards` and `bioscan_stream.stream`; decoders accept nothing else.
"""

from __future__ import annotations

#: Image bytes exactly as in the source release (never re-encoded).
IMAGE = "jpg"
#: The COI barcode as UTF-8 text, as in the metadata (not stripped).
DNA = "dna.txt"
#: All 23 metadata fields of the record as a JSON object (missing = null).
METADATA = "json"
#: Integer targets per rank as a JSON object {rank: code}; codes from the shard set's global vocabularies
#: (-1 = missing).
TARGETS = "targets.json"
#: DNA-only shards: number of records that carry this (trailing-N-stripped) barcode.
COUNT = "count.txt"

#: Members of an image shard sample and of a DNA-only shard sample.
IMAGE_SHARD_MEMBERS: tuple[str, ...] = (IMAGE, DNA, METADATA, TARGETS)
DNA_SHARD_MEMBERS: tuple[str, ...] = (DNA, COUNT)

#: Name of the self-describing manifest in every shard-set folder (LitData-style).
INDEX_FILE = "index.json"
#: Rejects report beside the manifest: one JSON object per line {processid, split, reason, detail}.
REJECTS_FILE = "rejects.jsonl"
#: Folder (under OUT) of the DNA-only pretraining shard set.
DNA_PACKAGE = "dna"
DNA_SPLIT = "pretrain_dna"
SCHEMA_VERSION = 1


def shard_name(split: str, number: int) -> str:
    """Numbered shard file name within a split folder, e.g. `train-000003.tar`."""
    return f"{split}-{number:06d}.tar"
