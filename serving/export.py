"""Export a trained run for serving: ``seqrec export RUN [--archive]``.

Loads the run's sharded checkpoint (any world size: DCP reshards into a plain module) into an unsharded model on
CPU, optionally magnitude-prunes it, quantizes the item table to row-wise INT8 (TorchRec/FBGEMM) and the linears
to dynamic INT8 where that is measured to be faster, wraps the model's own query module and its item matrix
(computed once, here) in `serving.inference.Retriever` and saves TorchScript. Which adapter runs is the model's
task's (`trainer.tasks`): every registered retrieval model exports the same way. The artefact folder (written atomically) is server-agnostic::

    model.pt        TorchScript: (history int64 (T,), lengths int64 (B,), k int, exclude_seen bool
                    [, timestamps int64 (T,)]) -> (scores (B, k) float32, item indices (B, k) int64, 1..N)
    id_map.json     {"raw_ids": [raw id of item 1..N], "popularity": [train count of item 1..N]}
    metadata.json   model config, source run/checkpoint, compression choices, NDCG@10 fp32 vs exported on the
                    validation split, artefact and tensor sizes, model-only latency

With ``--archive`` a TorchServe archive ``<name>.mar`` is built next to them (see `serving.archive`).

Examples:
  seqrec export outputs/<experiment>/<run_id> --archive
  seqrec export outputs/<experiment>/<run_id> --no-quantize -o outputs/<experiment>/<run_id>/export_fp32
"""

from __future__ import annotations

import dataclasses
import functools
import io
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import torch
from torch import nn

from serving import quantize
from serving.ann import ANN_KINDS, AnnConfig, build_index, recall_against_exact, write_index
from serving.archive import DEFAULT_BATCH_SIZE, DEFAULT_MAX_BATCH_DELAY_MS
from serving.inference import Retriever, TwoStage, retriever_of, save_compact, script
from serving.service import ID_MAP_FILE, METADATA_FILE, MODEL_FILE
from trainer.errors import ConfigError, require_run_folder

log = logging.getLogger("seqrec.export")
FORMAT_VERSION = 1
DENSE_MODES = ("auto", "int8", "fp32")


@dataclasses.dataclass(kw_only=True)
class ExportConfig:
    """What `export_run` does.

    Args:
        run: run folder (or one of its checkpoints). output: artefact folder (default ``<run>/export``).
        checkpoint: ``step_N`` to export instead of the best-validation (else newest) one. overwrite: replace an existing output folder.
        quantize: INT8 tables (+ linears per ``dense``); False exports fp32.
        dense: linears and positions. ``auto``: dynamic INT8 compute for the fastest timed set of layer
            groups (if >= 1.05x fp32), INT8 storage with fp32 compute for the other groups and the position
            table; ``int8``: dynamic INT8 for all linears (positions INT8-stored); ``fp32``: everything dense
            stays fp32.
        prune_sparsity: fraction of each pruned tensor set to zero (0 = no pruning).
        prune_layers: layer types to prune, among ``linear`` and ``embedding``.
        evaluate: record NDCG@10 (fp32 vs exported) on the validation split.
        archive: also build the TorchServe ``.mar``. batch_size, max_batch_delay_ms: its server-side batching.
    """

    run: Path
    output: Path | None = None
    checkpoint: str | None = None
    overwrite: bool = False
    quantize: bool = True
    dense: str = "auto"
    prune_sparsity: float = 0.0
    prune_layers: tuple[str, ...] = ("linear",)
    evaluate: bool = True
    archive: bool = False
    ann: str = "hnsw"  # ANN index over the item matrix (serving.ann): flat | hnsw | ivf | none
    rerank: Path | None = None  # a second run re-ranking this one's top ``retrieve`` (retrieve-then-rank)
    retrieve: int = 100
    batch_size: int = DEFAULT_BATCH_SIZE
    max_batch_delay_ms: int = DEFAULT_MAX_BATCH_DELAY_MS

    def validate(self) -> None:
        """Raise `ConfigError` naming the option to change."""
        if self.dense not in DENSE_MODES:
            raise ConfigError(f"--dense must be one of {', '.join(DENSE_MODES)}, got {self.dense!r}")
        if not 0.0 <= self.prune_sparsity < 1.0:
            raise ConfigError(f"--prune-sparsity must be in [0, 1), got {self.prune_sparsity}")
        unknown = sorted(set(self.prune_layers) - set(quantize.PRUNE_LAYERS))
        if unknown:
            raise ConfigError(f"--prune-layers: unknown {unknown}; choose among {list(quantize.PRUNE_LAYERS)}")
        if self.retrieve < 1:
            raise ConfigError(f"--retrieve must be >= 1, got {self.retrieve}")
        if self.ann not in (*ANN_KINDS, "none"):
            raise ConfigError(f"--ann must be one of {', '.join((*ANN_KINDS, 'none'))}, got {self.ann!r}")
        if self.batch_size < 1 or self.max_batch_delay_ms < 0:
            raise ConfigError("--batch-size must be >= 1 and --max-batch-delay-ms >= 0")


