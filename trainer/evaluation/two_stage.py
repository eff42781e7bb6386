"""Retrieve-then-rank evaluation: the first stage's top-K candidates re-ranked by a second model, against each
stage alone (``seqrec evaluate RETRIEVER_RUN --rerank RANKER_RUN [--retrieve 100]``).

Both models run as their exported fp32 `serving.inference.Retriever` (the modules served), so what is measured is
what is served; each truncates histories to its own ``max_len``. Protocol: the full-ranking one of ``seqrec
evaluate``'s default: every user of the split, all seen items removed before ranking (a repeated target is a
miss), first target of each user. Reported, per list:

* ``retrieval``: the first stage alone over the catalogue (NDCG@10, Recall@10, Recall@K = the candidates' hit rate);
* ``ranker``: the second stage alone over the catalogue (the single-stage full-ranking model);
* ``two_stage``: the second stage's order of the first stage's K candidates (a target outside them is a miss).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch

from trainer.evaluate import SeenIndex

STAGES = ("retrieval", "ranker", "two_stage")


def _ranks(scores: torch.Tensor, target: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """0-based rank of ``target`` column per row (``inf`` where ``valid`` is False or its score is -inf)."""
    own = scores.gather(1, target[:, None])
    rank = (scores > own).sum(1).to(torch.float64)
    return torch.where(valid & torch.isfinite(own[:, 0]), rank, torch.full_like(rank, math.inf))


def _summary(ranks: torch.Tensor, ks: tuple[int, ...]) -> dict[str, float]:
    out = {"users": int(ranks.numel())}
    gains = torch.where(ranks < 10, 1.0 / torch.log2(ranks + 2.0), torch.zeros_like(ranks))
    out["ndcg@10"] = float(gains.mean())
    for k in ks:
        out[f"recall@{k}"] = float((ranks < k).double().mean())
    return out


@torch.inference_mode()
def evaluate_two_stage(
    retriever: Any, ranker: Any, folder: str | Path, split: str, retrieve: int = 100, batch_size: int = 256
) -> dict[str, dict[str, float]]:
    """Metrics of both stages alone and of retrieve-then-rank on ``split`` of the dataset ``folder``."""
    from trainer.data.loader import LoaderConfig, build_loader

    max_len = max(retriever.max_len, ranker.max_len)
    loader = build_loader(folder, LoaderConfig(kind="last", split=split, batch_size=batch_size, max_len=max_len,
                                               shuffle=False))
    seen_index = SeenIndex.cached(folder, split)
    one = torch.ones(1, dtype=torch.int64)
    catalogues = [module.encode_and_catalogue(one, one, one)[1] for module in (retriever, ranker)]
    ranks: dict[str, list[torch.Tensor]] = {stage: [] for stage in STAGES}
    for batch in loader:
        history = batch.sparse["history"]
        targets = batch.sparse["target"]
        target = targets.values()[targets.offsets()[:-1]] - 1  # column of the first target
        times = batch.timestamps if batch.timestamps.numel() else torch.zeros_like(history.values())
        seen_values, seen_offsets = seen_index.gather(batch.user_idx)
        rows = torch.repeat_interleave(torch.arange(batch.size), seen_offsets.diff())
        fresh = torch.ones(batch.size, dtype=torch.bool)
        fresh[rows[seen_values - 1 == target[rows]]] = False  # a repeated target is a miss
        scores = []
        for module, catalogue in zip((retriever, ranker), catalogues):
            query = module.encode_and_catalogue(history.values(), history.lengths(), times)[0]
            s = query @ catalogue.T
            s[rows, seen_values - 1] = -math.inf
            scores.append(s)
        ranks["retrieval"].append(_ranks(scores[0], target, fresh))
        ranks["ranker"].append(_ranks(scores[1], target, fresh))
        candidates = torch.topk(scores[0], min(retrieve, scores[0].shape[1]), dim=1).indices
        in_list = (candidates == target[:, None]).any(1)
        reranked = scores[1].gather(1, candidates)
        own = torch.where(in_list, scores[1].gather(1, target[:, None])[:, 0], torch.full_like(target, 0.0).float())
        two = (reranked > own[:, None]).sum(1).to(torch.float64)
        ranks["two_stage"].append(torch.where(in_list & fresh, two, torch.full_like(two, math.inf)))
    ks = (10, retrieve)
    return {stage: _summary(torch.cat(ranks[stage]), ks) for stage in STAGES}


def run(args: Any) -> int:
    """``seqrec evaluate RUN --rerank RANKER_RUN``: write ``eval_<split>_two_stage.json`` into RUN and print it."""
    from serving.export import load_trained
    from serving.inference import retriever_of
    from trainer.errors import ConfigError

    first, second = load_trained(args.run), load_trained(args.rerank)
    if first.model.num_items != second.model.num_items or Path(first.cfg.data.path).resolve() != Path(
        second.cfg.data.path
    ).resolve():
        raise ConfigError(f"{args.rerank}: the ranker was trained on {second.cfg.data.path}, the retriever on "
                          f"{first.cfg.data.path}; both stages need the same dataset")
    metrics = evaluate_two_stage(retriever_of(first.model), retriever_of(second.model), first.cfg.data.path,
                                 args.split, args.retrieve)
    result = {"protocol": "full, seen removed", "split": args.split, "retrieve": args.retrieve,
              "retriever": str(first.checkpoint), "ranker": str(second.checkpoint), **metrics}
    out = first.run_dir / f"eval_{args.split}_two_stage.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    print(f"metrics written to {out}")
    return 0
