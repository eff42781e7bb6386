"""Cloze inputs: masks at the configured rate, labels are the masked items, every sequence predicts something."""

from __future__ import annotations

import torch

from modules.cloze import cloze_inputs
from modules.sequence import append_each
from tests.modules.encoders.test_sasrec import N, chain, make_batch


def test_cloze_inputs_mask_at_the_rate_and_keep_the_labels() -> None:
    torch.manual_seed(0)
    sequences = [chain(1 + i % N, 2 + i % 40) for i in range(400)]
    batch = make_batch(sequences)
    kjt, masked, labels = cloze_inputs(batch.sparse, N + 1, 0.3, N)
    full = torch.tensor([i for s in sequences for i in s])
    inputs = kjt["history"].values()
    assert torch.equal(kjt["history"].lengths(), torch.tensor([len(s) for s in sequences]))
    assert torch.equal(labels, full[masked]) and torch.all(inputs[masked] == N + 1)
    assert torch.equal(inputs[~masked], full[~masked])
    assert abs(float(masked.float().mean()) - 0.3) < 0.02
    starts = kjt["history"].offsets()
    assert all(masked[a:b].any() for a, b in zip(starts[:-1], starts[1:]))  # every sequence predicts something
    assert torch.equal(kjt["negatives"].values(), torch.arange(1, N + 1))


def test_one_item_sequences_get_their_last_item_masked() -> None:
    torch.manual_seed(0)
    kjt, masked, labels = cloze_inputs(make_batch([[3, 4]] * 50).sparse, N + 1, 0.01, N)
    assert int(masked.view(50, 2)[:, 1].sum()) >= 49 - int(masked.view(50, 2)[:, 0].sum())
    assert masked.view(50, 2).any(1).all()


def test_append_each_puts_one_element_after_every_sequence() -> None:
    values, lengths = append_each(torch.tensor([1, 2, 3, 4]), torch.tensor([1, 3]), torch.tensor([8, 9]))
    assert values.tolist() == [1, 8, 2, 3, 4, 9] and lengths.tolist() == [2, 4]
    rows, _ = append_each(torch.ones(3, 2), torch.tensor([2, 1]), torch.zeros(2))
    assert rows.tolist() == [[1, 1], [1, 1], [0, 0], [1, 1], [0, 0]]