@dataclasses.dataclass
class TrainedRun:
    """An unsharded trained model in eval mode and where it came from."""

    model: nn.Module
    cfg: Any  # trainer.config.TrainConfig
    checkpoint: Path
    run_dir: Path


def load_trained(run: str | Path, checkpoint: str | None = None) -> TrainedRun:
    """Load a run's checkpoint (written by any world size) into a plain CPU model, without a process group."""
    import torch.distributed.checkpoint as dcp
    from omegaconf import OmegaConf
    from torch.distributed.checkpoint import DefaultLoadPlanner

    from trainer.checkpoint import best_checkpoint, read_meta
    from trainer.config import from_dict
    from trainer.data.schema import read_manifest
    from trainer.model_factory import build_model

    run = Path(run)
    ckpt = best_checkpoint(run / "checkpoints" / checkpoint if checkpoint else run)  # verified, or a ConfigError
    if ckpt is None or not (ckpt / "meta.json").is_file():
        raise ConfigError(f"{run}: no complete checkpoint{f' {checkpoint}' if checkpoint else ''} "
                          "(expected checkpoints/step_N/meta.json)")
    run_dir = ckpt.parent.parent
    if not (run_dir / "config.yaml").is_file():
        raise ConfigError(f"{run_dir}: no config.yaml; not a seqrec run folder")
    cfg = from_dict(OmegaConf.load(run_dir / "config.yaml"))
    manifest = read_manifest(cfg.data.path)
    if read_meta(ckpt).get("num_items", manifest.num_items) != manifest.num_items:
        raise ConfigError(f"{ckpt}: checkpoint and dataset {cfg.data.path} disagree on the number of items")
    model = build_model(cfg.model, manifest.num_items, cfg.data.max_len, torch.device("cpu"), cfg.data.path)
    state = {"model": model.state_dict()}
    try:
        dcp.load(state, checkpoint_id=str(ckpt), planner=DefaultLoadPlanner(allow_partial_load=True))
    except Exception as exc:  # DCP wraps failures; surface the first line
        raise ConfigError(f"{ckpt}: cannot load checkpoint ({str(exc).splitlines()[0]})") from exc
    model.load_state_dict(state["model"])
    return TrainedRun(model.eval(), cfg, ckpt, run_dir)


