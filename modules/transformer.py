"""Transformer block (pre-LN, or the original SASRec layout) with hand-written multi-head attention.

Two layouts (``layout``). ``pre_ln`` follows the corrected SASRec reference (pmixer/SASRec.pytorch,
``norm_first``); ``normed_residual`` is the original SASRec code's, where each residual starts from the
normalised input, so no un-normalised stream runs through the blocks::

    pre_ln:            x = x + Dropout(MHA(LN(x)));      x = x + FFN(LN(x))
    normed_residual:   q = LN(x); x = q + Dropout(MHA(q)); x = LN(x); x = x + FFN(x)
    FFN = Linear -> ReLU|GELU -> Dropout -> Linear -> Dropout

On MovieLens-1M (SASRec's recipe otherwise) ``normed_residual`` validated higher at every evaluation of the
first 20 epochs, by 0.0018-0.0038 NDCG@10 (docs/benchmarks.md); ``pre_ln`` stays the default, as the reference.

Attention is written here rather than taken from `torch.nn.MultiheadAttention` so that every projection is a
plain `nn.Linear`: `torch.ao.quantization.quantize_dynamic` then quantises all of them (the built-in module's
packed in-projection stays float), and the kernel is chosen by `modules.attention.attention` (backend by name,
its parameters in one `modules.attention_config.AttentionConfig`). `run_blocks` runs a stack of blocks, with
activation checkpointing when the config asks for it (memory at long lengths).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from modules.attention import BACKENDS, attention
from modules.attention_config import AttentionConfig
from modules.dropout import Dropout

ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU}
LAYOUTS = ("pre_ln", "normed_residual")


class MultiHeadAttention(nn.Module):
    """Self-attention over ``x: (B, L, D)`` with one fused ``qkv`` projection and an output projection.

    Args:
        dim: model width D (divisible by ``num_heads``).
        num_heads: attention heads H; each has width D / H.
        dropout: dropout on the attention weights (training only).
        attn_backend: one of `modules.attention.BACKENDS` (``"sdpa"`` default, ``"naive"`` reference).
        device: where the parameters live (``"meta"`` allowed).
        attn_config: the backend's parameters (window, chunk, feature map, dropout mode; default: defaults).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        dropout: float = 0.0,
        attn_backend: str = "sdpa",
        device: torch.device | str | None = None,
        attn_config: AttentionConfig | None = None,
    ) -> None:
        super().__init__()
        if dim % num_heads != 0:
            raise ValueError(f"dim={dim} must be divisible by num_heads={num_heads}")
        if attn_backend not in BACKENDS:
            raise ValueError(f"attn_backend must be one of {BACKENDS}, got {attn_backend!r}")
        self.attn_config = attn_config or AttentionConfig()
        self.attn_config.validate(attn_backend, dropout)
        self.num_heads = num_heads
        self.dropout = dropout
        self.attn_backend = attn_backend
        self.qkv = nn.Linear(dim, 3 * dim, device=device)
        self.out = nn.Linear(dim, dim, device=device)

    def forward(
        self,
        x: torch.Tensor,
        causal: bool = True,
        key_padding_mask: torch.Tensor | None = None,
        lengths: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``(B, L, D) -> (B, L, D)``; ``key_padding_mask: (B, L) bool``, True = padding; ``lengths: (B,)``
        real lengths of right-padded rows (lets the ``jagged`` backend skip the padding)."""
        b, length, dim = x.shape
        # (B, L, 3D) -> 3 x (B, H, L, D/H)
        q, k, v = self.qkv(x).view(b, length, 3, self.num_heads, dim // self.num_heads).permute(2, 0, 3, 1, 4)
        y = attention(
            q,
            k,
            v,
            causal=causal,
            key_padding_mask=key_padding_mask,
            dropout_p=self.dropout if self.training else 0.0,
            backend=self.attn_backend,
            config=self.attn_config,
            lengths=lengths,
        )
        return self.out(y.transpose(1, 2).reshape(b, length, dim))


class TransformerBlock(nn.Module):
    """One block: ``x + Dropout(MHA(LN(x)))``, then ``x + FFN(LN(x))`` (``layout="pre_ln"``; see the module doc).

    Args:
        dim: model width D.
        num_heads: attention heads.
        ffn_dim: hidden width of the feed-forward layer (default D, as SASRec).
        dropout: dropout on attention weights, after the attention projection and inside the FFN.
        activation: ``"relu"`` (SASRec) or ``"gelu"``.
        attn_backend: one of `modules.attention.BACKENDS`.
        norm_eps: LayerNorm epsilon (1e-8 as the SASRec reference).
        layout: ``"pre_ln"`` or ``"normed_residual"`` (residuals from the normalised input, original SASRec).
        device: where the parameters live (``"meta"`` allowed).
        attn_config: the attention backend's parameters (`modules.attention_config.AttentionConfig`).

    Example::

        block = TransformerBlock(64, num_heads=2, dropout=0.2)
        y = block(torch.randn(8, 50, 64), causal=True)   # (8, 50, 64)
    """

    def __init__(
        self,
        dim: int,
        num_heads: int = 1,
        ffn_dim: int | None = None,
        dropout: float = 0.0,
        activation: str = "relu",
        attn_backend: str = "sdpa",
        norm_eps: float = 1e-8,
        layout: str = "pre_ln",
        device: torch.device | str | None = None,
        attn_config: AttentionConfig | None = None,
    ) -> None:
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
        if layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
        self.layout = layout
        hidden = ffn_dim or dim
        self.attn_norm = nn.LayerNorm(dim, eps=norm_eps, device=device)
        self.attn = MultiHeadAttention(dim, num_heads, dropout, attn_backend, device=device, attn_config=attn_config)
        self.attn_dropout = Dropout(dropout)
        self.ffn_norm = nn.LayerNorm(dim, eps=norm_eps, device=device)
        self.ffn = nn.Sequential(
            nn.Linear(dim, hidden, device=device),
            ACTIVATIONS[activation](),
            Dropout(dropout),
            nn.Linear(hidden, dim, device=device),
            Dropout(dropout),
        )

    def forward(
        self,
        x: torch.Tensor,
        causal: bool = True,
        key_padding_mask: torch.Tensor | None = None,
        lengths: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``(B, L, D) -> (B, L, D)``; ``key_padding_mask: (B, L) bool``, True = padding; ``lengths: (B,)``
        real lengths of right-padded rows (optional, see `MultiHeadAttention.forward`)."""
        if self.layout == "normed_residual":
            x = self.attn_norm(x)
            x = x + self.attn_dropout(self.attn(x, causal, key_padding_mask, lengths))
            x = self.ffn_norm(x)
            return x + self.ffn(x)
        x = x + self.attn_dropout(self.attn(self.attn_norm(x), causal, key_padding_mask, lengths))
        return x + self.ffn(self.ffn_norm(x))


def run_blocks(
    blocks: Sequence[nn.Module],
    x: torch.Tensor,
    lengths: torch.Tensor | None = None,
    checkpointed: bool = False,
    causal: bool = True,
) -> torch.Tensor:
    """``x: (B, L, D)`` through every block in turn; ``lengths: (B,)`` of right-padded rows (optional).

    ``checkpointed``: while gradients are on, each block keeps only its input and recomputes its activations in
    backward (`torch.utils.checkpoint`, non-reentrant; the RNG state is replayed, so dropout draws the same
    masks): about one more forward per step for activation memory of one block instead of all of them.
    """
    for block in blocks:
        if checkpointed and torch.is_grad_enabled():
            x = checkpoint(block, x, causal, None, lengths, use_reentrant=False)
        else:
            x = block(x, causal, None, lengths)
    return x
