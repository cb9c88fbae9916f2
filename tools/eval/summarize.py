#!/usr/bin/env python3
"""Summaries for docs/evaluation.md from `onnxsteer eval --json-out` reports (standard library only).

usage: summarize.py REPORT.json [LABEL]

Prints Markdown: the format-instruction average (the paper's headline), length split by relation,
word exclusion, and composition (prompt-level accuracy of the two-instruction prompts, and each
instruction's own accuracy inside them); topic fidelity per setting; per steered instruction, without the
instruction, the check alone against the random-direction control; and example generations, passes and failures.
"""
import json
import sys
from collections import defaultdict

FORMAT = [
    "change_case:english_lowercase", "change_case:english_capital", "detectable_format:json_format",
    "detectable_format:number_bullet_lists", "detectable_format:title", "startend:end_checker",
    "startend:quotation", "punctuation:no_comma",
]
SETTINGS = ["no_instruction", "no_instruction_steered", "with_instruction", "with_instruction_steered"]
LABELS = ["no instr.", "no instr. + steer", "with instr.", "with instr. + steer"]


def mean(xs):
    return sum(xs) / len(xs) if xs else float("nan")


def row(name, n, values, on_topic):
    return f"| {name} | {n} | " + " | ".join(f"{v:.2f}" for v in values) + f" | {on_topic} |"