def build_variant(
    model: nn.Module,
    quantize_tables: bool,
    dense_groups: list[str],
    prune_sparsity: float = 0.0,
    prune_layers: tuple[str, ...] = (),
    int8_storage: bool = False,
) -> tuple[Retriever, float]:
    """A compressed `Retriever` (eager) of a trained retrieval model and the pruned sparsity achieved.

    ``dense_groups`` get dynamic INT8 linears; with ``int8_storage`` the other linears and the encoder's embedding
    tables (positions) are stored INT8 and computed in fp32; ``quantize_tables``: the item rows INT8.
    """
    module = retriever_of(model)
    sparsity = 0.0
    if prune_sparsity > 0.0:
        tables = [module.table.values[1:]] + ([] if module.tied else [module.catalogue.values])
        sparsity = quantize.prune(module.query, tables, prune_sparsity, prune_layers)
    quantize.quantize_dense(module.query, dense_groups)
    if int8_storage:
        quantize.store_int8(module.query, quantize.stored_groups(dense_groups))
        quantize.store_embeddings_int8(module.query)
    if quantize_tables:
        module.table = quantize.Int8Rows(module.table())
        if not module.tied:
            module.catalogue = quantize.Int8Rows(module.catalogue())
    return module.eval(), sparsity


class _EvalAdapter(nn.Module):
    """The model contract `trainer.evaluate.evaluate_model` calls (`encode`, `item_embeddings`), served by a
    `Retriever`, so exported variants are measured with exactly the protocol of ``seqrec evaluate``."""

    def __init__(self, module: Retriever) -> None:
        super().__init__()
        self.recommender = module

    def encode(self, batch) -> torch.Tensor:
        history = batch.sparse["history"]
        times = batch.timestamps if batch.timestamps.numel() else torch.zeros_like(history.values())
        return self.recommender.encode_and_catalogue(history.values(), history.lengths(), times)[0]

    def item_embeddings(self, item_ids: torch.Tensor) -> torch.Tensor:
        one = torch.ones(1, dtype=torch.int64)
        return self.recommender.encode_and_catalogue(one, one, one)[1][item_ids - 1]


