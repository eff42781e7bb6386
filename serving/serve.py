"""Start or stop a locked-down TorchServe for an exported archive: ``seqrec serve --archive X.mar [--stop]``.

The server's state lives in a folder of its own (default: ``torchserve/`` next to the archive): the generated
``config.properties``, TorchServe's logs, its PID file and the ``key_file.json`` holding the access tokens.
The configuration:

* every API bound to 127.0.0.1; token authorisation ON (requests need ``Authorization: Bearer <key>``; the
  inference key is in ``key_file.json``, whose path is printed);
* the model-management API's register/unregister off (TorchServe's default, stated explicitly), models only from
  the local model store (``allowed_urls`` matches nothing remote), no config snapshots (``--ncs``: a later start
  never restores an earlier model set), no per-model pip installs;
* one worker per CPU core, each with one intra-op thread; server-side batching as archived in the ``.mar``
  (``batchSize``/``maxBatchDelay``); request bodies capped at 1 MiB; a lean Java frontend (serial GC, C1 JIT).

``start`` returns once the model reports a READY worker (polling the management API) or fails with the log tail.
TorchServe is in limited maintenance; the exported artefact itself (TorchScript + JSON) is server-agnostic.

Examples (the start prints the URL, the header to send, where the key is and when it expires):
  seqrec serve --archive outputs/<experiment>/<run_id>/export/seqrec.mar
  seqrec serve --archive outputs/<experiment>/<run_id>/export/seqrec.mar --curl
  seqrec serve --archive outputs/<experiment>/<run_id>/export/seqrec.mar --stop
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from serving.archive import MODEL_NAME
from trainer.errors import ConfigError

KEY_FILE = "key_file.json"
# Java frontend: serial GC and C1-only JIT leave the cores to the Python workers (C2's compiler threads and G1's
# concurrent GC compete with them on a small box). On 2 cores: single-request p99 11-13 -> 7-8 ms, 32 clients
# 42-63 -> 32-38 ms (docs/benchmarks.md).
DEFAULT_JVM_OPTIONS = "-XX:+UseSerialGC -XX:TieredStopAtLevel=1 -Xmx512m -XX:+ExitOnOutOfMemoryError"
MAX_REQUEST_BYTES = 1 << 20


@dataclasses.dataclass(kw_only=True)
class ServerConfig:
    """One TorchServe instance.

    Args:
        archive: the ``.mar`` to serve (its folder is the model store).
        state_dir: config, logs, PID and key files (default ``<archive folder>/torchserve``).
        port, management_port, metrics_port: loopback ports of the three APIs.
        workers: worker processes (default: CPU cores).
        model_name: the name requests use in ``/predictions/<name>``.
        jvm_options: options of the Java frontend (``vmargs``); empty keeps TorchServe's own.
        grpc_port, grpc_management_port: TorchServe's gRPC APIs (fixed at 7070/7071 unless set, so a second
            instance needs other ones too).
        key_expiry_min: minutes until the access keys expire (TorchServe's ``token_expiration_min``, default 60).
    """

    archive: Path
    state_dir: Path | None = None
    port: int = 8080
    management_port: int = 8081
    metrics_port: int = 8082
    workers: int | None = None
    model_name: str = MODEL_NAME
    jvm_options: str = DEFAULT_JVM_OPTIONS
    grpc_port: int = 7070
    grpc_management_port: int = 7071
    key_expiry_min: int = 60

    @property
    def ports(self) -> dict[str, int]:
        """Every port this instance binds, by the option that sets it."""
        return {"--port": self.port, "--management-port": self.management_port, "--metrics-port": self.metrics_port,
                "--grpc-port": self.grpc_port, "--grpc-management-port": self.grpc_management_port}

    @property
    def folder(self) -> Path:
        return Path(self.state_dir).resolve() if self.state_dir else Path(self.archive).resolve().parent / "torchserve"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def management_url(self) -> str:
        return f"http://127.0.0.1:{self.management_port}"


def config_properties(cfg: ServerConfig) -> str:
    """The locked-down ``config.properties`` text."""
    archive = Path(cfg.archive).resolve()
    workers = cfg.workers or os.cpu_count() or 1
    lines = {
        "inference_address": cfg.url,
        "management_address": cfg.management_url,
        "metrics_address": f"http://127.0.0.1:{cfg.metrics_port}",
        "model_store": str(archive.parent),
        "load_models": f"{cfg.model_name}={archive.name}",
        "default_workers_per_model": str(workers),
        "disable_token_authorization": "false",
        "enable_model_api": "false",
        "allowed_urls": f"file://{archive.parent}/.*",
        "install_py_dep_per_model": "false",
        "enable_envvars_config": "false",
        "max_request_size": str(MAX_REQUEST_BYTES),
        "max_response_size": str(4 * MAX_REQUEST_BYTES),
        "disable_system_metrics": "true",
        # the handler's custom drift gauges (serving.drift) are not in the default metrics config: without this
        # the frontend drops them instead of writing them to model_metrics.log
        "model_metrics_auto_detect": "true",
        "job_queue_size": "256",
        "grpc_inference_port": str(cfg.grpc_port),
        "grpc_management_port": str(cfg.grpc_management_port),
        "token_expiration_min": str(cfg.key_expiry_min),
    }
    if cfg.jvm_options:
        lines["vmargs"] = cfg.jvm_options
    return "".join(f"{key}={value}\n" for key, value in lines.items())


def _temp_dir(cfg: ServerConfig) -> Path:
    """This instance's temp folder: TorchServe keeps its PID file there (so `--stop` finds this instance and
    not another one on the machine) and Java its worker sockets, whose paths must stay under ~100 characters."""
    record = cfg.folder / "tmpdir"
    if record.is_file() and Path(record.read_text().strip()).is_dir():
        return Path(record.read_text().strip())
    local = cfg.folder / "tmp"
    path = local if len(str(local.resolve())) < 60 else Path(tempfile.mkdtemp(prefix="seqrec-ts-"))
    path.mkdir(parents=True, exist_ok=True)
    record.write_text(str(path) + "\n")
    return path


def _environment(cfg: ServerConfig) -> dict[str, str]:
    temp = str(_temp_dir(cfg))
    env = dict(os.environ)
    env.update(
        LOG_LOCATION=str(cfg.folder / "logs"),
        METRICS_LOCATION=str(cfg.folder / "logs"),
        TMPDIR=temp,
        TEMP=temp,
        OMP_NUM_THREADS="1",  # one intra-op thread per worker: workers = cores
    )
    return env


def _torchserve() -> str:
    local = Path(sys.executable).parent / "torchserve"
    found = str(local) if local.is_file() else shutil.which("torchserve")
    if not found:
        raise ConfigError("torchserve not found; install it with scripts/setup.sh (needs Java 17)")
    return found


def read_keys(state_dir: str | Path) -> dict[str, str]:
    """``{"inference", "management"}`` tokens from the instance's ``key_file.json``."""
    raw = json.loads((Path(state_dir) / KEY_FILE).read_text())
    return {name: raw[name]["key"] for name in ("inference", "management")}


