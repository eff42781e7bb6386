"""TransAct (Xia et al., Pinterest, KDD'23): a transformer over the user's recent actions, fused early with the
candidate, feeding the DCN-v2 ranking head.

Per history position (the ``max_len`` most recent actions, oldest first)::

    token = action_emb(action) ⊕ item_emb(item) ⊕ item_emb(candidate)      early fusion: concat, (A + 2D) wide
    transformer encoder (bidirectional, key-padding mask; `modules.transformer.TransformerBlock`)
    output = max-pool over the visible positions ⊕ the K most recent outputs flattened   ((K + 1) * (A + 2D))
    -> Linear -> (B, D), one more feature of the crossing head (`modules.ranking.CrossingHead`)

Random time-window mask (training only): each example hides the actions in a window ``[request - w, request)``
with ``w ~ U(0, time_window)`` seconds, never all of them (the oldest stays), so the model cannot lean only on
the last minutes of real-time activity. Histories are time-sorted, so hiding a window is shortening the
visible length. No position embedding (the paper found none needed: recency enters through the last-K outputs).
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from modules import sequence as seq
from modules.ranking import Ranker, RankerConfig
from modules.registry import register
from modules.transformer import TransformerBlock


@dataclasses.dataclass(kw_only=True)
class TransActConfig(RankerConfig):
    """``model`` for ``model.name=transact`` (plus every `RankerConfig` field).

    Args:
        action_dim: width A of the action-type embedding.
        num_blocks: transformer layers. num_heads: attention heads (must divide ``A + 2 * dim``).
        ffn_mult: feed-forward width as a multiple of the token width.
        dropout: in the transformer, in [0, 1).
        recent_k: the K most recent outputs kept besides the max-pool.
        time_window: the random mask's largest window in seconds; 0 turns the mask off.
        length_groups: the encoder runs on this many length-sorted groups of each batch, each padded only to
            its own longest visible history (same outputs; short histories stop paying for long ones).
    """

    name: str = "transact"
    action_dim: int = 32
    num_blocks: int = 2
    num_heads: int = 2
    ffn_mult: int = 2
    dropout: float = 0.1
    recent_k: int = 10
    time_window: int = 86400
    length_groups: int = 8

    def validate(self) -> None:
        super().validate()
        width = self.action_dim + 2 * self.dim
        for key in ("action_dim", "num_blocks", "num_heads", "ffn_mult", "recent_k", "length_groups"):
            if getattr(self, key) < 1:
                raise ValueError(f"model.{key} must be >= 1, got {getattr(self, key)}")
        if width % self.num_heads:
            raise ValueError(f"model.num_heads={self.num_heads} must divide model.action_dim + 2 * model.dim "
                             f"= {width}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"model.dropout must be in [0, 1), got {self.dropout}")
        if self.time_window < 0:
            raise ValueError(f"model.time_window must be >= 0 seconds, got {self.time_window}")


def early_fusion(items: torch.Tensor, actions: torch.Tensor, candidate: torch.Tensor) -> torch.Tensor:
    """``(B, L, A + 2D)`` tokens: action ⊕ item ⊕ the candidate broadcast to every position."""
    return torch.cat([actions, items, candidate[:, None, :].expand_as(items)], dim=-1)


def visible_lengths(lengths: torch.Tensor, timestamps: torch.Tensor, request_time: torch.Tensor, window: int,
                    generator: torch.Generator | None = None) -> torch.Tensor:
    """Per example, how many (oldest) actions stay visible after hiding ``[request - w, request)``,
    ``w ~ U(0, window)``; at least one wherever the history is not empty."""
    b = lengths.numel()
    w = torch.rand(b, generator=generator) * window
    cutoff = request_time.to(torch.float64) - w.to(torch.float64)
    owner = torch.repeat_interleave(torch.arange(b), lengths)
    before = (timestamps.to(torch.float64) < cutoff[owner]).to(torch.int64)
    kept = torch.zeros(b, dtype=torch.int64).index_add_(0, owner, before)
    return torch.maximum(kept, lengths.clamp(max=1))


def padded(values: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Jagged ``(T, E)`` right-padded with zeros to ``(B, max(1, longest), E)`` (empty histories allowed)."""
    offsets = torch.ops.fbgemm.asynchronous_complete_cumsum(lengths)
    width = max(1, int(lengths.max())) if lengths.numel() else 1
    return torch.ops.fbgemm.jagged_to_padded_dense(values, [offsets], [width], 0.0)


