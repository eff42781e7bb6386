"""Structured training configuration: one small dataclass per component, composed by Hydra, validated at start-up.

``load_config(overrides)`` composes ``configs/train.yaml`` (and its groups ``model/``, ``data/``, ``optim/``,
``experiment/``) with command-line overrides such as ``trainer.max_steps=100 model.dim=64``, then merges the result
into `TrainConfig` in struct mode: an unknown key (``trainer.stpes``) or a wrong type is an error naming the key,
never a silent default. Cross-field checks (`validate`) name the setting to change.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from modules import registry
from trainer.config_rules import check_ranges, did_you_mean
from trainer.errors import ConfigError
from trainer.phases import PhaseConfig

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"
EVAL_PROTOCOLS = ("seen_removed", "none")  # = trainer.evaluation.results.PROTOCOLS (no torch import here)
RERANKERS = ("none", "popularity", "mmr")  # modules.rerank
WINDOWS = ("last", "random")  # = trainer.data.loader.WINDOWS (not imported: that module pulls in torch)
SHARDINGS = ("auto", "table_wise", "row_wise", "column_wise", "replicated")


@dataclasses.dataclass(kw_only=True)
class DataConfig:
    """Which dataset folder to train on and how batches are cut (see trainer.data.loader.LoaderConfig)."""

    path: str = "data/synthetic"
    max_len: int = 50
    batch_size: int = 128
    eval_batch_size: int = 256
    num_workers: int = 0
    # batches' worth of examples sorted by length together (1 = random batches); bucketing pads less (~1.5x
    # faster on ML-1M) but its length-homogeneous batches trained to ~0.01 lower NDCG@10 there
    bucket_batches: int = 16
    # "auto": what the model's objective declares (softmax none, sampled softmax popularity, bce/bpr/gbce uniform)
    negatives: str = "auto"
    num_negatives: int = 1
    popularity_alpha: float = 1.0
    # Training window of a user with more than max_len + 1 train items: "last" (the most recent ones, as SASRec)
    # or "random" (a uniformly placed window each epoch, so older items are trained on too)
    window: str = "last"


@dataclasses.dataclass(kw_only=True)
class OptimConfig:
    """Dense AdamW and the fused (FBGEMM) sparse optimizer for embedding tables, plus the LR schedule."""

    lr: float = 1e-3
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.98)
    # FBGEMM fused optimizer for tables: rowwise_adagrad | adagrad (element-wise) | sgd | adam (GPU only)
    sparse_optimizer: str = "rowwise_adagrad"
    sparse_lr: float | None = 0.2  # null: same as lr
    schedule: str = "cosine"  # cosine | constant
    warmup_steps: int = 100
    min_lr_ratio: float = 0.1
    grad_clip: float = 1.0  # max global norm of dense gradients; 0 disables
    accumulate: int = 1  # micro-batches per dense optimizer step (plain loop only)
    # batch: each batch's loss is the mean over its targets; target: every target weighs the same across batches
    # (batch mean x its targets / the epoch's mean targets per batch), so length-bucketed batches of short
    # histories move the weights less than batches of long ones
    loss_weight: str = "batch"
    # > 0: evaluate and checkpoint an exponential moving average of the dense weights (trainer/ema.py), e.g. 0.999
    ema_decay: float = 0.0


@dataclasses.dataclass(kw_only=True)
class EvalConfig:
    """Full-ranking evaluation (and the SASRec-paper sampled protocol as a labelled option)."""

    ks: list[int] = dataclasses.field(default_factory=lambda: [1, 5, 10, 20])
    # which items leave the ranking (trainer.evaluation.results.PROTOCOLS): seen_removed = every item of the
    # user's history, a repeated target included, so a repeat is a miss (S3-Rec and most papers); none =
    # nothing removed, seen items and repeats rank like any item (RecBole's full ranking of sequential models)
    protocol: str = "seen_removed"
    # re-ranking of the top bias_candidates before the metrics (modules.rerank): none | popularity (penalty on
    # standardised log popularity, strength >= 0) | mmr (diversity, strength in [0, 1]); strength 0 = plain ranking
    bias_rerank: str = "none"
    bias_strength: float = 0.0
    bias_candidates: int = 100
    # beyond-accuracy metrics (trainer.evaluation.beyond) of the top-K lists at this K; 0 = off
    beyond_k: int = 10
    sampled_negatives: int = 0  # > 0: rank the target among this many sampled negatives (paper protocol)
    item_chunk: int = 65536
    per_user: bool = True  # write per-user metrics (Parquet) for significance tests


@dataclasses.dataclass(kw_only=True)
class TrainerConfig:
    """The loop: length, logging, checkpointing, distribution and numerics."""

    experiment: str = "default"
    output_dir: str = "outputs"
    run_id: str | None = None  # default: torchx app id, else a timestamp
    seed: int = 42
    epochs: int = 10
    max_steps: int = 0  # > 0 stops after this many optimizer steps
    eval_every_epochs: int = 1
    eval_split: str = "valid"
    early_stopping_patience: int = 0  # evaluations without NDCG@10 improvement; 0 = off
    log_every: int = 50
    checkpoint_every: int = 0  # steps; 0 = only at epoch ends, the end, and on SIGTERM
    keep_checkpoints: int = 2
    pipeline: bool = True  # TorchRec TrainPipelineSparseDist; false = plain loop
    # auto | table_wise | row_wise | column_wise: FBGEMM-fused tables; replicated: tables unsharded under DDP,
    # dense gradients and the dense AdamW (torch Adam on a table, which FBGEMM's CPU kernels lack)
    sharding: str = "auto"
    bf16: bool = False
    resume: bool = False
    init_from: str | None = None  # run folder or checkpoint to fine-tune from (weights only)
    # init_from with a larger catalogue (a `prepare --append-to` version): new item rows start from the model's
    # init, the old rows' mean, or the mean of old items sharing their categorical features (trainer.growth)
    init_new_items: str = "model"
    progress: bool = True
    test_at_end: bool = True
    # intra-op threads per process; 0: OMP_NUM_THREADS if set, else cores / max(local ranks, training processes)
    threads: int = 0
    # multi-phase training (trainer.phases): phases run one after another, each from the weights the last ended with
    phases: list[PhaseConfig] = dataclasses.field(default_factory=list)


@dataclasses.dataclass(kw_only=True)
class TrainConfig:
    """Everything ``seqrec train`` reads; each component receives only its own part."""

    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    # the registered model's own config dataclass (`modules.registry`), chosen by ``model.name``
    model: Any = None
    optim: OptimConfig = dataclasses.field(default_factory=OptimConfig)
    eval: EvalConfig = dataclasses.field(default_factory=EvalConfig)
    trainer: TrainerConfig = dataclasses.field(default_factory=TrainerConfig)


def load_config(
    overrides: Sequence[str] = (), config_dir: str | Path = CONFIG_DIR, name: str = "train"
) -> TrainConfig:
    """Compose ``configs/<name>.yaml`` with Hydra overrides and return a validated `TrainConfig`."""
    from hydra import compose, initialize_config_dir
    from hydra.core.config_store import ConfigStore
    from hydra.errors import HydraException

    # configs/train.yaml lists `train_schema` first in its defaults, and every configs/model/<name>.yaml its
    # `<name>_schema` (the registered model's config dataclass), so overrides are checked against the schemas.
    store = ConfigStore.instance()
    store.store(name="train_schema", node=TrainConfig)
    for model_name in registry.names():
        store.store(group="model", name=f"{model_name}_schema", node=registry.get(model_name).config)
    try:
        with initialize_config_dir(config_dir=str(Path(config_dir).resolve()), version_base=None):
            composed = compose(config_name=name, overrides=list(overrides))
    except (HydraException, OmegaConfBaseException) as exc:
        raise ConfigError(did_you_mean(_one_line(exc), TrainConfig(), Path(config_dir))) from exc
    return from_dict(composed)


def from_dict(raw: DictConfig | dict[str, Any]) -> TrainConfig:
    """Merge a plain/omegaconf mapping into the schema (struct mode: unknown keys are errors) and validate.

    The ``model`` section is merged into the config dataclass of the model its ``name`` selects.
    """
    if isinstance(raw, DictConfig):  # plain data, so keys forced in with `+key=` are checked too
        raw = OmegaConf.to_container(raw, resolve=True)
    raw = dict(_migrate(raw))
    model_raw = raw.pop("model", None) or {}
    schema = OmegaConf.structured(TrainConfig)
    OmegaConf.set_struct(schema, True)
    try:
        cfg = OmegaConf.to_object(OmegaConf.merge(schema, raw))
        model = _model_config(model_raw)
    except OmegaConfBaseException as exc:
        raise ConfigError(did_you_mean(_one_line(exc), TrainConfig(), CONFIG_DIR)) from exc
    assert isinstance(cfg, TrainConfig)
    cfg.model = model
    validate(cfg)
    return cfg


def _migrate(raw: dict[str, Any]) -> dict[str, Any]:
    """Read run folders written before ``eval.protocol`` existed: ``eval.filter_seen`` true/false becomes
    ``seen_removed``/``none`` (both evaluated with today's rule: a repeated target is removed with its history)."""
    old = raw.get("eval") if isinstance(raw, dict) else None
    if isinstance(old, dict) and "filter_seen" in old:
        old = dict(old)
        old.setdefault("protocol", "seen_removed" if old.pop("filter_seen") else "none")
        raw = {**raw, "eval": old}
    model = raw.get("model") if isinstance(raw, dict) else None
    if isinstance(model, dict) and model.get("name") == "sasrec" and set(model) & set(_FLAT_SASREC):
        raw = {**raw, "model": _nest_flat_sasrec(model)}
    return raw


# SASRec run folders written before the model registry held one flat ``model`` section: key -> component
_FLAT_SASREC = {
    **{key: "encoder" for key in ("num_blocks", "num_heads", "dropout", "attn_backend", "block",
                                   "position_init_std", "length_groups")},
    **{key: "objective" for key in ("loss", "gbce_t", "temperature", "softmax_chunk")},
}


def _nest_flat_sasrec(model: dict[str, Any]) -> dict[str, Any]:
    """A flat pre-registry SASRec ``model`` section in today's per-component layout (same values)."""
    nested: dict[str, Any] = {key: value for key, value in model.items() if key not in _FLAT_SASREC}
    for key, component in _FLAT_SASREC.items():
        if key in model:
            nested.setdefault(component, {})[key] = model[key]
    return nested


def _model_config(raw: Any) -> Any:
    """The registered model config dataclass for ``raw["name"]``, with ``raw`` merged in (struct mode)."""
    if dataclasses.is_dataclass(raw):
        raw = dataclasses.asdict(raw)
    name = raw.get("name") if isinstance(raw, dict) else None
    if not name:
        raise ConfigError(f"model.name is missing; choose one of {', '.join(registry.names())}")
    try:
        entry = registry.get(name)
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
    schema = OmegaConf.structured(entry.config)
    OmegaConf.set_struct(schema, True)
    merged = OmegaConf.merge(schema, _prefixed(raw))
    return OmegaConf.to_object(merged)


def _prefixed(raw: dict[str, Any]) -> DictConfig:
    """``raw`` as a DictConfig whose error messages name keys as ``model.<key>``."""
    node = OmegaConf.create({"model": raw})
    return node.model


def to_yaml(cfg: TrainConfig) -> str:
    """The resolved config as YAML (written into every run folder)."""
    plain = dataclasses.asdict(cfg)
    return OmegaConf.to_yaml(OmegaConf.create(plain))


def _one_line(exc: BaseException) -> str:
    """First line of an exception and of its cause: Hydra's own message says which override, the cause why."""
    lines = []
    while exc is not None and len(lines) < 2:
        text = str(exc).strip().splitlines()
        if text:
            lines.append(text[0].rstrip("."))
        exc = exc.__cause__
    return ": ".join(lines) or "invalid configuration"


def resolve_negatives(cfg: TrainConfig) -> str:
    """The sampler of training negatives: the model's declared need when ``data.negatives=auto``."""
    return cfg.model.loader_needs().negatives if cfg.data.negatives == "auto" else cfg.data.negatives


def validate(cfg: TrainConfig) -> None:
    """Cross-field checks at start-up; each message names the setting to change."""
    check_ranges(cfg)  # every non-model value in its allowed range (trainer.config_rules)
    m, d, o, t, e = cfg.model, cfg.data, cfg.optim, cfg.trainer, cfg.eval
    try:
        m.validate()  # every component of the model checks its own config
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
    checks = [
        (d.max_len >= 1 and d.batch_size >= 1, "data.max_len and data.batch_size must be >= 1"),
        (d.negatives in ("auto", "none", "uniform", "popularity", "in_batch"), "data.negatives is unknown"),
        (
            m.loader_needs().negatives == "none" or resolve_negatives(cfg) != "none",
            f"model.objective.loss={getattr(getattr(m, 'objective', None), 'loss', '?')} needs negatives; "
            "set data.negatives=uniform|popularity|in_batch (or auto)",
        ),
        (
            o.sparse_optimizer in ("adam", "rowwise_adagrad", "adagrad", "sgd"),
            "optim.sparse_optimizer: adam|rowwise_adagrad|adagrad|sgd",
        ),
        (o.schedule in ("cosine", "constant"), "optim.schedule must be cosine or constant"),
        (o.accumulate >= 1, "optim.accumulate must be >= 1"),
        (0.0 <= o.ema_decay < 1.0, f"optim.ema_decay must be in [0, 1) (0: off), got {o.ema_decay}"),
        (o.loss_weight in ("batch", "target"), "optim.loss_weight must be batch or target"),
        (
            o.accumulate == 1 or not t.pipeline,
            "optim.accumulate > 1 is not supported with trainer.pipeline=true (the pipeline steps every batch); "
            "set trainer.pipeline=false",
        ),
        (
            t.sharding in SHARDINGS,
            f"trainer.sharding={t.sharding!r} is unknown; choose one of {', '.join(SHARDINGS)}",
        ),
        (d.window in WINDOWS, f"data.window={d.window!r} is unknown; choose one of {', '.join(WINDOWS)}"),
        (t.eval_split in ("valid", "test"), "trainer.eval_split must be valid or test"),
        (t.threads >= 0, f"trainer.threads must be >= 0 (0: fit the machine), got {t.threads}"),
        (not (t.resume and t.init_from), "trainer.resume and trainer.init_from exclude each other; set one"),
        (
            0 <= e.beyond_k <= max(e.ks, default=0),
            f"eval.beyond_k={e.beyond_k} must lie in 0..max(eval.ks) (the top-k lists are that long)",
        ),
        (e.bias_rerank in RERANKERS, f"eval.bias_rerank={e.bias_rerank!r} is unknown; choose one of {', '.join(RERANKERS)}"),
        (
            e.bias_strength >= 0 and (e.bias_rerank != "mmr" or e.bias_strength <= 1),
            f"eval.bias_strength={e.bias_strength} must be >= 0 (and <= 1 for mmr)",
        ),
        (
            e.bias_candidates >= max(e.ks, default=1),
            f"eval.bias_candidates={e.bias_candidates} must be >= max(eval.ks)",
        ),
        (
            e.protocol in EVAL_PROTOCOLS,
            f"eval.protocol={e.protocol!r} is unknown; choose one of {', '.join(EVAL_PROTOCOLS)}",
        ),
        (
            all(k >= 1 for k in e.ks) and 10 in e.ks,
            "eval.ks must be positive and include 10 (early stopping)",
        ),
    ]
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)
    if t.phases:  # every phase's own config is checked now, before anything is written
        from trainer.phases import phase_configs

        phase_configs(cfg)