def evaluate_variant(module: Retriever, cfg: Any, split: str = "valid") -> dict[str, float]:
    """Full-ranking metrics of ``module`` on ``split`` (world size 1, CPU)."""
    from trainer.data.loader import LoaderConfig, build_loader
    from trainer.data.schema import read_manifest
    from trainer.distributed import DistEnv
    from trainer.evaluate import evaluate_model

    env = DistEnv(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"), backend="gloo")
    loader_cfg = LoaderConfig(
        kind="last", split=split, batch_size=cfg.data.eval_batch_size, max_len=cfg.data.max_len, shuffle=False,
        timestamps=cfg.model.loader_needs().timestamps,
    )
    loader = build_loader(cfg.data.path, loader_cfg)
    with torch.inference_mode():
        return evaluate_model(_EvalAdapter(module), loader, read_manifest(cfg.data.path), cfg.eval, env)


def paired_latency(
    models: dict[str, Any], num_items: int, batch: int, length: int, repeats: int = 30, k: int = 10, seed: int = 0
) -> dict[str, dict[str, float]]:
    """p50/p99 (ms) per (scripted) `Retriever` on the same random histories, calls interleaved with one
    intra-op thread (`serving.quantize.interleaved_ms`)."""
    generator = torch.Generator().manual_seed(seed)
    history = torch.randint(1, num_items + 1, (batch * length,), generator=generator)
    lengths = torch.full((batch,), length, dtype=torch.int64)
    calls = {name: functools.partial(model, history, lengths, k, True) for name, model in models.items()}
    times = quantize.interleaved_ms(calls, repeats, warmup=3)  # the first calls run TorchScript's profiling
    return {name: {"p50_ms": float(np.percentile(t, 50)), "p99_ms": float(np.percentile(t, 99))}
            for name, t in times.items()}


def write_id_map(dataset: str | Path, out: Path, num_items: int) -> None:
    """``id_map.json`` from the dataset's ``items.parquet`` (row i is item i + 1), checked against N."""
    path = Path(dataset) / "items.parquet"
    table = pq.read_table(path, columns=["item_idx", "raw_id", "popularity"])
    idx = table.column("item_idx").to_numpy()
    if len(idx) != num_items or not np.array_equal(idx, np.arange(1, num_items + 1)):
        raise ConfigError(f"{path}: item_idx must be exactly 1..{num_items} in order")
    id_map = {"raw_ids": table.column("raw_id").to_pylist(), "popularity": table.column("popularity").to_pylist()}
    (out / ID_MAP_FILE).write_text(json.dumps(id_map) + "\n")


def _dense_choice(config: ExportConfig, module: Retriever, max_len: int) -> tuple[list[str], dict]:
    """Which linear groups go INT8, and the timings behind an ``auto`` choice (timed on the query module)."""
    if not config.quantize or config.dense == "fp32":
        return [], {}
    if config.dense == "int8":
        return list(quantize.DENSE_GROUPS), {}
    batch, dim = 32, module.table().shape[1]
    generator = torch.Generator().manual_seed(0)
    embedded = torch.randn(batch * max_len, dim, generator=generator)
    lengths = torch.full((batch,), max_len, dtype=torch.int64)
    times = torch.zeros(batch * max_len, dtype=torch.int64)
    timings = quantize.time_dense_groups(module.query, lambda query: query(embedded, lengths, times))
    return quantize.choose_dense_groups(timings), timings


def export_run(config: ExportConfig) -> dict[str, Any]:
    """Export ``config.run`` with its model's task's adapter; returns the metadata written (also printed)."""
    from trainer.tasks import task_of

    config.validate()
    trained = load_trained(config.run, config.checkpoint)
    return task_of(trained.cfg.model).export(trained, config)


def export_retrieval(trained: TrainedRun, config: ExportConfig) -> dict[str, Any]:
    """The retrieval task's export adapter: `Retriever` TorchScript + id map + metadata (+ ``.mar``)."""
    cfg, num_items = trained.cfg, trained.model.num_items
    output = Path(config.output) if config.output else trained.run_dir / "export"
    if output.exists() and not config.overwrite:
        raise ConfigError(f"{output}: output folder already exists (pass --overwrite to replace it)")
    fp32, variant, compression = _compressed(trained.model, config, cfg.data.max_len)
    served, served_fp32, two_stage = variant, fp32, None
    if config.rerank is not None:
        ranker = _ranker_of(config.rerank, trained)
        ranker_fp32, ranker_variant, ranker_compression = _compressed(ranker.model, config, ranker.cfg.data.max_len)
        served = TwoStage(variant, ranker_variant, config.retrieve).eval()
        served_fp32 = TwoStage(fp32, ranker_fp32, config.retrieve).eval()
        two_stage = {"ranker": {"run": str(ranker.run_dir), "checkpoint": str(ranker.checkpoint),
                                "model": dataclasses.asdict(ranker.cfg.model), "compression": ranker_compression},
                     "retrieve": config.retrieve}
    scripted, fp32_scripted = script(served), script(served_fp32)
    meta: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "signature": "forward(history: int64 (T,), lengths: int64 (B,), k: int, exclude_seen: bool, "
        "timestamps: int64 (T,) | None = None) -> (scores float32 (B, k), items int64 (B, k) in 1..N)",
        "model": dataclasses.asdict(cfg.model),
        "num_items": num_items,
        "max_len": cfg.data.max_len,
        "source": {"run": str(trained.run_dir), "checkpoint": str(trained.checkpoint), "dataset": cfg.data.path},
        "compression": compression,
    }
    if two_stage is not None:
        meta["two_stage"] = two_stage
    from trainer.data.schema import atomic_output_dir

    with atomic_output_dir(output, overwrite=config.overwrite) as tmp:
        save_compact(scripted, tmp / MODEL_FILE)
        fp32_file = io.BytesIO()  # saved the same way, only for the size comparison
        save_compact(fp32_scripted, fp32_file)
        meta["size"] = _sizes((tmp / MODEL_FILE).stat().st_size, fp32_file.getbuffer().nbytes, served, served_fp32,
                              variant, fp32)
        pair = {"fp32": fp32_scripted, "exported": scripted}
        timed = {b: paired_latency(pair, num_items, b, cfg.data.max_len, repeats=60 if b == 1 else 20) for b in (1, 32)}
        meta["latency"] = {name: {f"b{b}_l{cfg.data.max_len}": timed[b][name] for b in timed} for name in pair}
        meta["latency_threads"] = quantize.SERVING_THREADS  # as a serving worker runs it
        if two_stage is not None:
            stages = {"retrieval": script(variant), "two_stage": scripted}
            meta["stage_latency"] = {name: {f"b1_l{cfg.data.max_len}": t} for name, t in paired_latency(
                stages, num_items, 1, cfg.data.max_len, repeats=60).items()}
        if config.evaluate:
            meta["metrics"] = (_metrics(fp32, variant, cfg) if two_stage is None else
                               _two_stage_metrics(served_fp32, served, cfg))
        if config.ann != "none":
            meta["ann"] = _ann_index(fp32, cfg, tmp, AnnConfig(kind=config.ann))
        if hasattr(trained.model, "tower_modules"):  # two towers: each tower on its own, TorchScript + ONNX
            meta["towers"] = _towers(trained.model, cfg, tmp)
        write_id_map(cfg.data.path, tmp, num_items)
        (tmp / METADATA_FILE).write_text(json.dumps(meta, indent=2) + "\n")
        if config.archive:
            from serving.archive import build_archive

            meta["archive"] = str(output / build_archive(
                tmp, tmp, config.batch_size, config.max_batch_delay_ms
            ).name)
            (tmp / METADATA_FILE).write_text(json.dumps(meta, indent=2) + "\n")
    meta["output"] = str(output)
    return meta


