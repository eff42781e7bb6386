"""GRU4Rec: trains on the chain pattern, causal, padding-free, exports to the same scores, validates its config."""

from __future__ import annotations

import pytest
import torch

from tests.modules.encoders import checks
from tests.modules.factories import build


@pytest.mark.parametrize("kwargs", [{}, {"num_layers": 2, "hidden": 24, "dropout": 0.1}])
def test_learns_the_next_item(kwargs) -> None:
    checks.check_learns("gru4rec", **kwargs)


@pytest.mark.parametrize("kwargs", [{}, {"num_layers": 2, "hidden": 24}])
def test_shapes_causality_padding_and_export(kwargs) -> None:
    checks.check_shapes_and_batch_independence("gru4rec", **kwargs)
    checks.check_causal("gru4rec", **kwargs)
    checks.check_export("gru4rec", **kwargs)


def test_hidden_width_gets_a_projection() -> None:
    net = checks.model("gru4rec", hidden=24)
    assert net.encoder.gru.hidden_size == 24 and net.encoder.project.weight.shape == (16, 24)
    assert isinstance(checks.model("gru4rec").encoder.project, torch.nn.Identity)


@pytest.mark.parametrize(("bad", "match"), [({"num_layers": 0}, "num_layers"), ({"hidden": -1}, "hidden"),
                                            ({"dropout": 1.0}, "model.encoder.dropout")])
def test_bad_config_names_the_key(bad, match) -> None:
    with pytest.raises(ValueError, match=match):
        build("gru4rec", 10, max_len=8, dim=16, **bad)
