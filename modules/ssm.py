"""Selective state-space scan (Mamba's recurrence) in plain PyTorch, chunked, CPU-friendly, FX-wrapped.

``h_t = exp(dt_t a) h_{t-1} + dt_t b_t x_t``, ``y_t = c_t · h_t``. Inside a chunk of ``chunk`` steps every step
is computed at once from cumulative log-decays, ``h_t = e^{c_t} (h_0 + sum_{s <= t} e^{-c_s} u_s)``; chunks run
one after another carrying ``h``. Each step's log-decay is clamped at ``-LOG_DECAY_FLOOR`` (a decay below e^-8 per
step already forgets everything) so that ``e^{-c}`` stays inside fp32 for chunks of up to `MAX_CHUNK` steps. The
cost is elementwise over ``(B, L, E, N)`` whatever the chunk (memory-bound on CPU; a fused kernel is the GPU's job).
Tested against the step-by-step recurrence (tests/modules/test_ssm.py).
"""

from __future__ import annotations

import torch

LOG_DECAY_FLOOR = 8.0
MAX_CHUNK = 8


def selective_scan(x: torch.Tensor, dt: torch.Tensor, a: torch.Tensor, b: torch.Tensor, c: torch.Tensor,
                   chunk: int) -> torch.Tensor:
    """``y (B, L, E)`` of ``h_t = exp(dt_t a) h_{t-1} + dt_t b_t x_t``, ``y_t = c_t · h_t`` (``h_0 = 0``) for
    ``x, dt: (B, L, E)``, ``a: (E, N)`` (< 0), ``b, c: (B, L, N)``; ``chunk`` steps at a time (module docstring)."""
    h = x.new_zeros(x.shape[0], x.shape[2], a.shape[1])
    outputs = []
    for start in range(0, x.shape[1], chunk):
        end = min(start + chunk, x.shape[1])
        step = dt[:, start:end, :, None]
        decay = torch.cumsum((step * a).clamp(min=-8.0), dim=1)  # (B, c, E, N); -LOG_DECAY_FLOOR (TorchScript)
        inputs = step * b[:, start:end, None, :] * x[:, start:end, :, None]
        states = torch.exp(decay) * (h[:, None] + torch.cumsum(torch.exp(-decay) * inputs, dim=1))
        outputs.append(torch.einsum("bcen,bcn->bce", states, c[:, start:end]))
        h = states[:, -1]
    return torch.cat(outputs, dim=1)


torch.fx.wrap("selective_scan")
