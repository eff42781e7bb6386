"""`modules.dropout`: the same distribution as `torch.nn.functional.dropout`, reproducible from the seed."""

from __future__ import annotations

import pytest
import torch

from modules.dropout import Dropout, dropout


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_keeps_each_element_with_probability_one_minus_p_and_rescales(p: float) -> None:
    torch.manual_seed(0)
    x = torch.full((400, 501), 2.0)  # numel not a multiple of 4: the last random word is partly used
    out = dropout(x, p)
    kept = out != 0
    assert abs(kept.float().mean().item() - (1 - p)) < 0.005  # 200k draws: ~5 standard deviations
    assert torch.allclose(out[kept], torch.tensor(2.0 / (1 - p)), rtol=1e-4)
    assert abs(out.mean().item() - 2.0) < 0.05  # unbiased
    rows, cols = kept.float().mean(1), kept.float().mean(0)  # no stripes from reusing a word's bits
    assert rows.std() < 3 * (p * (1 - p) / 501) ** 0.5 and cols.std() < 3 * (p * (1 - p) / 400) ** 0.5


def test_masks_follow_torch_seed_and_gradients_follow_the_mask() -> None:
    x = torch.randn(64, 33, requires_grad=True)
    torch.manual_seed(3)
    first = dropout(x, 0.3)
    torch.manual_seed(3)
    again = dropout(x, 0.3)
    assert torch.equal(first, again)
    assert not torch.equal(dropout(x, 0.3), first)  # the generator moved on
    first.sum().backward()
    torch.testing.assert_close(x.grad, (first != 0).float() / 0.7, rtol=1e-4, atol=1e-6)


def test_identity_in_eval_or_at_zero_and_bad_p_rejected() -> None:
    x = torch.randn(5, 7)
    assert dropout(x, 0.5, training=False) is x and dropout(x, 0.0) is x
    module = Dropout(0.25).eval()
    assert module(x) is x and "p=0.25" in repr(module)
    assert dropout(torch.empty(0, 3), 0.2).shape == (0, 3)
    for bad in (-0.1, 1.0):
        with pytest.raises(ValueError, match="dropout probability"):
            dropout(x, bad)
        with pytest.raises(ValueError, match="dropout probability"):
            Dropout(bad)
