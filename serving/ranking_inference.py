"""The ranking inference module: a request's history and its candidates in, one logit per head per candidate out.

`RankerScorer` wraps an unsharded ranker's own parts (`modules.ranking.RankerCore`: the sequence module, user
table and crossing head) with its item table as a plain matrix, and is scripted with TorchScript::

    logits = scorer(history, actions, timestamps, lengths, candidates, counts, request_time, user_idx)
    # history, actions, timestamps: (T,) int64, the histories of R requests concatenated (oldest first;
    #   a length may be 0); lengths: (R,) int64; candidates: (C,) int64 item indices 1..N of all requests
    #   concatenated, counts: (R,) int64 candidates per request; request_time: (R,) int64 seconds (zeros
    #   when unknown); user_idx: (R,) int64 dataset user index, or -1 for an unknown user (the mean user vector)
    # logits: (C, H) float32 in candidate order

Each candidate is scored against its request's history (early fusion needs one token sequence per candidate:
the history is repeated per candidate inside the module). Histories longer than ``max_len`` keep their most
recent ``max_len`` actions, as in training. Tables stay fp32 (no INT8 for rankers yet).
"""

# No `from __future__ import annotations`: FX and TorchScript read these annotations as real types.
import copy

import fbgemm_gpu  # noqa: F401  (fbgemm ops in the traced jagged helpers)
import torch
from torch import nn

from serving.inference import truncate_recent

LEAVES: tuple[str, ...] = ()  # everything is traced: the crossing head too (TorchRec's
# LowRankCrossNet indexes a ParameterList with a loop variable, which TorchScript cannot script; FX unrolls it)


def expand_per_candidate(values: torch.Tensor, actions: torch.Tensor, lengths: torch.Tensor, counts: torch.Tensor
                         ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Each request's history repeated once per candidate: ``(values, actions, lengths, owner)`` per candidate
    row, ``owner`` = the request index of each candidate."""
    owner = torch.repeat_interleave(torch.arange(lengths.numel(), device=lengths.device), counts)
    row_lengths = lengths[owner]
    starts = (torch.cumsum(lengths, 0) - lengths)[owner]
    total = int(row_lengths.sum())
    row_starts = torch.cumsum(row_lengths, 0) - row_lengths
    within = torch.arange(total, dtype=torch.int64, device=values.device) - torch.repeat_interleave(
        row_starts, row_lengths, output_size=total)
    index = torch.repeat_interleave(starts, row_lengths, output_size=total) + within
    return values[index], actions[index], row_lengths, owner


torch.fx.wrap("expand_per_candidate")
torch.fx.wrap("truncate_recent")


class RankerScorer(nn.Module):
    """Scriptable scoring of candidates (module docstring); built by `scorer_of`."""

    def __init__(self, table: torch.Tensor, core: nn.Module, max_len: int) -> None:
        super().__init__()
        self.register_buffer("table", table.detach().clone())
        self.core = core
        self.max_len = max_len
        self.has_users = core.users is not None
        self.has_sequence = core.sequence is not None
        width = table.shape[1]
        users = core.users.weight.detach() if core.users is not None else torch.zeros(1, width)
        self.register_buffer("users", users.clone())
        self.register_buffer("mean_user", users.mean(0, keepdim=True).clone())

    def forward(self, history: torch.Tensor, actions: torch.Tensor, timestamps: torch.Tensor, lengths: torch.Tensor,
                candidates: torch.Tensor, counts: torch.Tensor, request_time: torch.Tensor,
                user_idx: torch.Tensor) -> torch.Tensor:
        history, lengths, actions = truncate_recent(history, lengths, self.max_len, actions)
        values, row_actions, row_lengths, owner = expand_per_candidate(history, actions, lengths, counts)
        embedded = self.table[values]
        candidate = self.table[candidates]
        user = user_idx[owner]
        known = (user >= 0)[:, None]
        users = torch.where(known, self.users[user.clamp(min=0) % self.users.shape[0]], self.mean_user)
        sequence = candidate  # placeholder when the model has no sequence feature (not used then)
        if self.has_sequence:
            tokens = self.core.sequence.tokens(embedded, row_lengths, candidate, row_actions)
            sequence = self.core.sequence.encoder(tokens, row_lengths)
        return self.core.scores(row_lengths, candidate, row_actions, request_time[owner],
                                users if self.has_users else None, sequence if self.has_sequence else None)


def scorer_of(model: nn.Module, max_len: int) -> RankerScorer:
    """A `RankerScorer` of an unsharded `modules.ranking.Ranker` (a copy: the model is left as it was)."""
    table = model.item_ec.embeddings["item_table"].weight.detach()
    return RankerScorer(table, copy.deepcopy(model.core).eval(), max_len).eval()


def script_scorer(scorer: RankerScorer) -> torch.jit.ScriptModule:
    """TorchScript of the scorer: FX-trace (the head and encoder as leaves), then script."""
    import torchrec.fx

    scorer.eval()
    return torch.jit.script(torchrec.fx.symbolic_trace(scorer, leaf_modules=list(LEAVES)))
