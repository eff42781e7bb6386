"""TorchServe handler: a thin adapter from TorchServe's batches to `serving.service.Recommender`.

``initialize`` loads the export folder TorchServe unpacked from the ``.mar`` (TorchScript + JSON id map, no
pickles) and warms the model up before the worker takes traffic; ``preprocess`` validates each request of the
batch and answers a bad one with 400 and the reason (`context.set_response_status(400, reason, idx)`), so the
rest of the batch is still served; ``inference`` scores the valid ones in one batched call under
`torch.inference_mode`; ``postprocess`` returns one plain dict per request. TorchServe allows one class per
handler file.
"""

import fbgemm_gpu  # noqa: F401  (must precede anything that loads TorchRec/fbgemm TorchScript ops)
import torch
from ts.torch_handler.base_handler import BaseHandler

from serving.drift import attach, torchserve_emit
from serving.service import Recommender, RequestError


class SeqrecHandler(BaseHandler):
    """Batched next-item recommendations: ``{"history": [...], "k": 10, "exclude_seen": true}`` per request."""

    def initialize(self, context) -> None:
        self.manifest = context.manifest
        self.service = Recommender.load(context.system_properties["model_dir"])
        # Before the worker reports READY: TorchScript's first (profiling) calls must not land on real requests.
        self.service.warm_up(int(context.system_properties.get("batch_size") or 1))
        self.drift = attach(self.service, context.system_properties["model_dir"], torchserve_emit(context))
        self.initialized = True

    def preprocess(self, data: list) -> list:
        """``[(index in batch, Request) or (index, error message)]``; bad requests get their 400 here."""
        parsed = []
        for idx, row in enumerate(data):
            body = row
            if isinstance(row, dict):  # TorchServe: {"body": ...} (or "data"); JSON already decoded if valid
                body = row["body"] if row.get("body") is not None else row.get("data")
            try:
                parsed.append((idx, self.service.parse(body)))
            except RequestError as exc:
                parsed.append((idx, self._fail(idx, 400, str(exc))))
            except Exception as exc:  # unforeseen: still this request's fault, never the batch's
                parsed.append((idx, self._fail(idx, 400, f"unreadable request ({type(exc).__name__})")))
        return parsed

    def inference(self, data: list, *args, **kwargs) -> list:
        """Answers for the valid requests, error dicts for the others, in batch order.

        If the batched call fails, each valid request is scored alone, so only a request that fails on its own
        gets an error (500); the others of its batch are answered."""
        valid = [(idx, r) for idx, r in data if not isinstance(r, dict)]
        with torch.inference_mode():
            try:
                answers = dict(zip((idx for idx, _ in valid), self.service.recommend([r for _, r in valid])))
            except Exception:
                answers = {idx: self._alone(idx, r) for idx, r in valid}
        self.drift.maybe_emit()
        return [answers.get(idx, r) for idx, r in data]

    def _alone(self, idx: int, request) -> dict:
        try:
            return self.service.recommend([request])[0]
        except Exception as exc:
            return self._fail(idx, 500, f"recommendation failed ({type(exc).__name__})")

    def _fail(self, idx: int, code: int, message: str) -> dict:
        """Answer request ``idx`` of the batch alone with ``code``; its body is ``{"error": message}``."""
        self.context.set_response_status(code, message, idx)
        return {"error": message}

    def postprocess(self, data: list) -> list:
        return data
