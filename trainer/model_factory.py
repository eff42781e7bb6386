"""Build a recommender from its registered config (shared by training, evaluation and export)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from modules import registry
from modules.contract import Recommender
from trainer.errors import ConfigError


def build_model(
    cfg: Any, num_items: int, max_len: int, device: torch.device | None = None, dataset: str | Path | None = None
) -> Recommender:
    """The model ``cfg.name`` selects (its config dataclass) for ``num_items`` items (tables on ``device``, e.g. meta);
    a model that uses side features reads them from the ``dataset`` folder.

    Build-time checks that need the data (e.g. a catalogue too small for the objective) become `ConfigError`s.
    """
    features = {}
    if dataset is not None and registry.get(cfg.name).features:
        from trainer.data.features import load_side_features

        features = {kind: load_side_features(dataset, kind) for kind in ("items", "users")}
    try:
        return registry.build(
            cfg, num_items=num_items, max_len=max_len, device=device,
            item_features=features.get("items"), user_features=features.get("users"),
        )
    except ValueError as exc:  # modules/ raises ValueError; the CLI prints ConfigError as one line
        raise ConfigError(str(exc)) from exc
