"""Re-rankers against popularity bias, for evaluation and serving alike (torch only, TorchScript-able).

Both take a model's candidate list, best first (``scores (B, M)``, ``ids (B, M)``, e.g. the top 100 of the full
ranking), and return the top ``k`` ids after re-ranking; a strength of 0 returns the plain ranking.

* `popularity_penalty`: ``z(score) - strength * z(log(1 + popularity))``, both standardised over the user's
  candidates, so one strength means the same for models whose scores live on different scales.
* `mmr`: maximal marginal relevance (Carbonell & Goldstein 1998), greedy: the next item maximises
  ``(1 - strength) * relevance - strength * max cosine similarity to the items already chosen``, relevance =
  the score min-max scaled to [0, 1] over the candidates. ``strength`` lies in [0, 1].

Padding candidates (id 0, score -inf, when a user has fewer unseen items than M) are never chosen before a real
item and stay 0 in the output.
"""

from __future__ import annotations

import torch


def _standardise(x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Per-row z-score over the valid entries (invalid entries become 0)."""
    count = valid.sum(1, keepdim=True).clamp(min=1)
    x = torch.where(valid, x, torch.zeros_like(x))
    mean = x.sum(1, keepdim=True) / count
    var = (torch.where(valid, x - mean, torch.zeros_like(x)) ** 2).sum(1, keepdim=True) / count
    return torch.where(valid, (x - mean) / var.sqrt().clamp(min=1e-12), torch.zeros_like(x))


def popularity_penalty(
    scores: torch.Tensor, ids: torch.Tensor, popularity: torch.Tensor, strength: float, k: int
) -> torch.Tensor:
    """Top ``k`` of ``ids (B, M)`` by the penalised score; ``popularity (N + 1,)`` train counts."""
    if strength == 0.0:
        return ids[:, :k]
    valid = ids > 0
    finite = torch.where(valid, scores, torch.zeros_like(scores))
    log_pop = torch.log1p(popularity.to(scores.dtype)[ids])
    adjusted = _standardise(finite, valid) - strength * _standardise(log_pop, valid)
    adjusted = torch.where(valid, adjusted, torch.full_like(adjusted, float("-inf")))
    # stable: equal adjusted scores keep the model's order
    order = torch.sort(adjusted, dim=1, descending=True, stable=True).indices[:, :k]
    return ids.gather(1, order)


def mmr(scores: torch.Tensor, ids: torch.Tensor, item_emb: torch.Tensor, strength: float, k: int) -> torch.Tensor:
    """Greedy MMR selection of ``k`` of the candidates ``ids (B, M)``; ``item_emb (N + 1, D)`` for similarity."""
    if strength == 0.0:
        return ids[:, :k]
    batch, m = ids.shape
    k = min(k, m)
    valid = ids > 0
    finite = torch.where(valid, scores, torch.zeros_like(scores))
    low = torch.where(valid, finite, torch.full_like(finite, float("inf"))).min(1, keepdim=True).values
    high = torch.where(valid, finite, torch.full_like(finite, float("-inf"))).max(1, keepdim=True).values
    relevance = (finite - low) / (high - low).clamp(min=1e-12)
    unit = item_emb[ids].to(scores.dtype)
    unit = unit / torch.linalg.vector_norm(unit, dim=-1, keepdim=True).clamp(min=1e-12)
    sim = unit @ unit.transpose(1, 2)  # (B, M, M)
    max_sim = torch.zeros(batch, m, dtype=scores.dtype, device=scores.device)
    available = valid.clone()
    chosen = torch.zeros(batch, k, dtype=torch.int64, device=ids.device)
    rows = torch.arange(batch, device=ids.device)
    for step in range(k):
        gain = (1.0 - strength) * relevance - strength * max_sim
        gain = torch.where(available, gain, torch.full_like(gain, float("-inf")))
        pick = torch.argmax(gain, dim=1)  # the first maximum: ties keep the model's order
        chosen[:, step] = torch.where(available[rows, pick], ids[rows, pick], torch.zeros_like(pick))
        available[rows, pick] = False
        max_sim = torch.maximum(max_sim, sim[rows, pick])
    return chosen
