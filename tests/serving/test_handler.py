"""The TorchServe handler on a real exported artefact, without the server: TorchServe's context object is
replaced by a small stand-in that records per-request statuses (it is TorchServe's object, not ours)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from serving.export import ExportConfig, export_run
from serving.handler import SeqrecHandler
from tests.conftest import train_overrides
from trainer.config import load_config
from trainer.train import run_training


class FakeMetrics:
    def __init__(self) -> None:
        self.gauges: dict[str, float] = {}

    def add_time(self, *args, **kwargs) -> None:
        pass

    def add_metric(self, name: str, value: float, unit: str, **kwargs) -> None:
        self.gauges[name] = value


class FakeContext:
    """The parts of `ts.context.Context` a handler touches."""

    def __init__(self, model_dir: Path) -> None:
        self.system_properties = {"model_dir": str(model_dir), "gpu_id": None, "batch_size": 4}
        self.manifest = {"model": {"modelName": "seqrec"}}
        self.metrics = FakeMetrics()
        self.statuses: dict[int, tuple[int, str]] = {}

    def set_response_status(self, code: int = 200, phrase: str = "", idx: int = 0) -> None:
        self.statuses[idx] = (code, phrase)

    def get_request_header(self, idx: int, key: str) -> None:
        return None


@pytest.fixture(scope="module")
def export_dir(tiny_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("handler_run")
    result = run_training(load_config(train_overrides(tiny_dataset, out, "trainer.run_id=h", "trainer.test_at_end=false")))
    # INT8 tables, fp32 dense compute: a request's answer must not depend on what it is batched with. (Dynamic
    # INT8 linears quantize activations per batch tensor; tests/serving/test_export.py bounds that effect.)
    meta = export_run(ExportConfig(run=Path(result["run_dir"]), output=out / "export", evaluate=False, dense="fp32"))
    return Path(meta["output"])


@pytest.fixture()
def handler(export_dir: Path) -> tuple[SeqrecHandler, FakeContext]:
    context = FakeContext(export_dir)
    h = SeqrecHandler()
    h.initialize(context)
    return h, context


def _raw_ids(export_dir: Path) -> list[str]:
    return json.loads((export_dir / "id_map.json").read_text())["raw_ids"]


def test_batch_with_bad_requests_serves_the_good_ones(handler, export_dir: Path) -> None:
    h, context = handler
    ids = _raw_ids(export_dir)
    good = {"history": ids[:6] + ["no-such-item"], "k": 5, "exclude_seen": True}
    bad = [
        b'{"history": [',  # malformed JSON
        {"history": "i1", "k": 5},  # wrong type
        {"history": ids[:3], "k": "5"},
        {"history": ids[:3], "k": True},
        {"history": ids[:3], "exclude_seen": "yes"},
        {"history": [ids[0], {"id": 1}]},
        {"history": ids[:3], "k": 0},
        {"history": ids[:3], "k": -3},
        {"history": ids[:3], "k": 10**9},  # huge k
        {"history": ids[:3], "user": "u1"},  # unknown field
        {"history": ids[:1] * 20_000},  # oversize history
        b'{"history": []' + b" " * (2 << 20) + b"}",  # oversize body
        None,
    ]
    data = [{"body": good}] + [{"body": b} for b in bad] + [{"body": json.dumps(good).encode()}]
    out = h.handle(data, context)
    assert len(out) == len(data)
    assert sorted(context.statuses) == list(range(1, len(bad) + 1))
    assert all(code == 400 and phrase for code, phrase in context.statuses.values())
    assert "malformed JSON" in context.statuses[1][1] and "'k' must be in" in context.statuses[9][1]
    for answer in (out[0], out[-1]):
        assert len(answer["items"]) == 5 and answer["unknown"] == ["no-such-item"] and not answer["fallback"]
        assert not set(answer["items"]) & set(ids[:6])
        assert answer["scores"] == sorted(answer["scores"], reverse=True)
    assert out[0] == out[-1]  # bytes and decoded JSON give the same answer
    assert all(set(o) == {"error"} for o in out[1:-1])


def test_empty_or_all_unknown_history_falls_back_to_popularity(handler, export_dir: Path, tiny_dataset: Path) -> None:
    h, context = handler
    out = h.handle([{"body": {"history": [], "k": 4}}, {"body": {"history": ["x", "y"], "k": 4}}], context)
    items = pq.read_table(tiny_dataset / "items.parquet", columns=["raw_id", "popularity"])
    order = np.argsort(-items.column("popularity").to_numpy(), kind="stable")[:4]
    expected = [items.column("raw_id").to_pylist()[i] for i in order]
    assert out[0]["fallback"] and out[0]["items"] == expected and out[0]["unknown"] == []
    assert out[1]["fallback"] and out[1]["items"] == expected and out[1]["unknown"] == ["x", "y"]
    assert not context.statuses


def test_batching_does_not_change_answers_and_exclude_seen_is_per_request(handler, export_dir: Path) -> None:
    h, context = handler
    ids = _raw_ids(export_dir)
    requests = [
        {"history": ids[i : i + 3 + i % 5], "k": 3 + i, "exclude_seen": bool(i % 2)} for i in range(6)
    ]
    together = h.handle([{"body": r} for r in requests], context)
    alone = [h.handle([{"body": r}], context)[0] for r in requests]
    for a, b, r in zip(together, alone, requests):
        assert a["items"] == b["items"] and a["scores"] == pytest.approx(b["scores"], rel=1e-5, abs=1e-6)
        assert len(a["items"]) == r["k"]
    # Without exclusion a seen item may come back; with it never.
    for answer, request in zip(together, requests):
        if request["exclude_seen"]:
            assert not set(answer["items"]) & set(request["history"])


def test_k_larger_than_unseen_items_returns_only_finite_scores(handler, export_dir: Path) -> None:
    h, context = handler
    ids = _raw_ids(export_dir)
    out = h.handle([{"body": {"history": ids[:-5], "k": len(ids), "exclude_seen": True}}], context)[0]
    assert sorted(out["items"]) == sorted(ids[-5:])
    assert all(np.isfinite(out["scores"]))


def test_warm_up_calls_the_model_at_batch_one_and_the_server_batch_size(export_dir: Path) -> None:
    from serving.service import Recommender

    service = Recommender.load(export_dir)
    scripted, batches = service.model, []

    def spy(history, lengths, k, exclude_seen):
        batches.append(int(lengths.numel()))
        return scripted(history, lengths, k, exclude_seen)

    service.model = spy
    service.warm_up(4, calls=2)
    assert batches == [1, 1, 4, 4]
    service.warm_up(1, calls=1)
    assert batches[4:] == [1]


def test_popularity_penalty_per_request(handler, export_dir: Path) -> None:
    h, context = handler
    ids = _raw_ids(export_dir)
    popularity = dict(zip(ids, json.loads((export_dir / "id_map.json").read_text())["popularity"]))
    history = ids[10:16]
    plain, zero, strong, bad = h.handle(
        [{"body": {"history": history, "k": 10}}, {"body": {"history": history, "k": 10, "popularity_penalty": 0}},
         {"body": {"history": history, "k": 10, "popularity_penalty": 3.0}},
         {"body": {"history": history, "popularity_penalty": "high"}}],
        context,
    )
    assert zero == plain and context.statuses[3][0] == 400 and "popularity_penalty" in context.statuses[3][1]
    assert len(strong["items"]) == 10 and not set(strong["items"]) & set(history)
    assert np.mean([popularity[i] for i in strong["items"]]) < np.mean([popularity[i] for i in plain["items"]])
    assert strong["scores"] != sorted(strong["scores"], reverse=True)  # re-ranked against the model's order


def test_diversity_per_request(handler, export_dir: Path) -> None:
    h, context = handler
    ids = _raw_ids(export_dir)
    history = ids[20:26]
    plain, zero, diverse, both = h.handle(
        [{"body": {"history": history, "k": 10}}, {"body": {"history": history, "k": 10, "diversity": 0}},
         {"body": {"history": history, "k": 10, "diversity": 0.9}},
         {"body": {"history": history, "diversity": 0.5, "popularity_penalty": 1}}],
        context,
    )
    assert zero == plain and context.statuses[3][0] == 400
    assert 2 not in context.statuses, context.statuses
    assert len(diverse["items"]) == 10 and diverse["items"][0] == plain["items"][0]  # MMR keeps the best first
    assert diverse["items"] != plain["items"] and not set(diverse["items"]) & set(history)
