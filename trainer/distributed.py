"""Process group set-up and the one function that turns a model into a model-parallel one (`shard_model`).

The model knows nothing of distribution. `shard_model` owns the planner, topology, sharders, fused sparse
optimizer and `DistributedModelParallel`; `build_optimizer` adds AdamW for the dense part (under DDP).
Device-agnostic: gloo + CPU always works; nccl + CUDA is used when a GPU is present.
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
import os
import socket
from pathlib import Path

import fbgemm_gpu  # noqa: F401  (registers fbgemm ops before torchrec modules load)
import torch
import torch.distributed as dist
from fbgemm_gpu.split_embedding_configs import EmbOptimType
from torch import nn
from torchrec.distributed.embedding import EmbeddingCollectionSharder
from torchrec.distributed.embeddingbag import EmbeddingBagCollectionSharder
from torchrec.distributed.model_parallel import DistributedModelParallel
from torchrec.distributed.planner import EmbeddingShardingPlanner, Topology
from torchrec.distributed.planner.types import ParameterConstraints
from torchrec.distributed.types import ShardingEnv, ShardingPlan, ShardingType
from torchrec.modules.embedding_modules import EmbeddingBagCollection, EmbeddingCollection
from torchrec.optim.keyed import CombinedOptimizer, KeyedOptimizerWrapper

from trainer.config import OptimConfig
from trainer.errors import ConfigError

log = logging.getLogger("seqrec.distributed")

SPARSE_OPTIMIZERS = {
    "adam": EmbOptimType.ADAM,  # FBGEMM implements it for GPU tables only
    "adagrad": EmbOptimType.EXACT_ADAGRAD,
    "rowwise_adagrad": EmbOptimType.EXACT_ROWWISE_ADAGRAD,
    "sgd": EmbOptimType.EXACT_SGD,
}


@dataclasses.dataclass(frozen=True)
class DistEnv:
    """Where this process sits: rank, world size, device and backend."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    backend: str

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (for single-process groups and tests)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def init_distributed(timeout_s: int = 600) -> DistEnv:
    """Join the process group torchrun/torchx describe in the environment, or make a 1-process group.

    DistributedModelParallel always needs a process group, so a plain ``python -m trainer.train`` run creates a
    single-process one backed by an in-memory store.
    """
    launched = "RANK" in os.environ and "WORLD_SIZE" in os.environ
    rank = int(os.environ["RANK"]) if launched else 0
    world_size = int(os.environ["WORLD_SIZE"]) if launched else 1
    local_rank = int(os.environ.get("LOCAL_RANK", "0")) if launched else 0
    if torch.cuda.is_available():
        device, backend = torch.device("cuda", local_rank), "nccl"
        torch.cuda.set_device(device)
    else:
        device, backend = torch.device("cpu"), "gloo"
    if not dist.is_initialized():
        timeout = datetime.timedelta(seconds=timeout_s)
        if launched:
            dist.init_process_group(backend, rank=rank, world_size=world_size, timeout=timeout)
        else:  # a 1-process group in memory: no port, nothing left in the environment
            dist.init_process_group(backend, store=dist.HashStore(), rank=0, world_size=1, timeout=timeout)
    return DistEnv(rank, world_size, local_rank, device, backend)


def shutdown_distributed() -> None:
    """Leave the process group (safe to call twice)."""
    if dist.is_initialized():
        dist.destroy_process_group()


def _constraints(model: nn.Module, sharding: str, device: torch.device) -> dict[str, ParameterConstraints]:
    """Per-table sharding constraints. On CPU data-parallel tables fail for unpooled collections (fbgemm's CPU dense
    kernel pools), so it is excluded there."""
    allowed = [t.value for t in (ShardingType.TABLE_WISE, ShardingType.ROW_WISE, ShardingType.COLUMN_WISE)]
    if device.type == "cuda":
        allowed.append(ShardingType.DATA_PARALLEL.value)
    if sharding != "auto":
        allowed = [sharding]
    tables = [cfg.name for m in model.modules() if isinstance(m, EmbeddingCollection) for cfg in m.embedding_configs()]
    constraints = {name: ParameterConstraints(sharding_types=allowed) for name in tables}
    # Pooled side-feature tables (EmbeddingBagCollection): TorchRec has no CPU row-wise kernel for them (and they
    # are small), so they take the allowed types their sharder supports here, else table-wise.
    bag_types = set(EmbeddingBagCollectionSharder().sharding_types(device.type))
    bags = [t for t in allowed if t in bag_types and t != ShardingType.DATA_PARALLEL.value] or [
        ShardingType.TABLE_WISE.value
    ]
    for m in model.modules():
        if isinstance(m, EmbeddingBagCollection):
            constraints.update({cfg.name: ParameterConstraints(sharding_types=bags) for cfg in m.embedding_bag_configs()})
    return constraints


