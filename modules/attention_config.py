"""Attention backend names and the one config dataclass of their parameters (no torch import: the trainer's
config schema embeds it).

The backend is chosen by name (``attn_backend``); `AttentionConfig` holds what the backends read:

* ``sdpa`` / ``naive``: exact attention over the padded batch (today's defaults; nothing here changes them);
* ``jagged``: exact causal attention whose cost follows each row's real length (``chunk`` = query block);
* ``local``: each query sees the last ``window`` positions (itself included) plus the first ``global_tokens``
  positions of its sequence, computed in blocks of ``chunk`` queries: nothing of size ``(B, L, L)``;
* ``linear``: causal linear attention with a positive feature map (``feature_map``), prefix sums over blocks of
  ``chunk`` positions, O(L * Dh^2); with ``local_mix`` > 0 its output is mixed with the ``local`` backend's:
  ``local_mix * local + (1 - local_mix) * linear``.

``dropout``: where attention dropout goes. ``weights`` (the default) drops attention weights, as the reference
does; the exact backends then run their math path on CPU (SDPA has no CPU dropout kernel). ``output`` drops the
attention output instead, so every backend keeps its fast kernel; ``linear`` has no weights to drop and needs it.

``checkpoint``: recompute each block's activations during backward (`modules.transformer.run_blocks`), trading
about one more forward for keeping only each block's input.
"""

from __future__ import annotations

import dataclasses

BACKENDS = ("sdpa", "naive", "jagged", "local", "linear")
FEATURE_MAPS = ("elu", "relu")
DROPOUT_MODES = ("weights", "output")


@dataclasses.dataclass(kw_only=True)
class AttentionConfig:
    """Parameters of the attention backends and of the block stack that runs them (see the module doc)."""

    window: int = 64  # local: keys per query, itself included
    global_tokens: int = 0  # local: the first positions every query also sees
    chunk: int = 64  # jagged / local / linear: queries (positions) per block
    feature_map: str = "elu"  # linear: elu (elu(x) + 1) | relu
    local_mix: float = 0.0  # linear: weight of the local-window softmax mixed into its output
    dropout: str = "weights"  # weights | output (keeps the fast kernels)
    checkpoint: bool = False  # recompute block activations in backward

    def validate(self, backend: str = "sdpa", dropout_p: float = 0.0, prefix: str = "model.attention") -> None:
        """Raise `ValueError` naming the setting to change, for ``backend`` run with attention dropout
        ``dropout_p`` (``prefix``: where these keys sit in the config)."""
        if backend not in BACKENDS:
            raise ValueError(f"attention backend must be one of {BACKENDS}, got {backend!r}")
        for key in ("window", "chunk"):
            if getattr(self, key) < 1:
                raise ValueError(f"{prefix}.{key} must be >= 1, got {getattr(self, key)}")
        if self.global_tokens < 0:
            raise ValueError(f"{prefix}.global_tokens must be >= 0, got {self.global_tokens}")
        if self.feature_map not in FEATURE_MAPS:
            raise ValueError(f"{prefix}.feature_map must be one of {FEATURE_MAPS}, got {self.feature_map!r}")
        if not 0.0 <= self.local_mix <= 1.0:
            raise ValueError(f"{prefix}.local_mix must be in [0, 1], got {self.local_mix}")
        if self.dropout not in DROPOUT_MODES:
            raise ValueError(f"{prefix}.dropout must be one of {DROPOUT_MODES}, got {self.dropout!r}")
        if backend == "linear" and self.dropout == "weights" and dropout_p > 0.0:
            raise ValueError(
                f"attention backend 'linear' has no attention weights to drop; set {prefix}.dropout=output"
            )
