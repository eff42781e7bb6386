"""DLRM-v2 (DLRM-DCN) baseline: DCN-v2 crossing over the candidate, the user and context counters, no sequence.

The whole model is `modules.ranking.Ranker` without a sequence feature: TorchRec's DenseArch over the context
features (history length, share of each action type, hour of the request), InteractionDCNArch with low-rank
cross layers over [dense, candidate item, hashed user], OverArch to one logit per head. It answers "does the
sequence help at all?" next to TransAct, which adds its sequence feature to exactly this head.
"""

from __future__ import annotations

import dataclasses

from modules.ranking import Ranker, RankerConfig
from modules.registry import register


@dataclasses.dataclass(kw_only=True)
class DLRMConfig(RankerConfig):
    """``model`` for ``model.name=dlrm`` (every field is `RankerConfig`'s)."""

    name: str = "dlrm"


@register("dlrm", DLRMConfig, task="ranking")
def build(config: DLRMConfig, num_items: int, max_len: int, device=None) -> Ranker:
    """DLRM-v2 on the item (and hashed user) tables; ``max_len`` only bounds the counted history."""
    return Ranker(config, num_items, None, device)
