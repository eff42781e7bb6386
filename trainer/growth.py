"""Fine-tuning across a grown catalogue: load a checkpoint whose item tables are smaller than the live model's.

A dataset version made by ``seqrec prepare --append-to`` keeps every item index of its parent and adds new items
at the end (`trainer.data.append`), so row i of a checkpoint's table still means item i. `load_grown` loads
every tensor of the checkpoint as it is, except the embedding tables whose rows grew: for those, the old rows are
copied into the live (sharded) table, and the new rows keep the model's own initialisation (``new_rows="model"``),
or start at the mean of the old items' rows (``"mean"``), or at the mean of the old items that share each of the
new item's categorical features in items.parquet (``"features"``; items without a match get the overall mean).
Optimizer state starts fresh (`trainer.init_from` never loads it), so a low learning rate and a few epochs
(``optim.lr``, ``optim.sparse_lr``, ``trainer.epochs``) make the fine-tune.

Tables are found through the model's TorchRec ``EmbeddingCollection`` / ``EmbeddingBagCollection`` modules
(sharded or not), never by a model's attribute names; only their ``.weight`` entries may differ in rows.
Every rank reads the old tables whole (DCP reshards them) and writes the rows of its own shards.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch
import torch.distributed.checkpoint as dcp
from torch import nn
from torch.distributed._shard.sharded_tensor import ShardedTensor
from torch.distributed.checkpoint import DefaultLoadPlanner, FileSystemReader

from trainer import checkpoint
from trainer.data import schema
from trainer.errors import ConfigError

log = logging.getLogger(__name__)
NEW_ROWS = ("model", "mean", "features")
_COLLECTIONS = ("EmbeddingCollection", "EmbeddingBagCollection")
_WRAPPERS = ("_dmp_wrapped_module.", "module.")


def load_grown(ckpt: Path, model: nn.Module, dataset: str | Path, expect: dict[str, Any],
               new_rows: str = "model") -> None:
    """Load ``ckpt`` into ``model`` (weights only); tables with more rows than the checkpoint's grow.

    ``expect`` are the `checkpoint.load` meta checks; ``num_items`` among them may be larger than the
    checkpoint's, if the checkpoint's dataset is an item-prefix of ``dataset`` (checked on raw ids).
    """
    if new_rows not in NEW_ROWS:
        raise ConfigError(f"trainer.init_new_items={new_rows!r}; choose one of {', '.join(NEW_ROWS)}")
    meta = checkpoint.read_meta(ckpt)
    state = model.state_dict()
    grown = _grown_tables(ckpt, model, state)
    if not grown:
        checkpoint.load(ckpt, model, None, expect=expect)
        return
    rest = {k: v for k, v in expect.items() if k != "num_items"}
    _check(ckpt, meta, rest)
    # meta.json's item count, else the table's rows less the padding row (row 0)
    old_items = int(meta.get("num_items", next(iter(grown.values()))[0] - 1))
    _check_item_prefix(ckpt, dataset, old_items)
    kept = {k: v for k, v in state.items() if k not in grown}
    old = {k: torch.empty(size, dtype=state[k].dtype) for k, size in grown.items()}
    try:
        dcp.load({"model": {**kept, **old}}, checkpoint_id=str(ckpt), planner=DefaultLoadPlanner())
    except Exception as exc:  # DCP wraps per-rank failures; surface the first line
        raise ConfigError(f"{ckpt}: cannot load checkpoint into this model ({str(exc).splitlines()[0]})") from exc
    for key, table in old.items():
        full_new = _new_rows(table, state[key].shape[0], dataset, new_rows)
        _write_rows(state[key], table, full_new)
        log.info("%s: %d checkpoint rows copied, %d new rows (%s)", key, table.shape[0],
                 state[key].shape[0] - table.shape[0], new_rows)
    model.load_state_dict(state)


def _check(ckpt: Path, meta: dict[str, Any], expect: dict[str, Any]) -> None:
    for key, value in expect.items():
        if meta.get(key) != value:
            raise ConfigError(f"{ckpt}: checkpoint has {key}={meta.get(key)!r}, this run has {key}={value!r}")


def table_keys(model: nn.Module, state: dict[str, Any]) -> list[str]:
    """State-dict keys of the embedding tables of every TorchRec embedding collection in ``model``."""
    prefixes = []
    for name, module in model.named_modules():
        if any(kind in type(module).__name__ for kind in _COLLECTIONS):
            for wrapper in _WRAPPERS:
                name = name.removeprefix(wrapper)
            prefixes.append(f"{name}." if name else "")
    return [k for k in state if k.endswith(".weight") and any(
        k.startswith(p) and k[len(p):].split(".")[0] in ("embeddings", "embedding_bags") for p in prefixes)]


def _grown_tables(ckpt: Path, model: nn.Module, state: dict[str, Any]) -> dict[str, torch.Size]:
    """Tables whose checkpoint has fewer rows than the live model (same width): key -> checkpoint size."""
    saved = FileSystemReader(str(ckpt)).read_metadata().state_dict_metadata
    grown = {}
    for key in table_keys(model, state):
        entry = saved.get(f"model.{key}")
        size = getattr(entry, "size", None)
        if size is None or tuple(size) == tuple(state[key].shape):
            continue
        if len(size) != 2 or size[1] != state[key].shape[1] or size[0] > state[key].shape[0]:
            raise ConfigError(f"{ckpt}: table {key} has shape {tuple(size)} in the checkpoint and "
                              f"{tuple(state[key].shape)} here; only the number of rows may grow")
        grown[key] = size
    for key, value in state.items():  # anything else that changed shape cannot be carried over
        entry = saved.get(f"model.{key}")
        if key not in grown and entry is not None and tuple(getattr(entry, "size", ())) not in ((), tuple(
                value.shape)):
            raise ConfigError(f"{ckpt}: {key} has shape {tuple(entry.size)} in the checkpoint and "
                              f"{tuple(value.shape)} here; only embedding-table rows may grow")
    return grown


def _check_item_prefix(ckpt: Path, dataset: str | Path, old_items: int) -> None:
    """The checkpoint's items must be the first items of ``dataset`` (same raw ids), or its rows mean others."""
    from omegaconf import OmegaConf

    config = ckpt.parent.parent / "config.yaml"
    if not config.is_file():
        raise ConfigError(f"{ckpt}: no config.yaml in its run folder, so its item ids cannot be checked")
    old_dataset = Path(str(OmegaConf.load(config).data.path))
    old_ids = _raw_ids(old_dataset, ckpt)
    new_ids = _raw_ids(Path(dataset), ckpt)
    if len(old_ids) != old_items or old_ids != new_ids[: len(old_ids)]:
        raise ConfigError(f"{ckpt}: its dataset {old_dataset} is not an item-prefix of {dataset} (item indices "
                          "would change meaning); make the new dataset with `seqrec prepare --append-to`")


