"""What every key of the non-model config sections means and which values it accepts, checked at start-up.

One table (`RULES`) serves three readers: `check_ranges` (called by `trainer.config.validate`, so a bad value is
one line naming the key before anything is written), `describe` (the key list of ``python -m trainer.train
--help``) and `did_you_mean` (a misspelt key gets the closest real one). Model keys are validated by the model's
own config and are listed with their defaults only.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from trainer.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class Rule:
    """One key: what it does, the values it accepts (as the user reads them) and the check of that."""

    description: str
    allowed: str
    ok: Callable[[Any], bool]


def _num(low: float, high: float = math.inf, low_open: bool = False, high_open: bool = False) -> Callable[[Any], bool]:
    def ok(x: Any) -> bool:
        if x is None or not math.isfinite(x):
            return False
        return (x > low if low_open else x >= low) and (x < high if high_open else x <= high)

    return ok


def _one_of(*choices: str) -> Callable[[Any], bool]:
    return lambda x: x in choices


def _name(x: Any) -> bool:
    return isinstance(x, str) and bool(x.strip()) and "/" not in x and x not in (".", "..")


POSITIVE, NON_NEGATIVE = _num(1), _num(0)
RULES: dict[str, Rule] = {
    "data.path": Rule("dataset folder written by `seqrec prepare`", "a folder path", lambda x: bool(str(x).strip())),
    "data.max_len": Rule("most recent items of a history the model sees", "an integer >= 1", POSITIVE),
    "data.batch_size": Rule("training sequences per batch (per rank)", "an integer >= 1", POSITIVE),
    "data.eval_batch_size": Rule("users per evaluation batch", "an integer >= 1", POSITIVE),
    "data.num_workers": Rule("loader worker processes (0 = in the training process)", "an integer >= 0", NON_NEGATIVE),
    "data.bucket_batches": Rule("batches' worth of examples sorted by length together (1 = random batches)",
                                "an integer >= 1", POSITIVE),
    "data.negatives": Rule("negative sampler (auto: what the loss needs)", "auto|none|uniform|popularity|in_batch",
                           _one_of("auto", "none", "uniform", "popularity", "in_batch")),
    "data.num_negatives": Rule("negatives per target", "an integer >= 1", POSITIVE),
    "data.popularity_alpha": Rule("popularity sampler exponent (0 = uniform)", "a number >= 0", NON_NEGATIVE),
    "data.window": Rule("training window of long histories: the most recent, or randomly placed each epoch",
                        "last|random", _one_of("last", "random")),
    "optim.lr": Rule("peak learning rate of the dense AdamW", "a number > 0", _num(0, low_open=True)),
    "optim.weight_decay": Rule("AdamW weight decay", "a number >= 0", NON_NEGATIVE),
    "optim.betas": Rule("AdamW betas", "two numbers in [0, 1)",
                        lambda x: len(x) == 2 and all(_num(0, 1, high_open=True)(b) for b in x)),
    "optim.sparse_optimizer": Rule("FBGEMM fused optimizer of the embedding tables (adam: GPU only)",
                                   "rowwise_adagrad|adagrad|sgd|adam",
                                   _one_of("rowwise_adagrad", "adagrad", "sgd", "adam")),
    "optim.sparse_lr": Rule("learning rate of the tables (null: optim.lr)", "null or a number > 0",
                            lambda x: x is None or _num(0, low_open=True)(x)),
    "optim.schedule": Rule("learning-rate schedule after warm-up", "cosine|constant", _one_of("cosine", "constant")),
    "optim.warmup_steps": Rule("linear warm-up steps", "an integer >= 0", NON_NEGATIVE),
    "optim.min_lr_ratio": Rule("cosine floor as a fraction of optim.lr", "a number in [0, 1]", _num(0, 1)),
    "optim.grad_clip": Rule("max global norm of dense gradients (0 = off)", "a number >= 0", NON_NEGATIVE),
    "optim.accumulate": Rule("micro-batches per dense optimizer step (plain loop only)", "an integer >= 1", POSITIVE),
    "optim.ema_decay": Rule("exponential moving average of the dense weights (0 = off)", "a number in [0, 1)",
                            _num(0, 1, high_open=True)),
    "optim.loss_weight": Rule("batch: each batch's mean; target: every target weighs the same across batches",
                              "batch|target", _one_of("batch", "target")),
    "eval.ks": Rule("cut-offs of the ranking metrics", "a list of integers >= 1 that includes 10",
                    lambda x: bool(x) and all(k >= 1 for k in x) and 10 in x),
    "eval.protocol": Rule("which items leave the ranking: the user's whole history, or none",
                          "seen_removed|none", _one_of("seen_removed", "none")),
    "eval.bias_rerank": Rule("re-rank the top eval.bias_candidates against popularity bias", "none|popularity|mmr",
                             _one_of("none", "popularity", "mmr")),
    "eval.bias_strength": Rule("strength of the re-ranker (0 = the plain ranking)", "a number >= 0 (<= 1 for mmr)",
                               NON_NEGATIVE),
    "eval.bias_candidates": Rule("items the re-ranker reorders", "an integer >= max(eval.ks)", POSITIVE),
    "eval.beyond_k": Rule("list length of the beyond-accuracy metrics (0 = off)", "an integer in 0..max(eval.ks)",
                          NON_NEGATIVE),
    "eval.sampled_negatives": Rule("> 0: rank the target among this many sampled items (the SASRec paper's "
                                   "protocol); 0: full ranking", "an integer >= 0", NON_NEGATIVE),
    "eval.item_chunk": Rule("items scored per matmul (bounds evaluation memory)", "an integer >= 1", POSITIVE),
    "eval.per_user": Rule("write per-user metrics (Parquet) for significance tests", "true|false",
                          lambda x: isinstance(x, bool)),
    "trainer.experiment": Rule("experiment name: outputs/<experiment>/<run_id>", "a name without '/'", _name),
    "trainer.output_dir": Rule("root of the run folders", "a folder path", lambda x: bool(str(x).strip())),
    "trainer.run_id": Rule("run folder name (null: the torchx app id, else a timestamp)", "null or a name without '/'",
                           lambda x: x is None or _name(x)),
    "trainer.seed": Rule("random seed (same seed and world size: same loss curve)", "an integer >= 0", NON_NEGATIVE),
    "trainer.epochs": Rule("passes over the training data", "an integer >= 1", POSITIVE),
    "trainer.max_steps": Rule("stop after this many optimizer steps (0 = no limit)", "an integer >= 0", NON_NEGATIVE),
    "trainer.eval_every_epochs": Rule("validate every this many epochs (0 = never during training)",
                                      "an integer >= 0", NON_NEGATIVE),
    "trainer.eval_split": Rule("split evaluated during training", "valid|test", _one_of("valid", "test")),
    "trainer.early_stopping_patience": Rule("evaluations without NDCG@10 gain before stopping (0 = off)",
                                            "an integer >= 0", NON_NEGATIVE),
    "trainer.log_every": Rule("steps between log lines and TensorBoard scalars", "an integer >= 1", POSITIVE),
    "trainer.checkpoint_every": Rule("steps between checkpoints (0 = epoch ends, the end and SIGTERM only)",
                                     "an integer >= 0", NON_NEGATIVE),
    "trainer.keep_checkpoints": Rule("newest checkpoints kept (the best one is always kept)", "an integer >= 1",
                                     POSITIVE),
    "trainer.pipeline": Rule("TorchRec TrainPipelineSparseDist (false: plain loop)", "true|false",
                             lambda x: isinstance(x, bool)),
    "trainer.sharding": Rule("how embedding tables are sharded (replicated: unsharded under DDP)",
                             "auto|table_wise|row_wise|column_wise|replicated",
                             _one_of("auto", "table_wise", "row_wise", "column_wise", "replicated")),
    "trainer.bf16": Rule("bf16 autocast of the dense layers", "true|false", lambda x: isinstance(x, bool)),
    "trainer.resume": Rule("continue the run trainer.run_id from its newest checkpoint", "true|false",
                           lambda x: isinstance(x, bool)),
    "trainer.init_from": Rule("run folder or checkpoint to fine-tune from (weights only)", "null or a path",
                              lambda x: x is None or bool(str(x).strip())),
    "trainer.init_new_items": Rule("new item rows when trainer.init_from meets a larger catalogue",
                                   "model|mean|features", _one_of("model", "mean", "features")),
    "trainer.progress": Rule("progress bar on rank 0 (log lines instead when off or not a terminal)",
                             "true|false", lambda x: isinstance(x, bool)),
    "trainer.threads": Rule("intra-op threads per process (0: OMP_NUM_THREADS, else cores / local processes)",
                            "an integer >= 0", NON_NEGATIVE),
    "trainer.phases": Rule("training phases run one after another (each with its own overrides)", "a list",
                           lambda x: isinstance(x, list)),
    "trainer.test_at_end": Rule("evaluate valid and test with the best checkpoint at the end", "true|false",
                                lambda x: isinstance(x, bool)),
}
SECTIONS = ("data", "optim", "eval", "trainer")


def _value(cfg: Any, key: str) -> Any:
    section, name = key.split(".")
    return getattr(getattr(cfg, section), name)


def check_ranges(cfg: Any) -> None:
    """Raise `ConfigError` for the first value of the non-model sections outside its allowed range."""
    for key, rule in RULES.items():
        value = _value(cfg, key)
        try:
            ok = rule.ok(value)
        except TypeError:
            ok = False
        if not ok:
            raise ConfigError(f"{key}={value!r} is not allowed; it must be {rule.allowed} ({rule.description})")


def describe(cfg: Any) -> str:
    """Every key with its default, description and allowed values (the ``--help`` listing)."""
    lines = []
    for section in ("data", "model", "optim", "eval", "trainer"):
        lines.append(f"{section}:")
        for key, value in _leaves(section, getattr(cfg, section)):
            rule = RULES.get(key)
            text = f"  {key}={_show(value)}"
            lines.append(f"{text:<40} {rule.description}; {rule.allowed}" if rule else text)
        if section == "model":
            lines.append("  (model keys are checked by the model's own config)")
    return "\n".join(lines)


def _leaves(prefix: str, node: Any) -> list[tuple[str, Any]]:
    """``(dotted key, value)`` of every non-dataclass value under ``node`` (nested component configs flattened)."""
    out = []
    for field in dataclasses.fields(node):
        value = getattr(node, field.name)
        key = f"{prefix}.{field.name}"
        out += _leaves(key, value) if dataclasses.is_dataclass(value) else [(key, value)]
    return out


def _configs(roots: list[Any]) -> dict[str, Any]:
    """Every config dataclass instance reachable from ``roots``, by class name (for "did you mean")."""
    found: dict[str, Any] = {}
    todo = list(roots)
    while todo:
        node = todo.pop()
        if dataclasses.is_dataclass(node) and type(node).__name__ not in found:
            found[type(node).__name__] = node
            todo += [getattr(node, f.name) for f in dataclasses.fields(node)]
    return found


def _model_defaults() -> list[Any]:
    """A default instance of every registered model's config."""
    from modules import registry

    registry.load_models()
    return [registry.get(name).config() for name in registry.names()]


