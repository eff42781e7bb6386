"""Full-ranking evaluation of a trained run: ``seqrec evaluate RUN [--split test]``.

Every user is evaluated (no sampling cap). All item embeddings are computed once (each rank looks up a slice of
the catalogue through the sharded tables, then the slices are all-gathered), users are scored in batches with
matmul + top-k over item chunks, items the user has already interacted with are filtered (configurable), and the
per-user metrics are reduced across ranks at the end. ``eval.protocol`` names which items leave the ranking:
``seen_removed`` (default: the user's whole history, a repeated target too, so a repeat is a miss, as in S3-Rec's
code and most published tables) or ``none`` (nothing removed: RecBole's full ranking). ``eval.sampled_negatives=100``
switches to the SASRec paper's protocol (target ranked among 100 sampled unseen items). Every results file names
its dataset, split, split policy (leave-one-out or time cut), protocol and ranking.

Examples:
  seqrec evaluate outputs/<experiment>/<run_id> --split test
  seqrec evaluate --popularity data/ml1m --split test
"""

from __future__ import annotations

import dataclasses
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

from trainer.baselines import BASELINES, BaselineConfig, fit
from trainer.config import EvalConfig
from trainer.data.schema import SEQUENCES, Manifest
from trainer.distributed import DistEnv
from trainer.evaluation.accumulate import EvaluationPass
from trainer.evaluation.results import check_writable, results_stem, write_json_atomic

log = logging.getLogger("seqrec.evaluate")
FULL_HISTORY = 1 << 20  # loader max_len that keeps every history item (the item-to-item baselines read all)


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
) -> dict[str, Any]:
    """Metrics of ``model`` over every example of ``loader`` (a kind="last" loader), reduced across ranks."""
    from tqdm.auto import tqdm

    split, folder = loader.dataset.config.split, str(loader.dataset.folder)
    was_training = model.training
    model.eval()
    inner = unwrap(model)
    items = item_table(model, manifest.num_items, env)
    needs_seen = cfg.protocol == "seen_removed" or cfg.sampled_negatives or cfg.beyond_k
    seen_index = SeenIndex.cached(folder, split) if needs_seen else None
    state = EvaluationPass(cfg, manifest, folder, items, seen_index, env.device, per_user_path is not None)
    for batch in tqdm(loader, desc=f"evaluate {split}", disable=not (progress and env.is_main), leave=False):
        batch = batch.to(env.device)
        state.add(batch, inner.encode(batch).float())
    if per_user_path is not None:
        _write_per_user(per_user_path, env, *state.per_user(), Path(folder))
    model.train(was_training)
    return state.finish(split)


def _write_per_user(
    path: Path, env: DistEnv, users: torch.Tensor, values: dict[str, torch.Tensor], folder: Path
) -> None:
    """One Parquet file per rank (``<name>.rank<r>.parquet``): user_idx, the raw user id and every per-user
    metric; written to a temporary name and renamed, so a crash leaves no half-written file."""
    columns = {"user_idx": pa.array(users.numpy()), "user_id": raw_user_ids(folder, users.numpy())}
    columns.update({name: pa.array(v.numpy()) for name, v in values.items()})
    final = path.with_suffix(f".rank{env.rank}.parquet")
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.name}.tmp")
    pq.write_table(pa.table(columns), tmp)
    tmp.replace(final)


def raw_user_ids(folder: str | Path, user_idx: np.ndarray) -> pa.Array:
    """The raw ids (as in the source log) of the given dense user indices, from ``users.parquet``."""
    from trainer.data.schema import USERS

    table = pq.read_table(Path(folder) / USERS, columns=["user_idx", "raw_id"])
    order = np.argsort(table.column("user_idx").to_numpy())
    rows = order[np.searchsorted(table.column("user_idx").to_numpy()[order], user_idx)]
    return table.column("raw_id").combine_chunks().take(pa.array(rows))


# ------------------------------------------------------------------------------------------------- the command
def add_arguments(parser: Any) -> None:
    """``seqrec evaluate`` arguments."""
    parser.add_argument(
        "run",
        help="run folder (outputs/<experiment>/<run_id>) or one of its checkpoints; with --baseline, a dataset folder",
    )
    parser.add_argument(
        "--baseline",
        choices=BASELINES,
        help="evaluate a non-neural baseline fitted on the training part of the dataset folder given as RUN "
        "(same protocol as models); results go to --output",
    )
    parser.add_argument("--popularity", action="store_true", help="same as --baseline popularity")
    parser.add_argument(
        "--param",
        action="append",
        metavar="KEY=VALUE",
        help="baseline hyper-parameter, repeatable: ease_lambda (500), knn_neighbours (100), knn_shrink (10)",
    )
    parser.add_argument(
        "--output",
        help="folder for a baseline's results (default: outputs/baselines/<dataset folder name>/<baseline>)",
    )
    parser.add_argument(
        "--split", choices=("valid", "test"), default="test", help="which targets (default: test)"
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an existing results file computed with other settings (refused otherwise)",
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
        help="config overrides on top of the run's config.yaml, e.g. eval.sampled_negatives=100 eval.protocol=none",
    )


