"""The inference module: plain tensors in, top-k over the whole catalogue out, scriptable with TorchScript.

`TopKRecommender` wraps the parts of a trained SASRec that inference needs (the item table, the position table,
the transformer blocks and the final norm) behind a signature any server can call::

    scores, items = model(history, lengths, k, exclude_seen)
    # history: (T,) int64 item indices 1..N, the histories of B requests concatenated (oldest first)
    # lengths: (B,) int64, every length >= 1
    # k: int, exclude_seen: bool
    # scores: (B, k) float32, items: (B, k) int64 item indices 1..N, best first

Histories longer than ``max_len`` are cut to their most recent ``max_len`` items for encoding; ``exclude_seen``
masks every item of the full history. A request whose unseen items number fewer than ``k`` gets ``-inf``
scores in its tail (the caller drops them). The item table (fp32 or INT8 TorchRec quantized) is part of the
module, so a saved artefact is self-contained.

Scripting: ``torch.jit.script(torchrec.fx.symbolic_trace(module))``. The transformer blocks are traced by FX
(their forward unpacks tensors, which TorchScript cannot script directly); every data-dependent step (sizes,
truncation, masks) lives in a `torch.fx.wrap`-ed function that FX keeps as one call and TorchScript compiles.
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
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from serving.quantize import FX_LEAVES


def truncate_recent(values: torch.Tensor, lengths: torch.Tensor, max_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Keep the last ``max_len`` items of each jagged history: ``(T,), (B,) -> (T',), (B,)``."""
    kept = lengths.clamp(max=max_len)
    ends = torch.cumsum(lengths, 0)
    new_offsets = torch.cumsum(kept, 0) - kept
    total = int(kept.sum())
    within = torch.arange(total, dtype=torch.int64, device=values.device) - torch.repeat_interleave(
        new_offsets, kept, output_size=total
    )
    index = torch.repeat_interleave(ends - kept, kept, output_size=total) + within
    return values[index], kept


def item_kjt(values: torch.Tensor, lengths: torch.Tensor, num_items: int) -> KeyedJaggedTensor:
    """One lookup for everything: ``history`` = the histories, ``target`` = the whole catalogue ``1..N``
    (all in example 0), ``negatives`` empty. One call of the (quantized) collection serves encode and scoring."""
    catalogue = torch.arange(1, num_items + 1, dtype=torch.int64, device=values.device)
    target_lengths = torch.zeros_like(lengths)
    target_lengths[0] = num_items
    return KeyedJaggedTensor(
        keys=["history", "target", "negatives"],  # = ITEM_FEATURES (TorchScript needs a literal)
        values=torch.cat([values, catalogue]),
        lengths=torch.cat([lengths, target_lengths, torch.zeros_like(lengths)]),
    )


def padded_input(
    embedded: torch.Tensor, lengths: torch.Tensor, positions: torch.Tensor, max_len: int
) -> torch.Tensor:
    """Right-padded ``(B, Lmax, D)`` encoder input, exactly as `modules.sasrec.SASRecEncoder` builds it:
    embeddings * sqrt(D) + position counted from the end, zero at padding."""
    longest = int(lengths.max())
    offsets = torch.cat([torch.zeros(1, dtype=torch.int64, device=lengths.device), torch.cumsum(lengths, 0)])
    x = torch.ops.fbgemm.jagged_to_padded_dense(embedded, [offsets], [longest], 0.0)
    cols = torch.arange(longest, device=lengths.device)
    index = (max_len - lengths[:, None] + cols).clamp(max=max_len - 1)
    real = (cols < lengths[:, None]).unsqueeze(-1)
    return (x * math.sqrt(embedded.shape[1]) + positions[index]) * real


def last_position(hidden: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Row ``lengths[b] - 1`` of each example: ``(B, L, D) -> (B, D)``."""
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), lengths - 1]


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


for _fn in ("truncate_recent", "item_kjt", "padded_input", "last_position", "top_k"):
    torch.fx.wrap(_fn)


class Fp32Rows(nn.Module):
    """A fixed fp32 matrix; ``forward()`` returns it (the same interface as `serving.quantize.Int8Rows`)."""

    def __init__(self, matrix: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("values", matrix.detach().clone().float())

    def forward(self) -> torch.Tensor:
        return self.values


class TopKRecommender(nn.Module):
    """Sequence encoder + full-catalogue top-k, fed with plain tensors (see the module docstring).

    Args:
        item_ec: the item `EmbeddingCollection` (features history/target/negatives), fp32 or TorchRec-quantized.
        positions: ``(max_len, D)`` position table (kept as `Fp32Rows`; export may swap in
            `serving.quantize.Int8Rows`, which returns the same table stored INT8).
        blocks: the trained transformer blocks (optionally dynamic-INT8 / pruned).
        final_norm: the encoder's final LayerNorm.
        num_items: N.
    """

    def __init__(
        self,
        item_ec: nn.Module,
        positions: torch.Tensor,
        blocks: nn.ModuleList,
        final_norm: nn.Module,
        num_items: int,
    ) -> None:
        super().__init__()
        self.item_ec = item_ec
        self.blocks = blocks
        self.final_norm = final_norm
        self.num_items = num_items
        self.positions: nn.Module = Fp32Rows(positions)  # forward() -> (max_len, D)
        self.max_len = positions.shape[0]

    def forward(
        self, history: torch.Tensor, lengths: torch.Tensor, k: int, exclude_seen: bool
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(scores (B, k), items (B, k))`` for jagged ``history (T,)``, ``lengths (B,)``, every length >= 1."""
        query, catalogue = self.encode_and_catalogue(history, lengths)
        return top_k(query, catalogue, history, lengths, k, exclude_seen)

    def encode_and_catalogue(
        self, history: torch.Tensor, lengths: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Query ``(B, D)`` of each history and the catalogue embeddings ``(N, D)`` (rows of items 1..N)."""
        recent, recent_lengths = truncate_recent(history, lengths, self.max_len)
        looked_up = self.item_ec(item_kjt(recent, recent_lengths, self.num_items))
        x = padded_input(looked_up["history"].values(), recent_lengths, self.positions(), self.max_len)
        for block in self.blocks:
            x = block(x, True)
        return last_position(self.final_norm(x), recent_lengths), looked_up["target"].values()


def from_sasrec(model: nn.Module) -> TopKRecommender:
    """A `TopKRecommender` sharing the modules of an unsharded, tied-weights `modules.sasrec.SASRec` (eval mode)."""
    if getattr(model, "out_ec", None) is not None:
        raise ValueError("export supports tied item weights only (model.tie_weights=true)")
    encoder = model.encoder
    module = TopKRecommender(
        model.item_ec, encoder.positions.weight, encoder.blocks, encoder.final_norm, model.config.num_items
    )
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
