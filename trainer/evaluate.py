"""Full-ranking evaluation of a trained run: ``seqrec evaluate RUN [--split test]``.

Every user is evaluated (no sampling cap). All item embeddings are computed once (each rank looks up a slice of
the catalogue through the sharded tables, then the slices are all-gathered), users are scored in batches with
matmul + top-k over item chunks, items the user has already interacted with are filtered (configurable), and the
per-user metrics are reduced across ranks at the end. ``eval.sampled_negatives=100`` switches to the SASRec
paper's protocol (target ranked among 100 sampled unseen items), labelled as such in the output.
"""

from __future__ import annotations

import functools
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
import torch.distributed as dist
from torch import nn

from trainer.config import EvalConfig
from trainer.data.schema import SEQUENCES, Manifest
from trainer.distributed import DistEnv
from trainer.evaluation.metrics import MetricAccumulator
from trainer.evaluation.ranking import full_ranking, sample_negatives, sampled_ranks

log = logging.getLogger("seqrec.evaluate")


class SeenIndex:
    """Every user's full interaction history before the evaluated targets, for seen-item filtering.

    The loader truncates histories to ``max_len``; filtering must use the whole history (as the reference
    protocols do), so it is read here once: ``(U + 1,)`` offsets and the item ids, 4 bytes per interaction.
    """

    def __init__(self, folder: str | Path, split: str) -> None:
        table = pq.read_table(
            Path(folder) / SEQUENCES, columns=["user_idx", "items", "train_end", "valid_end"]
        )
        items = table.column("items").combine_chunks()
        offsets = items.offsets.to_numpy().astype(np.int64)
        flat = items.values.to_numpy().astype(np.int64)
        end = table.column("train_end" if split == "valid" else "valid_end").to_numpy().astype(np.int64)
        keep = np.arange(len(flat)) < np.repeat(offsets[:-1] + end, np.diff(offsets))
        lengths = np.minimum(end, np.diff(offsets))
        self.values = torch.from_numpy(flat[keep])
        self.offsets = torch.from_numpy(np.concatenate([[0], np.cumsum(lengths)]))
        self.row_of_user = torch.from_numpy(table.column("user_idx").to_numpy().astype(np.int64))

    @staticmethod
    def cached(folder: str | Path, split: str) -> SeenIndex:
        """The index of ``folder``/``split``, read once per process (training evaluates every few epochs)."""
        path = Path(folder).resolve() / SEQUENCES
        return _cached_seen_index(str(path.parent), split, path.stat().st_mtime_ns)

    def gather(self, user_idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Jagged seen ids ``(values, offsets (B + 1,))`` of the given users (vectorised)."""
        rows = torch.searchsorted(self.row_of_user, user_idx.cpu())
        starts, ends = self.offsets[rows], self.offsets[rows + 1]
        lengths = ends - starts
        out_offsets = torch.cat([torch.zeros(1, dtype=torch.int64), lengths.cumsum(0)])
        within = torch.arange(int(out_offsets[-1])) - torch.repeat_interleave(out_offsets[:-1], lengths)
        index = torch.repeat_interleave(starts, lengths) + within
        return self.values[index], out_offsets


@functools.lru_cache(maxsize=4)
def _cached_seen_index(folder: str, split: str, mtime_ns: int) -> SeenIndex:
    """Keyed on the file's mtime too, so a re-prepared dataset is read again."""
    return SeenIndex(folder, split)


def unwrap(model: nn.Module) -> nn.Module:
    """The model itself, whether plain or inside DistributedModelParallel."""
    return getattr(model, "module", model)


@torch.no_grad()
def item_table(model: nn.Module, num_items: int, env: DistEnv) -> torch.Tensor:
    """All item embeddings ``(N + 1, D)`` (row 0 = padding), each rank looking up one slice, then all-gathered."""
    bounds = np.linspace(1, num_items + 1, env.world_size + 1).astype(np.int64)
    ids = torch.arange(int(bounds[env.rank]), int(bounds[env.rank + 1]), dtype=torch.int64, device=env.device)
    local = unwrap(model).item_embeddings(ids).float()
    if env.world_size == 1:
        parts = [local]
    else:
        width = int(np.diff(bounds).max())
        padded = torch.zeros(width, local.shape[1], device=env.device)
        padded[: local.shape[0]] = local
        gathered = [torch.empty_like(padded) for _ in range(env.world_size)]
        dist.all_gather(gathered, padded)
        parts = [g[: int(bounds[r + 1] - bounds[r])] for r, g in enumerate(gathered)]
    return torch.cat([torch.zeros(1, local.shape[1], device=env.device), *parts])


@torch.no_grad()
def evaluate_model(
    model: nn.Module,
    loader: Any,
    manifest: Manifest,
    cfg: EvalConfig,
    env: DistEnv,
    per_user_path: Path | None = None,
    progress: bool = False,
) -> dict[str, float]:
    """Metrics of ``model`` over every example of ``loader`` (a kind="last" loader), reduced across ranks."""
    split = loader.dataset.config.split
    was_training = model.training
    model.eval()
    inner = unwrap(model)
    items = item_table(model, manifest.num_items, env)
    seen_index = SeenIndex.cached(loader.dataset.folder, split) if cfg.filter_seen or cfg.sampled_negatives else None
    sampled = cfg.sampled_negatives > 0
    acc = MetricAccumulator(
        ks=cfg.ks,
        metrics=("ndcg", "hr", "recall", "mrr", "map")
        if sampled
        else ("ndcg", "hr", "recall", "mrr", "map", "coverage"),
        num_items=manifest.num_items,
        keep_per_user=per_user_path is not None,
    )
    generator = torch.Generator().manual_seed(1234 + env.rank)
    users: list[torch.Tensor] = []
    from tqdm.auto import tqdm

    for batch in tqdm(loader, desc=f"evaluate {split}", disable=not (progress and env.is_main), leave=False):
        batch = batch.to(env.device)
        queries = inner.encode(batch).float()
        targets = batch.sparse["target"]
        seen = seen_index.gather(batch.user_idx) if seen_index is not None else None
        if sampled:
            first = targets.offsets()[:-1]
            target = targets.values()[first]
            negatives = sample_negatives(manifest.num_items, target, seen, cfg.sampled_negatives, generator)
            acc.update(sampled_ranks(queries, items, target, negatives))
        else:
            mask = seen if cfg.filter_seen else None
            jagged = (targets.values(), targets.offsets())
            result = full_ranking(queries, items, max(cfg.ks), jagged, mask, cfg.item_chunk)
            acc.update(result.ranks.rank, targets.offsets(), topk_ids=result.ids)
        users.append(batch.user_idx.cpu())
    if per_user_path is not None:
        _write_per_user(
            per_user_path, env, torch.cat(users) if users else torch.empty(0, dtype=torch.int64), acc
        )
    acc.all_reduce()
    model.train(was_training)
    metrics = acc.compute()
    metrics["protocol"] = f"sampled-{cfg.sampled_negatives}" if sampled else "full"  # type: ignore[assignment]
    return metrics


def _write_per_user(path: Path, env: DistEnv, users: torch.Tensor, acc: MetricAccumulator) -> None:
    """One Parquet file per rank (``<name>.rank<r>.parquet``): user_idx + every per-user metric."""
    values = acc.per_user()
    columns = {"user_idx": pa.array(users.numpy())}
    columns.update({name: pa.array(v.numpy()) for name, v in values.items()})
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(columns), path.with_suffix(f".rank{env.rank}.parquet"))


