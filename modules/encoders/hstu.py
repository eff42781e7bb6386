"""HSTU (Zhai et al., ICML'24; meta-recsys/generative-recommenders): pointwise SiLU attention with learned
relative-position and time-difference biases, gated by U, causal.

Each block, on ``x (B, L, D)`` (right-padded; the causal mask keeps real queries off padded keys)::

    u, v, q, k = SiLU(Linear(LN(x)))                        # U, V: D wide; Q, K: heads * attn_dim wide
    A = SiLU(q k^T + pos_bias[i - j] + time_bias[bucket(t_i - t_j)]) / max_len * causal   # no softmax
    x = x + Linear(Dropout(LN(A v) * u))

``bucket(dt) = floor(log(max(|dt|, 1)) / time_bucket_log)`` clamped to ``time_buckets`` (the reference's
bucketisation); both biases are one scalar per (query, key), shared by the heads, own per block. Normalising by
the fixed ``max_len`` (the reference divides by its padded length, which it fixes to the maximum) keeps a user's
output independent of the batch. Without timestamps (an empty ``Batch.timestamps``, or ``needs_timestamps=false``)
every difference is 0: the time bias is one constant and the model degrades to position biases only.
Inputs: item embeddings ``* sqrt(D)`` + learned positions counted from the end, dropout; a final LayerNorm.
"""

from __future__ import annotations

import dataclasses
import math

import torch
from torch import nn
from torch.nn import functional as F

from modules import sequence as seq  # helpers by module attribute: FX sees their torch.fx.wrap
from modules.contract import SequenceEncoder
from modules.dropout import Dropout
from modules.registry import register
from modules.sequence import PositionTable, SequenceModelConfig, SequenceRecommender
from modules.validation import check, check_heads


@dataclasses.dataclass(kw_only=True)
class HSTUEncoderConfig:
    """``model.encoder`` of HSTU.

    Args:
        num_blocks: HSTU blocks. num_heads: heads (must divide ``model.dim``).
        attn_dim: query/key width per head; 0 = ``model.dim / num_heads``.
        dropout: on inputs and on each block's gated output, in [0, 1).
        time_buckets: time-difference buckets (>= 1). time_bucket_log: log-width of one bucket (> 0).
        needs_timestamps: read event times for the time bias (false: it sees zeros).
        position_init_std: std of the input position table's initialisation (> 0).
    """

    num_blocks: int = 2
    num_heads: int = 1
    attn_dim: int = 0
    dropout: float = 0.2
    time_buckets: int = 128
    time_bucket_log: float = 0.301
    needs_timestamps: bool = True
    position_init_std: float = 0.02

    def validate(self, dim: int) -> None:
        """Raise `ValueError` naming the ``model.encoder.<key>`` to change."""
        check_heads(dim, self.num_heads)
        check(self, at_least_1=("num_blocks", "time_buckets"), non_negative=("attn_dim",), fractions=("dropout",),
              positive=("time_bucket_log", "position_init_std"))


@dataclasses.dataclass(kw_only=True)
class HSTUConfig(SequenceModelConfig):
    """``model`` for ``model.name=hstu``."""

    name: str = "hstu"
    encoder: HSTUEncoderConfig = dataclasses.field(default_factory=HSTUEncoderConfig)


def time_buckets(timestamps: torch.Tensor, lengths: torch.Tensor, buckets: int, bucket_log: float) -> torch.Tensor:
    """``(B, L, L)`` int64 bucket of ``t_i - t_j`` per (query i, key j); all 0 when ``timestamps`` is empty."""
    longest = int(lengths.max())
    if timestamps.numel() == 0:
        return torch.zeros(lengths.shape[0], longest, longest, dtype=torch.int64, device=lengths.device)
    times = seq.padded_values(timestamps, lengths).to(torch.float64)
    gaps = (times[:, :, None] - times[:, None, :]).abs().clamp(min=1.0)
    return (torch.log(gaps) / bucket_log).to(torch.int64).clamp(0, buckets)


torch.fx.wrap("time_buckets")


