"""Hand-written byte-level BPE (GPT-2 style) trainer and encoder that writes a Hugging Face tokenizer.json.

The encoder here is the reference: Hugging Face tokenizers, transformers.js and
Microsoft.ML.Tokenizers must produce the same ids from the written tokenizer.json
(checked against transformers.js; golden pairs in tokenizer_golden.json).

Layout of the vocabulary: ids 0-2 are the special tokens, 3-258 the 256 byte symbols (in byte
order, through GPT-2's bytes-to-unicode map), then one token per merge in merge order.
"""
import argparse
import json
import os
import re
from collections import Counter

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
ENDOFTEXT, IM_START, IM_END = 0, 1, 2

# GPT-2's pre-tokenizer regex. Python's `re` has no \p{L}/\p{N}: [^\W\d_] is "letter", \d is
# "number", and (?:[^\s\w]|_) is "neither letter, number nor space" (underscore is not a letter).
# These agree with the Unicode classes on all ASCII text, which is all the corpus contains.
GPT2_PATTERN = re.compile(
    r"""'s|'t|'re|'ve|'m|'ll|'d| ?[^\W\d_]+| ?\d+| ?(?:[^\s\w]|_)+|\s+(?!\S)|\s+""")
SPECIAL_SPLIT = re.compile("(" + "|".join(re.escape(s) for s in SPECIALS) + ")")

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")


def bytes_to_unicode():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs]))


BYTE_ENCODER = bytes_to_unicode()
BYTE_DECODER = {v: k for k, v in BYTE_ENCODER.items()}


def pretokenize(text):
    """Pre-tokens of a text without special tokens, each mapped through bytes-to-unicode."""
    return ["".join(BYTE_ENCODER[b] for b in m.encode("utf-8")) for m in GPT2_PATTERN.findall(text)]


def train_bpe(word_counts: Counter, vocab_size: int):
    """Classic BPE on pre-token counts. Ties are broken by the pair's string order (deterministic).
    Pair counts are updated incrementally (only the words that contain the merged pair are rescanned): the
    corpus has tens of thousands of one-off made-up words, too many to recount every pair at every merge."""
    words = [list(w) for w in word_counts]
    counts = [word_counts[w] for w in word_counts]
    pairs = Counter()
    where = {}
    for i, syms in enumerate(words):
        for p in zip(syms, syms[1:]):
            pairs[p] += counts[i]
            where.setdefault(p, set()).add(i)
    merges = []
    n_merges = vocab_size - len(SPECIALS) - 256
    for _ in range(n_merges):
        if not pairs:
            break
        best = min(pairs.items(), key=lambda kv: (-kv[1], kv[0]))[0]
        merges.append(best)
        a, b = best
        for i in sorted(where.pop(best, ())):
            syms = words[i]
            for p in zip(syms, syms[1:]):
                pairs[p] -= counts[i]
                if pairs[p] <= 0:
                    del pairs[p]
            j = 0
            out = []
            while j < len(syms):
                if j + 1 < len(syms) and syms[j] == a and syms[j + 1] == b:
                    out.append(a + b)
                    j += 2
                else:
                    out.append(syms[j])
                    j += 1
            words[i] = out
            for p in zip(out, out[1:]):
                pairs[p] += counts[i]
                where.setdefault(p, set()).add(i)
    return merges


class Tokenizer:
    def __init__(self, vocab: dict, merges: list):
        self.vocab = vocab
        self.inv = {i: t for t, i in vocab.items()}
        self.ranks = {tuple(m): r for r, m in enumerate(merges)}
        self.merges = merges
        self.cache = {}

    @staticmethod
    def build(merges):
        vocab = {s: i for i, s in enumerate(SPECIALS)}
        for b in range(256):
            vocab[BYTE_ENCODER[b]] = len(vocab)
        for a, b in merges:
            vocab[a + b] = len(vocab)
        return Tokenizer(vocab, merges)

    def bpe(self, word):
        if word in self.cache:
            return self.cache[word]
        syms = list(word)
        while len(syms) > 1:
            # Lowest-rank pair, leftmost occurrence first (same as HF tokenizers and GPT-2).
            best, best_i = None, -1
            for i in range(len(syms) - 1):
                r = self.ranks.get((syms[i], syms[i + 1]))
                if r is not None and (best is None or r < best):
                    best, best_i = r, i
            if best is None:
                break
            syms = syms[:best_i] + [syms[best_i] + syms[best_i + 1]] + syms[best_i + 2:]
        ids = [self.vocab[s] for s in syms]
        self.cache[word] = ids
        return ids

    def encode(self, text):
        ids = []
        for part in SPECIAL_SPLIT.split(text):
            if not part:
                continue
            if part in SPECIALS:
                ids.append(self.vocab[part])
                continue
            for w in pretokenize(part):
                ids.extend(self.bpe(w))
        return ids

    def decode(self, ids, skip_special=False):
        out = []
        buf = []
        for i in ids:
            t = self.inv[i]
            if t in SPECIALS:
                if buf:
                    out.append(bytes(buf).decode("utf-8", errors="replace"))
                    buf = []
                if not skip_special:
                    out.append(t)
            else:
                buf.extend(BYTE_DECODER[c] for c in t)
        if buf:
            out.append(bytes(buf).decode("utf-8", errors="replace"))
        return "".join(out)

    def to_hf_json(self):
        added = [{"id": i, "content": s, "single_word": False, "lstrip": False, "rstrip": False,
                  "normalized": False, "special": True} for i, s in enumerate(SPECIALS)]
        return {
            "version": "1.0",
            "truncation": None,
            "padding": None,
            "added_tokens": added,
            "normalizer": None,
            "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True},
            "post_processor": None,
            "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
            "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": "",
                      "end_of_word_suffix": "", "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                      "vocab": self.vocab, "merges": [a + " " + b for a, b in self.merges]},
        }

    def save(self, folder, model_max_length=256):
        os.makedirs(folder, exist_ok=True)
        with open(os.path.join(folder, "tokenizer.json"), "w", encoding="utf-8", newline="\n") as f:
            json.dump(self.to_hf_json(), f, ensure_ascii=False, indent=1)
        cfg = {
            "add_bos_token": False,
            "add_eos_token": False,
            "add_prefix_space": False,
            "added_tokens_decoder": {str(i): {"content": s, "lstrip": False, "normalized": False, "rstrip": False,
                                              "single_word": False, "special": True} for i, s in enumerate(SPECIALS)},
            "additional_special_tokens": ["<|im_start|>", "<|im_end|>"],
            "bos_token": "<|endoftext|>",
            "eos_token": "<|im_end|>",
            "pad_token": "<|endoftext|>",
            "unk_token": None,
            "chat_template": CHAT_TEMPLATE,
            "clean_up_tokenization_spaces": False,
            "errors": "replace",
            "model_max_length": model_max_length,
            "split_special_tokens": False,
            "tokenizer_class": "Qwen2Tokenizer",
        }
        with open(os.path.join(folder, "tokenizer_config.json"), "w", encoding="utf-8", newline="\n") as f:
            json.dump(cfg, f, ensure_ascii=False, indent=1)
        smap = {"bos_token": "<|endoftext|>", "eos_token": "<|im_end|>", "pad_token": "<|endoftext|>",
                "additional_special_tokens": ["<|im_start|>", "<|im_end|>"]}
        with open(os.path.join(folder, "special_tokens_map.json"), "w", encoding="utf-8", newline="\n") as f:
            json.dump(smap, f, indent=1)

    @staticmethod
    def load(folder):
        with open(os.path.join(folder, "tokenizer.json"), encoding="utf-8") as f:
            j = json.load(f)
        merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in j["model"]["merges"]]
        return Tokenizer(j["model"]["vocab"], merges)


