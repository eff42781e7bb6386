"""Show the sharding plan TorchRec's planner makes for a model on a simulated cluster (``seqrec plan``).

The model is built on the ``meta`` device (no table is allocated), the topology is simulated (hosts x GPUs per
host, HBM and host memory per GPU, intra/inter-host bandwidth), and the same sharder, fused-optimizer settings
and constraints as training are used, so the plan is the one a run of that size would get. Printed: per table
its sharding type, compute kernel and ranks; per rank the bytes of weights and of the fused optimizer's state
(``optim.sparse_optimizer``), their balance max/mean, and the planner's own storage estimate (which leaves the
fused optimizer's state out when it is configured through the sharder, as here).

Tables of models that are not built here (e.g. a two-tower user table) can be added with ``--table
NAME:ROWS[:DIM]``; model hyper-parameters are Hydra overrides as for ``seqrec train``.

Examples:
  seqrec plan --items 1000000 --table user_table:10000000 --hosts 8 --gpus-per-host 8
  seqrec plan --items 1000000 --hosts 2 --gpus-per-host 4 --hbm-gb 40 model.dim=128 --json plan.json
  seqrec plan --items 50000 --device cpu --hosts 1 --gpus-per-host 2 trainer.sharding=table_wise
"""

from __future__ import annotations

import argparse
import dataclasses
import re
from pathlib import Path
from typing import Any

import fbgemm_gpu  # noqa: F401  (before logging is configured: its loader logs every library at INFO)
import torch
from torch import nn

from trainer.errors import ConfigError

GIB = 2**30
RESERVED_NAMES = ("items", "keys", "values")
# of each rank's memory kept for dense layers, activations and buffers (torchrec's heuristic reservation warns
# that it over-estimates dense tensors on the meta device)
RESERVED_FRACTION = 0.15  # nn.ModuleDict attributes: a table cannot be named so


@dataclasses.dataclass(kw_only=True)
class SimulatedTopology:
    """A cluster that need not exist: ``hosts`` x ``gpus_per_host`` ranks of ``device`` type."""

    hosts: int = 8
    gpus_per_host: int = 8
    device: str = "cuda"
    hbm_gb: float = 80.0
    ddr_gb: float = 256.0
    intra_host_gbps: float = 600.0  # GB/s between GPUs of one host (NVLink class)
    inter_host_gbps: float = 12.5  # GB/s between hosts (100 Gbit/s network)

    @property
    def world_size(self) -> int:
        return self.hosts * self.gpus_per_host

    def validate(self) -> None:
        if self.hosts < 1 or self.gpus_per_host < 1:
            raise ConfigError(f"--hosts and --gpus-per-host must be >= 1, got {self.hosts} and {self.gpus_per_host}")
        if self.device not in ("cuda", "cpu"):
            raise ConfigError(f"--device must be cuda or cpu, got {self.device!r}")
        if min(self.hbm_gb, self.ddr_gb, self.intra_host_gbps, self.inter_host_gbps) <= 0:
            raise ConfigError("--hbm-gb, --ddr-gb, --intra-host-gbps and --inter-host-gbps must be > 0")

    def build(self) -> Any:
        """TorchRec's `Topology` (bandwidths in its unit, bytes per millisecond)."""
        from torchrec.distributed.planner.types import (
            HardwareConfig,
            KernelConfig,
            TopologyFactory,
            TrainerConfig,
        )

        per_ms = GIB / 1000
        trainer = TrainerConfig(
            world_size=self.world_size,
            local_world_size=self.gpus_per_host,
            hbm_cap_bytes=int(self.hbm_gb * GIB) if self.device == "cuda" else None,
            ddr_cap_bytes=int(self.ddr_gb * GIB),
        )
        hardware = HardwareConfig(intra_host_bw=self.intra_host_gbps * per_ms, inter_host_bw=self.inter_host_gbps * per_ms)
        return TopologyFactory.create_topology(trainer, hardware, KernelConfig(compute_device=self.device))


