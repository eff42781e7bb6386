"""The long-sequence backends against exact attention (jagged, local with a full window) or their own O(L^2)
formula (linear); masks, empty rows, gradients, dropout modes and the config's checks."""

from __future__ import annotations

import pytest
import torch

from modules.attention import attention, feature_map
from modules.attention_config import AttentionConfig

B, H, L, DH = 4, 2, 13, 4
LENGTHS = torch.tensor([13, 7, 1, 5])


def _qkv(seed: int = 0, length: int = L) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(B, H, length, DH, generator=gen, dtype=torch.float64, requires_grad=True) for _ in range(3)]


def _right_padding(lengths: torch.Tensor = LENGTHS, length: int = L) -> torch.Tensor:
    return torch.arange(length)[None, :] >= lengths[:, None]


def _left_padding() -> torch.Tensor:
    return torch.arange(L)[None, :] < (L - LENGTHS)[:, None]


def _run(backend: str, config: AttentionConfig, **kwargs) -> list[torch.Tensor]:
    """Output and q/k/v gradients of a fixed random projection of the output (over ``kwargs["rows"]`` only)."""
    rows = kwargs.pop("rows", None)
    q, k, v = _qkv()
    out = attention(q, k, v, backend=backend, config=config, **kwargs)
    weights = torch.randn(out.shape, generator=torch.Generator().manual_seed(1), dtype=out.dtype)
    if rows is not None:
        weights = weights * rows
    (out * weights).sum().backward()
    return [out.detach() if rows is None else (out * rows).detach(), q.grad, k.grad, v.grad]


def _real(lengths: torch.Tensor = LENGTHS, length: int = L) -> torch.Tensor:
    """(B, 1, L, 1) 1.0 at real (query) positions of right-padded rows."""
    return (~_right_padding(lengths, length)).to(torch.float64)[:, None, :, None]