def _compressed(model: nn.Module, config: ExportConfig, max_len: int) -> tuple[Retriever, Retriever, dict]:
    """``(fp32, exported, compression record)`` `Retriever`s of one trained model under ``config``."""
    fp32, _ = build_variant(model, False, [])
    groups, timings = _dense_choice(config, fp32, max_len)
    int8_storage = config.quantize and config.dense != "fp32"
    variant, sparsity = build_variant(
        model, config.quantize, groups, config.prune_sparsity, config.prune_layers, int8_storage
    )
    compression = {
        "tables": "int8 rowwise" if config.quantize else "fp32",
        "dense_int8_groups": groups,
        "dense_int8_stored_groups": quantize.stored_groups(groups) if int8_storage else [],
        "positions": "int8 stored, fp32 compute" if int8_storage else "fp32",  # the encoder's embedding tables
        "dense_timings_ms": timings,
        "prune_sparsity": config.prune_sparsity,
        "prune_layers": list(config.prune_layers) if config.prune_sparsity else [],
        "sparsity_achieved": sparsity,
    }
    return fp32, variant, compression


def _ranker_of(run: Path, first: TrainedRun) -> TrainedRun:
    """The second stage's trained run; it must rank the first stage's catalogue (same dataset)."""
    ranker = load_trained(run)
    if Path(ranker.cfg.data.path).resolve() != Path(first.cfg.data.path).resolve():
        raise ConfigError(f"--rerank {run}: trained on {ranker.cfg.data.path}, the retriever on "
                          f"{first.cfg.data.path}; both stages need the same dataset")
    return ranker


def _two_stage_metrics(fp32: TwoStage, exported: TwoStage, cfg: Any) -> dict[str, Any]:
    """Validation NDCG@10 of the two-stage list, fp32 vs exported, and each stage alone (fp32)."""
    from trainer.evaluation.two_stage import evaluate_two_stage

    base = evaluate_two_stage(fp32.retriever, fp32.ranker, cfg.data.path, "valid", fp32.retrieve)
    got = evaluate_two_stage(exported.retriever, exported.ranker, cfg.data.path, "valid", exported.retrieve)
    before, after = base["two_stage"]["ndcg@10"], got["two_stage"]["ndcg@10"]
    return {"split": "valid", "fp32_ndcg@10": before, "exported_ndcg@10": after,
            "relative_change": (after - before) / before if before else 0.0, "fp32_stages": base}


