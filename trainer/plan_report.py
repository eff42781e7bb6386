"""What a TorchRec `ShardingPlan` means in bytes: per table its sharding type and ranks, per rank its memory.

Shared by ``seqrec plan`` (a simulated cluster) and every training run (``plan.json`` in the run folder), so both
describe a plan the same way. Weights are counted from the plan's shard metadata (rows x dim x bytes per element);
``estimates`` optionally adds the planner's own per-rank storage estimate, which also counts optimizer state and
input/output buffers.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from torchrec.distributed.types import ShardingPlan

MIB = 2**20
FP32 = 4  # bytes per element of training tables and their optimizer state
# fp32 state the fused (FBGEMM) optimizer keeps per table shard of ``rows`` x ``dim``. TorchRec's planner does not
# count it when the optimizer comes through the sharder's fused_params, so the report adds it itself.
OPTIMIZER_STATE_FLOATS = {
    "sgd": lambda rows, dim: 0,
    "rowwise_adagrad": lambda rows, dim: rows,
    "adagrad": lambda rows, dim: rows * dim,
    "adam": lambda rows, dim: 2 * rows * dim,
}


def _table_entry(
    path: str, name: str, sharding: Any, world_size: int, shape: tuple[int, int] | None, optimizer: str | None
) -> dict[str, Any]:
    """One table of the plan: its sharding, ranks, full shape, and weight and optimizer-state bytes on every rank
    holding a shard."""
    state = OPTIMIZER_STATE_FLOATS[optimizer] if optimizer else OPTIMIZER_STATE_FLOATS["sgd"]
    spec = sharding.sharding_spec
    if spec is not None:
        shards = [(s.placement.rank(), s.shard_sizes[0], s.shard_sizes[1]) for s in spec.shards]
        rows = max(s.shard_offsets[0] + s.shard_sizes[0] for s in spec.shards)
        dim = max(s.shard_offsets[1] + s.shard_sizes[1] for s in spec.shards)
    else:  # data_parallel: every rank holds the whole table
        rows, dim = shape if shape is not None else (0, 0)
        shards = [(r, rows, dim) for r in range(world_size)]
    per_rank: dict[int, int] = {}
    per_rank_state: dict[int, int] = {}
    for rank, shard_rows, shard_dim in shards:
        per_rank[rank] = per_rank.get(rank, 0) + shard_rows * shard_dim * FP32
        per_rank_state[rank] = per_rank_state.get(rank, 0) + state(shard_rows, shard_dim) * FP32
    ranks = sorted(per_rank) if sharding.ranks is None else sorted(set(sharding.ranks))
    return {
        "module": path,
        "table": name,
        "sharding_type": sharding.sharding_type,
        "compute_kernel": sharding.compute_kernel,
        "ranks": ranks,
        "rows": int(rows),
        "dim": int(dim),
        "bytes_per_rank": {str(r): int(b) for r, b in sorted(per_rank.items())},
        "optimizer_bytes_per_rank": {str(r): int(b) for r, b in sorted(per_rank_state.items())},
    }


def _balance(values: list[int]) -> float:
    """max / mean over ranks (1.0 is perfect balance); 0 when nothing is placed."""
    mean = sum(values) / len(values) if values else 0.0
    return max(values) / mean if mean > 0 else 0.0


def summarise_plan(
    plan: ShardingPlan,
    world_size: int,
    *,
    optimizer: str | None = None,
    shapes: dict[str, tuple[int, int]] | None = None,
    estimates: list[int] | None = None,
) -> dict[str, Any]:
    """A JSON-able description of ``plan``: tables, per-rank bytes of weights and of the fused ``optimizer``'s
    state (a key of `OPTIMIZER_STATE_FLOATS`), and the balance (max/mean) of their sum.

    ``shapes`` (table -> rows, dim) is only needed for data-parallel tables, whose plan carries no shard metadata;
    ``estimates`` is the planner's per-rank storage estimate (HBM + DDR bytes), when known.
    """
    tables = [
        _table_entry(path, name, sharding, world_size, (shapes or {}).get(name), optimizer)
        for path, module_plan in sorted(plan.plan.items())
        for name, sharding in sorted(module_plan.items())
    ]
    weights, state = _per_rank(tables, "bytes_per_rank", world_size), _per_rank(tables, "optimizer_bytes_per_rank",
                                                                             world_size)
    total = [w + s for w, s in zip(weights, state)]
    report: dict[str, Any] = {
        "world_size": world_size,
        "optimizer": optimizer,
        "tables": tables,
        "weight_bytes_per_rank": weights,
        "weight_balance": round(_balance(weights), 4),
        "optimizer_bytes_per_rank": state,
        "memory_bytes_per_rank": total,
        "balance": round(_balance(total), 4),
    }
    if estimates is not None:
        report["estimate_bytes_per_rank"] = [int(v) for v in estimates]
        report["estimate_balance"] = round(_balance(list(estimates)), 4)
    return report


def _per_rank(tables: list[dict[str, Any]], key: str, world_size: int) -> list[int]:
    """Sum of the tables' ``key`` (rank -> bytes) per rank."""
    totals = [0] * world_size
    for table in tables:
        for rank, size in table[key].items():
            totals[int(rank)] += size
    return totals


def _ranks_text(ranks: list[int]) -> str:
    """0-63 for a contiguous range, else the list."""
    if len(ranks) > 2 and ranks == list(range(ranks[0], ranks[-1] + 1)):
        return f"{ranks[0]}-{ranks[-1]}"
    return ",".join(map(str, ranks))


def format_plan(report: dict[str, Any]) -> str:
    """The report as an aligned table plus the per-rank memory lines (what ``seqrec plan`` prints)."""
    header = ("table", "module", "sharding", "kernel", "ranks", "rows x dim", "MiB/rank (max)")
    rows = [header]
    for t in report["tables"]:
        largest = max((int(v) for v in t["bytes_per_rank"].values()), default=0)
        rows.append((t["table"], t["module"], t["sharding_type"], t["compute_kernel"], _ranks_text(t["ranks"]),
                     f"{t['rows']:,} x {t['dim']}", f"{largest / MIB:,.1f}"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    lines.append(_memory_line("weights per rank", report["weight_bytes_per_rank"], report["weight_balance"]))
    lines.append(_memory_line(f"weights + {report['optimizer'] or 'no'} optimizer state per rank",
                              report["memory_bytes_per_rank"], report["balance"]))
    if "estimate_bytes_per_rank" in report:
        lines.append(_memory_line("planner's own estimate per rank",
                                  report["estimate_bytes_per_rank"], report["estimate_balance"]))
    return "\n".join(lines)


def _memory_line(label: str, values: list[int], balance: float) -> str:
    mean = sum(values) / max(len(values), 1)
    return (f"{label}: max {max(values, default=0) / MIB:,.1f} MiB, min {min(values, default=0) / MIB:,.1f} MiB, "
            f"mean {mean / MIB:,.1f} MiB, balance max/mean {balance:.3f}")


def write_report(report: dict[str, Any], path: Path) -> None:
    """Write ``report`` as JSON through a temporary file, so a reader never sees half a plan."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(report, indent=2) + "\n")
    tmp.replace(path)
