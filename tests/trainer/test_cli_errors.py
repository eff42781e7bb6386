"""A corpus of wrong invocations: each exits non-zero with one line that names what to change, and writes nothing."""

from __future__ import annotations

from pathlib import Path

import pytest

from trainer.cli import main as seqrec

# (argv, a fragment the one line must contain: the key, option, path or hint to change)
CORPUS: list[tuple[list[str], str]] = [
    # training configuration: range checks, misspelt keys, config groups, types, cross-field rules
    (["train", "optim.lr=-1"], "optim.lr=-1.0 is not allowed; it must be a number > 0"),
    (["train", "trainer.epochs=0"], "trainer.epochs=0 is not allowed"),
    (["train", "data.batch_size=0"], "data.batch_size=0"),
    (["train", "data.eval_batch_size=-3"], "data.eval_batch_size=-3"),
    (["train", "data.max_len=0"], "data.max_len=0"),
    (["train", "optim.betas=[0.9,1.5]"], "optim.betas"),
    (["train", "optim.min_lr_ratio=2"], "optim.min_lr_ratio=2.0"),
    (["train", "optim.sparse_lr=0"], "optim.sparse_lr=0.0"),
    (["train", "optim.warmup_steps=-1"], "optim.warmup_steps=-1"),
    (["train", "eval.ks=[5]"], "eval.ks=[5]"),
    (["train", "eval.item_chunk=0"], "eval.item_chunk=0"),
    (["train", "trainer.log_every=0"], "trainer.log_every=0"),
    (["train", "trainer.keep_checkpoints=0"], "trainer.keep_checkpoints=0"),
    (["train", "trainer.run_id=a/b"], "trainer.run_id='a/b'"),
    (["train", "trainer.sharding=diagonal"], "trainer.sharding='diagonal'"),
    (["train", "data.window=middle"], "data.window='middle'"),
    (["train", "trainr.epochs=1"], "did you mean 'trainer'?"),
    (["train", "optim.lrr=0.1"], "did you mean 'lr'?"),
    (["train", "+trainer.epoch=3"], "did you mean 'epochs'?"),
    (["train", "model.dimm=8"], "did you mean 'dim'?"),
    (["train", "model.num_blocks=3"], "did you mean 'model.encoder.num_blocks'?"),
    (["train", "experiment=sasrec_ml1"], "did you mean 'experiment=sasrec_ml1m'?"),
    (["train", "optim.lr=abc"], "optim.lr=abc"),
    (["train", "trainer.resume=true", "trainer.init_from=x"], "trainer.resume and trainer.init_from"),
    (["train", "data.path=nowhere", "trainer.max_steps=1"], "nowhere: dataset folder does not exist"),
    # the commands' own options and paths
    (["trian"], "did you mean 'train'?"),
    (["evaluate", "nowhere"], "nowhere: run folder does not exist"),
    (["evaluate", "--popularity", "nowhere"], "nowhere: dataset folder does not exist"),
    (["evaluate", "--split", "train", "nowhere"], "argument --split: invalid choice: 'train'"),
    (["export", "nowhere"], "nowhere: run folder does not exist"),
    (["export", "nowhere", "--dense", "int4"], "argument --dense: invalid choice"),
    (["recommend", "nowhere", "-o", "recs.parquet"], "nowhere: does not exist"),
    (["recommend", "nowhere"], "required: --output/-o"),
    (["recommend", "nowhere", "-o", "recs.csv"], "--output must end in .parquet"),
    (["recommend", "nowhere", "-o", "recs.parquet", "--k", "0"], "--k must be >= 1"),
    (["recommend", "nowhere", "-o", "recs.parquet", "--batch-size", "0"], "--batch-size must be >= 1"),
    (["recommend", "nowhere", "-o", "r.parquet", "--users", "u.txt", "--histories", "h.jsonl"], "not allowed with"),
    (["recommend", ".", "-o", "recs.parquet"], "no model.pt here"),
    (["serve", "--archive", "nowhere.mar"], "nowhere.mar: archive not found"),
    (["serve", "--archive", "nowhere.mar", "--stop"], "nothing to stop"),
    (["serve", "--archive", "nowhere.mar", "--curl"], "no TorchServe is running"),
    (["serve", "--archive", "nowhere.mar", "--key-expiry-min", "0"], "--key-expiry-min must be >= 1"),
    (["prepare", "--format", "sasrc", "a.txt", "out"], "did you mean 'sasrec'?"),
    (["prepare", "--format", "sasrec", "nowhere.txt", "out"], "nowhere.txt"),
    (["prepare", "--format", "sasrec", "short.txt", "out"], "--short-users drop"),
    (["synth", "--output", "raw", "--users", "0"], "--users must be >= 1"),
    (["inspect", "nowhere"], "nowhere: dataset folder does not exist"),
]


def _tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


@pytest.mark.parametrize(("argv", "fragment"), CORPUS, ids=[" ".join(a) for a, _ in CORPUS])
def test_wrong_invocation_is_one_line_and_leaves_nothing(
    argv: list[str], fragment: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "short.txt").write_text("1 1\n1 2\n")  # one user with two events: too short for leave-one-out
    before = _tree(tmp_path)
    try:
        code = seqrec(argv)
    except SystemExit as exc:  # argparse exits itself
        code = exc.code
    out, err = capfd.readouterr()
    lines = [line for line in err.splitlines() if line.strip() and " INFO " not in line]
    assert code != 0
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ") and fragment in lines[0], lines[0]
    assert "Traceback" not in err + out
    assert _tree(tmp_path) == before


def test_the_corpus_is_large_enough() -> None:
    assert len(CORPUS) >= 30


def test_every_non_model_key_has_a_rule() -> None:
    """A key added to a section without a range rule (and a --help line) fails here."""
    import dataclasses

    from trainer.config import TrainConfig
    from trainer.config_rules import RULES, SECTIONS

    cfg = TrainConfig()
    keys = {f"{s}.{f.name}" for s in SECTIONS for f in dataclasses.fields(getattr(cfg, s))}
    assert keys == set(RULES)
