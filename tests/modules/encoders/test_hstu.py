"""HSTU: trains, causal, padding-free, exports; the time bias reads the timestamps and degrades to zeros."""

from __future__ import annotations

import pytest
import torch

from modules.encoders.hstu import time_buckets
from tests.modules.encoders import checks
from tests.modules.encoders.test_sasrec import chain, make_batch
from tests.modules.factories import build


@pytest.mark.parametrize("kwargs", [{}, {"num_heads": 2, "attn_dim": 4, "num_blocks": 1}])
def test_learns_causal_padding_free_and_exports(kwargs) -> None:
    checks.check_learns("hstu", dropout=0.0, **kwargs)
    checks.check_shapes_and_batch_independence("hstu", **kwargs)
    checks.check_causal("hstu", **kwargs)
    checks.check_export("hstu", **kwargs)


def test_time_buckets_are_log_gaps_and_zero_without_timestamps() -> None:
    lengths = torch.tensor([3, 1])
    buckets = time_buckets(torch.tensor([0, 10, 1000, 5]), lengths, 128, 0.301)
    # log(10) / 0.301 = 7.6 -> 7; log(1000) / 0.301 = 22.9 -> 22; log(990) / 0.301 = 22.9 -> 22
    assert buckets[0].tolist() == [[0, 7, 22], [7, 0, 22], [22, 22, 0]]
    assert time_buckets(torch.tensor([0, 10**12]), torch.tensor([2]), 16, 0.301)[0, 1, 0] == 16  # clamped
    assert torch.equal(time_buckets(torch.empty(0, dtype=torch.int64), lengths, 128, 0.301), torch.zeros(2, 3, 3))


def test_time_bias_changes_the_output_only_through_timestamps() -> None:
    net = checks.model("hstu", dropout=0.0).eval()
    with torch.no_grad():
        for block in net.encoder.blocks:
            block.time_bias.copy_(torch.linspace(-2.0, 2.0, block.time_bias.numel()))
        batch = make_batch([chain(3, 7)], kind="last")
        without = net.encode(batch)  # empty timestamps: every gap is 0
        batch.timestamps = torch.zeros(6, dtype=torch.int64)
        torch.testing.assert_close(net.encode(batch), without)
        checks.with_times(batch, gap=3600)
        assert not torch.allclose(net.encode(batch), without)
    assert net.loader_needs().timestamps
    assert not checks.model("hstu", needs_timestamps=False).loader_needs().timestamps


@pytest.mark.parametrize(("bad", "match"), [({"num_heads": 3}, "divisible"), ({"time_buckets": 0}, "time_buckets"),
                                            ({"time_bucket_log": 0.0}, "time_bucket_log"),
                                            ({"dropout": -0.1}, "model.encoder.dropout")])
def test_bad_config_names_the_key(bad, match) -> None:
    with pytest.raises(ValueError, match=match):
        build("hstu", 10, max_len=8, dim=16, **bad)
