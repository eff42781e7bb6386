"""Sequence augmentations of causal training examples (CL4SRec's crop / mask / reorder, plus substitution).

An augmented example is rebuilt from its window ``s`` (history + the last target: ``history = s[:-1]``,
``targets = s[1:]``). With probability ``prob`` one operation, drawn uniformly from ``ops``, changes it:

* ``crop``: keep a random contiguous ``ceil(ratio * n)`` items (at least 2) of the window;
* ``reorder``: shuffle a random contiguous ``ceil(ratio * n)`` items of the window;
* ``mask``: set ``ratio`` of the *history* inputs to 0 (the padding row serves as the mask embedding; a target is
  never 0, so every position still predicts a real item);
* ``substitute``: replace ``ratio`` of the history inputs by uniformly drawn items.

Per-position columns (timestamps, actions) follow crop and reorder (the last target, which has no column value in
a batch, takes its predecessor's). Everything is drawn from the batch's own
generator (`trainer.data.sampling.STREAM_AUGMENT`: seed, epoch, rank, worker, batch index), so an augmented epoch
is as reproducible and resumable as a plain one.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from trainer.errors import ConfigError

OPS = ("crop", "mask", "reorder", "substitute")


@dataclasses.dataclass(frozen=True, kw_only=True)
class Augmentation:
    """``ops``: some of `OPS`; ``prob``: share of examples changed, in [0, 1]; ``ratio``: in (0, 1]."""

    ops: tuple[str, ...] = ()
    prob: float = 0.5
    ratio: float = 0.6

    def __post_init__(self) -> None:
        unknown = [op for op in self.ops if op not in OPS]
        if unknown:
            raise ConfigError(f"data.augment: unknown operations {unknown}; choose from {OPS}")
        if not 0.0 <= self.prob <= 1.0 or not 0.0 < self.ratio <= 1.0:
            raise ConfigError(f"data.augment_prob must be in [0, 1] and data.augment_ratio in (0, 1], got "
                              f"{self.prob}, {self.ratio}")


def augment_window(window: np.ndarray, aligned: dict[str, np.ndarray], config: Augmentation, num_items: int,
                   rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """``(history, targets, aligned history columns)`` of one window ``(n,)`` (``n >= 2``), maybe augmented."""
    n = len(window)
    order = np.arange(n)
    op = config.ops[rng.integers(len(config.ops))] if config.ops and rng.random() < config.prob else None
    span = max(2, math.ceil(config.ratio * n)) if op in ("crop", "reorder") else 0
    if op == "crop" and span < n:
        start = rng.integers(n - span + 1)
        order = order[start:start + span]
    elif op == "reorder" and span <= n:
        start = rng.integers(n - span + 1)
        order[start:start + span] = rng.permutation(order[start:start + span])
    window = window[order]
    history, targets = window[:-1].copy(), window[1:]
    if op in ("mask", "substitute"):
        chosen = rng.random(n - 1) < config.ratio
        history[chosen] = 0 if op == "mask" else rng.integers(1, num_items + 1, int(chosen.sum()))
    return history, targets, {name: values[order][:-1] for name, values in aligned.items()}


def augment_block(hist: np.ndarray, hist_off: np.ndarray, tgt: np.ndarray, tgt_off: np.ndarray,
                  aligned: dict[str, np.ndarray], config: Augmentation, num_items: int, rng: np.random.Generator
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """`augment_window` on every causal example of a block: new (hist, hist_off, tgt, tgt_off, aligned)."""
    parts: list[tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]] = []
    for i in range(len(hist_off) - 1):
        lo, hi = hist_off[i], hist_off[i + 1]
        window = np.append(hist[lo:hi], tgt[tgt_off[i + 1] - 1])
        columns = {name: np.append(values[lo:hi], values[hi - 1]) for name, values in aligned.items()}
        parts.append(augment_window(window, columns, config, num_items, rng))
    offsets = np.concatenate([[0], np.cumsum([len(h) for h, _, _ in parts])]).astype(np.int64)
    return (np.concatenate([h for h, _, _ in parts]), offsets, np.concatenate([t for _, t, _ in parts]),
            offsets.copy(), {name: np.concatenate([c[name] for _, _, c in parts]) for name in aligned})
