"""Mamba4Rec: the chunked scan equals the plain recurrence, the model trains, is causal, padding-free, exports."""

from __future__ import annotations

import pytest
import torch

from modules.encoders.mamba4rec import selective_scan
from tests.modules.encoders import checks
from tests.modules.factories import build


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


@pytest.mark.parametrize("kwargs", [{}, {"num_layers": 2, "state": 4, "scan_chunk": 3, "conv": 2}])
def test_learns_causal_padding_free_and_exports(kwargs) -> None:
    checks.check_learns("mamba4rec", dropout=0.0, **kwargs)
    checks.check_shapes_and_batch_independence("mamba4rec", **kwargs)
    checks.check_causal("mamba4rec", **kwargs)
    checks.check_export("mamba4rec", **kwargs)


def test_length_groups_give_the_whole_batch_outputs() -> None:
    batch = checks.make_batch(checks.VARYING + [checks.chain(3, 3)])
    whole, grouped = (checks.model("mamba4rec", dropout=0.0, length_groups=g).train() for g in (1, 3))
    torch.testing.assert_close(grouped.sequence_outputs(batch), whole.sequence_outputs(batch), rtol=1e-5, atol=1e-5)


def test_meta_build_then_reset_initialises_the_ssm() -> None:
    net = build("mamba4rec", 10, max_len=8, dim=16, device="meta").to_empty(device="cpu")
    net.reset_parameters()
    block = net.encoder.mambas[0]
    torch.testing.assert_close(-torch.exp(block.a_log[0]), -torch.arange(1.0, 17.0))
    dt = torch.nn.functional.softplus(block.dt_bias)
    assert torch.all(block.skip == 1) and 1e-3 <= float(dt.min()) and float(dt.max()) <= 0.1 + 1e-6


@pytest.mark.parametrize(("bad", "match"), [({"state": 0}, "state"), ({"scan_chunk": 9}, "scan_chunk"),
                                            ({"dropout": 1.0}, "model.encoder.dropout")])
def test_bad_config_names_the_key(bad, match) -> None:
    with pytest.raises(ValueError, match=match):
        build("mamba4rec", 10, max_len=8, dim=16, **bad)
