"""Ranking requests in, candidates sorted by a head's score out: validation and batched scoring, no server.

Any server adapter (`serving.ranking_handler` for TorchServe, a test, a script) calls `RankingService`::

    service = RankingService.load("outputs/exp/run/export")
    parsed = [service.parse(body) for body in bodies]           # RequestError -> answer 400 for that one
    answers = service.rank(parsed)                               # one dict per request, one model call

A request body is JSON::

    {"history": [{"item": id, "action": "cart", "time": 1651400000}, ...],   # oldest first; action, time optional
     "candidates": [ids], "head": "purchase", "user": id, "request_time": 1651400100}   # the last three optional

``action`` defaults to the dataset's first action name, ``head`` to the model's main head, ``request_time`` to
the last history time (0 without times); ``user`` (a raw user id of the training data) selects the user's
embedding, an absent or unknown one the mean user. Unknown history items are dropped and listed in ``unknown``;
unknown candidates are not scored and listed in ``unknown_candidates``. The answer lists every scored candidate
with its probability per head, sorted by ``head``, best first. Loading reads TorchScript and JSON only.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import fbgemm_gpu  # noqa: F401  (the TorchScript artefact calls fbgemm ops)
import numpy as np
import torch

from serving.service import ID_MAP_FILE, MODEL_FILE, RequestError, decode_body

RANKING_FILE = "ranking.json"
FIELDS = ("history", "candidates", "head", "user", "request_time")
EVENT_FIELDS = ("item", "action", "time")


@dataclasses.dataclass
class RankingLimits:
    """Bounds on one request (they keep one client from monopolising a worker)."""

    max_candidates: int = 500
    max_history: int = 10_000
    max_body_bytes: int = 1 << 20


@dataclasses.dataclass
class RankRequest:
    """A validated request: known history items with action codes and times, candidates, head, user, time."""

    items: list[int]
    actions: list[int]
    times: list[int]
    unknown: list[str]
    candidates: list[int]
    candidate_ids: list[str]
    unknown_candidates: list[str]
    head: str
    user: int
    request_time: int


class RankingService:
    """Batched candidate scoring with a scripted `serving.ranking_inference.RankerScorer`.

    Args:
        model: the TorchScript scorer. raw_ids: raw id of items 1..N. heads: head names, main first.
        actions: action names by code. users: raw user ids by user index (may be empty).
    """

    def __init__(self, model: Any, raw_ids: list[str], heads: list[str], actions: list[str], users: list[str],
                 limits: RankingLimits | None = None) -> None:
        self.model, self.heads, self.actions = model, list(heads), list(actions) or ["none"]
        self.raw_ids = np.asarray(raw_ids, dtype=object)
        self.index = {raw: i + 1 for i, raw in enumerate(raw_ids)}
        self.action_codes = {name: code for code, name in enumerate(self.actions)}
        self.users = {raw: i for i, raw in enumerate(users)}
        self.limits = limits or RankingLimits()

    @classmethod
    def load(cls, folder: str | Path, limits: RankingLimits | None = None) -> RankingService:
        """Load ``model.pt``, ``id_map.json`` and ``ranking.json`` from an export folder."""
        folder = Path(folder)
        model = torch.jit.load(str(folder / MODEL_FILE), map_location="cpu").eval()
        ids = json.loads((folder / ID_MAP_FILE).read_text())["raw_ids"]
        info = json.loads((folder / RANKING_FILE).read_text())
        return cls(model, [str(x) for x in ids], info["heads"], info["actions"], info.get("users", []), limits)

    def warm_up(self, calls: int = 3, history: int = 50, candidates: int = 100) -> None:
        """A few calls on made-up requests before real traffic (TorchScript optimises on its first calls)."""
        ids = list(self.index)[:history]
        body = {"history": [{"item": i} for i in ids], "candidates": list(self.index)[:candidates]}
        for _ in range(calls):
            self.rank([self.parse(body)])

    # --------------------------------------------------------------------------------------------- parsing
    def parse(self, body: Any) -> RankRequest:
        """Validate one request body (bytes, str or decoded dict); `RequestError` names the bad field."""
        body = decode_body(body, self.limits.max_body_bytes)
        extra = sorted(set(body) - set(FIELDS))
        if extra:
            raise RequestError(f"unknown fields {extra}; allowed: {list(FIELDS)}")
        items, actions, times, unknown = self._history(body.get("history", []))
        candidates, candidate_ids, unknown_candidates = self._candidates(body.get("candidates"))
        head = body.get("head", self.heads[0])
        if head not in self.heads:
            raise RequestError(f"'head' must be one of {self.heads}, got {head!r}")
        user = body.get("user")
        if user is not None and (not isinstance(user, str | int) or isinstance(user, bool)):
            raise RequestError(f"'user' must be a string or an integer id, got {type(user).__name__}")
        request_time = body.get("request_time", times[-1] if times else 0)
        if not isinstance(request_time, int) or isinstance(request_time, bool):
            raise RequestError(f"'request_time' must be an integer (seconds), got {type(request_time).__name__}")
        return RankRequest(items, actions, times, unknown, candidates, candidate_ids, unknown_candidates, head,
                           self.users.get(str(user), -1) if user is not None else -1, request_time)

    def _history(self, history: Any) -> tuple[list[int], list[int], list[int], list[str]]:
        if not isinstance(history, list):
            raise RequestError(f"'history' must be a list of {{\"item\": id, \"action\": name}}, got "
                               f"{type(history).__name__}")
        if len(history) > self.limits.max_history:
            raise RequestError(f"'history' has {len(history)} events; the limit is {self.limits.max_history}")
        items, actions, times, unknown = [], [], [], []
        for i, event in enumerate(history):
            if not isinstance(event, dict) or "item" not in event:
                raise RequestError(f"'history[{i}]' must be an object with an 'item' field")
            extra = sorted(set(event) - set(EVENT_FIELDS))
            if extra:
                raise RequestError(f"'history[{i}]' has unknown fields {extra}; allowed: {list(EVENT_FIELDS)}")
            raw = _raw_id(event["item"], f"history[{i}].item")
            action = event.get("action", self.actions[0])
            if action not in self.action_codes:
                raise RequestError(f"'history[{i}].action' must be one of {self.actions}, got {action!r}")
            time = event.get("time", 0)
            if not isinstance(time, int) or isinstance(time, bool):
                raise RequestError(f"'history[{i}].time' must be an integer (seconds), got {type(time).__name__}")
            index = self.index.get(raw, 0)
            if not index:
                unknown.append(raw)
                continue
            items.append(index)
            actions.append(self.action_codes[action])
            times.append(time)
        return items, actions, times, unknown

    def _candidates(self, candidates: Any) -> tuple[list[int], list[str], list[str]]:
        if not isinstance(candidates, list) or not candidates:
            raise RequestError("'candidates' must be a non-empty list of item ids")
        if len(candidates) > self.limits.max_candidates:
            raise RequestError(f"'candidates' has {len(candidates)} items; the limit is "
                               f"{self.limits.max_candidates}")
        raw = [_raw_id(c, f"candidates[{i}]") for i, c in enumerate(candidates)]
        found = [self.index.get(x, 0) for x in raw]
        known = [(i, x) for i, x in zip(found, raw) if i]
        return [i for i, _ in known], [x for _, x in known], [x for x, i in zip(raw, found) if not i]

    # --------------------------------------------------------------------------------------------- scoring
    def rank(self, requests: list[RankRequest]) -> list[dict[str, Any]]:
        """One answer per request (module docstring); every request's candidates in one model call."""
        scored = [r for r in requests if r.candidates]
        probs = np.zeros((0, len(self.heads)))
        if scored:
            with torch.inference_mode():
                logits = self.model(*_tensors(scored))
            probs = torch.sigmoid(logits.float()).numpy()
        answers, start = [], 0
        for request in requests:
            n = len(request.candidates)
            answers.append(self._answer(request, probs[start:start + n]))
            start += n
        return answers

    def _answer(self, request: RankRequest, probs: np.ndarray) -> dict[str, Any]:
        order = np.argsort(-probs[:, self.heads.index(request.head)], kind="stable") if len(probs) else []
        candidates = [{"item": request.candidate_ids[i],
                       "scores": {h: round(float(probs[i, j]), 6) for j, h in enumerate(self.heads)}}
                      for i in order]
        return {"head": request.head, "candidates": candidates, "unknown": request.unknown,
                "unknown_candidates": request.unknown_candidates}


def _tensors(requests: list[RankRequest]) -> tuple[torch.Tensor, ...]:
    """The scorer's inputs for a list of requests (module `serving.ranking_inference`)."""
    def ints(values: list[int]) -> torch.Tensor:
        return torch.tensor(values, dtype=torch.int64)

    return (
        ints([i for r in requests for i in r.items]), ints([a for r in requests for a in r.actions]),
        ints([t for r in requests for t in r.times]), ints([len(r.items) for r in requests]),
        ints([c for r in requests for c in r.candidates]), ints([len(r.candidates) for r in requests]),
        ints([r.request_time for r in requests]), ints([r.user for r in requests]),
    )


def _raw_id(value: Any, field: str) -> str:
    if not isinstance(value, str | int) or isinstance(value, bool):
        raise RequestError(f"'{field}' must be a string or an integer id, got {type(value).__name__}")
    return str(value)
