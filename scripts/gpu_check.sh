#!/usr/bin/env bash
# The GPU path in a few minutes, on a machine set up with `scripts/setup.sh --gpu`:
#   1. SDPA vs the naive softmax(QK^T)V attention, bf16 on the GPU: time per call and the ratio
#   2. a small synthetic dataset (seqrec synth + prepare) in a temporary folder
#   3. SASRec for a few steps on every visible GPU (up to 2) with torchrun: NCCL, row-wise sharded tables with
#      FBGEMM's fused Adam (GPU only), bf16 autocast; checks the loss went down and prints the sharding plan
# Without a CUDA GPU it prints why and exits 0, so CPU CI can call it. Options: --steps N (default 60).
set -euo pipefail
cd "$(dirname "$0")/.."

STEPS=60
while [[ $# -gt 0 ]]; do
  case "$1" in
    --steps) STEPS=$2; shift 2 ;;
    -h|--help) sed -n '2,7p' "$0"; exit 0 ;;
    *) echo "gpu_check.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done

PY=${PYTHON:-.venv/bin/python}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PATH="$(dirname "$PY"):$PATH"
GPUS=$("$PY" -c 'import torch; print(torch.cuda.device_count() if torch.cuda.is_available() else 0)')
if [[ "$GPUS" == 0 ]]; then
  echo "gpu_check: skipping, no CUDA GPU visible to torch $("$PY" -c 'import torch; print(torch.__version__)')"
  exit 0
fi
RANKS=$(( GPUS < 2 ? GPUS : 2 ))
"$PY" -c 'import torch; print("gpu_check:", torch.cuda.get_device_name(0), "| torch", torch.__version__,
  "| cuda", torch.version.cuda, "| nccl", torch.cuda.nccl.version())'

echo "gpu_check: 1/3 attention timing (bf16, batch 64, 2 heads, length 200, head dim 64)"
"$PY" - <<'EOF'
import torch
import torch.nn.functional as F

def naive(q, k, v):
    scores = (q @ k.transpose(-2, -1)) / q.shape[-1] ** 0.5
    mask = torch.ones(q.shape[-2], k.shape[-2], dtype=torch.bool, device=q.device).triu(1)
    return scores.masked_fill(mask, float("-inf")).softmax(-1) @ v

def per_call_ms(fn, *args, repeats=50):
    for _ in range(5):
        fn(*args)
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(repeats):
        fn(*args)
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / repeats

q, k, v = (torch.randn(64, 2, 200, 64, device="cuda", dtype=torch.bfloat16) for _ in range(3))
sdpa = lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True)  # noqa: E731
error = (sdpa(q, k, v).float() - naive(q, k, v).float()).abs().max().item()
fast, slow = per_call_ms(sdpa, q, k, v), per_call_ms(naive, q, k, v)
print(f"sdpa {fast:.3f} ms, naive {slow:.3f} ms per call: {slow / fast:.2f}x; max abs difference {error:.2e}")
assert error < 5e-2, "SDPA and the naive attention disagree"
EOF

WORK=$(mktemp -d "${TMPDIR:-/tmp}/seqrec-gpu-check.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
echo "gpu_check: 2/3 synthetic data in $WORK"
"$PY" -m trainer.cli synth --output "$WORK/raw" --users 20000 --items 5000 >/dev/null
"$PY" -m trainer.cli prepare --format synthetic "$WORK/raw" "$WORK/data" >/dev/null

echo "gpu_check: 3/3 $STEPS training steps on $RANKS GPU rank(s): nccl, fused Adam tables, bf16 autocast"
"$PY" -m torch.distributed.run --standalone --nproc-per-node "$RANKS" trainer/train.py \
  "data.path=$WORK/data" "trainer.output_dir=$WORK/runs" trainer.run_id=gpu "trainer.max_steps=$STEPS" \
  trainer.epochs=1 trainer.eval_every_epochs=0 trainer.sharding=row_wise trainer.bf16=true trainer.progress=false \
  optim.sparse_optimizer=adam optim.sparse_lr=0.001 optim.warmup_steps=0 trainer.log_every=20
"$PY" - "$WORK/runs/default/gpu" <<'EOF'
import json, sys
from pathlib import Path

run = Path(sys.argv[1])
metrics = json.loads((run / "metrics.json").read_text())
plan = json.loads((run / "plan.json").read_text())
losses = metrics["train_losses"]
first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
for table in plan["tables"]:
    print(f"table {table['table']}: {table['sharding_type']} on ranks {table['ranks']}, kernel {table['compute_kernel']}")
print(f"loss {first:.4f} -> {last:.4f}; {metrics['throughput']['sequences_per_s']:.0f} sequences/s on "
      f"{metrics['throughput']['world_size']} rank(s); test NDCG@10 {metrics['test']['ndcg@10']:.4f}")
assert last < first, "the loss did not go down"
print("gpu_check: OK")
EOF
