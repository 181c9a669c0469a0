#!/usr/bin/env python3
"""Builds the city-extraction task BENCHMARKS.md measures (a chat generation prompt, reward
exact_match): sentences that mention a person and a city, made from 12 sentence templates,
20 first names and 40 city names written for this, the answer the city's name. Drawn with
random.Random(5), distinct sentences: 16 train, 32 dev, 152 test.

Usage: python3 bench/dev/city.py DIR [--plain]   (writes DIR/city.prompt and DIR/data/*.jsonl)
--plain: the same task as a prompt without role markers (the chat template then makes it one
user message): the question, "Sentence: {{text}}" and "City:" on lines of their own.
"""
import json
import os
import random
import sys

PROMPT = """---
name: city
model: smollm2-135m-instruct
config:
  temperature: 0
  maxOutputTokens: 8
input:
  schema:
    text: string
reprompt.task: generate
reprompt.dataset: data/train.jsonl
reprompt.validation: data/dev.jsonl
reprompt.test: data/test.jsonl
reprompt.reward: exact_match
---
{{role "system"}}
You extract information from text.
{{role "user"}}
Which city is mentioned in this sentence? Reply with the city name only.
{{text}}
"""

PLAIN_BODY = """Which city is mentioned in this sentence? Reply with the city name only.
Sentence: {{text}}
City:
"""

CITIES = ["Paris", "Berlin", "Madrid", "Rome", "Vienna", "Prague", "Lisbon", "Dublin", "Oslo", "Warsaw",
          "Athens", "Cairo", "Nairobi", "Lagos", "Tokyo", "Seoul", "Beijing", "Delhi", "Mumbai", "Bangkok",
          "Sydney", "Toronto", "Chicago", "Boston", "Denver", "Seattle", "Lima", "Bogota", "Santiago", "Havana",
          "Istanbul", "Moscow", "Helsinki", "Zurich", "Geneva", "Milan", "Naples", "Munich", "Hamburg",
          "Amsterdam"]
NAMES = ["Maria", "John", "Aisha", "Kenji", "Lena", "Carlos", "Priya", "Tom", "Sofia", "Ahmed", "Olga", "Liam",
         "Chen", "Fatima", "Lucas", "Emma", "Raj", "Nina", "Omar", "Hana"]
TEMPLATES = [
    "{n} moved to {c} last spring to start a new job.",
    "After three years abroad, {n} finally returned home to {c}.",
    "The conference where {n} gave a talk was held in {c} this year.",
    "{n} says the best coffee she ever had was in {c}.",
    "Our flight to {c} was delayed, so {n} missed the meeting.",
    "{n} grew up in a small flat in {c} with four brothers.",
    "The museum in {c} that {n} recommended was closed on Monday.",
    "When {n} visited {c}, it rained every single day.",
    "{n} is opening a bakery in {c} next month.",
    "Tickets to {c} were cheap, so {n} booked two.",
    "It took {n} six hours to drive to {c} in the snow.",
    "{n} met her husband at a concert in {c}.",
]


def main(out, plain=False):
    rng = random.Random(5)
    rows, seen = [], set()
    while len(rows) < 200:
        template, name, city = rng.choice(TEMPLATES), rng.choice(NAMES), rng.choice(CITIES)
        sentence = template.format(n=name, c=city)
        if sentence not in seen:
            seen.add(sentence)
            rows.append({"text": sentence, "answer": city})
    os.makedirs(os.path.join(out, "data"), exist_ok=True)
    for name, part in [("train", rows[:16]), ("dev", rows[16:48]), ("test", rows[48:])]:
        with open(os.path.join(out, "data", f"{name}.jsonl"), "w") as f:
            for row in part:
                f.write(json.dumps(row) + "\n")
    with open(os.path.join(out, "city.prompt"), "w") as f:
        f.write(PROMPT[:PROMPT.index("---\n", 4) + 4] + PLAIN_BODY if plain else PROMPT)


if __name__ == "__main__":
    main(sys.argv[1], "--plain" in sys.argv[2:])