def running_pid(cfg: ServerConfig) -> int | None:
    """The PID of the TorchServe started for ``cfg.folder`` if it still runs (its PID file is in its temp folder)."""
    record = cfg.folder / "tmpdir"
    if not record.is_file():
        return None
    pid_file = Path(record.read_text().strip()) / ".model_server.pid"
    try:
        pid = int(pid_file.read_text().split()[0])
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes() if Path("/proc").is_dir() else b"java"
        os.kill(pid, 0)
    except (OSError, ValueError, IndexError):
        return None
    return pid if b"java" in cmdline or b"torchserve" in cmdline else None


def busy_ports(cfg: ServerConfig) -> dict[str, int]:
    """The ports of ``cfg`` that something else already listens on (127.0.0.1)."""
    busy = {}
    for option, port in cfg.ports.items():
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                busy[option] = port
    return busy


def _check_can_start(cfg: ServerConfig) -> None:
    """Fail at once, before anything is written, when the archive is missing or the instance or ports are taken."""
    if not Path(cfg.archive).is_file():
        raise ConfigError(f"{cfg.archive}: archive not found (build it with `seqrec export RUN --archive`)")
    pid = running_pid(cfg)
    if pid is not None:
        raise ConfigError(f"TorchServe (pid {pid}) is already serving from {cfg.folder}; stop it with "
                          f"`seqrec serve --archive {cfg.archive} --stop` or pass another --state-dir")
    if len(set(cfg.ports.values())) < len(cfg.ports):
        raise ConfigError(f"the five ports must differ, got {cfg.ports}")
    busy = busy_ports(cfg)
    if busy:
        listed = ", ".join(f"{option} {port}" for option, port in busy.items())
        raise ConfigError(f"already in use on 127.0.0.1 (another TorchServe?): {listed}; pick free ports")


