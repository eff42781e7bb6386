"""The ranking task's export adapter: ``seqrec export RUN`` of a ranker (TransAct, DLRM-v2).

Writes, atomically, a server-agnostic folder::

    model.pt       TorchScript `serving.ranking_inference.RankerScorer` (fp32): (history, actions, timestamps,
                   lengths, candidates, counts, request_time, user_idx) -> logits (C, H)
    id_map.json    raw ids of items 1..N (and their train popularity)
    ranking.json   heads (main first), action names by code, max_len, raw user ids by user index
    metadata.json  model config, source, the scripted-vs-eager check on validation examples, model-only latency

and with ``--archive`` a TorchServe ``.mar`` whose handler is `serving.ranking_handler`.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import torch

from serving.export import ExportConfig, TrainedRun, write_id_map
from serving.inference import save_compact
from serving.ranking_inference import scorer_of, script_scorer
from serving.ranking_service import RANKING_FILE
from serving.service import METADATA_FILE, MODEL_FILE
from trainer.errors import ConfigError

RANKING_HANDLER = Path(__file__).resolve().parent / "ranking_handler.py"
CHECK_EXAMPLES = 2048


def export_ranker(trained: TrainedRun, config: ExportConfig) -> dict[str, Any]:
    """Script the ranker's own scorer, check it against the eager model, write the folder (module docstring)."""
    from trainer.data.schema import atomic_output_dir, read_manifest

    cfg, model = trained.cfg, trained.model
    output = Path(config.output) if config.output else trained.run_dir / "export"
    if output.exists() and not config.overwrite:
        raise ConfigError(f"{output}: output folder already exists (pass --overwrite to replace it)")
    scripted = script_scorer(scorer_of(model, cfg.data.max_len))
    manifest = read_manifest(cfg.data.path)
    meta: dict[str, Any] = {
        "task": "ranking",
        "signature": "forward(history, actions, timestamps: int64 (T,), lengths: int64 (R,), candidates: int64 (C,),"
        " counts: int64 (R,), request_time: int64 (R,), user_idx: int64 (R,)) -> logits float32 (C, H)",
        "model": dataclasses.asdict(cfg.model),
        "heads": list(cfg.model.heads),
        "num_items": model.num_items,
        "max_len": cfg.data.max_len,
        "source": {"run": str(trained.run_dir), "checkpoint": str(trained.checkpoint), "dataset": cfg.data.path},
        "compression": {"tables": "fp32", "dense": "fp32"},
    }
    if config.evaluate:
        meta["check"] = check_against_eager(model, scripted, cfg)
    meta["latency_ms"] = latency(scripted, model.num_items, cfg.data.max_len)
    users = pq.read_table(Path(cfg.data.path) / "users.parquet", columns=["raw_id"]).column(0).to_pylist()
    ranking = {"heads": list(cfg.model.heads), "actions": list(manifest.actions), "max_len": cfg.data.max_len,
               "users": [str(u) for u in users]}
    with atomic_output_dir(output, overwrite=config.overwrite) as tmp:
        save_compact(scripted, tmp / MODEL_FILE)
        write_id_map(cfg.data.path, tmp, model.num_items)
        (tmp / RANKING_FILE).write_text(json.dumps(ranking) + "\n")
        meta["size"] = {"file_bytes": (tmp / MODEL_FILE).stat().st_size}
        (tmp / METADATA_FILE).write_text(json.dumps(meta, indent=2) + "\n")
        if config.archive:
            from serving.archive import build_archive

            meta["archive"] = str(output / build_archive(
                tmp, tmp, config.batch_size, config.max_batch_delay_ms, handler=RANKING_HANDLER,
                extra_files=(RANKING_FILE,)).name)
            (tmp / METADATA_FILE).write_text(json.dumps(meta, indent=2) + "\n")
    meta["output"] = str(output)
    meta["summary"] = _summary(meta)
    return meta


def _summary(meta: dict[str, Any]) -> str:
    lines = [f"exported ranker {meta['model']['name']} (heads {', '.join(meta['heads'])}) to {meta['output']}",
             f"  model file {meta['size']['file_bytes'] / 2**20:.2f} MiB (fp32 tables and dense layers)",
             "  latency " + ", ".join(f"{k} {v:.2f} ms" for k, v in meta["latency_ms"].items())]
    if "check" in meta:
        lines.append(f"  scripted vs eager on {meta['check']['examples']} validation examples: max |logit diff| "
                     f"{meta['check']['max_abs_logit_diff']:.2e}")
    if "archive" in meta:
        lines.append(f"  TorchServe archive: {meta['archive']}")
    return "\n".join(lines)


@torch.no_grad()
def check_against_eager(model: torch.nn.Module, scripted: Any, cfg: Any) -> dict[str, Any]:
    """Score up to `CHECK_EXAMPLES` validation examples with both; the largest logit difference."""
    from trainer.data.loader import LoaderConfig, build_loader

    loader = build_loader(cfg.data.path, LoaderConfig(batch_size=CHECK_EXAMPLES, max_len=cfg.data.max_len,
                                                      kind="impressions", split="valid", shuffle=False,
                                                      negatives="uniform", heads=tuple(cfg.model.heads)))
    batch = next(iter(loader))
    eager = model.eval().logits(batch)
    history = batch.sparse["history"]
    n = batch.size
    request_time = batch.request_time if batch.request_time.numel() else torch.zeros(n, dtype=torch.int64)
    times = batch.timestamps if batch.timestamps.numel() else torch.zeros_like(history.values())
    actions = batch.actions if batch.actions.numel() else torch.zeros_like(history.values())
    with torch.inference_mode():
        got = scripted(history.values(), actions, times, history.lengths(), batch.sparse["target"].values(),
                       torch.ones(n, dtype=torch.int64), request_time, batch.user_idx)
    return {"split": "valid", "examples": n, "max_abs_logit_diff": float((got - eager).abs().max())}


def latency(scripted: Any, num_items: int, max_len: int, candidates: int = 100, repeats: int = 30
            ) -> dict[str, float]:
    """Model-only milliseconds for one request of ``candidates`` candidates and a ``max_len`` history."""
    g = torch.Generator().manual_seed(0)
    history = torch.randint(1, num_items + 1, (max_len,), generator=g)
    zeros = torch.zeros(max_len, dtype=torch.int64)
    args = (history, zeros, zeros, torch.tensor([max_len]), torch.randint(1, num_items + 1, (candidates,), generator=g),
            torch.tensor([candidates]), torch.zeros(1, dtype=torch.int64), torch.tensor([-1]))
    times = []
    with torch.inference_mode():
        for i in range(repeats + 3):
            started = time.perf_counter()
            scripted(*args)
            if i >= 3:  # the first calls are TorchScript's profiling runs
                times.append((time.perf_counter() - started) * 1000)
    return {f"1x{candidates}_l{max_len}_p50": float(np.percentile(times, 50)),
            f"1x{candidates}_l{max_len}_p99": float(np.percentile(times, 99))}