def shard_model(
    model: nn.Module, env: DistEnv, optim: OptimConfig, sharding: str = "auto", batch_size: int = 128
) -> DistributedModelParallel:
    """Shard every EmbeddingCollection (item tables) and EmbeddingBagCollection (pooled side-feature tables) of
    ``model`` (built on ``meta``) across ranks; dense layers go under DDP.

    Tables are updated by FBGEMM's fused optimizer inside backward (no dense gradients for tables). With
    ``sharding="replicated"`` no table is sharded: DMP wraps the whole model in DDP, so tables get dense
    (all-reduced) gradients and the dense AdamW of `build_optimizer`.
    """
    if sharding == "replicated":
        # DMP would initialise meta parameters with each leaf's own reset_parameters (N(0, 1) for nn.Embedding),
        # so the model initialises itself first.
        if any(p.is_meta for p in model.parameters()):
            model.to_empty(device=env.device)
            model.reset_parameters()
        if env.rank == 0:
            log.info("trainer.sharding=replicated: tables unsharded, updated by the dense AdamW "
                     "(optim.sparse_optimizer and optim.sparse_lr are not used)")
        plan, sharders = ShardingPlan(plan={}), []
    else:
        fused = _fused_params(optim, env)
        sharders = [EmbeddingCollectionSharder(fused_params=fused), EmbeddingBagCollectionSharder(fused_params=fused)]
        planner = EmbeddingShardingPlanner(
            topology=Topology(world_size=env.world_size, compute_device=env.device.type),
            batch_size=batch_size,
            constraints=_constraints(model, sharding, env.device),
            debug=False,
        )
        plan = planner.collective_plan(model, sharders, dist.GroupMember.WORLD)
    return DistributedModelParallel(
        model,
        env=ShardingEnv.from_process_group(dist.GroupMember.WORLD),
        device=env.device,
        plan=plan,
        sharders=sharders,
    )


def _fused_params(optim: OptimConfig, env: DistEnv) -> dict:
    """FBGEMM fused-optimizer settings of the sharded tables."""
    if optim.sparse_optimizer == "adam" and env.device.type != "cuda":
        raise ConfigError(
            "optim.sparse_optimizer=adam needs a GPU (FBGEMM's CPU tables support adagrad, rowwise_adagrad, sgd); "
            "set optim.sparse_optimizer=rowwise_adagrad, or trainer.sharding=replicated for a dense AdamW"
        )
    fused_params = {
        "optimizer": SPARSE_OPTIMIZERS[optim.sparse_optimizer],
        "learning_rate": optim.sparse_lr if optim.sparse_lr is not None else optim.lr,
    }
    if optim.sparse_optimizer == "adam":
        fused_params.update(beta1=optim.betas[0], beta2=optim.betas[1], eps=1e-8)
    return fused_params


class _ClippedAdamW(KeyedOptimizerWrapper):
    """Dense AdamW that clips the global gradient norm of its own parameters before each step."""

    def __init__(self, params: dict[str, nn.Parameter], optim: OptimConfig) -> None:
        super().__init__(
            params,
            lambda ps: torch.optim.AdamW(
                ps, lr=optim.lr, betas=tuple(optim.betas), weight_decay=optim.weight_decay
            ),
        )
        self._clip = optim.grad_clip
        self._params = list(params.values())
        self.last_grad_norm = torch.zeros(())

    def step(self, closure=None) -> None:
        if self._clip > 0:
            self.last_grad_norm = torch.nn.utils.clip_grad_norm_(self._params, self._clip)
        super().step(closure)


def build_optimizer(model: DistributedModelParallel, optim: OptimConfig) -> CombinedOptimizer:
    """The fused sparse optimizer of the sharded tables combined with AdamW over every other parameter."""
    sharded_prefixes = tuple(f"{path}." for path in model.plan.plan)
    dense = {
        name: param
        for name, param in model.named_parameters()
        if not name.startswith(sharded_prefixes) and param.requires_grad
    }
    return CombinedOptimizer([model.fused_optimizer, ("dense", _ClippedAdamW(dense, optim))])


def init_dense_state(optimizer: CombinedOptimizer) -> None:
    """Create the dense AdamW state now (torch creates it lazily at the first step) so a checkpoint can be loaded
    into it; FBGEMM's fused table state exists from the start. Errors propagate: a silently missing state would
    make a resumed run drift from the uninterrupted one."""
    for _, opt in optimizer.optimizers:
        if isinstance(opt, _ClippedAdamW):
            opt.init_state()


def base_lrs(optimizer: CombinedOptimizer) -> list[float]:
    """The learning rate every param group starts from (the schedule multiplies these)."""
    return [float(group["lr"]) for group in optimizer.param_groups]


def lr_factor(step: int, optim: OptimConfig, total_steps: int) -> float:
    """Linear warmup, then cosine decay to ``min_lr_ratio`` (or constant)."""
    import math

    if optim.warmup_steps > 0 and step < optim.warmup_steps:
        return (step + 1) / optim.warmup_steps
    if optim.schedule == "constant" or total_steps <= optim.warmup_steps:
        return 1.0
    progress = min(1.0, (step - optim.warmup_steps) / max(1, total_steps - optim.warmup_steps))
    return optim.min_lr_ratio + (1 - optim.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def all_reduce_sum(value: torch.Tensor) -> torch.Tensor:
    """Sum a tensor over ranks (no-op without a process group)."""
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(value, op=dist.ReduceOp.SUM)
    return value


def record_plan(model: DistributedModelParallel, run_dir: Path, env: DistEnv, optim: OptimConfig) -> dict:
    """Log the sharding plan this run trains with and write it to ``run_dir/plan.json`` (rank 0).

    Per table: sharding type, ranks, bytes of weights and fused-optimizer state per rank; per rank: the total and
    the balance (max/mean).
    """
    from trainer.plan_report import format_plan, summarise_plan, write_report

    shapes = {name.rsplit(".", 2)[-2]: tuple(p.shape) for name, p in model.named_parameters() if p.dim() == 2}
    report = summarise_plan(model.plan, env.world_size, optimizer=optim.sparse_optimizer, shapes=shapes)
    if env.is_main:
        log.info("sharding plan on %d rank(s):\n%s", env.world_size, format_plan(report) if report["tables"]
                 else "no table sharded (trainer.sharding=replicated: tables under DDP)")
        write_report(report, run_dir / "plan.json")
    return report
