"""`bioscan-stream probe-dna`: embeddings, 1-NN genus probe, linear probe and fine-tuning of a DNA model.

    python -m jobs.probe_dna OUT/cropped_256 --model barcodebert_8_4_4 --pretrained runs/bb844/model --output probes/

Reads `train`, `test` and `test_unseen` of an image shard set (DNA and labels only), writes
`embeddings/<split>.npz` (processid, embedding, genus, species), `results.json` and a Table 4-style `results.md`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

import zoo
from zoo._factory import parse_overrides
from zoo.probes import (
    FinetuneConfig,
    SplitData,
    embed_sequences,
    finetune_species,
    knn_probe,
    linear_probe,
    read_split,
    results_table,
)

SPLITS = ("train", "test", "test_unseen")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="bioscan-stream probe-dna", description=__doc__.splitlines()[0])
    p.add_argument("shards", help="image shard set folder (OUT/<package>, local or s3://)")
    p.add_argument("--output", required=True, help="results folder")
    p.add_argument("--model", default="barcodebert_8_4_4", help="zoo model name (architecture)")
    p.add_argument("--pretrained", help="saved model folder or original .pth (default: random init)")
    p.add_argument("--name", help="row name in the results table (default: model name)")
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE", help="architecture override")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--linear-epochs", type=int, default=100)
    p.add_argument("--finetune-epochs", type=int, default=0, help="0 skips fine-tuning")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def _save_embeddings(path: Path, data: SplitData, embeddings: np.ndarray) -> None:
    tmp = path.with_name(path.stem + ".tmp.npz")
    arrays: dict[str, np.ndarray] = {"processid": np.array(data.processids), "embedding": embeddings, **data.labels}
    np.savez(tmp, **arrays)  # type: ignore[arg-type]  # numpy's stub types **kwds as `allow_pickle`
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out = Path(args.output)
    (out / "embeddings").mkdir(parents=True, exist_ok=True)
    model = zoo.create_model(args.model, pretrained=args.pretrained, **parse_overrides(args.set))
    data = {split: read_split(args.shards, split) for split in SPLITS}
    emb = {split: embed_sequences(model, d.sequences, batch_size=args.batch_size) for split, d in data.items()}
    for split in SPLITS:
        _save_embeddings(out / "embeddings" / f"{split}.npz", data[split], emb[split])
    train, test, unseen = data["train"], data["test"], data["test_unseen"]
    knn = knn_probe(emb["train"], train.labels["genus"], emb["test_unseen"], unseen.labels["genus"])
    linear = linear_probe(
        emb["train"],
        train.labels["species"],
        emb["test"],
        test.labels["species"],
        epochs=args.linear_epochs,
        seed=args.seed,
    )
    results = {"knn_genus_test_unseen": knn, "linear_species_test": linear}
    if args.finetune_epochs:
        cfg = FinetuneConfig(epochs=args.finetune_epochs, seed=args.seed)
        results["finetune_species_test"] = finetune_species(
            model, (train.sequences, train.labels["species"]), (test.sequences, test.labels["species"]), config=cfg
        )
    name = args.name or args.model
    row = {
        "finetune": results.get("finetune_species_test", {}).get("acc"),
        "linear": linear["acc"],
        "knn": knn["micro_acc"],
        "knn_balanced": knn["balanced_acc"],
    }
    (out / "results.json").write_text(json.dumps({"model": name, "pretrained": args.pretrained, **results}, indent=2))
    (out / "results.md").write_text(results_table({name: row}))
    print(results_table({name: row}))
    return 0


if __name__ == "__main__":
    from jobs.cli import run_module

    sys.exit(run_module(main))
