"""Every registered model meets the encoder contract: one batch of raw shard members -> `(n, embed_dim)`.

Parametrised over `zoo.list_models()`, so a newly registered model is checked without a new test. Models too
large for a quick CPU forward are built on the meta device and checked for their declared contract only.
"""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import torch
from PIL import Image

import zoo
from bioscan_stream.schema import DNA, IMAGE, METADATA
from zoo.encoder import is_encoder

#: Forward passes on CPU stay quick below this many parameters.
_FORWARD_LIMIT = 40_000_000


def _jpeg(seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (96, 128, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="JPEG")
    return out.getvalue()


#: Three raw values of each member an encoder can read, as they come out of a shard.
RAW = {
    IMAGE: [_jpeg(0), _jpeg(1), _jpeg(2)],
    DNA: [b"ACGT" * 165, b"AACCGGTTN" * 40, b"TTGCA" * 100],
    METADATA: [
        json.dumps({"order": "Diptera", "family": "Cecidomyiidae", "genus": None, "species": None}).encode(),
        json.dumps({"order": "Hymenoptera", "family": "Braconidae", "genus": "Apanteles", "species": None}).encode(),
        json.dumps({"order": "Lepidoptera", "family": None, "genus": None, "species": None}).encode(),
    ],
}


def _parameters(name: str) -> int:
    with torch.device("meta"):
        return sum(p.numel() for p in zoo.create_model(name).parameters())


#: CLIP models join modalities, so they are not encoders; each trained tower is one (`clip:RUN/image`, checked in
#: tests/zoo/models/test_clip.py).
ENCODERS = [name for name in zoo.list_models() if not name.startswith("clip_")]


@pytest.mark.parametrize("name", ENCODERS)
def test_every_registered_model_is_an_encoder_with_its_stated_dim(name: str) -> None:
    if _parameters(name) > _FORWARD_LIMIT:
        with torch.device("meta"):
            model = zoo.create_model(name)
        assert is_encoder(model) and model.embed_dim > 0 and model.input_member in RAW
        return
    torch.manual_seed(0)
    model = zoo.create_model(name).eval()
    assert is_encoder(model), f"{name} does not meet zoo.encoder.Encoder"
    assert model.modality in ("image", "dna", "text") and model.input_member in RAW
    done = model.preprocessor()(RAW[model.input_member])
    assert done.rejects == {} and done.kept.tolist() == [0, 1, 2]
    with torch.inference_mode():
        out = model.embed_batch({k: torch.from_numpy(v) for k, v in done.arrays.items()})
    assert out.shape == (3, model.embed_dim) and torch.isfinite(out).all()
    assert not torch.equal(out[0], out[1])  # different inputs, different embeddings
    fingerprint = model.fingerprint()
    assert len(fingerprint["weights_sha256"]) == 64 and fingerprint["architecture"]
    json.dumps(model.input_spec())  # the spec goes into the store's index.json
