"""A real TorchServe on 127.0.0.1: archive from a tiny trained run, token auth on, valid/concurrent/bad requests,
still serving afterwards, always stopped. Loopback only, bounded request counts and timeouts."""

from __future__ import annotations

import http.client
import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from serving.export import ExportConfig, export_run
from serving.serve import DEFAULT_JVM_OPTIONS, ServerConfig, read_keys, start, stop
from tests.conftest import train_overrides
from trainer.config import load_config
from trainer.distributed import free_port
from trainer.train import run_training

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def server(tiny_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    out = tmp_path_factory.mktemp("ts_run")
    result = run_training(load_config(train_overrides(tiny_dataset, out, "trainer.run_id=ts", "trainer.test_at_end=false")))
    meta = export_run(ExportConfig(run=Path(result["run_dir"]), output=out / "export", evaluate=False, archive=True,
                                   batch_size=4, max_batch_delay_ms=5))
    ports = {free_port() for _ in range(3)}
    assert len(ports) == 3
    port, management, metrics = sorted(ports)
    cfg = ServerConfig(archive=Path(meta["archive"]), port=port, management_port=management, metrics_port=metrics,
                       workers=1)
    try:
        start(cfg, timeout_s=180)
        keys = read_keys(cfg.folder)
        ids = json.loads((Path(meta["output"]) / "id_map.json").read_text())["raw_ids"]
        yield {"cfg": cfg, "keys": keys, "ids": ids}
    finally:
        stop(cfg)


def _post(server: dict, body: bytes | dict, token: str | None = "inference", timeout: float = 20.0) -> tuple[int, dict]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {server['keys'][token]}"
    request = urllib.request.Request(f"{server['cfg'].url}/predictions/seqrec", data=data, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        text = exc.read()
        try:
            return exc.code, json.loads(text)
        except ValueError:
            return exc.code, {"raw": text.decode(errors="replace")}


def _oversize_status(server: dict, size: int) -> int:
    """Status for a body of ``size`` bytes announced with ``Expect: 100-continue``: the server refuses it from the
    headers. (Sending such a body outright races the server closing the connection: a reset, not a status.)"""
    conn = http.client.HTTPConnection("127.0.0.1", server["cfg"].port, timeout=20)
    try:
        conn.putrequest("POST", "/predictions/seqrec")
        conn.putheader("Content-Type", "application/json")
        conn.putheader("Authorization", f"Bearer {server['keys']['inference']}")
        conn.putheader("Content-Length", str(size))
        conn.putheader("Expect", "100-continue")
        conn.endheaders()
        return conn.getresponse().status
    finally:
        conn.close()


def test_config_is_locked_down(server: dict) -> None:
    text = (server["cfg"].folder / "config.properties").read_text()
    for key in ("inference_address", "management_address", "metrics_address"):
        assert f"{key}=http://127.0.0.1:" in text
    assert "enable_model_api=false" in text and "disable_token_authorization=false" in text
    # The lean Java frontend options reached the JVM launch (TorchServe echoes non-default ones).
    assert f"vmargs={DEFAULT_JVM_OPTIONS}" in text
    assert DEFAULT_JVM_OPTIONS in (server["cfg"].folder / "logs" / "torchserve.out").read_text()
    # Registering a model through the management API is refused even with the management key.
    request = urllib.request.Request(
        f"{server['cfg'].management_url}/models?url=http://127.0.0.1:1/x.mar", method="POST",
        headers={"Authorization": f"Bearer {server['keys']['management']}"},
    )
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(request, timeout=10)
    assert err.value.code == 405


def test_valid_and_concurrent_requests(server: dict) -> None:
    ids = server["ids"]
    code, answer = _post(server, {"history": ids[:8] + ["unknown-id"], "k": 5, "exclude_seen": True})
    assert code == 200 and len(answer["items"]) == 5 and answer["unknown"] == ["unknown-id"]
    assert not answer["fallback"] and not set(answer["items"]) & set(ids[:8])
    code, empty = _post(server, {"history": [], "k": 3})
    assert code == 200 and empty["fallback"] and len(empty["items"]) == 3
    requests = [{"history": ids[i : i + 5], "k": 4} for i in range(24)]
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda r: _post(server, r), requests))
    assert all(code == 200 and len(a["items"]) == 4 for code, a in results)
    # Concurrency (server-side batching) gives the same answer as a lone request.
    assert _post(server, requests[7])[1]["items"] == results[7][1]["items"]


def test_bad_requests_get_4xx_and_the_server_keeps_serving(server: dict) -> None:
    ids = server["ids"]
    bad = [
        b'{"history": [',
        {"history": "not-a-list"},
        {"history": ids[:2], "k": "ten"},
        {"history": ids[:2], "k": 0},
        {"history": ids[:2], "k": 10**9},
        {"history": ids[:2], "exclude_seen": 1},
        {"history": ids[:1] * 20_000},
    ]
    for body in bad:
        code, answer = _post(server, body)
        assert code == 400, (body if isinstance(body, bytes) else str(body)[:80], answer)
    assert _oversize_status(server, 2 << 20) == 413  # over max_request_size
    code, answer = _post(server, {"history": ids[:3]}, token=None)  # no token
    assert code in (400, 401) and "Token" in json.dumps(answer)
    with ThreadPoolExecutor(max_workers=3) as pool:  # good and bad in the same server-side batches
        mixed = list(pool.map(lambda r: _post(server, r), [{"history": ids[:4], "k": 2}, {"k": -1, "history": []}] * 4))
    assert [c for c, _ in mixed] == [200, 400] * 4
    code, answer = _post(server, {"history": ids[10:15], "k": 3})
    assert code == 200 and len(answer["items"]) == 3


def test_explanations_and_drift_metrics(server: dict) -> None:
    ids = server["ids"]
    code, answer = _post(server, {"history": ids[:6], "k": 3, "explain": True})
    assert code == 200 and [e["item"] for e in answer["explanations"]] == answer["items"]
    assert all(b["item"] == ids[b["position"]] for e in answer["explanations"] for b in e["because"])
    # The handler emits its drift gauges at most every 10 s, on a request: keep sending until they are logged.
    metrics_log = server["cfg"].folder / "logs" / "model_metrics.log"
    for _ in range(40):
        if metrics_log.is_file() and "DriftRequests" in metrics_log.read_text():
            break
        assert _post(server, {"history": ids[:4], "k": 2})[0] == 200
        time.sleep(0.5)
    text = metrics_log.read_text()
    assert "DriftRequests" in text and "DriftHistoryLengthMean" in text and "DriftUnknownShare" in text
