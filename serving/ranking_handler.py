"""TorchServe handler of rankers: `serving.handler`'s adapter on `serving.ranking_service.RankingService`.

``initialize`` loads the export folder TorchServe unpacked from the ``.mar`` (TorchScript + JSON id map and
heads, no pickles) and warms the model up before the worker takes traffic; ``preprocess`` (inherited) validates
each request of the batch and answers a bad one with 400 naming the field, so the rest of the batch is still
served; ``inference`` scores every valid request's candidates in one call under `torch.inference_mode`. TorchServe
allows one class per handler file and counts only the classes defined in it, so the subclass is fine.
"""

import fbgemm_gpu  # noqa: F401  (must precede anything that loads TorchRec/fbgemm TorchScript ops)
import torch

from serving.handler import SeqrecHandler
from serving.ranking_service import RankingService


class RankingHandler(SeqrecHandler):
    """Batched candidate ranking: ``{"history": [{"item", "action"}], "candidates": [...], "head": h}``."""

    def initialize(self, context) -> None:
        self.manifest = context.manifest
        self.service = RankingService.load(context.system_properties["model_dir"])
        # Before the worker reports READY: TorchScript's first (profiling) calls must not land on real requests.
        self.service.warm_up()
        self.initialized = True

    def inference(self, data: list, *args, **kwargs) -> list:
        """Answers for the valid requests, error dicts for the others, in batch order."""
        valid = [(idx, r) for idx, r in data if not isinstance(r, dict)]  # bad ones are already error bodies
        with torch.inference_mode():
            try:
                answers = dict(zip((idx for idx, _ in valid), self.service.rank([r for _, r in valid])))
            except Exception:  # the batch failed: score each alone, so only a request failing alone gets a 500
                answers = {idx: self._rank_alone(idx, r) for idx, r in valid}
        return [answers.get(idx, r) for idx, r in data]

    def _rank_alone(self, idx: int, request) -> dict:
        try:
            return self.service.rank([request])[0]
        except Exception as exc:
            return self._fail(idx, 500, f"ranking failed ({type(exc).__name__})")