@dataclasses.dataclass(frozen=True)
class ExtraTable:
    """A table planned beside the model's own (``--table NAME:ROWS[:DIM]``)."""

    name: str
    rows: int
    dim: int | None = None

    @classmethod
    def parse(cls, text: str) -> ExtraTable:
        match = re.fullmatch(r"([A-Za-z_]\w*):(\d+)(?::(\d+))?", text)
        if match is None:
            raise ConfigError(f"--table {text!r}: expected NAME:ROWS[:DIM], e.g. user_table:10000000:64")
        name, rows, dim = match.group(1), int(match.group(2)), match.group(3)
        if name in RESERVED_NAMES or rows < 1:
            raise ConfigError(f"--table {text!r}: name must not be one of {RESERVED_NAMES} and rows must be >= 1")
        return cls(name, rows, int(dim) if dim else None)


class _PlannedModel(nn.Module):
    """The model plus one EmbeddingCollection per extra table, all on ``meta``: what the planner sees."""

    def __init__(self, model: nn.Module, extra: list[ExtraTable], dim: int) -> None:
        super().__init__()
        from torchrec.modules.embedding_configs import EmbeddingConfig
        from torchrec.modules.embedding_modules import EmbeddingCollection

        self.model = model
        self.extra = nn.ModuleDict({
            t.name: EmbeddingCollection(
                tables=[EmbeddingConfig(name=t.name, embedding_dim=t.dim or dim, num_embeddings=t.rows,
                                        feature_names=[f"{t.name}_ids"])],
                device=torch.device("meta"),
            )
            for t in extra
        })


def _capturing_stats() -> Any:
    """A planner `Stats` that keeps the chosen sharding options (their per-shard storage estimates)."""
    from torchrec.distributed.planner.types import Stats

    class _Capture(Stats):
        def __init__(self) -> None:
            self.best_plan: list = []

        def log(self, sharding_plan, topology, batch_size, storage_reservation, num_proposals, num_plans,
                run_time, best_plan, *args: Any, **kwargs: Any) -> None:
            self.best_plan = list(best_plan)

    return _Capture()


def _estimates(best_plan: list, world_size: int) -> list[int]:
    """The planner's per-rank storage (HBM + DDR) summed over the shards it placed there."""
    per_rank = [0] * world_size
    for option in best_plan:
        for shard in option.shards:
            per_rank[shard.rank] += int(shard.storage.hbm + shard.storage.ddr)
    return per_rank


def plan_model(
    model: nn.Module, topology: SimulatedTopology, optim: Any, sharding: str = "auto", batch_size: int = 128
) -> dict[str, Any]:
    """Plan ``model`` (on ``meta``) for ``topology`` with training's sharder and constraints; returns the report."""
    from torchrec.distributed.embedding import EmbeddingCollectionSharder
    from torchrec.distributed.embeddingbag import EmbeddingBagCollectionSharder
    from torchrec.distributed.planner import EmbeddingShardingPlanner
    from torchrec.distributed.planner.storage_reservations import FixedPercentageStorageReservation

    from trainer.distributed import DistEnv, _constraints, _fused_params
    from trainer.plan_report import summarise_plan

    topology.validate()
    if sharding == "replicated":
        raise ConfigError("trainer.sharding=replicated shards no table (all go under DDP): nothing to plan")
    env = DistEnv(0, topology.world_size, 0, torch.device(topology.device), "simulated")
    stats = _capturing_stats()
    planner = EmbeddingShardingPlanner(
        topology=topology.build(),
        batch_size=batch_size,
        constraints=_constraints(model, sharding, env.device),
        storage_reservation=FixedPercentageStorageReservation(RESERVED_FRACTION),
        stats=[stats],
        debug=False,
    )
    fused = _fused_params(optim, env)  # the sharders shard_model uses, so the plan is training's
    plan = planner.plan(model, [EmbeddingCollectionSharder(fused_params=fused), EmbeddingBagCollectionSharder(fused_params=fused)])
    report = summarise_plan(plan, topology.world_size, optimizer=optim.sparse_optimizer,
                            estimates=_estimates(stats.best_plan, topology.world_size))
    report["topology"] = dataclasses.asdict(topology)
    report["batch_size_per_rank"] = batch_size
    return report


