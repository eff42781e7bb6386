"""Training throughput on MovieLens-1M: seqrec's trainer against a plain PyTorch SASRec, in the same process.

Ours is the real training path on one rank: a dataset folder made by ``seqrec prepare --format sasrec`` from
``../shared/data/sasrec-ml-1m/ml-1m.txt``, then `trainer.train.run_training` (DistributedModelParallel over a
1-process gloo group, streaming jagged loader with length bucketing, FBGEMM fused row-wise Adagrad for the item
table, AdamW for dense layers). Variants: ``fp32`` (defaults: TorchRec train pipeline on, chunked softmax,
length-bucketed batches whose blocks run in 4 length groups), ``nogroups`` (``model.encoder.length_groups=1``),
``bf16`` (``trainer.bf16=true``), ``nopipe`` (``trainer.pipeline=false``, the plain loop), ``unchunked``
(``model.objective.softmax_chunk=0``: the plain cross entropy over materialised logits), ``nobucket``
(``data.bucket_batches=1 model.encoder.length_groups=1``: random batches, each padded to its longest), ``groups4`` /
``groups8`` (random batches whose blocks run on 4 / 8 length-sorted groups, as the accuracy experiments train)
and ``2ranks`` (torchrun, 2 ranks).

The baseline is SASRec written the way common implementations do it (pmixer/SASRec.pytorch): every training
sequence left-padded to ``max_len``, ``nn.Embedding`` for items and positions, pre-LN blocks with naive
``softmax(QK^T)V`` attention written out, one Adam over all parameters (dense embedding gradients), the loss
computed at every padded position and masked. Both train the same loss, chosen by ``--loss``: ``softmax``
(full cross-entropy over the catalogue, ours' default) or ``bce`` (one sampled negative; pmixer draws one per
position, ours one per sequence shared by its positions). Settings: max_len 200, dim 48 (below), 1 head, 2 blocks,
dropout 0.2, batch 128, CPU.

Timing. Ours: `run_training` is timed with ``trainer.max_steps=W`` and with ``W + S``; the difference is the time
of S steps after W warm-up steps (start-up, the pipeline's fill/drain and the final checkpoint cancel out). The
sequences and real (non-padding) target tokens in exactly those S batches are counted by replaying the same
loader. Baseline: W untimed steps, then S timed steps of 128 sequences; its tokens are the non-padding targets.
The ``x seq/s`` and ``x tok/s`` columns divide by the baseline. Ours' batches are length-bucketed, so S steps may hold shorter or
longer users than average: tokens/s is the length-independent figure (``tok/seq`` shows the window's mean).
Two things to know when reading the table: with ``loss=softmax`` and tied weights the item lookup is not
pipelined (see `modules.sasrec`), so ``fp32`` and ``nopipe`` differ only by the pipeline's own overhead; and on a
CPU without native bf16 instructions (AVX512-BF16/AMX) bf16 autocast has no fast kernels and is much slower.

Width: the usual ML-1M setting is 50, but FBGEMM's embedding kernels need a multiple of 4, so both models use
``--dim`` (default 48).

``--quality`` instead trains both for ``--epochs`` epochs and reports validation (and test) NDCG@10, ours from
the run's metrics, the baseline through the same kernels (`full_ranking` over all items with seen items
filtered, `MetricAccumulator`), so throughput can be compared at equal quality. Each trains with its own
defaults (ours: the config's AdamW + row-wise Adagrad, warm-up and cosine decay; the baseline: Adam at 1e-3, as
pmixer). It takes long on a small CPU (about 4 minutes per epoch per model on 2 busy cores).

Usage::

    python scripts/bench_train.py                                  # W=1, S=6, all variants (~4-5 min on 2 cores)
    python scripts/bench_train.py --steps 40 --variants fp32,bf16 --dataset data/ml1m
    python scripts/bench_train.py --quality --epochs 20 --dataset data/ml1m
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import platform
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch
import torch.nn.functional as F
from torch import nn

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from trainer.config import TrainConfig, load_config, resolve_negatives  # noqa: E402
from trainer.data.loader import LoaderConfig, build_loader  # noqa: E402
from trainer.data.schema import SEQUENCES, read_manifest  # noqa: E402
from trainer.evaluate import SeenIndex  # noqa: E402
from trainer.evaluation.metrics import MetricAccumulator  # noqa: E402
from trainer.evaluation.ranking import full_ranking  # noqa: E402
from trainer.train import run_training  # noqa: E402

ML1M = REPO.parent / "shared" / "data" / "sasrec-ml-1m" / "ml-1m.txt"
VARIANTS = {
    "fp32": [],
    "bf16": ["trainer.bf16=true"],
    "nopipe": ["trainer.pipeline=false"],
    "unchunked": ["model.objective.softmax_chunk=0"],  # the plain (T, N)-logits cross entropy
    "nogroups": ["model.encoder.length_groups=1"],  # bucketed batches, the blocks on the whole batch
    "nobucket": ["data.bucket_batches=1", "model.encoder.length_groups=1"],  # random batches, padded to their longest
    # random batches, the blocks run on 4 / 8 length-sorted groups of each (same outputs, less padding)
    "groups4": ["data.bucket_batches=1", "model.encoder.length_groups=4"],
    "groups8": ["data.bucket_batches=1", "model.encoder.length_groups=8"],
    "2ranks": [],
}
MAX_LEN, BLOCKS, HEADS, BATCH, DROPOUT, LR = 200, 2, 1, 128, 0.2, 1e-3
DEFAULT_DIM = 48


# ------------------------------------------------------------------------------------------------ the dataset
def ensure_dataset(path: Path | None, scratch: Path) -> Path:
    """Reuse ``path`` when it holds a dataset folder; otherwise run ``seqrec prepare --format sasrec`` into it."""
    from trainer.data.prepare import PrepareConfig, prepare

    folder = path or scratch / "ml1m"
    if not (folder / "manifest.json").is_file():
        print(f"preparing {folder} from {ML1M.name} ...", flush=True)
        prepare(PrepareConfig(format="sasrec", input=ML1M, output=folder))
    return folder


def read_sequences(folder: Path) -> dict[str, np.ndarray]:
    """Flat item ids, per-user offsets and split positions (train_end, valid_end, n) from sequences.parquet."""
    table = pq.read_table(folder / SEQUENCES, columns=["user_idx", "items", "train_end", "valid_end"])
    items = table.column("items").combine_chunks()
    offsets = items.offsets.to_numpy().astype(np.int64)
    return {
        "user_idx": table.column("user_idx").to_numpy().astype(np.int64),
        "flat": items.values.to_numpy().astype(np.int64),
        "offsets": offsets,
        "train_end": table.column("train_end").to_numpy().astype(np.int64),
        "valid_end": table.column("valid_end").to_numpy().astype(np.int64),
        "n": np.diff(offsets),
    }


def left_padded(seqs: dict[str, np.ndarray], end: np.ndarray, width: int) -> np.ndarray:
    """``(U, width)``: each user's last ``width`` items before position ``end``, left-padded with 0."""
    take = np.minimum(end, width)
    rows = np.repeat(np.arange(len(end)), take)
    within = np.arange(int(take.sum())) - np.repeat(np.cumsum(take) - take, take)
    out = np.zeros((len(end), width), dtype=np.int64)
    out[rows, width - np.repeat(take, take) + within] = seqs["flat"][
        np.repeat(seqs["offsets"][:-1] + end - take, take) + within
    ]
    return out


