"""TransformerBlock: both residual layouts, causality, backend agreement, every projection quantisable; every
attention backend traces and scripts; checkpointed stacks give the same gradients and keep less."""

# No `from __future__ import annotations`: TorchScript reads `_CausalStack.forward`'s annotations as types.

import pytest
import torch
import torchrec.fx
from torch import nn

from modules.attention_config import AttentionConfig
from modules.transformer import MultiHeadAttention, TransformerBlock, run_blocks

B, L, D = 2, 5, 8


def _block(backend: str = "sdpa", **kwargs) -> TransformerBlock:
    torch.manual_seed(0)
    return TransformerBlock(D, num_heads=2, attn_backend=backend, **kwargs).eval()


def test_shape_and_pre_ln_residual() -> None:
    """With the attention and FFN output layers zeroed, the block is the identity: x + f(LN(x)) with f = 0."""
    block = _block()
    x = torch.randn(B, L, D)
    assert block(x).shape == (B, L, D)
    with torch.no_grad():
        for layer in (block.attn.out, block.ffn[3]):
            layer.weight.zero_()
            layer.bias.zero_()
    torch.testing.assert_close(block(x), x)


def test_normed_residual_layout_starts_each_residual_from_the_norm() -> None:
    """With the attention and FFN output layers zeroed, the block is LN2(LN1(x)); pre-LN would be x."""
    block = _block(layout="normed_residual")
    x = 3.0 * torch.randn(B, L, D) + 1.0
    with torch.no_grad():
        for layer in (block.attn.out, block.ffn[3]):
            layer.weight.zero_()
            layer.bias.zero_()
        block.attn_norm.weight.uniform_(0.5, 1.5)
    torch.testing.assert_close(block(x), block.ffn_norm(block.attn_norm(x)))


@pytest.mark.parametrize("layout", ["pre_ln", "normed_residual"])
def test_causal_block_ignores_the_future(layout: str) -> None:
    block = _block(layout=layout)
    x = torch.randn(B, L, D)
    changed = x.clone()
    changed[:, 3:] = torch.randn(B, L - 3, D)
    torch.testing.assert_close(block(x, causal=True)[:, :3], block(changed, causal=True)[:, :3])
    assert not torch.allclose(block(x, causal=False)[:, :3], block(changed, causal=False)[:, :3])


@pytest.mark.parametrize("causal", [False, True])
def test_backends_agree(causal: bool) -> None:
    x = torch.randn(B, L, D, requires_grad=True)
    padding = torch.tensor([[False] * L, [False] * 3 + [True] * 2])
    outs, grads = [], []
    for backend in ("sdpa", "naive"):
        block = _block(backend)
        y = block(x, causal=causal, key_padding_mask=padding)
        (g,) = torch.autograd.grad(y.square().sum(), x)
        outs.append(y)
        grads.append(g)
    torch.testing.assert_close(outs[0], outs[1], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-4, atol=1e-4)


def test_dynamic_int8_quantises_every_projection() -> None:
    block = _block(activation="gelu")
    quantised = torch.ao.quantization.quantize_dynamic(block, {nn.Linear}, dtype=torch.qint8)
    dynamic = [m for m in quantised.modules() if isinstance(m, torch.ao.nn.quantized.dynamic.Linear)]
    assert len(dynamic) == 4  # qkv, attention output, two FFN layers
    assert not any(type(m) is nn.Linear for m in quantised.modules())
    x = torch.randn(B, L, D)
    torch.testing.assert_close(quantised(x), block(x), rtol=0.05, atol=0.05)


def test_dropout_only_in_training() -> None:
    block = _block(dropout=0.5)
    x = torch.randn(B, L, D)
    torch.testing.assert_close(block(x), block(x))
    block.train()
    assert not torch.allclose(block(x), block(x))


def test_bad_settings_are_rejected() -> None:
    with pytest.raises(ValueError, match="divisible"):
        MultiHeadAttention(D, num_heads=3)
    with pytest.raises(ValueError, match="activation"):
        TransformerBlock(D, activation="swish")
    with pytest.raises(ValueError, match="attn_backend"):
        TransformerBlock(D, attn_backend="flash")
    with pytest.raises(ValueError, match="layout"):
        TransformerBlock(D, layout="post_ln")


LONG_BACKENDS = [
    ("sdpa", AttentionConfig()),
    ("jagged", AttentionConfig(chunk=2)),
    ("local", AttentionConfig(window=2, global_tokens=1, chunk=2)),
    ("linear", AttentionConfig(chunk=2, dropout="output")),
    ("linear", AttentionConfig(chunk=2, window=2, local_mix=0.5, dropout="output")),
]


@pytest.mark.parametrize("backend,config", LONG_BACKENDS)
def test_every_backend_traces_with_fx_and_scripts(backend: str, config: AttentionConfig) -> None:
    """Export FX-traces the blocks (torchrec.fx) and scripts the graph: the scripted block gives the same output."""
    block = _block(backend, attn_config=config)
    x = torch.randn(B, L, D)
    scripted = torch.jit.script(torchrec.fx.symbolic_trace(_CausalStack(nn.ModuleList([block, block]))))
    torch.testing.assert_close(scripted(x), block(block(x)))


class _CausalStack(nn.Module):
    """Calls its blocks as `serving.inference.TopKRecommender` does: ``block(x, True)``."""

    def __init__(self, blocks: nn.ModuleList) -> None:
        super().__init__()
        self.blocks = blocks

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x, True)
        return x


@pytest.mark.parametrize("backend,config", LONG_BACKENDS)
def test_checkpointed_blocks_give_the_same_outputs_and_gradients(backend: str, config: AttentionConfig) -> None:
    """With dropout on: checkpointing replays the RNG, so even the dropout masks of the recomputation match."""
    torch.manual_seed(0)
    blocks = nn.ModuleList(
        TransformerBlock(D, num_heads=2, dropout=0.3, attn_backend=backend, attn_config=config) for _ in range(2)
    ).train()
    x = torch.randn(B, L, D, requires_grad=True)
    lengths = torch.tensor([L, 2])
    results = []
    for checkpointed in (False, True):
        torch.manual_seed(1)
        y = run_blocks(blocks, x, lengths, checkpointed)
        grads = torch.autograd.grad(y.square().sum(), [x, *blocks.parameters()])
        results.append((y, grads))
    torch.testing.assert_close(results[1][0], results[0][0])
    for a, b in zip(results[1][1], results[0][1]):
        torch.testing.assert_close(a, b)


def test_checkpointing_keeps_less_for_backward() -> None:
    """Saved activations of 4 checkpointed blocks: each block's input only, a fraction of the plain stack's."""
    blocks = nn.ModuleList(TransformerBlock(D, num_heads=2, attn_backend="naive") for _ in range(4))
    x = torch.randn(B, 64, D, requires_grad=True)
    saved = []
    for checkpointed in (False, True):
        sizes: list[int] = []

        def keep(t: torch.Tensor, sizes: list[int] = sizes) -> torch.Tensor:
            sizes.append(t.numel() * t.element_size())
            return t

        with torch.autograd.graph.saved_tensors_hooks(keep, lambda t: t):
            run_blocks(blocks, x, None, checkpointed)
        saved.append(sum(sizes))
    assert saved[1] < saved[0] / 5


def test_bad_attention_settings_name_the_key() -> None:
    with pytest.raises(ValueError, match="model.attention.window"):
        TransformerBlock(D, attn_backend="local", attn_config=AttentionConfig(window=0))
    with pytest.raises(ValueError, match="dropout=output"):
        TransformerBlock(D, dropout=0.1, attn_backend="linear")
