"""Training losses for next-item prediction, as pure functions returning a scalar mean over targets.

Shapes: T targets, D width; ``query: (T, D)`` (one row per target), ``positive: (T, D)``; negatives are either
a shared pool ``(S, D)`` scored against every query or per-target ``(T, n, D)``. Each loss has a logit-level
form (``*_from_logits``) that models call when they can compute scores more cheaply than by materialising
per-target negative embeddings (e.g. per-example negatives with a batched matmul).

* `softmax_loss` -- cross entropy over the whole catalogue; row 0 of the ``(N + 1, D)`` table (padding) is
  never a class.
* `sampled_softmax_loss` -- cross entropy over ``{positive} + negatives``; subtracts ``log q`` (logQ
  correction) when given and drops "accidental hits" (a negative with the positive's id).
* `bce_loss` -- original SASRec: ``-log s(pos) - sum_j log(1 - s(neg_j))``.
* `bpr_loss` -- ``-log s(pos - neg_j)``, mean over negatives.
* `gbce_loss` -- gSASRec's generalised BCE: the positive term raised to the power beta, see `gbce_beta`.

Per-target terms are summed over its negatives (``bpr`` averages them) and averaged over targets, so ``gbce``
with ``t = 0`` is exactly ``bce``. (gSASRec's reference code averages over the ``1 + n`` logits instead,
a constant factor.) Given ids, every loss drops "accidental hits": sampled negatives equal to the target.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def scores(query: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
    """Dot products: ``(T, D) x (S, D) -> (T, S)`` for a shared pool, ``(T, D) x (T, n, D) -> (T, n)``."""
    if items.dim() == 2:
        return query @ items.T
    return torch.einsum("td,tnd->tn", query, items)


def softmax_loss(
    query: torch.Tensor, table: torch.Tensor, target_ids: torch.Tensor, chunk: int = 0
) -> torch.Tensor:
    """Full cross entropy over ids ``1..N`` of a ``(N + 1, D)`` table (row 0 = padding, never a class).

    The padding row is sliced off rather than masked: masking would copy the (T, N + 1) logits, which is the
    largest tensor of a training step. ``chunk > 0`` computes the same loss with `chunked_softmax_loss`.
    """
    if chunk > 0:
        return chunked_softmax_loss(query, table[1:], target_ids.to(torch.int64) - 1, chunk)
    logits = query @ table[1:].T
    return F.cross_entropy(logits, target_ids.to(torch.int64) - 1)


class _ChunkedLSE(torch.autograd.Function):
    """Per-row log-sum-exp of ``query @ classes.T (+ bias)`` without materialising the ``(T, N)`` logits.

    Forward keeps only the ``(T,)`` log-sum-exps; backward recomputes one block of ``chunk`` rows of logits at a
    time, turns it into softmax probabilities in place and accumulates both gradients. One extra matmul buys
    skipping ~8 passes over a ``(T, N)`` tensor that does not fit in cache (the logits, log-softmax, its
    gradient and the NLL's zero-filled gradient), which dominate a full-softmax step on a CPU. Entries where
    ``class_ids`` equals the row's ``row_ids`` (sampled softmax: accidental hits) are masked; a row whose every
    class is masked gets ``-inf`` and no gradient.
    """

    @staticmethod
    def forward(ctx, query, classes, bias, row_ids, class_ids, chunk: int) -> torch.Tensor:
        lse = torch.empty(query.shape[0], dtype=query.dtype, device=query.device)
        for lo in range(0, query.shape[0], chunk):
            rows = slice(lo, lo + chunk)
            lse[rows] = torch.logsumexp(_block_logits(query[rows], classes, bias, row_ids, class_ids, rows), 1)
        ctx.save_for_backward(query, classes, bias, row_ids, class_ids, lse)
        ctx.chunk = chunk
        return lse

    @staticmethod
    def backward(ctx, grad_lse: torch.Tensor):
        query, classes, bias, row_ids, class_ids, lse = ctx.saved_tensors
        grad_query = torch.empty_like(query)
        grad_classes = torch.zeros_like(classes)
        finite = torch.where(torch.isfinite(lse), lse, torch.zeros_like(lse))  # all-masked rows: exp(-inf) = 0
        for lo in range(0, query.shape[0], ctx.chunk):
            rows = slice(lo, lo + ctx.chunk)
            logits = _block_logits(query[rows], classes, bias, row_ids, class_ids, rows)
            probs = torch.exp_(logits.sub_(finite[rows, None])).mul_(grad_lse[rows, None])
            torch.mm(probs, classes, out=grad_query[rows])
            grad_classes.addmm_(probs.T, query[rows])
        return grad_query, grad_classes, None, None, None, None


def _block_logits(query_rows, classes, bias, row_ids, class_ids, rows: slice) -> torch.Tensor:
    """One block of `_ChunkedLSE`'s logits: ``query_rows @ classes.T (+ bias)``, masked entries ``-inf``."""
    logits = query_rows @ classes.T if bias is None else torch.addmm(bias, query_rows, classes.T)
    if row_ids is not None:
        logits.masked_fill_(class_ids[None, :] == row_ids[rows, None], float("-inf"))
    return logits


def chunked_softmax_loss(
    query: torch.Tensor, classes: torch.Tensor, target: torch.Tensor, chunk: int = 256
) -> torch.Tensor:
    """``F.cross_entropy(query @ classes.T, target)`` (mean) in blocks of ``chunk`` rows; ``target`` in ``[0, N)``.

    Same value and gradients as the plain form, with memory ``O(chunk * N)`` instead of ``O(T * N)``.
    """
    query, classes = _softmax_inputs(chunk, query, classes)
    lse = _ChunkedLSE.apply(query, classes, None, None, None, chunk)
    return (lse - (query * classes[target]).sum(-1)).mean()


def chunked_sampled_softmax_loss(
    query: torch.Tensor,
    pos_logits: torch.Tensor,
    pool: torch.Tensor,
    chunk: int,
    positive_ids: torch.Tensor | None = None,
    pool_ids: torch.Tensor | None = None,
    positive_logq: torch.Tensor | None = None,
    pool_logq: torch.Tensor | None = None,
) -> torch.Tensor:
    """`sampled_softmax_from_logits` with a shared pool ``(S, D)``, without materialising the ``(T, S)`` logits.

    Same value and gradients (tested); memory ``O(chunk * S)``. The positive's logit (``(T,)``, autograd as
    usual) is combined with the pool's chunked log-sum-exp: ``logaddexp(pos, lse_pool) - pos``.
    """
    query, pool = _softmax_inputs(chunk, query, pool)
    pos = pos_logits.to(query.dtype)
    if _given(positive_logq):
        pos = pos - positive_logq
    bias = -pool_logq.to(query.dtype) if _given(pool_logq) else None
    if positive_ids is None or pool_ids is None:
        positive_ids = pool_ids = None
    lse_pool = _ChunkedLSE.apply(query, pool, bias, positive_ids, pool_ids, chunk)
    return (torch.logaddexp(pos, lse_pool) - pos).mean()


def _softmax_inputs(chunk: int, *tensors: torch.Tensor) -> list[torch.Tensor]:
    """Check ``chunk``; bf16/fp16 inputs are promoted: the chunked softmax runs in fp32 (or wider)."""
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    dtype = torch.promote_types(tensors[0].dtype, torch.float32)
    return [t.to(dtype) for t in tensors]


def sampled_softmax_loss(
    query: torch.Tensor,
    positive: torch.Tensor,
    negatives: torch.Tensor,
    positive_ids: torch.Tensor | None = None,
    negative_ids: torch.Tensor | None = None,
    positive_logq: torch.Tensor | None = None,
    negative_logq: torch.Tensor | None = None,
) -> torch.Tensor:
    """Sampled softmax over ``{positive} + negatives`` (``(S, D)`` shared or ``(T, n, D)``); see `*_from_logits`."""
    return sampled_softmax_from_logits(
        (query * positive).sum(-1),
        scores(query, negatives),
        positive_ids,
        negative_ids,
        positive_logq,
        negative_logq,
    )


def sampled_softmax_from_logits(
    pos_logits: torch.Tensor,
    neg_logits: torch.Tensor,
    positive_ids: torch.Tensor | None = None,
    negative_ids: torch.Tensor | None = None,
    positive_logq: torch.Tensor | None = None,
    negative_logq: torch.Tensor | None = None,
) -> torch.Tensor:
    """Cross entropy with the positive as class 0: ``pos_logits: (T,)``, ``neg_logits: (T, S)``.

    ``*_logq`` (``(T,)`` and ``(S,)`` or ``(T, S)``; None or empty = no correction) are subtracted from the
    logits. Negatives whose id equals the target's (``negative_ids: (S,)`` or ``(T, S)``) are masked out.
    """
    if _given(positive_logq):
        pos_logits = pos_logits - positive_logq
    if _given(negative_logq):
        neg_logits = neg_logits - negative_logq
    if positive_ids is not None and negative_ids is not None:
        neg_logits = neg_logits.masked_fill(
            _hits(positive_ids, negative_ids, neg_logits.shape), float("-inf")
        )
    logits = torch.cat([pos_logits[:, None], neg_logits], dim=1)
    return (torch.logsumexp(logits, dim=1) - pos_logits).mean()


def bce_loss(
    query: torch.Tensor,
    positive: torch.Tensor,
    negatives: torch.Tensor,
    positive_ids: torch.Tensor | None = None,
    negative_ids: torch.Tensor | None = None,
) -> torch.Tensor:
    """SASRec's binary cross entropy; ``negatives: (S, D)`` shared or ``(T, n, D)``; ids drop accidental hits."""
    return bce_from_logits((query * positive).sum(-1), scores(query, negatives), positive_ids, negative_ids)


def bce_from_logits(
    pos_logits: torch.Tensor,
    neg_logits: torch.Tensor,
    positive_ids: torch.Tensor | None = None,
    negative_ids: torch.Tensor | None = None,
) -> torch.Tensor:
    """``mean_t [-log s(pos_t) - sum_j log(1 - s(neg_tj))]``; ``pos_logits: (T,)``, ``neg_logits: (T, n)``.

    A negative with the target's id (``negative_ids: (n,)`` shared or ``(T, n)``) contributes nothing.
    """
    return (F.softplus(-pos_logits) + _negative_terms(neg_logits, positive_ids, negative_ids).sum(-1)).mean()


def bpr_loss(
    query: torch.Tensor,
    positive: torch.Tensor,
    negatives: torch.Tensor,
    positive_ids: torch.Tensor | None = None,
    negative_ids: torch.Tensor | None = None,
) -> torch.Tensor:
    """Bayesian personalised ranking; ``negatives: (S, D)`` shared or ``(T, n, D)``; ids drop accidental hits."""
    return bpr_from_logits((query * positive).sum(-1), scores(query, negatives), positive_ids, negative_ids)


def bpr_from_logits(
    pos_logits: torch.Tensor,
    neg_logits: torch.Tensor,
    positive_ids: torch.Tensor | None = None,
    negative_ids: torch.Tensor | None = None,
) -> torch.Tensor:
    """``mean_t mean_j -log s(pos_t - neg_tj)`` over the negatives that are not accidental hits."""
    terms = F.softplus(neg_logits - pos_logits[:, None])
    if positive_ids is None or negative_ids is None:
        return terms.mean()
    kept = ~_hits(positive_ids, negative_ids, terms.shape)
    return ((terms * kept).sum(-1) / kept.sum(-1).clamp(min=1)).mean()


def gbce_beta(num_negatives: int, num_items: int, t: float) -> float:
    """gSASRec's beta: ``alpha * (t * (1 - 1/alpha) + 1/alpha)`` with ``alpha = num_negatives / (num_items - 1)``.

    ``t = 0`` gives beta = 1 (plain BCE); ``t = 1`` gives beta = alpha, which calibrates the positive's
    probability to the full catalogue despite negative sampling.
    """
    if num_negatives < 1 or num_items < 2:
        raise ValueError(
            f"gBCE needs num_negatives >= 1 and num_items >= 2, got {num_negatives}, {num_items}"
        )
    alpha = num_negatives / (num_items - 1)
    return alpha * (t * (1.0 - 1.0 / alpha) + 1.0 / alpha)


def gbce_positive_logit(pos_logits: torch.Tensor, beta: float) -> torch.Tensor:
    """The paper's transformed positive logit ``s'`` with ``sigmoid(s') = sigmoid(s) ** beta``.

    ``s' = -log(sigmoid(s) ** -beta - 1)``. `gbce_from_logits` uses the closed form of ``BCE(s', 1)``
    (``beta * softplus(-s)``), which is identical but keeps finite gradients where ``sigmoid(s)`` rounds to 1.
    """
    return -torch.log(torch.expm1(-beta * F.logsigmoid(pos_logits)))


def gbce_from_logits(
    pos_logits: torch.Tensor,
    neg_logits: torch.Tensor,
    num_items: int,
    t: float,
    positive_ids: torch.Tensor | None = None,
    negative_ids: torch.Tensor | None = None,
) -> torch.Tensor:
    """``mean_t [-beta log s(pos_t) - sum_j log(1 - s(neg_tj))]``, beta from `gbce_beta` with n = ``neg_logits.shape[-1]``.

    Accidental hits are dropped as in `bce_from_logits`; they matter in small catalogues, where a
    down-weighted positive (beta < 1) would otherwise be pushed down by its own copy among the negatives.
    """
    beta = gbce_beta(neg_logits.shape[-1], num_items, t)
    negative = _negative_terms(neg_logits, positive_ids, negative_ids).sum(-1)
    return (beta * F.softplus(-pos_logits) + negative).mean()


def gbce_loss(
    query: torch.Tensor,
    positive: torch.Tensor,
    negatives: torch.Tensor,
    num_items: int,
    t: float,
    positive_ids: torch.Tensor | None = None,
    negative_ids: torch.Tensor | None = None,
) -> torch.Tensor:
    """gSASRec's generalised BCE; ``negatives: (S, D)`` shared or ``(T, n, D)``; ids drop accidental hits."""
    logits = scores(query, negatives)
    return gbce_from_logits((query * positive).sum(-1), logits, num_items, t, positive_ids, negative_ids)


def _negative_terms(
    neg_logits: torch.Tensor, positive_ids: torch.Tensor | None, negative_ids: torch.Tensor | None
) -> torch.Tensor:
    """``-log(1 - s(neg))`` per negative, 0 for accidental hits."""
    terms = F.softplus(neg_logits)
    if positive_ids is None or negative_ids is None:
        return terms
    return terms.masked_fill(_hits(positive_ids, negative_ids, terms.shape), 0.0)


def _hits(positive_ids: torch.Tensor, negative_ids: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """``(T, n)`` True where a negative is the target itself; ``negative_ids`` is ``(n,)`` or ``(T, n)``."""
    return (negative_ids == positive_ids[:, None]).expand(shape)


def _given(logq: torch.Tensor | None) -> bool:
    return logq is not None and logq.numel() > 0