# ----------------------------------------------------------------------------------------------- the baseline
class NaiveSASRec(nn.Module):
    """SASRec as in pmixer/SASRec.pytorch (``norm_first``): dense left-padded ``(B, L)`` ids in, ``(B, L, D)`` out."""

    def __init__(self, num_items: int, max_len: int, dim: int, blocks: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.dim, self.heads = dim, heads
        self.item_emb = nn.Embedding(num_items + 1, dim, padding_idx=0)
        self.pos_emb = nn.Embedding(max_len + 1, dim, padding_idx=0)
        self.drop = nn.Dropout(dropout)
        self.attn_norms = nn.ModuleList(nn.LayerNorm(dim, eps=1e-8) for _ in range(blocks))
        self.qkv = nn.ModuleList(nn.Linear(dim, 3 * dim) for _ in range(blocks))
        self.proj = nn.ModuleList(nn.Linear(dim, dim) for _ in range(blocks))
        self.ffn_norms = nn.ModuleList(nn.LayerNorm(dim, eps=1e-8) for _ in range(blocks))
        self.ffns = nn.ModuleList(
            nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Dropout(dropout), nn.Linear(dim, dim), nn.Dropout(dropout))
            for _ in range(blocks)
        )
        self.last_norm = nn.LayerNorm(dim, eps=1e-8)

    def attention(self, i: int, x: torch.Tensor, causal: torch.Tensor) -> torch.Tensor:
        """Naive multi-head attention: the full ``(B, H, L, L)`` score matrix, masked, softmax, times V."""
        b, length, d = x.shape
        q, k, v = self.qkv[i](x).view(b, length, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        scores = (q @ k.transpose(-1, -2)) / math.sqrt(d // self.heads)
        weights = self.drop(torch.softmax(scores.masked_fill(causal, float("-inf")), dim=-1))
        return self.proj[i]((weights @ v).transpose(1, 2).reshape(b, length, d))

    def forward(self, seqs: torch.Tensor) -> torch.Tensor:
        length = seqs.shape[1]
        real = (seqs != 0).unsqueeze(-1)
        positions = torch.arange(1, length + 1, device=seqs.device).expand_as(seqs) * (seqs != 0)
        x = self.drop(self.item_emb(seqs) * self.dim**0.5 + self.pos_emb(positions)) * real
        causal = torch.ones(length, length, dtype=torch.bool, device=seqs.device).triu(1)
        for i in range(len(self.qkv)):
            x = x + self.drop(self.attention(i, self.attn_norms[i](x), causal))
            x = (x + self.ffns[i](self.ffn_norms[i](x))) * real
        return self.last_norm(x)

    def loss(self, seqs: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor | None) -> torch.Tensor:
        """Full softmax CE (``neg=None``) or BCE with one negative per position, masked to real targets."""
        feats = self.forward(seqs)
        if neg is None:
            logits = feats @ self.item_emb.weight.T  # (B, L, N + 1): every padded position is scored too
            logits[..., 0] = float("-inf")
            return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), pos.reshape(-1), ignore_index=0)
        pos_logits = (feats * self.item_emb(pos)).sum(-1)
        neg_logits = (feats * self.item_emb(neg)).sum(-1)
        mask = pos != 0
        return F.binary_cross_entropy_with_logits(
            pos_logits[mask], torch.ones_like(pos_logits[mask])
        ) + F.binary_cross_entropy_with_logits(neg_logits[mask], torch.zeros_like(neg_logits[mask]))


