#!/usr/bin/env bash
# Rebuilds OnnxSteer's bundled tiny models from nothing (no downloads):
#   corpus -> tokenizer -> tiny-base -> tiny-instruct (fine-tuned from tiny-base) -> ONNX export.
# Usage: tools/train/build_models.sh [--no-export]
# Training is capped by process CPU time (12 + 24 CPU-minutes = at most 18 minutes on 2 idle cores)
# and by wall-clock time (20 + 35 minutes, a guard for busy machines).
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
PY="${PYTHON:-/usr/bin/python3}"   # Debian's python3 with python3-torch (and libopenblas0-pthread)
SEED="${SEED:-1234}"
export OMP_WAIT_POLICY=PASSIVE   # no busy-waiting threads on a shared machine
cd "$HERE"
"$PY" corpus.py --seed "$SEED"
"$PY" tokenizer.py
"$PY" train.py --variant base --seed "$SEED" --steps 350 --batch 16 --max-minutes 20 --max-cpu-minutes 12
"$PY" train.py --variant instruct --seed "$SEED" --steps 750 --batch 16 --max-minutes 35 --max-cpu-minutes 24 \
  --init work/tiny-base/ckpt.pt
"$PY" sample.py --variant instruct --n 3 || true
if [[ "${1:-}" != "--no-export" ]]; then
  cd "$ROOT"
  for v in tiny-base tiny-instruct; do
    dotnet run --project tools/OnnxSteer.ModelBuilder -- export-llama \
      --weights "tools/train/work/$v/model.safetensors" --config "tools/train/work/$v/config.json" \
      --reference "tools/train/work/$v/reference.json" --layout genai -o "models/$v"
  done
fi