def render_chat(messages, add_generation_prompt=False):
    """Python equivalent of CHAT_TEMPLATE."""
    s = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages)
    if add_generation_prompt:
        s += "<|im_start|>assistant\n"
    return s


def example_text(ex):
    if "messages" in ex:
        return render_chat(ex["messages"])
    return "<|endoftext|>" + ex["text"] + "<|endoftext|>"


GOLDEN_TEXTS = [
    "Tell me about the river.",
    "A dog is an animal that you can find in many homes.",
    "Use only lowercase letters in your response.",
    "A DOG IS AN ANIMAL, AND YOU CAN FIND IT IN MANY HOMES.",
    '{"topic": "honey", "answer": "Honey is sweet."}',
    "<<All About the Moon>>\nThe moon is bright.",
    "* People often use the kite.\n* It is light.",
    "End your response with 'Is there anything else I can help with?'",
    "<|im_start|>user\nDescribe the owl.<|im_end|>\n<|im_start|>assistant\n",
    "<|endoftext|>Hello world<|im_end|>",
    "  leading spaces and   multiple   gaps  ",
    "Tabs\tand\nnew lines\n\n",
    "Numbers 123 and 4567 and 3.14",
    "don't you'll we're I'm it's they've he'd",
    "snake_case and under_score_words",
    "Ünïcödé café naïve résumé",
    "emoji 🙂 and 漢字 text",
    "punctuation!!! ... ??? ;;; -- (parens) [brackets] {braces}",
    "Your entire response should be in English, and in all capital letters.",
    '"Wrap your entire response with double quotation marks."',
]


def main():
    ap = argparse.ArgumentParser()
    here = os.path.dirname(os.path.abspath(__file__))
    ap.add_argument("--work", default=os.path.join(here, "work"))
    ap.add_argument("--vocab-size", type=int, default=1536)
    ap.add_argument("--golden", default=os.path.join(here, "tokenizer_golden.json"))
    args = ap.parse_args()

    counts = Counter()
    for name in ("instruct.jsonl", "base.jsonl"):
        with open(os.path.join(args.work, "corpus", name), encoding="utf-8") as f:
            for line in f:
                for part in SPECIAL_SPLIT.split(example_text(json.loads(line))):
                    if part and part not in SPECIALS:
                        counts.update(pretokenize(part))
    # Trained on the training corpus only. (It used to add every topic word, held-out ones included, as a whole
    # token: those tokens never occurred in training, their embedding and lm_head rows stayed untrained, and the
    # model could not write a held-out topic however well it learned to copy. Now a held-out word is split into
    # sub-word pieces that the training text, with its many made-up topic words, uses.)
    tok = Tokenizer.build(train_bpe(counts, args.vocab_size))
    out = os.path.join(args.work, "tokenizer")
    tok.save(out)
    golden = [{"text": t, "ids": tok.encode(t)} for t in GOLDEN_TEXTS]
    for g in golden:
        assert tok.decode(g["ids"]) == g["text"], g
    with open(args.golden, "w", encoding="utf-8", newline="\n") as f:
        json.dump({"tokenizer": "tools/train/work/tokenizer/tokenizer.json (copied into models/*/)",
                   "note": "ids from tools/train/tokenizer.py; verified against transformers.js",
                   "pairs": golden}, f, ensure_ascii=False, indent=1)
    print(f"vocab {len(tok.vocab)}, merges {len(tok.merges)}, word types {len(counts)} -> {out}")


if __name__ == "__main__":
    main()
