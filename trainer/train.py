"""The training loop: ``seqrec train`` / ``python -m trainer.train [overrides]`` / ``torchx run ... dist.ddp``.

One file, read top to bottom: `Trainer` builds the loader, the sharded model and the optimizers from `TrainConfig`,
then `train()` runs epochs of `train_step`s (TorchRec's `TrainPipelineSparseDist` overlaps the embedding
all-to-all with compute; a plain loop is the fallback), evaluates on the validation split, keeps the best value of
the task's selection metric (`trainer.tasks`; NDCG@10 for retrieval) for early stopping, and writes DCP checkpoints (every N steps, at epoch ends, at the end and on SIGTERM). The
checkpoint with the best validation metric is recorded in ``best.json`` and kept; the final valid/test metrics are
those of that checkpoint (model selection on validation, as the published protocols do).

Launch unchanged on one process, on ``torchrun --nproc-per-node 2`` or torchx. Examples:
  seqrec train data.path=data/ml1m trainer.epochs=20
  torchx run -s local_cwd dist.ddp -j 1x2 --script trainer/train.py -- data.path=data/ml1m trainer.max_steps=100
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import signal
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script by torchx/torchrun: make the repo importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
import torch.distributed as dist
from torchrec.distributed.train_pipeline import TrainPipelineSparseDist

from modules.batch import Batch
from trainer import checkpoint, growth, run_folder
from trainer.config import TrainConfig, load_config, resolve_negatives, to_yaml
from trainer.data.augment import Augmentation
from trainer.data.loader import LoaderConfig, build_loader
from trainer.data.schema import Manifest, read_manifest
from trainer.distributed import (
    DistEnv,
    all_reduce_sum,
    base_lrs,
    build_optimizer,
    init_dense_state,
    init_distributed,
    lr_factor,
    record_plan,
    shard_model,
    shutdown_distributed,
)
from trainer.ema import DenseEMA
from trainer.errors import ConfigError, SeqrecError
from trainer.logs import setup_logging
from trainer.model_factory import build_model
from trainer.tasks import task_of
from trainer.threads import configure_threads

log = logging.getLogger("seqrec.train")


class Trainer:
    """A checkpointable training run on this rank. Build with a validated `TrainConfig` and a `DistEnv`."""

    def __init__(self, cfg: TrainConfig, env: DistEnv) -> None:
        self.cfg, self.env = cfg, env
        torch.manual_seed(cfg.trainer.seed)
        self.manifest: Manifest = read_manifest(cfg.data.path)
        self.task = task_of(cfg.model)  # loader kinds, evaluator and selection metric of the model's task
        # built (on meta) before anything is written: data-dependent checks fail without a run folder
        model = build_model(cfg.model, self.manifest.num_items, cfg.data.max_len, torch.device("meta"), cfg.data.path)
        self.run_dir = self._build_run_dir()
        self.loader = self._build_loader("train", self.task.train_kind, cfg.data.batch_size, shuffle=True)
        self.steps_per_epoch = math.ceil(self.loader.dataset.num_batches() / cfg.optim.accumulate)
        # optim.loss_weight=target: a batch's mean loss is scaled by its targets over this
        self.target_norm = self.loader.dataset.mean_targets_per_batch if cfg.optim.loss_weight == "target" else 0.0
        self.total_steps = cfg.trainer.max_steps or cfg.trainer.epochs * self.steps_per_epoch
        self.model = shard_model(
            model,
            env,
            cfg.optim,
            cfg.trainer.sharding,
            cfg.data.batch_size,
        )
        record_plan(self.model, self.run_dir, env, cfg.optim)  # log the plan and write plan.json into the run folder
        self.optimizer = build_optimizer(self.model, cfg.optim)
        self.ema = DenseEMA.of_optimizer(self.optimizer, cfg.optim.ema_decay) if cfg.optim.ema_decay else None
        self.base_lrs = base_lrs(self.optimizer)
        self.pipeline = (
            TrainPipelineSparseDist(self.model, self.optimizer, env.device, custom_model_fwd=self._forward)
            if cfg.trainer.pipeline and self.model.plan.plan  # nothing to overlap when no table is sharded
            else None
        )
        self.step = 0  # optimizer steps taken
        self.epoch = 0
        self.batches_done = 0  # batches of the current epoch already trained on (for exact resume)
        self.best_metric: float | None = None  # best validation value of the task's selection metric
        self.best_step = -1  # step of that evaluation (-1: no evaluation yet)
        self.evals_without_gain = 0
        self.history: list[dict[str, Any]] = []
        # this rank's loss per step (tests compare curves: resume, pipeline vs plain, world sizes)
        self.losses: list[float] = []
        self.throughput = torch.zeros(3, dtype=torch.float64)  # this rank's train seconds, sequences, targets
        self.writer = self._build_writer()
        self._stop_signal = False
        self._load_initial_state()

    # ----------------------------------------------------------------------------------------------- building
    def _build_run_dir(self) -> Path:
        """outputs/<experiment>/<run_id>: the torchx app id, else a timestamp chosen by rank 0 and broadcast."""
        t = self.cfg.trainer
        run_id = t.run_id or os.environ.get("TORCHELASTIC_RUN_ID", "")
        if not run_id or run_id == "none":
            chosen = [time.strftime("%Y%m%d-%H%M%S")]
            if dist.is_initialized():
                dist.broadcast_object_list(chosen, src=0)
            run_id = chosen[0]
        run_dir = Path(t.output_dir) / t.experiment / run_id
        has_checkpoint = checkpoint.latest_checkpoint(run_dir) is not None
        if _elastic_restart() and has_checkpoint and not t.resume:
            log.warning("restarted by the elastic launcher: resuming %s from its last checkpoint", run_dir)
            t.resume = True
        self.run = run_folder.claim(run_dir, resume=t.resume, has_checkpoint=has_checkpoint, is_main=self.env.is_main)
        if not t.resume and has_checkpoint:
            raise ConfigError(
                f"{run_dir} already holds checkpoints; set trainer.resume=true to continue it, or another "
                "trainer.run_id (nothing was overwritten)"
            )
        if self.env.is_main:
            checkpoint.write_atomic(run_dir / "config.yaml", to_yaml(self.cfg))
        return run_dir

    def _build_loader(self, split: str, kind: str, batch_size: int, shuffle: bool) -> Any:
        d = self.cfg.data
        config = LoaderConfig(
            batch_size=batch_size,
            max_len=d.max_len,
            kind=kind,
            split=split,
            shuffle=shuffle,
            seed=self.cfg.trainer.seed,
            bucket_batches=d.bucket_batches,
            negatives=resolve_negatives(self.cfg) if split == "train" else "none",
            num_negatives=d.num_negatives,
            popularity_alpha=d.popularity_alpha,
            window=d.window,
            heads=tuple(getattr(self.cfg.model, "heads", ())),  # ranking: the label columns the heads predict
            num_workers=d.num_workers,
            timestamps=self.cfg.model.loader_needs().timestamps,
            augment=Augmentation(ops=tuple(d.augment) if kind == "causal" else (), prob=d.augment_prob,
                                 ratio=d.augment_ratio),
        )
        return build_loader(d.path, config, self.env.rank, self.env.world_size)

    def _build_writer(self) -> Any:
        if not self.env.is_main:
            return None
        from torch.utils.tensorboard import SummaryWriter

        return SummaryWriter(log_dir=str(self.run_dir / "tb"))

    def _load_initial_state(self) -> None:
        t = self.cfg.trainer
        if t.resume:
            ckpt = checkpoint.latest_checkpoint(self.run_dir)
            if ckpt is None:
                raise ConfigError(f"trainer.resume=true but {self.run_dir} has no complete checkpoint")
            self._init_optimizer_state()
            extra = checkpoint.load(ckpt, self.model, self.optimizer, expect=self._meta_expect())
            if not extra:
                world = checkpoint.read_meta(ckpt).get("world_size")
                raise ConfigError(
                    f"{ckpt}: written by {world} ranks, this run has {self.env.world_size}; exact resume needs the "
                    "same world size (use trainer.init_from=<run> to fine-tune on another world size)"
                )
            self.load_state_dict(extra)
            log.info(
                "resumed from %s at step %d (epoch %d, batch %d)",
                ckpt,
                self.step,
                self.epoch,
                self.batches_done,
            )
        elif t.init_from:
            ckpt = checkpoint.latest_checkpoint(t.init_from)
            if ckpt is None:
                raise ConfigError(f"trainer.init_from={t.init_from}: no complete checkpoint there")
            growth.load_grown(ckpt, self.model, self.cfg.data.path, self._meta_expect(), t.init_new_items)
            log.info("initialised weights from %s (fresh optimizers and schedule)", ckpt)

    def _init_optimizer_state(self) -> None:
        """Dense Adam state is created lazily; create it now so DCP has tensors to load into (exact resume)."""
        init_dense_state(self.optimizer)

    def _meta_expect(self) -> dict[str, Any]:
        dim = getattr(self.cfg.model, "dim", None)
        return {"model": self.cfg.model.name, "num_items": self.manifest.num_items, "dim": dim}

    # ---------------------------------------------------------------------------------------------- the loop
    def _forward(self, batch: Batch | None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Model forward, under bf16 autocast when configured (used by the pipeline and the plain loop)."""
        with torch.autocast(self.env.device.type, dtype=torch.bfloat16, enabled=self.cfg.trainer.bf16):
            loss, logs = self.model(batch)
        loss = loss.float()
        if self.target_norm:
            loss = loss * (logs["num_targets"] / self.target_norm)
        return loss, logs

    def _set_lr(self) -> float:
        factor = lr_factor(self.step, self.cfg.optim, self.total_steps)
        for group, base in zip(self.optimizer.param_groups, self.base_lrs):
            group["lr"] = base * factor
        return self.base_lrs[-1] * factor

    def train_step(self, batches: Iterator[Batch]) -> dict[str, torch.Tensor] | None:
        """One optimizer step (``optim.accumulate`` micro-batches in the plain loop); None when the epoch ends."""
        if self.pipeline is not None:
            try:
                logs = self.pipeline.progress(batches)
            except StopIteration:
                return None
            self.batches_done += 1
            return logs
        self.optimizer.zero_grad()
        logs: dict[str, torch.Tensor] | None = None
        for _ in range(self.cfg.optim.accumulate):
            batch = next(batches, None)
            if batch is None:
                break
            loss, logs = self._forward(batch.to(self.env.device))
            (loss / self.cfg.optim.accumulate).backward()
            self.batches_done += 1
        if logs is None:
            return None
        self.optimizer.step()
        return logs

    def train(self) -> dict[str, Any]:
        """Run to the end (epochs, max_steps, early stopping or SIGTERM); returns the final metrics."""
        t = self.cfg.trainer
        previous = signal.signal(signal.SIGTERM, self._on_sigterm) if _main_thread() else None
        failed: BaseException | None = None
        try:
            while self.epoch < t.epochs and not self._finished():
                self._train_epoch()
                if self._stopping() or self._finished():
                    break
                self.epoch += 1
                self.batches_done = 0
                if self._evaluate_and_check():
                    break
                self.save_checkpoint()
            results = self._final_results()
        except BaseException as exc:
            failed = exc
            raise
        finally:
            self.run.release(failed, committed=checkpoint.committed(self.run_dir))
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)
            if self.writer is not None:
                self.writer.close()
        return results

    def _train_epoch(self) -> None:
        self.loader.dataset.set_epoch(self.epoch)
        if self.batches_done:  # resumed mid-epoch: skip what was already trained on
            self.loader.dataset.resume_at(self.epoch, self.batches_done)
        batches = iter(self.loader)
        show = self.env.is_main and self.cfg.trainer.progress
        bar = _progress(self.steps_per_epoch, f"epoch {self.epoch}", show, initial=self.batches_done)
        window_start, window_seqs = time.perf_counter(), 0
        epoch_loss, first_step = 0.0, self.step
        self.model.train()
        while not self._finished():
            self._set_lr()
            started = time.perf_counter()
            logs = self.train_step(batches)
            if logs is None:
                break
            self.step += 1
            if self.ema is not None:
                self.ema.update()
            self.losses.append(float(logs["loss"]))
            self.throughput += torch.tensor(
                [time.perf_counter() - started, float(logs["num_sequences"]), float(logs["num_targets"])],
                dtype=torch.float64,
            )
            window_seqs += int(logs.get("num_targets", torch.tensor(0)))
            epoch_loss += self.losses[-1]
            bar.set_postfix(loss=f"{epoch_loss / (self.step - first_step):.4f}", refresh=False)  # running mean
            bar.update(1)
            if self.step % self.cfg.trainer.log_every == 0 or self.step == 1:
                elapsed = time.perf_counter() - window_start
                self._log_scalars(logs, window_seqs / max(elapsed, 1e-9), bar)
                window_start, window_seqs = time.perf_counter(), 0
            if self.cfg.trainer.checkpoint_every and self.step % self.cfg.trainer.checkpoint_every == 0:
                self.save_checkpoint()
            if self._stopping():
                log.warning("SIGTERM received: checkpointing at step %d and stopping", self.step)
                self.save_checkpoint()
                break
        bar.close()

    def _log_scalars(self, logs: dict[str, torch.Tensor], seqs_per_s: float, bar: Any) -> None:
        loss = float(logs["loss"])
        if bar.disable:  # no progress bar (logs, CI): one line per log interval instead
            log.info("epoch %d step %d loss %.4f (%.0f targets/s on rank 0)", self.epoch, self.step, loss, seqs_per_s)
        if self.writer is None:
            return
        self.writer.add_scalar("train/loss", loss, self.step)
        self.writer.add_scalar("train/lr", self.optimizer.param_groups[-1]["lr"], self.step)
        self.writer.add_scalar("train/targets_per_s_rank0", seqs_per_s, self.step)

    def _finished(self) -> bool:
        return bool(self.cfg.trainer.max_steps) and self.step >= self.cfg.trainer.max_steps

    def _on_sigterm(self, signum: int, frame: Any) -> None:
        self._stop_signal = True

    def _stopping(self) -> bool:
        """Did any rank get SIGTERM? (all ranks must agree, since checkpointing is collective)."""
        flag = all_reduce_sum(torch.tensor([float(self._stop_signal)]))
        self._stop_signal = bool(flag.item() > 0)
        return self._stop_signal

    def _throughput(self) -> dict[str, float]:
        """Training speed over the whole run, all ranks together (step time of the slowest rank)."""
        seconds = self.throughput[:1].clone()
        counts = all_reduce_sum(self.throughput[1:].clone())
        if dist.is_initialized() and dist.get_world_size() > 1:
            dist.all_reduce(seconds, op=dist.ReduceOp.MAX)
        elapsed = max(float(seconds), 1e-9)
        return {
            "train_seconds": elapsed,
            "sequences_per_s": float(counts[0]) / elapsed,
            "targets_per_s": float(counts[1]) / elapsed,
            "world_size": self.env.world_size,
        }

    # ------------------------------------------------------------------------------------------- evaluation
    def evaluate(self, split: str) -> dict[str, float]:
        """The task's metrics on ``split`` over every user (reduced across ranks)."""
        if self.pipeline is not None:
            self.pipeline.detach()  # calling the DMP model directly needs the original forwards back
        loader = self._build_loader(split, self.task.eval_kind, self.cfg.data.eval_batch_size, shuffle=False)
        per_user = self.run_dir / f"per_user_{split}.parquet" if self.cfg.eval.per_user else None
        with self._averaged():
            metrics = self.task.evaluate(
                self.model, loader, self.manifest, self.cfg.eval, self.env, per_user_path=per_user, progress=False
            )
        self.model.train()
        return metrics

    def _averaged(self) -> Any:
        """Inside: the model holds the EMA of its dense weights (``optim.ema_decay``), else nothing changes."""
        return self.ema.swapped() if self.ema is not None else contextlib.nullcontext()

    def _evaluate_and_check(self) -> bool:
        """Validate every ``eval_every_epochs``; returns True when early stopping says stop."""
        t = self.cfg.trainer
        if t.eval_every_epochs <= 0 or self.epoch % t.eval_every_epochs != 0:
            return False
        metrics = self.evaluate(t.eval_split)
        value = metrics[self.task.selection_metric]
        # train_seconds: time this process has spent in training steps so far ("time to reach NDCG X")
        entry = {"epoch": self.epoch, "step": self.step, "train_seconds": round(float(self.throughput[0]), 2)}
        self.history.append({**entry, **metrics})
        if self.writer is not None:
            for name, scalar in metrics.items():
                if isinstance(scalar, float):
                    self.writer.add_scalar(f"{t.eval_split}/{name}", scalar, self.step)
        log.info("epoch %d step %d %s: %s", self.epoch, self.step, t.eval_split, _fmt(metrics))
        if self.task.improved(value, self.best_metric):
            self.best_metric, self.best_step, self.evals_without_gain = value, self.step, 0
            return False
        self.evals_without_gain += 1
        if t.early_stopping_patience and self.evals_without_gain >= t.early_stopping_patience:
            log.info("early stopping: no %s gain in %d evaluations", self.task.selection_metric, self.evals_without_gain)
            return True
        return False

    def _final_results(self) -> dict[str, Any]:
        self.save_checkpoint()
        results: dict[str, Any] = {"run_dir": str(self.run_dir), "steps": self.step, "epochs": self.epoch}
        results["history"] = self.history
        results["train_losses"] = self.losses
        results["throughput"] = self._throughput()
        if self.cfg.trainer.test_at_end and not self._stop_signal:
            self._restore_best(results)
            results["valid"] = self.evaluate("valid")
            results["test"] = self.evaluate("test")
            log.info("test: %s", _fmt(results["test"]))
            self._log_final(results)
        if self.env.is_main:
            (self.run_dir / "metrics.json").write_text(json.dumps(results, indent=2) + "\n")
        return results

    def _log_final(self, results: dict[str, Any]) -> None:
        """The best checkpoint's final valid and test metrics into TensorBoard (``final_valid/*``, ``test/*``)."""
        if self.writer is None:
            return
        for split, name in (("valid", "final_valid"), ("test", "test")):
            for metric, value in results[split].items():
                if isinstance(value, float):
                    self.writer.add_scalar(f"{name}/{metric}", value, self.step)
        self.writer.flush()

    def _restore_best(self, results: dict[str, Any]) -> None:
        """Load the best validation checkpoint's weights (if it is not the current state) for the final metrics."""
        if self.best_step < 0:
            return
        results["best"] = {"step": self.best_step, f"valid_{self.task.selection_metric}": self.best_metric}
        if self.best_step == self.step:
            return
        if self.pipeline is not None:
            self.pipeline.detach()
        best = checkpoint.checkpoint_dir(self.run_dir, self.best_step)
        checkpoint.load(best, self.model, None, expect=self._meta_expect())
        self.ema = None  # the loaded model already holds that checkpoint's averaged weights
        log.info("final metrics from the best validation checkpoint %s (%s %.4f)", best, self.task.selection_metric,
                 self.best_metric)

    # ------------------------------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        """Per-rank loop state (model and optimizer state go through DCP)."""
        return {
            "step": self.step,
            "epoch": self.epoch,
            "batches_done": self.batches_done,
            "best_metric": json.dumps(self.best_metric),
            "best_step": self.best_step,
            "evals_without_gain": self.evals_without_gain,
            "history": json.dumps(self.history),
            "losses": json.dumps(self.losses),
            "throughput": self.throughput.clone(),
            # saved while swapped (see save_checkpoint): the average holds the live weights then
            **({"ema": self.ema.state_dict()} if self.ema is not None else {}),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.step, self.epoch, self.batches_done = state["step"], state["epoch"], state["batches_done"]
        self.best_metric, self.evals_without_gain = json.loads(state["best_metric"]), state["evals_without_gain"]
        self.best_step = state.get("best_step", -1)
        self.history = json.loads(state["history"])
        self.losses = json.loads(state["losses"])
        self.throughput = state.get("throughput", self.throughput)
        if self.ema is not None and "ema" in state:  # the model was loaded with the averaged weights: swap back
            self.ema.load_state_dict(state["ema"])
            self.ema.swap()
        checkpoint.set_rng_state(state["rng"])

    def save_checkpoint(self) -> None:
        """Checkpoint this step (unless done already) and, after a new best validation, record it in best.json."""
        ckpt = checkpoint.checkpoint_dir(self.run_dir, self.step)
        if not (ckpt / checkpoint.META).is_file():
            meta = {**self._meta_expect(), "world_size": self.env.world_size, "step": self.step, "epoch": self.epoch}
            best = checkpoint.checkpoint_dir(self.run_dir, self.best_step) if self.best_step >= 0 else None
            keep = self.cfg.trainer.keep_checkpoints
            with self._averaged():  # the checkpoint's model is what was evaluated; the live weights ride in its state
                checkpoint.save(ckpt, self.model, self.optimizer, self.state_dict(), meta, keep=keep, protect=best)
        # Also when the step was already checkpointed (checkpoint_every ending on an epoch's last step).
        if self.env.is_main and self.best_step == self.step:
            best = {"step": self.step, "epoch": self.epoch, self.task.selection_metric: self.best_metric}
            checkpoint.mark_best(self.run_dir, ckpt, best)


def _elastic_restart() -> bool:
    """Was this worker restarted by torchrun/torchx after a failure (``--max-restarts``)? Then it resumes."""
    return int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") or 0) > 0


def _main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def _progress(total: int, desc: str, enabled: bool, initial: int = 0) -> Any:
    """A tqdm bar on a terminal only: under torchx/torchrun (output piped and prefixed per rank) every redraw
    would be a line of its own, so there the loop logs a line every ``trainer.log_every`` steps instead."""
    from tqdm.auto import tqdm

    show = enabled and sys.stderr.isatty()
    return tqdm(total=total, desc=desc, disable=not show, initial=initial, dynamic_ncols=True, leave=False)


def _fmt(metrics: dict[str, float]) -> str:
    return " ".join(f"{k}={v:.4f}" for k, v in metrics.items() if isinstance(v, float))


def run_training(cfg: TrainConfig) -> dict[str, Any]:
    """Join the process group, train, and leave it; the function every entry point calls (``trainer.phases``:
    once per phase, `trainer.phases.run_phases`)."""
    if cfg.trainer.phases:
        from trainer.phases import run_phases

        return run_phases(cfg, run_training)
    env = init_distributed()
    threads = configure_threads(cfg.trainer.threads, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    if env.is_main:
        log.info("%d intra-op thread(s) per process", threads)
    failed: BaseException | None = None
    try:
        return Trainer(cfg, env).train()
    except BaseException as exc:
        failed = exc
        raise
    finally:
        run_folder.release_held(failed)
        shutdown_distributed()


def add_arguments(parser: Any) -> None:
    """``seqrec train`` arguments: Hydra overrides."""
    parser.add_argument(
        "overrides",
        nargs="*",
        metavar="KEY=VALUE",
        help="Hydra overrides, e.g. data.path=data/ml1m trainer.epochs=20 model.loss=sampled_softmax "
        "(experiment=sasrec_ml1m picks a frozen reproduction); see `python -m trainer.train --help` for every key",
    )


def run(args: Any) -> int:
    """``seqrec train``: train in this process (world size 1, or the torchrun/torchx rank it was started as)."""
    results = run_training(load_config(args.overrides))
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"run folder: {results['run_dir']}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m trainer.train [hydra overrides]``: the script torchx/torchrun launch on every rank."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in ("-h", "--help"):
        from trainer.config_rules import describe

        try:
            print(__doc__)
            print("Configuration (override any key as section.key=value; default, meaning, allowed values):\n")
            print(describe(load_config([])))
        except BrokenPipeError:  # piped into `head`
            sys.stderr.close()
        return 0
    verbose = "--verbose" in argv
    argv = [a for a in argv if a != "--verbose"]
    setup_logging(verbose)
    try:
        results = run_training(load_config(argv))
    except SeqrecError as exc:
        if verbose:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"run folder: {results['run_dir']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
