"""Mamba4Rec: the model trains, is causal, padding-free, exports."""

from __future__ import annotations

import pytest
import torch

from tests.modules.encoders import checks
from tests.modules.factories import build


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
    dt = torch.nn.functional.softplus(block.dt_bias.detach())
    assert torch.all(block.skip == 1) and 1e-3 <= float(dt.min()) and float(dt.max()) <= 0.1 + 1e-6


@pytest.mark.parametrize(("bad", "match"), [({"state": 0}, "state"), ({"scan_chunk": 9}, "scan_chunk"),
                                            ({"dropout": 1.0}, "model.encoder.dropout")])
def test_bad_config_names_the_key(bad, match) -> None:
    with pytest.raises(ValueError, match=match):
        build("mamba4rec", 10, max_len=8, dim=16, **bad)
