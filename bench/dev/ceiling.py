#!/usr/bin/env python3
"""How high can a prompt take SmolLM2-135M-Instruct on SST-2? Development data only.

Scores hand-written prompt families (templates, label words, demonstrations, the chat layout)
on the development pool (bench/dev/sst-2/pool.tsv without the seed-87 splits, never the
benchmark's test set) with `reprompt score --json`, and prints for each: the accuracy as
written, the accuracy with label offsets fitted on the 32 seed-87 training sentences by prior
matching (what the optimizer's calibration edit writes, `reprompt.label_bias`), and the best
accuracy any offset reaches on the pool itself (chosen in hindsight: an upper bound for
calibrating that prompt). Then, from one prompt scored with 81 single-token sentiment words as
labels, the best label-word groups chosen on the pool itself (an upper bound for label words
at that template).

Usage: bench/dev/ceiling.py   (from the repository root, after `cargo build --release`)
Runs in bench/build/dev/ceiling/; takes ~20 minutes on 2 cores.
"""

import json
import math
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.environ.get("REPROMPT", os.path.join(ROOT, "target/release/reprompt"))
WORK = os.path.join(ROOT, "bench/build/dev/ceiling")
DEV = os.path.join(ROOT, "bench/dev/sst-2")

D = "as a remake , it 's a pale imitation ."
E = "poignant and funny ."
F = "chai 's structure and pacing are disconcertingly slack ."
G = "hugely accomplished slice of hitchcockian suspense ."

REVIEW = "Review: {{sentence}}\nSentiment:"
MOVIE = "Movie review: {{sentence}}\nThe sentiment of this review is"


def demos(pairs, lead, cue):
    return "".join(f"{lead}{s}\n{cue} {a}\n\n" for s, a in pairs)


PROMPTS = [
    ("review-negative-positive", "[negative, positive]", "plain", REVIEW),
    ("review-terrible-great", "[terrible, great]", "plain", REVIEW),
    ("review-bad-good", "[bad, good]", "plain", REVIEW),
    ("review-poor-excellent", "[poor, excellent]", "plain", REVIEW),
    ("text-negative-positive", "[negative, positive]", "plain", "Text: {{sentence}}\nSentiment:"),
    ("review-completion", "[negative, positive]", "plain",
     "Review: {{sentence}}\nThe sentiment of this review is"),
    ("movie-colon", "[negative, positive]", "plain", "Movie review: {{sentence}}\nSentiment:"),
    ("movie-negative-positive", "[negative, positive]", "plain", MOVIE),
    ("movie-overall", "[negative, positive]", "plain",
     "Movie review: {{sentence}}\nOverall, the sentiment of this review is"),
    ("instruction-review", "[negative, positive]", "plain",
     "Classify the sentiment of the movie review as positive or negative.\n\n" + REVIEW),
    ("question-answer", "[negative, positive]", "plain",
     "{{sentence}}\nQuestion: Is this movie review positive or negative?\nAnswer:"),
    ("it-was-terrible-great", "[terrible, great]", "plain", "{{sentence}} It was"),
    ("chat-answer-prefix", "[negative, positive]", "chat",
     '{{role "user"}}\nReview: {{sentence}}\nIs the sentiment of this review positive or negative?\n'
     '{{role "model"}}\nSentiment:'),
    ("chat-example", "[terrible, great]", "chat",
     '{{role "system"}}\nYou are a helpful assistant that classifies the sentiment of movie reviews.\n'
     '{{role "user"}}\nReview: {{sentence}}\nIs the sentiment of this review great or terrible? '
     'Answer with one word.'),
    ("review-2-demos", "[negative, positive]", "plain",
     demos([(D, "negative"), (E, "positive")], "Review: ", "Sentiment:") + REVIEW),
    ("review-4-demos", "[negative, positive]", "plain",
     demos([(D, "negative"), (E, "positive"), (F, "negative"), (G, "positive")], "Review: ", "Sentiment:")
     + REVIEW),
    ("movie-2-demos", "[negative, positive]", "plain",
     demos([(D, "negative"), (E, "positive")], "Movie review: ", "The sentiment of this review is") + MOVIE),
]

WORDS = (
    "negative positive terrible great bad good poor excellent awful wonderful boring fun dull brilliant horrible "
    "amazing weak strong disappointing enjoyable worst best beautiful hate love sad happy annoying funny stupid "
    "smart ugly charming mixed perfect negatively positively flawed moving tedious entertaining fresh mess "
    "masterpiece unpleasant pleasant disappointment delight superb fantastic worse better fail success failure "
    "nice dumb clever solid silly lovely painful joy waste gem trash treasure cheap rich empty powerful angry "
    "hopeful dark bright cold warm pointless thrilling tired inspiring"
).split()


def rows(path):
    with open(path) as f:
        return [line.rsplit("\t", 1) for line in f.read().splitlines()[1:]]


