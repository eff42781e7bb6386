"""``seqrec drift``: build the training reference profile of an export and compare a request log with it.

The reference requests are users' histories from the run's dataset (``items[:valid_end]`` as raw ids, k=10),
answered by the exported model; see `serving.drift` for the statistics and the PSI.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq
from tqdm import tqdm

from serving.drift import Profile, compare, format_report, replay, stats_for
from serving.service import MODEL_FILE, Recommender
from trainer.errors import ConfigError, DataError

REFERENCE_SEED = 0


def export_folder(run: Path) -> Path:
    """``run/export`` for a run folder, or ``run`` itself when it is an export folder."""
    for folder in (run / "export", run):
        if (folder / MODEL_FILE).is_file():
            return folder
    raise ConfigError(f"{run}: no exported model (run `seqrec export {run}` first)")


def dataset_of(export: Path) -> Path:
    """The dataset the exported run was trained on (its ``config.yaml``)."""
    from omegaconf import OmegaConf

    config = export.parent / "config.yaml"
    if not config.is_file():
        raise ConfigError(f"{export}: no config.yaml next to it, so its training dataset is unknown")
    return Path(str(OmegaConf.load(config).data.path))


def history_requests(dataset: Path, users: np.ndarray | None = None, k: int = 10) -> list[dict[str, Any]]:
    """Request bodies of dataset users (all, or the rows ``users``): their history up to the test target."""
    seq = pq.read_table(Path(dataset) / "sequences.parquet", columns=["items", "valid_end"])
    raw = np.asarray(pq.read_table(Path(dataset) / "items.parquet", columns=["raw_id"])["raw_id"].to_pylist(),
                     dtype=object)
    if users is not None:
        seq = seq.take(users)
    items = seq["items"]
    offsets = np.asarray(items.combine_chunks().offsets)
    flat = pc.list_flatten(items).to_numpy()
    ends = seq["valid_end"].to_numpy()
    return [{"history": raw[flat[offsets[i]: offsets[i] + ends[i]] - 1].tolist(), "k": k}
            for i in range(seq.num_rows) if ends[i] > 0]


def reference_users(dataset: Path, sample: int, seed: int = REFERENCE_SEED) -> np.ndarray:
    """Rows of the users in the reference profile (a seeded sample; the rest stay held out)."""
    count = pq.read_metadata(Path(dataset) / "sequences.parquet").num_rows
    rng = np.random.default_rng(seed)
    return np.sort(rng.permutation(count)[: min(sample, count)])


def build_profile(service: Recommender, dataset: Path, sample: int) -> Profile:
    """Answer a sample of the dataset's users and histogram it; score bins at the deciles of its top scores."""
    bodies = history_requests(dataset, reference_users(dataset, sample))
    parsed = [service.parse(body) for body in bodies]
    top = []
    for start in tqdm(range(0, len(parsed), 256), desc="reference", unit="batch", disable=None):
        answers = service.recommend(parsed[start: start + 256])
        top.extend(a["scores"][0] for a in answers if a["scores"] and not a["fallback"])
    from serving.drift import SCORE_DECILES

    edges = np.unique(np.quantile(np.asarray(top), SCORE_DECILES)) if top else np.zeros(0)
    stats = stats_for(service, edges)
    replay(service, bodies, stats)
    return Profile(counts={k: v.tolist() for k, v in stats.counts.items()}, score_edges=edges.tolist(),
                   sample_users=len(bodies), dataset=str(dataset))


def read_log(path: Path) -> list[Any]:
    """Request bodies, one JSON value per line (blank lines skipped); a bad line is an error naming it."""
    if not path.is_file():
        raise DataError("request log not found", file=path)
    bodies = []
    with path.open() as handle:
        for row, line in enumerate(handle, 1):
            if line.strip():
                try:
                    bodies.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise DataError(f"not JSON ({exc.msg})", file=path, row=row) from None
    if not bodies:
        raise DataError("the request log is empty", file=path)
    return bodies


def run_drift(args: argparse.Namespace) -> int:
    """Load or build the profile, replay the log, print the comparison; 1 if a statistic drifted."""
    export = export_folder(args.run)
    service = Recommender.load(export)
    profile = Profile.read(export)
    if profile is None or args.profile_only:
        profile = build_profile(service, dataset_of(export), args.sample_users)
        print(f"wrote {profile.write(export)} ({profile.sample_users} users of {profile.dataset})")
    if args.profile_only:
        return 0
    if args.requests is None:
        raise ConfigError("give --requests LOG (or --profile-only)")
    stats = profile.stats(service)
    replay(service, read_log(args.requests), stats)
    report = compare(profile, stats, args.threshold)
    print(format_report(report, args.threshold, stats.requests))
    return 1 if any(r["drift"] for r in report.values()) else 0
