"""Export round trip on a tiny trained run: fp32 artefact = trained (sharded) model, INT8 close to fp32, pruning."""

from __future__ import annotations

import dataclasses
import json
import zipfile
from pathlib import Path

import pytest
import torch

from serving.export import ExportConfig, build_variant, evaluate_variant, export_run, load_trained
from serving.inference import script
from tests.conftest import train_overrides
from trainer.cli import main as seqrec
from trainer.config import load_config
from trainer.errors import ConfigError
from trainer.train import run_training


@pytest.fixture(scope="module")
def run_dir(tiny_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("serving_run")
    result = run_training(load_config(train_overrides(tiny_dataset, out, "trainer.run_id=r", "trainer.test_at_end=false")))
    return Path(result["run_dir"])


@pytest.fixture(scope="module")
def exported(run_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    return export_run(ExportConfig(run=run_dir, output=tmp_path_factory.mktemp("exp") / "export"))


def _valid_batch(cfg) -> object:
    from trainer.data.loader import LoaderConfig, build_loader

    loader_cfg = LoaderConfig(kind="last", split="valid", batch_size=64, max_len=cfg.data.max_len, shuffle=False)
    return next(iter(build_loader(cfg.data.path, loader_cfg)))


def _full_scores(model, history: torch.Tensor, lengths: torch.Tensor, num_items: int) -> torch.Tensor:
    """Scores of every item (B, N) from the top-k signature (k = N, nothing excluded)."""
    with torch.inference_mode():
        scores, items = model(history, lengths, num_items, False)
    return torch.zeros_like(scores).scatter_(1, items - 1, scores)


def test_fp32_export_gives_the_sharded_models_scores(run_dir: Path) -> None:
    from trainer import checkpoint
    from trainer.distributed import init_distributed, shard_model, shutdown_distributed
    from trainer.evaluate import item_table
    from trainer.model_factory import build_model

    trained = load_trained(run_dir)
    n = trained.model.num_items
    batch = _valid_batch(trained.cfg)
    env = init_distributed()
    try:
        sharded = shard_model(build_model(trained.cfg.model, n, trained.cfg.data.max_len, torch.device("meta")),
                              env, trained.cfg.optim)
        checkpoint.load(trained.checkpoint, sharded, None)
        sharded.eval()
        with torch.no_grad():
            expected = sharded.module.encode(batch) @ item_table(sharded, n, env)[1:].T
    finally:
        shutdown_distributed()
    fp32 = script(build_variant(trained.model, False, [])[0])
    history = batch.sparse["history"]
    got = _full_scores(fp32, history.values(), history.lengths(), n)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)


def test_scripted_artefact_keeps_the_normed_residual_layout(run_dir: Path) -> None:
    """The inference module runs the blocks as trained: the other layout gives the eager model's scores too."""
    from modules import registry

    trained = load_trained(run_dir)
    config = dataclasses.replace(
        trained.model.config, encoder=dataclasses.replace(trained.model.config.encoder, block="normed_residual")
    )
    model = registry.build(config, num_items=trained.model.num_items, max_len=trained.cfg.data.max_len)
    model.load_state_dict(trained.model.state_dict())
    model.eval()
    batch, n = _valid_batch(trained.cfg), model.num_items
    with torch.no_grad():
        expected = model.encode(batch) @ model.item_embeddings(torch.arange(1, n + 1)).T
    history = batch.sparse["history"]
    got = _full_scores(script(build_variant(model, False, [])[0]), history.values(), history.lengths(), n)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
    pre_ln = _full_scores(script(build_variant(trained.model, False, [])[0]), history.values(), history.lengths(), n)
    assert not torch.allclose(got, pre_ln, rtol=1e-3, atol=1e-3)


def test_fp32_metrics_equal_the_trainers_validation(run_dir: Path, exported: dict) -> None:
    history = json.loads((run_dir / "metrics.json").read_text())["history"]
    best = max(h["ndcg@10"] for h in history)  # export takes the best-validation checkpoint
    assert exported["metrics"]["fp32_ndcg@10"] == pytest.approx(best, rel=1e-6)


def test_int8_artefact_is_smaller_and_ranks_like_fp32(run_dir: Path, exported: dict) -> None:
    meta = json.loads((Path(exported["output"]) / "metadata.json").read_text())
    assert meta["compression"]["tables"].startswith("int8")
    # dim 16: a row is 16 INT8 + 4 bytes scale/bias (aligned to 4) against 64 fp32 bytes
    assert meta["size"]["table_ratio"] == pytest.approx(64 / 20, rel=0.01)
    assert meta["size"]["tensor_ratio"] > 1.2
    with zipfile.ZipFile(Path(exported["output"]) / "model.pt") as archive:  # saved without debug tables
        records = archive.infolist()
    assert records and not any(r.filename.endswith(".debug_pkl") for r in records)
    assert all(r.compress_type == zipfile.ZIP_DEFLATED for r in records)
    assert abs(meta["metrics"]["relative_change"]) < 0.1
    assert set(meta["latency"]["exported"]) == {"b1_l20", "b32_l20"}
    trained = load_trained(run_dir)
    n = trained.model.num_items
    int8 = torch.jit.load(str(Path(exported["output"]) / "model.pt"))
    fp32 = script(build_variant(trained.model, False, [])[0])
    history = _valid_batch(trained.cfg).sparse["history"]
    with torch.inference_mode():
        _, top_int8 = int8(history.values(), history.lengths(), 10, True)
        _, top_fp32 = fp32(history.values(), history.lengths(), 10, True)
    overlap = torch.tensor([len(set(a.tolist()) & set(b.tolist())) / 10 for a, b in zip(top_int8, top_fp32)])
    assert overlap.mean() > 0.8
    ids = json.loads((Path(exported["output"]) / "id_map.json").read_text())
    assert len(ids["raw_ids"]) == len(ids["popularity"]) == n


def test_artefact_truncates_long_histories_and_excludes_the_whole_history(exported: dict) -> None:
    model = torch.jit.load(str(Path(exported["output"]) / "model.pt"))
    max_len, n = exported["max_len"], exported["num_items"]
    long = torch.arange(1, max_len + 11, dtype=torch.int64)  # max_len + 10 items
    with torch.inference_mode():
        s_long, i_long = model(long, torch.tensor([len(long)]), 5, False)
        s_cut, i_cut = model(long[-max_len:], torch.tensor([max_len]), 5, False)
        s_all, i_all = model(long, torch.tensor([len(long)]), n, True)
    torch.testing.assert_close(s_long, s_cut)
    assert torch.equal(i_long, i_cut)
    finite = torch.isfinite(s_all[0])
    assert int(finite.sum()) == n - len(long)  # seen items (also the truncated-away ones) are masked
    assert not set(i_all[0][finite].tolist()) & set(long.tolist())


def test_pruning_reaches_the_sparsity_and_is_recorded(run_dir: Path, tmp_path: Path, capsys) -> None:
    trained = load_trained(run_dir)
    pruned, sparsity = build_variant(trained.model, False, [], 0.5, ("linear", "embedding"))
    assert sparsity == pytest.approx(0.5, abs=0.01)
    table = pruned.table()[1:]
    assert float((table == 0).float().mean()) == pytest.approx(0.5, abs=0.01)
    assert 0.0 <= evaluate_variant(pruned, trained.cfg)["ndcg@10"] <= 1.0
    code = seqrec(["export", str(run_dir), "--output", str(tmp_path / "p"), "--prune-sparsity", "0.8",
                   "--prune-layers", "linear", "--no-eval", "--dense", "fp32"])
    assert code == 0 and "pruned 80.0%" in capsys.readouterr().out
    meta = json.loads((tmp_path / "p" / "metadata.json").read_text())
    assert meta["compression"]["sparsity_achieved"] == pytest.approx(0.8, abs=0.01)
    assert meta["compression"]["dense_int8_groups"] == []


def test_bad_exports_fail_cleanly(run_dir: Path, exported: dict, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no complete checkpoint"):
        export_run(ExportConfig(run=tmp_path))
    with pytest.raises(ConfigError, match="prune-sparsity"):
        export_run(ExportConfig(run=run_dir, prune_sparsity=1.5))
    with pytest.raises(ConfigError, match="already exists"):
        export_run(ExportConfig(run=run_dir, output=Path(exported["output"]), evaluate=False))
    assert not [p for p in Path(exported["output"]).parent.iterdir() if ".tmp-" in p.name]


@pytest.mark.parametrize("groups", [[], ["attention", "ffn"]])
def test_batch_dependence_only_from_dynamic_int8_and_small(run_dir: Path, groups: list[str]) -> None:
    """Dynamic INT8 quantizes activations with one scale per batch tensor, so co-batched requests move each
    other's scores a little; with fp32 dense compute (INT8 tables are per row) a request's scores are its own."""
    trained = load_trained(run_dir)
    n = trained.model.num_items
    model = script(build_variant(trained.model, True, groups, int8_storage=not groups)[0])
    history = _valid_batch(trained.cfg).sparse["history"]
    together = _full_scores(model, history.values(), history.lengths(), n)
    alone = torch.cat([_full_scores(model, h, h.new_tensor([len(h)]), n)
                       for h in torch.split(history.values(), history.lengths().tolist())])
    if not groups:
        torch.testing.assert_close(together, alone, rtol=1e-5, atol=1e-5)
    else:
        drift = (together - alone).abs().amax(dim=1) / alone.abs().amax(dim=1)
        assert 0 < float(drift.max()) < 0.05


def test_paired_latency_interleaves_the_models_on_the_same_inputs() -> None:
    from serving.export import paired_latency

    calls: list[tuple[str, int]] = []

    def model(name: str):
        def call(history, lengths, k, exclude_seen):
            calls.append((name, int(history.sum())))
        return call

    timed = paired_latency({"a": model("a"), "b": model("b")}, num_items=50, batch=2, length=5, repeats=4)
    assert [name for name, _ in calls[:4]] == ["a", "b", "b", "a"]  # alternating order
    assert len({total for _, total in calls}) == 1  # every call sees the same histories
    for name in ("a", "b"):
        assert 0 < timed[name]["p50_ms"] <= timed[name]["p99_ms"]


def test_export_builds_an_ann_index_with_its_recall_against_exact(exported: dict) -> None:
    import faiss

    ann = exported["ann"]
    assert ann["kind"] == "hnsw" and ann["items"] == exported["num_items"]
    assert 0.9 <= ann[f"recall@{min(100, ann['items'])}"] <= 1.0  # HNSW on a few hundred items is near exact
    index = faiss.read_index(str(Path(exported["output"]) / ann["file"]))
    assert index.ntotal == exported["num_items"]


def test_ann_index_kinds_rank_like_exact_search() -> None:
    import numpy as np

    from serving.ann import AnnConfig, build_index, recall_against_exact

    items = np.random.default_rng(0).standard_normal((2000, 16)).astype(np.float32)
    queries = np.random.default_rng(1).standard_normal((50, 16)).astype(np.float32)
    for kind in ("flat", "hnsw", "ivf"):
        index = build_index(items, AnnConfig(kind=kind, nprobe=64))
        recall = recall_against_exact(index, items, queries, 10)["recall@10"]
        assert recall == 1.0 if kind == "flat" else recall > 0.8, (kind, recall)
