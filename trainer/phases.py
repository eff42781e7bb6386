"""Multi-phase training: ``trainer.phases`` lists phases that run one after another, each a full training run with
its own loss, negatives, batch size, learning rate and schedule (given as overrides), initialised from the
weights the phase before ended with (fresh optimizers and schedule, as ``trainer.init_from``).

Each phase's overrides apply to the run's own config (not to the phase before), so a phase reads on its own.
Example (the H&M design's recipe shape: a short warm-up on uniform negatives at a constant rate, then large-batch
InfoNCE with cosine decay); in a config file, see ``configs/experiment/two_tower_phases.yaml``, or quoted on the
command line::

    seqrec train model=two_tower 'trainer.phases=[{name: warmup, overrides: ["data.negatives=uniform",
        "optim.schedule=constant", "trainer.epochs=2"]}, {name: infonce, overrides: ["data.batch_size=1024",
        "optim.lr=0.002", "trainer.epochs=10"]}]'

Each phase writes its own run folder ``<run_id>-<i>-<name>`` next to the others; the last one is the run's
result. ``trainer.resume=true`` skips finished phases (a phase is finished when its folder has ``metrics.json``)
and resumes the interrupted one from its newest checkpoint, exactly as a single run resumes.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from trainer.errors import ConfigError

log = logging.getLogger("seqrec.phases")


@dataclasses.dataclass(kw_only=True)
class PhaseConfig:
    """One phase: a ``name`` (letters, digits, ``-``/``_``) and the overrides it applies on top of the run's config
    (``section.key=value`` strings, e.g. ``model.objective.loss=bpr``, ``data.batch_size=1024``)."""

    name: str
    overrides: list[str] = dataclasses.field(default_factory=list)


def phase_configs(cfg: Any) -> list[Any]:
    """The validated `TrainConfig` of every phase (run ids, ``init_from`` and ``resume`` filled in)."""
    from trainer.config import from_dict

    base = dataclasses.asdict(cfg)
    phases = cfg.trainer.phases
    launcher_id = os.environ.get("TORCHELASTIC_RUN_ID", "none")  # the same on every rank
    run_id = cfg.trainer.run_id or (launcher_id if launcher_id != "none" else time.strftime("%Y%m%d-%H%M%S"))
    out, previous = [], cfg.trainer.init_from
    for i, phase in enumerate(phases):
        if not phase.name.replace("-", "").replace("_", "").isalnum():
            raise ConfigError(f"trainer.phases[{i}].name={phase.name!r}: use letters, digits, - and _")
        bad = [o for o in phase.overrides if "=" not in o or o.startswith(("trainer.phases", "trainer.run_id"))]
        if bad:
            raise ConfigError(f"trainer.phases[{i}] ({phase.name}): overrides must be key=value and may not set "
                              f"trainer.phases or trainer.run_id; got {bad}")
        merged = OmegaConf.merge(OmegaConf.create(base), OmegaConf.from_dotlist(phase.overrides))
        raw = OmegaConf.to_container(merged)
        raw["trainer"].update(phases=[], run_id=f"{run_id}-{i}-{phase.name}", init_from=previous, resume=False)
        try:
            phase_cfg = from_dict(raw)
        except ConfigError as exc:
            raise ConfigError(f"trainer.phases[{i}] ({phase.name}): {exc}") from exc
        out.append(phase_cfg)
        previous = str(run_dir_of(phase_cfg))
    return out


def run_dir_of(cfg: Any) -> Path:
    """Where a (phase) config's run folder is."""
    return Path(cfg.trainer.output_dir) / cfg.trainer.experiment / cfg.trainer.run_id


def run_phases(cfg: Any, run_one: Any) -> dict[str, Any]:
    """Run every phase with ``run_one(phase_cfg) -> results``; returns the last phase's results plus each
    phase's summary under ``"phases"``."""
    configs = phase_configs(cfg)
    summaries, results = [], {}
    for i, (phase, phase_cfg) in enumerate(zip(cfg.trainer.phases, configs)):
        folder = run_dir_of(phase_cfg)
        if (folder / "metrics.json").is_file() and cfg.trainer.resume:
            log.info("phase %d (%s) already finished in %s", i, phase.name, folder)
            summaries.append({"phase": phase.name, "run_dir": str(folder), "skipped": True})
            continue
        if cfg.trainer.resume and (folder / "checkpoints").is_dir():
            phase_cfg = dataclasses.replace(
                phase_cfg, trainer=dataclasses.replace(phase_cfg.trainer, resume=True, init_from=None)
            )
        log.info("phase %d/%d (%s): %s", i + 1, len(configs), phase.name, " ".join(phase.overrides) or "as the run")
        results = run_one(phase_cfg)
        summaries.append({"phase": phase.name, "run_dir": results["run_dir"], "steps": results["steps"],
                          "valid": results.get("valid", {}).get("ndcg@10")})
    return {**results, "phases": summaries}
