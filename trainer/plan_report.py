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


def _table_entry(
    path: str, name: str, sharding: Any, world_size: int, element_bytes: int, shape: tuple[int, int] | None
) -> dict[str, Any]:
    """One table of the plan: its sharding, ranks, full shape and weight bytes on every rank holding a shard."""
    per_rank: dict[int, int] = {}
    spec = sharding.sharding_spec
    if spec is not None:
        shards = spec.shards
        rows = max(s.shard_offsets[0] + s.shard_sizes[0] for s in shards)
        dim = max(s.shard_offsets[1] + s.shard_sizes[1] for s in shards)
        for s in shards:
            rank = s.placement.rank()
            per_rank[rank] = per_rank.get(rank, 0) + s.shard_sizes[0] * s.shard_sizes[1] * element_bytes
    else:  # data_parallel: every rank holds the whole table
        rows, dim = shape if shape is not None else (0, 0)
        per_rank = {r: rows * dim * element_bytes for r in range(world_size)}
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
    }


def _balance(values: list[int]) -> float:
    """max / mean over ranks (1.0 is perfect balance); 0 when nothing is placed."""
    mean = sum(values) / len(values) if values else 0.0
    return max(values) / mean if mean > 0 else 0.0


def summarise_plan(
    plan: ShardingPlan,
    world_size: int,
    *,
    element_bytes: int = 4,
    shapes: dict[str, tuple[int, int]] | None = None,
    estimates: list[int] | None = None,
) -> dict[str, Any]:
    """A JSON-able description of ``plan``: tables, weight bytes per rank and their balance (max/mean).

    ``shapes`` (table -> rows, dim) is only needed for data-parallel tables, whose plan carries no shard metadata;
    ``estimates`` is the planner's per-rank storage estimate (HBM + DDR bytes), when known.
    """
    tables = [
        _table_entry(path, name, sharding, world_size, element_bytes, (shapes or {}).get(name))
        for path, module_plan in sorted(plan.plan.items())
        for name, sharding in sorted(module_plan.items())
    ]
    weights = [0] * world_size
    for table in tables:
        for rank, size in table["bytes_per_rank"].items():
            weights[int(rank)] += size
    report: dict[str, Any] = {
        "world_size": world_size,
        "tables": tables,
        "weight_bytes_per_rank": weights,
        "weight_balance": round(_balance(weights), 4),
    }
    if estimates is not None:
        report["estimate_bytes_per_rank"] = [int(v) for v in estimates]
        report["estimate_balance"] = round(_balance(list(estimates)), 4)
    return report


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
    if "estimate_bytes_per_rank" in report:
        lines.append(_memory_line("planner estimate per rank (weights, optimizer state, buffers)",
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
