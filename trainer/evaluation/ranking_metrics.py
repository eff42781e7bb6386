"""The ranking task's evaluator: per-head AUC, log-loss and normalized entropy, and re-ranking NDCG@10 / HIT@3.

Every example of the split (one candidate with one 0/1 label per head) is scored once; the scores are gathered
from every rank, then:

* per head ``h``: ``auc_<h>`` (torchmetrics' ``binary_auroc``), ``logloss_<h>`` (mean binary cross-entropy of
  the predicted probabilities) and ``ne_<h>`` (normalized entropy: log-loss over the entropy of the split's base
  rate, < 1 means better than predicting the base rate); a head whose labels are all equal gets NaN AUC;
* re-ranking: each user's candidates of the split sorted by the main head's score; ``ndcg@10`` and ``hit@3``
  (a positive among the top 3) over users with at least one positive and one negative label of the main head;
* ``auc`` / ``logloss``: the main (first) head's values, what early stopping follows (``selection_metric``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torchmetrics.functional.classification import binary_auroc

EPS = 1e-7


def auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """ROC AUC of ``scores`` for 0/1 ``labels`` (NaN when only one class is present)."""
    if labels.min() == labels.max():
        return float("nan")
    return float(binary_auroc(torch.from_numpy(scores.astype(np.float64)), torch.from_numpy(labels.astype(np.int64))))


def log_loss(probs: np.ndarray, labels: np.ndarray) -> float:
    """Mean binary cross-entropy of probabilities ``probs``."""
    p = np.clip(probs.astype(np.float64), EPS, 1 - EPS)
    return float(-(labels * np.log(p) + (1 - labels) * np.log(1 - p)).mean())


def normalized_entropy(probs: np.ndarray, labels: np.ndarray) -> float:
    """Log-loss divided by the entropy of the base rate (He et al. 2014); NaN when the base rate is 0 or 1."""
    rate = float(labels.mean())
    if rate <= 0.0 or rate >= 1.0:
        return float("nan")
    return log_loss(probs, labels) / -(rate * np.log(rate) + (1 - rate) * np.log(1 - rate))


def rerank_metrics(users: np.ndarray, scores: np.ndarray, labels: np.ndarray, k_ndcg: int = 10,
                   k_hit: int = 3) -> dict[str, float]:
    """NDCG@k and HIT@k of each user's candidates sorted by ``scores`` (users with mixed labels), vectorised."""
    order = np.lexsort((-scores, users))
    u, rel = users[order], labels[order].astype(np.float64)
    starts = np.flatnonzero(np.r_[True, u[1:] != u[:-1]])
    sizes = np.diff(np.r_[starts, len(u)])
    rank = np.arange(len(u)) - np.repeat(starts, sizes)
    gain = np.where(rank < k_ndcg, rel / np.log2(rank + 2), 0.0)
    dcg = np.add.reduceat(gain, starts)
    positives = np.add.reduceat(rel, starts)
    ideal_rank = np.arange(len(u)) - np.repeat(starts, sizes)  # positives first: rank < positives
    ideal = np.where((ideal_rank < np.repeat(positives, sizes)) & (ideal_rank < k_ndcg),
                     1.0 / np.log2(ideal_rank + 2), 0.0)
    idcg = np.add.reduceat(ideal, starts)
    hit = np.add.reduceat(np.where(rank < k_hit, rel, 0.0), starts) > 0
    mixed = (positives > 0) & (positives < sizes)
    if not mixed.any():
        return {f"ndcg@{k_ndcg}": float("nan"), f"hit@{k_hit}": float("nan"), "rerank_users": 0}
    return {f"ndcg@{k_ndcg}": float((dcg[mixed] / idcg[mixed]).mean()), f"hit@{k_hit}": float(hit[mixed].mean()),
            "rerank_users": int(mixed.sum())}


def ranking_metrics(users: np.ndarray, logits: np.ndarray, labels: np.ndarray, heads: list[str]) -> dict[str, Any]:
    """Every metric of the module docstring from gathered ``logits, labels: (N, H)``."""
    probs = 1.0 / (1.0 + np.exp(-logits.astype(np.float64)))
    metrics: dict[str, Any] = {}
    for i, head in enumerate(heads):
        metrics[f"auc_{head}"] = auc(logits[:, i], labels[:, i])
        metrics[f"logloss_{head}"] = log_loss(probs[:, i], labels[:, i])
        metrics[f"ne_{head}"] = normalized_entropy(probs[:, i], labels[:, i])
    metrics["auc"], metrics["logloss"] = metrics[f"auc_{heads[0]}"], metrics[f"logloss_{heads[0]}"]
    metrics.update(rerank_metrics(users, logits[:, 0], labels[:, 0]))
    metrics["examples"] = int(len(users))
    return metrics


def _gather(array: np.ndarray, env: Any) -> np.ndarray:
    if env.world_size == 1:
        return array
    parts: list[Any] = [None] * env.world_size
    dist.all_gather_object(parts, array)
    return np.concatenate(parts)


@torch.no_grad()
def evaluate_ranker(model: torch.nn.Module, loader: Any, manifest: Any, cfg: Any, env: Any,
                    per_user_path: Path | None = None, progress: bool = False) -> dict[str, Any]:
    """Score every example of ``loader`` (an ``impressions`` / ``ranker`` loader) and compute the metrics."""
    from tqdm.auto import tqdm

    inner = getattr(model, "module", model)
    was_training = model.training
    model.eval()
    users, logits, labels = [], [], []
    split = getattr(loader.dataset.config, "split", "")
    for batch in tqdm(loader, desc=f"evaluate {split}", disable=not (progress and env.is_main), leave=False):
        batch = batch.to(env.device)
        logits.append(inner.logits(batch).float().cpu().numpy())
        labels.append(batch.labels.reshape(batch.size, -1).cpu().numpy())
        users.append(batch.user_idx.cpu().numpy())
    model.train(was_training)
    heads = list(inner.config.heads)
    empty = np.zeros((0, len(heads)), np.float32)
    gathered = [_gather(np.concatenate(parts) if parts else fill, env) for parts, fill in
                ((users, np.zeros(0, np.int64)), (logits, empty), (labels, empty))]
    metrics = ranking_metrics(gathered[0], gathered[1], gathered[2], heads)
    if per_user_path is not None and env.is_main:
        _write_scores(per_user_path, *gathered, heads)
    return metrics


def _write_scores(path: Path, users: np.ndarray, logits: np.ndarray, labels: np.ndarray, heads: list[str]) -> None:
    """Every scored example (user, logit and label per head), for significance tests; written atomically."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    columns = {"user_idx": users}
    for i, head in enumerate(heads):
        columns[f"logit_{head}"], columns[f"label_{head}"] = logits[:, i], labels[:, i]
    tmp = path.with_name(path.name + ".tmp")
    pq.write_table(pa.table(columns), tmp)
    tmp.replace(path)
