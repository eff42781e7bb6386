"""The corpus of bad (and good) inputs the tests run: damaged checkpoints (`checkpoints.json`) and request bodies
(`requests.json`, expanded here into the exact bytes sent)."""

from __future__ import annotations

import json
from pathlib import Path

CORPUS = Path(__file__).resolve().parent


def request_bodies(ids: list[str]) -> tuple[list[tuple[str, bytes]], list[tuple[str, bytes]]]:
    """(bad, good) request bodies as ``(case, bytes)``, with ``{ID0}``/``{ID1}`` replaced by served raw ids."""
    spec = json.loads((CORPUS / "requests.json").read_text())
    return [_body(c, ids) for c in spec["bad"]], [_body(c, ids) for c in spec["good"]]


def _body(case: dict, ids: list[str]) -> tuple[str, bytes]:
    if "hex" in case:
        return case["case"], bytes.fromhex(case["hex"])
    if "repeat" in case:
        n = case["repeat"]
        text = case["prefix"] * n + case["middle"] + case["suffix"] * n
        text = case.get("wrap", "%s") % text
    else:
        text = case["body"]
    text = text.replace("{ID0}", ids[0]).replace("{ID1}", ids[1])
    return case["case"], text.encode("utf-8", errors="surrogatepass")