class TransActEncoder(nn.Module):
    """Early-fused tokens ``(B, L, W)`` + visible lengths ``(B,)`` -> ``(B, D)`` sequence feature (scriptable)."""

    def __init__(self, config: TransActConfig, device=None) -> None:
        super().__init__()
        width = config.action_dim + 2 * config.dim
        self.recent_k = config.recent_k
        self.blocks = nn.ModuleList(
            TransformerBlock(width, config.num_heads, ffn_dim=config.ffn_mult * width, dropout=config.dropout,
                             device=device)
            for _ in range(config.num_blocks)
        )
        self.norm = nn.LayerNorm(width, device=device)
        self.project = nn.Linear((config.recent_k + 1) * width, config.dim, device=device)

    def forward(self, tokens: torch.Tensor, visible: torch.Tensor) -> torch.Tensor:
        b, length = tokens.shape[0], tokens.shape[1]
        cols = torch.arange(length, device=tokens.device)
        padding = cols[None, :] >= visible[:, None]  # (B, L) True = hidden or padding
        x = tokens.masked_fill(padding[..., None], 0.0)
        for block in self.blocks:
            x = block(x, False, padding)
        x = self.norm(x).masked_fill(padding[..., None], 0.0)
        pooled = x.masked_fill(padding[..., None], float("-inf")).amax(dim=1)
        pooled = torch.where(visible[:, None] > 0, pooled, torch.zeros_like(pooled))
        recent = visible[:, None] - 1 - torch.arange(self.recent_k, device=tokens.device)[None, :]  # (B, K)
        taken = x.gather(1, recent.clamp(min=0)[..., None].expand(-1, -1, x.shape[-1]))
        taken = taken.masked_fill((recent < 0)[..., None], 0.0)
        return self.project(torch.cat([pooled, taken.reshape(b, -1)], dim=1))


def encode_grouped(encoder: nn.Module, tokens: torch.Tensor, visible: torch.Tensor, groups: int) -> torch.Tensor:
    """``encoder`` on ``groups`` length-sorted groups of the batch, each cut to its own longest visible history
    (the same outputs as one call: every example is encoded on its own)."""
    if groups <= 1 or tokens.shape[0] <= 1:
        return encoder(tokens, visible)
    parts, restore = seq.padded_groups(visible, groups)
    return torch.cat([encoder(tokens[rows, : max(1, width)], visible[rows]) for rows, width in parts])[restore]


class TransActSequence(nn.Module):
    """Looked-up history ``(T, D)`` (jagged), candidate ``(B, D)`` and the batch's action codes and times ->
    TransAct's ``(B, D)`` sequence feature; applies the random time-window mask in training."""

    def __init__(self, config: TransActConfig, device=None) -> None:
        super().__init__()
        self.config = config
        self.action_table = nn.Embedding(config.num_actions, config.action_dim, device=device)
        self.encoder = TransActEncoder(config, device)

    def forward(self, values: torch.Tensor, lengths: torch.Tensor, candidate: torch.Tensor, actions: torch.Tensor,
                timestamps: torch.Tensor, request_time: torch.Tensor) -> torch.Tensor:
        """History embeddings ``(T, D)`` (jagged by ``lengths (B,)``), candidates ``(B, D)``, action codes and
        times ``(T,)`` (may be empty), request times ``(B,)`` -> ``(B, D)``."""
        visible = lengths
        if self.training and self.config.time_window and request_time.numel() and timestamps.numel():
            visible = visible_lengths(lengths, timestamps, request_time, self.config.time_window)
        tokens = self.tokens(values, lengths, candidate, actions)
        return encode_grouped(self.encoder, tokens, visible, self.config.length_groups)

    def tokens(self, values: torch.Tensor, lengths: torch.Tensor, candidate: torch.Tensor,
               actions: torch.Tensor) -> torch.Tensor:
        """The early-fused ``(B, L, A + 2D)`` tokens (action codes default to 0 when the data has none)."""
        codes = seq_actions(actions, values)
        embedded = self.action_table(codes.clamp(0, self.config.num_actions - 1))
        return early_fusion(padded(values, lengths), padded(embedded, lengths), candidate)


def seq_actions(actions: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """The action codes ``(T,)``, or zeros when the batch carries none."""
    if actions.numel() == 0:
        return torch.zeros(values.shape[0], dtype=torch.int64, device=values.device)
    return actions


for _fn in ("padded", "seq_actions", "visible_lengths"):
    torch.fx.wrap(_fn)


@register("transact", TransActConfig, task="ranking")
def build(config: TransActConfig, num_items: int, max_len: int, device=None) -> Ranker:
    """TransAct over the ``max_len`` most recent actions (``data.max_len``; the paper uses 100) on the shared
    tables and crossing head (`modules.ranking.Ranker`).

    Example::

        model = modules.registry.build(TransActConfig(heads=["click", "like"]), num_items=6358, max_len=100)
        loss, logs = model(batch)        # an ``impressions`` batch: labels (B, 2)
    """
    return Ranker(config, num_items, TransActSequence(config, device), device)
