"""A real TorchServe on 127.0.0.1 serving an exported TransAct: valid requests, a batch mixing good and bad
requests, unknown ids, no candidates, too many candidates; token auth on; always stopped."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from serving.export import ExportConfig, export_run
from serving.serve import ServerConfig, read_keys, start, stop
from tests.conftest import ranking_overrides
from trainer.config import load_config
from trainer.distributed import free_port
from trainer.train import run_training

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def server(tiny_impressions: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    out = tmp_path_factory.mktemp("rank_ts")
    result = run_training(load_config(ranking_overrides(tiny_impressions, out, "transact", "trainer.epochs=1",
                                                        "trainer.test_at_end=false")))
    meta = export_run(ExportConfig(run=Path(result["run_dir"]), output=out / "export", archive=True, batch_size=4,
                                   max_batch_delay_ms=5))
    ports = sorted({free_port() for _ in range(3)})
    assert len(ports) == 3
    cfg = ServerConfig(archive=Path(meta["archive"]), port=ports[0], management_port=ports[1],
                       metrics_port=ports[2], workers=1)
    try:
        start(cfg, timeout_s=180)
        ids = json.loads((Path(meta["output"]) / "id_map.json").read_text())["raw_ids"]
        actions = json.loads((Path(meta["output"]) / "ranking.json").read_text())["actions"]
        yield {"cfg": cfg, "keys": read_keys(cfg.folder), "ids": ids, "actions": actions}
    finally:
        stop(cfg)


def _post(server: dict, body: dict | bytes) -> tuple[int, dict]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {server['keys']['inference']}"}
    request = urllib.request.Request(f"{server['cfg'].url}/predictions/seqrec", data=data, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=20) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        text = exc.read()
        try:
            return exc.code, json.loads(text)
        except ValueError:
            return exc.code, {"raw": text.decode(errors="replace")}


def _request(server: dict, n: int, head: str = "cart") -> dict:
    ids, actions = server["ids"], server["actions"]
    history = [{"item": ids[i], "action": actions[i % len(actions)]} for i in range(5)]
    return {"history": history, "candidates": ids[10:10 + n], "head": head}


def test_valid_request_returns_every_candidate_sorted_by_the_head(server: dict) -> None:
    code, answer = _post(server, _request(server, 100))
    assert code == 200, answer
    scores = [c["scores"]["cart"] for c in answer["candidates"]]
    assert len(scores) == 100 and scores == sorted(scores, reverse=True)
    assert {c["item"] for c in answer["candidates"]} == set(server["ids"][10:110])
    code, view = _post(server, _request(server, 100, head="view"))
    assert code == 200 and view["head"] == "view"
    assert [c["scores"]["view"] for c in view["candidates"]] == sorted(
        (c["scores"]["view"] for c in view["candidates"]), reverse=True)


def test_unknown_ids_are_reported_not_scored(server: dict) -> None:
    body = _request(server, 3)
    body["history"].append({"item": "no-such-item"})
    body["candidates"].append("no-such-candidate")
    code, answer = _post(server, body)
    assert code == 200 and answer["unknown"] == ["no-such-item"]
    assert answer["unknown_candidates"] == ["no-such-candidate"] and len(answer["candidates"]) == 3


def test_no_or_too_many_candidates_get_400_naming_the_field(server: dict) -> None:
    code, answer = _post(server, {"history": [], "candidates": []})
    assert code == 400 and "'candidates'" in json.dumps(answer)
    code, answer = _post(server, _request(server, 0) | {"candidates": server["ids"][:1] * 501})
    assert code == 400 and "limit is 500" in json.dumps(answer)
    code, answer = _post(server, b'{"history": [')
    assert code == 400 and "malformed JSON" in json.dumps(answer)


def test_a_mixed_batch_fails_only_its_bad_requests(server: dict) -> None:
    good, bad = _request(server, 20), {"history": [{"item": "1", "action": "teleport"}], "candidates": ["1"]}
    with ThreadPoolExecutor(max_workers=4) as pool:  # good and bad in the same server-side batches
        results = list(pool.map(lambda r: _post(server, r), [good, bad] * 4))
    assert [code for code, _ in results] == [200, 400] * 4
    assert all("history[0].action" in json.dumps(a) for code, a in results if code == 400)
    code, answer = _post(server, good)
    assert code == 200 and answer["candidates"] == results[0][1]["candidates"]
