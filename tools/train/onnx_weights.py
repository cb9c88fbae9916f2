"""Load a bundled genai-layout ONNX export back into tools/train's PyTorch Llama.

The exports are float32 and carry the trained tensors unchanged (MatMul weights stored [in, out]), so the loaded model
reproduces the training run's reference.json exactly. Used by the probes in tools/eval and to continue training from
a committed model when tools/train/work/ is gone:

    /usr/bin/python3 onnx_weights.py --model ../../models/tiny-instruct --out work/tiny-instruct-hiding/ckpt.pt \
        --reference results/tiny-instruct-hiding/reference.json
"""
import argparse
import json
import os
import sys

import onnx
import torch
from onnx import numpy_helper

from model import LlamaConfig, LlamaForCausalLM


def load_onnx_llama(folder):
    """The genai export's initializers in `folder`/model.onnx mapped onto LlamaForCausalLM (eval mode)."""
    graph = onnx.load(os.path.join(folder, "model.onnx"))  # reads model.onnx.data beside it
    w = {i.name: torch.tensor(numpy_helper.to_array(i).copy()) for i in graph.graph.initializer}
    n_layers = sum(1 for k in w if k.endswith("input_layernorm.weight"))
    hidden = w["model.embed_tokens.weight"].shape[1]
    head_dim = 2 * w["cos_cache"].shape[1]
    cfg = LlamaConfig(vocab_size=w["model.embed_tokens.weight"].shape[0], hidden_size=hidden,
                      intermediate_size=w["model.layers.0.mlp.gate_proj.MatMul.weight"].shape[1],
                      num_hidden_layers=n_layers, num_attention_heads=hidden // head_dim,
                      num_key_value_heads=w["model.layers.0.attn.k_proj.MatMul.weight"].shape[1] // head_dim,
                      max_position_embeddings=w["cos_cache"].shape[0])
    sd = {"model.embed_tokens.weight": w["model.embed_tokens.weight"],
          "model.norm.weight": w[f"model.layers.{n_layers}.final_norm_layernorm.weight"],
          "lm_head.weight": w["lm_head.MatMul.weight"].T}
    for i in range(n_layers):
        p = f"model.layers.{i}."
        sd[p + "input_layernorm.weight"] = w[p + "input_layernorm.weight"]
        sd[p + "post_attention_layernorm.weight"] = w[p + "post_attention_layernorm.weight"]
        for n in "qkvo":
            sd[p + f"self_attn.{n}_proj.weight"] = w[p + f"attn.{n}_proj.MatMul.weight"].T
        for n in ("gate", "up", "down"):
            sd[p + f"mlp.{n}_proj.weight"] = w[p + f"mlp.{n}_proj.MatMul.weight"].T
    m = LlamaForCausalLM(cfg)
    m.load_state_dict({k: v.contiguous() for k, v in sd.items()})
    m.eval()
    return m


@torch.no_grad()
def reproduces(model, reference_file):
    """True when greedy decoding reproduces reference.json's 32 generated ids."""
    ref = json.load(open(reference_file))["greedy"]
    ids, out = list(ref["prompt_ids"]), []
    for _ in range(len(ref["generated_ids"])):
        out.append(int(model(torch.tensor([ids]))[0, -1].argmax()))
        ids.append(out[-1])
    return out == ref["generated_ids"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True, help="a genai-layout export folder (model.onnx)")
    ap.add_argument("--out", required=True, help="ckpt.pt to write (train.py --init reads it)")
    ap.add_argument("--reference", required=True, help="the training run's reference.json the weights must reproduce")
    args = ap.parse_args()
    model = load_onnx_llama(args.model)
    if not reproduces(model, args.reference):
        sys.exit(f"the weights in {args.model} do not reproduce {args.reference}")
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    torch.save(model.state_dict(), args.out)
    print(f"wrote {args.out} ({sum(p.numel() for p in model.parameters())} parameters)")


if __name__ == "__main__":
    main()
