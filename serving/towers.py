"""Two-tower export: each tower on its own, as TorchScript (``user_tower.pt``, ``item_tower.pt``) and ONNX
(``user_tower.onnx``, ``item_tower.onnx``), each ONNX file checked against the eager model with onnxruntime.

For stacks that serve the towers apart (user tower online, item tower in a batch job filling an ANN index). The
``model.pt`` of the same export keeps serving both through `serving.inference.Retriever` with the item matrix
precomputed. Signatures (plain tensors, right-padded, no TorchRec ops):

* user tower: ``ids (B, L) int64`` item indices (0 = padding), ``lengths (B,) int64`` -> ``(B, D)`` float32;
* item tower: ``ids (n,) int64``, ``codes (n, F) int64`` every item feature's codes side by side
  (`modules.towers.two_tower.TwoTower.codes_of`) -> ``(n, D)`` float32.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from serving.inference import save_compact, script

OPSET = 17


def _onnx(module: torch.nn.Module, inputs: tuple, names: list[str], axes: dict) -> bytes:
    """ONNX by tracing (the TorchScript-based exporter: these towers are plain tensor code with dynamic batch and
    length axes, which it handles; its deprecation and tracer notices are expected and silenced here)."""
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message="Exporting aten::index operator")
        torch.onnx.export(module, inputs, buffer, input_names=names, output_names=["embedding"], dynamic_axes=axes,
                          opset_version=OPSET, dynamo=False)
    return buffer.getvalue()


def _max_error(onnx_bytes: bytes, inputs: dict[str, torch.Tensor], expected: torch.Tensor) -> float:
    import onnxruntime

    session = onnxruntime.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    got = session.run(None, {name: value.numpy() for name, value in inputs.items()})[0]
    return float(np.abs(got - expected.numpy()).max())


@torch.no_grad()
def export_towers(model: Any, folder: Path, histories: torch.Tensor, lengths: torch.Tensor) -> dict[str, Any]:
    """Write both towers of a two-tower ``model`` (unsharded, eval) into ``folder``; check each file against the
    eager model (its served user query on ``histories (B, L)`` right-padded / ``lengths``, its item tower on every
    item). Returns what was written and the parity errors (max abs)."""
    user, item = model.tower_modules()
    ids = torch.arange(1, model.num_items + 1)
    codes = model.codes_of(ids)
    # the references: the model's own served query (jagged path) and its item tower through TorchRec
    parts = model.retrieval_export()
    real = torch.arange(histories.shape[1])[None, :] < lengths[:, None]
    jagged = histories[real]
    user_eager = parts.query(parts.table[jagged], lengths, torch.zeros_like(jagged))
    item_eager = model.item_embeddings(ids)
    out: dict[str, Any] = {"signature": {"user": "(ids int64 (B, L), lengths int64 (B,)) -> (B, D)",
                                         "item": "(ids int64 (n,), codes int64 (n, F)) -> (n, D)"}}
    for name, module, inputs, expected in (
        ("user_tower", user, {"ids": histories, "lengths": lengths}, user_eager),
        ("item_tower", item, {"ids": ids, "codes": codes}, item_eager),
    ):
        scripted = script(module)
        save_compact(scripted, folder / f"{name}.pt")
        axes = {"ids": {0: "batch", 1: "length"}, "lengths": {0: "batch"}} if name == "user_tower" else {
            "ids": {0: "items"}, "codes": {0: "items"}}
        onnx_bytes = _onnx(module, tuple(inputs.values()), list(inputs), axes)
        (folder / f"{name}.onnx").write_bytes(onnx_bytes)
        out[name] = {
            "torchscript": f"{name}.pt", "onnx": f"{name}.onnx",
            "torchscript_max_abs_error": float((scripted(*inputs.values()) - expected).abs().max()),
            "onnx_max_abs_error": _max_error(onnx_bytes, inputs, expected),
        }
    return out
