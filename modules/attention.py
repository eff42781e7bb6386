"""Scaled dot-product attention behind one signature, with two backends.

* ``"sdpa"`` -- `torch.nn.functional.scaled_dot_product_attention`, which dispatches to flash or memory-efficient
  kernels where the hardware has them. Without a padding mask it uses ``is_causal`` (the fast path);
  with one it passes a combined boolean mask.
* ``"naive"`` -- ``softmax(Q K^T / sqrt(d) + mask) V`` written out: the reference for tests and benchmarks,
  and what ``"sdpa"`` runs on CPU when training with attention dropout (SDPA would fall back to the same math,
  with slower dropout masks).

Fully masked query rows (e.g. left padding with a causal mask: a padded query sees only padded keys) would make
softmax return NaN, and the NaN would reach gradients even if the row is discarded later. Both backends let such
rows attend to every key and then zero their output, so they are finite, equal across backends, and pass no
gradient.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from modules.dropout import dropout

BACKENDS = ("sdpa", "naive")


def attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    causal: bool = False,
    key_padding_mask: torch.Tensor | None = None,
    dropout_p: float = 0.0,
    backend: str = "sdpa",
) -> torch.Tensor:
    """Attention output ``(B, H, Lq, Dh)`` for ``q: (B, H, Lq, Dh)``, ``k, v: (B, H, Lk, Dh)``.

    ``causal``: query ``i`` sees keys ``j <= i``. ``key_padding_mask: (B, Lk) bool``, True = padding (ignored),
    as in `torch.nn.MultiheadAttention`. ``dropout_p`` is applied to the attention weights; pass 0 in eval.
    """
    if backend not in BACKENDS:
        raise ValueError(f"attention backend must be one of {BACKENDS}, got {backend!r}")
    if dropout_p > 0.0 and q.device.type == "cpu":
        # SDPA's CPU kernels have no dropout: it falls back to its math path (the naive one) and draws one
        # Bernoulli number per weight; the same path with `modules.dropout` masks is ~2x faster
        backend = "naive"
    if backend == "sdpa" and key_padding_mask is None:
        return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, is_causal=causal)
    allowed, empty_rows = _allowed(q.shape[-2], k.shape[-2], causal, key_padding_mask, q.device)
    if backend == "sdpa":
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, dropout_p=dropout_p)
    else:
        out = _naive(q, k, v, allowed, dropout_p)
    if empty_rows is not None:
        out = out.masked_fill(empty_rows, 0.0)
    return out


def _allowed(
    lq: int, lk: int, causal: bool, key_padding_mask: torch.Tensor | None, device: torch.device
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Boolean mask ``(B|1, 1, Lq, Lk)`` (True = attend) and the fully masked rows ``(B, 1, Lq, 1)`` (or None)."""
    allowed = None
    if causal:
        allowed = torch.ones(lq, lk, dtype=torch.bool, device=device).tril()[None, None]
    if key_padding_mask is None:
        return allowed, None
    keys = ~key_padding_mask.to(torch.bool)[:, None, None, :]
    allowed = keys if allowed is None else allowed & keys
    empty_rows = ~allowed.any(dim=-1, keepdim=True)
    # An empty row attends to everything instead (finite softmax); its output is zeroed by the caller.
    return allowed | empty_rows, empty_rows


def _naive(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, allowed: torch.Tensor | None, dropout_p: float
) -> torch.Tensor:
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    if allowed is not None:
        scores = scores.masked_fill(~allowed, float("-inf"))
    weights = torch.softmax(scores, dim=-1)
    if dropout_p > 0.0:
        weights = dropout(weights, dropout_p)
    return weights @ v