# ------------------------------------------------------------------------------------------------- the command
def add_arguments(parser: Any) -> None:
    """``seqrec evaluate`` arguments."""
    parser.add_argument(
        "run",
        help="run folder (outputs/<experiment>/<run_id>) or one of its checkpoints; with --popularity, a dataset folder",
    )
    parser.add_argument(
        "--popularity",
        action="store_true",
        help="evaluate the most-popular baseline on the dataset folder given as RUN (same protocol as models)",
    )
    parser.add_argument(
        "--split", choices=("valid", "test"), default="test", help="which targets (default: test)"
    )
    parser.add_argument(
        "--rerank",
        metavar="RANKER_RUN",
        help="retrieve-then-rank: RUN retrieves --retrieve candidates, this run re-ranks them; reports both stages "
        "alone and the two-stage list (eval_<split>_two_stage.json)",
    )
    parser.add_argument("--retrieve", type=int, default=100, help="candidates handed to --rerank (default 100)")
    parser.add_argument(
        "overrides",
        nargs="*",
        metavar="KEY=VALUE",
        help="config overrides on top of the run's config.yaml, e.g. eval.sampled_negatives=100 eval.filter_seen=false",
    )


def evaluate_popularity(folder: str | Path, split: str, cfg: EvalConfig, batch_size: int = 1024) -> dict[str, Any]:
    """The most-popular baseline under exactly the protocol used for trained models (this process only)."""
    from modules.popularity import Popularity
    from trainer.data.loader import LoaderConfig, build_loader
    from trainer.data.schema import ITEMS, read_manifest

    manifest = read_manifest(folder)
    popularity = pq.read_table(Path(folder) / ITEMS, columns=["popularity"]).column("popularity").to_numpy()
    model = Popularity(torch.from_numpy(np.concatenate([[0], popularity]).astype(np.float32)))
    loader = build_loader(folder, LoaderConfig(batch_size=batch_size, max_len=1, kind="last", split=split, shuffle=False))
    env = DistEnv(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"), backend="none")
    return evaluate_model(model, loader, manifest, cfg, env)


def run(args: Any) -> int:
    """Load the run's best-validation (else newest) checkpoint, any world size; write ``eval_<split>.json``
    (``eval_<split>_sampled<N>.json`` for the sampled protocol)."""
    if getattr(args, "rerank", None):
        from trainer.evaluation import two_stage

        return two_stage.run(args)
    if args.popularity:
        from trainer.config import load_config
        from trainer.errors import ConfigError

        other = [o for o in args.overrides if not o.startswith("eval.")]
        if other:
            raise ConfigError(f"with --popularity only eval.* overrides apply; got {other}")
        metrics = evaluate_popularity(args.run, args.split, load_config(args.overrides).eval)
        print(json.dumps({"baseline": "popularity", "split": args.split, **metrics}, indent=2))
        return 0
    from omegaconf import OmegaConf

    from trainer import checkpoint
    from trainer.config import from_dict
    from trainer.data.loader import LoaderConfig, build_loader
    from trainer.data.schema import read_manifest
    from trainer.distributed import init_distributed, shard_model, shutdown_distributed
    from trainer.errors import ConfigError
    from trainer.model_factory import build_model
    from trainer.tasks import task_of

    ckpt = checkpoint.best_checkpoint(args.run)
    if ckpt is None:
        raise ConfigError(f"{args.run}: no complete checkpoint (expected checkpoints/step_N/meta.json)")
    run_dir = ckpt.parent.parent
    raw = OmegaConf.merge(OmegaConf.load(run_dir / "config.yaml"), OmegaConf.from_dotlist(args.overrides))
    cfg = from_dict(raw)
    env = init_distributed()
    try:
        manifest = read_manifest(cfg.data.path)
        model = shard_model(
            build_model(cfg.model, manifest.num_items, cfg.data.max_len, torch.device("meta"), cfg.data.path),
            env, cfg.optim,
        )
        checkpoint.load(ckpt, model, None, expect={"model": cfg.model.name, "num_items": manifest.num_items})
        task = task_of(cfg.model)
        loader_cfg = LoaderConfig(
            batch_size=cfg.data.eval_batch_size,
            max_len=cfg.data.max_len,
            kind=task.eval_kind,
            split=args.split,
            shuffle=False,
        )
        loader = build_loader(cfg.data.path, loader_cfg, env.rank, env.world_size)
        # the sampled protocol gets its own files: it must not replace the full-ranking results of the split
        name = args.split + (f"_sampled{cfg.eval.sampled_negatives}" if cfg.eval.sampled_negatives else "")
        per_user = run_dir / f"per_user_{name}.parquet" if cfg.eval.per_user else None
        metrics = task.evaluate(model, loader, manifest, cfg.eval, env, per_user, progress=True)
    finally:
        shutdown_distributed()
    if env.is_main:
        out = run_dir / f"eval_{name}.json"
        out.write_text(json.dumps({"checkpoint": str(ckpt), "split": args.split, **metrics}, indent=2) + "\n")
        print(json.dumps(metrics, indent=2))
        print(f"metrics written to {out}")
    return 0
