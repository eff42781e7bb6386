"""SASRec on the long-sequence attention backends: the exact ones train exactly like SDPA, and block
checkpointing changes neither the loss nor the gradients."""

from __future__ import annotations

import pytest
import torch

from modules.attention_config import AttentionConfig
from modules.encoders.sasrec import SASRecEncoderConfig
from tests.modules.encoders.test_sasrec import N, chain, make_batch
from tests.modules.factories import sasrec

MIXED = [chain(1, 30), chain(5, 2), chain(11, 9), chain(20, 17), chain(3, 3), chain(9, 25)]


def _loss_and_grads(backend: str, config: AttentionConfig, groups: int, dropout: float = 0.0):
    torch.manual_seed(0)
    net = sasrec(N, dim=16, max_len=32, num_heads=2, dropout=dropout, attn_backend=backend, length_groups=groups,
                 attention=config).train()
    torch.manual_seed(1)
    value, _ = net(make_batch(MIXED))
    value.backward()
    return value.detach(), [p.grad for p in net.encoder.parameters()]


@pytest.mark.parametrize("groups", [1, 4])
@pytest.mark.parametrize(
    "backend,config",
    [("jagged", AttentionConfig(chunk=4)), ("jagged", AttentionConfig(chunk=64)), ("local", AttentionConfig(window=32))],
)
def test_exact_backends_give_sdpas_loss_and_gradients(groups: int, backend: str, config: AttentionConfig) -> None:
    loss, grads = _loss_and_grads(backend, config, groups)
    reference, reference_grads = _loss_and_grads("sdpa", AttentionConfig(), groups)
    torch.testing.assert_close(loss, reference, rtol=1e-5, atol=1e-6)
    for got, want in zip(grads, reference_grads):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("backend", ["sdpa", "jagged", "linear"])
def test_checkpointing_keeps_loss_and_gradients(backend: str) -> None:
    config = {"chunk": 8, "dropout": "output"}
    plain = _loss_and_grads(backend, AttentionConfig(**config), 4, dropout=0.2)
    checkpointed = _loss_and_grads(backend, AttentionConfig(checkpoint=True, **config), 4, dropout=0.2)
    torch.testing.assert_close(checkpointed[0], plain[0])
    for got, want in zip(checkpointed[1], plain[1]):
        torch.testing.assert_close(got, want)


def test_encoder_config_passes_the_attention_config_and_names_bad_keys() -> None:
    config = AttentionConfig(window=16, dropout="output", checkpoint=True)
    net = sasrec(N, dim=16, max_len=32, attn_backend="local", attention=config)
    assert net.encoder.checkpoint_blocks and net.encoder.blocks[0].attn.attn_config == config
    with pytest.raises(ValueError, match="model.encoder.attention.dropout=output"):
        SASRecEncoderConfig(attn_backend="linear", dropout=0.2).validate(16)
