"""Explanations: which history items drove each recommendation, by leave-one-out over the history.

For a request with history ``h`` (its last `MAX_HISTORY` items) and a recommended item ``r``, the weight of
history item ``h_j`` is ``score(r | h) - score(r | h without h_j)``: how much the model's score for ``r`` falls
when that one item is taken away. It needs nothing from the model but its serving signature
``(history, lengths, k, exclude_seen) -> (scores, items)`` (one batched call with ``L + 1`` rows and ``k = N``,
so any exported model can be explained), and it is faithful by construction: the item named first is the one
whose removal lowers the score most. Cost: ``L + 1`` forward passes and ``(L + 1) x N`` scores per request, fine
for short histories and catalogues up to ~1e5 items; older items than the last `MAX_HISTORY` (and than the
model's own ``max_len``, which it never reads) get no weight, and so do all but the last ``MAX_SCORES / N - 1``
when the catalogue is larger than ~650k items. A one-item history explains itself (weight null).

A request asks for it with ``"explain": true``; its answer then has ``"explanations"``: one entry per
recommended item, ``{"item": raw id, "because": [{"item": raw id, "position": int, "weight": float}, ...]}``,
the `TOP` largest weights first (positive: the item pushed the recommendation up); ``position`` is the item's
place among the request's known history items (0 = oldest; unknown ids were dropped before).
"""

from __future__ import annotations

from typing import Any

import torch

MAX_HISTORY = 50
MAX_SCORES = 1 << 25  # (L + 1) x N scores per request at most: large catalogues explain fewer recent items
TOP = 3


def leave_one_out(model: Any, history: list[int], recommended: list[int], num_items: int) -> torch.Tensor:
    """Weights ``(R, L)``: the score drop of each recommended item when each history item is left out."""
    h = torch.tensor(history, dtype=torch.int64)
    length = len(history)
    keep = ~torch.eye(length, dtype=torch.bool)
    variants = torch.cat([h, h.expand(length, length)[keep]])
    lengths = torch.tensor([length] + [length - 1] * length, dtype=torch.int64)
    with torch.inference_mode():
        scores, items = model(variants, lengths, num_items, False)
        by_item = torch.full((length + 1, num_items + 1), float("nan")).scatter_(1, items, scores)
        chosen = by_item[:, torch.tensor(recommended, dtype=torch.int64)]  # (L + 1, R)
    return (chosen[0:1] - chosen[1:]).T


def add_explanations(service: Any, requests: list[Any], answers: list[dict[str, Any]], top: int = TOP) -> None:
    """Add ``"explanations"`` to the answers of requests that asked for them (``request.explain``)."""
    for request, answer in zip(requests, answers):
        if not getattr(request, "explain", False):
            continue
        answer["explanations"] = [] if answer["fallback"] else _explain_one(service, request, answer, top)


def _explain_one(service: Any, request: Any, answer: dict[str, Any], top: int) -> list[dict[str, Any]]:
    history = request.items[-max(1, min(MAX_HISTORY, MAX_SCORES // len(service.raw_ids) - 1)):]
    first = len(request.items) - len(history)  # position of history[0] in the request's known items
    recommended = [service.index[raw] for raw in answer["items"]]
    raw = service.raw_ids
    if len(history) == 1:
        because = [{"item": raw[history[0] - 1], "position": first, "weight": None}]
        return [{"item": raw[r - 1], "because": because} for r in recommended]
    weights = leave_one_out(service.model, history, recommended, len(raw))
    out = []
    for row, r in enumerate(recommended):
        best = torch.argsort(weights[row], descending=True, stable=True)[:top].tolist()
        out.append({"item": raw[r - 1],
                    "because": [{"item": raw[history[j] - 1], "position": first + j, "weight": float(weights[row, j])}
                                for j in best]})
    return out
