"""Index types by FAISS factory string, their memory and training needs, and the candidates `auto` measures.

Part of the flow embeddings -> **indices** -> evaluation. Only the factory strings below are accepted, so that
every type has a known merge rule (`merge_from` for Flat/IVF, `IndexShards` for HNSW), a known memory cost and a
known search parameter (`nprobe` / `efSearch`). All indices use inner product on L2-normalised vectors.

Sizes follow the FAISS guidance (see ../shared/reference/embeddings-and-indices.md): IVF with K near 4*sqrt(N)
trained on 30*K..256*K points; HNSW at d*4 + M*8 bytes per vector; PQ only with an exact re-rank.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import faiss

__all__ = ["IndexSpec", "auto_candidates", "default_nlist", "default_pq_m", "parse_factory"]

#: faiss-gpu is installed and sees a GPU: k-means training and exact search run there.
_FAISS_GPU_AVAILABLE = hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0
#: Points per centroid below which faiss k-means warns (and centroids get noisy).
_MIN_POINTS_PER_CENTROID = 39
#: Beyond this many rows a CPU HNSW build takes hours (autofaiss: 1M x 512 in 34 min on 16 cores).
_HNSW_MAX_ROWS = 2_000_000

_PATTERNS = (
    ("flat", re.compile(r"^Flat$")),
    ("ivf", re.compile(r"^IVF(?P<nlist>\d+),(?P<code>Flat|SQ8|PQ(?P<m>\d+))$")),
    ("hnsw", re.compile(r"^HNSW(?P<M>\d+)(?:,(?P<code>SQfp16|SQ8))?$")),
)


@dataclass(frozen=True)
class IndexSpec:
    """One parsed factory string: its family (`flat`, `ivf`, `hnsw`) and the sizes it names."""

    factory: str
    family: str
    code: str = "Flat"
    nlist: int = 0
    pq_m: int = 0
    hnsw_m: int = 0
    #: HNSW graph build beam (`efConstruction`); 0 keeps faiss's default (40). Not part of the factory string:
    #: `IndexConfig.ef_construction` sets it (default 200).
    ef_construction: int = 0

    @property
    def rerank(self) -> bool:
        """PQ codes lose too much for a recall target alone: the top candidates are re-scored exactly."""
        return self.code.startswith("PQ")

    @property
    def merge_rule(self) -> str:
        """`merge_from` (Flat, IVF: one file) or `shards` (HNSW graphs cannot merge: `IndexShards`)."""
        return "shards" if self.family == "hnsw" else "merge_from"

    @property
    def param(self) -> str | None:
        """The search parameter tuned to the recall target (None: exact)."""
        return {"ivf": "nprobe", "hnsw": "efSearch"}.get(self.family)

    def code_bytes(self, dim: int) -> int:
        """Bytes of one vector's code."""
        if self.code.startswith("PQ"):
            return self.pq_m
        return {"Flat": 4 * dim, "SQ8": dim, "SQfp16": 2 * dim}[self.code]

    def index_bytes(self, n: int, dim: int) -> int:
        """Estimated memory of the built index (what the memory budget is checked against)."""
        per_vector = self.code_bytes(dim)
        if self.family == "ivf":
            return n * (per_vector + 8) + self.nlist * dim * 4
        if self.family == "hnsw":
            return n * (per_vector + self.hnsw_m * 8 + 12)
        return n * per_vector

    def train_rows(self, available: int, limit: int | None = None) -> int:
        """Rows of the random training sample this type needs (0: no training)."""
        if self.family == "ivf":
            want = max(64 * self.nlist, 256 * _MIN_POINTS_PER_CENTROID if self.rerank else 0)
        elif self.code == "SQ8":
            want = 65_536
        else:
            return 0
        return min(available, want if limit is None else min(want, limit))


def parse_factory(factory: str, dim: int | None = None) -> IndexSpec:
    """`IVF1024,PQ96` -> IndexSpec; ValueError lists the accepted forms (and a PQ m that does not divide dim)."""
    for family, pattern in _PATTERNS:
        match = pattern.match(factory.strip())
        if not match:
            continue
        groups = match.groupdict()
        spec = IndexSpec(
            factory=factory.strip(),
            family=family,
            code=groups.get("code") or "Flat",
            nlist=int(groups.get("nlist") or 0),
            pq_m=int(groups.get("m") or 0),
            hnsw_m=int(groups.get("M") or 0),
        )
        if spec.rerank and dim is not None and dim % spec.pq_m:
            raise ValueError(f"{factory}: PQ m={spec.pq_m} must divide the dimension {dim}")
        if min(spec.nlist, spec.hnsw_m, spec.pq_m) < 0 or (family == "ivf" and spec.nlist < 1):
            raise ValueError(f"{factory}: sizes must be positive")
        return spec
    raise ValueError(
        f"unsupported factory {factory!r}: use auto, Flat, IVF{{K}},Flat, IVF{{K}},SQ8, IVF{{K}},PQ{{m}}, "
        "HNSW{M}, HNSW{M},SQfp16 or HNSW{M},SQ8"
    )


def default_nlist(n: int) -> int:
    """IVF lists: the power of two nearest 4*sqrt(n), at most n/39 (enough points per centroid to train)."""
    target = max(1.0, 4 * math.sqrt(max(n, 1)))
    nlist = 1 << round(math.log2(target))
    while nlist > 1 and nlist * _MIN_POINTS_PER_CENTROID > n:
        nlist //= 2
    return nlist


def default_pq_m(dim: int) -> int:
    """PQ sub-quantizers: the largest divisor of `dim` that is at most dim/8 (8 dims per byte of code)."""
    return max(m for m in range(1, max(1, dim // 8) + 1) if dim % m == 0)


def auto_candidates(n: int, dim: int, budget_bytes: int, *, flat_max_rows: int) -> list[IndexSpec]:
    """Types `auto` measures, in order of preference; the last (IVF-PQ + re-rank) is the fallback, always present.

    Small data gets exact `Flat`. Otherwise: IVF-Flat (fast to build, shardable), HNSW (faster search, slow
    CPU build, so only up to 2M rows), then the compressed variants, each kept only if it fits the budget.
    """
    nlist = default_nlist(n)
    fallback = parse_factory(f"IVF{nlist},PQ{default_pq_m(dim)}", dim)
    if n <= flat_max_rows:
        names = ["Flat"]
    else:
        names = [f"IVF{nlist},Flat", "HNSW32", f"IVF{nlist},SQ8", "HNSW32,SQ8"]
    specs = [parse_factory(name, dim) for name in names]
    specs = [s for s in specs if s.index_bytes(n, dim) <= budget_bytes]
    specs = [s for s in specs if s.family != "hnsw" or n <= _HNSW_MAX_ROWS]
    return [*specs, fallback]
