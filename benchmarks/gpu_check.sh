#!/usr/bin/env bash
# One GPU, a few minutes: the GPU suite and the GPU-only checks.
#
#   bash benchmarks/gpu_check.sh [OUT_DIR]        (default: $OUT, else gpu-check-out)
#
# Uses $PYTHON (default: .venv/bin/python if present, else python3) with torch
# (CUDA), timm, tokenizers, scikit-learn, matplotlib and tqdm importable; mmzoo
# is taken from this checkout (PYTHONPATH), no install or network needed.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT_DIR="${1:-${OUT:-gpu-check-out}}"
mkdir -p "$OUT_DIR"
if [ -z "${PYTHON:-}" ]; then
  if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
status=0
step() { echo; echo "=== $* ($(date +%T))"; }

step "environment"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 | tee "$OUT_DIR/nvidia-smi.txt"
"$PYTHON" - <<'PY' || { echo "FATAL: python environment not usable"; exit 2; }
import torch, timm, tokenizers, sklearn, matplotlib, tqdm
print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available())
assert torch.cuda.is_available(), "torch sees no GPU"
print("device", torch.cuda.get_device_name(), "bf16", torch.cuda.is_bf16_supported())
PY

step "fit on cuda: bf16 and fp16 autocast, checkpoint, reload, missing-input eval"
"$PYTHON" - <<'PY' 2>&1 | tee "$OUT_DIR/fit-check.txt" || status=1
import tempfile, torch, mmzoo
from mmzoo.train import fit, evaluate
splits = mmzoo.get_task("digits-pair", limit=600).splits()
for precision in ("bf16", "fp16"):
    torch.manual_seed(0)
    m = mmzoo.create("resnet18+lstm(hidden_size=64,vocab_size=600)/concat", num_classes=10)
    with tempfile.TemporaryDirectory() as d:
        r = fit(m, splits["train"], splits["val"], epochs=3, batch_size=64, precision=precision,
                device="cuda", out=d, progress=False)
        loaded = mmzoo.load(d).cuda()
        acc = evaluate(loaded, splits["test"], device="cuda")["accuracy"]
    print(precision, "val", round(r.best_score, 3), "reloaded test acc", round(acc, 3),
          "train samples/s", round(r.train_samples_per_s), "first step s", round(r.first_step_s, 2))
    assert r.history[-1]["train_loss"] == r.history[-1]["train_loss"], "NaN loss"
    print("  w/o text", evaluate(m, splits["test"], device="cuda", drop=("text",))["accuracy"])
PY

step "torchrun + nccl (1 process): mmzoo train"
"$PYTHON" -m torch.distributed.run --standalone --nproc_per_node=1 -m mmzoo.cli train \
  "cnn(channels=(16,32),img_size=8)+lstm(hidden_size=32,embed_dim=32,vocab_size=300)/bilinear" \
  --task digits-sum --epochs 3 --batch-size 64 --lr 0.003 --device cuda --no-progress \
  --out "$OUT_DIR/ddp-ckpt" 2>&1 | tail -20 | tee "$OUT_DIR/torchrun.txt" || status=1

step "GPU suite (benchmarks/gpu.toml)"
"$PYTHON" -m mmzoo.cli bench --suite benchmarks/gpu.toml --out "$OUT_DIR/gpu.jsonl" \
  --leaderboard "$OUT_DIR/gpu" 2>&1 | tee "$OUT_DIR/bench.txt" || status=1

step "overhead (assembled vs hand-written, load vs build+load_file)"
"$PYTHON" benchmarks/overhead.py --device cuda 2>&1 | tee "$OUT_DIR/overhead.txt" || status=1

step "done: status $status; results in $OUT_DIR"
exit $status