class HSTUBlock(nn.Module):
    """One HSTU layer on ``(B, L, D)`` with its own position and time biases (module docstring)."""

    def __init__(self, dim: int, config: HSTUEncoderConfig, max_len: int, device=None) -> None:
        super().__init__()
        self.heads, self.attn_dim = config.num_heads, config.attn_dim or dim // config.num_heads
        self.max_len = max_len
        self.norm = nn.LayerNorm(dim, eps=1e-8, device=device)
        self.uvqk = nn.Linear(dim, 2 * dim + 2 * self.heads * self.attn_dim, device=device)
        self.attn_norm = nn.LayerNorm(dim, eps=1e-8, device=device)
        self.out = nn.Linear(dim, dim, device=device)
        self.dropout = Dropout(config.dropout)
        self.position_bias = nn.Parameter(torch.zeros(2 * max_len - 1, device=device))
        self.time_bias = nn.Parameter(torch.zeros(config.time_buckets + 1, device=device))

    def reset_parameters(self) -> None:
        """Zero biases (the linears and norms initialise themselves)."""
        nn.init.zeros_(self.position_bias)
        nn.init.zeros_(self.time_bias)

    def forward(self, x: torch.Tensor, relative: torch.Tensor, buckets: torch.Tensor, causal: torch.Tensor
                ) -> torch.Tensor:
        b, length, dim = x.shape
        qk = self.heads * self.attn_dim
        u, v, q, k = torch.split(F.silu(self.uvqk(self.norm(x))), [dim, dim, qk, qk], dim=-1)
        q, k = (t.view(b, length, self.heads, self.attn_dim).transpose(1, 2) for t in (q, k))
        bias = self.position_bias[relative] + self.time_bias[buckets]  # (L, L) + (B, L, L)
        scores = F.silu(q @ k.transpose(-1, -2) + bias[:, None]) * (causal / self.max_len)
        y = (scores @ v.view(b, length, self.heads, -1).transpose(1, 2)).transpose(1, 2).reshape(b, length, dim)
        return x + self.out(self.dropout(self.attn_norm(y) * u))


class HSTUEncoder(SequenceEncoder):
    """Causal HSTU stack: jagged ``(T, D)`` history embeddings (+ timestamps) -> ``(B, Lmax, D)``."""

    causal = True

    def __init__(self, config: HSTUEncoderConfig, dim: int, max_len: int, device=None) -> None:
        super().__init__()
        self.dim, self.max_len = dim, max_len
        self.buckets, self.bucket_log = config.time_buckets, config.time_bucket_log
        self.positions = PositionTable(max_len, dim, config.position_init_std, device=device)
        self.input_dropout = Dropout(config.dropout)
        self.blocks = nn.ModuleList(HSTUBlock(dim, config, max_len, device) for _ in range(config.num_blocks))
        self.final_norm = nn.LayerNorm(dim, eps=1e-8, device=device)

    def forward(self, embedded: torch.Tensor, lengths: torch.Tensor, timestamps: torch.Tensor) -> torch.Tensor:
        if not torch.fx._symbolic_trace.is_fx_symbolic_tracing():
            seq.check_lengths(lengths, self.max_len)
        positions = self.positions(seq.positions_from_end(lengths, self.max_len))
        x = seq.padded_dense(embedded, lengths) * math.sqrt(self.dim) + positions
        x = self.input_dropout(x * seq.real_mask(lengths))
        cols = torch.arange(x.shape[1], device=x.device)
        relative = cols[None, :] - cols[:, None] + (self.max_len - 1)  # key j - query i, shifted to >= 0
        causal = (cols[None, :] <= cols[:, None]).to(x.dtype)
        buckets = time_buckets(timestamps, lengths, self.buckets, self.bucket_log)
        for block in self.blocks:
            x = block(x, relative, buckets, causal)
        return self.final_norm(x)


@register("hstu", HSTUConfig)
def build(config: HSTUConfig, num_items: int, max_len: int, device=None) -> SequenceRecommender:
    """HSTU on one item table."""
    return SequenceRecommender(config, HSTUEncoder(config.encoder, config.dim, max_len, device), num_items, device=device)
