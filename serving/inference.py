"""The inference module: plain tensors in, top-k over the whole catalogue out, scriptable with TorchScript.

`Retriever` wraps what any retrieval model's `retrieval_export` hands over (`modules.contract.RetrievalExport`):
its item table, its OWN query module and, for untied weights, its scoring rows; the item matrix is computed once
at export. Every registered model is served by the same signature::

    scores, items = model(history, lengths, k, exclude_seen[, timestamps])
    # history: (T,) int64 item indices 1..N, the histories of B requests concatenated (oldest first)
    # lengths: (B,) int64, every length >= 1; timestamps: optional (T,) int64 event times (zeros if absent)
    # k: int, exclude_seen: bool
    # scores: (B, k) float32, items: (B, k) int64 item indices 1..N, best first

Histories longer than ``max_len`` are cut to their most recent ``max_len`` items for encoding; ``exclude_seen``
masks every item of the full history. A request whose unseen items number fewer than ``k`` gets ``-inf``
scores in its tail (the caller drops them). The rows (fp32, or INT8 with one scale per row: `serving.quantize`)
are part of the module, so a saved artefact is self-contained; with tied weights one copy of the table serves
both the history lookup and the scoring.

Scripting: ``torch.jit.script(torchrec.fx.symbolic_trace(module))``. The query module is traced by FX (encoders
keep their data-dependent steps in `torch.fx.wrap`-ed functions, which TorchScript compiles).
"""

# No `from __future__ import annotations`: FX and TorchScript read these annotations as real types.
import io
import math
import zipfile
from pathlib import Path
from typing import BinaryIO

import fbgemm_gpu  # noqa: F401  (registers fbgemm ops used by the tables and the jagged helpers)
import torch
from torch import nn

from serving.quantize import FX_LEAVES


