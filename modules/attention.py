"""Scaled dot-product attention behind one signature; the backend is chosen by name (`BACKENDS`), its
parameters come from one `AttentionConfig` (see `modules.attention_config` for what each backend reads).

* ``"sdpa"`` -- `torch.nn.functional.scaled_dot_product_attention`, which dispatches to flash or memory-efficient
  kernels where the hardware has them. Without a padding mask it uses ``is_causal`` (the fast path);
  with one it passes a combined boolean mask.
* ``"naive"`` -- ``softmax(Q K^T / sqrt(d) + mask) V`` written out: the reference for tests and benchmarks,
  and what ``"sdpa"`` runs on CPU when training with attention dropout on the weights (SDPA would fall back to
  the same math, with slower dropout masks).
* ``"jagged"`` -- exact causal attention over right-padded rows whose cost follows each row's real length: rows
  are sorted by length and every block of ``chunk`` queries runs only on the rows that reach it, against the
  keys up to its end (the causal triangle of the real tokens, not the padded square). Equal to ``"sdpa"`` on
  real positions; padded positions are finite and not meaningful (zero beyond a row's last block).
* ``"local"`` -- sliding window: query ``i`` sees keys ``i - window < j <= i`` (``|i - j| < window`` without
  ``causal``) plus the first ``global_tokens`` positions. Blocks of ``chunk`` queries attend to the key blocks
  that cover their window: memory ``O(B * L * (window + chunk))``, never ``(B, L, L)``. With ``window >= L`` it
  is exact attention.
* ``"linear"`` -- causal linear attention (Katharopoulos et al., 2020): ``phi(q_i) . S_i / phi(q_i) . z_i`` with
  ``S_i = sum_{j<=i} phi(k_j) v_j^T``, ``z_i = sum_{j<=i} phi(k_j)``, computed per block of ``chunk`` positions
  (the block's own causal part exactly, earlier blocks through prefix sums of their states): ``O(L * Dh^2)``.
  ``local_mix`` > 0 mixes in the ``local`` backend's output.

Dropout: ``config.dropout="weights"`` drops attention weights (masks from `modules.dropout`; the exact backends
then take their math path); ``"output"`` drops the attention output, so every kernel keeps its fast path.

Fully masked query rows (e.g. left padding with a causal mask: a padded query sees only padded keys) would make
softmax return NaN, and the NaN would reach gradients even if the row is discarded later. Every softmax backend
lets such rows attend to every key and then zeroes their output, so they are finite and pass no gradient; linear
attention gives them 0 (an empty sum).

Tracing: the blocking steps of ``local`` and ``linear`` are `torch.fx.wrap`-ed, TorchScript-compilable
functions, so blocks with those backends still trace with FX and script (serving/inference.py); ``jagged`` is
used only when lengths are passed (training), otherwise it is ``"sdpa"``.
"""

# No `from __future__ import annotations`: TorchScript compiles the fx-wrapped helpers from their annotations.
import math

import torch
import torch.nn.functional as F

from modules.attention_config import BACKENDS, AttentionConfig
from modules.dropout import dropout

__all__ = ["BACKENDS", "AttentionConfig", "attention"]
DEFAULT_CONFIG = AttentionConfig()


def attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    causal: bool = False,
    key_padding_mask: torch.Tensor | None = None,
    dropout_p: float = 0.0,
    backend: str = "sdpa",
    config: AttentionConfig | None = None,
    lengths: torch.Tensor | None = None,
) -> torch.Tensor:
    """Attention output ``(B, H, Lq, Dh)`` for ``q: (B, H, Lq, Dh)``, ``k, v: (B, H, Lk, Dh)``.

    ``causal``: query ``i`` sees keys ``j <= i``. ``key_padding_mask: (B, Lk) bool``, True = padding (ignored),
    as in `torch.nn.MultiheadAttention`. ``dropout_p``: attention dropout (pass 0 in eval), applied as
    ``config.dropout`` says. ``lengths: (B,) int64``: real lengths of right-padded rows (self-attention); the
    ``jagged`` backend skips what lies beyond them, the others ignore it.
    """
    if backend not in BACKENDS:
        raise ValueError(f"attention backend must be one of {BACKENDS}, got {backend!r}")
    config = DEFAULT_CONFIG if config is None else config
    weight_p = dropout_p if config.dropout == "weights" else 0.0
    if backend == "linear":
        out = linear_attention(q, k, v, causal, key_padding_mask, config.feature_map, config.chunk)
        if config.local_mix > 0.0:
            local = _local(q, k, v, causal, key_padding_mask, config, 0.0)
            out = config.local_mix * local + (1.0 - config.local_mix) * out
    elif backend == "local":
        out = _local(q, k, v, causal, key_padding_mask, config, weight_p)
    elif backend == "jagged" and (lengths is not None or key_padding_mask is not None):
        out = _jagged(q, k, v, causal, key_padding_mask, lengths, weight_p, config.chunk)
    else:
        out = _exact(q, k, v, causal, key_padding_mask, weight_p, "naive" if backend == "naive" else "sdpa")
    if config.dropout == "output" and dropout_p > 0.0:
        out = dropout(out, dropout_p)
    return out


