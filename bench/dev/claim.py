#!/usr/bin/env python3
"""Builds the claim-check task BENCHMARKS.md measures (two input variables, labels no / yes)
from the SST-2 development pool (bench/dev/sst-2/pool.tsv, never the benchmark's splits):
each review paired with a claim about it, alternately one saying the review is positive and
one saying it is negative, from three wordings each; the label says whether the claim holds.
Shuffled with random.seed(11): 32 train, 32 dev, 300 test sentences.

Usage: python3 bench/dev/claim.py DIR   (writes DIR/claim.prompt and DIR/data/*.jsonl)
"""
import json
import os
import random
import sys

PROMPT = """---
name: claim-check
model: smollm2-135m-instruct
config:
  temperature: 0
  maxOutputTokens: 4
input:
  schema:
    review: string
    claim: string
reprompt.task: classify
reprompt.labels: [no, yes]
reprompt.dataset: data/train.jsonl
reprompt.validation: data/dev.jsonl
reprompt.test: data/test.jsonl
reprompt.reward: accuracy
---
{{role "system"}}
You check claims about movie reviews.
{{role "user"}}
Review: {{review}}
Claim: {{claim}}
Is the claim true? Answer yes or no.
"""

POSITIVE = ["The reviewer liked the movie.", "The review is favorable.", "The critic recommends this film."]
NEGATIVE = ["The reviewer disliked the movie.", "The review is unfavorable.", "The critic warns against this film."]


def main() -> None:
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    out = sys.argv[1]
    pool = os.path.join(os.path.dirname(os.path.abspath(__file__)), "sst-2", "pool.tsv")
    with open(pool, encoding="utf-8") as f:
        rows = [line.rstrip("\n").rsplit("\t", 1) for line in f][1:]
    random.seed(11)
    random.shuffle(rows)
    os.makedirs(os.path.join(out, "data"), exist_ok=True)
    for name, chunk in [("train", rows[:32]), ("dev", rows[32:64]), ("test", rows[64:364])]:
        with open(os.path.join(out, "data", f"{name}.jsonl"), "w", encoding="utf-8") as f:
            for i, (sentence, label) in enumerate(chunk):
                says_positive = i % 2 == 0
                claim = random.choice(POSITIVE if says_positive else NEGATIVE)
                holds = int((label == "1") == says_positive)
                f.write(json.dumps({"review": sentence, "claim": claim, "label": holds}) + "\n")
    with open(os.path.join(out, "claim.prompt"), "w", encoding="utf-8") as f:
        f.write(PROMPT)


if __name__ == "__main__":
    main()
