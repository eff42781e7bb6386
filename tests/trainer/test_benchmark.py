"""`seqrec benchmark`: a grid runs, writes its table and reports, and a killed grid resumes without redoing cells."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO, train_overrides
from trainer.cli import main as seqrec


def _grid(tmp_path: Path, dataset: Path) -> Path:
    train = [o for o in train_overrides(dataset, tmp_path) if not o.startswith(("data.path", "trainer.output_dir"))]
    grid = tmp_path / "grid.yaml"
    grid.write_text(json.dumps({
        "output": str(tmp_path / "bench"),
        "seeds": [1, 2],
        "datasets": {"tiny": str(dataset)},
        "models": {
            "popularity": {"baseline": "popularity"},
            "sasrec": {"train": [*train, "trainer.epochs=1"]},
            "ease": {"baseline": "ease", "params": {"ease_lambda": 50}},
        },
        "anchors": {"tiny": {"sasrec": {"ndcg@10": 0.5, "source": "made-up anchor for the test"}}},
    }))
    return grid


@pytest.mark.slow
def test_killed_grid_resumes_without_redoing_finished_cells(tiny_dataset: Path, tmp_path: Path) -> None:
    grid = _grid(tmp_path, tiny_dataset)
    bench = tmp_path / "bench" / "tiny"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-m", "trainer.cli", "benchmark", str(grid)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    first = bench / "sasrec" / "seed1" / "eval_test.json"
    deadline = time.monotonic() + 300
    while not first.is_file() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)  # mid-grid: popularity and one SASRec seed done, the rest not
    proc.wait()
    assert first.is_file()
    done = {p: p.stat().st_mtime_ns for p in bench.glob("*/**/eval_test.json")}
    assert not (tmp_path / "bench" / "results.md").exists()
    assert seqrec(["benchmark", str(grid)]) == 0
    for path, mtime in done.items():
        assert path.stat().st_mtime_ns == mtime, f"{path} was redone"
    for cell in ("popularity", "ease", "sasrec/seed1", "sasrec/seed2"):
        assert (bench / cell / "eval_test.json").is_file(), cell
    rows = list(csv.DictReader((tmp_path / "bench" / "results.csv").read_text().splitlines()))
    assert [(r["model"], r["seeds"]) for r in rows] == [("popularity", "1"), ("sasrec", "2"), ("ease", "1")]
    assert rows[1]["anchor_source"] == "made-up anchor for the test" and float(rows[1]["ndcg@10_ci"]) > 0
    assert "| tiny | sasrec | 2 |" in (tmp_path / "bench" / "results.md").read_text()
    assert (bench / "report" / "report.md").is_file() and (bench / "report" / "tradeoff.png").is_file()
    # nothing left to do: a third run trains nothing and says so
    assert seqrec(["benchmark", str(grid), "--dry-run"]) == 0


def test_a_run_stopped_by_a_signal_is_resumed_not_taken_as_trained(tmp_path: Path) -> None:
    from trainer.benchmark import _trained

    (tmp_path / "metrics.json").write_text(json.dumps({"steps": 83, "history": []}))  # what SIGTERM leaves
    assert not _trained(tmp_path)
    (tmp_path / "metrics.json").write_text(json.dumps({"steps": 480, "test": {"ndcg@10": 0.15}}))
    assert _trained(tmp_path) and not _trained(tmp_path / "missing")


def test_grid_file_errors_name_the_key(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("output: x\nseeds: [1]\ndatasets: {a: b}\nmodels: {m: {baseline: ease, train: [x=1]}}\n")
    assert seqrec(["benchmark", str(bad)]) == 2
    bad.write_text("output: x\nseeds: [1]\ndatasets: {a: b}\nmodel: {}\n")
    assert seqrec(["benchmark", str(bad)]) == 2
    assert seqrec(["benchmark", str(tmp_path / "missing.yaml")]) == 2


def test_committed_grids_load() -> None:
    from trainer.benchmark import cells, load_grid

    for path in sorted((REPO / "configs" / "benchmark").glob("*.yaml")):
        assert cells(load_grid(path)), path