def _exact(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    causal: bool,
    key_padding_mask: torch.Tensor | None,
    dropout_p: float,
    backend: str,
) -> torch.Tensor:
    """The padded ``sdpa`` / ``naive`` backends (the behaviour before the other backends existed)."""
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


def _masked(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, allowed: torch.Tensor, dropout_p: float
) -> torch.Tensor:
    """Softmax attention under a boolean mask with no empty rows: SDPA, or the math path for weight dropout."""
    if dropout_p > 0.0:
        return _naive(q, k, v, allowed, dropout_p)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=allowed)


# ---- jagged: blocks of queries over the rows that reach them -------------------------------------------------


def _jagged(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    causal: bool,
    key_padding_mask: torch.Tensor | None,
    lengths: torch.Tensor | None,
    dropout_p: float,
    chunk: int,
) -> torch.Tensor:
    """Exact attention of right-padded rows of real ``lengths`` (or the right padding ``key_padding_mask``)."""
    if lengths is None:
        lengths = _right_padding_lengths(key_padding_mask)
    batch, heads, length, width = q.shape
    order = torch.argsort(lengths, descending=True, stable=True)
    sorted_lengths = lengths[order]
    q, k, v = q[order], k[order], v[order]
    starts = torch.arange(0, length, chunk, device=q.device)
    reaching: list[int] = (sorted_lengths[None, :] > starts[:, None]).sum(1).tolist()  # one sync per call
    longest = int(sorted_lengths[0]) if batch else 0
    pieces = []
    for start, rows in zip(range(0, length, chunk), reaching):
        end = min(start + chunk, length)
        if rows == 0:
            pieces.append(q.new_zeros(batch, heads, end - start, width))
            continue
        keys = end if causal else longest
        positions = torch.arange(keys, device=q.device)
        if causal:
            allowed = positions[None, :] <= torch.arange(start, end, device=q.device)[:, None]
            allowed = allowed[None, None]
        else:
            allowed = (positions[None, :] < sorted_lengths[:rows, None])[:, None, None, :]
        out = _masked(q[:rows, :, start:end], k[:rows, :, :keys], v[:rows, :, :keys], allowed, dropout_p)
        pieces.append(F.pad(out, [0, 0, 0, 0, 0, 0, 0, batch - rows]))
    return torch.cat(pieces, dim=2)[torch.argsort(order)]


def _right_padding_lengths(key_padding_mask: torch.Tensor | None) -> torch.Tensor:
    """Row lengths of a right-padding mask (True = padding); any other padding is an error."""
    assert key_padding_mask is not None
    lengths = (~key_padding_mask.to(torch.bool)).sum(-1)
    cols = torch.arange(key_padding_mask.shape[-1], device=key_padding_mask.device)
    if not torch.equal(key_padding_mask.to(torch.bool), cols[None, :] >= lengths[:, None]):
        raise ValueError("the jagged attention backend needs right padding (real items first in every row)")
    return lengths


# ---- local: blocks of queries against the key blocks covering their window -----------------------------------


def _local(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    causal: bool,
    key_padding_mask: torch.Tensor | None,
    config: AttentionConfig,
    dropout_p: float,
) -> torch.Tensor:
    """Sliding-window (+ global keys) softmax attention, computed block by block."""
    qb, kb, vb, allowed, empty = local_blocks(
        q, k, v, causal, key_padding_mask, config.window, config.global_tokens, config.chunk
    )
    out = _masked(qb, kb, vb, allowed, dropout_p)
    return unblock(out, empty, q.shape[0], q.shape[2])


