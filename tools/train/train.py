"""Trains one variant of OnnxSteer's tiny Llama and writes HF-format weights plus reference outputs.

    python3 train.py --variant base     --steps 300  --max-minutes 9
    python3 train.py --variant instruct --steps 700  --max-minutes 20 --init work/tiny-base/ckpt.pt

Determinism: data order, init and dropout-free training are seeded, so a run that finishes its step
budget is reproducible. The learning-rate schedule follows progress = max(step/steps,
elapsed/max_minutes): on a busy machine the wall-clock cap shortens the run but the model is still
annealed (the log records how many steps ran).
"""
import argparse
import json
import math
import os
import random
import sys
import time

import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from model import LlamaConfig, LlamaForCausalLM, save_safetensors  # noqa: E402
from tokenizer import Tokenizer, render_chat, IM_END, ENDOFTEXT  # noqa: E402


def log(f, msg):
    line = time.strftime("%H:%M:%S ") + msg
    print(line, flush=True)
    f.write(line + "\n")
    f.flush()


def instruction_span(tok, messages, p):
    """Token span [a, b) of the instruction in the prompt ids ``p`` of a one-turn chat, or None.
    The user content is ``query + " " + instruction``; the GPT-2 pre-tokenizer starts a new piece at the
    space, so the query's tokens are a prefix of the prompt's."""
    from corpus import split_instruction
    if len(messages) != 2 or messages[0]["role"] != "user":
        return None
    query, instr = split_instruction(messages[0]["content"])
    if not instr:
        return None
    a = len(tok.encode(render_chat([{"role": "user", "content": query}], False)[:-len("<|im_end|>\n")]))
    b = len(tok.encode(render_chat(messages[:1], False)[:-len("<|im_end|>\n")]))
    assert 0 < a < b < len(p) and p[:b] == tok.encode(render_chat(messages[:1], False)[:-len("<|im_end|>\n")])
    return a, b


def encode_example(tok, ex, max_len, mask_rng=None, mask_frac=0.0):
    """(ids, loss mask, block): loss on the assistant response and its closing <|im_end|> only;
    plain documents are trained on every token. ``block`` is None or (response start, a, b): in a share
    ``mask_frac`` of the instructed examples the response tokens may not attend to the instruction's tokens
    [a, b), so the instruction has to reach the response through the positions after it (the chat template's
    ``<|im_end|>\n<|im_start|>assistant\n``, where steering vectors are extracted)."""
    block = None
    if "messages" in ex:
        prompt = render_chat(ex["messages"][:-1], add_generation_prompt=True)
        p = tok.encode(prompt)
        r = tok.encode(ex["messages"][-1]["content"]) + [IM_END]
        ids, mask = p + r, [0] * len(p) + [1] * len(r)
        if mask_frac > 0:
            span = instruction_span(tok, ex["messages"], p)
            # Draw for every example (instructed or not) so the choice does not depend on the others' spans.
            if mask_rng.random() < mask_frac and span is not None and len(p) < max_len:
                block = (len(p), span[0], span[1])
    else:
        ids = [ENDOFTEXT] + tok.encode(ex["text"]) + [ENDOFTEXT]
        mask = [0] + [1] * (len(ids) - 1)
    return ids[:max_len], mask[:max_len], block


def make_batch(examples, idx, late_from=None, layers=0):
    """ids, loss mask and attention block. With ``late_from`` = K, from layer K on the chat-template tokens after
    the instruction may not attend to it either, so the instruction is summarised there in layers 0..K-1."""
    rows = [examples[i] for i in idx]
    t = max(len(r[0]) for r in rows)
    ids = torch.zeros(len(rows), t, dtype=torch.long)
    mask = torch.zeros(len(rows), t, dtype=torch.float32)
    block = None
    for j, (a, m, blk) in enumerate(rows):
        ids[j, : len(a)] = torch.tensor(a)
        mask[j, : len(m)] = torch.tensor(m, dtype=torch.float32)
        if blk is not None:
            if block is None:
                block = torch.zeros(len(rows), t - 1, t - 1, dtype=torch.bool)  # the model sees ids[:, :-1]
            rs, s0, s1 = blk
            block[j, rs:, s0:s1] = True
    if block is not None and late_from is not None:
        late = block.clone()
        for j, (_, _, blk) in enumerate(rows):
            if blk is not None:
                late[j, blk[2]:, blk[1]:blk[2]] = True
        block = [block if i < late_from else late for i in range(layers)]
    return ids, mask, block


def loss_fn(model, ids, mask, block=None):
    # The lm_head only runs on positions that carry loss (the prompt is most of each sequence).
    # The first response token is predicted at the last prompt position (rs - 1), which still sees the
    # instruction; the response tokens themselves (rows >= rs) do not where ``block`` says so.
    _, hidden = model(ids[:, :-1], return_hidden=True, skip_head=True, block=block)
    sel = mask[:, 1:].reshape(-1) > 0
    h = hidden.reshape(-1, hidden.shape[-1])[sel]
    logits = model.lm_head(h)
    return F.cross_entropy(logits, ids[:, 1:].reshape(-1)[sel])


