"""Offline top-K for many users from an exported artefact, into one Parquet file.

Examples:
  seqrec recommend outputs/<experiment>/<run_id> --output recs.parquet       # every user of the dataset, K=100
  seqrec recommend outputs/<experiment>/<run_id>/export_fp32 -o some.parquet --users ids.txt --k 20
  seqrec recommend outputs/<experiment>/<run_id> -o new.parquet --histories histories.jsonl
  seqrec recommend outputs/<experiment>/<run_id> -o all.parquet --procs 2 --resume   # continues if interrupted

RUN is a run folder (its ``export/`` artefact is used) or an artefact folder written by ``seqrec export`` (INT8 by
default, fp32 with ``export --no-quantize``). The artefact's TorchScript ``model.pt`` scores the whole catalogue;
seen items are excluded unless ``--include-seen``. Raw ids in and out: the output has one row per user with
``user_id`` (string), ``items`` (list of raw item ids, best first), ``scores`` (list of float32) and ``fallback``
(true when no known item was left in the history: the most popular items are given instead).

The work is cut into chunks (``--chunk-users`` users, whole row groups) scored by ``--procs`` processes in any order; each chunk
is written to ``.<output>.partial/`` as it finishes, so memory stays bounded by one chunk and an interrupted run
continues with ``--resume``. The output file appears only when every chunk is done (written to a temporary name,
then renamed); an existing output is never replaced without ``--overwrite``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from serving.recommend_inputs import CHUNK_USERS, SPLITS, Chunk, Histories, Reader, Source, plan
from serving.service import ID_MAP_FILE, METADATA_FILE, MODEL_FILE
from trainer.errors import ConfigError

log = logging.getLogger("seqrec.recommend")
OUTPUT_SCHEMA = pa.schema([
    ("user_id", pa.string()),
    ("items", pa.list_(pa.string())),
    ("scores", pa.list_(pa.float32())),
    ("fallback", pa.bool_()),
])
JOB_FILE = "job.json"


@dataclasses.dataclass(kw_only=True)
class RecommendConfig:
    """What `recommend` does (see the module docstring); ``threads`` = intra-op threads per process."""

    source: Path
    output: Path
    k: int = 100
    exclude_seen: bool = True
    split: str = "all"
    users: Path | None = None
    histories: Path | None = None
    dataset: Path | None = None
    batch_size: int = 256
    chunk_users: int = CHUNK_USERS
    procs: int = 1
    threads: int | None = None
    resume: bool = False
    overwrite: bool = False
    progress: bool = True

    def validate(self) -> None:
        """Raise `ConfigError` naming the option to change (before anything is written)."""
        checks = [
            (self.k >= 1, f"--k must be >= 1, got {self.k}"),
            (self.batch_size >= 1, f"--batch-size must be >= 1, got {self.batch_size}"),
            (self.chunk_users >= 1, f"--chunk-users must be >= 1, got {self.chunk_users}"),
            (self.procs >= 1, f"--procs must be >= 1, got {self.procs}"),
            (self.threads is None or self.threads >= 1, f"--threads must be >= 1, got {self.threads}"),
            (self.split in SPLITS, f"--split must be one of {', '.join(SPLITS)}"),
            (self.users is None or self.histories is None, "--users and --histories exclude each other; pass one"),
            (self.histories is None or self.split == "all", "--split applies to dataset users, not to --histories"),
            (self.output.suffix == ".parquet", f"--output must end in .parquet, got {self.output.name}"),
            (not self.output.is_dir(), f"--output {self.output} is a folder; give a .parquet file name"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)


def find_artefact(source: Path) -> Path:
    """The artefact folder: ``source`` itself if it holds ``model.pt``, else ``source/export``."""
    for folder in (source, source / "export"):
        if (folder / MODEL_FILE).is_file() and (folder / ID_MAP_FILE).is_file():
            return folder
    if not source.exists():
        raise ConfigError(f"{source}: does not exist (give a run folder or a `seqrec export` folder)")
    raise ConfigError(f"{source}: no {MODEL_FILE} here or in {source / 'export'}; run `seqrec export {source}` first")


def dataset_of(artefact: Path, override: Path | None) -> Path:
    """The dataset the artefact was trained on (its metadata), or ``override``; checked to exist."""
    if override is None:
        meta = json.loads((artefact / METADATA_FILE).read_text())
        override = Path(meta["source"]["dataset"])
    if not (override / "sequences.parquet").is_file():
        raise ConfigError(f"{override}: dataset folder not found (pass --dataset)")
    return override


class Scorer:
    """Top-K of a chunk's histories through the TorchScript artefact; empty histories get the most popular."""

    def __init__(self, artefact: Path, k: int, exclude_seen: bool, batch_size: int) -> None:
        import fbgemm_gpu  # noqa: F401  (the artefact calls fbgemm ops)
        import torch

        self.model = torch.jit.load(str(artefact / MODEL_FILE), map_location="cpu").eval()
        id_map = json.loads((artefact / ID_MAP_FILE).read_text())
        self.raw_ids = pa.array([str(x) for x in id_map["raw_ids"]], pa.string())
        popularity = np.asarray(id_map["popularity"], dtype=np.float64)
        self.popular = np.argsort(-popularity, kind="stable")[:k]
        self.popular_scores = popularity[self.popular].astype(np.float32)
        meta = json.loads((artefact / METADATA_FILE).read_text())
        self.max_len = int(meta["max_len"])
        self.k, self.exclude_seen, self.batch_size = k, exclude_seen, batch_size

    def score(self, h: Histories) -> pa.Table:
        """One output row per user of ``h`` (`OUTPUT_SCHEMA`)."""
        import torch

        n, k = len(h.lengths), min(self.k, len(self.raw_ids))
        scores = np.full((n, k), -np.inf, dtype=np.float32)
        items = np.zeros((n, k), dtype=np.int64)
        starts = np.concatenate([[0], np.cumsum(h.lengths)[:-1]]).astype(np.int64)
        # similar lengths together: the model pads each batch to its longest (truncated) history
        order = np.argsort(np.minimum(h.lengths, self.max_len), kind="stable")
        order = order[h.lengths[order] > 0]
        for lo in range(0, len(order), self.batch_size):
            rows = order[lo : lo + self.batch_size]
            history = _gather(h.values, starts[rows], h.lengths[rows])
            with torch.inference_mode():
                s, i = self.model(torch.from_numpy(history), torch.from_numpy(h.lengths[rows]), k, self.exclude_seen)
            scores[rows], items[rows] = s.numpy(), i.numpy()
        fallback = h.lengths == 0
        scores[fallback], items[fallback] = self.popular_scores[:k], self.popular[:k] + 1
        return self._table(h.users, scores, items, fallback)

    def _table(self, users: pa.Array, scores: np.ndarray, items: np.ndarray, fallback: np.ndarray) -> pa.Table:
        valid = np.isfinite(scores)  # fewer unseen items than k: the masked tail is -inf
        offsets = pa.array(np.concatenate([[0], np.cumsum(valid.sum(axis=1))]).astype(np.int32))
        item_values = self.raw_ids.take(pa.array(items[valid] - 1))
        columns = [
            users,
            pa.ListArray.from_arrays(offsets, item_values),
            pa.ListArray.from_arrays(offsets, pa.array(scores[valid], pa.float32())),
            pa.array(fallback),
        ]
        return pa.Table.from_arrays(columns, schema=OUTPUT_SCHEMA)


