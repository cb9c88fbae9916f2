"""Scores generations written by js/generate.mjs with sample.py's checks: python3 score.py FILE.json [EVERY_NTH_TO_PRINT]"""
import json, sys
sys.path.insert(0, __import__('os').path.dirname(__import__('os').path.abspath(__file__)))
from sample import check
rows = json.load(open(sys.argv[1]))
tab = {}
for r in rows:
    g = '+'.join(r['instruction_id_list'])
    cw = all(check(i, k, r['without']) for i, k in zip(r['instruction_id_list'], r['kwargs']))
    ci = all(check(i, k, r['with']) for i, k in zip(r['instruction_id_list'], r['kwargs']))
    t = tab.setdefault(g, [0, 0, 0]); t[0] += cw; t[1] += ci; t[2] += 1
    r['ok_without'], r['ok_with'] = cw, ci
tw = sum(t[0] for t in tab.values()); ti = sum(t[1] for t in tab.values()); n = sum(t[2] for t in tab.values())
print('| instruction | no instruction | with instruction | n |\n|---|---|---|---|')
for g, (a, b, c) in tab.items():
    print(f'| {g} | {a/c:.2f} | {b/c:.2f} | {c} |')
print(f'| all | {tw/n:.2f} | {ti/n:.2f} | {n} |')
if len(sys.argv) > 2:
    for r in rows[:: int(sys.argv[2])]:
        print(f"\n{r['prompt']} | {r['instruction']}\n  without [{'ok' if r['ok_without'] else 'x'}]: {r['without']!r}\n  with    [{'ok' if r['ok_with'] else 'x'}]: {r['with']!r}")
