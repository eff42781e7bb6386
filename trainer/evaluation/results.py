"""Results files of ``seqrec evaluate``: what protocol produced them, where they go, never overwritten silently.

A results file ``eval_<name>.json`` and its per-user files ``per_user_<name>.rank<r>.parquet`` carry a name
built from every setting that changes the numbers (split, protocol, sampled negatives, checkpoint, re-ranking),
so evaluating with other settings writes new files beside the old ones. Settings that do not change the name
(e.g. ``eval.ks``) are recorded in the file; a second evaluation under the same name with other settings is
refused unless ``--overwrite`` is given. Every file names its protocol and the dataset it was computed on, so
``seqrec compare`` can refuse to mix them.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from trainer.data.schema import Manifest
from trainer.errors import ConfigError

PROTOCOLS = ("seen_removed", "none")
"""``seen_removed``: every item of the user's history leaves the ranking, a repeated target too (a repeat is a
miss; S3-Rec's code and most published tables). ``none``: nothing is removed, so seen items, repeats included,
rank like any other item (RecBole's full ranking of sequential models). Keeping seen items rankable *and*
removing the other seen items would use knowledge of the answer; no protocol does that."""

# what must agree between runs before `compare` pairs their users
IDENTITY_KEYS = ("split_policy", "protocol", "ranking", "split", "dataset")


def dataset_fingerprint(manifest: Manifest) -> str:
    """A short hash of what defines a dataset folder's contents: source files, filters, split and counts."""
    blob = json.dumps(
        {"source": manifest.source, "filters": manifest.filters, "split": manifest.split, "counts": manifest.counts},
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def protocol_labels(manifest: Manifest, split: str, protocol: str, sampled_negatives: int) -> dict[str, Any]:
    """The labels every results file (and every training-history entry) carries about how it was computed."""
    if protocol not in PROTOCOLS:
        raise ConfigError(f"eval.protocol={protocol!r} is unknown; choose one of {', '.join(PROTOCOLS)}")
    return {
        "dataset": dataset_fingerprint(manifest),
        "split": split,
        "split_policy": str(manifest.split.get("policy", "leave_one_out")),
        "protocol": protocol,
        "ranking": f"sampled-{sampled_negatives}" if sampled_negatives else "full",
    }


def results_name(split: str, protocol: str, sampled_negatives: int = 0, tags: tuple[str, ...] = ()) -> str:
    """``<split>[_<protocol>][_sampled<N>][_<tag>...]``; the default protocol and full ranking add nothing."""
    parts = [split]
    if protocol != PROTOCOLS[0]:
        parts.append(protocol)
    if sampled_negatives:
        parts.append(f"sampled{sampled_negatives}")
    return "_".join([*parts, *tags])


def results_stem(split: str, cfg: Any, tags: tuple[str, ...] = ()) -> str:
    """`results_name` of an `EvalConfig`, a re-ranker adding ``<kind><strength>`` (e.g. ``test_mmr0.3``)."""
    if cfg.bias_rerank != "none":
        tags = (*tags, f"{cfg.bias_rerank}{cfg.bias_strength:g}")
    return results_name(split, cfg.protocol, cfg.sampled_negatives, tags)


def check_writable(path: Path, settings: dict[str, Any], overwrite: bool) -> None:
    """Refuse to replace ``path`` when it holds results of other settings, unless ``overwrite``."""
    if overwrite or not path.is_file():
        return
    try:
        old = json.loads(path.read_text()).get("settings")
    except (json.JSONDecodeError, AttributeError):
        old = None
    if old != json.loads(json.dumps(settings)):
        changed = sorted(k for k in set(old or {}) | set(settings) if (old or {}).get(k) != settings.get(k))
        raise ConfigError(
            f"{path} holds results of other settings ({', '.join(changed) or 'unreadable file'} differ); "
            "pass --overwrite to replace it"
        )


def write_json_atomic(path: Path, payload: dict[str, Any]) -> None:
    """Write JSON to a temporary file beside ``path`` and rename it, so a crash leaves the old file or none."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(payload, indent=2) + "\n")
    tmp.replace(path)


def read_results(path: Path) -> dict[str, Any]:
    """One results file, with a one-line error naming it when it is missing or not a results file."""
    if not path.is_file():
        raise ConfigError(f"{path}: no such results file (run `seqrec evaluate` first)")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: invalid JSON ({exc.msg} at line {exc.lineno})") from exc
    missing = [k for k in IDENTITY_KEYS if k not in data]
    if missing:
        raise ConfigError(f"{path}: no {', '.join(missing)} recorded; re-run `seqrec evaluate` to label it")
    return data
