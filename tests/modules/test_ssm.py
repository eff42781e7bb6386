"""The chunked selective scan equals the step-by-step recurrence, at every chunk size, and stays finite."""

from __future__ import annotations

import pytest
import torch

from modules.ssm import selective_scan


def reference_scan(x, dt, a, b, c) -> torch.Tensor:
    """The recurrence one step at a time."""
    h = torch.zeros(x.shape[0], x.shape[2], a.shape[1], dtype=torch.float64)
    outputs = []
    for t in range(x.shape[1]):
        step = dt[:, t, :, None]
        h = torch.exp(step * a) * h + step * b[:, t, None, :] * x[:, t, :, None]
        outputs.append((h * c[:, t, None, :]).sum(-1))
    return torch.stack(outputs, 1)


@pytest.mark.parametrize("chunk", [1, 3, 8])
def test_chunked_scan_equals_the_recurrence(chunk: int) -> None:
    gen = torch.Generator().manual_seed(0)
    x, b, c = (torch.randn(2, 19, n, generator=gen, dtype=torch.float64) for n in (6, 4, 4))
    dt = torch.rand(2, 19, 6, generator=gen, dtype=torch.float64) * 0.5
    a = -torch.arange(1, 5, dtype=torch.float64).repeat(6, 1)  # every step decays by at least e^-8: no clamping
    torch.testing.assert_close(selective_scan(x, dt, a, b, c, chunk), reference_scan(x, dt, a, b, c))


def test_scan_stays_finite_when_decays_are_strong() -> None:
    gen = torch.Generator().manual_seed(1)
    x, b, c = (torch.randn(1, 40, n, generator=gen) for n in (3, 2, 2))
    y = selective_scan(x, torch.full((1, 40, 3), 50.0), torch.full((3, 2), -20.0), b, c, 8)
    assert torch.isfinite(y).all()
