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
for v in tiny-base tiny-instruct; do
  mkdir -p "results/$v"
  cp "work/$v/train_log.json" "work/$v/train.log" "work/$v/reference.json" "results/$v/"
done
if [[ "${1:-}" != "--no-export" ]]; then
  cd "$ROOT"
  export_llama() {  # $1 variant, $2 layout, $3 output folder; fails if the ONNX logits differ from reference.json
    dotnet run --project tools/OnnxSteer.ModelBuilder -- export-llama \
      --weights "tools/train/work/$1/model.safetensors" --config "tools/train/work/$1/config.json" \
      --reference "tools/train/work/$1/reference.json" --layout "$2" -o "$3"
  }
  export_llama tiny-base genai models/tiny-base
  export_llama tiny-instruct genai models/tiny-instruct
  export_llama tiny-instruct optimum models/tiny-instruct-optimum
fi