def _assert_same(a: list[torch.Tensor], b: list[torch.Tensor]) -> None:
    for x, y in zip(a, b):
        assert torch.isfinite(x).all() and torch.isfinite(y).all()
        torch.testing.assert_close(x, y, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("chunk", [1, 4, 64])
@pytest.mark.parametrize("causal", [True, False])
def test_jagged_equals_padded_sdpa_on_real_positions(chunk: int, causal: bool) -> None:
    config = AttentionConfig(chunk=chunk)
    mask = _right_padding()
    exact = _run("sdpa", config, causal=causal, key_padding_mask=mask, rows=_real())
    jagged = _run("jagged", config, causal=causal, lengths=LENGTHS, rows=_real())
    from_mask = _run("jagged", config, causal=causal, key_padding_mask=mask, rows=_real())
    _assert_same(exact, jagged)
    _assert_same(exact, from_mask)


def test_jagged_without_lengths_is_causal_sdpa() -> None:
    config = AttentionConfig(chunk=4)
    _assert_same(_run("sdpa", config, causal=True), _run("jagged", config, causal=True))


def test_jagged_rejects_left_padding() -> None:
    q, k, v = _qkv()
    with pytest.raises(ValueError, match="right padding"):
        attention(q, k, v, causal=True, key_padding_mask=_left_padding(), backend="jagged")


@pytest.mark.parametrize("chunk", [1, 5, 64])
@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("padding", ["none", "right", "left"])
def test_local_with_a_full_window_is_exact(chunk: int, causal: bool, padding: str) -> None:
    mask = {"none": None, "right": _right_padding(), "left": _left_padding()}[padding]
    exact = _run("naive", AttentionConfig(), causal=causal, key_padding_mask=mask)
    local = _run("local", AttentionConfig(window=L, chunk=chunk), causal=causal, key_padding_mask=mask)
    _assert_same(exact, local)


def _band(window: int, global_tokens: int, causal: bool) -> torch.Tensor:
    """(L, L) allowed pattern of the local backend, written out."""
    i, j = torch.arange(L)[:, None], torch.arange(L)[None, :]
    near = ((i - j) < window) & (i >= j) if causal else (i - j).abs() < window
    glob = (j < global_tokens) & ((i >= j) if causal else torch.ones_like(near))
    return near | glob


@pytest.mark.parametrize("window,global_tokens,chunk", [(1, 0, 4), (3, 0, 2), (4, 2, 3), (5, 3, 16), (2, 20, 4)])
@pytest.mark.parametrize("causal", [True, False])
def test_local_equals_naive_under_its_band_mask(window: int, global_tokens: int, chunk: int, causal: bool) -> None:
    q, k, v = (t.detach() for t in _qkv())
    config = AttentionConfig(window=window, global_tokens=global_tokens, chunk=chunk)
    local = attention(q, k, v, causal=causal, backend="local", config=config)
    scores = (q @ k.transpose(-2, -1) / DH**0.5).masked_fill(~_band(window, global_tokens, causal), float("-inf"))
    torch.testing.assert_close(local, torch.softmax(scores, -1) @ v)


def _linear_reference(q, k, v, causal: bool, mask: torch.Tensor | None, kind: str) -> torch.Tensor:
    """``(phi(Q) phi(K)^T * M) V / rowsum(phi(Q) phi(K)^T * M)``: the O(L^2) formula."""
    weights = feature_map(q, kind) @ feature_map(k, kind).transpose(-2, -1)
    if causal:
        weights = weights.tril()
    if mask is not None:
        weights = weights * (~mask)[:, None, None, :]
    return weights @ v / weights.sum(-1, keepdim=True).clamp_min(1e-12)


@pytest.mark.parametrize("kind", ["elu", "relu"])
@pytest.mark.parametrize("chunk", [1, 4, 64])
@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("padding", ["none", "right"])
def test_linear_matches_its_quadratic_formula(kind: str, chunk: int, causal: bool, padding: str) -> None:
    q, k, v = (t.detach() for t in _qkv())
    mask = _right_padding() if padding == "right" else None
    config = AttentionConfig(feature_map=kind, chunk=chunk, dropout="output")
    out = attention(q, k, v, causal=causal, key_padding_mask=mask, backend="linear", config=config)
    torch.testing.assert_close(out, _linear_reference(q, k, v, causal, mask, kind))


def test_linear_local_mix_is_the_weighted_sum() -> None:
    q, k, v = (t.detach() for t in _qkv())
    base = {"window": 3, "chunk": 4, "dropout": "output"}
    mixed = attention(q, k, v, causal=True, backend="linear", config=AttentionConfig(local_mix=0.25, **base))
    linear = attention(q, k, v, causal=True, backend="linear", config=AttentionConfig(**base))
    local = attention(q, k, v, causal=True, backend="local", config=AttentionConfig(**base))
    torch.testing.assert_close(mixed, 0.25 * local + 0.75 * linear)


BACKEND_CONFIGS = [
    ("jagged", AttentionConfig(chunk=4)),
    ("local", AttentionConfig(window=3, global_tokens=2, chunk=4)),
    ("linear", AttentionConfig(chunk=4, dropout="output")),
    ("linear", AttentionConfig(chunk=4, window=3, local_mix=0.5, dropout="output")),
]


@pytest.mark.parametrize("backend,config", BACKEND_CONFIGS)
def test_length_one_and_fully_padded_rows_are_finite(backend: str, config: AttentionConfig) -> None:
    """Row 2 has length 1, and with left padding every padded query row sees no key: finite, zero, no NaN grads."""
    q, k, v = _qkv()
    lengths = torch.tensor([13, 7, 1, 0])
    if backend == "jagged":
        out = attention(q, k, v, causal=True, backend=backend, config=config, lengths=lengths)
    else:
        mask = torch.arange(L)[None, :] < (L - lengths)[:, None]  # left padding; row 3 entirely padded
        out = attention(q, k, v, causal=True, key_padding_mask=mask, backend=backend, config=config)
        assert torch.all(out[3] == 0)
    out.sum().backward()
    for t in (out, q.grad, k.grad, v.grad):
        assert torch.isfinite(t).all()
    assert q.grad.abs().sum() > 0 and v.grad.abs().sum() > 0


@pytest.mark.parametrize("backend", ["jagged", "local"])
def test_weight_dropout_keeps_rows_normalised_in_expectation(backend: str) -> None:
    """Weight dropout (modules.dropout masks) with v = 1: an output is its kept weight mass / (1 - p), mean 1."""
    gen = torch.Generator().manual_seed(0)
    q, k = (torch.randn(16, 2, 64, DH, generator=gen, dtype=torch.float64) for _ in range(2))
    torch.manual_seed(0)
    config = AttentionConfig(chunk=8, window=64)
    lengths = torch.full((16,), 64)
    out = attention(q, k, torch.ones_like(q), causal=True, dropout_p=0.5, backend=backend, config=config,
                    lengths=lengths)[..., 0]
    assert not torch.allclose(out, torch.ones_like(out))  # masks were applied
    assert abs(out.mean().item() - 1.0) < 0.05


@pytest.mark.parametrize("backend", ["sdpa", "jagged", "local", "linear"])
def test_output_dropout_drops_output_elements(backend: str) -> None:
    q, k, v = (t.detach() for t in _qkv())
    config = AttentionConfig(chunk=4, window=L, dropout="output")
    clean = attention(q, k, v, causal=True, backend=backend, config=config)
    torch.manual_seed(0)
    dropped = attention(q, k, v, causal=True, dropout_p=0.5, backend=backend, config=config)
    zero = dropped == 0
    assert 0.35 < zero.double().mean() < 0.65
    torch.testing.assert_close(dropped[~zero], 2.0 * clean[~zero])


def test_long_rows_never_build_a_square_mask() -> None:
    """Local and linear at L = 2,048: every saved tensor is far below one (B, H, L, L) score tensor."""
    length, dh = 2048, 8
    q, k, v = (torch.randn(2, 1, length, dh, requires_grad=True) for _ in range(3))
    square = 2 * length * length
    for backend in ("local", "linear"):
        sizes: list[int] = []

        def keep(t: torch.Tensor, sizes: list[int] = sizes) -> torch.Tensor:
            sizes.append(t.numel())
            return t

        with torch.autograd.graph.saved_tensors_hooks(keep, lambda t: t):
            attention(q, k, v, causal=True, backend=backend, config=AttentionConfig(dropout="output")).sum()
        assert max(sizes) < square / 8, (backend, max(sizes))


@pytest.mark.parametrize(
    "settings,message",
    [
        ({"window": 0}, "model.attention.window"),
        ({"chunk": 0}, "model.attention.chunk"),
        ({"global_tokens": -1}, "model.attention.global_tokens"),
        ({"feature_map": "softmax"}, "model.attention.feature_map"),
        ({"local_mix": 1.5}, "model.attention.local_mix"),
        ({"dropout": "heads"}, "model.attention.dropout"),
    ],
)
def test_config_names_the_bad_key(settings: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        AttentionConfig(**settings).validate("local")


def test_linear_with_weight_dropout_is_refused() -> None:
    AttentionConfig().validate("linear", dropout_p=0.0)
    with pytest.raises(ValueError, match="model.attention.dropout=output"):
        AttentionConfig().validate("linear", dropout_p=0.2)
    with pytest.raises(ValueError, match="backend"):
        AttentionConfig().validate("flash")
