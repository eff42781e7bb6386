"""Range checks of component configs: each failure is one `ValueError` naming the key to change.

Example::

    check(self, prefix="model.encoder", at_least_1=("num_blocks", "num_heads"), fractions=("dropout",))
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


def check(
    config: Any,
    prefix: str = "model.encoder",
    at_least_1: Iterable[str] = (),
    non_negative: Iterable[str] = (),
    positive: Iterable[str] = (),
    fractions: Iterable[str] = (),
) -> None:
    """``at_least_1``: ints >= 1; ``non_negative``: >= 0; ``positive``: > 0; ``fractions``: in [0, 1)."""
    rules = (
        (at_least_1, lambda v: v >= 1, ">= 1"),
        (non_negative, lambda v: v >= 0, ">= 0"),
        (positive, lambda v: v > 0, "> 0"),
        (fractions, lambda v: 0.0 <= v < 1.0, "in [0, 1)"),
    )
    for keys, ok, text in rules:
        for key in keys:
            if not ok(getattr(config, key)):
                raise ValueError(f"{prefix}.{key} must be {text}, got {getattr(config, key)}")


def check_heads(dim: int, num_heads: int, prefix: str = "model.encoder") -> None:
    """``model.dim`` must split evenly over the heads."""
    if num_heads < 1 or dim % num_heads:
        raise ValueError(f"model.dim={dim} must be divisible by {prefix}.num_heads={num_heads}")
