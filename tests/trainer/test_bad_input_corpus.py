"""The corpus of bad data files (tests/corpus/data.json, written out per test) and bad configurations (tests/corpus/configs.json) through the
real `seqrec` CLI: each exits 2 with one line naming what to change, and leaves nothing behind."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.corpus import CORPUS
from trainer.cli import main

DATA = json.loads((CORPUS / "data.json").read_text())
CONFIGS = json.loads((CORPUS / "configs.json").read_text())


def _one_line(capsys: pytest.CaptureFixture, code: int) -> str:
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error: ")]
    assert code == 2 and len(err) == 1, err
    return err[0]


def _write(case: dict, folder: Path) -> Path:
    """The case's bad file (``text``, or ``hex`` for bytes that are not text) under ``folder``; what to prepare."""
    path = folder / case["file"]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(bytes.fromhex(case["hex"]) if "hex" in case else case["text"].encode())
    return folder / case.get("input", case["file"])


@pytest.mark.parametrize("case", DATA, ids=[c["file"] for c in DATA])
def test_bad_data_file_is_one_line_and_leaves_nothing(case: dict, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture) -> None:
    source = _write(case, tmp_path / "in")
    code = main(["prepare", "--format", case["format"], str(source), str(tmp_path / "out" / "ds")])
    line = _one_line(capsys, code)
    assert all(fragment in line for fragment in case["expect"]), line
    assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []


@pytest.mark.parametrize("case", CONFIGS, ids=[" ".join(c["overrides"]) for c in CONFIGS])
def test_bad_configuration_is_one_line_and_creates_nothing(case: dict, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture) -> None:
    code = main(["train", f"trainer.output_dir={tmp_path / 'out'}", *case["overrides"]])
    line = _one_line(capsys, code)
    assert all(fragment in line for fragment in case["expect"]), line
    assert not (tmp_path / "out").exists()
