"""Each loss against a brute-force reference written per target with plain Python math."""

from __future__ import annotations

import math

import pytest
import torch

from modules import losses

T, D, S, N = 4, 3, 5, 9


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


@pytest.fixture
def data() -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    return {
        "query": torch.randn(T, D, generator=gen, dtype=torch.float64),
        "positive": torch.randn(T, D, generator=gen, dtype=torch.float64),
        "pool": torch.randn(S, D, generator=gen, dtype=torch.float64),
        "per_target": torch.randn(T, 2, D, generator=gen, dtype=torch.float64),
        "table": torch.randn(N + 1, D, generator=gen, dtype=torch.float64),
    }


def _dot(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(sum(x * y for x, y in zip(a.tolist(), b.tolist())))


def test_softmax_masks_padding_row(data) -> None:
    target = torch.tensor([1, 4, 9, 2])
    loss = losses.softmax_loss(data["query"], data["table"], target)
    expected = 0.0
    for t in range(T):
        logits = [_dot(data["query"][t], data["table"][i]) for i in range(1, N + 1)]  # row 0 is no class
        expected += math.log(sum(math.exp(x) for x in logits)) - logits[int(target[t]) - 1]
    assert float(loss) == pytest.approx(expected / T, rel=1e-12)
    changed = data["table"].clone()
    changed[0] = 100.0
    assert float(losses.softmax_loss(data["query"], changed, target)) == pytest.approx(float(loss), rel=1e-12)


def test_sampled_softmax_with_logq_and_accidental_hits(data) -> None:
    pos_ids = torch.tensor([3, 5, 7, 8])
    neg_ids = torch.tensor([1, 3, 2, 8, 6])  # 3 and 8 are hits for targets 0 and 3
    pos_logq = torch.linspace(-3, -1, T, dtype=torch.float64)
    neg_logq = torch.linspace(-4, -2, S, dtype=torch.float64)
    loss = losses.sampled_softmax_loss(
        data["query"], data["positive"], data["pool"], pos_ids, neg_ids, pos_logq, neg_logq
    )
    expected = 0.0
    for t in range(T):
        pos = _dot(data["query"][t], data["positive"][t]) - float(pos_logq[t])
        negs = [
            _dot(data["query"][t], data["pool"][j]) - float(neg_logq[j])
            for j in range(S)
            if neg_ids[j] != pos_ids[t]
        ]
        expected += math.log(math.exp(pos) + sum(math.exp(x) for x in negs)) - pos
    assert float(loss) == pytest.approx(expected / T, rel=1e-12)


def test_sampled_softmax_without_ids_or_logq_is_plain_cross_entropy(data) -> None:
    logits = torch.cat(
        [(data["query"] * data["positive"]).sum(1, keepdim=True), data["query"] @ data["pool"].T], 1
    )
    expected = torch.nn.functional.cross_entropy(logits, torch.zeros(T, dtype=torch.int64))
    empty = torch.empty(0, dtype=torch.float64)
    got = losses.sampled_softmax_loss(data["query"], data["positive"], data["pool"], None, None, empty, empty)
    torch.testing.assert_close(got, expected)


@pytest.mark.parametrize("shape", ["pool", "per_target"])
def test_bce(data, shape: str) -> None:
    loss = losses.bce_loss(data["query"], data["positive"], data[shape])
    expected = 0.0
    for t in range(T):
        negs = data["pool"] if shape == "pool" else data["per_target"][t]
        expected -= math.log(_sigmoid(_dot(data["query"][t], data["positive"][t])))
        expected -= sum(math.log(1.0 - _sigmoid(_dot(data["query"][t], n))) for n in negs)
    assert float(loss) == pytest.approx(expected / T, rel=1e-12)


@pytest.mark.parametrize("shape", ["pool", "per_target"])
def test_bpr(data, shape: str) -> None:
    loss = losses.bpr_loss(data["query"], data["positive"], data[shape])
    terms = []
    for t in range(T):
        negs = data["pool"] if shape == "pool" else data["per_target"][t]
        pos = _dot(data["query"][t], data["positive"][t])
        terms += [-math.log(_sigmoid(pos - _dot(data["query"][t], n))) for n in negs]
    assert float(loss) == pytest.approx(sum(terms) / len(terms), rel=1e-12)


def test_gbce_beta_formula() -> None:
    alpha = 4 / (N - 1)
    assert losses.gbce_beta(4, N, 0.75) == pytest.approx(alpha * (0.75 * (1 - 1 / alpha) + 1 / alpha))
    assert losses.gbce_beta(4, N, 0.0) == pytest.approx(1.0)
    assert losses.gbce_beta(4, N, 1.0) == pytest.approx(alpha)
    with pytest.raises(ValueError):
        losses.gbce_beta(0, N, 0.5)


def test_gbce_matches_the_papers_transformed_logit(data) -> None:
    """gSASRec's code: positive logit s -> s' with sigmoid(s') = sigmoid(s)^beta, then BCE (float64, clamped)."""
    t = 0.75
    loss = losses.gbce_loss(data["query"], data["positive"], data["pool"], N, t)
    beta = losses.gbce_beta(S, N, t)
    expected = 0.0
    for i in range(T):
        p = _sigmoid(_dot(data["query"][i], data["positive"][i]))
        transformed = math.log(1.0 / (p**-beta - 1.0))
        expected += -math.log(_sigmoid(transformed))
        expected -= sum(math.log(1.0 - _sigmoid(_dot(data["query"][i], n))) for n in data["pool"])
    assert float(loss) == pytest.approx(expected / T, rel=1e-10)
    s = (data["query"] * data["positive"]).sum(1)
    torch.testing.assert_close(torch.sigmoid(losses.gbce_positive_logit(s, beta)), torch.sigmoid(s) ** beta)


def test_gbce_with_t_zero_is_bce_and_gradients_stay_finite(data) -> None:
    bce = losses.bce_loss(data["query"], data["positive"], data["per_target"])
    gbce = losses.gbce_loss(data["query"], data["positive"], data["per_target"], N, 0.0)
    torch.testing.assert_close(gbce, bce)
    pos = torch.tensor([200.0, -200.0], requires_grad=True)  # sigmoid rounds to 1 and 0
    loss = losses.gbce_from_logits(pos, torch.zeros(2, 3), N, 0.75)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(pos.grad).all()


def test_shared_pool_equals_expanded_per_target(data) -> None:
    expanded = data["pool"].expand(T, S, D)
    for fn in (losses.bce_loss, losses.bpr_loss):
        torch.testing.assert_close(
            fn(data["query"], data["positive"], data["pool"]), fn(data["query"], data["positive"], expanded)
        )


@pytest.mark.parametrize("name", ["bce", "bpr", "gbce"])
def test_pairwise_losses_drop_accidental_hits(data, name: str) -> None:
    """A negative equal to the target counts as if it had not been sampled."""
    positive_ids = torch.tensor([3, 5, 7, 8])
    negative_ids = torch.tensor([[1, 3], [2, 4], [7, 6], [9, 9]])  # hits: (0, 1), (2, 0)
    pos = (data["query"] * data["positive"]).sum(1)
    neg = losses.scores(data["query"], data["per_target"])
    extra = {"num_items": N, "t": 0.75} if name == "gbce" else {}
    fn = getattr(losses, f"{name}_from_logits")
    got = fn(pos, neg, positive_ids=positive_ids, negative_ids=negative_ids, **extra)
    expected = 0.0
    for t in range(T):
        kept = [float(neg[t, j]) for j in range(2) if negative_ids[t, j] != positive_ids[t]]
        p = float(pos[t])
        if name == "bpr":
            expected += sum(-math.log(_sigmoid(p - n)) for n in kept) / len(kept)
        else:
            beta = losses.gbce_beta(2, N, 0.75) if name == "gbce" else 1.0
            expected += -beta * math.log(_sigmoid(p)) - sum(math.log(1.0 - _sigmoid(n)) for n in kept)
    assert float(got) == pytest.approx(expected / T, rel=1e-12)


@pytest.mark.parametrize("chunk", [1, 3, 7, 100])
def test_chunked_softmax_equals_plain_cross_entropy_and_its_gradients(chunk: int) -> None:
    gen = torch.Generator().manual_seed(1)
    query = torch.randn(7, 5, generator=gen, dtype=torch.float64, requires_grad=True)
    classes = torch.randn(11, 5, generator=gen, dtype=torch.float64, requires_grad=True)
    target = torch.tensor([0, 10, 3, 3, 7, 1, 10])
    plain = torch.nn.functional.cross_entropy(query @ classes.T, target)
    plain_grads = torch.autograd.grad(plain, (query, classes))
    chunked = losses.chunked_softmax_loss(query, classes, target, chunk)
    chunked_grads = torch.autograd.grad(chunked, (query, classes))
    torch.testing.assert_close(chunked, plain)
    for got, want in zip(chunked_grads, plain_grads):
        torch.testing.assert_close(got, want)


def test_softmax_loss_chunked_path_matches_unchunked(data) -> None:
    target = torch.tensor([1, 9, 4, 2])
    torch.testing.assert_close(
        losses.softmax_loss(data["query"], data["table"], target, chunk=3),
        losses.softmax_loss(data["query"], data["table"], target),
    )
    half = losses.chunked_softmax_loss(data["query"].bfloat16(), data["table"].bfloat16(), target, 2)
    assert half.dtype == torch.float32
    with pytest.raises(ValueError, match="chunk"):
        losses.chunked_softmax_loss(data["query"], data["table"], target, 0)


@pytest.mark.parametrize("chunk", [1, 3, 100])
def test_chunked_sampled_softmax_equals_the_plain_form_and_its_gradients(chunk: int) -> None:
    gen = torch.Generator().manual_seed(2)
    query = torch.randn(7, 5, generator=gen, dtype=torch.float64, requires_grad=True)
    positive = torch.randn(7, 5, generator=gen, dtype=torch.float64, requires_grad=True)
    pool = torch.randn(6, 5, generator=gen, dtype=torch.float64, requires_grad=True)
    target_ids = torch.tensor([4, 9, 2, 2, 30, 1, 9])
    pool_ids = torch.tensor([2, 8, 9, 3, 1, 7])  # hits in rows 1, 2, 3, 5, 6
    pos_logq = -torch.rand(7, generator=gen, dtype=torch.float64)
    pool_logq = -torch.rand(6, generator=gen, dtype=torch.float64)
    for ids, logq in [((target_ids, pool_ids), (pos_logq, pool_logq)), ((None, None), (None, None))]:
        pos_logits = (query * positive).sum(-1)
        plain = losses.sampled_softmax_from_logits(pos_logits, query @ pool.T, *ids, *logq)
        plain_grads = torch.autograd.grad(plain, (query, positive, pool))
        pos_logits = (query * positive).sum(-1)
        chunked = losses.chunked_sampled_softmax_loss(query, pos_logits, pool, chunk, *ids, *logq)
        chunked_grads = torch.autograd.grad(chunked, (query, positive, pool))
        torch.testing.assert_close(chunked, plain)
        for got, want in zip(chunked_grads, plain_grads):
            torch.testing.assert_close(got, want)


def test_chunked_sampled_softmax_row_whose_every_negative_is_a_hit() -> None:
    query = torch.randn(2, 4, dtype=torch.float64, requires_grad=True)
    pool = torch.randn(1, 4, dtype=torch.float64, requires_grad=True)
    target_ids, pool_ids = torch.tensor([5, 6]), torch.tensor([5])  # row 0: its only negative is itself
    pos_logits = query.sum(-1)
    value = losses.chunked_sampled_softmax_loss(query, pos_logits, pool, 1, target_ids, pool_ids)
    expected = losses.sampled_softmax_from_logits(query.sum(-1), query @ pool.T, target_ids, pool_ids)
    torch.testing.assert_close(value, expected)
    grads = torch.autograd.grad(value, (query, pool))
    assert all(bool(torch.isfinite(g).all()) for g in grads)
    half = losses.chunked_sampled_softmax_loss(query.bfloat16(), pos_logits.bfloat16(), pool.bfloat16(), 2)
    assert half.dtype == torch.float32
    with pytest.raises(ValueError, match="chunk"):
        losses.chunked_sampled_softmax_loss(query, pos_logits, pool, 0)