def _raw_ids(dataset: Path, ckpt: Path) -> list[str]:
    path = dataset / schema.ITEMS
    if not path.is_file():
        raise ConfigError(f"{ckpt}: cannot check item ids, {path} is missing")
    return pq.read_table(path, columns=["raw_id"])["raw_id"].to_pylist()


def _new_rows(old: torch.Tensor, rows: int, dataset: str | Path, how: str) -> torch.Tensor | None:
    """Initial values of rows ``old.shape[0]..rows-1``, or None to keep the model's initialisation."""
    if how == "model":
        return None
    real = old[1:] if old.shape[0] > 1 else old  # row 0 is padding
    mean = real.mean(0, keepdim=True).expand(rows - old.shape[0], -1).clone()
    if how == "mean":
        return mean
    return _feature_means(real, rows - old.shape[0], Path(dataset), mean)


def _feature_means(real: torch.Tensor, count: int, dataset: Path, fallback: torch.Tensor) -> torch.Tensor:
    """Per new item: the mean over its features of the mean row of the old items sharing its code(s).

    Single-valued features (categorical, bucket) and multi-valued ones (an item with several genres counts for
    each) alike; code 0 (unknown) is no evidence, and an item without any match gets ``fallback``.
    """
    items = pq.read_table(dataset / schema.ITEMS)
    old, total = real.shape[0], torch.zeros_like(fallback)
    matched = torch.zeros(count, 1, dtype=real.dtype)
    for field in items.schema:
        if field.name in ("item_idx", "raw_id", "popularity"):
            continue
        rows, codes = _flat_codes(items[field.name].combine_chunks())
        if codes is None:
            continue
        width = int(codes.max()) + 1 if len(codes) else 1
        is_old = rows < old
        sums = torch.zeros(width, real.shape[1], dtype=real.dtype).index_add_(0, codes[is_old], real[rows[is_old]])
        counts = torch.bincount(codes[is_old], minlength=width).to(real.dtype)
        counts[0] = 0  # code 0 = unknown: no evidence
        is_new = (rows >= old) & (rows < old + count) & (counts[codes] > 0)
        means = sums[codes[is_new]] / counts[codes[is_new]].unsqueeze(1)
        target = rows[is_new] - old
        per_item = torch.zeros_like(total).index_add_(0, target, means)
        hits = torch.bincount(target, minlength=count).to(real.dtype).unsqueeze(1)
        total += torch.where(hits > 0, per_item / hits.clamp(min=1), torch.zeros_like(per_item))
        matched += (hits > 0).to(real.dtype)
    return torch.where(matched > 0, total / matched.clamp(min=1), fallback)


def _flat_codes(column: pa.Array) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(row of each code, code) of an int32 feature column or list<int32>; codes None for other columns."""
    if pa.types.is_list(column.type) and pa.types.is_integer(column.type.value_type):
        lengths = torch.from_numpy(pc.list_value_length(column).fill_null(0).to_numpy().astype(np.int64))
        codes = torch.from_numpy(pc.list_flatten(column).to_numpy().astype(np.int64))
        return torch.repeat_interleave(torch.arange(len(column)), lengths), codes
    if pa.types.is_integer(column.type):
        return torch.arange(len(column)), torch.from_numpy(column.to_numpy().astype(np.int64))
    return torch.zeros(0, dtype=torch.int64), None


def _write_rows(live: Any, old: torch.Tensor, new: torch.Tensor | None) -> None:
    """Copy ``old`` (and ``new``, the rows after it) into this rank's shards of the live table."""
    shards = _local_shards(live)
    full_rows = old.shape[0] + (0 if new is None else new.shape[0])
    source = old if new is None else torch.cat([old, new])
    for tensor, (row0, col0) in shards:
        rows, cols = tensor.shape
        stop = min(row0 + rows, full_rows if new is not None else old.shape[0])
        if stop > row0:
            tensor[: stop - row0].copy_(source[row0:stop, col0: col0 + cols])


def _local_shards(live: Any) -> list[tuple[torch.Tensor, tuple[int, int]]]:
    """(tensor, (first row, first column)) of each shard of a table this rank holds."""
    if isinstance(live, ShardedTensor):
        return [(s.tensor, (s.metadata.shard_offsets[0], s.metadata.shard_offsets[1])) for s in live.local_shards()]
    if type(live) in (torch.Tensor, nn.Parameter):
        return [(live, (0, 0))]
    raise ConfigError(f"cannot grow a table stored as {type(live).__name__}; use trainer.sharding=row_wise")
