"""Concurrent fuzz against a real TorchServe: the request corpus (tests/corpus/requests.json, every shape of bad
JSON and bad field) mixed with valid requests from 16 clients, so bad and good requests share server-side batches;
every response is checked: each bad one a 4xx with a reason, each valid one a 200 with its answer."""

from __future__ import annotations

import random
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.corpus import request_bodies
from tests.integration.test_torchserve import _post, server  # noqa: F401  (the fixture: a real server)

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_concurrent_mix_of_bad_and_valid_requests_fails_only_the_bad_ones(server: dict) -> None:  # noqa: F811
    bad, good = request_bodies(server["ids"])
    rng = random.Random(13)
    valid = [(f"valid {i}", rng.sample(server["ids"], rng.randint(0, 12)), rng.randint(1, 10)) for i in range(120)]
    jobs = [("bad", case, body) for case, body in bad * 3] + [("good", case, body) for case, body in good * 3]
    jobs += [("valid", case, {"history": history, "k": k}) for case, history, k in valid]
    rng.shuffle(jobs)
    with ThreadPoolExecutor(max_workers=16) as pool:
        results = list(pool.map(lambda job: _post(server, job[2]), jobs))
    failures = []
    for (kind, case, body), (code, answer) in zip(jobs, results):
        if kind == "bad" and not (400 <= code < 500 and (answer.get("error") or answer.get("message"))):
            failures.append((case, code, str(answer)[:120]))
        if kind != "bad" and not (code == 200 and answer.get("items")):
            failures.append((case, code, str(answer)[:120]))
        if kind == "valid" and code == 200 and len(answer["items"]) != body["k"]:
            failures.append((case, code, f"{len(answer['items'])} items for k={body['k']}"))
    assert not failures, failures[:10]
    code, answer = _post(server, {"history": server["ids"][:3], "k": 2})  # and it still serves
    assert code == 200 and len(answer["items"]) == 2
