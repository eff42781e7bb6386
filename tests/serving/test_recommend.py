"""`seqrec recommend` on a tiny trained run: the evaluation path's top-K, raw ids, resume/refuse, processes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from serving.export import ExportConfig, export_run, load_trained
from serving.recommend import RecommendConfig, _chunk_path, _init, _run_chunk, _work_folder, recommend
from serving.recommend_inputs import Source, plan
from tests.conftest import train_overrides
from trainer.cli import main as seqrec
from trainer.config import load_config
from trainer.errors import ConfigError
from trainer.train import run_training

K = 20


@pytest.fixture(scope="module")
def run_dir(tiny_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("recommend_run")
    result = run_training(load_config(train_overrides(tiny_dataset, out, "trainer.run_id=r", "trainer.test_at_end=false")))
    run = Path(result["run_dir"])
    export_run(ExportConfig(run=run, output=run / "export_fp32", quantize=False, evaluate=False))
    return run


@pytest.fixture(scope="module")
def test_recs(run_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("recs") / "recs.parquet"
    recommend(RecommendConfig(chunk_users=64, source=run_dir / "export_fp32", output=out, k=K, split="test", progress=False,
                              batch_size=64))
    return out


def _evaluation_topk(run_dir: Path) -> dict[str, tuple[list[str], np.ndarray]]:
    """raw user id -> (raw item ids, scores) of the top K from the evaluation path (trained model, fp32)."""
    from trainer.data.loader import LoaderConfig, build_loader
    from trainer.distributed import DistEnv
    from trainer.evaluate import SeenIndex, item_table
    from trainer.evaluation.ranking import full_ranking

    trained = load_trained(run_dir)
    folder = trained.cfg.data.path
    env = DistEnv(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"), backend="gloo")
    items = item_table(trained.model, trained.model.num_items, env)
    seen = SeenIndex(folder, "test")
    raw_items = pq.read_table(Path(folder) / "items.parquet").column("raw_id").to_pylist()
    users = pq.read_table(Path(folder) / "users.parquet")
    raw_user = dict(zip(users.column("user_idx").to_pylist(), users.column("raw_id").to_pylist()))
    loader = build_loader(folder, LoaderConfig(kind="last", split="test", batch_size=100,
                                               max_len=trained.cfg.data.max_len, shuffle=False))
    result = {}
    with torch.inference_mode():
        for batch in loader:
            top = full_ranking(trained.model.encode(batch).float(), items, K, None, seen.gather(batch.user_idx))
            for u, ids, scores in zip(batch.user_idx.tolist(), top.ids.tolist(), top.scores.numpy()):
                keep = [i for i in ids if i > 0]
                result[raw_user[u]] = ([raw_items[i - 1] for i in keep], scores[: len(keep)])
    return result


def test_recommend_equals_the_evaluation_top_k(run_dir: Path, test_recs: Path) -> None:
    expected = _evaluation_topk(run_dir)
    table = pq.read_table(test_recs).to_pylist()
    assert len(table) == len(expected) == 600
    for row in table:
        ids, scores = expected[row["user_id"]]
        assert np.allclose(row["scores"], scores, atol=1e-4), row["user_id"]
        # ids must agree except where two neighbours tie within float noise (their order is then arbitrary)
        gaps = np.abs(np.diff(scores))
        tied = np.zeros(len(ids), dtype=bool)
        tied[:-1] |= gaps < 1e-4
        tied[1:] |= gaps < 1e-4
        assert [a for a, t in zip(row["items"], tied) if not t] == [b for b, t in zip(ids, tied) if not t]
        assert not row["fallback"]


def test_histories_file_and_user_list_give_the_same_rows(run_dir: Path, test_recs: Path, tmp_path: Path) -> None:
    folder = Path(load_trained(run_dir).cfg.data.path)
    seq = pq.read_table(folder / "sequences.parquet").to_pylist()[:50]
    raw_items = pq.read_table(folder / "items.parquet").column("raw_id").to_pylist()
    raw_user = pq.read_table(folder / "users.parquet").column("raw_id").to_pylist()
    lines = [json.dumps({"user": raw_user[r["user_idx"]], "history": [raw_items[i - 1] for i in r["items"][: r["valid_end"]]]
                         + ["not-an-item"]}) for r in seq]
    (tmp_path / "h.jsonl").write_text("\n".join(lines) + "\n")
    (tmp_path / "users.txt").write_text("\n".join(raw_user[r["user_idx"]] for r in seq) + "\n")
    by_file = recommend(RecommendConfig(chunk_users=64, source=run_dir / "export_fp32", output=tmp_path / "h.parquet", k=K,
                                        histories=tmp_path / "h.jsonl", progress=False))
    recommend(RecommendConfig(chunk_users=64, source=run_dir / "export_fp32", output=tmp_path / "u.parquet", k=K, split="test",
                              users=tmp_path / "users.txt", progress=False))
    assert by_file["unknown_items_dropped"] == 50
    reference = {r["user_id"]: r for r in pq.read_table(test_recs).to_pylist()}
    for name in ("h.parquet", "u.parquet"):
        rows = pq.read_table(tmp_path / name).to_pylist()
        assert len(rows) == 50
        for row in rows:
            assert row["items"] == reference[row["user_id"]]["items"]


def test_two_processes_write_the_same_file(run_dir: Path, test_recs: Path, tmp_path: Path) -> None:
    result = recommend(RecommendConfig(chunk_users=64, source=run_dir / "export_fp32", output=tmp_path / "p.parquet", k=K,
                                       split="test", procs=2, threads=1, progress=False, batch_size=64))
    assert result["users"] == 600
    assert pq.read_table(tmp_path / "p.parquet").equals(pq.read_table(test_recs))


def test_resumes_an_interrupted_run_and_refuses_otherwise(run_dir: Path, test_recs: Path, tmp_path: Path) -> None:
    cfg = RecommendConfig(chunk_users=64, source=run_dir / "export_fp32", output=tmp_path / "r.parquet", k=K, split="test",
                          progress=False, batch_size=64)
    from serving.recommend import _fingerprint, _Task, find_artefact

    artefact = find_artefact(cfg.source)
    source = Source(dataset=Path(load_trained(run_dir).cfg.data.path), split="test", chunk_users=64)
    chunks, _ = plan(source)
    work = _work_folder(cfg, _fingerprint(cfg, artefact, source))
    _init(_Task(artefact, source, work, K, True, 64, None))
    for chunk in chunks[:3]:  # an interrupted run: three chunks done
        _run_chunk(chunk)
    with pytest.raises(ConfigError, match="pass --resume"):
        recommend(cfg)
    with pytest.raises(ConfigError, match=r"other settings \(k\)"):
        recommend(RecommendConfig(**{**cfg.__dict__, "k": 5, "resume": True}))
    result = recommend(RecommendConfig(**{**cfg.__dict__, "resume": True}))
    assert result["resumed_chunks"] == 3 and not work.exists() and not _chunk_path(work, 0).exists()
    assert pq.read_table(cfg.output).equals(pq.read_table(test_recs))
    with pytest.raises(ConfigError, match="already exists"):
        recommend(cfg)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.parquet"]


def test_int8_artefact_agrees_mostly_and_the_command_prints_one_line(
    run_dir: Path, test_recs: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    export_run(ExportConfig(run=run_dir, evaluate=False))  # RUN/export: the INT8 default
    out = tmp_path / "int8.parquet"
    assert seqrec(["recommend", str(run_dir), "-o", str(out), "--k", str(K), "--split", "test", "--no-progress"]) == 0
    assert capsys.readouterr().out.startswith(f"wrote {out}: 600 users")
    fp32 = {r["user_id"]: set(r["items"]) for r in pq.read_table(test_recs).to_pylist()}
    overlap = np.mean([len(set(r["items"]) & fp32[r["user_id"]]) / K for r in pq.read_table(out).to_pylist()])
    assert overlap > 0.9