def _show(value: Any) -> str:
    """A value as it is typed on the command line (YAML spelling)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list | tuple):
        return "[" + ",".join(_show(v) for v in value) + "]"
    return str(value)


def did_you_mean(message: str, schema: Any, config_dir: Path) -> str:
    """``message`` plus a hint when it names an unknown key or config group option close to a real one."""
    group = re.search(r"Could not find '(\w+)/([^']+)'", message)
    if group:
        options = sorted(p.stem for p in (config_dir / group.group(1)).glob("*.yaml"))
        close = difflib.get_close_matches(group.group(2), options, n=1, cutoff=0.6)
        hint = f" (did you mean '{group.group(1)}={close[0]}'?)" if close else ""
        return f"{message}{hint}; available: {', '.join(options) or 'none'}"
    found = re.search(r"Key '([^']+)' not in '(\w+)'", message)
    if not found:
        return message
    key, owner = found.groups()
    node = _configs([schema]).get(owner) or _configs(_model_defaults()).get(owner)
    choices = [f.name for f in dataclasses.fields(node)] if node is not None else []
    if not choices:
        return message
    close = difflib.get_close_matches(key, choices, n=1, cutoff=0.6)
    if close:
        return f"{message} (did you mean '{close[0]}'?)"
    nested = [k for k, _ in _leaves("", node) if k.endswith(f".{key}")]  # a key moved into a component config
    override = re.search(r"override '([^']+)'", message)
    if nested and override:
        parent = override.group(1).rsplit(".", 1)[0]
        return f"{message} (did you mean '{parent}{nested[0]}'?)"
    return f"{message}; known keys: {', '.join(choices)}"
