#!/usr/bin/env bash
# Rebuilds OnnxSteer's bundled tiny models from nothing (no downloads):
#   corpus -> tokenizer -> tiny-base -> tiny-instruct (fine-tuned from tiny-base) -> ONNX export.
# Usage: tools/train/build_models.sh [--no-export]
# Expected time on 2 idle cores: about 27 minutes (6 + 19 minutes of training, wall-clock capped).
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
PY="${PYTHON:-/usr/bin/python3}"   # Debian's python3 with python3-torch (and libopenblas0-pthread)
SEED="${SEED:-1234}"
BASE_MIN="${BASE_MIN:-6}"
INSTRUCT_MIN="${INSTRUCT_MIN:-19}"
cd "$HERE"
"$PY" corpus.py --seed "$SEED"
"$PY" tokenizer.py
"$PY" train.py --variant base --seed "$SEED" --steps 400 --max-minutes "$BASE_MIN"
"$PY" train.py --variant instruct --seed "$SEED" --steps 1100 --max-minutes "$INSTRUCT_MIN" --init work/tiny-base/ckpt.pt
"$PY" sample.py --variant instruct --n 3 || true
if [[ "${1:-}" != "--no-export" ]]; then
  cd "$ROOT"
  for v in tiny-base tiny-instruct; do
    dotnet run --project tools/OnnxSteer.ModelBuilder -- export-llama \
      --weights "tools/train/work/$v/model.safetensors" --config "tools/train/work/$v/config.json" \
      --layout genai -o "models/$v"
  done
fi
