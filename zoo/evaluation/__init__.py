"""The paper's evaluations over embedding stores (embeddings -> indices -> **evaluation**).

results = evaluate_retrieval(RetrievalConfig(stores=(("dna", "stores/dna"), ("image", "stores/img"))))
results = evaluate_clustering(ClusteringConfig(stores=(("dna", "stores/dna"),), seeds=(0, 1, 2)))
write_retrieval_report(results, "reports/")   # retrieval.json, retrieval.md (Table 5 layout), retrieval.png
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from bioscan_stream._lazy import lazy_exports

if TYPE_CHECKING:
    from zoo.evaluation.clustering import ClusteringConfig as ClusteringConfig
    from zoo.evaluation.clustering import evaluate_clustering as evaluate_clustering
    from zoo.evaluation.probe import probe_store as probe_store
    from zoo.evaluation.report import write_clustering_report as write_clustering_report
    from zoo.evaluation.report import write_retrieval_report as write_retrieval_report
    from zoo.evaluation.retrieval import RetrievalConfig as RetrievalConfig
    from zoo.evaluation.retrieval import evaluate_retrieval as evaluate_retrieval
    from zoo.evaluation.search import exact_topk as exact_topk

__all__ = [
    "ClusteringConfig",
    "RetrievalConfig",
    "evaluate_clustering",
    "evaluate_retrieval",
    "exact_topk",
    "probe_store",
    "write_clustering_report",
    "write_retrieval_report",
]

__getattr__ = lazy_exports(
    __name__,
    {
        "ClusteringConfig": "zoo.evaluation.clustering",
        "evaluate_clustering": "zoo.evaluation.clustering",
        "probe_store": "zoo.evaluation.probe",
        "write_clustering_report": "zoo.evaluation.report",
        "write_retrieval_report": "zoo.evaluation.report",
        "RetrievalConfig": "zoo.evaluation.retrieval",
        "evaluate_retrieval": "zoo.evaluation.retrieval",
        "exact_topk": "zoo.evaluation.search",
    },
)
