"""Exponential moving average of the dense weights (``optim.ema_decay``), with `torch.optim.swa_utils`.

`DenseEMA` averages every parameter the dense optimizer updates (encoder, heads, towers; the sharded embedding
tables are updated inside backward by FBGEMM's fused optimizer and are not averaged). Evaluation runs on the
averaged weights. Checkpoints store the averaged weights as the model (what ``seqrec evaluate`` and ``seqrec
export`` load, matching the validation metric that chose the checkpoint) and the live weights in the rank state,
so a resumed run continues from the live weights exactly.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn


class DenseEMA:
    """EMA of ``params``: ``average = decay * average + (1 - decay) * live`` after every step (the first step
    copies)."""

    def __init__(self, params: list[nn.Parameter], decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"optim.ema_decay must be in (0, 1), got {decay}")
        self.live = nn.ParameterList(params)  # the model's own parameters, not copies
        self.average = AveragedModel(self.live, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=False)

    @classmethod
    def of_optimizer(cls, optimizer: Any, decay: float) -> DenseEMA:
        """Over the parameters of the trainer's dense optimizer (`trainer.distributed.build_optimizer`)."""
        dense = dict(optimizer.optimizers)["dense"]
        return cls(list(dense.params.values()), decay)

    @torch.no_grad()
    def update(self) -> None:
        """Fold the current live weights into the average (after each optimizer step)."""
        self.average.update_parameters(self.live)

    @torch.no_grad()
    def swap(self) -> None:
        """Exchange the live and the averaged values (twice is a no-op)."""
        for live, average in zip(self.live, self.average.module.parameters()):
            scratch = live.detach().clone()
            live.copy_(average)
            average.copy_(scratch)

    @contextlib.contextmanager
    def swapped(self) -> Iterator[None]:
        """The model holds the averaged weights inside the block (evaluation, checkpointing)."""
        self.swap()
        try:
            yield
        finally:
            self.swap()

    def state_dict(self) -> dict[str, Any]:
        return self.average.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.average.load_state_dict(state)