def evaluate_baseline(
    folder: str | Path,
    split: str,
    cfg: EvalConfig,
    name: str = "popularity",
    params: BaselineConfig | None = None,
    per_user_path: Path | None = None,
    batch_size: int = 512,
) -> dict[str, Any]:
    """A baseline fitted on the folder's training part, under exactly the protocol of trained models (one process)."""
    from trainer.data.loader import LoaderConfig, build_loader
    from trainer.data.schema import read_manifest

    manifest = read_manifest(folder)
    model = fit(name, folder, params or BaselineConfig())
    # the item-to-item baselines read the whole history; popularity none of it
    max_len = 1 if name == "popularity" else FULL_HISTORY
    loader = build_loader(
        folder, LoaderConfig(batch_size=batch_size, max_len=max_len, kind="last", split=split, shuffle=False)
    )
    env = DistEnv(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"), backend="none")
    return evaluate_model(model, loader, manifest, cfg, env, per_user_path)


def evaluate_popularity(folder: str | Path, split: str, cfg: EvalConfig) -> dict[str, Any]:
    """The most-popular baseline (`evaluate_baseline` with ``name="popularity"``)."""
    return evaluate_baseline(folder, split, cfg, "popularity")


def _results_target(out_dir: Path, split: str, cfg: EvalConfig, tags: tuple[str, ...]) -> tuple[Path, Path | None]:
    """The results file and the per-user file stem of these settings."""
    name = results_stem(split, cfg, tags)
    return out_dir / f"eval_{name}.json", (out_dir / f"per_user_{name}.parquet" if cfg.per_user else None)


def _settings(cfg: EvalConfig, **extra: Any) -> dict[str, Any]:
    """What the results depend on, recorded in the file so a rerun with other settings is noticed."""
    knobs = {"bias_rerank": cfg.bias_rerank, "bias_strength": cfg.bias_strength, "bias_candidates": cfg.bias_candidates}
    return {**extra, "protocol": cfg.protocol, "sampled_negatives": cfg.sampled_negatives, "ks": sorted(cfg.ks),
            **(knobs if cfg.bias_rerank != "none" else {})}


def _baseline_params(pairs: list[str]) -> BaselineConfig:
    """``--param KEY=VALUE`` pairs into a `BaselineConfig` (unknown keys and bad values name the key)."""
    from trainer.errors import ConfigError

    known = {f.name: f.type for f in dataclasses.fields(BaselineConfig)}
    values: dict[str, Any] = {}
    for pair in pairs or []:
        key, _, value = pair.partition("=")
        if key not in known:
            raise ConfigError(f"--param {key}: unknown; choose from {', '.join(known)}")
        try:
            values[key] = int(value) if known[key] in (int, "int") else float(value)
        except ValueError:
            raise ConfigError(f"--param {key}={value!r}: not a number") from None
    return BaselineConfig(**values)


def _run_baseline(args: Any, name: str) -> int:
    from trainer.config import load_config
    from trainer.errors import ConfigError

    other = [o for o in args.overrides if not o.startswith("eval.")]
    if other:
        raise ConfigError(f"with --baseline only eval.* overrides apply; got {other}")
    cfg = load_config(args.overrides).eval
    folder = Path(args.run)
    out_dir = Path(args.output) if args.output else Path("outputs") / "baselines" / folder.resolve().name / name
    out, per_user = _results_target(out_dir, args.split, cfg, ())
    settings = _settings(cfg, baseline=name, data=str(folder), params=dataclasses.asdict(_baseline_params(args.param)))
    check_writable(out, settings, args.overwrite)
    metrics = evaluate_baseline(folder, args.split, cfg, name, _baseline_params(args.param), per_user)
    write_json_atomic(out, {"baseline": name, "settings": settings, **metrics})
    print(json.dumps({"baseline": name, **metrics}, indent=2))
    print(f"metrics written to {out}")
    return 0


def run(args: Any) -> int:
    """Load the run's best-validation (else newest) checkpoint, any world size; write ``eval_<name>.json`` and
    ``per_user_<name>.rank<r>.parquet``, named by `results_stem` (split, protocol, sampled negatives, checkpoint,
    popularity re-ranking)."""
    if getattr(args, "rerank", None):
        from trainer.evaluation import two_stage

        return two_stage.run(args)
    if args.popularity or args.baseline:
        return _run_baseline(args, args.baseline or "popularity")
    from omegaconf import OmegaConf

    from trainer import checkpoint
    from trainer.config import from_dict
    from trainer.data.loader import LoaderConfig, build_loader
    from trainer.data.schema import read_manifest
    from trainer.distributed import init_distributed, shard_model, shutdown_distributed
    from trainer.errors import ConfigError, require_run_folder
    from trainer.model_factory import build_model
    from trainer.tasks import task_of

    ckpt = checkpoint.best_checkpoint(require_run_folder(args.run))
    if ckpt is None:
        raise ConfigError(f"{args.run}: no complete checkpoint (expected checkpoints/step_N/meta.json)")
    run_dir = ckpt.parent.parent
    raw = OmegaConf.merge(OmegaConf.load(run_dir / "config.yaml"), OmegaConf.from_dotlist(args.overrides))
    cfg = from_dict(raw)
    # a checkpoint other than the one the run reports (best validation, else newest) gets its own files
    tags = () if ckpt == checkpoint.best_checkpoint(run_dir) else (ckpt.name,)
    out, per_user = _results_target(run_dir, args.split, cfg.eval, tags)
    settings = _settings(cfg.eval, checkpoint=ckpt.name)
    check_writable(out, settings, args.overwrite)
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
            heads=tuple(getattr(cfg.model, "heads", ())),  # ranking: the label columns the heads predict
        )
        loader = build_loader(cfg.data.path, loader_cfg, env.rank, env.world_size)
        metrics = task.evaluate(model, loader, manifest, cfg.eval, env, per_user, progress=True)
    finally:
        shutdown_distributed()
    if env.is_main:
        write_json_atomic(out, {"checkpoint": str(ckpt), "settings": settings, **metrics})
        print(json.dumps(metrics, indent=2))
        print(f"metrics written to {out}")
    return 0