def batches(examples, rng, batch):
    """One epoch of batches: shuffled, then grouped by length within windows of 50 batches so
    little compute goes to padding; batch order is shuffled again. Deterministic given rng."""
    order = list(range(len(examples)))
    rng.shuffle(order)
    out = []
    w = 50 * batch
    for i in range(0, len(order), w):
        chunk = sorted(order[i:i + w], key=lambda j: len(examples[j][0]))
        out += [chunk[k:k + batch] for k in range(0, len(chunk) - batch + 1, batch)]
    rng.shuffle(out)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--variant", choices=["base", "instruct"], required=True)
    ap.add_argument("--work", default=os.path.join(HERE, "work"))
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--max-minutes", type=float, default=18.0, help="wall-clock cap")
    ap.add_argument("--max-cpu-minutes", type=float, default=1e9,
                    help="cap on process CPU time (all threads), robust to other load on the machine")
    ap.add_argument("--batch", type=int, default=24)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--warmup", type=int, default=30)
    ap.add_argument("--max-len", type=int, default=128)
    ap.add_argument("--init", default=None, help="checkpoint to start from (instruct starts from base)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--intermediate", type=int, default=352)
    ap.add_argument("--layers", type=int, default=6)
    ap.add_argument("--corpus", default=None, help="file in work/corpus (default instruct.jsonl or base.jsonl)")
    ap.add_argument("--out", default=None, help="output folder in work/ (default tiny-<variant>)")
    ap.add_argument("--probe-every", type=int, default=0,
                    help="every N steps, log the topic fidelity of greedy answers to validation prompts")
    ap.add_argument("--instr-mask", type=float, default=0.0,
                    help="share of instructed examples whose response tokens may not attend to the instruction")
    ap.add_argument("--instr-late-from", type=int, default=None,
                    help="with --instr-mask: from this layer on, the template tokens after the instruction may not "
                         "attend to it either (the instruction must be summarised there in the layers before)")
    ap.add_argument("--probe-data", default=os.path.join(HERE, "..", "..", "models", "data", "eval", "validation.jsonl"))
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    random.seed(args.seed)
    name = "tiny-" + args.variant
    out = os.path.join(args.work, args.out or name)
    os.makedirs(out, exist_ok=True)
    logf = open(os.path.join(out, "train.log"), "w")

    tok = Tokenizer.load(os.path.join(args.work, "tokenizer"))
    corpus_file = os.path.join(args.work, "corpus", args.corpus or ("instruct.jsonl" if args.variant == "instruct" else "base.jsonl"))
    with open(corpus_file, encoding="utf-8") as f:
        mask_rng = random.Random(args.seed + 29)
        examples = [encode_example(tok, json.loads(line), args.max_len, mask_rng, args.instr_mask) for line in f]
    n_tok = sum(len(e[0]) for e in examples)
    log(logf, f"{name}: {len(examples)} examples, {n_tok} tokens, from {corpus_file}")
    if args.instr_mask:
        log(logf, f"instruction hidden from the response in {sum(e[2] is not None for e in examples)} examples")

    cfg = LlamaConfig(vocab_size=len(tok.vocab), hidden_size=args.hidden, intermediate_size=args.intermediate,
                      num_hidden_layers=args.layers, num_attention_heads=4, num_key_value_heads=2,
                      max_position_embeddings=256, bos_token_id=ENDOFTEXT, eos_token_id=IM_END,
                      pad_token_id=ENDOFTEXT)
    model = LlamaForCausalLM(cfg)
    if args.init:
        model.load_state_dict(torch.load(args.init))
        log(logf, f"initialised from {args.init}")
    log(logf, f"parameters: {model.num_parameters()} ({cfg.num_hidden_layers} layers, hidden {cfg.hidden_size}, "
              f"ffn {cfg.intermediate_size}, heads {cfg.num_attention_heads}/{cfg.num_key_value_heads}, vocab {cfg.vocab_size})")

    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=args.lr, betas=(0.9, 0.95), eps=1e-8)
    rng = random.Random(args.seed + 17)
    epoch = []
    t0 = time.time()
    c0 = time.process_time()
    cap = args.max_minutes * 60
    cpu_cap = args.max_cpu_minutes * 60
    step = 0
    ema = None
    history = []
    probe_prompts = []
    if args.probe_every:
        with open(args.probe_data, encoding="utf-8") as f:
            probe_prompts = sorted({json.loads(line)["prompt"] for line in f})[:20]
    model.train()
    while step < args.steps:
        elapsed = time.time() - t0
        cpu = time.process_time() - c0
        progress = max(step / args.steps, elapsed / cap, cpu / cpu_cap)
        if progress >= 1.0:
            log(logf, f"time cap reached after {step} steps (wall {elapsed:.0f}s, cpu {cpu:.0f}s)")
            break
        lr = args.lr * min(1.0, (step + 1) / args.warmup) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))
        for g in opt.param_groups:
            g["lr"] = lr
        if not epoch:
            epoch = batches(examples, rng, args.batch)
        ids, mask, block = make_batch(examples, epoch.pop(), args.instr_late_from, cfg.num_hidden_layers)
        loss = loss_fn(model, ids, mask, block)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        ema = loss.item() if ema is None else 0.9 * ema + 0.1 * loss.item()
        if step % 10 == 0 or step == 1:
            history.append({"step": step, "loss": round(loss.item(), 4), "ema": round(ema, 4),
                            "s": round(time.time() - t0, 1), "cpu_s": round(time.process_time() - c0, 1)})
            log(logf, f"step {step:5d} loss {loss.item():.4f} ema {ema:.4f} lr {lr:.2e} t {time.time() - t0:7.1f}s "
                      f"cpu {time.process_time() - c0:7.1f}s")
        if args.probe_every and step % args.probe_every == 0:
            # Greedy decoding without gradients and without random numbers: it does not change the run.
            k, example = probe(model, tok, probe_prompts)
            history.append({"step": step, "probe_on_topic": k, "probe_n": len(probe_prompts)})
            log(logf, f"probe: {k}/{len(probe_prompts)} answers name the topic; e.g. {example!r}")
    train_s = time.time() - t0
    cpu_s = time.process_time() - c0
    log(logf, f"done: {step} steps in {train_s:.1f}s wall, {cpu_s:.1f}s cpu, final ema loss {ema:.4f}")

    model.eval()
    torch.save(model.state_dict(), os.path.join(out, "ckpt.pt"))
    save_safetensors(os.path.join(out, "model.safetensors"), model.state_dict())
    with open(os.path.join(out, "config.json"), "w", newline="\n") as f:
        json.dump(cfg.to_hf(), f, indent=1)
    with open(os.path.join(out, "generation_config.json"), "w", newline="\n") as f:
        json.dump({"bos_token_id": ENDOFTEXT, "eos_token_id": [IM_END, ENDOFTEXT], "pad_token_id": ENDOFTEXT,
                   "do_sample": False}, f, indent=1)
    tok.save(out)
    with open(os.path.join(out, "train_log.json"), "w", newline="\n") as f:
        json.dump({"variant": name, "seed": args.seed, "steps_done": step, "steps_budget": args.steps,
                   "max_minutes": args.max_minutes, "max_cpu_minutes": args.max_cpu_minutes,
                   "train_seconds": round(train_s, 1), "train_cpu_seconds": round(cpu_s, 1),
                   "load_average_at_end": list(os.getloadavg()), "batch": args.batch,
                   "lr": args.lr, "init": args.init, "instr_mask": args.instr_mask,
                   "instr_late_from": args.instr_late_from, "final_ema_loss": round(ema, 4),
                   "parameters": model.num_parameters(), "history": history}, f, indent=1)
    write_reference(model, tok, out)
    log(logf, f"wrote {out}")


