"""Drift statistics: histograms and PSI against hand-computed values; on a trained, exported tiny model the check
fires on a synthetic popularity shift and stays quiet on held-out users of the training distribution; the
TorchServe handler emits the statistics as custom metrics."""

from __future__ import annotations

import json
import math
import zipfile
from pathlib import Path

import numpy as np
import pytest

from serving.drift import DriftStats, Profile, compare, popularity_buckets, psi, replay
from serving.drift_cli import build_profile, history_requests, reference_users
from serving.handler import SeqrecHandler
from serving.service import Recommender, Request
from tests.serving.test_handler import FakeContext
from trainer.cli import main
from trainer.data.prepare import PrepareConfig, prepare
from trainer.data.synth import SynthConfig, generate


def test_popularity_buckets_hold_equal_training_mass() -> None:
    # shares of the interactions of more popular items: 0, .5, .8, .9 -> buckets 0, 5, 8, 9 (entry 0 = padding)
    assert popularity_buckets(np.array([5, 3, 1, 1])).tolist() == [0, 0, 5, 8, 9]
    assert popularity_buckets(np.array([1, 4]), buckets=2).tolist() == [0, 1, 0]


def test_histograms_and_psi_by_hand() -> None:
    stats = DriftStats(np.array([0, 0, 1, 1]), {"a": 1, "b": 2, "c": 3}, score_edges=np.array([0.0, 1.0]))
    requests = [Request(items=[1, 2, 3], unknown=[], k=2, exclude_seen=True),
                Request(items=[3], unknown=["x", "y", "z"], k=2, exclude_seen=True),
                Request(items=[], unknown=["q"], k=2, exclude_seen=True)]
    answers = [{"items": ["b", "c"], "scores": [1.5, 0.2], "fallback": False, "unknown": []},
               {"items": ["a", "b"], "scores": [-0.5, -1.0], "fallback": False, "unknown": []},
               {"items": ["a", "c"], "scores": [9.0, 8.0], "fallback": True, "unknown": []}]
    stats.update(requests, answers)
    # lengths 3, 4, 1 -> bins (edges 2, 4, 8, ...) 1, 2, 0
    assert stats.counts["history_length"][:3].tolist() == [1, 1, 1]
    # unknown rates 0, .75, 1 -> bins 0, 4, 4
    assert stats.counts["unknown_rate"].tolist() == [1, 0, 0, 0, 2]
    assert stats.counts["request_popularity"].tolist() == [1, 3]  # items 1 | 2, 3, 3
    assert stats.counts["recommended_popularity"].tolist() == [2, 4]  # b c a b a c -> 1 1 0 1 0 1
    assert stats.counts["top_score"].tolist() == [1, 0, 1]  # -0.5 and 1.5; the fallback's 9.0 is not a score
    assert stats.summary()["unknown_share"] == pytest.approx(2 / 3)
    e, a = np.array([50, 50]), np.array([80, 20])
    p, q = 0.5 + 1e-4, np.array([0.8, 0.2]) + 1e-4
    assert psi(e, a) == pytest.approx((q[0] - p) * math.log(q[0] / p) + (q[1] - p) * math.log(q[1] / p))
    assert psi(e, e) == pytest.approx(0.0) and math.isnan(psi(e, np.zeros(2)))


def shifted_dataset(root: Path, zipf: float) -> Path:
    """The tiny dataset's generator (same seed, so the same catalogue) with another popularity exponent (0.9 there;
    0.3 moves requests towards the tail: PSI ~0.5 on request popularity, against ~0.01 for held-out users)."""
    generate(SynthConfig(users=600, items=300, categories=10, seed=3, mean_length=12, max_length=60, zipf=zipf),
             root / f"raw-{zipf}", progress=False)
    prepare(PrepareConfig(format="synthetic", input=root / f"raw-{zipf}", output=root / f"zipf-{zipf}"))
    return root / f"zipf-{zipf}"


def write_log(path: Path, bodies: list[dict]) -> Path:
    path.write_text("".join(json.dumps(b) + "\n" for b in bodies))
    return path


def test_drift_fires_on_a_popularity_shift_not_on_held_out_users(exported: Path, tiny_dataset: Path,
                                                                 tmp_path: Path, capsys) -> None:
    service = Recommender.load(exported / "export")
    profile = build_profile(service, tiny_dataset, sample=300)
    assert sum(profile.counts["request_popularity"]) > 0 and len(profile.score_edges) >= 5
    profile.write(exported / "export")
    held_out = np.setdiff1d(np.arange(600), reference_users(tiny_dataset, 300))
    same = profile.stats(service)
    replay(service, history_requests(tiny_dataset, held_out), same)
    quiet = compare(profile, same)
    assert not any(r["drift"] for r in quiet.values()), quiet
    shift_requests = history_requests(shifted_dataset(tmp_path, zipf=0.3))
    shifted = profile.stats(service)
    replay(service, shift_requests, shifted)
    loud = compare(profile, shifted)
    assert loud["request_popularity"]["drift"] and loud["request_popularity"]["psi"] > 5 * max(
        quiet["request_popularity"]["psi"], 0.01), (quiet, loud)
    # the command: exit 0 on the held-out users, 1 on the shift, with a report naming the statistic
    log = write_log(tmp_path / "same.jsonl", history_requests(tiny_dataset, held_out))
    assert main(["drift", str(exported), "--requests", str(log)]) == 0
    assert "no drift" in capsys.readouterr().out
    log = write_log(tmp_path / "shift.jsonl", shift_requests)
    assert main(["drift", str(exported), "--requests", str(log)]) == 1
    assert "drift: " in (out := capsys.readouterr().out) and "request_popularity" in out.splitlines()[-1]
    (tmp_path / "bad.jsonl").write_text('{"history": []}\nnot json\n')
    assert main(["drift", str(exported), "--requests", str(tmp_path / "bad.jsonl")]) == 2
    assert "bad.jsonl, row 2: not JSON" in capsys.readouterr().err


def test_profile_only_writes_the_reference_and_the_archive_packs_it(exported: Path, tmp_path: Path, capsys) -> None:
    from serving.archive import build_archive
    from serving.drift import PROFILE_FILE

    folder = exported / "export"
    (folder / PROFILE_FILE).unlink(missing_ok=True)
    assert main(["drift", str(exported), "--profile-only", "--sample-users", "200"]) == 0
    profile = Profile.read(folder)
    assert profile is not None and profile.sample_users == 200 and "wrote" in capsys.readouterr().out
    assert main(["drift", str(exported)]) == 2  # neither --requests nor --profile-only
    archive = build_archive(folder, tmp_path / "mar")
    assert PROFILE_FILE in zipfile.ZipFile(archive).namelist()


def test_handler_emits_drift_metrics(exported: Path, tiny_dataset: Path) -> None:
    folder = exported / "export"
    if Profile.read(folder) is None:
        build_profile(Recommender.load(folder), tiny_dataset, sample=200).write(folder)
    context = FakeContext(folder)
    handler = SeqrecHandler()
    handler.initialize(context)
    handler.drift.interval_s = 0.0
    bodies = [{"body": b} for b in history_requests(tiny_dataset, np.arange(8))]
    handler.postprocess(handler.inference(handler.preprocess(bodies)))
    gauges = context.metrics.gauges
    assert gauges["DriftRequests"] == 8 and gauges["DriftHistoryLengthMean"] > 1
    assert {"DriftPSI_request_popularity", "DriftPSI_top_score"} <= set(gauges)
