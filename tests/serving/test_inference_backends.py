"""A SASRec on each long-sequence attention backend scripts into the inference module (FX trace + TorchScript,
as `seqrec export` does) and scores like the eager model."""

from __future__ import annotations

import pytest
import torch

from modules.attention_config import AttentionConfig
from serving.inference import retriever_of, script
from tests.modules.encoders.test_sasrec import N, chain, make_batch
from tests.modules.factories import sasrec


@pytest.mark.parametrize(
    "backend,config",
    [
        ("jagged", AttentionConfig(chunk=4)),
        ("local", AttentionConfig(window=4, global_tokens=1, chunk=4)),
        ("linear", AttentionConfig(chunk=4, window=4, local_mix=0.3, dropout="output")),
    ],
)
def test_scripted_model_scores_like_the_eager_one(backend: str, config: AttentionConfig) -> None:
    torch.manual_seed(0)
    model = sasrec(N, dim=16, max_len=20, num_heads=2, attn_backend=backend, attention=config).eval()
    batch = make_batch([chain(1, 15), chain(4, 3), chain(9, 8)], kind="last")
    with torch.no_grad():
        expected = model.encode(batch) @ model.item_embeddings(torch.arange(1, N + 1)).T
        history = batch.sparse["history"]
        scores, items = script(retriever_of(model))(history.values(), history.lengths(), N, False)
    got = torch.zeros_like(scores).scatter_(1, items - 1, scores)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