def _sizes(file_bytes: int, fp32_file_bytes: int, served: nn.Module, served_fp32: nn.Module, variant: Retriever,
           fp32: Retriever) -> dict[str, float]:
    tensor_bytes, fp32_tensor_bytes = quantize.tensor_bytes(served), quantize.tensor_bytes(served_fp32)
    return {
        "file_bytes": file_bytes,
        "fp32_file_bytes": fp32_file_bytes,
        "file_ratio": fp32_file_bytes / file_bytes,
        "tensor_bytes": tensor_bytes,
        "fp32_tensor_bytes": fp32_tensor_bytes,
        "tensor_ratio": fp32_tensor_bytes / tensor_bytes,
        "table_ratio": _rows_bytes(fp32) / _rows_bytes(variant),
    }


def _ann_index(module: Retriever, cfg: Any, folder: Path, ann: AnnConfig, max_queries: int = 2000) -> dict:
    """Build and save the ANN index over the fp32 item matrix; its recall against exact search on the query
    vectors of up to ``max_queries`` validation users."""
    from trainer.data.loader import LoaderConfig, build_loader

    with torch.inference_mode():
        one = torch.ones(1, dtype=torch.int64)
        items = module.encode_and_catalogue(one, one, one)[1].numpy()
        loader_cfg = LoaderConfig(kind="last", split="valid", batch_size=256, max_len=cfg.data.max_len, shuffle=False)
        adapter, queries = _EvalAdapter(module), []
        for batch in build_loader(cfg.data.path, loader_cfg):
            queries.append(adapter.encode(batch))
            if sum(len(q) for q in queries) >= max_queries:
                break
    index = build_index(items, ann)
    quality = recall_against_exact(index, items, torch.cat(queries)[:max_queries].numpy(), ann.k)
    return {"kind": ann.kind, "file": write_index(index, folder).name, "items": len(items), **quality}


def _towers(model: nn.Module, cfg: Any, folder: Path) -> dict[str, Any]:
    """Both towers of a two-tower model as TorchScript and ONNX, checked on a validation batch's histories."""
    from serving.towers import export_towers
    from trainer.data.loader import LoaderConfig, build_loader

    loader_cfg = LoaderConfig(kind="last", split="valid", batch_size=64, max_len=cfg.data.max_len, shuffle=False)
    from modules.sequence import padded_values

    history = next(iter(build_loader(cfg.data.path, loader_cfg))).sparse["history"]
    return export_towers(model, folder, padded_values(history.values(), history.lengths()), history.lengths())


def _rows_bytes(module: Retriever) -> int:
    """Bytes of the item rows (table and, untied, catalogue)."""
    return quantize.tensor_bytes(module.table) + (0 if module.tied else quantize.tensor_bytes(module.catalogue))


def _metrics(fp32: Retriever, variant: Retriever, cfg: Any) -> dict[str, float]:
    base = evaluate_variant(fp32, cfg)["ndcg@10"]
    exported = evaluate_variant(variant, cfg)["ndcg@10"]
    return {
        "split": "valid",
        "fp32_ndcg@10": base,
        "exported_ndcg@10": exported,
        "relative_change": (exported - base) / base if base else 0.0,
    }


