"""Requests in, recommendations out: validation and batched top-k over an exported artefact, with no server.

Any server adapter (the TorchServe handler in `serving.handler`, a test, a script) calls `Recommender`::

    service = Recommender.load("outputs/exp/run/export")
    parsed = [service.parse(body) for body in bodies]          # RequestError -> answer 400 for that one
    answers = service.recommend(parsed)                         # one dict per request

A request body is JSON ``{"history": [raw item ids, oldest first], "k": 10, "exclude_seen": true,
"popularity_penalty": 0.5, "explain": false}`` (all but ``history`` optional; a penalty > 0 re-ranks the model's
top 100 against popularity, ``"diversity": 0.5`` by MMR over the artefact's item embeddings, `modules.rerank`, as
``eval.bias_rerank=popularity|mmr`` does in evaluation; ``explain``: `serving.explain`). Raw ids may be strings or
integers (matched by their string form). Unknown ids are
dropped and listed in ``unknown``; a request with no known item left gets the most popular items
(``fallback: true``). Loading reads TorchScript and JSON only: no pickles.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import fbgemm_gpu  # noqa: F401  (the TorchScript artefact calls fbgemm ops)
import numpy as np
import torch

from serving.explain import add_explanations

MODEL_FILE, ID_MAP_FILE, METADATA_FILE = "model.pt", "id_map.json", "metadata.json"
FIELDS = ("history", "k", "exclude_seen", "popularity_penalty", "diversity", "explain", "timestamps")
RERANK_CANDIDATES = 100  # candidates the popularity penalty re-ranks (modules.rerank), clipped to the catalogue


class RequestError(ValueError):
    """A request the client must fix (answered with HTTP 400 and this message)."""


@dataclasses.dataclass
class Limits:
    """Bounds on one request: they keep a single client from monopolising a worker."""

    max_k: int = 1000
    max_history: int = 10_000
    max_body_bytes: int = 1 << 20


@dataclasses.dataclass
class Request:
    """A validated request: known item indices (1..N, in order), the unknown raw ids, k and exclude_seen."""

    items: list[int]
    unknown: list[str]
    k: int
    exclude_seen: bool
    popularity_penalty: float = 0.0
    diversity: float = 0.0
    explain: bool = False  # answer with the history items that drove each recommendation (serving.explain)
    times: list[int] = dataclasses.field(default_factory=list)  # one per known item, or empty


def _decode_json(text: str) -> Any:
    """``json.loads`` with every way it can fail turned into a `RequestError` (nesting too deep, integers with
    too many digits, lone surrogates), so a hostile body never escapes as an unforeseen exception."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise RequestError(f"malformed JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except RecursionError:
        raise RequestError("malformed JSON: nested too deeply") from None
    except ValueError as exc:
        raise RequestError(f"malformed JSON: {str(exc).splitlines()[0][:200]}") from None


def decode_body(body: Any, max_bytes: int) -> dict[str, Any]:
    """A request body (bytes, str or an already decoded dict) as a JSON object; `RequestError` otherwise."""
    if body is None or body == b"":
        raise RequestError("empty request body; send a JSON object with Content-Type: application/json")
    if isinstance(body, bytes | bytearray):
        if len(body) > max_bytes:
            raise RequestError(f"request body is {len(body)} bytes; the limit is {max_bytes}")
        body = body.decode("utf-8", errors="replace")
    if isinstance(body, str):
        body = _decode_json(body)
    if not isinstance(body, dict):
        raise RequestError(f"request must be a JSON object, got {type(body).__name__}")
    return body


