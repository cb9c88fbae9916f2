"""Quick steering check in PyTorch (no ONNX): the paper's vectors (diff-mean of the residual after block L at the
last prompt token, with vs without the instruction, from models/data/pairs) applied at one layer at every position,
on validation prompts WITHOUT the instruction. Prints, per family, layer and mode, how many answers pass the
family's check, how many name the topic and how many look degenerate (a 4-gram repeated 3 times), with one example.

    python3 steer_check.py --model work/tiny-instruct --n 5

The C# `onnxsteer sweep` is the real evaluation; this is a fast probe for training experiments.
"""
import argparse
import json
import os
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from sample import load, check, on_topic  # noqa: E402
from model import rope_cos_sin  # noqa: E402
from tokenizer import render_chat, IM_END, ENDOFTEXT  # noqa: E402

DATA = os.path.join(HERE, "..", "..", "models", "data")


def hidden_last(model, ids):
    """Residual after every block at the last position."""
    _, hs = model(torch.tensor([ids]), return_hidden=True)
    return torch.stack([h[0, -1] for h in hs])  # [layers, hidden]


def forward_steered(model, ids, layer, fn):
    t = len(ids)
    pos = torch.arange(t).unsqueeze(0)
    cos, sin = rope_cos_sin(model.cfg, pos)
    cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)
    mask = torch.full((t, t), float("-inf")).triu(1)[None, None]
    x = model.model.embed_tokens(torch.tensor([ids]))
    for i, blk in enumerate(model.model.layers):
        x = blk(x, cos, sin, mask)
        if i == layer:
            x = fn(x)
    return model.lm_head(model.model.norm(x))


@torch.no_grad()
def gen(model, tok, content, layer=None, fn=None, max_new=64):
    ids = tok.encode(render_chat([{"role": "user", "content": content}], True))
    out = []
    for _ in range(max_new):
        logits = model(torch.tensor([ids])) if fn is None else forward_steered(model, ids, layer, fn)
        nxt = int(logits[0, -1].argmax())
        if nxt in (IM_END, ENDOFTEXT):
            break
        out.append(nxt)
        ids.append(nxt)
    return tok.decode(out)


def degenerate(text):
    w = text.split()
    grams = [tuple(w[i:i + 4]) for i in range(len(w) - 3)]
    return any(grams.count(g) >= 3 for g in set(grams))


@torch.no_grad()
def vector(model, tok, pairs):
    d, zs = [], []
    for p in pairs:
        hp = hidden_last(model, tok.encode(render_chat([{"role": "user", "content": p["prompt"] + " " + p["instruction"]}], True)))
        hm = hidden_last(model, tok.encode(render_chat([{"role": "user", "content": p["prompt"]}], True)))
        d.append(hp - hm)
        zs.append(hp)
    u = torch.stack(d).mean(0)  # [layers, hidden]
    uh = u / u.norm(dim=-1, keepdim=True)
    zbar = (torch.stack(zs) * uh).sum(-1).mean(0)  # [layers]
    return u, uh, zbar


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=os.path.join(HERE, "work", "tiny-instruct"))
    ap.add_argument("--n", type=int, default=5)
    ap.add_argument("--pairs", type=int, default=24)
    ap.add_argument("--layers", default="0,1,2,3,4,5")
    ap.add_argument("--modes", default="project,add:2,add:4")
    ap.add_argument("--families", default="change_case:english_lowercase,detectable_format:title,"
                                          "detectable_format:json_format,punctuation:no_comma,startend:quotation,"
                                          "change_case:english_capital,detectable_format:number_bullet_lists")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model, tok = load(args.model)
    rows = [json.loads(l) for l in open(os.path.join(DATA, "eval", "validation.jsonl"), encoding="utf-8")]
    for fam in args.families.split(","):
        pairs = [json.loads(l) for l in open(os.path.join(DATA, "pairs", fam.replace(":", ".") + ".jsonl"), encoding="utf-8")]
        u, uh, zbar = vector(model, tok, pairs[: args.pairs])
        rs = [r for r in rows if r["instruction_id_list"] == [fam]][: args.n]
        base = [gen(model, tok, r["prompt"]) for r in rs]
        withi = [gen(model, tok, r["prompt"] + " " + r["instruction"]) for r in rs]
        ok = lambda outs: sum(check(fam, r["kwargs"][0], o) for r, o in zip(rs, outs))  # noqa: E731
        top = lambda outs: sum(on_topic(r["prompt"], o) for r, o in zip(rs, outs))  # noqa: E731
        print(f"== {fam}: |u| by layer {[round(float(x), 1) for x in u.norm(dim=-1)]}")
        print(f"   unsteered: check {ok(base)}/{len(rs)} topic {top(base)}  | with instruction: check {ok(withi)} topic {top(withi)}  e.g. {withi[0]!r}")
        for L in map(int, args.layers.split(",")):
            for mode in args.modes.split(","):
                if mode == "project":
                    fn = lambda x, L=L: x + (zbar[L] - x @ uh[L])[..., None] * uh[L]  # noqa: E731
                else:
                    c = float(mode.split(":")[1])
                    fn = lambda x, L=L, c=c: x + c * u[L]  # noqa: E731
                outs = [gen(model, tok, r["prompt"], L, fn) for r in rs]
                print(f"   L{L} {mode:8s} check {ok(outs)}/{len(rs)} topic {top(outs)} degenerate {sum(map(degenerate, outs))}"
                      f"  e.g. {outs[0][:110]!r}", flush=True)


if __name__ == "__main__":
    main()
