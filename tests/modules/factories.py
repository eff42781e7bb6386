"""Small builders for tests: a registered model from flat keyword arguments (each routed to its component)."""

from __future__ import annotations

import dataclasses
from typing import Any

from modules import registry
from modules.encoders.sasrec import SASRecConfig, SASRecEncoderConfig
from modules.objectives import ObjectiveConfig

OBJECTIVE_KEYS = {f.name for f in dataclasses.fields(ObjectiveConfig)}
MODEL_KEYS = {"dim", "tie_weights"}


def split_kwargs(kwargs: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """``(model-level, objective, encoder)`` keyword arguments."""
    model = {k: v for k, v in kwargs.items() if k in MODEL_KEYS}
    objective = {k: v for k, v in kwargs.items() if k in OBJECTIVE_KEYS}
    encoder = {k: v for k, v in kwargs.items() if k not in MODEL_KEYS | OBJECTIVE_KEYS}
    return model, objective, encoder


def sasrec(num_items: int, max_len: int = 200, device: Any = None, **kwargs: Any) -> Any:
    """SASRec built through the registry, e.g. ``sasrec(50, dim=16, loss="bce", num_blocks=1)``."""
    model, objective, encoder = split_kwargs(kwargs)
    config = SASRecConfig(**model, objective=ObjectiveConfig(**objective), encoder=SASRecEncoderConfig(**encoder))
    return registry.build(config, num_items=num_items, max_len=max_len, device=device)
