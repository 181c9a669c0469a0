#!/usr/bin/env python3
"""SST-2 few-shot scoring through llama-cpp-python: the llama.cpp side of the comparison.

Does the same 32-example scoring as the Rust engine, with the same prompt text:
4 demonstrations (train rows 0, 16, 1, 17), then each dev sentence; the prediction is
whichever of the single tokens " great" / " terrible" has the higher log-probability
(log-softmax over the full vocabulary) at the last context position.

Contexts are evaluated in dev order on one Llama object that is never reset, and each
one only decodes the tokens after the longest prefix it shares with the previous
context (the same KV-prefix reuse that Llama.generate does), so the demonstrations are
decoded once. Only the last position's logits are computed (no logits_all).

Timing: one warm-up pass over all 32 (not counted), then one timed pass;
ms per scored example = wall time of the timed pass / 32.

Not run in CI. Usage:
  bench/.venv/bin/python bench/llamacpp_score.py --model FILE.gguf [--json]
"""

import argparse
import ctypes
import json
import os
import sys
import time

import numpy as np

import llama_cpp
from llama_cpp import Llama

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.path.join(REPO, "examples", "sentiment", "data")

INSTRUCTION = "Classify the sentiment of each movie review as great or terrible.\n\n"
WORDS = {0: "terrible", 1: "great"}
DEMO_ROWS = [0, 16, 1, 17]
CHOICES = [" great", " terrible"]  # label 1, label 0
THREADS = 2
N_CTX = 2048


def read_tsv(path):
    """Rows (sentence, label) after the header; each line split on its LAST tab."""
    rows = []
    with open(path, encoding="utf-8", newline="") as f:
        lines = f.read().split("\n")
    header = lines[0].rstrip("\r")
    if header != "sentence\tlabel":
        sys.exit(f"{path}: unexpected header {header!r}")
    for line in lines[1:]:
        line = line.rstrip("\r")
        if not line:
            continue
        sentence, label = line.rsplit("\t", 1)
        rows.append((sentence, int(label)))
    return rows


def build_prefix(train):
    text = INSTRUCTION
    for i in DEMO_ROWS:
        sentence, label = train[i]
        text += f"Review: {sentence}\nSentiment: {WORDS[label]}\n\n"
    return text


def context_text(prefix, sentence):
    return prefix + f"Review: {sentence}\nSentiment:"


class Scorer:
    def __init__(self, model_path):
        self.llm = Llama(
            model_path=model_path,
            n_ctx=N_CTX,
            n_batch=N_CTX,
            n_ubatch=512,
            n_threads=THREADS,
            n_threads_batch=THREADS,
            logits_all=False,
            verbose=False,
        )
        self.n_vocab = self.llm.n_vocab()
        self.choice_ids = []
        for c in CHOICES:
            ids = self.tokenize(c)
            if len(ids) != 1:
                sys.exit(f"choice {c!r} is not a single token: {ids}")
            self.choice_ids.append(ids[0])
        self.reused_tokens = 0
        self.decoded_tokens = 0

    def tokenize(self, text):
        return self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=False)

    def last_logprobs(self, tokens):
        """Log-softmax at the last position of `tokens`, reusing the shared KV prefix."""
        llm = self.llm
        if len(tokens) > N_CTX:
            sys.exit(f"context of {len(tokens)} tokens exceeds n_ctx={N_CTX}")
        n_cached = llm.n_tokens
        prefix = 0
        cached = llm.input_ids[:n_cached]
        for a, b in zip(cached, tokens):
            if a != b:
                break
            prefix += 1
        if prefix == len(tokens):  # need at least one token decoded to get fresh logits
            prefix -= 1
        # Keep the first `prefix` cached positions; eval() drops the rest from the KV
        # cache (kv_cache_seq_rm from n_tokens) and decodes only the suffix.
        llm.n_tokens = prefix
        llm.eval(tokens[prefix:])
        self.reused_tokens += prefix
        self.decoded_tokens += len(tokens) - prefix
        ptr = llama_cpp.llama_get_logits_ith(llm.ctx, -1)
        logits = np.ctypeslib.as_array(
            ctypes.cast(ptr, ctypes.POINTER(ctypes.c_float)), shape=(self.n_vocab,)
        ).astype(np.float64)
        m = logits.max()
        lse = m + np.log(np.exp(logits - m).sum())
        return logits - lse

    def score(self, contexts):
        """[(logp_great, logp_terrible)] for each tokenized context, in order."""
        out = []
        for toks in contexts:
            lp = self.last_logprobs(toks)
            out.append(tuple(float(lp[i]) for i in self.choice_ids))
        return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, help="GGUF file")
    ap.add_argument("--json", action="store_true", help="print one JSON object only")
    args = ap.parse_args()

    train = read_tsv(os.path.join(DATA, "train.tsv"))
    dev = read_tsv(os.path.join(DATA, "dev.tsv"))
    assert len(train) == 32 and len(dev) == 32, (len(train), len(dev))
    assert [l for _, l in train] == [0] * 16 + [1] * 16, "train must be 16 neg then 16 pos"

    scorer = Scorer(args.model)
    prefix = build_prefix(train)
    texts = [context_text(prefix, s) for s, _ in dev]
    contexts = [scorer.tokenize(t) for t in texts]  # tokenization is outside the timing

    scorer.score(contexts)  # warm-up pass, not timed
    scorer.reused_tokens = scorer.decoded_tokens = 0
    t0 = time.perf_counter()
    results = scorer.score(contexts)
    elapsed = time.perf_counter() - t0

    if scorer.reused_tokens == 0:
        sys.exit("KV prefix was never reused: the demonstrations were re-decoded every time")

    preds = [1 if g > t else 0 for g, t in results]
    correct = sum(int(p == l) for p, (_, l) in zip(preds, dev))
    accuracy = correct / len(dev)
    ms_per = elapsed * 1000.0 / len(dev)
    model = os.path.basename(args.model)

    if args.json:
        print(json.dumps({"ms_per_scored_example": ms_per, "accuracy": accuracy, "model": model}))
        return

    total = sum(len(c) for c in contexts)
    print(f"model: {model}")
    print(f"llama-cpp-python {llama_cpp.__version__}, n_threads={THREADS}, n_ctx={N_CTX}")
    print(f"choice token ids: " + ", ".join(f"{c!r}={i}" for c, i in zip(CHOICES, scorer.choice_ids)))
    print(f"context tokens: {total} over {len(dev)} examples "
          f"(min {min(map(len, contexts))}, max {max(map(len, contexts))}); timed pass decoded "
          f"{scorer.decoded_tokens}, reused {scorer.reused_tokens} from the KV cache")
    print(f"accuracy: {correct}/{len(dev)} = {accuracy:.4f}")
    print(f"ms per scored example: {ms_per:.2f} (timed pass {elapsed * 1000.0:.1f} ms / {len(dev)})")
    for i in range(3):
        g, t = results[i]
        print(f"dev[{i}] label={dev[i][1]} logp(' great')={g:.6f} logp(' terrible')={t:.6f} "
              f"pred={preds[i]}")


if __name__ == "__main__":
    main()
