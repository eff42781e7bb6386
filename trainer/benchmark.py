"""Run a benchmark grid (models x datasets x seeds): ``seqrec benchmark configs/benchmark/small.yaml``.

The grid file names its datasets (prepared folders), its models and its seeds. A model is either a baseline
(``baseline: ease`` + ``params``), evaluated by ``seqrec evaluate --baseline``, or a list of training overrides
(``train: [experiment=sasrec_{dataset}, model.loss=bce]``; ``{dataset}`` is replaced by the dataset's name) that
goes through `trainer.train.run_training` and then ``seqrec evaluate``, so any model of the registry joins by
overrides alone. Every cell has its own folder, ``<output>/<dataset>/<model>[/seed<N>]``; a cell whose results
file exists is never run again, a training cell killed after a checkpoint resumes from it, so a killed grid
resumes where it stopped. At the end: ``results.md`` and ``results.csv`` (mean and 95% CI over seeds, with the
published anchors of the grid file beside ours) and one ``seqrec compare`` report per dataset.

Example:
  seqrec benchmark configs/benchmark/small.yaml
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import time
from pathlib import Path
from typing import Any

from trainer.errors import ConfigError

log = logging.getLogger("seqrec.benchmark")


@dataclasses.dataclass(kw_only=True)
class ModelSpec:
    """One model of the grid: a baseline (with its params) or training overrides."""

    name: str
    baseline: str | None = None
    params: dict[str, float] = dataclasses.field(default_factory=dict)
    train: list[str] = dataclasses.field(default_factory=list)


@dataclasses.dataclass(kw_only=True)
class Grid:
    """A parsed grid file (see the module docstring); ``eval`` holds ``eval.*`` overrides for every cell."""

    output: Path
    datasets: dict[str, str]
    models: list[ModelSpec]
    seeds: list[int]
    split: str = "test"
    eval: list[str] = dataclasses.field(default_factory=list)
    anchors: dict[str, dict[str, dict[str, Any]]] = dataclasses.field(default_factory=dict)


def load_grid(path: str | Path) -> Grid:
    """Read and check a grid file; errors name the file and the key."""
    from omegaconf import OmegaConf

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such grid file")
    raw = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
    known = {f.name for f in dataclasses.fields(Grid)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ConfigError(f"{path}: unknown keys {unknown}; allowed: {sorted(known)}")
    for key in ("output", "datasets", "models", "seeds"):
        if key not in raw:
            raise ConfigError(f"{path}: missing key {key!r}")
    models = []
    for name, spec in raw["models"].items():
        spec = spec or {}
        bad = sorted(set(spec) - {"baseline", "params", "train"})
        if bad or bool(spec.get("baseline")) == bool(spec.get("train")):
            raise ConfigError(f"{path}: models.{name} needs exactly one of 'baseline' or 'train' (got {sorted(spec)})")
        models.append(ModelSpec(name=name, **spec))
    bad_eval = [o for o in raw.get("eval", []) if not str(o).startswith("eval.")]
    if bad_eval:
        raise ConfigError(f"{path}: eval: only eval.* overrides, got {bad_eval}")
    return Grid(**{**raw, "output": Path(raw["output"]), "models": models})


def cell_dir(grid: Grid, dataset: str, model: ModelSpec, seed: int) -> Path:
    """Where a cell's run (or baseline results) lives; baselines are deterministic, so they have no seed."""
    base = grid.output / dataset / model.name
    return base if model.baseline else base / f"seed{seed}"


def _results_file(grid: Grid, folder: Path) -> Path:
    from trainer.config import load_config
    from trainer.evaluation.results import results_stem

    return folder / f"eval_{results_stem(grid.split, load_config(grid.eval).eval)}.json"


def _evaluate(args: list[str]) -> None:
    from trainer.cli import main as seqrec

    if seqrec(["evaluate", *args]) != 0:
        raise ConfigError(f"seqrec evaluate {' '.join(args)} failed (see above)")


