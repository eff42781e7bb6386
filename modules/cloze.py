"""Cloze (masked-item) training and mask-appending queries, for bidirectional sequence models (BERT4Rec).

`cloze_inputs` turns a ``causal`` batch into the cloze input (FX-wrapped: it draws the masks and builds a KJT);
`ClozeLoss` scores the masked positions; `masked_last` / `MaskedLastQuery` read the output at a ``[MASK]``
appended to each history (eager: the live mask row; exported: a copy held by the query module).
"""

from __future__ import annotations

import torch
from torch import nn
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from modules import losses
from modules import sequence as seq  # helpers by module attribute: FX sees their torch.fx.wrap
from modules.objectives import last_position


def cloze_inputs(sparse: KeyedJaggedTensor, mask_id: int, mask_prob: float, num_items: int
                 ) -> tuple[KeyedJaggedTensor, torch.Tensor, torch.Tensor]:
    """``(KJT, masked (T',) bool, labels (M,))`` of a causal batch: ``history`` = each full sequence (history + last
    target) with masked positions set to ``mask_id``, ``negatives`` = the catalogue ``1..N`` (full softmax)."""
    history, target = sparse["history"], sparse["target"]
    last = target.values()[target.offsets()[1:] - 1]
    full, lengths = seq.append_each(history.values(), history.lengths(), last)
    masked = torch.rand(full.shape, device=full.device) < mask_prob
    sequence = torch.repeat_interleave(torch.arange(lengths.numel(), device=full.device), lengths)
    none = torch.zeros_like(lengths).index_add_(0, sequence, masked.long()) == 0
    masked[(torch.cumsum(lengths, 0) - 1)[none]] = True  # a sequence that drew no mask predicts its last item
    inputs = torch.where(masked, torch.full_like(full, mask_id), full)
    cloze = seq.with_catalogue(KeyedJaggedTensor(keys=["history"], values=inputs, lengths=lengths), num_items)
    return cloze, masked, full[masked]


torch.fx.wrap("cloze_inputs")


class MaskedLastQuery(nn.Module):
    """Exported query: append the held ``[MASK]`` row to each history, encode, read the mask's output."""

    def __init__(self, encoder: nn.Module, mask_row: torch.Tensor) -> None:
        super().__init__()
        self.encoder = encoder
        self.register_buffer("mask_row", mask_row.detach().clone())

    def forward(self, embedded: torch.Tensor, lengths: torch.Tensor, timestamps: torch.Tensor) -> torch.Tensor:
        return masked_last(self.encoder, embedded, lengths, timestamps, self.mask_row)


def masked_last(encoder: nn.Module, embedded, lengths, timestamps, mask_row: torch.Tensor) -> torch.Tensor:
    """``(B, D)``: the encoder's output at ``mask_row`` appended to each jagged history."""
    values, lengths = seq.append_each(embedded, lengths, mask_row)
    return last_position(encoder(values, lengths, timestamps), lengths)


class ClozeLoss(nn.Module):
    """Softmax of the masked positions' outputs over the catalogue (a leaf module for the pipeline's FX trace)."""

    def __init__(self, chunk: int, temperature: float) -> None:
        super().__init__()
        self.chunk, self.temperature = chunk, temperature

    def forward(self, hidden, history, masked, labels, catalogue) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        query = torch.ops.fbgemm.dense_to_jagged(hidden, [history.offsets()])[0][masked] / self.temperature
        loss = losses.softmax_loss(query, torch.cat([catalogue.new_zeros(1, catalogue.shape[1]), catalogue]),
                                   labels, self.chunk)
        counts = {"num_targets": labels.numel(), "num_sequences": history.lengths().numel()}
        return loss, {"loss": loss.detach()} | {k: torch.tensor(v, device=loss.device) for k, v in counts.items()}
