"""Build a recommender from its `ModelConfig` (shared by training, evaluation and export)."""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from trainer.config import ModelConfig
from trainer.errors import ConfigError

MODELS = ("sasrec",)


def build_model(
    cfg: ModelConfig, num_items: int, max_len: int, device: torch.device | None = None
) -> nn.Module:
    """The model named by ``cfg.name`` for a catalogue of ``num_items`` items (tables on ``device``, e.g. meta)."""
    if cfg.name == "sasrec":
        from modules.sasrec import SASRec, SASRecConfig

        # ModelConfig mirrors SASRecConfig's hyper-parameters (modules/ cannot import trainer/): copy them by name.
        shared = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(SASRecConfig) if hasattr(cfg, f.name)}
        config = SASRecConfig(num_items=num_items, max_len=max_len, **shared)
        try:
            config.validate()
        except ValueError as exc:  # modules/ cannot raise our error types
            raise ConfigError(str(exc)) from exc
        return SASRec.from_config(config, device=device)
    raise ConfigError(f"model.name={cfg.name!r} is unknown; choose one of {MODELS}")