def start(cfg: ServerConfig, timeout_s: float = 120.0) -> dict[str, Any]:
    """Start TorchServe in the background and wait until the model has a READY worker."""
    _check_can_start(cfg)
    folder = cfg.folder
    (folder / "logs").mkdir(parents=True, exist_ok=True)
    (folder / KEY_FILE).unlink(missing_ok=True)
    (folder / "config.properties").write_text(config_properties(cfg))
    cmd = [_torchserve(), "--start", "--ncs", "--ts-config", str(folder / "config.properties")]
    # Output to a file, not a pipe: the Java server inherits it and would keep a pipe open forever.
    with open(folder / "logs" / "torchserve.out", "w") as out:
        code = subprocess.call(cmd, cwd=folder, env=_environment(cfg), stdout=out, stderr=subprocess.STDOUT)
    said = (folder / "logs" / "torchserve.out").read_text(errors="replace")
    if code != 0 or "already running" in said:
        raise ConfigError(f"torchserve did not start: {said.strip()[-400:]}")
    try:
        _wait_ready(cfg, timeout_s)
    except BaseException:
        stop(cfg)
        raise
    return {"url": cfg.url, "model": cfg.model_name, "key_file": str(folder / KEY_FILE), "logs": str(folder / "logs")}


def _wait_ready(cfg: ServerConfig, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        time.sleep(0.5)
        if not (cfg.folder / KEY_FILE).is_file():
            continue
        try:  # the key file may still be half-written
            request = urllib.request.Request(
                f"{cfg.management_url}/models/{cfg.model_name}",
                headers={"Authorization": f"Bearer {read_keys(cfg.folder)['management']}"},
            )
            with urllib.request.urlopen(request, timeout=2) as response:
                workers = json.loads(response.read())[0].get("workers", [])
        except (urllib.error.URLError, OSError, ValueError, KeyError, IndexError):
            continue
        if any(w.get("status") == "READY" for w in workers):
            return
    log = cfg.folder / "logs" / "model_log.log"
    tail = log.read_text(errors="replace")[-1500:] if log.is_file() else "(no model log)"
    raise ConfigError(f"model {cfg.model_name} not READY after {timeout_s:.0f} s; model log tail:\n{tail}")


def stop(cfg: ServerConfig, timeout_s: float = 30.0) -> None:
    """Stop the instance whose state is in ``cfg.folder`` (waits for the Java process to exit)."""
    folder = cfg.folder
    if not folder.is_dir():
        return
    cmd = [_torchserve(), "--stop", "--foreground"]
    (folder / "logs").mkdir(exist_ok=True)
    with open(folder / "logs" / "torchserve.out", "a") as out:
        subprocess.run(cmd, cwd=folder, env=_environment(cfg), stdout=out, stderr=subprocess.STDOUT,
                       timeout=timeout_s + 10, check=False)
    (folder / KEY_FILE).unlink(missing_ok=True)
    temp = _temp_dir(cfg)
    if folder.resolve() not in temp.resolve().parents:
        shutil.rmtree(temp, ignore_errors=True)
    (folder / "tmpdir").unlink(missing_ok=True)


def _inference_url(cfg: ServerConfig) -> str:
    """The inference address the running instance was started with (its config.properties), else ``cfg``'s."""
    props = cfg.folder / "config.properties"
    for line in props.read_text().splitlines() if props.is_file() else []:
        if line.startswith("inference_address="):
            return line.split("=", 1)[1].strip()
    return cfg.url


def curl_command(cfg: ServerConfig) -> str:
    """A ready ``curl`` request for the running instance: its URL, its current inference key, real item ids."""
    if running_pid(cfg) is None or not (cfg.folder / KEY_FILE).is_file():
        raise ConfigError(f"no TorchServe is running from {cfg.folder}; start it with "
                          f"`seqrec serve --archive {cfg.archive}`")
    id_map = Path(cfg.archive).resolve().parent / "id_map.json"
    items = json.loads(id_map.read_text())["raw_ids"][:3] if id_map.is_file() else ["ITEM_1", "ITEM_2"]
    body = json.dumps({"history": [str(x) for x in items], "k": 10, "exclude_seen": True})
    return (f"curl -s {_inference_url(cfg)}/predictions/{cfg.model_name} "
            f"-H 'Authorization: Bearer {read_keys(cfg.folder)['inference']}' "
            f"-H 'Content-Type: application/json' -d '{body}'")


def _selector(cfg: ServerConfig) -> str:
    """The options that name this instance again (archive, and the state folder when not the default)."""
    return f"--archive {cfg.archive}" + (f" --state-dir {cfg.state_dir}" if cfg.state_dir else "")


def how_to_call(cfg: ServerConfig, info: dict[str, Any]) -> str:
    """What a client needs: the URL, the header, where the key is, when it expires and how to renew it."""
    key_file = info["key_file"]
    return "\n".join([
        f"serving {info['model']} at {info['url']}/predictions/{info['model']}",
        "send: POST a JSON body {\"history\": [raw item ids, oldest first], \"k\": 10, \"exclude_seen\": true} "
        "with 'Content-Type: application/json' and 'Authorization: Bearer <inference key>'",
        f"the inference key: the \"inference\" -> \"key\" entry of {key_file}",
        f"keys expire {cfg.key_expiry_min} minutes after start (a stale key gets HTTP 400); set --key-expiry-min, "
        "or renew it (the file then holds the new one): curl '" + cfg.management_url + "/token?type=inference' "
        "-H 'Authorization: Bearer <\"API\" key of the same file>'",
        f"a ready request: seqrec serve {_selector(cfg)} --curl",
        f"logs: {info['logs']}; stop with: seqrec serve {_selector(cfg)} --stop",
    ])


# ------------------------------------------------------------------------------------------------- the command
def add_arguments(parser: Any) -> None:
    """``seqrec serve`` arguments."""
    parser.add_argument("--archive", type=Path, required=True, help="the .mar built by `seqrec export --archive`")
    parser.add_argument("--state-dir", type=Path, help="config/logs/key file folder (default: next to the archive)")
    parser.add_argument("--port", type=int, default=8080, help="inference API port on 127.0.0.1")
    parser.add_argument("--management-port", type=int, default=8081, help="management API port on 127.0.0.1")
    parser.add_argument("--metrics-port", type=int, default=8082, help="metrics API port on 127.0.0.1")
    parser.add_argument("--workers", type=int, help="worker processes (default: CPU cores)")
    parser.add_argument("--jvm-options", default=DEFAULT_JVM_OPTIONS,
                        help="options of TorchServe's Java frontend ('' = TorchServe's own; default: %(default)s)")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for the model to be READY")
    parser.add_argument("--grpc-port", type=int, default=7070, help="gRPC inference API port on 127.0.0.1")
    parser.add_argument("--grpc-management-port", type=int, default=7071, help="gRPC management API port")
    parser.add_argument("--key-expiry-min", type=int, default=60,
                        help="minutes until the access keys expire (TorchServe's default: %(default)s)")
    action = parser.add_mutually_exclusive_group()
    action.add_argument("--stop", action="store_true", help="stop the server started for this archive")
    action.add_argument("--curl", action="store_true", help="print a ready curl request for the running server")


def run(args: Any) -> int:
    """Start (and wait for READY), stop, or print a ready request."""
    if args.key_expiry_min < 1:
        raise ConfigError(f"--key-expiry-min must be >= 1, got {args.key_expiry_min}")
    cfg = ServerConfig(
        archive=args.archive,
        state_dir=args.state_dir,
        port=args.port,
        management_port=args.management_port,
        metrics_port=args.metrics_port,
        workers=args.workers,
        jvm_options=args.jvm_options,
        grpc_port=args.grpc_port,
        grpc_management_port=args.grpc_management_port,
        key_expiry_min=args.key_expiry_min,
    )
    if args.curl:
        print(curl_command(cfg))
        return 0
    if args.stop:
        if running_pid(cfg) is None:
            raise ConfigError(f"no TorchServe is running from {cfg.folder}; nothing to stop")
        stop(cfg)
        print(f"torchserve stopped ({cfg.folder})")
        return 0
    print(how_to_call(cfg, start(cfg, args.timeout)))
    return 0