class Baseline:
    """The plain model, its Adam and its training data (all users' train parts padded to ``max_len + 1``)."""

    def __init__(self, seqs: dict[str, np.ndarray], num_items: int, loss: str, dim: int, seed: int) -> None:
        torch.manual_seed(seed)
        self.num_items, self.loss_name = num_items, loss
        self.model = NaiveSASRec(num_items, MAX_LEN, dim, BLOCKS, HEADS, DROPOUT)
        for name, p in self.model.named_parameters():  # pmixer: xavier_normal_ on every matrix
            if p.dim() > 1:
                nn.init.xavier_normal_(p)
            if "emb" in name:
                p.data[0] = 0.0
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=LR, betas=(0.9, 0.98))
        train = left_padded(seqs, seqs["train_end"], MAX_LEN + 1)
        self.train = torch.from_numpy(train[seqs["train_end"] >= 2])
        self.generator = torch.Generator().manual_seed(seed)

    def batches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Endless epochs of shuffled ``(history, target)`` batches of 128 users."""
        while True:
            order = torch.randperm(len(self.train), generator=self.generator)
            for lo in range(0, len(order), BATCH):
                rows = self.train[order[lo : lo + BATCH]]
                yield rows[:, :-1], rows[:, 1:]

    def step(self, seqs: torch.Tensor, pos: torch.Tensor) -> float:
        neg = None
        if self.loss_name == "bce":
            neg = torch.randint(1, self.num_items + 1, pos.shape, generator=self.generator) * (pos != 0)
        self.optimizer.zero_grad()
        loss = self.model.loss(seqs, pos, neg)
        loss.backward()
        self.optimizer.step()
        return float(loss)

    def run(self, steps: int, batches: Iterator[tuple[torch.Tensor, torch.Tensor]]) -> tuple[int, int]:
        """Train ``steps`` steps; returns (sequences, real target tokens) seen."""
        self.model.train()
        sequences = tokens = 0
        for _ in range(steps):
            seqs, pos = next(batches)
            self.step(seqs, pos)
            sequences += seqs.shape[0]
            tokens += int((pos != 0).sum())
        return sequences, tokens

    @torch.no_grad()
    def evaluate(self, folder: Path, seqs: dict[str, np.ndarray], split: str) -> dict[str, float]:
        """NDCG@10 / HR@10 over every user: last-position query, full ranking, seen items filtered."""
        self.model.eval()
        end = seqs["train_end"] if split == "valid" else seqs["valid_end"]
        stop = seqs["valid_end"] if split == "valid" else seqs["n"]
        keep = np.flatnonzero((end >= 1) & (stop > end))
        history = torch.from_numpy(left_padded(seqs, end, MAX_LEN)[keep])
        counts = (stop - end)[keep]
        target_offsets = np.concatenate([[0], np.cumsum(counts)])
        starts = np.repeat(seqs["offsets"][:-1][keep] + end[keep], counts)
        targets = seqs["flat"][starts + np.arange(int(counts.sum())) - np.repeat(target_offsets[:-1], counts)]
        items = self.model.item_emb.weight.detach().clone()
        seen_index = SeenIndex(folder, split)
        acc = MetricAccumulator(ks=[10], metrics=("ndcg", "hr"))
        for lo in range(0, len(keep), 256):
            hi = min(lo + 256, len(keep))
            queries = self.model(history[lo:hi])[:, -1]
            offsets = torch.from_numpy(target_offsets[lo : hi + 1] - target_offsets[lo])
            jagged = (torch.from_numpy(targets[target_offsets[lo] : target_offsets[hi]]), offsets)
            seen = seen_index.gather(torch.from_numpy(seqs["user_idx"][keep[lo:hi]]))
            acc.update(full_ranking(queries, items, 10, jagged, seen).ranks.rank, offsets)
        acc.all_reduce()
        return acc.compute()


# ------------------------------------------------------------------------------------------------------- ours
def ours_overrides(dataset: Path, out: Path, loss: str, dim: int, run_id: str, *extra: str) -> list[str]:
    return [
        f"data.path={dataset}",
        f"trainer.output_dir={out}",
        f"data.max_len={MAX_LEN}",
        f"data.batch_size={BATCH}",
        f"model.dim={dim}",
        f"model.encoder.num_blocks={BLOCKS}",
        f"model.encoder.num_heads={HEADS}",
        f"model.encoder.dropout={DROPOUT}",
        f"model.objective.loss={loss}",
        "trainer.experiment=bench_train",
        f"trainer.run_id={run_id}",
        "trainer.progress=false",
        "trainer.eval_every_epochs=0",
        "eval.per_user=false",
        *extra,
    ]


def timed_training(overrides: list[str]) -> tuple[float, dict]:
    cfg = load_config(overrides)
    start = time.perf_counter()
    results = run_training(cfg)
    return time.perf_counter() - start, results


def trained_window(cfg: TrainConfig, first: int, last: int) -> tuple[int, int]:
    """(sequences, target tokens) of the batches trained by steps ``first + 1 .. last``, replaying the loader
    with the settings `trainer.train.Trainer` gives it (the batches are a deterministic function of the seed)."""
    d = cfg.data
    loader = build_loader(d.path, LoaderConfig(
        batch_size=d.batch_size, max_len=d.max_len, kind="causal", split="train", shuffle=True,
        seed=cfg.trainer.seed, bucket_batches=d.bucket_batches, negatives=resolve_negatives(cfg),
        num_negatives=d.num_negatives, popularity_alpha=d.popularity_alpha, num_workers=d.num_workers,
    ))
    sequences = tokens = index = epoch = 0
    while index < last:
        loader.dataset.set_epoch(epoch)
        for batch in loader:
            if index >= first:
                sequences += batch.size
                tokens += int(batch.sparse["target"].lengths().sum())
            index += 1
            if index >= last:
                break
        epoch += 1
    return sequences, tokens


def measure_ours(dataset: Path, out: Path, args: argparse.Namespace, variant: str) -> dict:
    extra, warmup, steps = VARIANTS[variant], args.warmup, args.steps
    runs = {}
    for n in (warmup, warmup + steps):
        overrides = ours_overrides(dataset, out, args.loss, args.dim, f"{variant}-{n}", f"trainer.max_steps={n}",
                                   "trainer.test_at_end=false", *extra)
        runs[n], results = timed_training(overrides)
        if results["steps"] != n:
            raise RuntimeError(f"{variant}: asked for {n} steps, trained {results['steps']}")
    sequences, tokens = trained_window(load_config(overrides), warmup, warmup + steps)
    return {"seconds": runs[warmup + steps] - runs[warmup], "sequences": sequences, "tokens": tokens}


def measure_two_ranks(dataset: Path, out: Path, args: argparse.Namespace) -> dict:
    """Ours on 2 ranks (torchrun, gloo, 1 thread each; batch per rank as above, so twice the global batch): the
    run's own throughput record (all steps, both ranks, slowest rank's step time)."""
    import json
    import subprocess
    import sys

    n = args.warmup + args.steps
    overrides = ours_overrides(dataset, out, args.loss, args.dim, f"2ranks-{n}", f"trainer.max_steps={n}",
                               "trainer.test_at_end=false")
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                    str(Path(__file__).resolve().parents[1] / "trainer" / "train.py"), *overrides], check=True,
                   stdout=subprocess.DEVNULL)
    speed = json.loads((out / "bench_train" / f"2ranks-{n}" / "metrics.json").read_text())["throughput"]
    seconds = speed["train_seconds"]
    return {"seconds": seconds, "sequences": speed["sequences_per_s"] * seconds,
            "tokens": speed["targets_per_s"] * seconds}


def measure_baseline(seqs: dict[str, np.ndarray], num_items: int, args: argparse.Namespace) -> dict:
    baseline = Baseline(seqs, num_items, args.loss, args.dim, seed=42)
    batches = baseline.batches()
    baseline.run(args.warmup, batches)
    start = time.perf_counter()
    sequences, tokens = baseline.run(args.steps, batches)
    return {"seconds": time.perf_counter() - start, "sequences": sequences, "tokens": tokens}


# ---------------------------------------------------------------------------------------------------- reports
def load() -> str:
    return "load average " + " ".join(f"{x:.2f}" for x in os.getloadavg())


def machine() -> str:
    return f"{platform.processor() or platform.machine()} CPU, {os.cpu_count()} cores, {torch.get_num_threads()} threads"


def matmul_gflops(seconds: float = 1.0, size: int = 2048) -> float:
    """This machine's fp32 matmul rate (GFLOP/s) at the current thread count: the ceiling MFU is measured against."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b  # warm-up
    calls, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        a @ b
        calls += 1
    return 2 * size**3 * calls / (time.perf_counter() - start) / 1e9


