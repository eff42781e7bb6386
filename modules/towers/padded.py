"""Both towers of `modules.towers.two_tower.TwoTower` on plain, right-padded tensors, for TorchScript and ONNX
(`serving.towers`): no TorchRec collections, no jagged ops.

No ``from __future__ import annotations`` here: FX and TorchScript read the ``forward`` annotations as real types.
"""

import torch
from torch import nn

from modules.dropout import Dropout


class PaddedUserTower(nn.Module):
    """The served user tower on plain tensors, for TorchScript and ONNX: right-padded history ids ``(B, L)`` and
    ``lengths (B,)`` -> ``(B, D)`` (no user features, as `ServedUserQuery`). Needs an encoder with ``padded``."""

    def __init__(self, table: torch.Tensor, encoder: nn.Module, mlp: nn.Module, feature_width: int) -> None:
        super().__init__()
        self.register_buffer("table", table.detach().clone())
        self.encoder, self.mlp, self.feature_width = encoder, mlp, feature_width

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        real = torch.arange(ids.shape[1], device=ids.device)[None, :] < lengths[:, None]
        hidden = self.encoder.padded(self.table[ids] * real.unsqueeze(-1).to(self.table.dtype), lengths)
        last = hidden[torch.arange(ids.shape[0], device=ids.device), lengths - 1]
        side = last.new_zeros((last.shape[0], self.feature_width))
        return nn.functional.normalize(self.mlp(torch.cat([last, side], dim=-1)), dim=-1)


class PaddedItemTower(nn.Module):
    """The item tower on plain tensors, for TorchScript and ONNX: ``ids (n,)`` and every feature's codes packed
    side by side ``(n, sum_f M_f)`` (0 = absent; `codes_of` builds them) -> ``(n, D)``, the mean pooling of the
    feature collection written out (an empty bag is zeros, as TorchRec's)."""

    def __init__(self, table: torch.Tensor, tower: nn.Module) -> None:
        super().__init__()
        self.register_buffer("table", table.detach().clone())
        bags = tower.features.ebc.embedding_bags if tower.features.ebc is not None else {}
        self.features = nn.ParameterList([bags[f"{key}_table"].weight.detach().clone() for key in tower.features.keys])
        self.widths = [int(codes.shape[1]) for codes in tower.features.codes]
        self.mlp = tower.mlp

    def forward(self, ids: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        parts = [self.table[ids]]
        start = 0
        for weight, width in zip(self.features, self.widths):
            slots = codes[:, start : start + width]
            start += width
            present = (slots > 0).unsqueeze(-1).to(weight.dtype)
            total = (weight[slots] * present).sum(1)
            parts.append(total / present.sum(1).clamp(min=1.0))
        return nn.functional.normalize(self.mlp(torch.cat(parts, dim=-1)), dim=-1)


def drop_dropout(module: nn.Module) -> None:
    """Replace every dropout layer inside ``module`` by `nn.Identity` (in place)."""
    for name, child in list(module.named_children()):
        if isinstance(child, (nn.Dropout, Dropout)):
            setattr(module, name, nn.Identity())
        else:
            drop_dropout(child)
