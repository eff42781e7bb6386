#!/usr/bin/env bash
# Create .venv and install everything seqrec needs, from nothing.
#   scripts/setup.sh          CPU build (default): torch 2.13.0, fbgemm-gpu-cpu 1.8.0, torchrec 1.8.0
#   scripts/setup.sh --gpu    CUDA builds of torch and fbgemm-gpu instead (not exercised by CI)
# Order matters: torchrec declares a dependency on the CUDA `fbgemm-gpu`, so it is installed with
# --no-deps after the matching fbgemm build, and its real needs are installed explicitly.
set -euo pipefail
cd "$(dirname "$0")/.."

GPU=0
for arg in "$@"; do
  case "$arg" in
    --gpu) GPU=1 ;;
    -h|--help) sed -n '2,6p' "$0"; exit 0 ;;
    *) echo "setup.sh: unknown option $arg (see --help)" >&2; exit 2 ;;
  esac
done

PY=${PYTHON:-python3}
if ! "$PY" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else 1)'; then
  echo "setup.sh: Python >= 3.10 is required ($("$PY" --version 2>&1))" >&2; exit 1
fi
# TorchServe's frontend is Java: 17 is what TorchServe 0.12 is built and tested with. Training does not need it.
JAVA_MAJOR=$(java -version 2>&1 | sed -nE '1s/.*version "([0-9]+).*/\1/p') || JAVA_MAJOR=""
if [ -z "$JAVA_MAJOR" ] || [ "$JAVA_MAJOR" -lt 17 ]; then
  echo "setup.sh: warning: Java 17 not found (java: ${JAVA_MAJOR:-none}); TorchServe (seqrec serve) needs it." \
       "Debian/Ubuntu: apt-get install openjdk-17-jre-headless" >&2
fi

# (Re)create the venv when missing or broken (e.g. an interrupted earlier run left it without pip).
if ! .venv/bin/python -m pip --version >/dev/null 2>&1; then
  rm -rf .venv
  "$PY" -m venv .venv
fi
PIP=(pip_install)
# torchrec's metadata asks for `fbgemm-gpu` (the CUDA build); on CPU we install `fbgemm-gpu-cpu` instead, on
# purpose, so every later pip call ends with "ERROR: pip's dependency resolver ... torchrec 1.8.0 requires
# fbgemm-gpu, which is not installed." (exit code 0). pip_install drops exactly that complaint and says why once;
# every other message and any failure are shown unchanged.
FBGEMM_NOTE=0
pip_install() {
  local err status=0
  err=$(mktemp)
  .venv/bin/python -m pip install --quiet --disable-pip-version-check "$@" 2>"$err" || status=$?
  if [[ $GPU == 0 ]] && grep -q "requires fbgemm-gpu, which is not installed" "$err"; then
    FBGEMM_NOTE=1
    grep -v -e "pip's dependency resolver does not currently take into account" \
            -e "requires fbgemm-gpu, which is not installed" "$err" >&2 || true
  else
    cat "$err" >&2
  fi
  rm -f "$err"
  return "$status"
}

TORCH_VERSION=2.13.0
FBGEMM_VERSION=1.8.0
TORCHREC_VERSION=1.8.0
if [[ $GPU == 1 ]]; then
  "${PIP[@]}" "torch==${TORCH_VERSION}" "fbgemm-gpu==${FBGEMM_VERSION}"
else
  "${PIP[@]}" "torch==${TORCH_VERSION}"
  "${PIP[@]}" "fbgemm-gpu-cpu==${FBGEMM_VERSION}"
fi
"${PIP[@]}" --no-deps "torchrec==${TORCHREC_VERSION}"
# torchrec's real runtime needs (its metadata asks for the CUDA fbgemm, hence --no-deps above)
"${PIP[@]}" tensordict "torchmetrics==1.0.3" tqdm pyre-extensions iopath
"${PIP[@]}" "torchx==0.7.0" "torchdata==0.11.0" pyarrow hydra-core tensorboard numpy \
  "torchserve==0.12.0" "torch-model-archiver==0.12.0" \
  pytest pytest-cov ruff
# torchx's Kubernetes scheduler (docs/cluster.md; its dry runs are tested); urllib3 stays below 2 for torchx 0.7.0
"${PIP[@]}" kubernetes "urllib3>=1.21.1,<1.27"
# research workflow (significance tests, report plots), ANN index, ONNX export of towers
"${PIP[@]}" scipy matplotlib faiss-cpu onnx onnxruntime
"${PIP[@]}" --no-deps --no-build-isolation -e .
if [[ $FBGEMM_NOTE == 1 ]]; then
  echo "setup.sh: note: pip's resolver complains that torchrec requires fbgemm-gpu (the CUDA build); the CPU build" \
       "fbgemm-gpu-cpu ${FBGEMM_VERSION} is installed instead, on purpose (message silenced; \`pip check\` shows it)"
fi
.venv/bin/python -c "import torch, fbgemm_gpu, torchrec, torchdata, pyarrow, hydra; print('seqrec environment ready: torch', torch.__version__, '| torchrec', torchrec.__version__)"
