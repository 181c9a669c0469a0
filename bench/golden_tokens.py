#!/usr/bin/env python3
"""Golden tokenizer ids from llama.cpp for SmolLM2-135M-Instruct.

Tokenizes a fixed list of strings with llama.cpp (llama-cpp-python, vocab_only=True,
add_bos=False, special=True) and writes daemon/tests/data/golden_token_ids.json as a JSON
list of {"text": ..., "ids": [...]}. Each ids list is decoded back with llama.cpp
(detokenize, special=True) and must round-trip to the same text; any that does not is
reported and the script exits non-zero (the file is still written).

Not run in CI. Needs bench/llamacpp.sh --setup-only first. Usage:
  bench/.venv/bin/python bench/golden_tokens.py [--model FILE.gguf] [--out FILE] [--check]
(--check: compare with the existing output file instead of writing it)
"""

import argparse
import json
import os
import sys

from llama_cpp import Llama

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
DEFAULT_MODEL = os.path.join(HERE, "build", "model", "SmolLM2-135M-Instruct.Q4_1.gguf")
DEFAULT_OUT = os.path.join(REPO, "daemon", "tests", "data", "golden_token_ids.json")

TEXTS = [
    "Hello world",
    "In 2024, 12345 people ran 3.14 km.",
    " leading space",
    "two\nlines\n\n",
    "<|im_start|>user\nHi!<|im_end|>\n<|im_start|>assistant\n",
    "naïve café — 東京 🙂",
    "don't I'll we've",
    "Review: a gem of a film\nSentiment: great",
    "   indented\ttab",
    "great terrible Great TERRIBLE",
]


def render(entries):
    lines = [json.dumps(e, ensure_ascii=False) for e in entries]
    return "[\n  " + ",\n  ".join(lines) + "\n]\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=DEFAULT_MODEL)
    ap.add_argument("--out", default=DEFAULT_OUT)
    ap.add_argument("--check", action="store_true")
    args = ap.parse_args()

    llm = Llama(model_path=args.model, vocab_only=True, verbose=False)
    entries, bad = [], []
    for text in TEXTS:
        ids = llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)
        back = llm.detokenize(ids, special=True).decode("utf-8", errors="replace")
        entries.append({"text": text, "ids": ids})
        status = "ok" if back == text else "MISMATCH"
        if back != text:
            bad.append((text, back))
        print(f"{status:8} {json.dumps(text, ensure_ascii=False)} -> {ids}", file=sys.stderr)

    out = render(entries)
    if args.check:
        with open(args.out, encoding="utf-8") as f:
            same = f.read() == out
        print("golden file matches" if same else "golden file DIFFERS", file=sys.stderr)
        if not same:
            sys.exit(1)
    else:
        os.makedirs(os.path.dirname(args.out), exist_ok=True)
        with open(args.out, "w", encoding="utf-8") as f:
            f.write(out)
        print(f"wrote {args.out} ({len(entries)} strings)", file=sys.stderr)

    for text, back in bad:
        print(f"round-trip failed: {text!r} -> {back!r}", file=sys.stderr)
    if bad:
        sys.exit(2)
    print(f"all {len(entries)} strings round-trip", file=sys.stderr)


if __name__ == "__main__":
    main()
