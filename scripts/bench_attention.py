"""Attention backends at long lengths: forward + backward time and activation memory of SASRec's encoder blocks
on real length mixes, against naive padded softmax(QK^T)V in the same process.

One batch of ``--batch`` histories is drawn (fixed seed) from a length distribution: ``ml1m`` and ``lastfm`` are
the users' own history lengths in ../shared/data (sasrec-ml-1m, s3rec-lastfm; training input = events - 2 under
leave-one-out), ``synthetic`` is `seqrec synth`'s lognormal long tail (``--synth-mean``, sigma 1.2); each is cut
at ``max_len``. Every variant runs the same `modules.encoders.sasrec.SASRecEncoder` (2 blocks, width 64, 1 head, dropout
0.2, training mode) on the same jagged input and backpropagates a fixed random projection of its real outputs:

* ``naive``: the baseline -- the batch padded to its longest, softmax(QK^T)V written out with dropout on the
  weights (what the default ``sdpa`` backend runs on CPU when training with attention dropout);
* ``sdpa-out`` / ``sdpa-out-g4``: SDPA's fused kernel, dropout on the attention output, 1 or 4 length groups;
* ``jagged-g4`` (dropout on the weights, exactly the baseline's model), ``jagged-out-g4`` and ``-g16``;
* ``local64-out-g4`` / ``local128-out-g4``: sliding windows of 64 / 128 keys;
* ``linear-out-g4`` and ``linmix-out-g4`` (linear mixed half and half with a 64-key window);
* ``jagged-out-g4-ckpt``: ``jagged-out-g4`` with activation checkpointing of the blocks.

Time: median of ``--repeats`` after a warm-up, variants interleaved, once in wall time and once in this
process's CPU time (all its threads; the figure other jobs on a shared machine disturb least). Memory: the bytes of the distinct tensors
autograd keeps for backward (saved-tensor hooks) -- the activation memory that grows with length; transient
buffers of a kernel are not counted. ``--rss`` instead runs each variant once in a fresh process and reports its
peak resident memory above the process's start (slower; one length and mix at a time). Ratios are the
baseline's figure over the variant's (time) and the variant's over the baseline's (memory).

    python scripts/bench_attention.py --lengths 200 500 --mixes ml1m --repeats 2
    python scripts/bench_attention.py --lengths 1000 --mixes ml1m lastfm synthetic
    python scripts/bench_attention.py --lengths 2000 --batch 32 --variants naive jagged-out-g4 local128-out-g4
    python scripts/bench_attention.py --lengths 1000 --mixes ml1m --rss
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import resource
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench_dropout import interleaved_medians  # noqa: E402  (scripts/ is on sys.path when run as a script)
from torchrec.sparse.jagged_tensor import JaggedTensor  # noqa: E402

from modules.attention_config import AttentionConfig  # noqa: E402
from modules.encoders.sasrec import SASRecEncoder, SASRecEncoderConfig  # noqa: E402

DATA = REPO.parent / "shared" / "data"
DIM, BLOCKS, HEADS, DROPOUT = 64, 2, 1, 0.2


@dataclasses.dataclass(frozen=True)
class Variant:
    """One encoder setting: backend, its config and the number of length groups."""

    backend: str
    config: AttentionConfig
    groups: int


OUT = {"dropout": "output"}
VARIANTS = {
    "naive": Variant("naive", AttentionConfig(), 1),
    "sdpa-out": Variant("sdpa", AttentionConfig(**OUT), 1),
    "sdpa-out-g4": Variant("sdpa", AttentionConfig(**OUT), 4),
    "jagged-g4": Variant("jagged", AttentionConfig(chunk=128), 4),
    "jagged-out-g4": Variant("jagged", AttentionConfig(chunk=128, **OUT), 4),
    "jagged-out-g16": Variant("jagged", AttentionConfig(chunk=128, **OUT), 16),
    "local64-out-g4": Variant("local", AttentionConfig(window=64, chunk=64, **OUT), 4),
    "local128-out-g4": Variant("local", AttentionConfig(window=128, chunk=64, **OUT), 4),
    "linear-out-g4": Variant("linear", AttentionConfig(chunk=64, **OUT), 4),
    "linmix-out-g4": Variant("linear", AttentionConfig(chunk=64, window=64, local_mix=0.5, **OUT), 4),
    "jagged-out-g4-ckpt": Variant("jagged", AttentionConfig(chunk=128, checkpoint=True, **OUT), 4),
}


def user_lengths(mix: str, synth_mean: float) -> np.ndarray:
    """Training-input lengths of every user of a mix (events - 2 under leave-one-out; synthetic: as drawn)."""
    if mix == "ml1m":
        users = np.loadtxt(DATA / "sasrec-ml-1m" / "ml-1m.txt", dtype=np.int64, usecols=0)
        counts = np.bincount(users)[1:]
    elif mix == "lastfm":
        with open(DATA / "s3rec-lastfm" / "LastFM.txt") as lines:
            counts = np.array([len(line.split()) - 1 for line in lines if line.strip()])
    else:
        # the generator's own length law (lognormal, sigma 1.2, clipped to [3, 100,000])
        from trainer.data.synth import SynthConfig, _lengths

        counts = _lengths(np.random.default_rng(0), 100_000, SynthConfig(mean_length=synth_mean, max_length=100_000))
    return np.maximum(counts - 2, 1)


def draw_batch(lengths: np.ndarray, batch: int, max_len: int) -> torch.Tensor:
    """``batch`` users' lengths (fixed seed), cut at ``max_len``."""
    rng = np.random.default_rng(1)
    return torch.from_numpy(np.minimum(rng.choice(lengths, batch, replace=False), max_len)).long()


