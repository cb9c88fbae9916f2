"""Why word inclusion does not steer on the bundled model, and what would: a PyTorch probe (not the product).

The paper's word vector is the with-minus-without mean difference of the residual at the LAST prompt token, added at
every position. On tiny-instruct that breaks answers (docs/evaluation.md). This probe loads the bundled ONNX weights
into tools/train's PyTorch Llama (checked against reference.json) and compares, for keywords:existence (and for
keywords:forbidden_words, by subtracting the inclusion vector as the paper does, and by adding the per-word exclusion
vector of `keywords.forbidden_words.W.jsonl` at the header positions), on prompts WITHOUT the instruction:

  paper        the last-token vector at every position (additive, c x the raw mean difference)
  suffix       the same last-token vector, only at the last K prompt positions (the chat template's answer header)
  per-position one mean difference per header position (the last K positions), each added at its own position

The layer and c are chosen on the validation split (best existence accuracy, ties to the smaller layer), then scored
on the test split with the rules of the C# quality guard (`QualityGuard`, mirrored in `degenerate` below): the check
passes, the answer names the prompt's topic, and it is not degenerate. Greedy, 96 new tokens, no KV cache.

    /usr/bin/python3 tools/eval/template_position_probe.py > docs/evaluation/template-position-probe.md

Needs Debian's python3-torch and python3-onnx. Takes a few minutes on the shared 2-core machine.
"""
import json
import math
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "tools", "train"))

import torch  # noqa: E402

from model import rope_cos_sin  # noqa: E402
from onnx_weights import load_onnx_llama, reproduces  # noqa: E402
from sample import on_topic  # noqa: E402
from tokenizer import ENDOFTEXT, IM_END, Tokenizer, render_chat  # noqa: E402

MODEL = os.path.join(ROOT, "models", "tiny-instruct")
DATA = os.path.join(ROOT, "models", "data")
K = 5            # header positions after the user's text: "<|im_end|>", "\n", "<|im_start|>", "assistant", "\n"
MAX_NEW = 96
LAYERS = range(6)
WEIGHTS = (1.0, 2.0)


def load_model():
    """The bundled genai export's weights in tools/train's PyTorch Llama (tools/train/onnx_weights.py)."""
    return load_onnx_llama(MODEL)


torch.set_num_threads(1)
model = load_model()
tok = Tokenizer.load(MODEL)


def encode(content):
    return tok.encode(render_chat([{"role": "user", "content": content}], True))


def check_reference():
    if not reproduces(model, os.path.join(ROOT, "tools", "train", "results", "tiny-instruct", "reference.json")):
        sys.exit("the ONNX weights loaded into PyTorch do not reproduce reference.json")


@torch.no_grad()
def last_k(ids):
    """Residual after every block at the last K positions: [layers, K, hidden]."""
    _, hs = model(torch.tensor([ids]), return_hidden=True)
    return torch.stack([h[0, -K:] for h in hs])


def mean_difference(pairs_file):
    pairs = [json.loads(line) for line in open(os.path.join(DATA, "pairs", pairs_file))]
    return torch.stack([last_k(encode(p["prompt"] + " " + p["instruction"])) - last_k(encode(p["prompt"]))
                        for p in pairs]).mean(0)


@torch.no_grad()
def generate(content, add_at=None):
    """Greedy answer; add_at(layer, x, n_prompt) returns the residual to add after that layer (or None)."""
    ids = encode(content)
    n0, out = len(ids), []
    for _ in range(MAX_NEW):
        t = len(ids)
        cos, sin = rope_cos_sin(model.cfg, torch.arange(t).unsqueeze(0))
        cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)
        mask = torch.full((t, t), float("-inf")).triu(1)[None, None]
        x = model.model.embed_tokens(torch.tensor([ids]))
        for i, blk in enumerate(model.model.layers):
            x = blk(x, cos, sin, mask)
            if add_at is not None:
                extra = add_at(i, x, n0)
                if extra is not None:
                    x = x + extra
        nxt = int(model.lm_head(model.model.norm(x))[0, -1].argmax())
        if nxt in (IM_END, ENDOFTEXT):
            break
        out.append(nxt)
        ids.append(nxt)
    return tok.decode(out)


def steer(kind, diff, layer, c):
    """diff: [layers, K, hidden]; the last-token vector is diff[:, -1]."""
    def add_at(i, x, n0):
        if i != layer:
            return None
        extra = torch.zeros_like(x)
        if kind == "paper":
            extra[0, :] = c * diff[layer, -1]
        elif kind == "suffix":
            extra[0, n0 - K:n0] = c * diff[layer, -1]
        else:  # per-position
            extra[0, n0 - K:n0] = c * diff[layer]
        return extra
    return add_at


