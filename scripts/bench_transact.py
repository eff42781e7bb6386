"""TransAct training speed: seqrec's TransAct against a naive padded PyTorch TransAct, same batches, same process.

seqrec's model (`modules.rankers.transact`) looks histories up jagged through TorchRec's EmbeddingCollection,
pads each batch only to its own longest history and runs the encoder on length-sorted groups. The naive
reference is what a plain PyTorch port looks like: ``nn.Embedding`` tables, every history padded to the full
``max_len``, ``nn.TransformerEncoder`` with a key-padding mask, the same widths, output (max-pool + last K) and
the same DCN-v2 head. Both train (forward, backward, Adam step) on the same real batches of the dataset's
``impressions`` loader, interleaved; the figure is examples/s and the ratio to the naive one.

    python scripts/bench_transact.py --data data/kuairand
    python scripts/bench_transact.py --data data/kuairand --batches 20 --max-len 100 --threads 1
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from modules import registry
from modules.rankers.transact import TransActConfig
from modules.ranking import CrossingHead, context_features
from trainer.data.loader import LoaderConfig, build_loader
from trainer.data.schema import read_manifest


class NaiveTransAct(nn.Module):
    """The plain-PyTorch reference: full ``max_len`` padding, ``nn.TransformerEncoder``, dense tables."""

    def __init__(self, config: TransActConfig, num_items: int, max_len: int) -> None:
        super().__init__()
        width = config.action_dim + 2 * config.dim
        self.config, self.max_len = config, max_len
        self.items = nn.Embedding(num_items + 1, config.dim)
        self.actions = nn.Embedding(config.num_actions, config.action_dim)
        self.users = nn.Embedding(config.user_buckets, config.dim)
        layer = nn.TransformerEncoderLayer(width, config.num_heads, config.ffn_mult * width, config.dropout,
                                           batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, config.num_blocks, enable_nested_tensor=False)
        self.project = nn.Linear((config.recent_k + 1) * width, config.dim)
        self.head = CrossingHead(config, 3 + config.num_actions, 3)

    def forward(self, batch) -> torch.Tensor:
        history = batch.sparse["history"]
        lengths, b, k = history.lengths(), batch.size, self.config.recent_k
        cols = torch.arange(self.max_len)
        padding = cols[None, :] >= lengths[:, None]
        index = torch.zeros(b, self.max_len, dtype=torch.int64)
        index[~padding] = torch.arange(int(lengths.sum()))  # right padding, row by row
        ids = torch.where(padding, 0, history.values()[index.clamp(max=max(0, history.values().numel() - 1))])
        acts = torch.where(padding, 0, batch.actions[index.clamp(max=max(0, batch.actions.numel() - 1))])
        candidate = self.items(batch.sparse["target"].values())
        tokens = torch.cat([self.actions(acts), self.items(ids), candidate[:, None].expand(-1, self.max_len, -1)], -1)
        mask = padding.clone()
        mask[:, 0] = False  # an empty history keeps one (padding) token: nn.MultiheadAttention NaNs on all-masked rows
        x = self.encoder(tokens, src_key_padding_mask=mask).masked_fill(padding[..., None], 0.0)
        pooled = x.masked_fill(padding[..., None], float("-inf")).amax(1).nan_to_num(0.0, neginf=0.0)
        recent = (lengths[:, None] - 1 - torch.arange(k)[None, :])
        taken = x.gather(1, recent.clamp(min=0)[..., None].expand(-1, -1, x.shape[-1]))
        taken = taken.masked_fill((recent < 0)[..., None], 0.0)
        sequence = self.project(torch.cat([pooled, taken.reshape(b, -1)], 1))
        users = self.users(batch.user_idx % self.config.user_buckets)
        context = context_features(lengths, batch.actions, batch.request_time, self.config.num_actions)
        logits = self.head(context, torch.stack([candidate, users, sequence], 1))
        return nn.functional.binary_cross_entropy_with_logits(logits, batch.labels).mean(0).sum()


def step_fn(model: nn.Module, loss_of, optimizer: torch.optim.Optimizer):
    def step(batch) -> None:
        optimizer.zero_grad()
        loss_of(model, batch).backward()
        optimizer.step()
    return step


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="data/kuairand", help="dataset folder with impressions.parquet")
    parser.add_argument("--heads", default="click,long_view,like,follow")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--max-len", type=int, default=100)
    parser.add_argument("--batches", type=int, default=12, help="timed batches per model (after 2 warm-up)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    heads = args.heads.split(",")
    manifest = read_manifest(args.data)
    loader = build_loader(args.data, LoaderConfig(batch_size=args.batch_size, max_len=args.max_len,
                                                  kind="impressions", split="train", heads=tuple(heads)))
    batches = [b for _, b in zip(range(args.batches + 2), loader)]
    config = TransActConfig(heads=heads, num_actions=max(16, len(manifest.actions)))
    ours = registry.build(config, num_items=manifest.num_items, max_len=args.max_len).train()
    naive = NaiveTransAct(config, manifest.num_items, args.max_len).train()
    steps = {
        "seqrec": step_fn(ours, lambda m, b: m(b)[0], torch.optim.Adam(ours.parameters(), 1e-3)),
        "naive": step_fn(naive, lambda m, b: m(b), torch.optim.Adam(naive.parameters(), 1e-3)),
    }
    seconds = {name: 0.0 for name in steps}
    for i, batch in enumerate(batches):
        for name, step in (steps.items() if i % 2 == 0 else reversed(steps.items())):
            started = time.perf_counter()
            step(batch)
            if i >= 2:
                seconds[name] += time.perf_counter() - started
    examples = sum(b.size for b in batches[2:])
    lengths = torch.cat([b.sparse["history"].lengths() for b in batches[2:]]).float()
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, {args.threads} thread(s); "
          f"{args.data}: {len(batches) - 2} batches of {args.batch_size}, history mean {lengths.mean():.1f}, "
          f"max {int(lengths.max())} (max_len {args.max_len})")
    for name in steps:
        print(f"  {name:7s} {examples / seconds[name]:8.0f} examples/s")
    print(f"  ratio seqrec / naive: {seconds['naive'] / seconds['seqrec']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