def _table_arg(text: str) -> ExtraTable:
    """argparse type of ``--table``: a bad value is a usage error (exit 2, one line)."""
    try:
        return ExtraTable.parse(text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``seqrec plan`` arguments."""
    t = SimulatedTopology()
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                        help="training config overrides (model.dim=128, trainer.sharding=row_wise, data.path=...)")
    parser.add_argument("--items", type=int, help="catalogue size (default: from data.path's manifest)")
    parser.add_argument("--table", action="append", default=[], type=_table_arg, metavar="NAME:ROWS[:DIM]",
                        help="an extra table to plan beside the model's (repeatable; DIM defaults to model.dim)")
    parser.add_argument("--hosts", type=int, default=t.hosts, help=f"simulated hosts (default {t.hosts})")
    parser.add_argument("--gpus-per-host", type=int, default=t.gpus_per_host,
                        help=f"ranks per host (default {t.gpus_per_host})")
    parser.add_argument("--device", default=t.device, choices=("cuda", "cpu"), help="simulated compute device")
    parser.add_argument("--hbm-gb", type=float, default=t.hbm_gb, help=f"GPU memory per rank, GiB ({t.hbm_gb:g})")
    parser.add_argument("--ddr-gb", type=float, default=t.ddr_gb, help=f"host memory per rank, GiB ({t.ddr_gb:g})")
    parser.add_argument("--intra-host-gbps", type=float, default=t.intra_host_gbps,
                        help=f"bandwidth between ranks of one host, GB/s ({t.intra_host_gbps:g})")
    parser.add_argument("--inter-host-gbps", type=float, default=t.inter_host_gbps,
                        help=f"bandwidth between hosts, GB/s ({t.inter_host_gbps:g})")
    parser.add_argument("--batch-size", type=int, help="batch per rank (default: data.batch_size)")
    parser.add_argument("--json", type=Path, help="also write the plan as JSON here")


def run(args: argparse.Namespace) -> int:
    """``seqrec plan``: build on meta, plan, print (and optionally write JSON)."""
    from trainer.config import load_config
    from trainer.model_factory import build_model
    from trainer.plan_report import format_plan, write_report

    cfg = load_config(args.overrides)
    has_data = (Path(cfg.data.path) / "manifest.json").is_file()
    items = args.items if args.items is not None else _manifest_items(cfg.data.path)
    if items < 1:
        raise ConfigError(f"--items must be >= 1, got {items}")
    topology = SimulatedTopology(
        hosts=args.hosts, gpus_per_host=args.gpus_per_host, device=args.device, hbm_gb=args.hbm_gb,
        ddr_gb=args.ddr_gb, intra_host_gbps=args.intra_host_gbps, inter_host_gbps=args.inter_host_gbps,
    )
    # side-feature tables of models that use them come from the dataset folder, when one is given
    built = build_model(cfg.model, items, cfg.data.max_len, torch.device("meta"), cfg.data.path if has_data else None)
    model = _PlannedModel(built, args.table, cfg.model.dim)
    report = plan_model(model, topology, cfg.optim, cfg.trainer.sharding, args.batch_size or cfg.data.batch_size)
    memory = f"{topology.hbm_gb:g} GiB HBM" if topology.device == "cuda" else f"{topology.ddr_gb:g} GiB DDR"
    print(f"plan for {topology.world_size} ranks ({topology.hosts} host(s) x {topology.gpus_per_host} "
          f"{topology.device}, {memory} each), batch {report['batch_size_per_rank']} per rank")
    print(format_plan(report))
    if args.json is not None:
        write_report(report, args.json)
        print(f"wrote {args.json}")
    return 0


def _manifest_items(path: str) -> int:
    from trainer.data.schema import read_manifest

    if not (Path(path) / "manifest.json").is_file():
        raise ConfigError(f"give --items N or data.path=<dataset folder> ({path}/manifest.json not found)")
    return read_manifest(path).num_items