def useful_flops(tokens: int, sequences: int, dim: int, loss: str, num_items: int) -> float:
    """Model FLOPs of training on ``tokens`` real positions in ``sequences`` histories (forward + 2x backward).

    Per real token and block: Q/K/V/output projections ``8 D^2``, feed-forward (width D) ``4 D^2``, causal
    attention ``4 D`` per visible key (``(L + 1) / 2`` keys on average, L = tokens per sequence); the loss
    scores each target against the catalogue (``2 D N``, full softmax) or a positive and a negative (BCE).
    Padding, lookups and optimizer steps are not useful work and not counted.
    """
    keys = (tokens / max(sequences, 1) + 1) / 2
    per_token = BLOCKS * (12 * dim * dim + 4 * dim * keys) + (2 * dim * num_items if loss == "softmax" else 4 * dim)
    return 3.0 * per_token * tokens


def print_table(rows: dict[str, dict], dim: int, loss: str, num_items: int, peak: float) -> None:
    base = rows["baseline"]
    base_seq, base_tok = base["sequences"] / base["seconds"], base["tokens"] / base["seconds"]
    print(f"{'variant':<10} {'steps s':>8} {'seq/s':>8} {'tokens/s':>9} {'tok/seq':>8} {'x seq/s':>8} {'x tok/s':>8} "
          f"{'GFLOP/s':>8} {'MFU':>6}")
    for name, r in rows.items():
        seq_s, tok_s = r["sequences"] / r["seconds"], r["tokens"] / r["seconds"]
        gflops = useful_flops(r["tokens"], r["sequences"], dim, loss, num_items) / r["seconds"] / 1e9
        print(f"{name:<10} {r['seconds']:8.2f} {seq_s:8.1f} {tok_s:9.0f} {r['tokens'] / r['sequences']:8.1f} "
              f"{seq_s / base_seq:8.2f} {tok_s / base_tok:8.2f} {gflops:8.1f} {gflops / peak:6.1%}")
    print(f"MFU: useful model FLOPs per second over this machine's measured fp32 matmul rate, {peak:.0f} GFLOP/s "
          f"(2048^2, {torch.get_num_threads()} threads)")


