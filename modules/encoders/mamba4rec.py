"""Mamba4Rec (Liu et al., 2024): selective state-space (Mamba) layers over the item history, in plain PyTorch.

Each layer: ``x = LN(x + Dropout(Mamba(x)))``, then ``x = LN(x + Dropout(FFN(x)))`` (GELU, ``4 * D`` wide). The
Mamba block (Gu & Dao, 2023): ``in_proj`` to a stream and a gate ``z`` (each ``expand * D``), a causal depthwise
conv + SiLU on the stream, input-dependent ``dt`` (softplus), ``B``, ``C``, and the recurrence per channel e and
state n::

    h_t = exp(dt_t A) * h_{t-1} + dt_t B_t x_t,   y_t = C_t h_t + D x_t,   out = out_proj(y * SiLU(z))

The recurrence runs in `modules.ssm.selective_scan` (chunks of ``scan_chunk`` steps). Causal: right padding never
reaches a real position. No position table: the recurrence orders the items.
"""

from __future__ import annotations

import dataclasses
import math

import torch
from torch import nn
from torch.nn import functional as F

from modules import sequence as seq  # helpers by module attribute: FX sees their torch.fx.wrap
from modules import ssm
from modules.contract import SequenceEncoder
from modules.dropout import Dropout
from modules.registry import register
from modules.sequence import SequenceModelConfig, SequenceRecommender
from modules.validation import check


@dataclasses.dataclass(kw_only=True)
class Mamba4RecEncoderConfig:
    """``model.encoder`` of Mamba4Rec.

    Args:
        num_layers: Mamba layers. state: SSM state size N per channel. expand: inner width / ``model.dim``.
        conv: causal conv kernel width. scan_chunk: steps per parallel chunk of the scan (1..8: fp32 range).
        dropout: on inputs and after the Mamba block and the FFN, in [0, 1).
        length_groups: in training the layers run on this many length-sorted groups of each batch, each cut to
            its own longest (same outputs, less padding: the scan's cost is per padded step); 1 = off.
    """

    num_layers: int = 1
    state: int = 16
    expand: int = 2
    conv: int = 4
    scan_chunk: int = 8
    dropout: float = 0.2
    length_groups: int = 4

    def validate(self, dim: int) -> None:
        """Raise `ValueError` naming the ``model.encoder.<key>`` to change."""
        check(self, at_least_1=("num_layers", "state", "expand", "conv", "scan_chunk", "length_groups"),
              fractions=("dropout",))
        if self.scan_chunk > 8:
            raise ValueError(f"model.encoder.scan_chunk must be <= 8 (modules.ssm.MAX_CHUNK: fp32 range), got {self.scan_chunk}")


@dataclasses.dataclass(kw_only=True)
class Mamba4RecConfig(SequenceModelConfig):
    """``model`` for ``model.name=mamba4rec``."""

    name: str = "mamba4rec"
    encoder: Mamba4RecEncoderConfig = dataclasses.field(default_factory=Mamba4RecEncoderConfig)


class MambaBlock(nn.Module):
    """The selective SSM block on ``(B, L, D)`` (module docstring); initialisation as the Mamba reference."""

    def __init__(self, dim: int, config: Mamba4RecEncoderConfig, device=None) -> None:
        super().__init__()
        inner, self.state, self.chunk = config.expand * dim, config.state, config.scan_chunk
        self.rank = math.ceil(dim / 16)
        self.in_proj = nn.Linear(dim, 2 * inner, bias=False, device=device)
        self.conv = nn.Conv1d(inner, inner, config.conv, groups=inner, padding=config.conv - 1, device=device)
        self.x_proj = nn.Linear(inner, self.rank + 2 * config.state, bias=False, device=device)
        self.dt_proj = nn.Linear(self.rank, inner, bias=False, device=device)
        self.dt_bias = nn.Parameter(torch.empty(inner, device=device))
        self.a_log = nn.Parameter(torch.empty(inner, config.state, device=device))
        self.skip = nn.Parameter(torch.empty(inner, device=device))
        self.out_proj = nn.Linear(inner, dim, bias=False, device=device)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """``A = -(1..N)`` per channel, ``D = 1``, ``dt`` bias so that softplus gives log-uniform [1e-3, 0.1]."""
        with torch.no_grad():
            self.a_log.copy_(torch.log(torch.arange(1, self.state + 1, dtype=torch.float32)).expand_as(self.a_log))
            nn.init.ones_(self.skip)
            dt = torch.exp(torch.rand_like(self.dt_bias) * (math.log(0.1) - math.log(1e-3)) + math.log(1e-3))
            self.dt_bias.copy_(dt + torch.log(-torch.expm1(-dt)))  # inverse softplus

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        stream, gate = self.in_proj(x).chunk(2, dim=-1)
        stream = F.silu(self.conv(stream.transpose(1, 2))[..., : x.shape[1]].transpose(1, 2))
        dt, b, c = torch.split(self.x_proj(stream), [self.rank, self.state, self.state], dim=-1)
        dt = F.softplus(self.dt_proj(dt) + self.dt_bias)
        y = ssm.selective_scan(stream, dt, -torch.exp(self.a_log), b, c, self.chunk) + stream * self.skip
        return self.out_proj(y * F.silu(gate))


class Mamba4RecEncoder(SequenceEncoder):
    """Causal Mamba stack: jagged ``(T, D)`` history embeddings -> ``(B, Lmax, D)``."""

    causal = True

    def __init__(self, config: Mamba4RecEncoderConfig, dim: int, max_len: int, device=None) -> None:
        super().__init__()
        self.max_len, self.length_groups = max_len, config.length_groups
        self.input_norm = nn.LayerNorm(dim, eps=1e-12, device=device)
        self.dropout = Dropout(config.dropout)
        self.mambas = nn.ModuleList(MambaBlock(dim, config, device) for _ in range(config.num_layers))
        self.ffns = nn.ModuleList(
            nn.Sequential(nn.Linear(dim, 4 * dim, device=device), nn.GELU(), Dropout(config.dropout),
                          nn.Linear(4 * dim, dim, device=device))
            for _ in range(config.num_layers)
        )
        self.norms = nn.ModuleList(nn.LayerNorm(dim, eps=1e-12, device=device) for _ in range(2 * config.num_layers))

    def forward(self, embedded: torch.Tensor, lengths: torch.Tensor, timestamps: torch.Tensor) -> torch.Tensor:
        if not torch.fx._symbolic_trace.is_fx_symbolic_tracing():
            seq.check_lengths(lengths, self.max_len)
        x = self.dropout(self.input_norm(seq.padded_dense(embedded, lengths)))
        if self.training and self.length_groups > 1:
            return seq.run_grouped(self._layers, x, lengths, self.length_groups)
        return self._layers(x)

    def _layers(self, x: torch.Tensor) -> torch.Tensor:
        for i, (mamba, ffn) in enumerate(zip(self.mambas, self.ffns)):
            x = self.norms[2 * i](x + self.dropout(mamba(x)))
            x = self.norms[2 * i + 1](x + self.dropout(ffn(x)))
        return x


@register("mamba4rec", Mamba4RecConfig)
def build(config: Mamba4RecConfig, num_items: int, max_len: int, device=None) -> SequenceRecommender:
    """Mamba4Rec on one item table."""
    encoder = Mamba4RecEncoder(config.encoder, config.dim, max_len, device)
    return SequenceRecommender(config, encoder, num_items, device=device)
