"""Build a recommender from its registered config (shared by training, evaluation and export)."""

from __future__ import annotations

from typing import Any

import torch

from modules import registry
from modules.contract import Recommender
from trainer.errors import ConfigError


def build_model(cfg: Any, num_items: int, max_len: int, device: torch.device | None = None) -> Recommender:
    """The model ``cfg.name`` selects (its config dataclass) for ``num_items`` items (tables on ``device``, e.g. meta).

    Build-time checks that need the data (e.g. a catalogue too small for the objective) become `ConfigError`s.
    """
    try:
        return registry.build(cfg, num_items=num_items, max_len=max_len, device=device)
    except ValueError as exc:  # modules/ raises ValueError; the CLI prints ConfigError as one line
        raise ConfigError(str(exc)) from exc