class Recommender:
    """Batched recommendations from a scripted `serving.inference.TopKRecommender` and its id map.

    Args:
        model: callable ``(history, lengths, k, exclude_seen) -> (scores, items)`` (the TorchScript artefact).
        raw_ids: raw id of items 1..N. popularity: train counts of items 1..N (the empty-history fallback).
        limits: request bounds (``max_k`` is also capped at N).
    """

    def __init__(self, model: Any, raw_ids: list[str], popularity: list[int], limits: Limits | None = None) -> None:
        if len(raw_ids) != len(popularity) or not raw_ids:
            raise ValueError("id map needs one raw id and one popularity per item, at least one item")
        self.model = model
        self.raw_ids = np.asarray(raw_ids, dtype=object)
        self.index = {raw: i + 1 for i, raw in enumerate(raw_ids)}
        counts = np.asarray(popularity, dtype=np.float64)
        self.popular = np.argsort(-counts, kind="stable")  # 0-based rows, most popular first
        self.popular_scores = counts[self.popular]
        self.popularity = torch.from_numpy(np.concatenate([[0.0], counts]))  # (N + 1,) for the re-ranker
        self._item_rows: torch.Tensor | None = None  # (N + 1, D) for MMR, read from the artefact on first use
        self.limits = limits or Limits()
        self.max_k = min(self.limits.max_k, len(raw_ids))
        self.drift: Any = None  # serving.drift.DriftStats, when attached: every answered batch is counted

    @classmethod
    def load(cls, folder: str | Path, limits: Limits | None = None) -> Recommender:
        """Load ``model.pt`` (TorchScript) and ``id_map.json`` from an export folder."""
        folder = Path(folder)
        model = torch.jit.load(str(folder / MODEL_FILE), map_location="cpu").eval()
        id_map = json.loads((folder / ID_MAP_FILE).read_text())
        return cls(model, [str(x) for x in id_map["raw_ids"]], id_map["popularity"], limits)

    def warm_up(self, max_batch: int = 1, history: int = 50, calls: int = 3) -> None:
        """Run the model a few times on made-up histories, batch 1 and ``max_batch``, before real traffic.

        TorchScript profiles and optimises the graph on its first calls (ML-1M model: 306 and 165 ms, then
        1-2 ms; a first batch of 16 costs 21 ms, then 5-6 ms); a server that skips this hands those calls to its
        first users, and they show up in the p99.
        """
        generator = torch.Generator().manual_seed(0)
        n = len(self.raw_ids)
        for batch in sorted({1, max(1, max_batch)}):
            ids = torch.randint(1, n + 1, (batch * history,), generator=generator)
            lengths = torch.full((batch,), history, dtype=torch.int64)
            with torch.inference_mode():
                for _ in range(calls):
                    self.model(ids, lengths, min(10, n), True)

    def parse(self, body: Any) -> Request:
        """Validate one request body (bytes, str or an already decoded dict); `RequestError` says what is wrong."""
        body = decode_body(body, self.limits.max_body_bytes)
        extra = sorted(set(body) - set(FIELDS))
        if extra:
            raise RequestError(f"unknown fields {extra}; allowed: {list(FIELDS)}")
        k, exclude_seen = body.get("k", 10), body.get("exclude_seen", True)
        if not isinstance(k, int) or isinstance(k, bool):
            raise RequestError(f"'k' must be an integer, got {type(k).__name__}")
        if not 1 <= k <= self.max_k:
            raise RequestError(f"'k' must be in [1, {self.max_k}], got {k}")
        if not isinstance(exclude_seen, bool):
            raise RequestError(f"'exclude_seen' must be true or false, got {type(exclude_seen).__name__}")
        penalty = body.get("popularity_penalty", 0.0)
        if not isinstance(penalty, int | float) or isinstance(penalty, bool) or not 0 <= penalty <= 100:
            raise RequestError(f"'popularity_penalty' must be a number in [0, 100], got {penalty!r}")
        diversity = body.get("diversity", 0.0)
        if not isinstance(diversity, int | float) or isinstance(diversity, bool) or not 0 <= diversity <= 1:
            raise RequestError(f"'diversity' must be a number in [0, 1], got {diversity!r}")
        if diversity and penalty:
            raise RequestError("send 'popularity_penalty' or 'diversity', not both")
        if diversity and self.item_rows() is None:
            raise RequestError("'diversity' needs item embeddings, which this artefact does not expose")
        explain = body.get("explain", False)
        if not isinstance(explain, bool):
            raise RequestError(f"'explain' must be true or false, got {type(explain).__name__}")
        items, unknown, times = self._history(body.get("history"), body.get("timestamps"))
        return Request(items=items, unknown=unknown, k=k, exclude_seen=exclude_seen,
                       popularity_penalty=float(penalty), diversity=float(diversity), explain=explain, times=times)

    def _history(self, history: Any, times: Any) -> tuple[list[int], list[str], list[int]]:
        if not isinstance(history, list):
            raise RequestError(f"'history' must be a list of item ids, got {type(history).__name__}")
        if len(history) > self.limits.max_history:
            raise RequestError(f"'history' has {len(history)} items; the limit is {self.limits.max_history}")
        bad = [x for x in history if not isinstance(x, str | int) or isinstance(x, bool)][:1]  # [None] is a hit too
        if bad:
            raise RequestError(f"'history' items must be strings or integers, got {type(bad[0]).__name__}")
        if times is not None and (not isinstance(times, list) or len(times) != len(history)
                                  or any(not isinstance(t, int) or isinstance(t, bool) for t in times)):
            raise RequestError(f"'timestamps' must be a list of {len(history)} integers, one per history item")
        raw = [str(x) for x in history]
        found = [self.index.get(x, 0) for x in raw]
        kept = [t for t, i in zip(times, found) if i] if times is not None else []
        return [i for i in found if i], [x for x, i in zip(raw, found) if not i], kept

    def recommend(self, requests: list[Request]) -> list[dict[str, Any]]:
        """One answer per request: ``{"items", "scores", "unknown", "fallback"}`` (model calls batched)."""
        answers: list[dict[str, Any] | None] = [None] * len(requests)
        for exclude in (True, False):
            group = [i for i, r in enumerate(requests) if r.items and r.exclude_seen == exclude]
            if group:
                self._score(requests, group, exclude, answers)
        for i, request in enumerate(requests):
            if answers[i] is None:
                rows = self.popular[: request.k]
                answers[i] = self._answer(rows + 1, self.popular_scores[: request.k], request, fallback=True)
        if self.drift is not None:
            self.drift.update(requests, answers)
        if any(r.explain for r in requests):
            add_explanations(self, requests, answers)
        return answers  # type: ignore[return-value]

    def _score(self, requests: list[Request], group: list[int], exclude: bool, answers: list) -> None:
        lengths = torch.tensor([len(requests[i].items) for i in group], dtype=torch.int64)
        history = torch.tensor([x for i in group for x in requests[i].items], dtype=torch.int64)
        depth = min(RERANK_CANDIDATES, len(self.raw_ids))
        k = max(max(requests[i].k, depth if requests[i].popularity_penalty or requests[i].diversity else 0)
                for i in group)
        timed = any(requests[i].times for i in group)
        times = [t for i in group for t in (requests[i].times or [0] * len(requests[i].items))]
        with torch.inference_mode():
            if timed:
                scores, items = self.model(history, lengths, k, exclude, torch.tensor(times, dtype=torch.int64))
            else:
                scores, items = self.model(history, lengths, k, exclude)
        scores, items = self._rerank(scores, items, [requests[i] for i in group])
        for row, i in enumerate(group):
            top = scores[row, : requests[i].k]
            keep = np.isfinite(top)  # fewer unseen items than k: the masked tail is -inf
            answers[i] = self._answer(items[row, : requests[i].k][keep], top[keep], requests[i], fallback=False)

    def item_rows(self) -> torch.Tensor | None:
        """``(N + 1, D)`` item embeddings (row 0 padding) of a `serving.inference.Retriever` artefact (its
        ``catalogue`` module, else its tied ``table`` rows 1..N), or None for an artefact without them."""
        if self._item_rows is None and hasattr(self.model, "table"):
            with torch.inference_mode():
                rows = self.model.catalogue() if hasattr(self.model, "catalogue") else self.model.table()[1:]
            rows = rows[: len(self.raw_ids)].float()
            self._item_rows = torch.cat([torch.zeros(1, rows.shape[1]), rows])
        return self._item_rows

    def _rerank(
        self, scores: torch.Tensor, items: torch.Tensor, requests: list[Request]
    ) -> tuple[np.ndarray, np.ndarray]:
        """Rows with a popularity penalty or diversity re-ranked by `modules.rerank` (model scores kept)."""
        from modules.rerank import mmr, popularity_penalty

        scores, items = scores.clone(), items.clone()
        for row, request in enumerate(requests):
            if request.popularity_penalty or request.diversity:
                ids = items[row : row + 1].masked_fill(~torch.isfinite(scores[row : row + 1]), 0)
                if request.diversity:
                    top = mmr(scores[row : row + 1], ids, self.item_rows(), request.diversity, request.k)
                else:
                    top = popularity_penalty(
                        scores[row : row + 1], ids, self.popularity, request.popularity_penalty, request.k
                    )
                by_id = dict(zip(items[row].tolist(), scores[row].tolist()))
                chosen = top[0][top[0] > 0]
                items[row, : chosen.numel()] = chosen
                scores[row, : chosen.numel()] = torch.tensor([by_id[int(x)] for x in chosen], dtype=scores.dtype)
                scores[row, chosen.numel() :] = float("-inf")
        return scores.numpy(), items.numpy()

    def _answer(self, items: np.ndarray, scores: np.ndarray, request: Request, fallback: bool) -> dict[str, Any]:
        return {
            "items": self.raw_ids[np.asarray(items, dtype=np.int64) - 1].tolist(),
            "scores": [float(s) for s in scores],
            "unknown": request.unknown,
            "fallback": fallback,
        }
