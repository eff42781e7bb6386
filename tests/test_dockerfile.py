"""The Dockerfile checked without a docker daemon: it parses into known instructions, every COPY source exists and
is not excluded by .dockerignore, the editable install finds every package, the only thing it runs from the
repository is scripts/setup.sh (with options setup.sh accepts), and the image's working directory holds the
script the torchx components launch."""

from __future__ import annotations

import fnmatch
import re
import shlex
import subprocess
from pathlib import Path

from tests.conftest import REPO

INSTRUCTIONS = {"ARG", "FROM", "ENV", "RUN", "WORKDIR", "COPY", "CMD", "LABEL", "USER", "EXPOSE", "ENTRYPOINT"}


def _instructions() -> list[tuple[str, str]]:
    """(instruction, arguments) per logical line: comments dropped, backslash continuations joined."""
    text = re.sub(r"\\\n", " ", (REPO / "Dockerfile").read_text())
    lines = [line.strip() for line in text.splitlines()]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines if line and line[0] != "#"]


def _ignored(path: str) -> bool:
    patterns = [p.strip() for p in (REPO / ".dockerignore").read_text().splitlines() if p.strip() and p[0] != "#"]
    return any(fnmatch.fnmatch(path.rstrip("/"), p) or path.startswith(f"{p}/") for p in patterns)


def test_dockerfile_parses_into_known_instructions() -> None:
    steps = _instructions()
    assert {name for name, _ in steps} <= INSTRUCTIONS
    froms = [args for name, args in steps if name == "FROM"]
    assert froms == ["${BASE}"]
    args = {a.split("=", 1)[0]: a.split("=", 1)[1].strip('"') for name, a in steps if name == "ARG" and "=" in a}
    assert args["BASE"].startswith("python:3.11") and args["TORCH_INDEX"].endswith("/whl/cpu")


def test_every_copy_source_exists_and_is_in_the_build_context() -> None:
    copies = [shlex.split(args) for name, args in _instructions() if name == "COPY"]
    sources = [src for argv in copies for src in argv[:-1]]
    assert sources
    for src in sources:
        assert (REPO / src).exists(), f"COPY {src}: not in the repository"
        assert not _ignored(src), f"COPY {src}: excluded by .dockerignore"
    copied = {src.rstrip("/") for src in sources}
    assert {"trainer", "modules", "serving", "configs", "torchx", "scripts", "pyproject.toml"} <= copied


def test_run_steps_use_only_the_repository_setup_script() -> None:
    runs = [args for name, args in _instructions() if name == "RUN"]
    repo_scripts = {m for args in runs for m in re.findall(r"scripts/[\w./-]+", args)}
    assert repo_scripts == {"scripts/setup.sh"}
    setup_run = next(args for args in runs if "scripts/setup.sh" in args)
    assert "${SETUP_ARGS}" in setup_run and "PIP_EXTRA_INDEX_URL=${TORCH_INDEX}" in setup_run
    assert subprocess.run(["bash", "-n", str(REPO / "scripts" / "setup.sh")]).returncode == 0
    assert "--gpu)" in (REPO / "scripts" / "setup.sh").read_text(), "SETUP_ARGS=--gpu must be a setup.sh option"


def test_workdir_holds_the_train_script_and_the_venv_is_on_path() -> None:
    steps = _instructions()
    (workdir,) = [args for name, args in steps if name == "WORKDIR"]
    assert workdir == "/opt/seqrec"
    assert any(name == "COPY" and args.split()[-1] == "trainer/" for name, args in steps)
    assert (REPO / "trainer" / "train.py").is_file()
    env = " ".join(args for name, args in steps if name == "ENV")
    assert "PATH=/opt/seqrec/.venv/bin:" in env and "TORCHXCONFIG=/opt/seqrec/torchx/.torchxconfig" in env
    assert Path(REPO / "torchx" / ".torchxconfig").is_file()
