# seqrec image: the repository at /opt/seqrec with the pinned stack installed by scripts/setup.sh.
#
#   CPU (default):  docker build -t seqrec:cpu .
#   CUDA:           docker build --build-arg BASE=nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04 \
#                     --build-arg SETUP_ARGS=--gpu --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu128 \
#                     -t seqrec:cuda .
#   check:          docker run --rm seqrec:cpu seqrec --help
#
# The image's working directory is the repository, so torchx components launch `trainer/train.py` as they do
# from a checkout (docs/cluster.md). Data and run folders are mounted volumes, never baked in.
ARG BASE=python:3.11-slim-bookworm
FROM ${BASE}

# --gpu: CUDA builds of torch and fbgemm-gpu (scripts/setup.sh --help)
ARG SETUP_ARGS=""
# where pip finds torch 2.13.0: PyPI's Linux wheel is the CUDA build, the CPU image wants the +cpu one
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    DEBIAN_FRONTEND=noninteractive

# Java 17 for TorchServe; Python with venv where the base image has none (the CUDA bases)
RUN apt-get update \
    && apt-get install -y --no-install-recommends openjdk-17-jre-headless ca-certificates \
    && if ! command -v python3 >/dev/null; then apt-get install -y --no-install-recommends python3 python3-venv; fi \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/seqrec
# setup.sh ends with an editable install of the repository, so the packages come first
COPY pyproject.toml README.md ./
COPY modules/ modules/
COPY trainer/ trainer/
COPY serving/ serving/
COPY configs/ configs/
COPY torchx/ torchx/
COPY scripts/ scripts/
RUN PIP_EXTRA_INDEX_URL=${TORCH_INDEX} bash scripts/setup.sh ${SETUP_ARGS}

ENV PATH=/opt/seqrec/.venv/bin:${PATH} \
    TORCHXCONFIG=/opt/seqrec/torchx/.torchxconfig
CMD ["seqrec", "--help"]
