"""The request corpus (tests/corpus/requests.json) through the handler on a real exported artefact, without the
server: in one batch, every bad body gets 400 alone and every good one its answer; a model call that fails for one
request fails only that request."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from serving.handler import SeqrecHandler
from tests.corpus import request_bodies
from tests.serving.test_handler import FakeContext, export_dir  # noqa: F401  (the fixture, shared)


def _handler(export: Path) -> tuple[SeqrecHandler, FakeContext]:
    context = FakeContext(export)
    handler = SeqrecHandler()
    handler.initialize(context)
    return handler, context


def test_every_bad_body_fails_alone_in_a_mixed_batch(export_dir: Path) -> None:  # noqa: F811
    ids = json.loads((export_dir / "id_map.json").read_text())["raw_ids"]
    bad, good = request_bodies(ids)
    handler, context = _handler(export_dir)
    mixed = [body for pair in zip(bad, good * 5) for body in pair]  # bad, good, bad, good, ...
    out = handler.handle([{"body": body} for _, body in mixed], context)
    assert len(out) == len(mixed)
    for idx, ((case, _), answer) in enumerate(zip(mixed, out)):
        if idx % 2 == 0:
            assert context.statuses.get(idx, (200,))[0] == 400 and set(answer) == {"error"}, case
        else:
            assert idx not in context.statuses and answer["items"] and not set(answer) - {
                "items", "scores", "unknown", "fallback"}, case


def test_a_model_failure_on_one_request_fails_only_that_one(export_dir: Path) -> None:  # noqa: F811
    ids = json.loads((export_dir / "id_map.json").read_text())["raw_ids"]
    handler, context = _handler(export_dir)
    scripted = handler.service.model

    def fails_on_item_one(history: torch.Tensor, lengths: torch.Tensor, k: int, exclude_seen: bool):
        if bool((history == 1).any()):
            raise RuntimeError("injected fault")
        return scripted(history, lengths, k, exclude_seen)

    handler.service.model = fails_on_item_one
    bodies = [{"history": ids[1:4], "k": 3}, {"history": [ids[0]], "k": 3}, {"history": ids[5:7], "k": 2}]
    out = handler.handle([{"body": b} for b in bodies], context)
    assert context.statuses == {1: (500, "recommendation failed (RuntimeError)")}
    assert len(out[0]["items"]) == 3 and len(out[2]["items"]) == 2 and set(out[1]) == {"error"}
