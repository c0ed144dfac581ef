"""stages and decoders: member selection, truncation against the manifest count, named decode errors, batching."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from bioscan_stream.schema import DNA, IMAGE, TARGETS
from bioscan_stream.stream.decoders import SampleDecoder
from bioscan_stream.stream.shardlists import Piece
from bioscan_stream.stream.stages import CorruptShardError, ReadStats, SampleDecodeError, batched, decode, read_pieces
from bioscan_stream.stream.transforms import ImageTransform, normalize_batch

ShardSet = tuple[Path, list[str]]


def _shard(root: Path, number: int = 0) -> str:
    return str(root / "train" / f"train-{number:06d}.tar")


def test_reader_returns_only_requested_members_and_piece_ranges(shard_set: ShardSet) -> None:
    root, keys = shard_set
    raw = list(
        read_pieces(members=frozenset({DNA}))([Piece(_shard(root), start=2, stop=7, step=2, offset=1, expected=9)])
    )
    assert [r["__key__"] for r in raw] == [keys[3], keys[5]]
    assert all(set(r) == {"__key__", "__url__", DNA} for r in raw)


def test_fewer_samples_than_the_manifest_is_a_truncated_shard(shard_set: ShardSet) -> None:
    root, _ = shard_set
    with pytest.raises(
        CorruptShardError, match=r"train-000001.tar.*truncated: 3 samples read, the manifest promises 4"
    ):
        list(read_pieces(members=frozenset({DNA}))([Piece(_shard(root, 1), expected=4)]))
    stats = ReadStats()
    pieces = [Piece(_shard(root, 1), expected=4), Piece(_shard(root, 5), expected=2)]
    survivors = list(read_pieces(members=frozenset({DNA}), on_corrupt="skip", stats=stats)(pieces))
    assert len(survivors) == 3 + 2 and stats.corrupt_shards == [_shard(root, 1)]


def test_missing_shard_and_missing_member_name_the_shard(tmp_path: Path, shard_set: ShardSet) -> None:
    root, _ = shard_set
    with pytest.raises(CorruptShardError, match="nope.tar"):
        list(read_pieces(members=frozenset({DNA}))([Piece(str(tmp_path / "nope.tar"))]))
    with pytest.raises(CorruptShardError, match=r"train-000000.tar: sample 'PID00000' lacks \['count.txt'\]"):
        list(read_pieces(members=frozenset({DNA, "count.txt"}))([Piece(_shard(root))]))


def test_decode_errors_name_the_sample_and_go_to_the_handler() -> None:
    decoder = SampleDecoder(("image",), ("species",), ImageTransform(size=8))
    good = {"__key__": "A", "__url__": "s.tar", IMAGE: _jpeg(), TARGETS: json.dumps({"species": 4}).encode()}
    bad = {**good, "__key__": "B", IMAGE: b"not a jpeg"}
    with pytest.raises(SampleDecodeError, match="sample 'B' of s.tar"):
        list(decode(decoder)([good, bad]))
    dropped: list[BaseException] = []
    kept = list(decode(decoder, handler=lambda e: dropped.append(e) is None)([bad, good]))
    assert [s["__key__"] for s in kept] == ["A"] and len(dropped) == 1


def test_batches_collate_once_and_keep_positions() -> None:
    decoder = SampleDecoder(("dna",), ("species",), tokenizer=None)
    raws = [
        {"__key__": f"K{i}", DNA: b"ACGT", TARGETS: json.dumps({"species": i}).encode(), "__position__": i + 1}
        for i in range(5)
    ]
    out = list(batched(2, decoder.collate)(decode(decoder)(raws)))
    assert [b["__position__"] for b in out] == [2, 4, 5] and out[0]["dna"] == ["ACGT", "ACGT"]
    assert torch.equal(out[1]["species"], torch.tensor([2, 3]))
    assert len(list(batched(2, decoder.collate, partial=False)(decode(decoder)(raws)))) == 2


def test_offsets_are_a_function_of_the_key() -> None:
    decoder = SampleDecoder(("dna",), (), dna_max_offset=3)
    first = decoder.offsets(["a", "b", "c", "d", "e", "f"], "0:1")
    assert first.tolist() == decoder.offsets(["a", "b", "c", "d", "e", "f"], "0:1").tolist()
    assert set(first.tolist()) <= {0, 1, 2, 3} and len(set(first.tolist())) > 1


def test_eval_transform_and_normalization() -> None:
    image = ImageTransform(train=False, size=8)(_jpeg(size=(40, 30)))
    assert image.shape == (3, 8, 8) and image.dtype == torch.uint8
    assert ImageTransform(train=True, size=8)(_jpeg()).shape == (3, 8, 8)
    norm = normalize_batch(torch.full((1, 3, 2, 2), 255, dtype=torch.uint8), mean=(0.5,) * 3, std=(0.25,) * 3)
    assert torch.allclose(norm, torch.full((1, 3, 2, 2), 2.0))


def _jpeg(size: tuple[int, int] = (32, 32)) -> bytes:
    import io

    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", size, (10, 200, 30)).save(out, format="JPEG")
    return out.getvalue()