def _summary(meta: dict[str, Any]) -> str:
    size, comp = meta["size"], meta["compression"]
    lines = [
        f"exported to {meta['output']}",
        f"  tables {comp['tables']}, INT8 linear groups {comp['dense_int8_groups'] or 'none'}, INT8-stored "
        f"(fp32 compute) {comp['dense_int8_stored_groups'] or 'none'}, positions {comp['positions']}"
        + (f", pruned {comp['sparsity_achieved']:.1%} of {comp['prune_layers']}" if comp["prune_layers"] else ""),
        f"  size: model file {size['file_bytes'] / 2**20:.2f} MiB ({size['file_ratio']:.2f}x smaller than fp32), "
        f"tensors {size['tensor_bytes'] / 2**20:.2f} MiB ({size['tensor_ratio']:.2f}x; "
        f"item table {size['table_ratio']:.2f}x)",
    ]
    for key in meta["latency"]["fp32"]:
        a, b = meta["latency"]["fp32"][key], meta["latency"]["exported"][key]
        lines.append(f"  latency {key} ({meta['latency_threads']} thread): fp32 p50 {a['p50_ms']:.2f} ms, "
                     f"exported p50 {b['p50_ms']:.2f} ms ({a['p50_ms'] / b['p50_ms']:.2f}x)")
    if "metrics" in meta:
        m = meta["metrics"]
        lines.append(f"  NDCG@10 (valid): fp32 {m['fp32_ndcg@10']:.4f}, exported {m['exported_ndcg@10']:.4f} "
                     f"({m['relative_change']:+.2%})")
    if "ann" in meta:
        a = meta["ann"]
        recall = next(v for key, v in a.items() if key.startswith("recall@"))
        lines.append(f"  ANN index ({a['kind']}, {a['file']}): recall@{min(100, a['items'])} vs exact {recall:.4f}, "
                     f"{a['ann_ms_per_query']:.3f} vs {a['exact_ms_per_query']:.3f} ms per query")
    if "archive" in meta:
        lines.append(f"  archive: {meta['output']}/{Path(meta['archive']).name}")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------- the command
def add_arguments(parser: Any) -> None:
    """``seqrec export`` arguments."""
    parser.add_argument("run", type=Path, help="run folder (outputs/<experiment>/<run_id>) or one of its checkpoints")
    parser.add_argument("--output", "-o", type=Path, help="artefact folder (default: RUN/export)")
    parser.add_argument("--checkpoint", help="checkpoint folder name, e.g. step_1200 (default: the best-validation one, else the newest)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    parser.add_argument("--no-quantize", dest="quantize", action="store_false", help="export fp32")
    parser.add_argument("--dense", choices=DENSE_MODES, default="auto",
                        help="linears and positions: auto = dynamic INT8 where timed faster, INT8-stored with fp32 "
                        "compute elsewhere; int8 = dynamic INT8 everywhere; fp32 = leave them fp32")
    parser.add_argument("--prune-sparsity", type=float, default=0.0, help="magnitude pruning, fraction of zeros")
    parser.add_argument("--prune-layers", default="linear", help="comma-separated: linear,embedding")
    parser.add_argument("--no-eval", dest="evaluate", action="store_false", help="skip the NDCG comparison")
    parser.add_argument("--archive", action="store_true", help="also build a TorchServe .mar")
    parser.add_argument("--rerank", type=Path, metavar="RANKER_RUN",
                        help="serve retrieve-then-rank: this run retrieves --retrieve candidates, RANKER_RUN re-ranks "
                        "them, in one model.pt with the same signature")
    parser.add_argument("--retrieve", type=int, default=100, help="candidates handed to --rerank (default 100)")
    parser.add_argument("--ann", choices=(*ANN_KINDS, "none"), default="hnsw",
                        help="ANN index over the item matrix saved as items.faiss, its recall vs exact search "
                        "recorded (default hnsw; none: skip)")
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE,
                        help="TorchServe server-side batch size (the default measured best here, docs/benchmarks.md)")
    parser.add_argument("--max-batch-delay-ms", type=int, default=DEFAULT_MAX_BATCH_DELAY_MS,
                        help="TorchServe max batch delay")


def run(args: Any) -> int:
    """Export, print the summary, return 0."""
    config = ExportConfig(
        run=require_run_folder(args.run),
        output=args.output,
        checkpoint=args.checkpoint,
        overwrite=args.overwrite,
        quantize=args.quantize,
        dense=args.dense,
        prune_sparsity=args.prune_sparsity,
        prune_layers=tuple(x.strip() for x in args.prune_layers.split(",") if x.strip()),
        evaluate=args.evaluate,
        archive=args.archive,
        ann=args.ann,
        rerank=args.rerank,
        retrieve=args.retrieve,
        batch_size=args.batch_size,
        max_batch_delay_ms=args.max_batch_delay_ms,
    )
    meta = export_run(config)
    print(meta.pop("summary", None) or _summary(meta))  # another task's adapter may bring its own summary
    return 0
