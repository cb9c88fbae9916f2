#!/usr/bin/env bash
# Reproduces docs/evaluation.md: patch the bundled models, extract every instruction vector from the training-topic
# pairs, choose layer/mode/weight per instruction on the VALIDATION split, then evaluate on the TEST split
# (instruct model, and the transfer to the base model with the instruct model's vectors).
# Usage: tools/eval/reproduce.sh [WORKDIR]   (default: a fresh temporary folder; outputs go to docs/evaluation/)
set -euo pipefail
cd "$(dirname "$0")/../.."
W="${1:-$(mktemp -d -t onnxsteer-eval-XXXXXX)}"
OUT="${OUT:-docs/evaluation}"
BATCH="${BATCH:-8}"
MODELS="${MODELS:-models}"   # folder with tiny-instruct/, tiny-base/ and data/
# Sizes: the whole validation split (10 prompts per instruction; the paper uses 6-10), additive weights 2x, 4x and 8x
# |u_L|, the whole test split (50 prompts per instruction = 550 prompts, plus the 20 two-instruction prompts), 96 new
# tokens. The sweep and both evals take a few minutes on the shared 2-core machine.
VAL_LIMIT="${VAL_LIMIT:-10}"; TEST_LIMIT="${TEST_LIMIT:-50}"; SCALES="${SCALES:-2,4,8}"; TOKENS="${TOKENS:-96}"
mkdir -p "$W/vectors" "$OUT"
if [ -z "${ONNXSTEER:-}" ]; then
  dotnet build src/OnnxSteer.Cli -c Release -v q -nologo >/dev/null
  ONNXSTEER="dotnet src/OnnxSteer.Cli/bin/Release/net10.0/OnnxSteer.Cli.dll"
fi

if [ -z "${SKIP_PREP:-}" ]; then   # SKIP_PREP=1 reuses the patched models and vectors already in WORKDIR
# 1. Patch both models (required steering inputs; hidden states of every layer exposed).
$ONNXSTEER patch "$MODELS/tiny-instruct" -o "$W/instruct" --steer-input required --overwrite
$ONNXSTEER patch "$MODELS/tiny-base" -o "$W/base" --steer-input required --overwrite

# 2. One vector per pairs file, named after it, at every layer (instruct model), plus one per answer-header position
# (--header-positions template: the 5 tokens the chat template puts after the user's message), which the sweep tries as
# header steering next to the paper's projection and additive steering.
for pairs in "$MODELS"/data/pairs/*.jsonl; do
  name="$(basename "$pairs" .jsonl)"
  $ONNXSTEER extract "$W/instruct" --pairs "$pairs" --name "$name" -o "$W/vectors/$name.safetensors" --header-positions template --overwrite
done
fi

# 3. Sweep on validation prompts (validation topics; disjoint from the pairs' training topics).
$ONNXSTEER sweep "$W/instruct" --data "$MODELS"/data/eval/validation.jsonl --vectors "$W/vectors" --batch-size "$BATCH" \
  --limit "$VAL_LIMIT" --scales "$SCALES" --max-new-tokens "$TOKENS" --objective guarded -o "$OUT/selection.json" --plot "$OUT/sweep.svg" --json-out "$W/sweep.json" --overwrite > "$OUT/sweep.md"

# 4. Test split: the paper's four settings, instruct model; then the base model with the instruct vectors (transfer).
$ONNXSTEER eval "$W/instruct" --data "$MODELS"/data/eval/test.jsonl --vectors "$W/vectors" --batch-size "$BATCH" --selection "$OUT/selection.json" \
  --limit "$TEST_LIMIT" --max-new-tokens "$TOKENS" \
  --plot "$OUT/test-instruct.svg" --json-out "$W/test-instruct.json" --overwrite > "$OUT/test-instruct.md"
$ONNXSTEER eval "$W/base" --data "$MODELS"/data/eval/test.jsonl --vectors "$W/vectors" --batch-size "$BATCH" --selection "$OUT/selection.json" \
  --limit "$TEST_LIMIT" --max-new-tokens "$TOKENS" \
  --plot "$OUT/test-base-transfer.svg" --json-out "$W/test-base-transfer.json" --overwrite > "$OUT/test-base-transfer.md"
# 5. Control: the layers and modes chosen for the previous bundled model (selection-previous-model.json, issue 14) on
# this model's test split, to show what steering there does (with the random-direction rows).
$ONNXSTEER eval "$W/instruct" --data "$MODELS"/data/eval/test.jsonl --vectors "$W/vectors" --batch-size "$BATCH" \
  --selection "$OUT/selection-previous-model.json" --limit "$TEST_LIMIT" --max-new-tokens "$TOKENS" \
  --json-out "$W/test-instruct-previous-selection.json" --overwrite > "$OUT/test-instruct-previous-selection.md"
python3 tools/eval/summarize.py "$W/test-instruct-previous-selection.json" "tiny-instruct, test split, the previous model's selection" > "$OUT/summary-instruct-previous-selection.md"
python3 tools/eval/summarize.py "$W/test-instruct.json" "tiny-instruct, test split" > "$OUT/summary-instruct.md"
python3 tools/eval/summarize.py "$W/test-base-transfer.json" "tiny-base with tiny-instruct's vectors (transfer), test split" > "$OUT/summary-base-transfer.md"
# 6. The tables of docs/evaluation.md are the files just written (its prose quotes numbers and is updated by hand).
if [ "$OUT" = "docs/evaluation" ]; then python3 tools/eval/splice.py docs/evaluation.md; fi
echo "done: $OUT (work folder $W)"
