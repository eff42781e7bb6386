"""`seqrec serve` as a user meets it: how to call it, a ready curl request, a second start refused at once, and a
stop with nothing running said so (a real TorchServe on 127.0.0.1)."""

from __future__ import annotations

import datetime
import json
import subprocess
import time
from pathlib import Path

import pytest

from serving.export import ExportConfig, export_run
from tests.conftest import train_overrides
from trainer.cli import main as seqrec
from trainer.config import load_config
from trainer.distributed import free_port
from trainer.train import run_training

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _ports() -> list[str]:
    ports = sorted({free_port() for _ in range(5)})
    assert len(ports) == 5
    names = ("--port", "--management-port", "--metrics-port", "--grpc-port", "--grpc-management-port")
    return [x for name, port in zip(names, ports) for x in (name, str(port))]


def _check_expiry_and_renewal(key_file: Path, said: str, minutes: int) -> None:
    """The key expires when we said, and the renewal command printed at start gives a new key."""
    entry = json.loads(key_file.read_text())["inference"]
    stamps = [v for v in entry.values() if isinstance(v, str) and v[:2] == "20"]
    expires = datetime.datetime.fromisoformat(stamps[0].replace("Z", "+00:00"))
    left = (expires - datetime.datetime.now(datetime.timezone.utc)).total_seconds() / 60
    assert minutes - 3 < left <= minutes + 1, entry
    renew = next(line for line in said.splitlines() if "/token?type=inference" in line)
    command = renew[renew.index("curl "):].replace('<"API" key of the same file>',
                                                    json.loads(key_file.read_text())["API"]["key"])
    subprocess.run(["bash", "-c", command], capture_output=True, check=True, timeout=30)
    assert json.loads(key_file.read_text())["inference"]["key"] != entry["key"]


def test_serve_explains_itself_and_refuses_what_it_cannot_do(
    tiny_dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    result = run_training(load_config(train_overrides(tiny_dataset, tmp_path, "trainer.run_id=s",
                                                      "trainer.test_at_end=false", "trainer.max_steps=3")))
    meta = export_run(ExportConfig(run=Path(result["run_dir"]), output=tmp_path / "export", evaluate=False,
                                   archive=True))
    archive = ["--archive", meta["archive"]]
    ports = _ports()
    assert seqrec(["serve", *archive, "--stop"]) == 2  # nothing running yet
    assert "nothing to stop" in capsys.readouterr().err
    try:
        assert seqrec(["serve", *archive, *ports, "--workers", "1", "--key-expiry-min", "30"]) == 0
        said = capsys.readouterr().out
        key_file = Path(meta["output"]) / "torchserve" / "key_file.json"
        assert "Authorization: Bearer <inference key>" in said and str(key_file) in said
        assert "expire 30 minutes after start" in said and "--key-expiry-min" in said and "--curl" in said
        started = time.monotonic()
        assert seqrec(["serve", *archive, *_ports()]) == 2  # the same state folder: refused at once
        err = capsys.readouterr().err
        assert "already serving" in err and "--stop" in err and time.monotonic() - started < 10
        other = ["--state-dir", str(tmp_path / "other")]
        assert seqrec(["serve", *archive, *other, *ports]) == 2  # another folder, the same ports
        assert "already in use on 127.0.0.1" in capsys.readouterr().err and not (tmp_path / "other").exists()
        assert seqrec(["serve", *archive, "--curl"]) == 0
        curl = capsys.readouterr().out.strip()
        assert json.loads(key_file.read_text())["inference"]["key"] in curl
        answer = subprocess.run(["bash", "-c", curl], capture_output=True, text=True, timeout=60)
        assert len(json.loads(answer.stdout)["items"]) == 10
        _check_expiry_and_renewal(key_file, said, 30)
    finally:
        stopped = seqrec(["serve", *archive, "--stop"])
    assert stopped == 0
    assert seqrec(["serve", *archive, "--stop"]) == 2