@torch.no_grad()
def probe(model, tok, prompts):
    """How many greedy answers to held-out prompts name the prompt's topic (sample.py's check)."""
    from sample import on_topic
    model.eval()
    k, example = 0, ""
    for i, p in enumerate(prompts):
        out = model.generate(tok.encode(render_chat([{"role": "user", "content": p}], True)), 24, {IM_END, ENDOFTEXT})
        text = tok.decode([t for t in out if t not in (IM_END, ENDOFTEXT)])
        k += on_topic(p, text)
        if i == 0:
            example = p + " -> " + text
    model.train()
    return k, example


@torch.no_grad()
def write_reference(model, tok, out):
    """Logits and a greedy continuation that an ONNX export must reproduce."""
    a = tok.encode(render_chat([{"role": "user", "content": "Tell me about the river."}], True))
    b = tok.encode(render_chat([{"role": "user", "content": "Describe the owl. Answer in all caps."}], True))
    n = min(len(a), len(b))
    ids = [a[:n], b[:n]]
    logits = model(torch.tensor(ids))[:, -1, :]
    prompt = tok.encode(render_chat([{"role": "user", "content":
                                      "Describe the moon. Answer with exactly 5 bullet points."}], True))
    gen = []
    seq = list(prompt)
    for _ in range(32):  # exactly 32 tokens, not stopping at <|im_end|>, so the check is always 32 long
        nxt = int(model(torch.tensor([seq]))[0, -1].argmax())
        gen.append(nxt)
        seq.append(nxt)
    ref = {"input_ids": ids, "logits": [[[float(x) for x in row.tolist()]] for row in logits],
           "logits_note": "logits[b][0] = logits at the last position of input_ids[b], float32",
           "greedy": {"prompt_ids": prompt, "generated_ids": gen, "note": "32 argmax tokens, no stop at eos",
                      "generated_text": tok.decode(gen)}}
    with open(os.path.join(out, "reference.json"), "w", newline="\n") as f:
        json.dump(ref, f)


if __name__ == "__main__":
    main()
