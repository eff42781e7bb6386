"""GRU4Rec (Hidasi et al., 2016): a GRU over the item history, trained with full-softmax cross entropy.

Input: history embeddings, dropout, ``num_layers`` GRU layers of width ``hidden`` (default ``model.dim``), a
linear map back to ``model.dim`` (RecBole's layout) when the widths differ. Right padding is harmless: the GRU
reads oldest first, so a real position never sees the padding after it, and rows past a sequence's length are
never read. No position table: the recurrence orders the items.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from modules import sequence as seq  # helpers by module attribute: FX sees their torch.fx.wrap
from modules.contract import SequenceEncoder
from modules.dropout import Dropout
from modules.registry import register
from modules.sequence import SequenceModelConfig, SequenceRecommender
from modules.validation import check


@dataclasses.dataclass(kw_only=True)
class GRU4RecEncoderConfig:
    """``model.encoder`` of GRU4Rec.

    Args:
        num_layers: stacked GRU layers (>= 1).
        hidden: GRU width; 0 = ``model.dim``.
        dropout: on the input embeddings and between GRU layers, in [0, 1).
    """

    num_layers: int = 1
    hidden: int = 0
    dropout: float = 0.3

    def validate(self, dim: int) -> None:
        """Raise `ValueError` naming the ``model.encoder.<key>`` to change."""
        check(self, at_least_1=("num_layers",), non_negative=("hidden",), fractions=("dropout",))


@dataclasses.dataclass(kw_only=True)
class GRU4RecConfig(SequenceModelConfig):
    """``model`` for ``model.name=gru4rec``."""

    name: str = "gru4rec"
    encoder: GRU4RecEncoderConfig = dataclasses.field(default_factory=GRU4RecEncoderConfig)


class GRU4RecEncoder(SequenceEncoder):
    """Causal GRU: jagged ``(T, D)`` history embeddings -> ``(B, Lmax, D)``."""

    causal = True

    def __init__(self, config: GRU4RecEncoderConfig, dim: int, max_len: int, device=None) -> None:
        super().__init__()
        self.max_len = max_len
        hidden = config.hidden or dim
        self.input_dropout = Dropout(config.dropout)
        between = config.dropout if config.num_layers > 1 else 0.0
        self.gru = nn.GRU(dim, hidden, config.num_layers, batch_first=True, dropout=between, device=device)
        self.project = nn.Linear(hidden, dim, device=device) if hidden != dim else nn.Identity()

    def forward(self, embedded: torch.Tensor, lengths: torch.Tensor, timestamps: torch.Tensor) -> torch.Tensor:
        if not torch.fx._symbolic_trace.is_fx_symbolic_tracing():
            seq.check_lengths(lengths, self.max_len)
        x = self.input_dropout(seq.padded_dense(embedded, lengths))
        return self.project(self.gru(x)[0])


@register("gru4rec", GRU4RecConfig)
def build(config: GRU4RecConfig, num_items: int, max_len: int, device=None) -> SequenceRecommender:
    """GRU4Rec on one item table."""
    return SequenceRecommender(config, GRU4RecEncoder(config.encoder, config.dim, max_len, device), num_items, device=device)