def local_blocks(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    causal: bool,
    key_padding_mask: torch.Tensor | None,
    window: int,
    global_tokens: int,
    chunk: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Queries ``(B * nb, H, c, Dh)``, keys/values ``(B * nb, H, G + K, Dh)`` and the mask ``(B|1 * nb, 1, c,
    G + K)`` of ``nb`` query blocks of ``c`` positions (``K``: the key blocks that cover a block's window, ``G``:
    global keys outside it), plus the query rows with no key ``(B * nb, 1, c, 1)`` (they attend to all, then 0)."""
    batch, heads, length, width = q.shape
    c = min(chunk, length)
    blocks = (length + c - 1) // c
    back = (window - 1 + c - 1) // c
    ahead = 0 if causal else back
    span = (back + 1 + ahead) * c
    tail = blocks * c - length + ahead * c
    qb = F.pad(q, [0, 0, 0, blocks * c - length]).view(batch, heads, blocks, c, width)
    kb = F.pad(k, [0, 0, back * c, tail]).unfold(2, span, c).transpose(-2, -1)  # (B, H, nb, K, Dh)
    vb = F.pad(v, [0, 0, back * c, tail]).unfold(2, span, c).transpose(-2, -1)
    query_pos = torch.arange(blocks * c, device=q.device).view(blocks, c, 1)
    key_pos = (torch.arange(blocks, device=q.device) * c - back * c).view(blocks, 1, 1) + torch.arange(
        span, device=q.device
    ).view(1, 1, span)
    distance = query_pos - key_pos
    near = (distance < window) & (distance >= 0) if causal else distance.abs() < window
    real_keys = (key_pos >= 0) & (key_pos < length)
    if key_padding_mask is not None:
        padded = F.pad(key_padding_mask.to(torch.bool), [back * c, tail], value=True).unfold(1, span, c)
        real_keys = real_keys & ~padded.view(batch, blocks, 1, span)
    allowed = (near & real_keys)[:, :, None] if key_padding_mask is not None else (near & real_keys)[None, :, None]
    g = min(global_tokens, length)
    if g > 0:
        global_pos = torch.arange(g, device=q.device).view(1, 1, g)
        far = query_pos - global_pos
        far_ok = (far >= window) if causal else far.abs() >= window  # not already inside the window
        real_global = torch.ones(1, 1, 1, g, dtype=torch.bool, device=q.device)
        if key_padding_mask is not None:
            real_global = ~key_padding_mask[:, :g].to(torch.bool).view(batch, 1, 1, g)
        global_allowed = (far_ok[None] & real_global)[:, :, None]
        allowed = torch.cat([global_allowed.expand(allowed.shape[0], -1, -1, -1, -1), allowed], dim=-1)
        kb = torch.cat([k[:, :, None, :g].expand(-1, -1, blocks, -1, -1), kb], dim=3)
        vb = torch.cat([v[:, :, None, :g].expand(-1, -1, blocks, -1, -1), vb], dim=3)
    keys = kb.shape[3]
    allowed = allowed.expand(batch, -1, -1, -1, -1).reshape(batch * blocks, 1, c, keys)
    empty = ~allowed.any(-1, keepdim=True)
    allowed = allowed | empty
    qb = qb.transpose(1, 2).reshape(batch * blocks, heads, c, width)
    kb = kb.transpose(1, 2).reshape(batch * blocks, heads, keys, width)
    vb = vb.transpose(1, 2).reshape(batch * blocks, heads, keys, width)
    return qb, kb, vb, allowed, empty


def unblock(out: torch.Tensor, empty: torch.Tensor, batch: int, length: int) -> torch.Tensor:
    """``(B * nb, H, c, Dh)`` block outputs (rows without keys zeroed) back to ``(B, H, L, Dh)``."""
    out = out.masked_fill(empty, 0.0)
    blocks, heads, c, width = out.shape[0] // batch, out.shape[1], out.shape[2], out.shape[3]
    return out.view(batch, blocks, heads, c, width).transpose(1, 2).reshape(batch, heads, blocks * c, width)[
        :, :, :length
    ]


# ---- linear: kernel feature map, exact within a block, prefix-summed states across blocks ----------------------


def feature_map(x: torch.Tensor, kind: str) -> torch.Tensor:
    """The positive kernel feature map ``phi``: ``elu(x) + 1`` or ``relu(x)``."""
    if kind == "relu":
        return F.relu(x)
    return F.elu(x) + 1.0


def linear_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    causal: bool,
    key_padding_mask: torch.Tensor | None,
    kind: str,
    chunk: int,
) -> torch.Tensor:
    """``phi(Q) S / phi(Q) z`` (see the module doc); padded keys contribute nothing, keyless rows give 0."""
    batch, heads, length, width = q.shape
    fq, fk = feature_map(q, kind), feature_map(k, kind)
    if key_padding_mask is not None:
        keep = ~key_padding_mask.to(torch.bool)[:, None, :, None]
        fk, v = fk * keep, v * keep
    if not causal:
        state = fk.transpose(-2, -1) @ v  # (B, H, Dh, Dv)
        num = fq @ state
        den = fq @ fk.sum(-2).unsqueeze(-1)
        return num / den.clamp_min(1e-12)
    c = min(chunk, length)
    blocks = (length + c - 1) // c
    pad = blocks * c - length
    fq = F.pad(fq, [0, 0, 0, pad]).view(batch, heads, blocks, c, width)
    fk = F.pad(fk, [0, 0, 0, pad]).view(batch, heads, blocks, c, width)
    vb = F.pad(v, [0, 0, 0, pad]).view(batch, heads, blocks, c, v.shape[-1])
    within = (fq @ fk.transpose(-2, -1)).tril()  # (B, H, nb, c, c): the block's own causal part
    states = fk.transpose(-2, -1) @ vb  # (B, H, nb, Dh, Dv)
    # exclusive prefix sums over blocks: what the blocks strictly before contribute
    before = F.pad(torch.cumsum(states, dim=2)[:, :, :-1], [0, 0, 0, 0, 1, 0])
    sums = fk.sum(3)  # (B, H, nb, Dh)
    sums_before = F.pad(torch.cumsum(sums, dim=2)[:, :, :-1], [0, 0, 1, 0]).unsqueeze(-1)
    num = within @ vb + fq @ before
    den = within.sum(-1, keepdim=True) + fq @ sums_before
    out = num / den.clamp_min(1e-12)
    return out.reshape(batch, heads, blocks * c, v.shape[-1])[:, :, :length]


for _fn in ("local_blocks", "unblock", "linear_attention"):
    torch.fx.wrap(_fn)
