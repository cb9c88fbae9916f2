"""Sanity check of a trained variant: greedy generations for held-out test prompts with and
without the instruction, scored with simple IFEval-like checks (strict only; the C# evaluator is
the real one). Prints the outputs and a per-family table; nothing is written unless --out is given.

    python3 sample.py --variant instruct --n 3
"""
import argparse
import json
import os
import re
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from model import LlamaConfig, LlamaForCausalLM, load_safetensors  # noqa: E402
from tokenizer import Tokenizer, render_chat, IM_END, ENDOFTEXT  # noqa: E402


def count_sentences(text):
    return len([s for s in re.split(r"(?<=[.!?])\s+", text.strip()) if s.strip()])


def check(iid, kw, resp):
    r = resp.strip()
    if iid == "change_case:english_lowercase":
        return r == r.lower()
    if iid == "change_case:english_capital":
        return r == r.upper()
    if iid == "detectable_format:json_format":
        s = re.sub(r"^```(json)?|```$", "", r).strip()
        try:
            json.loads(s)
            return True
        except ValueError:
            return False
    if iid == "detectable_format:number_bullet_lists":
        return len(re.findall(r"^\s*[\*-][^\*].*$", r, flags=re.M)) == kw["num_bullets"]
    if iid == "detectable_format:title":
        return re.search(r"<<[^\n]+>>", r) is not None
    if iid == "startend:end_checker":
        return r.strip('"').lower().endswith(kw["end_phrase"].strip().lower())
    if iid == "punctuation:no_comma":
        return "," not in r
    if iid == "startend:quotation":
        return len(r) > 1 and r[0] == '"' and r[-1] == '"'
    if iid == "length_constraints:number_sentences":
        n = count_sentences(r)
        return n == kw["num_sentences"] if kw["relation"] == "exactly" else n <= kw["num_sentences"]
    if iid == "keywords:existence":
        return all(re.search(w, r, flags=re.I) for w in kw["keywords"])
    if iid == "keywords:forbidden_words":
        return not any(re.search(r"\b" + w + r"\b", r, flags=re.I) for w in kw["forbidden_words"])
    raise ValueError(iid)


def topic_of(prompt):
    """The prompt's topic as OnnxSteer's TopicFidelity reads it: the last "the X" / "a X" / "an X"."""
    m = re.findall(r"\b(?:the|an?)\s+([A-Za-z][A-Za-z-]*)\b", prompt, flags=re.I)
    return m[-1].lower() if m else None


def on_topic(prompt, resp):
    """Whether the response names the prompt's topic as a word (any case, singular or plural), like TopicFidelity."""
    t = topic_of(prompt)
    if t is None:
        return True
    alt = "|" + re.escape(t[:-1]) + "ies" if t.endswith("y") else ""
    return re.search(r"(?<![A-Za-z0-9])(?:" + re.escape(t) + r"(?:s|es)?" + alt + r")(?![A-Za-z0-9])", resp, flags=re.I) is not None


def load(folder):
    with open(os.path.join(folder, "config.json")) as f:
        c = json.load(f)
    cfg = LlamaConfig(vocab_size=c["vocab_size"], hidden_size=c["hidden_size"],
                      intermediate_size=c["intermediate_size"], num_hidden_layers=c["num_hidden_layers"],
                      num_attention_heads=c["num_attention_heads"], num_key_value_heads=c["num_key_value_heads"],
                      rms_norm_eps=c["rms_norm_eps"], rope_theta=c["rope_theta"],
                      max_position_embeddings=c["max_position_embeddings"])
    m = LlamaForCausalLM(cfg)
    m.load_state_dict(load_safetensors(os.path.join(folder, "model.safetensors")))
    m.eval()
    return m, Tokenizer.load(folder)


def generate(model, tok, content, max_new=96):
    ids = tok.encode(render_chat([{"role": "user", "content": content}], True))
    out = model.generate(ids, max_new, {IM_END, ENDOFTEXT})
    if out and out[-1] in (IM_END, ENDOFTEXT):
        out = out[:-1]
    return tok.decode(out)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--variant", default="instruct")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--work", default=os.path.join(HERE, "work"))
    ap.add_argument("--data", default=os.path.join(HERE, "..", "..", "models", "data", "eval", "test.jsonl"))
    ap.add_argument("--n", type=int, default=3, help="rows per family")
    ap.add_argument("--show", type=int, default=1, help="outputs printed per family")
    ap.add_argument("--out", default=None)
    ap.add_argument("--show-off-topic", action="store_true", help="also print every off-topic answer")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model, tok = load(os.path.join(args.work, "tiny-" + args.variant))
    rows = [json.loads(l) for l in open(args.data, encoding="utf-8")]
    by_fam = {}
    for r in rows:
        key = "+".join(r["instruction_id_list"])
        by_fam.setdefault(key, []).append(r)
    table = []
    samples = []
    topic_without = topic_with = n_all = 0
    for fam, rs in by_fam.items():
        ok_without = ok_with = 0
        for i, r in enumerate(rs[: args.n]):
            without = generate(model, tok, r["prompt"])
            withi = generate(model, tok, r["prompt"] + " " + r["instruction"])
            tw = on_topic(r["prompt"], without)
            cw = all(check(i_, k_, without) for i_, k_ in zip(r["instruction_id_list"], r["kwargs"]))
            ci = all(check(i_, k_, withi) for i_, k_ in zip(r["instruction_id_list"], r["kwargs"]))
            ok_without += cw
            ok_with += ci
            tw, ti = on_topic(r["prompt"], without), on_topic(r["prompt"], withi)
            topic_without += tw
            topic_with += ti
            n_all += 1
            samples.append({"family": fam, "prompt": r["prompt"], "instruction": r["instruction"],
                            "without": without, "with": withi, "ok_without": cw, "ok_with": ci,
                            "on_topic_without": tw, "on_topic_with": ti})
            if i < args.show or (args.show_off_topic and not tw):
                print(f"== {fam}\n   prompt: {r['prompt']} | {r['instruction']}\n   without [{'ok' if cw else 'x'}]: {without!r}\n   with    [{'ok' if ci else 'x'}]: {withi!r}", flush=True)
        n = min(args.n, len(rs))
        table.append((fam, ok_without / n, ok_with / n, n))
    print("\nfamily | no instruction | with instruction | n")
    for fam, a, b, n in table:
        print(f"{fam} | {a:.2f} | {b:.2f} | {n}")
    print(f"\ntopic fidelity (answer names the prompt's topic): no instruction {topic_without}/{n_all}, "
          f"with instruction {topic_with}/{n_all}")
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"table": table, "samples": samples}, f, indent=1)


if __name__ == "__main__":
    main()
