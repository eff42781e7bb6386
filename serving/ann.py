"""An approximate-nearest-neighbour index over a retrieval model's item matrix (FAISS), built at export.

The exported artefact keeps exact scoring in ``model.pt`` (a matmul over the whole catalogue is cheap up to ~1M
items on a CPU); ``items.faiss`` is for catalogues where it is not, or for other serving stacks. Its quality is
measured where it is built: recall@K of the ANN top-K against exact inner-product search, on query vectors from
the validation users (or random directions), recorded in ``metadata.json``.

Kinds: ``flat`` (exact inner product, the reference), ``hnsw`` (graph; ``M`` links per node, ``ef_search``),
``ivf`` (inverted lists; ``nlist`` clusters, ``nprobe`` probed).
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np

ANN_KINDS = ("flat", "hnsw", "ivf")
INDEX_FILE = "items.faiss"


@dataclasses.dataclass(kw_only=True)
class AnnConfig:
    """What index to build: ``kind`` (`ANN_KINDS`), ``hnsw_m``, ``ef_search``, ``nlist`` (0: ~4 sqrt(N)),
    ``nprobe``, and ``k`` for the recall check."""

    kind: str = "hnsw"
    hnsw_m: int = 32
    ef_search: int = 128
    nlist: int = 0
    nprobe: int = 16
    k: int = 100

    def validate(self) -> None:
        if self.kind not in ANN_KINDS:
            raise ValueError(f"--ann must be one of {', '.join(ANN_KINDS)}, got {self.kind!r}")
        if min(self.hnsw_m, self.ef_search, self.nprobe, self.k) < 1 or self.nlist < 0:
            raise ValueError("ANN settings must be positive (nlist >= 0)")


def build_index(items: np.ndarray, config: AnnConfig):
    """A FAISS inner-product index over ``items (N, D) float32`` (row i = item i + 1)."""
    import faiss

    items = np.ascontiguousarray(items, dtype=np.float32)
    dim = items.shape[1]
    if config.kind == "flat":
        index = faiss.IndexFlatIP(dim)
    elif config.kind == "hnsw":
        index = faiss.IndexHNSWFlat(dim, config.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efSearch = config.ef_search
    else:
        nlist = config.nlist or max(1, min(len(items) // 39, int(4 * np.sqrt(len(items)))))
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, nlist, faiss.METRIC_INNER_PRODUCT)
        index.train(items)
        index.nprobe = min(config.nprobe, nlist)
    index.add(items)
    return index


def recall_against_exact(index, items: np.ndarray, queries: np.ndarray, k: int) -> dict[str, float]:
    """Recall@k of ``index`` against exact inner-product search, and the mean query time of each (ms)."""
    import faiss

    k = min(k, len(items))
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    exact = faiss.IndexFlatIP(items.shape[1])
    exact.add(np.ascontiguousarray(items, dtype=np.float32))
    start = time.perf_counter()
    _, truth = exact.search(queries, k)
    exact_ms = 1000 * (time.perf_counter() - start) / len(queries)
    start = time.perf_counter()
    _, found = index.search(queries, k)
    ann_ms = 1000 * (time.perf_counter() - start) / len(queries)
    hits = sum(len(set(a) & set(b)) for a, b in zip(truth.tolist(), found.tolist()))
    return {f"recall@{k}": hits / (k * len(queries)), "exact_ms_per_query": exact_ms, "ann_ms_per_query": ann_ms}


def write_index(index, folder: Path) -> Path:
    """Save ``index`` as ``folder/items.faiss``."""
    import faiss

    path = folder / INDEX_FILE
    faiss.write_index(index, str(path))
    return path
