"""The two attention backends agree, ignore padding, and never produce NaN for fully masked rows."""

from __future__ import annotations

import math

import pytest
import torch

from modules.attention import attention

B, H, L, DH = 3, 2, 6, 4
LENGTHS = torch.tensor([6, 3, 1])


def _qkv(seed: int = 0) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [
        torch.randn(B, H, L, DH, generator=gen, dtype=torch.float64, requires_grad=True) for _ in range(3)
    ]


def _padding(kind: str) -> torch.Tensor | None:
    """(B, L) True = padding, with the real items on the right ("left" padding) or on the left ("right")."""
    if kind == "none":
        return None
    cols = torch.arange(L)
    if kind == "right":
        return cols[None, :] >= LENGTHS[:, None]
    return cols[None, :] < (L - LENGTHS)[:, None]


def _forward_backward(backend: str, causal: bool, padding: str) -> list[torch.Tensor]:
    q, k, v = _qkv()
    out = attention(q, k, v, causal=causal, key_padding_mask=_padding(padding), backend=backend)
    weights = torch.randn(out.shape, generator=torch.Generator().manual_seed(1), dtype=out.dtype)
    (out * weights).sum().backward()
    return [out.detach(), q.grad, k.grad, v.grad]


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("padding", ["none", "right", "left"])
def test_backends_agree_forward_and_backward(causal: bool, padding: str) -> None:
    sdpa = _forward_backward("sdpa", causal, padding)
    naive = _forward_backward("naive", causal, padding)
    for a, b in zip(sdpa, naive):
        assert torch.isfinite(a).all() and torch.isfinite(b).all()
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10)


def test_naive_matches_hand_computation() -> None:
    """One query row of the naive backend against softmax(q k / sqrt(d)) v written out per key."""
    q, k, v = (t.detach() for t in _qkv())
    out = attention(q, k, v, causal=True, backend="naive")
    b, h, i = 1, 0, 3
    logits = torch.stack([q[b, h, i] @ k[b, h, j] / math.sqrt(DH) for j in range(i + 1)])
    expected = (torch.softmax(logits, dim=0)[:, None] * v[b, h, : i + 1]).sum(0)
    torch.testing.assert_close(out[b, h, i], expected)


@pytest.mark.parametrize("backend", ["sdpa", "naive"])
def test_padding_is_ignored(backend: str) -> None:
    """A right-padded example gives what attention over its real keys alone gives."""
    q, k, v = (t.detach() for t in _qkv())
    out = attention(q, k, v, key_padding_mask=_padding("right"), backend=backend)
    n = int(LENGTHS[1])
    alone = attention(q[1:2], k[1:2, :, :n], v[1:2, :, :n], backend=backend)
    torch.testing.assert_close(out[1:2], alone)


@pytest.mark.parametrize("backend", ["sdpa", "naive"])
def test_fully_masked_rows_are_zero_and_finite(backend: str) -> None:
    """Left padding + causal: padded queries see only padded keys; their output is 0 and gradients are finite."""
    q, k, v = _qkv()
    mask = _padding("left")
    out = attention(q, k, v, causal=True, key_padding_mask=mask, backend=backend)
    out.sum().backward()
    assert torch.all(out[mask[:, None, :, None].expand_as(out)] == 0)
    for t in (out, q.grad, k.grad, v.grad):
        assert torch.isfinite(t).all()
    # Padded keys get no gradient: nothing real attends to them and the empty rows' outputs are constant 0.
    assert torch.all(k.grad[mask[:, None, :, None].expand_as(k)] == 0)


def test_unknown_backend_is_rejected() -> None:
    q, k, v = (t.detach() for t in _qkv())
    with pytest.raises(ValueError, match="backend"):
        attention(q, k, v, backend="flash3")


def test_attention_dropout_on_cpu_runs_the_naive_path_with_seeded_masks() -> None:
    q, k, v = (torch.randn(2, 1, 6, 4) for _ in range(3))
    outputs = []
    for backend in ("sdpa", "naive"):
        torch.manual_seed(5)
        outputs.append(attention(q, k, v, causal=True, dropout_p=0.5, backend=backend))
    torch.testing.assert_close(outputs[0], outputs[1])
    assert not torch.allclose(outputs[0], attention(q, k, v, causal=True))  # dropout did act