def throughput(args: argparse.Namespace, dataset: Path, out: Path) -> None:
    seqs = read_sequences(dataset)
    num_items = read_manifest(dataset).num_items
    print(f"{machine()}; {load()}", flush=True)
    rows = {"baseline": measure_baseline(seqs, num_items, args)}
    print(f"  baseline done; {load()}", flush=True)
    for variant in args.variants:
        if variant == "2ranks":
            rows[variant] = measure_two_ranks(dataset, out, args)
        else:
            rows[variant] = measure_ours(dataset, out, args, variant)
        print(f"  {variant} done; {load()}", flush=True)
    peak = matmul_gflops()
    print(f"\nSASRec ML-1M, loss={args.loss}, max_len {MAX_LEN}, dim {args.dim}, {BLOCKS} blocks, {HEADS} head, "
          f"batch {BATCH}; {args.steps} steps timed after {args.warmup} warm-up; {machine()}")
    print_table(rows, args.dim, args.loss, num_items, peak)


def quality(args: argparse.Namespace, dataset: Path, out: Path) -> None:
    seqs = read_sequences(dataset)
    num_items = read_manifest(dataset).num_items
    print(f"{machine()}; {load()}", flush=True)
    baseline = Baseline(seqs, num_items, args.loss, args.dim, seed=42)
    steps = math.ceil(len(baseline.train) / BATCH) * args.epochs
    start = time.perf_counter()
    baseline.run(steps, baseline.batches())
    base_s = time.perf_counter() - start
    base = {split: baseline.evaluate(dataset, seqs, split) for split in ("valid", "test")}
    print(f"  baseline done; {load()}", flush=True)
    ours_s, results = timed_training(ours_overrides(
        dataset, out, args.loss, args.dim, "quality", f"trainer.epochs={args.epochs}", "trainer.test_at_end=true"
    ))
    print(f"\nSASRec ML-1M, loss={args.loss}, {args.epochs} epochs; {machine()}; {load()}")
    print(f"{'model':<10} {'train s':>8} {'valid ndcg@10':>14} {'valid hr@10':>12} {'test ndcg@10':>13}")
    for name, seconds, m in (("baseline", base_s, base), ("ours", ours_s, results)):
        print(f"{name:<10} {seconds:8.1f} {m['valid']['ndcg@10']:14.4f} {m['valid']['hr@10']:12.4f} "
              f"{m['test']['ndcg@10']:13.4f}")
    print("(ours' time includes start-up and its own valid/test evaluation)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=6, help="timed steps per variant (after --warmup)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps before the timed ones")
    parser.add_argument("--dataset", type=Path, help="ML-1M dataset folder to reuse (prepared there if missing)")
    parser.add_argument("--variants", default="fp32,bf16,nopipe", help=f"comma list of {list(VARIANTS)}")
    parser.add_argument("--dim", type=int, default=DEFAULT_DIM, help="model width of both (a multiple of 4)")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    parser.add_argument("--loss", choices=("softmax", "bce"), default="softmax", help="the loss both train")
    parser.add_argument("--quality", action="store_true", help="train --epochs epochs each and compare NDCG@10")
    parser.add_argument("--epochs", type=int, default=10, help="epochs for --quality")
    args = parser.parse_args()
    args.variants = [v for v in args.variants.split(",") if v]
    unknown = sorted(set(args.variants) - set(VARIANTS))
    if unknown or args.steps < 1 or args.warmup < 1:
        parser.error(f"unknown variants {unknown}" if unknown else "--steps and --warmup must be >= 1")
    torch.set_num_threads(args.threads)
    # TorchRec's planner/pipeline notices and deprecation warnings would bury the table.
    logging.getLogger().setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=UserWarning)
    with tempfile.TemporaryDirectory(prefix="bench_train_") as scratch:
        dataset = ensure_dataset(args.dataset, Path(scratch))
        (quality if args.quality else throughput)(args, dataset, Path(scratch) / "outputs")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
