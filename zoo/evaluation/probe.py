"""The DNA probes of the BarcodeBERT paper run from an embedding store (embedding store -> **probes** -> report).

`zoo.probes` embeds barcodes itself; here the vectors come from a store written by `bioscan-stream embed`, so
any DNA encoder of the zoo (or any store of the same layout) is probed without re-embedding. The probes are
`zoo.probes.knn_probe` (1-NN genus, keys `train`, queries `test_unseen`) and `zoo.probes.linear_probe`
(species, `train` -> `test`), on the store's global label codes (one vocabulary per shard set).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from zoo.embedding.store import read_embeddings, read_store_index
from zoo.probes import knn_probe, linear_probe, results_table

__all__ = ["probe_store"]

PROBE_SPLITS = ("train", "test", "test_unseen")


def probe_store(store: str, *, linear_epochs: int = 100, seed: int = 0, name: str | None = None) -> dict[str, Any]:
    """1-NN genus and linear species probes of the vectors in `store`; a JSON-ready dict with a markdown row.

    Args:
        store: an embedding store with `train`, `test` and `test_unseen`.
        linear_epochs: epochs of the linear probe (0 skips it).
        seed: seed of the linear probe's batch order.
        name: row name in the table (default: the store's model).
    """
    index = read_store_index(store)
    columns = ["processid", "genus_code", "species_code"]
    data = {s: read_embeddings(store, splits=[s], columns=columns, dtype=np.float32) for s in PROBE_SPLITS}
    train, test, unseen = (data[s] for s in PROBE_SPLITS)
    knn = knn_probe(train.vectors, train.codes("genus"), unseen.vectors, unseen.codes("genus"))
    results: dict[str, Any] = {"store": store, "model": index.get("model"), "knn_genus_test_unseen": knn}
    if linear_epochs:
        results["linear_species_test"] = linear_probe(
            train.vectors, train.codes("species"), test.vectors, test.codes("species"), epochs=linear_epochs, seed=seed
        )
    row = {
        "finetune": None,
        "linear": results.get("linear_species_test", {}).get("acc"),
        "knn": knn["micro_acc"],
        "knn_balanced": knn["balanced_acc"],
    }
    results["markdown"] = results_table({name or str(index.get("model")): row})
    return results
