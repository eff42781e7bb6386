#!/usr/bin/env bash
# The main job on the embedded default, from a fresh clone:
#   1. set up .venv (scripts/setup.sh) if needed
#   2. generate the synthetic demo log and prepare it into a dataset folder (data/synthetic)
#   3. train SASRec with DistributedModelParallel on 2 ranks via `torchx run -s local_cwd dist.ddp -j 1x2`
#   4. evaluate the run on the test split (full ranking, every user)
#   5. export it INT8-quantized into a TorchServe archive, start a locked-down TorchServe on 127.0.0.1,
#      ask it for recommendations for one user, print them, and stop the server
# Options: --users N (synthetic users, default 20000), --epochs E (default 4), --fresh (regenerate the data),
#          --port P (TorchServe on 127.0.0.1 ports P..P+4: inference, management, metrics, gRPC x2; default 8080).
set -euo pipefail
cd "$(dirname "$0")/.."

USERS=20000
EPOCHS=4
FRESH=0
PORT=8080
while [[ $# -gt 0 ]]; do
  case "$1" in
    --users) USERS=$2; shift 2 ;;
    --epochs) EPOCHS=$2; shift 2 ;;
    --fresh) FRESH=1; shift ;;
    --port) PORT=$2; shift 2 ;;
    -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
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
echo "== exporting (INT8 tables + dense layers where faster) into a TorchServe archive"
seqrec export "$RUN" --archive --overwrite
MAR=$RUN/export/seqrec.mar
STATE=$RUN/export/torchserve
echo "== starting TorchServe (127.0.0.1, token auth on)"
trap 'seqrec serve --archive "$MAR" --state-dir "$STATE" --stop >/dev/null 2>&1 || true' EXIT
seqrec serve --archive "$MAR" --state-dir "$STATE" --port "$PORT" --management-port $((PORT + 1)) \
  --metrics-port $((PORT + 2)) --grpc-port $((PORT + 3)) --grpc-management-port $((PORT + 4))
echo "== asking for the top 10 items of the first user in the dataset"
python - "$STATE" "$PORT" <<'PY'
import json, sys, urllib.request
import pyarrow.parquet as pq
from serving.serve import read_keys

state = sys.argv[1]
items = pq.read_table("data/synthetic/items.parquet", columns=["raw_id"]).column("raw_id").to_pylist()
user = pq.read_table("data/synthetic/sequences.parquet", columns=["items", "valid_end"]).slice(0, 1).to_pylist()[0]
history = [items[i - 1] for i in user["items"][: user["valid_end"]]][-20:]
body = json.dumps({"history": history, "k": 10, "exclude_seen": True}).encode()
request = urllib.request.Request(
    f"http://127.0.0.1:{sys.argv[2]}/predictions/seqrec", data=body, method="POST",
    headers={"Content-Type": "application/json", "Authorization": f"Bearer {read_keys(state)['inference']}"},
)
with urllib.request.urlopen(request, timeout=30) as response:
    answer = json.loads(response.read())
print("history (last 20):", history)
print("recommended:", answer["items"])
print("scores:", [round(s, 3) for s in answer["scores"]])
PY
seqrec serve --archive "$MAR" --state-dir "$STATE" --stop
trap - EXIT
echo
echo "run folder:   $RUN"
echo "config:       $RUN/config.yaml"
echo "checkpoints:  $RUN/checkpoints/"
echo "metrics:      $RUN/metrics.json and $RUN/eval_test.json"
echo "TensorBoard:  .venv/bin/tensorboard --logdir $RUN/tb"
echo "export:       $RUN/export (model.pt TorchScript, id_map.json, metadata.json with fp32 vs INT8 NDCG/size/latency)"
