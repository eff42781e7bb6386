"""Drift statistics of served traffic, and their comparison with the training distribution (population stability).

`DriftStats` keeps running histograms of what the service sees and answers, cheaply (counts per bin, a few numpy
calls per few hundred requests):

* ``history_length``: request history length (log2 bins: 1, 2-3, 4-7, ...);
* ``unknown_rate``: share of a request's history ids the id map does not know (0, <=5%, <=20%, <=50%, more);
* ``request_popularity``: popularity bucket of each known history item; ``recommended_popularity``: of each
  recommended item. Buckets split the catalogue, most popular first, into `POPULARITY_BUCKETS` parts that each
  hold the same share of the *training* interactions, so the training history items spread about evenly;
* ``top_score``: the best score of each model answer, in bins at the deciles of the reference's scores.

A `Profile` is the same histograms for the training distribution: users' histories from the run's dataset
(``items[:valid_end]``, what a request about them would carry) answered by the exported model. It is written as
``drift_profile.json`` into the export folder (and into the ``.mar`` when present), so a server can compare
online. `compare` gives each statistic's population stability index, ``PSI = sum((a - e) * ln(a / e))`` over bin
shares (+`EPSILON`), and flags those above the threshold (0.2 is the usual "significant shift"; 0.1 "watch").

``seqrec drift RUN --requests LOG`` replays a request log (JSON lines of request bodies) through the export and
prints the comparison; it exits 1 when a statistic passes the threshold. In TorchServe the handler emits the
running statistics (and PSI against the profile) as custom metrics every ``interval_s``.

Example:
  seqrec drift outputs/shop/run1 --requests requests.jsonl
  seqrec drift outputs/shop/run1 --profile-only      # write drift_profile.json (then export --archive again)
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

PROFILE_FILE = "drift_profile.json"
POPULARITY_BUCKETS = 10
HISTORY_EDGES = np.array([2, 4, 8, 16, 32, 64, 128, 256, 512, 1024])  # bin = number of edges <= length
UNKNOWN_EDGES = np.array([1e-12, 0.05, 0.2, 0.5])  # bin = number of edges < rate (0 exactly is bin 0)
SCORE_DECILES = np.linspace(0.1, 0.9, 9)
EPSILON = 1e-4
DEFAULT_THRESHOLD = 0.2
FLUSH_REQUESTS = 256  # buffered requests folded into the histograms at once
STATS = ("history_length", "unknown_rate", "request_popularity", "recommended_popularity", "top_score")


def popularity_buckets(popularity: np.ndarray, buckets: int = POPULARITY_BUCKETS) -> np.ndarray:
    """Bucket of each item 1..N (as an array indexed by item index, entry 0 unused): equal training mass each."""
    counts = np.asarray(popularity, dtype=np.float64)
    order = np.argsort(-counts, kind="stable")
    before = np.cumsum(counts[order]) - counts[order]  # interactions of more popular items
    share = before / max(counts.sum(), 1.0)
    bucket = np.empty(len(counts), np.int64)
    bucket[order] = np.minimum((share * buckets).astype(np.int64), buckets - 1)
    return np.r_[0, bucket]


class DriftStats:
    """Running histograms of requests and answers (see the module docstring for the statistics).

    Args:
        item_bucket: (N + 1,) popularity bucket of each item index (`popularity_buckets`).
        index: raw id -> item index (the service's id map), to bucket recommended raw ids.
        score_edges: top-score bin edges (from a `Profile`); None leaves ``top_score`` empty.
    """

    def __init__(self, item_bucket: np.ndarray, index: dict[str, int], score_edges: np.ndarray | None = None) -> None:
        self.item_bucket, self.index = item_bucket, index
        self.score_edges = None if score_edges is None else np.asarray(score_edges, dtype=np.float64)
        buckets = int(item_bucket.max()) + 1 if len(item_bucket) else 1
        sizes = {"history_length": len(HISTORY_EDGES) + 1, "unknown_rate": len(UNKNOWN_EDGES) + 1,
                 "request_popularity": buckets, "recommended_popularity": buckets,
                 "top_score": 0 if score_edges is None else len(score_edges) + 1}
        self._counts = {name: np.zeros(size, np.int64) for name, size in sizes.items()}
        self._buffer: dict[str, list] = {key: [] for key in ("known", "unknown", "history", "recommended", "top")}
        self.requests = 0

    @property
    def counts(self) -> dict[str, np.ndarray]:
        """The histograms, up to date (buffered values are folded in first)."""
        self._flush()
        return self._counts

    def update(self, requests: list[Any], answers: list[dict[str, Any]]) -> None:
        """Add one batch: `serving.service.Request` s and their answers (``items`` raw ids, ``scores``).

        Only appends to Python lists (a few microseconds per request); the histograms are updated with numpy
        every `FLUSH_REQUESTS` requests or when read, so a batch of one does not pay numpy's per-call overhead.
        """
        buf = self._buffer
        for request, answer in zip(requests, answers):
            buf["known"].append(len(request.items))
            buf["unknown"].append(len(request.unknown))
            buf["history"].extend(request.items)
            buf["recommended"].extend(answer["items"])
            if answer["scores"] and not answer["fallback"]:
                buf["top"].append(answer["scores"][0])
        self.requests += len(requests)
        if len(buf["known"]) >= FLUSH_REQUESTS:
            self._flush()

    def _flush(self) -> None:
        buf = self._buffer
        if not buf["known"]:
            return
        known, unknown = np.asarray(buf["known"], np.int64), np.asarray(buf["unknown"], np.int64)
        total = known + unknown
        self._add("history_length", np.searchsorted(HISTORY_EDGES, total, side="right"))
        self._add("unknown_rate", np.searchsorted(UNKNOWN_EDGES, unknown / np.maximum(total, 1), side="left"))
        self._add("request_popularity", self.item_bucket[np.asarray(buf["history"], np.int64)])
        recommended = np.fromiter(map(self.index.__getitem__, buf["recommended"]), np.int64, len(buf["recommended"]))
        self._add("recommended_popularity", self.item_bucket[recommended])
        if self.score_edges is not None:
            self._add("top_score", np.searchsorted(self.score_edges, np.asarray(buf["top"]), side="right"))
        self._buffer = {key: [] for key in buf}

    def _add(self, name: str, bins: np.ndarray) -> None:
        counts = self._counts[name]
        if len(bins) and len(counts):
            counts += np.bincount(bins, minlength=len(counts))[: len(counts)]

    def summary(self) -> dict[str, float]:
        """Running means that need no reference: history length (bin midpoints), unknown rate, request count."""
        mids = np.r_[1, (HISTORY_EDGES[:-1] + HISTORY_EDGES[1:] - 1) / 2, HISTORY_EDGES[-1]]
        length = self.counts["history_length"]
        return {"requests": float(self.requests),
                "history_length_mean": float((length * mids).sum() / max(length.sum(), 1)),
                "unknown_share": float(1.0 - self.counts["unknown_rate"][0] / max(self.requests, 1))}


def psi(expected: np.ndarray, actual: np.ndarray) -> float:
    """Population stability index of two histograms over the same bins (nan if either is empty)."""
    e, a = np.asarray(expected, np.float64), np.asarray(actual, np.float64)
    if e.sum() == 0 or a.sum() == 0:
        return float("nan")
    e, a = e / e.sum() + EPSILON, a / a.sum() + EPSILON
    return float(((a - e) * np.log(a / e)).sum())


@dataclasses.dataclass
class Profile:
    """Reference histograms of the training distribution, and the score bin edges derived from it."""

    counts: dict[str, list[int]]
    score_edges: list[float]
    sample_users: int
    dataset: str
    threshold: float = DEFAULT_THRESHOLD

    def write(self, folder: str | Path) -> Path:
        """Write ``drift_profile.json`` into ``folder`` atomically."""
        path = Path(folder) / PROFILE_FILE
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(dataclasses.asdict(self), indent=1, sort_keys=True) + "\n")
        tmp.replace(path)
        return path

    @classmethod
    def read(cls, folder: str | Path) -> Profile | None:
        """The profile in ``folder``, or None when there is none."""
        path = Path(folder) / PROFILE_FILE
        return cls(**json.loads(path.read_text())) if path.is_file() else None

    def stats(self, service: Any) -> DriftStats:
        """Empty running statistics with this profile's bins, for ``service`` (a `serving.service.Recommender`)."""
        return stats_for(service, np.asarray(self.score_edges))


def stats_for(service: Any, score_edges: np.ndarray | None = None) -> DriftStats:
    """Running statistics over ``service``'s id map (popularity buckets from its training popularity)."""
    popularity = np.zeros(len(service.raw_ids))
    popularity[service.popular] = service.popular_scores
    return DriftStats(popularity_buckets(popularity), service.index, score_edges)


def compare(profile: Profile, stats: DriftStats, threshold: float | None = None) -> dict[str, dict[str, Any]]:
    """PSI of every statistic against the profile: ``{name: {"psi", "drift"}}``."""
    limit = profile.threshold if threshold is None else threshold
    out = {}
    for name in STATS:
        value = psi(np.asarray(profile.counts[name]), stats.counts[name])
        out[name] = {"psi": value, "drift": bool(value > limit) if not math.isnan(value) else False}
    return out


def replay(service: Any, bodies: list[Any], stats: DriftStats, batch: int = 256) -> None:
    """Parse and answer request bodies in batches, adding them to ``stats`` (bad bodies are skipped)."""
    from serving.service import RequestError

    parsed = []
    for body in bodies:
        try:
            parsed.append(service.parse(body))
        except RequestError:
            continue
    for start in range(0, len(parsed), batch):
        chunk = parsed[start: start + batch]
        stats.update(chunk, service.recommend(chunk))


class MetricsEmitter:
    """Calls ``emit(name, value)`` for the running statistics at most every ``interval_s`` seconds.

    Emits ``DriftRequests``, ``DriftHistoryLengthMean``, ``DriftUnknownShare`` and, with a profile, one
    ``DriftPSI_<statistic>`` each, over the traffic since the service started.
    """

    def __init__(self, stats: DriftStats, profile: Profile | None, emit: Callable[[str, float], None],
                 interval_s: float = 10.0) -> None:
        self.stats, self.profile, self.emit, self.interval_s = stats, profile, emit, interval_s
        self._last = time.monotonic()

    def maybe_emit(self) -> bool:
        """Emit if the interval has passed; True if it did."""
        now = time.monotonic()
        if now - self._last < self.interval_s:
            return False
        self._last = now
        summary = self.stats.summary()
        for key, name in (("requests", "DriftRequests"), ("history_length_mean", "DriftHistoryLengthMean"),
                          ("unknown_share", "DriftUnknownShare")):
            self.emit(name, summary[key])
        if self.profile is not None:
            for stat, result in compare(self.profile, self.stats).items():
                if not math.isnan(result["psi"]):
                    self.emit(f"DriftPSI_{stat}", result["psi"])
        return True


def attach(service: Any, folder: str | Path, emit: Callable[[str, float], None],
           interval_s: float = 10.0) -> MetricsEmitter:
    """Give ``service`` running drift statistics (with the profile in ``folder``, if any) and an emitter."""
    profile = Profile.read(folder)
    service.drift = profile.stats(service) if profile is not None else stats_for(service)
    return MetricsEmitter(service.drift, profile, emit, interval_s)


def torchserve_emit(context: Any) -> Callable[[str, float], None]:
    """``emit(name, value)`` as a TorchServe custom gauge metric of the handler's context."""
    from ts.metrics.metric_type_enum import MetricTypes

    def emit(name: str, value: float) -> None:
        metrics = getattr(context, "metrics", None)  # absent on contexts made outside a server
        if metrics is not None:
            metrics.add_metric(name, value, "count", metric_type=MetricTypes.GAUGE)

    return emit


def format_report(report: dict[str, dict[str, Any]], threshold: float, requests: int) -> str:
    """The comparison as lines of text, ending with the verdict."""
    lines = [f"{'statistic':<24} {'PSI':>8}  status   ({requests} requests, threshold {threshold})"]
    for name, result in report.items():
        status = "DRIFT" if result["drift"] else ("n/a" if math.isnan(result["psi"]) else "ok")
        lines.append(f"{name:<24} {result['psi']:>8.4f}  {status}")
    fired = [n for n, r in report.items() if r["drift"]]
    lines.append(f"drift: {', '.join(fired)} passed PSI {threshold}" if fired else "no drift")
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``seqrec drift``."""
    parser.add_argument("run", type=Path, help="run folder (its export/ subfolder is used) or an export folder")
    parser.add_argument("--requests", type=Path, help="request log: one JSON request body per line")
    parser.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD,
                        help=f"PSI above which a statistic counts as drifted (default {DEFAULT_THRESHOLD})")
    parser.add_argument("--sample-users", type=int, default=5000,
                        help="users of the run's dataset in a new reference profile (default 5000)")
    parser.add_argument("--profile-only", action="store_true",
                        help="only write the reference profile into the export folder (then rebuild the archive)")


def run(args: argparse.Namespace) -> int:
    """``seqrec drift``: 0 = no drift, 1 = drift, 2 = bad input."""
    from serving.drift_cli import run_drift

    return run_drift(args)
