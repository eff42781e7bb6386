"""Request timestamps reach a scripted time-aware model (HSTU) in the same positions as the known items."""

from __future__ import annotations

import pytest
import torch

from serving.inference import retriever_of, script
from serving.service import Recommender, RequestError
from tests.modules.encoders import checks


@pytest.fixture(scope="module")
def service() -> Recommender:
    net = checks.model("hstu", dropout=0.0).eval()
    with torch.no_grad():
        for block in net.encoder.blocks:  # a time bias that matters
            block.time_bias.copy_(torch.linspace(-3.0, 3.0, block.time_bias.numel()))
    return Recommender(script(retriever_of(net)), [f"i{n}" for n in range(1, checks.N + 1)], [1] * checks.N)


def test_timestamps_change_scores_and_follow_the_known_items(service: Recommender) -> None:
    history, times = ["i3", "i4", "nope", "i9"], [0, 3_600, 7_200, 900_000]
    timed = service.parse({"history": history, "timestamps": times, "k": 5})
    assert timed.items == [3, 4, 9] and timed.times == [0, 3_600, 900_000] and timed.unknown == ["nope"]
    plain = service.parse({"history": history, "k": 5})
    first, second = service.recommend([timed, plain])
    with torch.inference_mode():
        direct, _ = service.model(torch.tensor([3, 4, 9]), torch.tensor([3]), 5, True, torch.tensor(times[:2] + times[3:]))
    assert first["scores"] == pytest.approx(direct[0].tolist(), rel=1e-5)
    assert first["scores"] != pytest.approx(second["scores"], rel=1e-5)  # the untimed one sees zero gaps
    alone = service.recommend([plain])[0]
    assert alone["scores"] == pytest.approx(second["scores"], rel=1e-5)  # zeros when a batch-mate sent times


@pytest.mark.parametrize("times", [[1, 2], [1, 2, "3"], "123", [1, True, 3]])
def test_bad_timestamps_name_the_field(service: Recommender, times) -> None:
    with pytest.raises(RequestError, match="'timestamps'"):
        service.parse({"history": ["i1", "i2", "i3"], "timestamps": times})
