"""SASRec (Kang & McAuley, 2018): a causal transformer over the item history.

Input: history embeddings ``* sqrt(D)`` + learned positions counted from the end, dropout, ``num_blocks``
transformer blocks (`modules.transformer.TransformerBlock`), a final LayerNorm. Right padding only to the
batch's own longest history: with a causal mask a real position never sees a padded one, so no key-padding
mask is needed (SDPA's ``is_causal`` fast path) and no query row is fully masked. In training the blocks run on
``length_groups`` length-sorted groups of the batch, each padded to its own longest (same outputs).
"""

from __future__ import annotations

import dataclasses
import math

import torch
from torch import nn

from modules import sequence as seq  # helpers by module attribute: FX sees their torch.fx.wrap
from modules.attention_config import BACKENDS, AttentionConfig
from modules.contract import SequenceEncoder
from modules.dropout import Dropout
from modules.registry import register
from modules.sequence import PositionTable, SequenceModelConfig, SequenceRecommender
from modules.transformer import LAYOUTS, TransformerBlock, run_blocks


@dataclasses.dataclass(kw_only=True)
class SASRecEncoderConfig:
    """``model.encoder`` of SASRec.

    Args:
        num_blocks: transformer blocks. num_heads: attention heads (must divide ``model.dim``).
        dropout: on inputs, attention weights and feed-forward layers, in [0, 1).
        attn_backend: `modules.attention.BACKENDS`.
        block: block layout, ``pre_ln`` or ``normed_residual`` (the original SASRec code's).
        position_init_std: std of the position table's initialisation (> 0).
        length_groups: the blocks run on this many length-sorted groups of each batch (less padding); 1 = off.
        attention: parameters of ``attn_backend`` and block checkpointing (`modules.attention_config`).
    """

    num_blocks: int = 2
    num_heads: int = 1
    dropout: float = 0.2
    attn_backend: str = "sdpa"
    block: str = "pre_ln"
    position_init_std: float = 0.02
    length_groups: int = 4
    attention: AttentionConfig = dataclasses.field(default_factory=AttentionConfig)

    def validate(self, dim: int) -> None:
        """Raise `ValueError` naming the ``model.encoder.<key>`` to change."""
        for key in ("num_blocks", "num_heads", "length_groups"):
            if getattr(self, key) < 1:
                raise ValueError(f"model.encoder.{key} must be >= 1, got {getattr(self, key)}")
        if dim % self.num_heads:
            raise ValueError(f"model.dim={dim} must be divisible by model.encoder.num_heads={self.num_heads}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"model.encoder.dropout must be in [0, 1), got {self.dropout}")
        if self.attn_backend not in BACKENDS:
            raise ValueError(f"model.encoder.attn_backend must be one of {BACKENDS}, got {self.attn_backend!r}")
        if self.block not in LAYOUTS:
            raise ValueError(f"model.encoder.block must be one of {LAYOUTS}, got {self.block!r}")
        if self.position_init_std <= 0.0:
            raise ValueError(f"model.encoder.position_init_std must be > 0, got {self.position_init_std}")
        self.attention.validate(self.attn_backend, self.dropout, prefix="model.encoder.attention")


@dataclasses.dataclass(kw_only=True)
class SASRecConfig(SequenceModelConfig):
    """``model`` for ``model.name=sasrec``."""

    name: str = "sasrec"
    encoder: SASRecEncoderConfig = dataclasses.field(default_factory=SASRecEncoderConfig)


class SASRecEncoder(SequenceEncoder):
    """Causal transformer: jagged ``(T, D)`` history embeddings -> ``(B, Lmax, D)``."""

    causal = True

    def __init__(self, config: SASRecEncoderConfig, dim: int, max_len: int, device=None) -> None:
        super().__init__()
        self.dim, self.max_len, self.length_groups = dim, max_len, config.length_groups
        self.checkpoint_blocks = config.attention.checkpoint
        self.positions = PositionTable(max_len, dim, config.position_init_std, device=device)
        self.input_dropout = Dropout(config.dropout)
        self.blocks = nn.ModuleList(
            TransformerBlock(
                dim, config.num_heads, dropout=config.dropout, attn_backend=config.attn_backend,
                layout=config.block, device=device, attn_config=config.attention,
            )
            for _ in range(config.num_blocks)
        )
        self.final_norm = nn.LayerNorm(dim, eps=1e-8, device=device)

    def forward(self, embedded: torch.Tensor, lengths: torch.Tensor, timestamps: torch.Tensor) -> torch.Tensor:
        if not torch.fx._symbolic_trace.is_fx_symbolic_tracing():
            seq.check_lengths(lengths, self.max_len)
        return self.padded(seq.padded_dense(embedded, lengths), lengths)

    def padded(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """The same on right-padded embeddings ``(B, L, D)`` (zeros at padding; plain torch ops, ONNX-exportable)."""
        cols = torch.arange(x.shape[1], device=x.device)
        positions = self.positions((self.max_len - lengths[:, None] + cols).clamp(min=0, max=self.max_len - 1))
        real = (cols < lengths[:, None]).unsqueeze(-1)
        x = self.input_dropout((x * math.sqrt(self.dim) + positions) * real)
        if self.training:  # lengths let the jagged backend skip padding; eval (and export's trace) runs without
            return seq.run_grouped(self._train_blocks, x, lengths, self.length_groups, pass_lengths=True)
        return self._blocks(x)

    def _train_blocks(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return self.final_norm(run_blocks(self.blocks, x, lengths, self.checkpoint_blocks))

    def _blocks(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x, True)
        return self.final_norm(x)


@register("sasrec", SASRecConfig)
def build(config: SASRecConfig, num_items: int, max_len: int, device=None) -> SequenceRecommender:
    """SASRec on one item table."""
    def encoder() -> SASRecEncoder:
        return SASRecEncoder(config.encoder, config.dim, max_len, device)

    return SequenceRecommender(config, encoder, num_items, device=device)
