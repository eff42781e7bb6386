"""BERT4Rec (Sun et al., 2019): a bidirectional transformer trained by cloze (masked-item prediction).

Training takes a ``causal`` batch and builds the cloze input inside the model: the full sequence (history + last
target), each position replaced by the ``[MASK]`` row (id ``N + 1``) with probability ``mask_prob`` (a sequence
that drew none gets its last item masked), drawn from torch's global RNG (the trainer seeds and checkpoints it).
The masked positions predict their items with a full softmax over the catalogue. A query appends ``[MASK]`` to
the history and reads its output; the exported query holds a copy of the mask row, so served scores are the
model's own. Positions count from the end (the mask is always at the last position); padding is a key-padding
mask, GELU feed-forward of width ``ffn_mult * model.dim``.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from modules import cloze  # cloze.cloze_inputs by module attribute: FX sees its torch.fx.wrap
from modules import sequence as seq  # helpers by module attribute: FX sees their torch.fx.wrap
from modules.attention import BACKENDS
from modules.cloze import ClozeLoss, MaskedLastQuery, masked_last
from modules.contract import RetrievalExport, SequenceEncoder
from modules.dropout import Dropout
from modules.embeddings import lookup
from modules.registry import register
from modules.sequence import PositionTable, SequenceModelConfig, SequenceRecommender
from modules.transformer import TransformerBlock
from modules.validation import check, check_heads


@dataclasses.dataclass(kw_only=True)
class BERT4RecEncoderConfig:
    """``model.encoder`` of BERT4Rec.

    Args:
        num_blocks: transformer blocks. num_heads: attention heads (must divide ``model.dim``).
        dropout: on inputs, attention weights and feed-forward layers, in [0, 1).
        mask_prob: probability that a training position is masked, in (0, 1).
        ffn_mult: feed-forward width as a multiple of ``model.dim`` (>= 1).
        attn_backend: `modules.attention.BACKENDS`. position_init_std: std of the position table's init (> 0).
    """

    num_blocks: int = 2
    num_heads: int = 2
    dropout: float = 0.2
    mask_prob: float = 0.2
    ffn_mult: int = 4
    attn_backend: str = "sdpa"
    position_init_std: float = 0.02

    def validate(self, dim: int) -> None:
        """Raise `ValueError` naming the ``model.encoder.<key>`` to change."""
        check_heads(dim, self.num_heads)
        check(self, at_least_1=("num_blocks", "ffn_mult"), fractions=("dropout",), positive=("mask_prob", "position_init_std"))
        if self.mask_prob >= 1.0:
            raise ValueError(f"model.encoder.mask_prob must be < 1, got {self.mask_prob}")
        if self.attn_backend not in BACKENDS:
            raise ValueError(f"model.encoder.attn_backend must be one of {BACKENDS}, got {self.attn_backend!r}")


@dataclasses.dataclass(kw_only=True)
class BERT4RecConfig(SequenceModelConfig):
    """``model`` for ``model.name=bert4rec`` (full softmax over a tied table only: the cloze's output)."""

    name: str = "bert4rec"
    encoder: BERT4RecEncoderConfig = dataclasses.field(default_factory=BERT4RecEncoderConfig)

    def validate(self) -> None:
        super().validate()
        if self.objective.loss != "softmax" or not self.tie_weights or self.objective.contrastive_weight:
            raise ValueError("model.name=bert4rec trains with model.objective.loss=softmax, model.tie_weights=true "
                             "and no contrastive term (model.objective.contrastive_weight=0)")


class BERT4RecEncoder(SequenceEncoder):
    """Bidirectional transformer: jagged ``(T, D)`` -> ``(B, Lmax, D)``; ``max_len`` counts the appended mask."""

    causal = False

    def __init__(self, config: BERT4RecEncoderConfig, dim: int, max_len: int, device=None) -> None:
        super().__init__()
        self.max_len = max_len
        self.positions = PositionTable(max_len, dim, config.position_init_std, device=device)
        self.input_norm = nn.LayerNorm(dim, eps=1e-8, device=device)
        self.input_dropout = Dropout(config.dropout)
        self.blocks = nn.ModuleList(
            TransformerBlock(dim, config.num_heads, ffn_dim=config.ffn_mult * dim, dropout=config.dropout,
                             activation="gelu", attn_backend=config.attn_backend, device=device)
            for _ in range(config.num_blocks)
        )
        self.final_norm = nn.LayerNorm(dim, eps=1e-8, device=device)

    def forward(self, embedded: torch.Tensor, lengths: torch.Tensor, timestamps: torch.Tensor) -> torch.Tensor:
        if not torch.fx._symbolic_trace.is_fx_symbolic_tracing():
            seq.check_lengths(lengths, self.max_len)
        real = seq.real_mask(lengths)
        x = seq.padded_dense(embedded, lengths) + self.positions(seq.positions_from_end(lengths, self.max_len))
        x = self.input_dropout(self.input_norm(x)) * real
        padding = ~real[..., 0]
        for block in self.blocks:
            x = block(x, False, padding)
        return self.final_norm(x)


class BERT4Rec(SequenceRecommender):
    """`SequenceRecommender` with a ``[MASK]`` row, cloze training and mask-appending queries."""

    def __init__(self, config: BERT4RecConfig, num_items: int, max_len: int, device=None) -> None:
        encoder = BERT4RecEncoder(config.encoder, config.dim, max_len + 1, device)
        super().__init__(config, encoder, num_items, extra_rows=1, device=device)
        self.mask_id, self.history_len = num_items + 1, max_len
        self.cloze_loss = ClozeLoss(config.objective.softmax_chunk, config.objective.temperature)

    def forward(self, batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        inputs = cloze.cloze_inputs(batch.sparse, self.mask_id, self.config.encoder.mask_prob, self.num_items)
        embeddings = lookup(self.item_ec, inputs[0])
        history = embeddings["history"]
        hidden = self.encoder(history.values(), history.lengths(), batch.timestamps)
        return self.cloze_loss(hidden, history, inputs[1], inputs[2], embeddings["negatives"].values())

    def encode(self, batch) -> torch.Tensor:
        """The output at a ``[MASK]`` appended to the looked-up history (the mask row read from the live table)."""
        history, mask_row = self._history(batch), self.item_embeddings(torch.tensor([self.mask_id]))[0]
        return masked_last(self.encoder, history.values(), history.lengths(), batch.timestamps, mask_row)

    def retrieval_export(self) -> RetrievalExport:
        table = self.item_ec.embeddings["item_table"].weight.detach()
        return RetrievalExport(table=table, query=MaskedLastQuery(self.encoder, table[self.mask_id]),
                               max_len=self.history_len)


@register("bert4rec", BERT4RecConfig)
def build(config: BERT4RecConfig, num_items: int, max_len: int, device=None) -> BERT4Rec:
    """BERT4Rec on one item table with a mask row."""
    return BERT4Rec(config, num_items, max_len, device)
