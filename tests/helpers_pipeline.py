"""The tiny pipeline config of the pipeline tests (tests/zoo/pipeline, tests/jobs/test_pipeline_job.py)."""

from __future__ import annotations

from pathlib import Path

#: Every stage at about the smallest size that has all four evaluation splits (an image store is left out: it is
#: the same embedding job as the DNA stores and its actor start alone took 70 s of a 240 s run under load).
TINY = """
[pipeline]
state = "{remote}/state"
num_cpus = 2

[synth]
out = "{root}/release"
samples = 600
seed = 1                         # 600 records of seed 1 hold all four evaluation splits (27/10/8/4)
packages = ["original_256"]
workers = 2

[shards]
release = "{root}/release"
out = "{remote}/shards"
package = "original_256"
splits = ["pretrain", "train", "key_unseen", "test", "test_unseen"]
shard_bytes = 1_000_000

[crop]
shards = "{remote}/shards/original_256"
out = "{remote}/crops"
splits = ["train", "key_unseen", "test", "test_unseen"]
review = 5

[pretrain]
shards = "{remote}/shards/dna"
out = "{root}/run"
overrides = {{ hidden_size = 32, intermediate_size = 64, num_layers = 1, num_heads = 2 }}
batch_size = 32
max_steps = 4
log_every = 2
threads = 1

[embed.dna]
shards = "{remote}/crops/cropped_256"
out = "{remote}/stores/dna"
model = "barcodebert_4_4_4"
pretrained = "{root}/run/model"

[embed.kmer]
shards = "{remote}/crops/cropped_256"
out = "{remote}/stores/kmer"
model = "kmer_freq_k4"

[index.kmer]
store = "kmer"
out = "{remote}/indices/kmer"
splits = ["train", "key_unseen"]
num_queries = 20

[retrieval]
stores = ["dna", "kmer"]
pairs = ["dna:dna", "kmer:kmer"]
indices = ["kmer"]
out = "{remote}/eval"

[clustering]
stores = ["kmer"]
splits = ["train", "key_unseen", "test", "test_unseen"]
n_neighbors = 10
n_components = 5
out = "{remote}/eval"

[report]
out = "{root}/report"
"""

STEPS = ["synth", "shards", "crop", "pretrain", "embed.dna", "embed.kmer", "index.kmer",
         "retrieval", "clustering", "report"]  # fmt: skip


def step_lines(stdout: str) -> list[str]:
    """The pipeline's one line per step (Ray's own log lines may be interleaved)."""
    return [line for line in stdout.splitlines() if line.split() and line.split()[0] in STEPS]


def write_tiny_config(root: Path, remote: str | None = None, **edits: str) -> Path:
    """The tiny config under `root` (release, pretraining run, report) and `remote` (the rest; default root),
    with `edits` (old -> new text) applied; written beside `root` as `<root name>.toml`."""
    text = TINY.format(root=root, remote=remote or root)
    for old, new in edits.items():
        assert old in text, old
        text = text.replace(old, new)
    path = root.parent / f"{root.name}.toml"
    path.write_text(text)
    return path