def degenerate(text):
    """QualityGuard.IsDegenerate (src/OnnxSteer/Evaluation/Quality.cs) with its defaults: blank, a non-space character
    10 times in a row, a 30-character word, under 30% distinct words from 24 words on, or a word 4-gram 3 times."""
    import re
    if not text.strip():
        return True
    words = [w.lower() for w in re.findall(r"\w+", text)]
    run = longest = 0
    for i, ch in enumerate(text):
        run = run + 1 if i > 0 and ch == text[i - 1] and not ch.isspace() else 1
        longest = max(longest, run)
    if longest >= 10 or any(len(w) >= 30 for w in words):
        return True
    if not words:
        return False
    if len(words) >= 24 and len(set(words)) / len(words) < 0.3:
        return True
    grams = [tuple(words[i:i + 4]) for i in range(len(words) - 3)]
    return any(grams.count(g) >= 3 for g in set(grams))


def passes(row, text):
    iid, kw = row["instruction_id_list"][0], row["kwargs"][0]
    low = text.lower()
    if iid == "keywords:existence":
        ok = all(k.lower() in low for k in kw["keywords"])
    else:
        import re
        ok = not any(re.search(r"\b" + re.escape(k.lower()) + r"\b", low) for k in kw["forbidden_words"])
    return ok and on_topic(row["prompt"], text) and not degenerate(text)


def word_of(row):
    kw = row["kwargs"][0]
    return (kw.get("keywords") or kw.get("forbidden_words"))[0]


def wilson(k, n, z=1.96):
    if n == 0:
        return (0.0, 0.0)
    p = k / n
    d = 1 + z * z / n
    mid = (p + z * z / (2 * n)) / d
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return (max(0.0, mid - half), min(1.0, mid + half))


def rows(split, iid):
    return [r for r in (json.loads(line) for line in open(os.path.join(DATA, "eval", split + ".jsonl")))
            if r["instruction_id_list"] == [iid]]


def score(rows_, diffs, kind, layer, c, sign, with_instruction=False):
    ok, examples = 0, []
    for r in rows_:
        content = r["prompt"] + (" " + r["instruction"] if with_instruction else "")
        add = None if kind == "none" else steer(kind, sign * diffs[word_of(r)], layer, c)
        text = generate(content, add)
        good = passes(r, text)
        ok += good
        examples.append((good, r, text))
    return ok, examples


def main():
    check_reference()
    words = {w for iid in ("keywords:existence", "keywords:forbidden_words")
             for split in ("validation", "test") for r in rows(split, iid) for w in [word_of(r)]}
    diffs = {w: mean_difference(f"keywords.existence.{w}.jsonl") for w in sorted(words)}
    exclusion = {w: mean_difference(f"keywords.forbidden_words.{w}.jsonl")
                 for w in sorted({word_of(r) for split in ("validation", "test") for r in rows(split, "keywords:forbidden_words")})}
    print("# Word steering on tiny-instruct: the paper's last-token vector against header-position vectors (probe)\n")
    print(f"`tools/eval/template_position_probe.py` (PyTorch, the bundled ONNX weights; K = {K} header positions; "
          f"layers {LAYERS.start}-{LAYERS.stop - 1} and c in {WEIGHTS} chosen on the validation split; test split; "
          "greedy, 96 tokens; a pass needs the check, the topic and a non-degenerate answer, as in QualityGuard).\n")
    for iid, sign in (("keywords:existence", 1.0), ("keywords:forbidden_words", -1.0)):
        val, test = rows("validation", iid), rows("test", iid)
        print(f"## {iid} ({'add' if sign > 0 else 'subtract'} the inclusion vector of the word)\n")
        print("| setting | layer, c (validation) | validation | test | test 95% Wilson |")
        print("|---|---|--:|--:|---|")
        base, _ = score(test, diffs, "none", 0, 0, sign)
        lo, hi = wilson(base, len(test))
        print(f"| no instruction, unsteered | - | - | {base}/{len(test)} | [{lo:.2f}, {hi:.2f}] |")
        inst, _ = score(test, diffs, "none", 0, 0, sign, with_instruction=True)
        lo, hi = wilson(inst, len(test))
        print(f"| with the instruction, unsteered | - | - | {inst}/{len(test)} | [{lo:.2f}, {hi:.2f}] |")
        shown = []
        settings = [(kind, diffs, sign) for kind in ("paper", "suffix", "per-position")]
        if sign < 0:  # the per-word exclusion vector ("Do not use the word W."), added at its header positions
            settings.append(("per-position, exclusion vector added", exclusion, 1.0))
        for kind, vectors, s in settings:
            place = kind.split(",")[0]
            best = max(((score(val, vectors, place, layer, c, s)[0], -layer, -c) for layer in LAYERS for c in WEIGHTS))
            layer, c = -best[1], -best[2]
            k, examples = score(test, vectors, place, layer, c, s)
            lo, hi = wilson(k, len(test))
            print(f"| no instruction, {kind} | L{layer}, c={c:g} | {best[0]}/{len(val)} | {k}/{len(test)} | [{lo:.2f}, {hi:.2f}] |")
            shown.append((kind, examples))
        print()
        for kind, examples in shown:
            for good, r, text in [e for e in examples if e[0]][:1] + [e for e in examples if not e[0]][:1]:
                print(f"- {kind}, {'pass' if good else 'fail'}: \"{r['prompt']}\" (word: {word_of(r)}) -> "
                      f"\"{text[:160].replace(chr(10), ' / ')}\"")
        print()


if __name__ == "__main__":
    main()
