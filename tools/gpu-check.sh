#!/usr/bin/env bash
# GPU check for the CUDA build: patch -> extract -> generate --ep cuda on generated models, token ids compared with
# the CPU build. Not run by CI or the tests (nothing in the build or the tests needs a GPU).
#
#   tools/gpu-check.sh bundle [DIR]   # on a machine with the .NET SDK: self-contained CUDA and CPU builds of the CLI
#                                     # (linux-x64) and the test models, into DIR (default ./gpu-check-bundle)
#   DIR/gpu-check.sh run              # on the GPU machine (no .NET SDK needed; NVIDIA driver, CUDA 12 and cuDNN 9
#                                     # libraries as ONNX Runtime 1.32's CUDA provider requires)
#   tools/gpu-check.sh all            # both, on one machine that has the SDK and the GPU
#
# Exit code 0 when every case gives the same ids on CUDA as on the CPU; 1 when one differs; others as the CLI's.
set -euo pipefail

mode=${1:-}
here=$(cd "$(dirname "$0")" && pwd)

bundle() {
  local out=${1:-gpu-check-bundle}
  local root; root=$(cd "$here/.." && pwd)
  mkdir -p "$out"; out=$(cd "$out" && pwd)
  cd "$root"
  # The CLI as a self-contained app: the GPU machine may have no .NET. The CUDA one carries
  # Microsoft.ML.OnnxRuntime.Gpu (libonnxruntime_providers_cuda.so); the CPU one is the reference.
  dotnet publish src/OnnxSteer.Cli -c Release -r linux-x64 --self-contained -p:OnnxSteerProvider=Cuda -o "$out/cuda" --nologo -v q
  dotnet publish src/OnnxSteer.Cli -c Release -r linux-x64 --self-contained -o "$out/cpu" --nologo -v q
  # Generated models (random weights, the bundled model's 1536-token vocabulary and tokenizer), one per cache path:
  # onnxruntime-genai fp16 with MultiHeadAttention, and Optimum fp32; plus the bundled trained model.
  local mb=(dotnet run --project tools/OnnxSteer.ModelBuilder -c Release --)
  rm -rf "$out/models"; mkdir -p "$out/models"
  "${mb[@]}" build --layout genai --dtype fp16 --layers 4 --hidden 256 --heads 4 --kv-heads 2 --head-dim 64 --vocab 1536 -o "$out/models/gen-genai-fp16"
  "${mb[@]}" build --layout optimum --layers 4 --hidden 256 --heads 4 --kv-heads 4 --head-dim 64 --vocab 1536 -o "$out/models/gen-optimum-fp32"
  for m in gen-genai-fp16 gen-optimum-fp32; do
    for f in tokenizer.json tokenizer_config.json special_tokens_map.json; do cp "models/tiny-instruct/$f" "$out/models/$m/"; done
  done
  cp -r models/tiny-instruct "$out/models/tiny-instruct"
  cp models/data/pairs/change_case.english_lowercase.jsonl "$out/models/pairs.jsonl"
  cp "$here/gpu-check.sh" "$out/gpu-check.sh"
  echo "bundle ready: $out (copy it to the GPU machine and run: $out/gpu-check.sh run)"
}

run() {
  local dir; dir=$(cd "$here" && pwd)
  local cuda="$dir/cuda/OnnxSteer.Cli" cpu="$dir/cpu/OnnxSteer.Cli" work; work=$(mktemp -d)
  trap 'rm -rf "$work"' RETURN
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || echo "nvidia-smi not found"
  local failed=0
  for m in tiny-instruct gen-genai-fp16 gen-optimum-fp32; do
    "$cpu" patch "$dir/models/$m" -o "$work/$m" >/dev/null
    # Vectors from the CPU build (extract runs on the CPU provider), used by both generations.
    "$cpu" extract "$work/$m" --pairs "$dir/models/pairs.jsonl" -o "$work/$m.safetensors" --name lower >/dev/null
    for steer in "" "--steer $work/$m.safetensors@1=add:8" "--steer $work/$m.safetensors@2=project"; do
      local args=(generate "$work/$m" --prompt "Write about rivers." --max-new-tokens 48 --json $steer)
      local a b
      a=$("$cpu" "${args[@]}" | grep -A100000 '"token_ids"' | sed '/\]/q' | tr -d ' \n')
      if ! b=$("$cuda" "${args[@]}" --ep cuda 2>"$work/err" | grep -A100000 '"token_ids"' | sed '/\]/q' | tr -d ' \n'); then
        echo "$m ${steer:-unsteered}: CUDA run failed: $(tail -1 "$work/err")"; failed=1; continue
      fi
      if [[ "$a" == "$b" ]]; then echo "$m ${steer:-unsteered}: same ids on CUDA and CPU"
      else echo "$m ${steer:-unsteered}: DIFFERENT ids"; echo "  cpu:  $a"; echo "  cuda: $b"; failed=1; fi
    done
  done
  # fp16 on a GPU may legitimately flip a near-tie after many tokens; a difference is reported with both id lists.
  return $failed
}

case "$mode" in
  bundle) bundle "${2:-}" ;;
  run) run ;;
  all) d=$(mktemp -d); bundle "$d"; "$d/gpu-check.sh" run ;;
  *) sed -n '2,13p' "$0"; exit 2 ;;
esac
