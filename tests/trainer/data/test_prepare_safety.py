"""`seqrec prepare` never deletes or overwrites its own input, and a permission or disk-full error is one line that
leaves nothing half-written (through the real CLI, in this process and in a file-size-limited child process)."""

from __future__ import annotations

import hashlib
import os
import resource
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO
from trainer.cli import main


def _raw(folder: Path, users: int = 40) -> Path:
    """A SASRec-format log (``user item`` per line) in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    lines = [f"{u} {(u * 7 + t) % 50 + 1}" for u in range(1, users + 1) for t in range(6)]
    (folder / "log.txt").write_text("\n".join(lines) + "\n")
    return folder / "log.txt"


def _digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _one_line_error(capsys: pytest.CaptureFixture, code: int) -> str:
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and err.startswith("error: "), err
    return err


@pytest.mark.parametrize(("input_of", "output_of", "word"), [
    (lambda raw: raw.parent, lambda raw: raw.parent, "is the input"),
    (lambda raw: raw.parent, lambda raw: raw.parent / "sub" / "ds", "is inside the input"),
    (lambda raw: raw, lambda raw: raw.parent, "contains the input"),
    (lambda raw: raw, lambda raw: raw.parent.parent, "contains the input"),
], ids=["output-is-input", "output-inside-input", "output-contains-input-file", "output-contains-input-folder"])
def test_prepare_refuses_to_replace_its_own_input(tmp_path: Path, capsys: pytest.CaptureFixture, input_of, output_of,
                                                  word: str) -> None:
    raw = _raw(tmp_path / "data" / "raw")
    before = _digest(tmp_path)
    code = main(["prepare", "--format", "sasrec", "--overwrite", str(input_of(raw)), str(output_of(raw))])
    assert word in _one_line_error(capsys, code)
    assert _digest(tmp_path) == before  # nothing deleted, nothing added


def test_permission_error_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    raw = _raw(tmp_path / "raw")
    code = main(["prepare", "--format", "sasrec", str(raw), "/sys/seqrec-cannot-write/ds"])  # sysfs refuses mkdir
    assert "not permitted" in _one_line_error(capsys, code).lower()


def _limit_file_size() -> None:
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit then fails with EFBIG, like a full disk
    resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, 20_000))


def test_a_full_disk_is_one_line_and_leaves_nothing(tmp_path: Path) -> None:
    raw = _raw(tmp_path / "raw", users=4000)
    parent = tmp_path / "datasets"
    parent.mkdir()
    proc = subprocess.run([sys.executable, "-m", "trainer.cli", "prepare", "--format", "sasrec", str(raw),
                           str(parent / "ds")], cwd=REPO, capture_output=True, text=True, timeout=300,
                          preexec_fn=_limit_file_size, env={**os.environ, "OMP_NUM_THREADS": "1"})
    # the command's own error lines (a coverage-measured run's exit hook also fails to save under the size limit)
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert proc.returncode == 2 and len(errors) == 1 and "too large" in errors[0].lower(), proc.stderr[-2000:]
    assert errors[0].startswith("error: ") and "nothing was written" in errors[0]
    assert list(parent.iterdir()) == []  # neither the dataset nor its temporary folder
