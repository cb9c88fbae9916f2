#!/usr/bin/env python3
"""Summaries for docs/evaluation.md from `onnxsteer eval --json-out` reports (standard library only).

usage: summarize.py REPORT.json [LABEL]

Prints Markdown: the format-instruction average (the paper's headline), length split by relation,
word exclusion, and composition (prompt-level accuracy of the two-instruction prompts, and each
instruction's own accuracy inside them).
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


if __name__ == "__main__":
    main()