def run_cell(grid: Grid, dataset: str, model: ModelSpec, seed: int) -> None:
    """Train (or resume) and evaluate one cell; writes ``cell.json`` with its wall time."""
    folder = cell_dir(grid, dataset, model, seed)
    data = grid.datasets[dataset]
    start = time.perf_counter()
    if model.baseline:
        params = [a for k, v in model.params.items() for a in ("--param", f"{k}={v}")]
        _evaluate(["--baseline", model.baseline, data, "--output", str(folder), "--split", grid.split,
                   "--overwrite", *params, *grid.eval])
    else:
        _train(grid, dataset, model, seed, folder)
        _evaluate([str(folder), "--split", grid.split, "--overwrite", *grid.eval])
    (folder / "cell.json").write_text(json.dumps({"seconds": time.perf_counter() - start}) + "\n")


def _train(grid: Grid, dataset: str, model: ModelSpec, seed: int, folder: Path) -> None:
    """Training through the normal entry point; a killed run resumes from its newest checkpoint."""
    from trainer import checkpoint
    from trainer.config import load_config
    from trainer.train import run_training

    if _trained(folder):
        return  # trained; only the evaluation was missing
    resume = folder.is_dir() and checkpoint.latest_checkpoint(folder) is not None
    if folder.is_dir() and not resume:
        shutil.rmtree(folder)  # killed before its first checkpoint: nothing to keep
    overrides = [o.replace("{dataset}", dataset) for o in model.train] + [
        f"data.path={grid.datasets[dataset]}",
        f"trainer.output_dir={folder.parent.parent}",
        f"trainer.experiment={model.name}",
        f"trainer.run_id={folder.name}",
        f"trainer.seed={seed}",
        f"trainer.resume={str(resume).lower()}",
        "trainer.progress=false",
        "trainer.test_at_end=true",  # a run that ends without its test metrics was stopped early
        *grid.eval,
    ]
    if "test" not in run_training(load_config(overrides)):
        raise ConfigError(f"{folder}: training stopped before its end (signal); run the benchmark again to resume it")


def _trained(folder: Path) -> bool:
    """A finished training writes its test metrics; a run stopped by a signal writes metrics.json without them."""
    try:
        return "test" in json.loads((folder / "metrics.json").read_text())
    except (OSError, json.JSONDecodeError):
        return False


def cells(grid: Grid) -> list[tuple[str, ModelSpec, int]]:
    """Every (dataset, model, seed) once; a baseline appears once per dataset."""
    out = []
    for dataset in grid.datasets:
        for model in grid.models:
            for seed in grid.seeds[:1] if model.baseline else grid.seeds:
                out.append((dataset, model, seed))
    return out


def add_arguments(parser: Any) -> None:
    """``seqrec benchmark`` arguments."""
    parser.add_argument("grid", help="grid file (YAML), e.g. configs/benchmark/small.yaml")
    parser.add_argument("--dry-run", action="store_true", help="list the cells and which are done; run nothing")
    parser.add_argument(
        "--models", help="comma-separated subset of the grid's models to run now (the table covers every done cell)"
    )


def run(args: Any) -> int:
    """Run the missing cells, then write the table and the per-dataset reports."""
    from tqdm.auto import tqdm

    from trainer.benchmark_table import write_reports, write_table

    grid = load_grid(args.grid)
    todo = [c for c in cells(grid) if not _results_file(grid, cell_dir(grid, *c)).is_file()]
    print(f"{len(cells(grid))} cells, {len(cells(grid)) - len(todo)} done, {len(todo)} to run")
    if args.models:
        wanted = set(args.models.split(","))
        unknown = sorted(wanted - {m.name for m in grid.models})
        if unknown:
            raise ConfigError(f"--models: {unknown} not in the grid; it has {[m.name for m in grid.models]}")
        todo = [c for c in todo if c[1].name in wanted]
        print(f"running {len(todo)} of them (--models {args.models})")
    if args.dry_run:
        for dataset, model, seed in todo:
            print(f"  to run: {dataset} {model.name} seed {seed}")
        return 0
    for dataset, model, seed in tqdm(todo, desc="benchmark", unit="cell"):
        log.info("cell %s / %s / seed %d", dataset, model.name, seed)
        run_cell(grid, dataset, model, seed)
    table = write_table(grid, [(d, m, s, _results_file(grid, cell_dir(grid, d, m, s))) for d, m, s in cells(grid)])
    write_reports(grid, cells(grid), lambda d, m, s: cell_dir(grid, d, m, s), _results_file(grid, grid.output).stem)
    print(table)
    print(f"table written to {grid.output / 'results.md'} and {grid.output / 'results.csv'}")
    return 0