def main():
    report = json.load(open(sys.argv[1]))
    label = sys.argv[2] if len(sys.argv) > 2 else sys.argv[1]
    items = [i for i in report["items"] if not i.get("control")]  # the random-direction control has its own rows
    print(f"#### {label}\n")
    print("| group | prompts | " + " | ".join(LABELS) + " | on topic (" + " / ".join(LABELS) + ") |")
    print("|---|--:|" + "--:|" * 4 + "---|")

    def topic(group):
        # Topic fidelity of the group's answers per setting (reports written before it existed have no on_topic).
        return " / ".join(f"{mean([i.get('on_topic', True) for i in group if i['setting'] == s]):.2f}" for s in SETTINGS)

    def single(ids):
        return [i for i in items if len(i["instructions"]) == 1 and i["instructions"][0] in ids]

    # Format average over single-instruction prompts (loose).
    fmt = single(FORMAT)
    vals = [mean([i["loose"][0] for i in fmt if i["setting"] == s]) for s in SETTINGS]
    print(row("format instructions (8 ids), loose", len(fmt) // 4, vals, topic(fmt)))
    vals = [mean([i["strict"][0] for i in fmt if i["setting"] == s]) for s in SETTINGS]
    print(row("format instructions (8 ids), strict", len(fmt) // 4, vals, topic(fmt)))

    length = single(["length_constraints:number_sentences"])
    relations = defaultdict(list)
    for i in length:
        relations[i["args"][0].get("relation", "?")].append(i)
    for rel, group in sorted(relations.items()):
        vals = [mean([i["loose"][0] for i in group if i["setting"] == s]) for s in SETTINGS]
        print(row(f"number_sentences, {rel}", len(group) // 4, vals, topic(group)))

    for wid, name in [("keywords:forbidden_words", "word exclusion (forbidden_words)"), ("keywords:existence", "word inclusion (existence)")]:
        group = single([wid])
        vals = [mean([i["loose"][0] for i in group if i["setting"] == s]) for s in SETTINGS]
        print(row(name, len(group) // 4, vals, topic(group)))

    combos = defaultdict(list)
    for i in items:
        if len(i["instructions"]) > 1:
            combos[" + ".join(x.split(":")[1] for x in i["instructions"])].append(i)
    for combo, group in sorted(combos.items()):
        vals = [mean([all(i["loose"]) for i in group if i["setting"] == s]) for s in SETTINGS]
        print(row(f"composition {combo}: both followed", len(group) // 4, vals, topic(group)))
        for k, part in enumerate(combo.split(" + ")):
            vals = [mean([i["loose"][k] for i in group if i["setting"] == s]) for s in SETTINGS]
            print(row(f"&nbsp;&nbsp;{part} inside it", len(group) // 4, vals, topic(group)))
    print()
    print("Degenerate share per setting: " + ", ".join(
        f"{l} {report['overall'][s]['degenerate_rate']:.2f}" for l, s in zip(LABELS, SETTINGS)))
    print()
    print("Topic fidelity (the answer names the asked topic), all prompts: " + ", ".join(
        f"{l} {sum(i.get('on_topic', True) for i in items if i['setting'] == s)}/"
        f"{sum(1 for i in items if i['setting'] == s)}" for l, s in zip(LABELS, SETTINGS)))
    print()
    controls(report, items)
    examples(items)


def controls(report, items):
    """Without the instruction: the check alone (raw_loose) unsteered, steered and along the random direction,
    then the guarded score steered, per steered single instruction."""
    ctrl = [i for i in report["items"] if i.get("control")]
    steered = sorted({i["instructions"][0] for i in items
                      if len(i["instructions"]) == 1 and i["setting"] == "no_instruction_steered" and i["steering"]})
    if not steered:
        return
    print("Without the instruction, single-instruction prompts: IFEval's check alone (unsteered, steered, random "
          "direction of the same norm, layer and mode), then this scoring steered and its topic fidelity:\n")
    print("| instruction | steering | n | check alone, unsteered | check alone, steered | check alone, random direction "
          "| check and not degenerate, steered | this scoring, steered | on topic, steered |")
    print("|---|---|--:|--:|--:|--:|--:|--:|--:|")
    for iid in steered:
        def pick(group, setting):
            return [i for i in group if len(i["instructions"]) == 1 and i["instructions"][0] == iid and i["setting"] == setting]
        un, st, rnd = pick(items, "no_instruction"), pick(items, "no_instruction_steered"), pick(ctrl, "no_instruction_steered")
        raw = lambda g: mean([i["raw_loose"][0] for i in g]) if g and "raw_loose" in g[0] else float("nan")
        print(f"| {iid} | {'; '.join(st[0]['steering'])} | {len(st)} | {raw(un):.2f} | {raw(st):.2f} | {raw(rnd):.2f} "
              f"| {mean([i['raw_loose'][0] and not i['degenerate'] for i in st]):.2f} "
              f"| {mean([i['loose'][0] for i in st]):.2f} | {mean([i.get('on_topic', True) for i in st]):.2f} |")
    print()


def clip(text, n=150):
    t = text.replace("\n", " / ").replace("|", "\\|")
    return t if len(t) <= n else t[:n] + "…"


def examples(items):
    """The first prompt of each steered instruction, unsteered and steered (no instruction in the prompt), then up to
    six failures of the steered setting: off-topic, degenerate or the check failed."""
    def verdict(i):
        if i["degenerate"]:
            return "fail: degenerate"
        if not i.get("on_topic", True):
            return "fail: off topic"
        return "pass" if all(i["loose"]) else "fail: check"
    rows = []
    seen = set()
    for i in items:
        if i["setting"] != "no_instruction_steered" or not i["steering"] or len(i["instructions"]) != 1:
            continue
        if i["instructions"][0] in seen:
            continue
        seen.add(i["instructions"][0])
        base = next(j for j in items if j["key"] == i["key"] and j["setting"] == "no_instruction")
        rows += [(base, "none"), (i, "; ".join(i["steering"]))]
    fails = [i for i in items if i["setting"] == "no_instruction_steered" and i["steering"] and verdict(i) != "pass"]
    step = max(1, len(fails) // 6)
    rows += [(i, "; ".join(i["steering"])) for i in fails[::step][:6]]
    offtopic = [i for i in items if i["setting"] == "no_instruction" and not i.get("on_topic", True)]
    rows += [(i, "none") for i in offtopic[:3]]
    if not rows:
        return
    print("Examples (no instruction in the prompt; the instruction that was steered for, then failures):\n")
    print("| prompt | instruction scored | steering | answer | verdict |")
    print("|---|---|---|---|---|")
    for i, steering in rows:
        print(f"| {i['prompt']} | {i['instructions'][0].split(':')[1]} | {steering} | {clip(i['response'])} | {verdict(i)} |")
    print()


if __name__ == "__main__":
    main()
