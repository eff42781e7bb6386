"""BERT4Rec: cloze inputs mask at the configured rate, the model learns, sees both directions, ignores padding,
and exports (the held mask row) to the eager scores."""

from __future__ import annotations

import pytest
import torch

from tests.modules.encoders import checks
from tests.modules.encoders.test_sasrec import N, chain, make_batch
from tests.modules.factories import build


def test_learns_the_next_item() -> None:
    checks.check_learns("bert4rec", steps=80, ratio=0.6, dropout=0.0, mask_prob=0.3, num_blocks=1, num_heads=1)


def test_bidirectional_shapes_padding_and_export() -> None:
    checks.check_shapes_and_batch_independence("bert4rec", dropout=0.0)
    checks.check_export("bert4rec", dropout=0.0)
    net = checks.model("bert4rec", dropout=0.0).eval()
    with torch.no_grad():  # the mask's output sees every item: changing the first one changes the query
        first = net.encode(make_batch([chain(3, 6)], kind="last"))
        other = net.encode(make_batch([[9] + chain(3, 6)[1:]], kind="last"))
    assert not torch.allclose(first, other)


def test_mask_row_is_an_extra_row_outside_the_catalogue() -> None:
    net = checks.model("bert4rec")
    assert net.item_ec.embeddings["item_table"].weight.shape[0] == N + 2
    assert net.retrieval_export().max_len == 12 and net.encoder.max_len == 13
    torch.testing.assert_close(net.retrieval_export().query.mask_row, net.item_ec.embeddings["item_table"].weight[N + 1])


@pytest.mark.parametrize(("bad", "match"), [({"mask_prob": 0.0}, "mask_prob"), ({"mask_prob": 1.0}, "mask_prob"),
                                            ({"ffn_mult": 0}, "ffn_mult"), ({"loss": "bce"}, "softmax"),
                                            ({"tie_weights": False}, "tie_weights"),
                                            ({"contrastive_weight": 0.1}, "contrastive"), ({"num_heads": 3}, "divisible")])
def test_bad_config_names_the_key(bad, match) -> None:
    with pytest.raises(ValueError, match=match):
        build("bert4rec", 10, max_len=8, dim=16, **bad)
