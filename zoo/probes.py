"""DNA-model evaluation of the BIOSCAN-5M paper (Table 4): embeddings, 1-NN genus probe, linear probe, fine-tuning.

Sits at the end of the flow (shards -> stream -> model -> **embeddings -> probes**), under
`jobs/probe_dna.py`. The protocol (../shared/reference/barcodebert.md):

- embedding = attention-masked mean of the last hidden layer, offset 0, batched, no augmentation;
- 1-NN probe (open world): keys `train`, queries `test_unseen`, cosine similarity (FAISS inner product on
  L2-normalised float32), predict the key's genus in one global label space; micro and class-balanced accuracy;
- linear probe (closed world): a linear classifier on frozen `train` embeddings, species accuracy on `test`
  (SGD lr 0.01, momentum 0.9, weight decay 1e-5 as published; features standardised with train statistics);
- fine-tuning: encoder + Linear on the mean-pooled last layer, species cross-entropy, random offsets on train.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass

import faiss
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from bioscan_stream.dna import KmerTokenizer
from bioscan_stream.stream import BioscanStream
from zoo.models.barcodebert import BarcodeBert
from zoo.tasks.mlm_task import tokenize_for_training

__all__ = [
    "FinetuneConfig",
    "SplitData",
    "balanced_accuracy",
    "embed_sequences",
    "finetune_species",
    "knn_probe",
    "linear_probe",
    "read_split",
    "results_table",
]

#: Label ranks the probes use (codes from the shard set's global vocabularies, -1 = missing).
PROBE_RANKS = ("genus", "species")


@dataclass(frozen=True)
class SplitData:
    """Barcodes of one split with their processids and integer labels per rank."""

    processids: list[str]
    sequences: list[str]
    labels: dict[str, np.ndarray]


def read_split(url: str, split: str, *, batch_size: int = 512) -> SplitData:
    """All barcodes and genus/species codes of `split` from an image shard set, in manifest order."""
    stream = BioscanStream(
        url,
        split=split,
        modalities=("dna",),
        targets=PROBE_RANKS,
        tokenizer=None,
        batch_size=batch_size,
        shuffle_buffer=0,
        shard_shuffle=False,
        rank=0,
        world_size=1,
    )
    keys: list[str] = []
    seqs: list[str] = []
    labels: dict[str, list[np.ndarray]] = {rank: [] for rank in PROBE_RANKS}
    for batch in stream:
        keys += batch["__key__"]
        seqs += batch["dna"]
        for rank in PROBE_RANKS:
            labels[rank].append(batch[rank].numpy())
    return SplitData(keys, seqs, {r: np.concatenate(v) if v else np.zeros(0, np.int64) for r, v in labels.items()})


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def embed_sequences(model: BarcodeBert, seqs: Sequence[str], *, batch_size: int = 256) -> np.ndarray:
    """Float32 embeddings `(n, hidden)` of barcodes (offset 0, eval mode, batched)."""
    tokenizer, device = model.tokenizer(), _device(model)
    was_training = model.training
    model.eval()
    chunks = []
    for start in range(0, len(seqs), batch_size):
        ids, mask = tokenizer.encode_batch(seqs[start : start + batch_size])
        emb = model.embed(torch.from_numpy(ids).to(device), torch.from_numpy(mask).to(device))
        chunks.append(emb.float().cpu().numpy())
    model.train(was_training)
    return np.concatenate(chunks) if chunks else np.zeros((0, model.config.hidden_size), np.float32)


def balanced_accuracy(truth: np.ndarray, predicted: np.ndarray) -> float:
    """Mean over true classes of the per-class accuracy (each class counts once, however rare)."""
    classes = np.unique(truth)
    return float(np.mean([(predicted[truth == c] == c).mean() for c in classes])) if classes.size else 0.0


def knn_probe(
    keys: np.ndarray, key_labels: np.ndarray, queries: np.ndarray, query_labels: np.ndarray
) -> dict[str, float]:
    """1-NN with cosine similarity (FAISS `IndexFlatIP` on L2-normalised vectors).

    Labels are integer codes of one global vocabulary (-1 = missing): keys and queries without a label are left out.
    """
    keep_k, keep_q = key_labels >= 0, query_labels >= 0
    index_keys = np.ascontiguousarray(keys[keep_k], dtype=np.float32)
    query_vecs = np.ascontiguousarray(queries[keep_q], dtype=np.float32)
    faiss.normalize_L2(index_keys)
    faiss.normalize_L2(query_vecs)
    index = faiss.IndexFlatIP(index_keys.shape[1])
    index.add(index_keys)
    _, nearest = index.search(query_vecs, 1)
    predicted, truth = key_labels[keep_k][nearest[:, 0]], query_labels[keep_q]
    return {
        "micro_acc": float((predicted == truth).mean()) if truth.size else 0.0,
        "balanced_acc": balanced_accuracy(truth, predicted),
        "n_keys": int(keep_k.sum()),
        "n_queries": int(keep_q.sum()),
    }


def linear_probe(
    train: np.ndarray,
    train_labels: np.ndarray,
    test: np.ndarray,
    test_labels: np.ndarray,
    *,
    epochs: int = 100,
    batch_size: int = 256,
    seed: int = 0,
) -> dict[str, float]:
    """Linear classifier on frozen embeddings (published SGD settings); accuracy on `test`, unlabelled rows left out."""
    train, train_labels = train[train_labels >= 0], train_labels[train_labels >= 0]
    test, test_labels = test[test_labels >= 0], test_labels[test_labels >= 0]
    generator = torch.Generator().manual_seed(seed)
    mean, std = train.mean(0), train.std(0) + 1e-6
    x_train = torch.from_numpy((train - mean) / std).float()
    y_train = torch.from_numpy(train_labels).long()
    classes = int(max(train_labels.max(), test_labels.max())) + 1
    head = nn.Linear(x_train.shape[1], classes)
    optimizer = torch.optim.SGD(head.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-5)
    for _ in range(epochs):
        for batch in torch.randperm(len(x_train), generator=generator).split(batch_size):
            optimizer.zero_grad()
            F.cross_entropy(head(x_train[batch]), y_train[batch]).backward()
            optimizer.step()
    with torch.no_grad():
        predicted = head(torch.from_numpy((test - mean) / std).float()).argmax(1).numpy()
    return {"acc": float((predicted == test_labels).mean()), "balanced_acc": balanced_accuracy(test_labels, predicted)}


@dataclass(frozen=True)
class FinetuneConfig:
    """Full fine-tuning for species (encoder + Linear on the masked mean of the last layer)."""

    epochs: int = 3
    batch_size: int = 32
    lr: float = 1e-4
    seed: int = 0


class _SpeciesClassifier(nn.Module):
    def __init__(self, encoder: BarcodeBert, classes: int) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = nn.Linear(encoder.config.hidden_size, classes)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder.embed(ids, mask))


def finetune_species(
    model: BarcodeBert,
    train: tuple[Sequence[str], np.ndarray],
    test: tuple[Sequence[str], np.ndarray],
    *,
    config: FinetuneConfig = FinetuneConfig(),
) -> dict[str, float]:
    """Fine-tune a copy of `model` (the original stays untouched); species accuracy on `test`."""
    (train_seqs, train_y), (test_seqs, test_y) = train, test
    classes = int(max(train_y.max(), test_y.max())) + 1
    classifier = _SpeciesClassifier(copy.deepcopy(model), classes).to(_device(model))
    optimizer = torch.optim.AdamW(classifier.parameters(), lr=config.lr)
    tokenizer, device = model.tokenizer(), _device(model)
    rng = np.random.default_rng(config.seed)
    classifier.train()
    for _ in range(config.epochs):
        order = rng.permutation(len(train_seqs))
        for start in range(0, len(order), config.batch_size):
            batch = order[start : start + config.batch_size]
            ids, mask = tokenize_for_training(tokenizer, [train_seqs[i] for i in batch], rng)
            logits = classifier(ids.to(device), mask.to(device))
            loss = F.cross_entropy(logits, torch.from_numpy(train_y[batch]).to(device))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    predicted = _predict(classifier, tokenizer, test_seqs, device=device, batch_size=config.batch_size * 4)
    return {"acc": float((predicted == test_y).mean()), "balanced_acc": balanced_accuracy(test_y, predicted)}


@torch.no_grad()
def _predict(
    classifier: nn.Module, tokenizer: KmerTokenizer, seqs: Sequence[str], *, device: torch.device, batch_size: int
) -> np.ndarray:
    classifier.eval()
    out = []
    for start in range(0, len(seqs), batch_size):
        ids, mask = tokenizer.encode_batch(seqs[start : start + batch_size])
        out.append(classifier(torch.from_numpy(ids).to(device), torch.from_numpy(mask).to(device)).argmax(1).cpu())
    return torch.cat(out).numpy() if out else np.zeros(0, np.int64)


def results_table(rows: dict[str, dict[str, float | None]]) -> str:
    """Markdown table in the style of the paper's Table 4 (accuracies in %; '-' where a probe was not run).

    Args:
        rows: model name -> {"finetune": acc, "linear": acc, "knn": micro acc, "knn_balanced": balanced acc}.
    """

    def pct(value: float | None) -> str:
        return "-" if value is None else f"{100 * value:.2f}"

    header = [
        "model",
        "fine-tuned species (test)",
        "linear probe species (test)",
        "1-NN genus (test_unseen)",
        "1-NN genus, balanced",
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, r in rows.items():
        cells = [pct(r.get(key)) for key in ("finetune", "linear", "knn", "knn_balanced")]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
