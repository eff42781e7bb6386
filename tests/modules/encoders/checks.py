"""Checks every sequence encoder of the zoo must pass, written once and called from each model's test file."""

from __future__ import annotations

import torch

from modules.batch import Batch
from serving.inference import retriever_of, script
from tests.modules.encoders.test_sasrec import N, chain, make_batch

__all__ = ["N", "chain", "make_batch"]
from tests.modules.factories import build

VARYING = [chain(1, 9), chain(5, 2), chain(11, 5), chain(20, 12)]  # history lengths 8, 1, 4, 11


def model(name: str, max_len: int = 12, **kwargs):
    torch.manual_seed(0)
    return build(name, N, max_len=max_len, **({"dim": 16} | kwargs))


def with_times(batch: Batch, gap: int = 60) -> Batch:
    """Timestamps ``gap * position ** 2`` seconds (uneven gaps), aligned with each history."""
    lengths = batch.sparse["history"].lengths()
    offsets = torch.ops.fbgemm.asynchronous_complete_cumsum(lengths)
    position = torch.arange(int(lengths.sum())) - torch.repeat_interleave(offsets[:-1], lengths)
    batch.timestamps = gap * position**2
    return batch


def trains(name: str, steps: int = 30, **kwargs) -> list[float]:
    """Loss curve of ``steps`` Adam steps on the chain pattern (item i is followed by i + 1)."""
    net = model(name, **({"dim": 32} | kwargs)).train()
    optimizer = torch.optim.Adam(net.parameters(), lr=0.02)
    gen = torch.Generator().manual_seed(1)
    curve = []
    for _ in range(steps):
        starts, lengths = torch.randint(1, N + 1, (32,), generator=gen), torch.randint(2, 13, (32,), generator=gen)
        value, logs = net(with_times(make_batch([chain(int(s), int(n)) for s, n in zip(starts, lengths)])))
        optimizer.zero_grad()
        value.backward()
        optimizer.step()
        curve.append(value.detach().item())
    return curve


def check_learns(name: str, steps: int = 30, ratio: float = 0.6, **kwargs) -> None:
    """The mean loss of the last 5 steps is below ``ratio`` times that of the first 5."""
    curve = trains(name, steps, **kwargs)
    assert all(torch.isfinite(torch.tensor(curve)))
    assert sum(curve[-5:]) < ratio * sum(curve[:5]), curve


def check_shapes_and_batch_independence(name: str, **kwargs) -> None:
    """``encode`` is (B, D), finite, and a user's query does not depend on the batch-mates (padding does not leak)."""
    net = model(name, **kwargs).eval()
    user = chain(7, 4)
    with torch.no_grad():
        batch = with_times(make_batch(VARYING, kind="last"))
        assert net.encode(batch).shape == (4, 16)
        assert net.item_embeddings(torch.arange(1, N + 1)).shape == (N, 16)
        alone = net.encode(with_times(make_batch([user], kind="last")))
        mixed = net.encode(with_times(make_batch([chain(1, 12), user, chain(2, 2)], kind="last")))[1:2]
    torch.testing.assert_close(mixed, alone, rtol=1e-5, atol=1e-5)


def check_causal(name: str, **kwargs) -> None:
    """A later item never changes an earlier position's output (equal lengths: positions counted from the end
    stay the same)."""
    net = model(name, **kwargs).eval()
    with torch.no_grad():
        one = net.sequence_outputs(with_times(make_batch([chain(3, 9)])))
        other = net.sequence_outputs(with_times(make_batch([chain(3, 9)[:5] + [9, 2, 17, 5]])))
    torch.testing.assert_close(other[:5], one[:5], rtol=1e-5, atol=1e-5)
    assert not torch.allclose(other[5], one[5])


def check_export(name: str, **kwargs) -> None:
    """The scripted artefact's top-10 scores equal the eager model's ``encode · item_embeddings``."""
    net = model(name, **kwargs).eval()
    batch = with_times(make_batch(VARYING, kind="last"))
    history = batch.sparse["history"]
    scripted = script(retriever_of(net))
    with torch.no_grad():
        eager = net.encode(batch) @ net.item_embeddings(torch.arange(1, N + 1)).T
        scores, items = scripted(history.values(), history.lengths(), 10, False, batch.timestamps)
    torch.testing.assert_close(scores, eager.topk(10).values, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(eager.gather(1, items - 1), scores, rtol=1e-4, atol=1e-4)
