"""Contrastive regularisation: NT-Xent against a hand computation, and the model adds it only when configured."""

from __future__ import annotations

import math

import pytest
import torch

from modules.contrastive import nt_xent
from tests.modules.encoders import checks
from tests.modules.encoders.test_sasrec import make_batch


def test_nt_xent_matches_the_definition() -> None:
    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(3, 4, generator=gen), torch.randn(3, 4, generator=gen)
    views = torch.nn.functional.normalize(torch.cat([a, b]), dim=-1)
    sims = views @ views.T / 0.5
    expected = 0.0
    for i in range(6):
        partner = (i + 3) % 6
        others = [math.exp(sims[i, j]) for j in range(6) if j != i]
        expected -= math.log(math.exp(sims[i, partner]) / sum(others)) / 6
    torch.testing.assert_close(nt_xent(a, b, 0.5), torch.tensor(expected, dtype=torch.float32))
    aligned, crossed = nt_xent(a, a, 0.5), nt_xent(a, a.roll(1, 0), 0.5)
    assert aligned < crossed  # views of the same sequence are the positives


@pytest.mark.parametrize("name", ["sasrec", "gru4rec", "hstu", "mamba4rec"])
def test_model_adds_the_weighted_term_in_training_only(name: str) -> None:
    batch = checks.with_times(make_batch(checks.VARYING))
    plain = checks.model(name, dropout=0.0)
    with_cl = checks.model(name, dropout=0.0, contrastive_weight=0.5, contrastive_temperature=0.2)
    with_cl.load_state_dict(plain.state_dict())
    base, base_logs = plain.train()(batch)
    total, logs = with_cl.train()(batch)
    assert "contrastive" not in base_logs and float(logs["contrastive"]) > 0
    hidden = with_cl.encoder(*_encoder_inputs(with_cl, batch))  # dropout 0: both views equal this
    last = hidden[torch.arange(4), batch.sparse["history"].lengths() - 1]
    torch.testing.assert_close(total, base + 0.5 * nt_xent(last, last, 0.2), rtol=1e-5, atol=1e-5)
    total.backward()
    assert all(torch.isfinite(p.grad).all() for p in with_cl.parameters() if p.grad is not None)
    assert "contrastive" not in with_cl.eval()(batch)[1]


def _encoder_inputs(net, batch):
    history = net._history(batch)
    return history.values(), history.lengths(), batch.timestamps


def test_bad_values_name_the_key() -> None:
    for bad in ({"contrastive_weight": -1.0}, {"contrastive_temperature": 0.0}):
        with pytest.raises(ValueError, match="model.objective.contrastive"):
            checks.model("gru4rec", **bad)