def _gather(values: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """The concatenated slices ``values[starts[i] : starts[i] + lengths[i]]`` (vectorised)."""
    total = int(lengths.sum())
    within = np.arange(total) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    return values[np.repeat(starts, lengths) + within]


# ------------------------------------------------------------------------------------------------- one process
@dataclasses.dataclass(frozen=True)
class _Task:
    """Everything a process needs to score chunks on its own (picklable)."""

    artefact: Path
    source: Source
    work: Path
    k: int
    exclude_seen: bool
    batch_size: int
    threads: int | None


_STATE: dict[str, Any] = {}


def _init(task: _Task) -> None:
    """Load the model, the id map and the reader once per process."""
    import torch

    if task.threads:
        torch.set_num_threads(task.threads)
    scorer = Scorer(task.artefact, task.k, task.exclude_seen, task.batch_size)
    _STATE.update(task=task, scorer=scorer, reader=Reader(task.source, scorer.raw_ids))


def _run_chunk(chunk: Chunk) -> tuple[int, int]:
    """Score one chunk and write it atomically; returns (users, unknown item ids dropped)."""
    task, histories = _STATE["task"], _STATE["reader"].read(chunk)
    table = _STATE["scorer"].score(histories)
    table = table.replace_schema_metadata({"unknown_items": str(histories.unknown)})
    final = _chunk_path(task.work, chunk.index)
    tmp = final.with_suffix(f".tmp-{os.getpid()}")
    pq.write_table(table, tmp)
    os.replace(tmp, final)
    return table.num_rows, histories.unknown


def _chunk_path(work: Path, index: int) -> Path:
    return work / f"chunk-{index:06d}.parquet"


# ------------------------------------------------------------------------------------------------- the job
def _work_folder(cfg: RecommendConfig, fingerprint: dict[str, Any]) -> Path:
    """The partial-results folder, created, resumed or refused (the output itself is checked first)."""
    if cfg.output.exists() and not cfg.overwrite:
        raise ConfigError(f"{cfg.output}: already exists (pass --overwrite to replace it)")
    work = cfg.output.with_name(f".{cfg.output.name}.partial")
    if work.exists() and cfg.overwrite:
        shutil.rmtree(work)
    elif work.exists() and not cfg.resume:
        done = len(list(work.glob("chunk-*.parquet")))
        raise ConfigError(f"{work}: an interrupted run left {done} finished chunks; pass --resume to continue "
                          "it or --overwrite to start again")
    elif work.exists():
        before = json.loads((work / JOB_FILE).read_text()) if (work / JOB_FILE).is_file() else {}
        if before != fingerprint:
            changed = sorted(key for key in fingerprint if before.get(key) != fingerprint[key])
            raise ConfigError(f"{work}: was started with other settings ({', '.join(changed)}); "
                              "pass --overwrite to start again")
        return work
    work.mkdir(parents=True)
    (work / JOB_FILE).write_text(json.dumps(fingerprint, indent=2) + "\n")
    return work


def _fingerprint(cfg: RecommendConfig, artefact: Path, source: Source) -> dict[str, Any]:
    """Everything that decides the output: a resumed run must not mix chunks of two settings."""
    model = (artefact / MODEL_FILE).stat()
    return {"artefact": str(artefact.resolve()), "model_bytes": model.st_size, "model_mtime_ns": model.st_mtime_ns,
            "k": cfg.k, "exclude_seen": cfg.exclude_seen, **source.describe()}


def _score_pending(task: _Task, pending: list[Chunk], cfg: RecommendConfig, bar: Any) -> int:
    """Score the chunks not done yet, in this process or a pool of ``cfg.procs``; returns unknown ids dropped."""
    unknown = 0
    if cfg.procs == 1:
        _init(task)
        results = map(_run_chunk, pending)
        for users, dropped in results:
            bar.update(users)
            unknown += dropped
        return unknown
    import multiprocessing

    # spawn, not fork: a forked copy of a process that already ran OpenMP/TorchScript threads can deadlock
    with multiprocessing.get_context("spawn").Pool(cfg.procs, initializer=_init, initargs=(task,)) as pool:
        for users, dropped in pool.imap_unordered(_run_chunk, pending):
            bar.update(users)
            unknown += dropped
    return unknown


def _merge(work: Path, chunks: list[Chunk], output: Path) -> int:
    """Concatenate the chunk files in order into ``output`` (temporary name, then rename); returns unknown ids."""
    tmp = output.with_name(f".{output.name}.tmp-{os.getpid()}")
    unknown = 0
    try:
        with pq.ParquetWriter(tmp, OUTPUT_SCHEMA) as writer:
            for chunk in chunks:
                table = pq.read_table(_chunk_path(work, chunk.index))
                unknown += int((table.schema.metadata or {}).get(b"unknown_items", b"0"))
                writer.write_table(table.replace_schema_metadata(None))
        os.replace(tmp, output)
    finally:
        tmp.unlink(missing_ok=True)
    shutil.rmtree(work)
    return unknown


def recommend(cfg: RecommendConfig) -> dict[str, Any]:
    """Run the whole job (see the module docstring); returns a summary."""
    from tqdm.auto import tqdm

    cfg.validate()
    artefact = find_artefact(cfg.source)
    source = Source(dataset=dataset_of(artefact, cfg.dataset), split=cfg.split, users=cfg.users,
                    histories=cfg.histories, chunk_users=cfg.chunk_users)
    num_items = len(json.loads((artefact / ID_MAP_FILE).read_text())["raw_ids"])
    if cfg.k > num_items:
        raise ConfigError(f"--k {cfg.k} exceeds the catalogue's {num_items} items; pass --k {num_items} or less")
    chunks, total = plan(source)
    work = _work_folder(cfg, _fingerprint(cfg, artefact, source))
    task = _Task(artefact, source, work, cfg.k, cfg.exclude_seen, cfg.batch_size, cfg.threads)
    pending = [c for c in chunks if not _chunk_path(work, c.index).is_file()]
    done_users = sum(pq.ParquetFile(_chunk_path(work, c.index)).metadata.num_rows
                     for c in chunks if c not in pending)
    started = time.perf_counter()
    with tqdm(total=total, initial=done_users, unit="user", desc="recommend", disable=not cfg.progress) as bar:
        _score_pending(task, pending, cfg, bar)
    seconds = time.perf_counter() - started
    unknown = _merge(work, chunks, cfg.output)
    scored = total - done_users
    return {"output": str(cfg.output), "artefact": str(artefact), "users": total, "scored_now": scored,
            "resumed_chunks": len(chunks) - len(pending), "unknown_items_dropped": unknown,
            "seconds": seconds, "users_per_s": scored / seconds if seconds > 0 else 0.0}


# ------------------------------------------------------------------------------------------------- the command
def add_arguments(parser: Any) -> None:
    """``seqrec recommend`` arguments."""
    parser.add_argument("run", type=Path, help="run folder (uses RUN/export) or an artefact folder of `seqrec export`")
    parser.add_argument("--output", "-o", type=Path, required=True, help="Parquet file to write (e.g. recs.parquet)")
    parser.add_argument("--k", type=int, default=100, help="items per user (default: %(default)s)")
    who = parser.add_mutually_exclusive_group()
    who.add_argument("--users", type=Path, help="text file of raw user ids, one a line (default: every user)")
    who.add_argument("--histories", type=Path,
                     help='.jsonl ({"user": "u1", "history": ["i1", ...]} a line) or .parquet (user, history)')
    parser.add_argument("--split", choices=SPLITS, default="all",
                        help="dataset users' history: all of it, or the input of the test/valid targets "
                        "(what `seqrec evaluate` scores)")
    parser.add_argument("--include-seen", dest="exclude_seen", action="store_false",
                        help="also recommend items already in the history")
    parser.add_argument("--dataset", type=Path, help="dataset folder (default: the one the artefact was trained on)")
    parser.add_argument("--batch-size", type=int, default=256, help="users per model call")
    parser.add_argument("--chunk-users", type=int, default=CHUNK_USERS,
                        help="users per chunk (at least; whole row groups): the unit of memory, of work per process "
                        "and of --resume (default: %(default)s)")
    parser.add_argument("--procs", type=int, default=1, help="processes scoring chunks in parallel")
    parser.add_argument("--threads", type=int, help="intra-op threads per process (default: torch's)")
    parser.add_argument("--resume", action="store_true", help="continue an interrupted run with the same settings")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output (and partial run)")
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="hide the progress bar")


def run(args: Any) -> int:
    """Recommend and print a one-line summary."""
    fields = {f.name for f in dataclasses.fields(RecommendConfig)} - {"source"}
    cfg = RecommendConfig(source=args.run, **{name: getattr(args, name) for name in fields})
    result = recommend(cfg)
    print(f"wrote {result['output']}: {result['users']} users ({result['resumed_chunks']} chunks resumed), "
          f"{result['users_per_s']:.0f} users/s, {result['unknown_items_dropped']} unknown item ids dropped")
    return 0
