#!/usr/bin/env bash
# The main job on the embedded default, from a fresh clone:
#   1. set up .venv (scripts/setup.sh) if needed
#   2. generate the synthetic demo log and prepare it into a dataset folder (data/synthetic)
#   3. train SASRec with DistributedModelParallel on 2 ranks via `torchx run -s local_cwd dist.ddp -j 1x2`
#   4. evaluate the run on the test split (full ranking, every user)
# Options: --users N (synthetic users, default 20000), --epochs E (default 4), --fresh (regenerate the data).
set -euo pipefail
cd "$(dirname "$0")/.."

USERS=20000
EPOCHS=4
FRESH=0
while [[ $# -gt 0 ]]; do
  case "$1" in
    --users) USERS=$2; shift 2 ;;
    --epochs) EPOCHS=$2; shift 2 ;;
    --fresh) FRESH=1; shift ;;
    -h|--help) sed -n '2,8p' "$0"; exit 0 ;;
    *) echo "quickstart.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done

if [[ ! -x .venv/bin/python ]] || ! .venv/bin/python -c 'import torchrec, trainer' 2>/dev/null; then
  bash scripts/setup.sh
fi
export PATH="$PWD/.venv/bin:$PATH"

if [[ $FRESH == 1 || ! -f data/synthetic/manifest.json ]]; then
  echo "== generating a synthetic interaction log ($USERS users)"
  seqrec synth --output data/synthetic-raw --users "$USERS" --seed 7 --overwrite
  echo "== preparing it into a dataset folder"
  seqrec prepare --format synthetic data/synthetic-raw data/synthetic --overwrite
fi
seqrec inspect data/synthetic

APP=quickstart-$(date +%Y%m%d-%H%M%S)
echo "== training SASRec on 2 ranks (torchx dist.ddp, gloo on CPU)"
TORCHXCONFIG=torchx/.torchxconfig torchx run -s local_cwd dist.ddp -j 1x2 --script trainer/train.py -- \
  data.path=data/synthetic trainer.experiment=quickstart trainer.run_id="$APP" trainer.epochs="$EPOCHS" \
  trainer.progress=false trainer.log_every=100
RUN=outputs/quickstart/$APP
echo "== evaluating $RUN on the test split"
seqrec evaluate "$RUN" --split test
echo
echo "run folder:   $RUN"
echo "config:       $RUN/config.yaml"
echo "checkpoints:  $RUN/checkpoints/"
echo "metrics:      $RUN/metrics.json and $RUN/eval_test.json"
echo "TensorBoard:  .venv/bin/tensorboard --logdir $RUN/tb"
