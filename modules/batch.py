"""`Batch`: what the loader yields and every model's ``forward``/``encode`` consumes.

Sparse ids travel as one `KeyedJaggedTensor` (never padded on the host); dense per-example tensors sit beside it.
`Batch` implements TorchRec's `Pipelineable` so `TrainPipelineSparseDist` can copy it to the device and overlap
the embedding all-to-all with compute.

Keys of ``sparse`` (all look up the item table; B = batch size):

* ``history`` -- the input sequence of each example, oldest first. ``values: (sum_i L_i,) int64``,
  ``lengths: (B,) int64`` with ``L_i >= 1``.
* ``target`` -- for ``kind="causal"``: the next item at every history position (same lengths as ``history``);
  for ``kind="last"``: the item(s) to predict after the history (evaluation may carry several targets);
  for ``kind="ranker"`` / ``"impressions"``: the one candidate scored against the history.
* ``negatives`` -- optional sampled negatives, ``lengths: (B,)`` all equal to the per-example count; models using
  shared negatives treat the flattened values as one pool.

Dense fields: ``user_idx: (B,) int64``; ``labels: (B, H) float32``, one 0/1 column per head (``ranker``: one
column, 1 for the positive and 0 for sampled negatives; ``impressions``: the dataset's label columns the model's
heads name; else empty); ``request_time: (B,) int64`` (``impressions``: when the candidate was shown, else
empty);
``target_logq: (T_target,) float32`` and ``negative_logq: (T_neg,) float32`` = log sampling probability of each
id under the sampler (for logQ correction; empty when the sampler has none); ``actions``: optional per-history
position action codes ``(sum_i L_i,) int64`` (empty when the dataset has no actions); ``timestamps``: optional
per-history-position event times ``(sum_i L_i,) int64`` (seconds; empty unless the loader was asked for them,
e.g. for HSTU's time bias).

Owned by ``modules/`` (not the loader's package) so models import the type they consume instead of duck-typing it.
"""

from __future__ import annotations

import dataclasses

import torch
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor
from torchrec.streamable import Pipelineable

KINDS = ("causal", "last", "ranker", "impressions")
RANKING_KINDS = ("ranker", "impressions")


def _empty(dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.empty(0, dtype=dtype)


@dataclasses.dataclass
class Batch(Pipelineable):
    """One batch of examples; see the module docstring for shapes."""

    sparse: KeyedJaggedTensor
    user_idx: torch.Tensor
    kind: str = "causal"
    labels: torch.Tensor = dataclasses.field(default_factory=_empty)
    target_logq: torch.Tensor = dataclasses.field(default_factory=_empty)
    negative_logq: torch.Tensor = dataclasses.field(default_factory=_empty)
    actions: torch.Tensor = dataclasses.field(default_factory=lambda: _empty(torch.int64))
    timestamps: torch.Tensor = dataclasses.field(default_factory=lambda: _empty(torch.int64))
    request_time: torch.Tensor = dataclasses.field(default_factory=lambda: _empty(torch.int64))

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"Batch.kind must be one of {KINDS}, got {self.kind!r}")

    @property
    def size(self) -> int:
        """Number of examples B."""
        return int(self.user_idx.numel())

    def _tensors(self) -> dict[str, torch.Tensor]:
        return {
            "user_idx": self.user_idx,
            "labels": self.labels,
            "target_logq": self.target_logq,
            "negative_logq": self.negative_logq,
            "actions": self.actions,
            "timestamps": self.timestamps,
            "request_time": self.request_time,
        }

    def to(self, device: torch.device, non_blocking: bool = False) -> Batch:
        """Copy to ``device`` (a no-op copy on CPU)."""
        moved = {k: v.to(device=device, non_blocking=non_blocking) for k, v in self._tensors().items()}
        return Batch(sparse=self.sparse.to(device=device, non_blocking=non_blocking), kind=self.kind, **moved)

    def record_stream(self, stream: torch.Stream) -> None:
        """Mark every tensor as used on ``stream`` (CUDA pipelining)."""
        self.sparse.record_stream(stream)
        for value in self._tensors().values():
            value.record_stream(stream)

    def pin_memory(self) -> Batch:
        """Pinned-memory copy, for fast non-blocking host-to-device transfers."""
        pinned = {k: v.pin_memory() for k, v in self._tensors().items()}
        return Batch(sparse=self.sparse.pin_memory(), kind=self.kind, **pinned)
