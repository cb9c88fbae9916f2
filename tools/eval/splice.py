"""Replaces each generated block of docs/evaluation.md with the file it names, so the page's tables are always the
ones reproduce.sh just wrote. A block is

    <!-- generated: evaluation/test-instruct.md -->
    ...anything...
    <!-- end generated -->

(paths relative to the page; a "#### title" first line of the file is dropped). The prose around the blocks is
written by hand and must be updated when the numbers it quotes change.

    python3 tools/eval/splice.py docs/evaluation.md
"""
import os
import re
import sys

page = sys.argv[1]
base = os.path.dirname(os.path.abspath(page))
text = open(page, encoding="utf-8").read()
block = re.compile(r"(<!-- generated: (?P<file>[^ ]+) -->\n)(?P<body>.*?)(<!-- end generated -->)", re.S)


def fill(m):
    body = open(os.path.join(base, m.group("file")), encoding="utf-8").read().strip()
    body = re.sub(r"\A#### [^\n]*\n\n", "", body)
    return m.group(1) + body + "\n" + m.group(4)


new, count = block.subn(fill, text)
if count == 0:
    sys.exit(f"{page}: no generated blocks")
tmp = page + ".tmp"
with open(tmp, "w", encoding="utf-8") as f:
    f.write(new)
os.replace(tmp, page)
print(f"{page}: {count} generated blocks refreshed")
