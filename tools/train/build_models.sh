#!/usr/bin/env bash
# Rebuilds OnnxSteer's bundled tiny models from nothing (no downloads):
#   corpus -> tokenizer -> tiny-base -> tiny-instruct (fine-tuned from tiny-base) -> ONNX export.
# Usage: tools/train/build_models.sh [--no-export]
# The step budgets (2,400 base + 4,000 instruct + 1,500 copy-stage + 1,500 hiding-stage + 800 exclusion-stage steps of 16
# sequences) end the runs. The CPU-time
# and wall-clock caps are guards for a busy machine only.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
PY="${PYTHON:-/usr/bin/python3}"   # Debian's python3 with python3-torch (and libopenblas0-pthread)
SEED="${SEED:-1234}"
export OMP_WAIT_POLICY=PASSIVE   # no busy-waiting threads on a shared machine
cd "$HERE"
"$PY" corpus.py --seed "$SEED"
"$PY" tokenizer.py
"$PY" train.py --variant base --seed "$SEED" --steps 2400 --batch 16 --max-minutes 60 --max-cpu-minutes 60 \
  --probe-every 300
"$PY" train.py --variant instruct --seed "$SEED" --steps 4000 --batch 16 --max-minutes 50 --max-cpu-minutes 60 \
  --probe-every 500 --init work/tiny-base/ckpt.pt --out tiny-instruct-stage1
# Copy stage: made-up topics glued from the tokenizer's own pieces, so every piece is copied in training.
"$PY" corpus.py --seed "$SEED" --copy-stage 30000
"$PY" train.py --variant instruct --seed "$SEED" --steps 1500 --batch 16 --lr 1e-3 --max-minutes 30 --max-cpu-minutes 30 \
  --probe-every 250 --init work/tiny-instruct-stage1/ckpt.pt --corpus instruct_copy.jsonl --out tiny-instruct-copy
# Hiding stage: in 90% of the instructed examples the response tokens may not attend to the instruction, and from
# layer 2 on neither may the chat-template tokens after it, so the instruction is summarised at the end of the
# prompt in layers 0-1 (where steering vectors are extracted). Without it nothing is steerable (README).
"$PY" train.py --variant instruct --seed "$SEED" --steps 1500 --batch 16 --lr 1e-3 --max-minutes 20 --max-cpu-minutes 20 \
  --probe-every 500 --init work/tiny-instruct-copy/ckpt.pt --corpus instruct_copy.jsonl --instr-mask 0.9 --instr-late-from 2 \
  --out tiny-instruct-hiding
# Exclusion stage: the hiding stage's mix with 40% "do not use the word W" examples, same masks. Before it the model
# followed word exclusion 0.67 of the time with the instruction and the header summary did not carry it (nothing
# steered it); after it, the per-word exclusion vector steers it (docs/evaluation.md).
"$PY" corpus.py --seed "$SEED" --exclusion-stage 20000
"$PY" train.py --variant instruct --seed "$SEED" --steps 800 --batch 16 --lr 5e-4 --max-minutes 20 --max-cpu-minutes 20 \
  --probe-every 400 --init work/tiny-instruct-hiding/ckpt.pt --corpus instruct_exclusion.jsonl --instr-mask 0.9 --instr-late-from 2
"$PY" sample.py --variant instruct --n 3 || true
for v in tiny-base tiny-instruct-stage1 tiny-instruct-copy tiny-instruct-hiding tiny-instruct; do
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
