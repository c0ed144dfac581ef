"""The tiny DETR architecture the detector and crop-job tests build: small enough to run on CPU in a test."""

from __future__ import annotations

#: 8-channel ResNet backbone, d_model 16, one encoder and one decoder layer, 8 queries.
TINY_DETR = {
    "d_model": 16, "encoder_layers": 1, "decoder_layers": 1, "encoder_ffn_dim": 32, "decoder_ffn_dim": 32,
    "encoder_attention_heads": 2, "decoder_attention_heads": 2, "num_queries": 8, "use_timm_backbone": False,
    "backbone_config": {
        "model_type": "resnet", "embedding_size": 8, "hidden_sizes": [8, 8, 16, 16], "depths": [1, 1, 1, 1],
        "out_features": ["stage4"],
    },
}  # fmt: skip