def truncate_recent(
    values: torch.Tensor, lengths: torch.Tensor, max_len: int, timestamps: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Keep the last ``max_len`` items (and their timestamps) of each jagged history: ``(T,), (B,) -> (T',), (B,)``."""
    kept = lengths.clamp(max=max_len)
    ends = torch.cumsum(lengths, 0)
    new_offsets = torch.cumsum(kept, 0) - kept
    total = int(kept.sum())
    within = torch.arange(total, dtype=torch.int64, device=values.device) - torch.repeat_interleave(
        new_offsets, kept, output_size=total
    )
    index = torch.repeat_interleave(ends - kept, kept, output_size=total) + within
    return values[index], kept, timestamps[index]


def timestamps_or_zeros(timestamps: torch.Tensor | None, history: torch.Tensor) -> torch.Tensor:
    """The request's timestamps, or zeros shaped like ``history`` when it sent none."""
    if timestamps is None:
        return torch.zeros_like(history)
    return timestamps


def top_k(
    query: torch.Tensor,
    catalogue: torch.Tensor,
    history: torch.Tensor,
    lengths: torch.Tensor,
    k: int,
    exclude_seen: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-``k`` ``(scores, item indices 1..N)`` of ``query (B, D) @ catalogue (N, D)^T``, seen items masked."""
    scores = query @ catalogue.T
    if exclude_seen:
        rows = torch.repeat_interleave(torch.arange(lengths.shape[0], device=lengths.device), lengths)
        scores = scores.index_put((rows, history - 1), torch.full_like(rows, -1, dtype=scores.dtype) * math.inf)
    best, index = torch.topk(scores, min(k, scores.shape[1]), dim=1)
    return best, index + 1


for _fn in ("truncate_recent", "timestamps_or_zeros", "top_k"):
    torch.fx.wrap(_fn)


class Fp32Rows(nn.Module):
    """A fixed fp32 matrix; ``forward()`` returns it (the same interface as `serving.quantize.Int8Rows`)."""

    def __init__(self, matrix: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("values", matrix.detach().clone().float())

    def forward(self) -> torch.Tensor:
        return self.values


class Retriever(nn.Module):
    """A retrieval model's query module + full-catalogue top-k, fed with plain tensors (see the module docstring).

    Args:
        table: module whose ``forward()`` returns the ``(R, D)`` input item table (`Fp32Rows`, or
            `serving.quantize.Int8Rows`); history ids index it.
        query: ``(embedded (T, D), lengths (B,), timestamps (T,)) -> (B, D)`` (the model's own, eval mode).
        catalogue: rows of items ``1..N`` for scoring (a module like ``table``), or None: ``table()[1 : N + 1]``.
        num_items: N. max_len: the longest history the model encodes.
    """

    def __init__(
        self, table: nn.Module, query: nn.Module, catalogue: nn.Module | None, num_items: int, max_len: int
    ) -> None:
        super().__init__()
        self.table, self.query = table, query
        self.catalogue = catalogue if catalogue is not None else nn.Identity()
        self.tied = catalogue is None
        self.num_items, self.max_len = num_items, max_len

    def forward(
        self, history: torch.Tensor, lengths: torch.Tensor, k: int, exclude_seen: bool,
        timestamps: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(scores (B, k), items (B, k))`` for jagged ``history (T,)``, ``lengths (B,)``, every length >= 1."""
        query, catalogue = self.encode_and_catalogue(history, lengths, timestamps_or_zeros(timestamps, history))
        return top_k(query, catalogue, history, lengths, k, exclude_seen)

    def encode_and_catalogue(
        self, history: torch.Tensor, lengths: torch.Tensor, timestamps: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Query ``(B, D)`` of each history and the catalogue embeddings ``(N, D)`` (rows of items 1..N)."""
        recent, recent_lengths, recent_times = truncate_recent(history, lengths, self.max_len, timestamps)
        rows = self.table()
        query = self.query(rows[recent], recent_lengths, recent_times)
        catalogue = rows[1 : self.num_items + 1] if self.tied else self.catalogue()
        return query, catalogue


def two_stage_top_k(
    retrieved: torch.Tensor, candidates: torch.Tensor, query: torch.Tensor, catalogue: torch.Tensor, k: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Re-rank each row's ``candidates (B, C)`` (item indices, ``-inf``-scored ones dropped last) by the ranker's
    ``query (B, D) · catalogue[candidate]``; the top ``k`` as ``(scores, items)``."""
    rows = catalogue[candidates - 1]  # (B, C, D)
    scores = (rows * query[:, None, :]).sum(-1)
    scores = scores.masked_fill(torch.isinf(retrieved), -math.inf)
    best, index = torch.topk(scores, min(k, scores.shape[1]), dim=1)
    return best, torch.gather(candidates, 1, index)


torch.fx.wrap("two_stage_top_k")


class TwoStage(nn.Module):
    """Retrieve-then-rank with the same signature as `Retriever`: the first stage's top ``retrieve`` items (seen
    ones excluded when asked), re-scored by the second stage's own query module; ``k <= retrieve``.

    Args:
        retriever, ranker: `Retriever` modules (e.g. two towers, then a sequence model) over one catalogue.
        retrieve: candidates handed from the first stage to the second.
    """

    def __init__(self, retriever: Retriever, ranker: Retriever, retrieve: int) -> None:
        super().__init__()
        self.retriever, self.ranker, self.retrieve = retriever, ranker, retrieve

    def forward(
        self, history: torch.Tensor, lengths: torch.Tensor, k: int, exclude_seen: bool,
        timestamps: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        times = timestamps_or_zeros(timestamps, history)
        retrieved, candidates = self.retriever(history, lengths, self.retrieve, exclude_seen, times)
        query, catalogue = self.ranker.encode_and_catalogue(history, lengths, times)
        return two_stage_top_k(retrieved, candidates, query, catalogue, k)


def retriever_of(model: nn.Module) -> Retriever:
    """A `Retriever` of an unsharded retrieval model (`modules.contract.Recommender`), in eval mode; the query
    module is a copy, so compressing the retriever leaves the model as it was."""
    import copy

    parts = model.retrieval_export()
    catalogue = Fp32Rows(parts.catalogue) if parts.catalogue is not None else None
    module = Retriever(Fp32Rows(parts.table), copy.deepcopy(parts.query), catalogue, model.num_items, parts.max_len)
    return module.eval()


def script(module: nn.Module) -> torch.jit.ScriptModule:
    """TorchScript of ``module``: FX-trace (TorchRec's tracer keeps KJTs whole), then script."""
    import torchrec.fx

    module.eval()
    return torch.jit.script(torchrec.fx.symbolic_trace(module, leaf_modules=list(FX_LEAVES)))


def save_compact(module: torch.jit.ScriptModule, target: Path | BinaryIO) -> None:
    """Save TorchScript to a path or binary file without its debug tables, every record deflated.

    ``torch.jit.save`` adds a ``.debug_pkl`` (source ranges, only used to point error messages at Python lines)
    beside each code file: 58 KB of a 405 KB INT8 SASRec file (ML-1M), and the fp32 file carries the same tables
    (same code), which capped the size ratio the quantization buys. `torch.jit.load` reads such a file unchanged (the tables are optional and
    deflated records are read like the code records torch itself deflates); only TorchScript errors lose their
    Python source locations.
    """
    buffer = io.BytesIO()
    torch.jit.save(module, buffer)
    with zipfile.ZipFile(buffer) as source, zipfile.ZipFile(target, "w") as compact:
        for info in source.infolist():
            if info.filename.endswith(".debug_pkl"):
                continue
            record = zipfile.ZipInfo(info.filename, date_time=info.date_time)
            compact.writestr(record, source.read(info), compress_type=zipfile.ZIP_DEFLATED, compresslevel=9)
