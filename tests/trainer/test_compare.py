"""`seqrec compare`: report with valid PNG plots over real evaluated runs, and refusal of mismatched runs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import matplotlib.image
import pytest

from tests.conftest import train_overrides
from trainer.cli import main as seqrec
from trainer.config import load_config
from trainer.train import run_training


@pytest.fixture(scope="module")
def evaluated(tiny_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("compare")
    runs = {}
    for seed in (1, 2):
        results = run_training(
            load_config(train_overrides(tiny_dataset, out, f"trainer.run_id=s{seed}", f"trainer.seed={seed}"))
        )
        runs[f"s{seed}"] = Path(results["run_dir"])
        assert seqrec(["evaluate", str(runs[f"s{seed}"])]) == 0
    runs["pop"] = out / "pop"
    assert seqrec(["evaluate", "--popularity", str(tiny_dataset), "--output", str(runs["pop"])]) == 0
    return runs


def test_compare_writes_report_and_plots(evaluated: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "report"
    spec = f"sasrec={evaluated['s1']},{evaluated['s2']}"
    assert seqrec(["compare", f"pop={evaluated['pop']}", spec, "--output", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["groups"]["sasrec"]["seeds"] == 2 and summary["groups"]["sasrec"]["ndcg@10"]["ci_over"] == "seeds"
    assert len(summary["tests"]) == 5 and all(0 <= t["t_p_holm"] <= 1 for t in summary["tests"])
    assert summary["identity"]["protocol"] == "seen_removed"
    report = (out / "report.md").read_text()
    for name in ("metrics", "ndcg_by_history", "popularity_curve", "coverage", "tradeoff"):
        image = matplotlib.image.imread(out / f"{name}.png")
        assert image.shape[0] > 100 and image.shape[1] > 100 and image.std() > 0, name
        assert f"({name}.png)" in report
    assert seqrec(["compare", f"pop={evaluated['pop']}", spec, "--output", str(out)]) == 2  # exists


def test_compare_refuses_other_datasets_and_protocols(
    evaluated: dict[str, Path], tiny_dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from trainer.data.prepare import PrepareConfig, prepare

    # the same log prepared with a 5-core filter: another dataset
    filtered = tmp_path / "kcore5"
    prepare(PrepareConfig(format="synthetic", input=tiny_dataset.parent / "raw", output=filtered, kcore=5))
    assert seqrec(["evaluate", "--popularity", str(filtered), "--output", str(tmp_path / "pop_k5")]) == 0
    assert seqrec(["compare", str(evaluated["pop"]), str(tmp_path / "pop_k5"), "--output", str(tmp_path / "r")]) == 2
    assert "dataset=" in capsys.readouterr().err
    # a run whose results were computed under the other protocol (files renamed to the default name)
    other = tmp_path / "pop_none"
    assert seqrec(["evaluate", "--popularity", str(tiny_dataset), "--output", str(other), "eval.protocol=none"]) == 0
    for f in other.glob("*_test_none*"):
        shutil.move(f, other / f.name.replace("_test_none", "_test"))
    assert seqrec(["compare", str(evaluated["pop"]), str(other), "--output", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "protocol=none" in err and "protocol=seen_removed" in err
    assert not (tmp_path / "r").exists()
