"""Explanations on a trained tiny model: faithful (leaving out the top-attributed history item lowers the
recommendation's score more than leaving out a random one, on average), weights equal to the measured drops,
positions and raw ids right, and requests without ``explain`` unchanged."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from serving.drift_cli import history_requests
from serving.service import Recommender, RequestError


def score_of(service: Recommender, history: list[str], item: str) -> float:
    """The model's score of ``item`` for ``history``, read from a full-catalogue answer."""
    n = len(service.raw_ids)
    answer = service.recommend([service.parse({"history": history, "k": n, "exclude_seen": False})])[0]
    return answer["scores"][answer["items"].index(item)]


def test_explanations_are_faithful(exported: Path, tiny_dataset: Path) -> None:
    service = Recommender.load(exported / "export")
    bodies = [b for b in history_requests(tiny_dataset, np.arange(120)) if 3 <= len(b["history"]) <= 20][:40]
    assert len(bodies) >= 20
    rng = np.random.default_rng(0)
    top_drops, random_drops = [], []
    for body in bodies:
        history = body["history"]
        answer = service.recommend([service.parse({**body, "k": 3, "explain": True})])[0]
        assert [e["item"] for e in answer["explanations"]] == answer["items"]
        first = answer["explanations"][0]
        best = first["because"][0]
        assert history[best["position"]] == best["item"]
        weights = [b["weight"] for b in first["because"]]
        assert weights == sorted(weights, reverse=True) and len(weights) == 3
        base = score_of(service, history, first["item"])
        assert base == pytest.approx(answer["scores"][0], abs=1e-4)
        without = history[: best["position"]] + history[best["position"] + 1:]
        top_drops.append(base - score_of(service, without, first["item"]))
        assert top_drops[-1] == pytest.approx(best["weight"], abs=1e-3)
        j = int(rng.integers(len(history)))
        random_drops.append(base - score_of(service, history[:j] + history[j + 1:], first["item"]))
        assert top_drops[-1] >= random_drops[-1] - 1e-4  # leave-one-out: no single removal drops more
    assert np.mean(top_drops) > np.mean(random_drops) + 1e-3, (np.mean(top_drops), np.mean(random_drops))


def test_explain_is_opt_in_and_validated(exported: Path) -> None:
    service = Recommender.load(exported / "export")
    raw = service.raw_ids.tolist()
    plain = service.recommend([service.parse({"history": raw[:5], "k": 2})])[0]
    assert "explanations" not in plain
    one = service.recommend([service.parse({"history": raw[:1], "k": 2, "explain": True})])[0]
    assert one["explanations"][0]["because"] == [{"item": raw[0], "position": 0, "weight": None}]
    empty = service.recommend([service.parse({"history": ["unknown"], "k": 2, "explain": True})])[0]
    assert empty["fallback"] and empty["explanations"] == []
    with pytest.raises(RequestError, match="'explain' must be true or false"):
        service.parse({"history": raw[:2], "explain": "yes"})
