#!/usr/bin/env bash
# Development run of the optimizer on an SST-2 development seed (87 or 100), never on the
# benchmark's seeds: `bench/dev/sst2.sh SEED TAG [reprompt optimize options…]` optimizes the
# example prompt on the seed's own 32/32 splits (no test split), then scores the winner on the
# development pool (bench/dev/sst-2/pool.tsv, ~670 sentences without the seed's own) and
# prints one line: train, validation, pool accuracy, evaluations, seconds and the edits
# (BUDGET=N: another budget than 2000).
# Runs live in bench/build/dev/.
set -euo pipefail
if [[ $# -lt 2 ]]; then
    echo "usage: bench/dev/sst2.sh 87|100 TAG [reprompt optimize options…]" >&2
    exit 2
fi
seed=$1 tag=$2
shift 2
case $seed in 87 | 100) ;; *) echo "seed must be 87 or 100" >&2; exit 2 ;; esac
root=$(cd "$(dirname "$0")/../.." && pwd)
bin=$(realpath "${REPROMPT:-$root/target/release/reprompt}")
dir=$root/bench/build/dev/sst-2-$seed
mkdir -p "$dir/data"
cp "$root/bench/dev/sst-2/16-$seed/train.tsv" "$root/bench/dev/sst-2/16-$seed/dev.tsv" "$dir/data/"
python3 - "$root/bench/dev/sst-2" "$seed" "$dir/data/extra.tsv" <<'PY'
import sys
base, seed, out = sys.argv[1:]
rows = lambda f: open(f).read().splitlines()[1:]
own = {l.rsplit('\t', 1)[0] for s in ('train', 'dev') for l in rows(f'{base}/16-{seed}/{s}.tsv')}
extra = [l for l in rows(f'{base}/pool.tsv') if l.rsplit('\t', 1)[0] not in own]
open(out, 'w').write('sentence\tlabel\n' + '\n'.join(extra) + '\n')
PY
sed 's/^reprompt.test:.*//' "$root/examples/sentiment/sentiment.prompt" > "$dir/sentiment.prompt"
cd "$dir"
"$bin" optimize sentiment.prompt --budget "${BUDGET:-2000}" --no-test --json --seed "$seed" --run-dir "$dir/run-$tag" --fresh "$@" \
    > "$dir/$tag.json"
python3 -c 'import json,re,sys; r=json.load(open(sys.argv[1])); print(re.sub(r"reprompt.validation: .*", "reprompt.validation: data/extra.tsv", r["text"]), end="")' \
    "$dir/$tag.json" > "$dir/$tag-best.prompt"
extra=$("$bin" score "$dir/$tag-best.prompt" --json | python3 -c 'import json,sys; print("%.1f" % (100 * json.load(sys.stdin)["aggregate"]["mean"]))')
python3 - "$dir/$tag.json" "$extra" "$seed" "$tag" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
b = r['best']
print(f"seed {sys.argv[3]} {sys.argv[4]}: train {100*b['train']:.1f} validation {100*b['validation']:.1f} "
      f"pool {sys.argv[2]} evaluations {r['evaluations']} seconds {r['seconds']:.0f} | {' ; '.join(r['edits'])}")
PY
