"""Package an export folder as a TorchServe model archive (``.mar``) with torch-model-archiver.

The archive holds the TorchScript model as its serialized file, `serving/handler.py` as the handler, the id map
and metadata as extra files, and a ``model-config.yaml`` with the server-side batching (``batchSize``,
``maxBatchDelay``). The handler imports `serving.service`, so the server runs in an environment where seqrec is
installed; the model itself needs only torch + fbgemm.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from serving.drift import PROFILE_FILE
from serving.service import ID_MAP_FILE, METADATA_FILE, MODEL_FILE
from trainer.errors import ConfigError

MODEL_NAME = "seqrec"
# Server-side batching: best p99 at 1 and 32 concurrent clients on 2 cores (docs/benchmarks.md).
DEFAULT_BATCH_SIZE = 16
DEFAULT_MAX_BATCH_DELAY_MS = 1
HANDLER = Path(__file__).resolve().parent / "handler.py"


def model_config_yaml(batch_size: int, max_batch_delay_ms: int, response_timeout_s: int = 60) -> str:
    """TorchServe per-model settings archived with the model."""
    return (
        f"batchSize: {batch_size}\n"
        f"maxBatchDelay: {max_batch_delay_ms}\n"
        f"responseTimeout: {response_timeout_s}\n"
    )


def build_archive(
    export_dir: str | Path,
    output_dir: str | Path,
    batch_size: int = DEFAULT_BATCH_SIZE,
    max_batch_delay_ms: int = DEFAULT_MAX_BATCH_DELAY_MS,
    name: str = MODEL_NAME,
    version: str = "1.0",
    handler: Path = HANDLER,
    extra_files: tuple[str, ...] = (),
) -> Path:
    """Write ``<output_dir>/<name>.mar`` from an export folder; returns its path. ``handler`` and
    ``extra_files`` (names in the export folder) let another task archive its own handler and files."""
    export_dir, output_dir = Path(export_dir), Path(output_dir)
    missing = [f for f in (MODEL_FILE, ID_MAP_FILE, METADATA_FILE, *extra_files) if not (export_dir / f).is_file()]
    if missing:
        raise ConfigError(f"{export_dir}: not an export folder (missing {missing}); run `seqrec export` first")
    config = export_dir / "model-config.yaml"
    config.write_text(model_config_yaml(batch_size, max_batch_delay_ms))
    archiver = Path(sys.executable).parent / "torch-model-archiver"
    cmd = [
        str(archiver) if archiver.is_file() else "torch-model-archiver",
        "--model-name", name,
        "--version", version,
        "--serialized-file", str(export_dir / MODEL_FILE),
        "--handler", str(handler),
        "--extra-files", ",".join(str(export_dir / f) for f in (ID_MAP_FILE, METADATA_FILE, *extra_files, PROFILE_FILE)
                                  if (export_dir / f).is_file()),
        "--config-file", str(config),
        "--export-path", str(output_dir),
        "--force",
    ]
    output_dir.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise ConfigError(f"torch-model-archiver failed: {(result.stderr or result.stdout).strip()[-500:]}")
    return output_dir / f"{name}.mar"