def write_prompt(name, labels, layout, body):
    path = os.path.join(WORK, f"{name}.prompt")
    with open(path, "w") as f:
        f.write(
            "---\nmodel: smollm2-135m-instruct\ninput:\n  schema:\n    sentence: string\n"
            f"reprompt.labels: {labels}\nreprompt.dataset: data/train.tsv\nreprompt.validation: data/pool.tsv\n"
            f"reprompt.format: {layout}\nreprompt.reward: accuracy\n---\n{body}\n"
        )
    return path


def score(path, split):
    out = subprocess.run([BIN, "score", path, "--split", split, "--json"], check=True, capture_output=True, text=True)
    return json.loads(out.stdout)["examples"]


def log_probs(examples, labels):
    """Per example: the labels' log-probabilities and the gold label id."""
    return [([math.log(max(p, 1e-30)) for p in e["label_probabilities"]], labels.index(e["gold"])) for e in examples]


def accuracy(scored, offset=0.0):
    return sum((lp[1] - lp[0] + offset > 0) == (g == 1) for lp, g in scored) / len(scored)


def hindsight(scored):
    """The best accuracy over every offset: one sweep over the examples sorted by margin."""
    items = sorted((lp[1] - lp[0], g) for lp, g in scored)
    correct = best = sum(g == 1 for _, g in items)  # offset so high that all answer label 1
    for i, (margin, g) in enumerate(items):
        correct += 1 if g == 0 else -1  # the cut moves past this example: it answers label 0
        if i + 1 == len(items) or items[i + 1][0] != margin:
            best = max(best, correct)
    return best / len(items)


def prior_matched(scored):
    """The optimizer's calibration for two labels: the offset that makes the mean probability of
    the second label equal to its (add-one smoothed) share of the gold labels."""
    n = len(scored)
    target = (sum(g for _, g in scored) + 1) / (n + 2)
    b = 0.0
    for _ in range(500):
        mean = sum(1 / (1 + math.exp(-(lp[1] - lp[0] + b))) for lp, _ in scored) / n
        step = math.log(target / mean) - math.log((1 - target) / (1 - mean))
        b += step
        if abs(step) < 1e-9:
            break
    return b


def main():
    os.makedirs(os.path.join(WORK, "data"), exist_ok=True)
    own = {s for split in ("train", "dev") for s, _ in rows(f"{DEV}/16-87/{split}.tsv")}
    pool = [(s, l) for s, l in rows(f"{DEV}/pool.tsv") if s not in own]
    with open(os.path.join(WORK, "data/pool.tsv"), "w") as f:
        f.write("sentence\tlabel\n" + "".join(f"{s}\t{l}\n" for s, l in pool))
    with open(os.path.join(WORK, "data/train.tsv"), "w") as f:
        f.write(open(f"{DEV}/16-87/train.tsv").read())
    print(f"development pool: {len(pool)} sentences; calibration fitted on the 32 seed-87 training sentences\n")
    print("| prompt | labels | as written | calibrated (fit on train) | best offset in hindsight |")
    print("|---|---|---|---|---|")
    for name, labels, layout, body in PROMPTS:
        path = write_prompt(name, labels, layout, body)
        words = labels.strip("[]").split(", ")
        train = log_probs(score(path, "train"), words)
        held = log_probs(score(path, "validation"), words)
        b = prior_matched(train)
        print(f"| {name} | {' / '.join(words)} | {100 * accuracy(held):.1f} | {100 * accuracy(held, b):.1f} "
              f"| {100 * hindsight(held):.1f} |", flush=True)

    # Label words at the Review template: 81 words scored as 81 labels.
    path = write_prompt("review-81-words", "[" + ", ".join(WORDS) + "]", "plain", REVIEW)
    examples = score(path, "validation")
    gold = [0 if s_l[1] == "0" else 1 for s_l in pool]
    lps = [[math.log(max(p, 1e-30)) for p in e["label_probabilities"]] for e in examples]

    def lse(values):
        m = max(values)
        return m + math.log(sum(math.exp(v - m) for v in values))

    def group_scored(neg, pos):
        return [([lse([lp[WORDS.index(w)] for w in neg]), lse([lp[WORDS.index(w)] for w in pos])], g)
                for lp, g in zip(lps, gold)]

    best_pair = max(((hindsight(group_scored([a], [b])), a, b) for a in WORDS for b in WORDS if a != b))
    print(f"\nbest label pair at the Review template, chosen on the pool itself: {best_pair[1]} / {best_pair[2]} "
          f"{100 * best_pair[0]:.1f} (best offset in hindsight)")
    neg, pos = ["negative"], ["positive"]
    for _ in range(8):
        options = []
        for w in WORDS:
            if w in neg or w in pos:
                continue
            options.append((hindsight(group_scored(neg + [w], pos)), neg + [w], pos))
            options.append((hindsight(group_scored(neg, pos + [w])), neg, pos + [w]))
        value, neg, pos = max(options, key=lambda o: o[0])
    print(f"greedy word groups chosen on the pool itself ({len(neg)} / {len(pos)} words): "
          f"{', '.join(neg)} / {', '.join(pos)} {100 * value:.1f} (best offset in hindsight)")


if __name__ == "__main__":
    sys.exit(main())
