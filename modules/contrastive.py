"""Contrastive regularisation of sequence representations (CL4SRec / DuoRec style), for any sequence encoder.

With ``model.objective.contrastive_weight > 0`` a training step encodes each history a second time: dropout
draws other masks, so the two last-position outputs are two views of one sequence (DuoRec's unsupervised
augmentation, the "model-level" augmentation that needs no data change). NT-Xent (CL4SRec's form) over the
``2B`` views: each view's positive is the other view of its sequence, the other ``2B - 2`` views of the batch
are its negatives; cosine similarity divided by ``contrastive_temperature``. The term is added to the
objective's loss times ``contrastive_weight`` and logged as ``contrastive``. An encoder without dropout gives
two equal views: the term then only spreads sequences apart (uniformity), it cannot align views.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from modules.objectives import last_position


def nt_xent(first: torch.Tensor, second: torch.Tensor, temperature: float) -> torch.Tensor:
    """Mean NT-Xent of two views ``(B, D)`` of B sequences (row b of each is one positive pair)."""
    views = F.normalize(torch.cat([first, second]), dim=-1)
    logits = views @ views.T / temperature
    logits = logits.masked_fill(torch.eye(logits.shape[0], dtype=torch.bool, device=logits.device), float("-inf"))
    b = first.shape[0]
    partner = torch.cat([torch.arange(b, 2 * b), torch.arange(0, b)]).to(logits.device)
    return F.cross_entropy(logits, partner)


class ContrastiveRegularizer(nn.Module):
    """``(loss, logs, hidden, second, lengths) -> (loss + weight * NT-Xent, logs + {"contrastive"})`` for two
    right-padded encoder outputs ``(B, L, D)`` of the same batch (a leaf module for the pipeline's FX trace)."""

    def __init__(self, weight: float, temperature: float) -> None:
        super().__init__()
        self.weight, self.temperature = weight, temperature

    def forward(self, loss: torch.Tensor, logs: dict[str, torch.Tensor], hidden: torch.Tensor, second: torch.Tensor,
                lengths: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        term = nt_xent(last_position(hidden, lengths), last_position(second, lengths), self.temperature)
        total = loss + self.weight * term
        return total, {**logs, "loss": total.detach(), "contrastive": term.detach()}