def make_step(variant: Variant, lengths: torch.Tensor, max_len: int) -> Callable[[], None]:
    """Forward + backward of the encoder on one fixed jagged input."""
    torch.manual_seed(0)
    config = SASRecEncoderConfig(num_blocks=BLOCKS, num_heads=HEADS, dropout=DROPOUT, attn_backend=variant.backend,
                                 length_groups=variant.groups, attention=variant.config)
    encoder = SASRecEncoder(config, DIM, max_len).train()
    values = torch.randn(int(lengths.sum()), DIM, requires_grad=True)
    history = JaggedTensor(values=values, lengths=lengths)
    offsets = history.offsets()
    weights = torch.randn(int(lengths.sum()), DIM)
    timestamps = torch.zeros(int(lengths.sum()), dtype=torch.int64)  # unused by SASRec

    def step() -> None:
        hidden = encoder(values, lengths, timestamps)
        real = torch.ops.fbgemm.dense_to_jagged(hidden, [offsets])[0]
        (real * weights).sum().backward()

    return step


def saved_bytes(step: Callable[[], None]) -> int:
    """Bytes of the distinct storages autograd keeps for backward during one step."""
    storages: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        step()
    return sum(storages.values())


def peak_rss_mib(variant: str, mix: str, length: int, args: argparse.Namespace) -> float:
    """Peak resident memory (MiB) of one step of ``variant`` in a fresh process, above its pre-step peak."""
    cmd = [sys.executable, __file__, "--child", variant, "--mixes", mix, "--lengths", str(length),
           "--batch", str(args.batch), "--threads", str(args.threads), "--synth-mean", str(args.synth_mean)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    return float(out.stdout.split()[-1])


def child(variant: str, args: argparse.Namespace) -> int:
    """``--child``: build, take the peak RSS, run one step, print the growth of the peak in MiB."""
    lengths = draw_batch(user_lengths(args.mixes[0], args.synth_mean), args.batch, args.lengths[0])
    step = make_step(VARIANTS[variant], lengths, args.lengths[0])
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    step()
    print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024)
    return 0


def bench(mix: str, length: int, args: argparse.Namespace) -> None:
    """One table: every variant on one batch of ``mix`` at ``max_len = length``."""
    lengths = draw_batch(user_lengths(mix, args.synth_mean), args.batch, length)
    longest, real = int(lengths.max()), int(lengths.sum())
    print(f"\n{mix}, max_len {length}, batch {args.batch}: longest {longest}, {real} real tokens "
          f"({real / (args.batch * longest):.0%} of the padded batch), mean {lengths.float().mean():.0f}")
    names = ["naive", *[v for v in args.variants if v != "naive"]]
    if args.rss:
        peaks = {name: peak_rss_mib(name, mix, length, args) for name in names}
        print(f"{'variant':<20} {'peak RSS MiB':>13} {'vs naive':>9}")
        for name in names:
            print(f"{name:<20} {peaks[name]:13.0f} {peaks[name] / peaks['naive']:8.3f}x")
        return
    steps = {name: make_step(VARIANTS[name], lengths, length) for name in names}
    memory = {name: saved_bytes(step) / 2**20 for name, step in steps.items()}
    wall = interleaved_medians(steps, args.repeats)
    cpu = interleaved_medians(steps, args.repeats, time.process_time)
    print(f"{'variant':<20} {'wall ms':>9} {'speedup':>8} {'CPU ms':>9} {'speedup':>8} {'saved MiB':>10} {'memory':>8}")
    for name in names:
        print(f"{name:<20} {1000 * wall[name]:9.1f} {wall['naive'] / wall[name]:7.2f}x {1000 * cpu[name]:9.1f} "
              f"{cpu['naive'] / cpu[name]:7.2f}x {memory[name]:10.1f} {memory[name] / memory['naive']:7.3f}x")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="examples:\n" + __doc__.rsplit("\n\n", 1)[1])
    parser.add_argument("--lengths", type=int, nargs="+", default=[200, 500, 1000, 2000], help="max_len values")
    parser.add_argument("--mixes", nargs="+", default=["ml1m", "lastfm", "synthetic"],
                        choices=["ml1m", "lastfm", "synthetic"], help="length distributions")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS),
                        help="variants besides the naive baseline (always run)")
    parser.add_argument("--batch", type=int, default=128, help="histories per batch")
    parser.add_argument("--repeats", type=int, default=3, help="timed steps per variant (median)")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument("--synth-mean", type=float, default=100.0, help="synthetic mix: mean length (lognormal)")
    parser.add_argument("--rss", action="store_true", help="peak resident memory per variant, fresh processes")
    parser.add_argument("--child", choices=list(VARIANTS), help=argparse.SUPPRESS)
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    torch.set_num_threads(args.threads)
    if args.child:
        return child(args.child, args)
    print(f"SASRec encoder ({BLOCKS} blocks, width {DIM}, {HEADS} head, dropout {DROPOUT}) fwd+bwd; "
          f"{platform.machine()} CPU, {os.cpu_count()} cores, {args.threads} threads, torch {torch.__version__}")
    for mix in args.mixes:
        for length in args.lengths:
            bench(mix, length, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
