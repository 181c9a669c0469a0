//! `reprompt bench optimize`: the SST-2 example prompt through PPO and every baseline at the
//! same budget, on several few-shot seeds — one table of train/validation/test accuracy,
//! evaluations and wall time (the author's prompt is the `manual` row), PPO's test accuracy
//! against each baseline paired over the same sentences, and a learning-curve plot with one
//! line per strategy.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use serde::Serialize;

use super::optimize::{
    EditOptions, PolicyChoice, Report, WarmStart, lock_run_dir, optimize, progress_bar, read_prompt, show_progress,
};
use super::plot::plot;
use crate::cli::score::open_engine;
use crate::engine::DeviceChoice;
use crate::eval::{EvalCache, Evaluator, FileCache, stats};
use crate::optimize::search::{CurvePoint, SearchConfig, Strategy};

#[derive(Debug, clap::Args)]
pub struct OptimizeBenchArgs {
    /// Benchmark task (sst-2: the example prompt on the 16-shot SST-2 splits)
    #[arg(long, default_value = "sst-2")]
    pub task: String,
    /// Few-shot split seeds (13 ships with the example; 21 and 42 in bench/data)
    #[arg(long, value_delimiter = ',', default_value = "13,21,42")]
    pub seeds: Vec<u64>,
    /// Example evaluations per strategy and seed (validation included)
    #[arg(long, default_value_t = super::optimize::DEFAULT_BUDGET)]
    pub budget: usize,
    /// Strategies to run, in order
    #[arg(long, value_enum, value_delimiter = ',', default_value = "random,greedy,evolution,ppo")]
    pub strategies: Vec<Strategy>,
    /// Runs of each strategy per split, each with its own search seed: run r searches with
    /// seed `split + 1000·r` (run 0 with the split's own seed, as a single run does), so the
    /// table averages over the search's luck as well as over splits
    #[arg(long, default_value_t = 1, value_parser = crate::cli::at_least_one)]
    pub repeats: usize,
    /// Score only the first N test sentences (default: all 1821)
    #[arg(long, value_parser = crate::cli::at_least_one)]
    pub test_limit: Option<usize>,
    #[command(flatten)]
    pub edits: EditOptions,
    /// Repository root (where `examples/` and `bench/data/` are)
    #[arg(long, default_value = ".")]
    pub root: PathBuf,
    /// Working directory for the per-seed prompts, run directories and the plot
    #[arg(long, default_value = "bench/build/optimize")]
    pub work: PathBuf,
    /// Keep finished or interrupted runs and resume them instead of starting over
    #[arg(long)]
    pub resume: bool,
    /// Where PPO's policy starts: none or a file from `reprompt pretrain`
    #[arg(long, default_value = "none")]
    pub policy: PolicyChoice,
    /// cpu, cuda or cuda:N
    #[arg(long, default_value = "cpu")]
    pub device: DeviceChoice,
    /// Print the table as JSON: {"rows": [{"strategy", "seed", "search_seed", "train",
    /// "validation", "test", "evaluations", "seconds"}], "paired": [{"strategy", "per_seed",
    /// "mean", "low", "high"}]}
    #[arg(long)]
    pub json: bool,
}

/// One line of the table.
#[derive(Clone, Debug, Serialize)]
pub struct Row {
    pub strategy: String,
    /// The few-shot split.
    pub seed: u64,
    /// The seed the search ran with (the split's own unless `--repeats` asked for more runs).
    pub search_seed: u64,
    pub train: f64,
    pub validation: f64,
    pub test: Option<f64>,
    pub evaluations: usize,
    pub seconds: f64,
}

/// PPO's test accuracy minus one baseline's, paired over the same test sentences.
#[derive(Clone, Debug, Serialize)]
pub struct Paired {
    /// The baseline.
    pub strategy: String,
    /// The difference on each split, in the order of `--seeds` (with `--repeats`, PPO's mean
    /// over the split's runs minus the baseline's).
    pub per_seed: Vec<f64>,
    /// The mean over splits, with a 95% two-level bootstrap interval: each resample draws the
    /// test sentences every split scores (once for all splits: one sentence scored on three
    /// splits is one sample, not three) and, within each split, each strategy's runs. It covers
    /// the test sentences and the searches' luck on these splits, not how much other splits
    /// would move the difference; with one run per split it covers the sentences alone.
    pub mean: f64,
    pub low: f64,
    pub high: f64,
}

/// PPO against every other strategy, from each run's per-sentence test scores (split seed,
/// strategy, scores; a split may hold several runs of a strategy); empty without PPO or without
/// test scores.
fn paired_with_ppo(scores: &[(u64, Strategy, Vec<f64>)], seeds: &[u64], strategies: &[Strategy]) -> Vec<Paired> {
    // A strategy's runs on one split, each run's score of every test sentence; none unless
    // there is a run and every run has scores.
    type Runs = Vec<Vec<f64>>;
    let of = |seed: u64, strategy: Strategy| -> Option<Runs> {
        let runs: Vec<Vec<f64>> =
            scores.iter().filter(|(s, k, _)| *s == seed && *k == strategy).map(|(.., v)| v.clone()).collect();
        (!runs.is_empty() && runs.iter().all(|v| !v.is_empty())).then_some(runs)
    };
    if !strategies.contains(&Strategy::Ppo) {
        return Vec::new();
    }
    strategies
        .iter()
        .filter(|&&s| s != Strategy::Ppo)
        .filter_map(|&baseline| {
            let pairs: Vec<(Runs, Runs)> = seeds
                .iter()
                .map(|&seed| Some((of(seed, baseline)?, of(seed, Strategy::Ppo)?)))
                .collect::<Option<_>>()
                .filter(|p: &Vec<_>| {
                    // Every run of every split scores the same test sentences, or none is paired.
                    let n = p.first().map(|(b, _)| b[0].len());
                    !p.is_empty() && p.iter().flat_map(|(b, q)| b.iter().chain(q)).all(|v| Some(v.len()) == n)
                })?;
            let groups: Vec<stats::RunsOf> = pairs.iter().map(|(b, p)| (b.as_slice(), p.as_slice())).collect();
            let accuracy = |runs: &[Vec<f64>]| {
                runs.iter().map(|v| v.iter().sum::<f64>() / v.len() as f64).sum::<f64>() / runs.len() as f64
            };
            let per_seed: Vec<f64> = pairs.iter().map(|(b, p)| accuracy(p) - accuracy(b)).collect();
            // Every split scores the same test sentences (one split, copied for each seed), so
            // a resample draws the sentences once for all splits; within each split it draws
            // each strategy's runs, so the interval covers the search's luck as well.
            let pooled = stats::paired_difference_over_runs(&groups, 7);
            Some(Paired {
                strategy: baseline.name().to_string(),
                per_seed,
                mean: pooled.mean,
                low: pooled.low,
                high: pooled.high,
            })
        })
        .collect()
}

/// The seed run `repeat` (from 0) of a split searches with: the split's own for the first, as
/// a single run does, so the default benchmark stays comparable with its earlier passes.
fn search_seed(split: u64, repeat: usize) -> u64 {
    split.wrapping_add(1000 * repeat as u64)
}

/// How the table and the progress name a run: its split, and the search seed where that is
/// not the split's own (`13`, `13/1013`).
fn run_label(split: u64, search: u64) -> String {
    if search == split { split.to_string() } else { format!("{split}/{search}") }
}

/// Where a run keeps its checkpoint and report: `runs/<strategy>` for the split's own search
/// seed, `runs/<strategy>-search-<seed>` for the others.
fn run_dir(work: &Path, split: u64, search: u64, strategy: Strategy) -> PathBuf {
    let runs = work.join(format!("sst-2-{split}")).join("runs");
    if search == split { runs.join(strategy.name()) } else { runs.join(format!("{}-search-{search}", strategy.name())) }
}

/// Lays out the example prompt with the seed's splits in `work/sst-2-<seed>/`.
fn prepare_seed(root: &Path, work: &Path, seed: u64) -> anyhow::Result<PathBuf> {
    let example = root.join("examples/sentiment");
    let (train, dev) = if seed == 13 {
        (example.join("data/train.tsv"), example.join("data/dev.tsv"))
    } else {
        let dir = root.join(format!("bench/data/sst-2/16-{seed}"));
        (dir.join("train.tsv"), dir.join("dev.tsv"))
    };
    if !train.is_file() || !dev.is_file() {
        bail!("no SST-2 16-shot split for seed {seed} (looked for {} and {})", train.display(), dev.display());
    }
    let dir = work.join(format!("sst-2-{seed}"));
    std::fs::create_dir_all(dir.join("data")).with_context(|| format!("creating {}", dir.display()))?;
    for (from, to) in [(train, "train.tsv"), (dev, "dev.tsv"), (example.join("data/test.tsv"), "test.tsv")] {
        std::fs::copy(&from, dir.join("data").join(to)).with_context(|| format!("copying {}", from.display()))?;
    }
    let prompt = dir.join("sentiment.prompt");
    std::fs::copy(example.join("sentiment.prompt"), &prompt).context("copying the example prompt")?;
    Ok(prompt)
}

/// The first value that comes again later in `values`.
fn repeated<T: PartialEq + Copy>(values: &[T]) -> Option<T> {
    values.iter().enumerate().find(|(i, v)| values[i + 1..].contains(v)).map(|(_, v)| *v)
}

/// Best-so-far train reward at each of `points` evenly spaced evaluation counts.
fn on_grid(curve: &[CurvePoint], budget: usize, points: usize) -> Vec<Option<f64>> {
    (0..=points)
        .map(|k| {
            let x = budget * k / points;
            curve.iter().take_while(|p| p.evaluations <= x).last().map(|p| p.train)
        })
        .collect()
}

pub fn run(args: &OptimizeBenchArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    if args.task != "sst-2" {
        bail!("unknown benchmark task `{}` (known: sst-2)", args.task);
    }
    // A split or strategy named twice would count its runs twice in the means and intervals.
    if let Some(seed) = repeated(&args.seeds) {
        bail!("--seeds names split {seed} more than once");
    }
    if let Some(strategy) = repeated(&args.strategies) {
        bail!("--strategies names {} more than once", strategy.name());
    }
    // One benchmark at a time in a work directory: they would share its runs' checkpoints.
    let _lock = lock_run_dir(&args.work)?;
    let mut rows: Vec<Row> = Vec::new();
    let mut curves: Vec<(Strategy, Vec<CurvePoint>)> = Vec::new();
    let mut evaluator: Option<Evaluator> = None;
    let mut test_scores: Vec<(u64, Strategy, Vec<f64>)> = Vec::new();
    for &seed in &args.seeds {
        let prompt = prepare_seed(&args.root, &args.work, seed)?;
        let (doc, _) = read_prompt(&prompt)?;
        if evaluator.is_none() {
            let engine = open_engine(&doc, &prompt, args.device)?;
            evaluator =
                Some(Evaluator::new(engine, Some(Box::new(FileCache::default_location()) as Box<dyn EvalCache>)));
        }
        let evaluator = evaluator.as_ref().expect("opened above");
        let warm = WarmStart::resolve(&args.policy)?;
        let mut manual: Option<Row> = None;
        let first = rows.len();
        for (repeat, &strategy) in (0..args.repeats).flat_map(|r| args.strategies.iter().map(move |s| (r, s))) {
            let search = search_seed(seed, repeat);
            let config = args.edits.apply(SearchConfig {
                strategy,
                budget: args.budget,
                seed: search,
                ..SearchConfig::default()
            });
            let run_dir = run_dir(&args.work, seed, search, strategy);
            // And each run's own directory, which `reprompt optimize --run-dir` might name.
            let _run_lock = lock_run_dir(&run_dir)?;
            let bar = progress_bar(args.budget, false);
            let label = format!("seed {}", run_label(seed, search));
            bar.set_prefix(format!("{label} {}", strategy.name()));
            let report: Report = optimize(
                evaluator,
                &doc,
                &prompt,
                config,
                warm.as_ref(),
                Some(&run_dir),
                !args.resume,
                Some(args.test_limit),
                &mut |p| show_progress(&bar, p),
            )?;
            bar.finish_and_clear();
            crate::files::write_atomic(
                &run_dir.join("report.json"),
                serde_json::to_string_pretty(&report)?.as_bytes(),
            )?;
            let o = &report.original;
            manual.get_or_insert(Row {
                strategy: "manual".into(),
                seed,
                search_seed: seed,
                train: o.train,
                validation: o.validation,
                test: o.test,
                evaluations: 0,
                seconds: 0.0,
            });
            let b = &report.best;
            let row = Row {
                strategy: strategy.name().into(),
                seed,
                search_seed: search,
                train: b.train,
                validation: b.validation,
                test: b.test,
                evaluations: report.evaluations,
                seconds: report.seconds,
            };
            eprintln!(
                "{label} {:<9} train {:.1}% validation {:.1}% test {} · {} evaluations · {:.0} s",
                row.strategy,
                100.0 * row.train,
                100.0 * row.validation,
                row.test.map_or("–".into(), |t| format!("{:.1}%", 100.0 * t)),
                row.evaluations,
                row.seconds
            );
            curves.push((strategy, report.search.curve.clone()));
            test_scores.push((seed, strategy, report.best_test_scores.clone()));
            rows.push(row);
        }
        if let Some(m) = manual {
            rows.insert(first, m);
        }
    }
    // One line per strategy: the best train reward so far, averaged over seeds.
    let grid = 60;
    let series: Vec<(String, Vec<(f64, f64)>)> = args
        .strategies
        .iter()
        .map(|&s| {
            let per_seed: Vec<Vec<Option<f64>>> =
                curves.iter().filter(|(k, _)| *k == s).map(|(_, c)| on_grid(c, args.budget, grid)).collect();
            let points = (0..=grid)
                .filter_map(|k| {
                    let values: Vec<f64> = per_seed.iter().filter_map(|c| c[k]).collect();
                    (values.len() == per_seed.len() && !values.is_empty())
                        .then(|| ((args.budget * k / grid) as f64, values.iter().sum::<f64>() / values.len() as f64))
                })
                .collect();
            (s.name().to_string(), points)
        })
        .collect();
    std::fs::create_dir_all(&args.work)?;
    let plot_path = args.work.join("curves.svg");
    let seeds: Vec<String> = args.seeds.iter().map(u64::to_string).collect();
    let runs = if args.repeats > 1 { format!(", {} search seeds each", args.repeats) } else { String::new() };
    plot(
        &plot_path,
        &format!("SST-2 16-shot, best train accuracy (mean of seeds {}{runs})", seeds.join(", ")),
        &series,
    )?;
    let paired = paired_with_ppo(&test_scores, &args.seeds, &args.strategies);
    if args.json {
        serde_json::to_writer_pretty(&mut *out, &serde_json::json!({ "rows": rows, "paired": paired }))?;
        writeln!(out)?;
        return Ok(());
    }
    print_table(&rows, args, out)?;
    print_paired(&paired, out)?;
    writeln!(out, "\nplot {}", plot_path.display())?;
    Ok(())
}

fn print_paired(paired: &[Paired], out: &mut dyn Write) -> anyhow::Result<()> {
    if paired.is_empty() {
        return Ok(());
    }
    let points = |x: f64| format!("{:+.1}", 100.0 * x);
    writeln!(out)?;
    writeln!(
        out,
        "PPO minus each baseline on test, paired over the same sentences (points; 95% interval over the \
         sentences and each strategy's runs):"
    )?;
    writeln!(out)?;
    writeln!(out, "| | per split | mean | 95% interval |")?;
    writeln!(out, "|---|---|---|---|")?;
    for p in paired {
        let per_seed: Vec<String> = p.per_seed.iter().map(|&d| points(d)).collect();
        writeln!(
            out,
            "| ppo − {} | {} | {} | [{}, {}] |",
            p.strategy,
            per_seed.join(" / "),
            points(p.mean),
            points(p.low),
            points(p.high)
        )?;
    }
    Ok(())
}

fn print_table(rows: &[Row], args: &OptimizeBenchArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    let pct = |x: f64| if x.is_finite() { format!("{:.1}", 100.0 * x) } else { "–".into() };
    writeln!(out, "SST-2 16-shot · budget {} evaluations per run · accuracy %", args.budget)?;
    if args.repeats > 1 {
        writeln!(out, "{} runs per strategy and split; seed column: split/search seed", args.repeats)?;
    }
    writeln!(out)?;
    writeln!(out, "| strategy | seed | train | validation | test | evaluations | seconds |")?;
    writeln!(out, "|---|---|---|---|---|---|---|")?;
    for r in rows {
        writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {:.0} |",
            r.strategy,
            run_label(r.seed, r.search_seed),
            pct(r.train),
            pct(r.validation),
            r.test.map_or("–".into(), pct),
            r.evaluations,
            r.seconds
        )?;
    }
    let mut names: Vec<String> = vec!["manual".into()];
    names.extend(args.strategies.iter().map(|s| s.name().to_string()));
    for name in names {
        let group: Vec<&Row> = rows.iter().filter(|r| r.strategy == name).collect();
        if group.is_empty() {
            continue;
        }
        let n = group.len() as f64;
        let mean = |f: &dyn Fn(&Row) -> f64| group.iter().map(|r| f(r)).sum::<f64>() / n;
        let test = group.iter().all(|r| r.test.is_some()).then(|| mean(&|r| r.test.unwrap_or(0.0)));
        writeln!(
            out,
            "| **{name} mean** | | {} | {} | {} | {:.0} | {:.0} |",
            pct(mean(&|r| r.train)),
            pct(mean(&|r| r.validation)),
            test.map_or("–".into(), pct),
            mean(&|r| r.evaluations as f64),
            mean(&|r| r.seconds)
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_split_or_strategy_named_twice_is_refused() {
        assert_eq!(repeated(&[13u64, 21, 42]), None);
        assert_eq!(repeated(&[13u64, 21, 13]), Some(13));
        assert_eq!(repeated(&[Strategy::Random, Strategy::Ppo, Strategy::Ppo]), Some(Strategy::Ppo));
        let args = <OptimizeBenchArgs as clap::FromArgMatches>::from_arg_matches(
            &<OptimizeBenchArgs as clap::Args>::augment_args(clap::Command::new("bench"))
                .try_get_matches_from(["bench", "--seeds", "13,21,13", "--work", "/nonexistent/reprompt-bench"])
                .unwrap(),
        )
        .unwrap();
        let err = run(&args, &mut Vec::new()).unwrap_err().to_string();
        assert!(err.contains("split 13 more than once"), "{err}");
    }

    #[test]
    fn ppo_is_compared_with_each_baseline_seed_by_seed_over_the_same_sentences() {
        let ones = |hits: usize, n: usize| (0..n).map(|i| if i < hits { 1.0 } else { 0.0 }).collect::<Vec<f64>>();
        let scores = vec![
            (13, Strategy::Random, ones(6, 10)),
            (13, Strategy::Ppo, ones(8, 10)),
            (13, Strategy::Greedy, Vec::new()),
            (21, Strategy::Random, ones(7, 10)),
            (21, Strategy::Ppo, ones(7, 10)),
            (21, Strategy::Greedy, ones(9, 10)),
        ];
        let strategies = [Strategy::Random, Strategy::Greedy, Strategy::Ppo];
        let paired = paired_with_ppo(&scores, &[13, 21], &strategies);
        // Greedy has no test scores on seed 13: no comparison rather than a partial one.
        assert_eq!(paired.len(), 1);
        let random = &paired[0];
        assert_eq!(random.strategy, "random");
        assert_eq!(random.per_seed.len(), 2);
        assert!((random.per_seed[0] - 0.2).abs() < 1e-12 && random.per_seed[1].abs() < 1e-12, "{random:?}");
        assert!((random.mean - 0.1).abs() < 1e-12);
        assert!(random.low <= random.mean && random.mean <= random.high && random.low < random.high, "{random:?}");
        // Without PPO there is nothing to compare.
        assert!(paired_with_ppo(&scores, &[13, 21], &[Strategy::Random, Strategy::Greedy]).is_empty());
        // On one seed only, greedy is compared too.
        let one = paired_with_ppo(&scores, &[21], &strategies);
        assert_eq!(one.iter().map(|p| p.strategy.as_str()).collect::<Vec<_>>(), ["random", "greedy"]);
        assert!((one[1].mean + 0.2).abs() < 1e-12);
    }

    #[test]
    fn seeds_scoring_the_same_sentences_are_not_counted_as_more_sentences() {
        let ones = |hits: usize, n: usize| (0..n).map(|i| if i < hits { 1.0 } else { 0.0 }).collect::<Vec<f64>>();
        let twice = vec![
            (13, Strategy::Random, ones(120, 200)),
            (13, Strategy::Ppo, ones(160, 200)),
            (21, Strategy::Random, ones(120, 200)),
            (21, Strategy::Ppo, ones(160, 200)),
        ];
        let strategies = [Strategy::Random, Strategy::Ppo];
        let one = &paired_with_ppo(&twice, &[13], &strategies)[0];
        let two = &paired_with_ppo(&twice, &[13, 21], &strategies)[0];
        // Two seeds with the same results on the same 200 sentences know no more than one:
        // the same mean and the same interval (pooled, it would shrink by about 1/√2).
        assert!((one.mean - 0.2).abs() < 1e-12 && (two.mean - 0.2).abs() < 1e-12);
        assert!((two.high - two.low - (one.high - one.low)).abs() < 1e-12, "{one:?} {two:?}");
    }
    #[test]
    fn repeated_runs_of_a_split_are_averaged_before_the_splits_are() {
        let ones = |hits: usize, n: usize| (0..n).map(|i| if i < hits { 1.0 } else { 0.0 }).collect::<Vec<f64>>();
        let strategies = [Strategy::Random, Strategy::Ppo];
        // Split 13: two runs each (PPO 0.8 and 0.6, random 0.5 and 0.5); split 21: one each.
        let scores = vec![
            (13, Strategy::Random, ones(5, 10)),
            (13, Strategy::Ppo, ones(8, 10)),
            (13, Strategy::Random, ones(5, 10)),
            (13, Strategy::Ppo, ones(6, 10)),
            (21, Strategy::Random, ones(7, 10)),
            (21, Strategy::Ppo, ones(6, 10)),
        ];
        let paired = &paired_with_ppo(&scores, &[13, 21], &strategies)[0];
        assert!((paired.per_seed[0] - 0.2).abs() < 1e-12 && (paired.per_seed[1] + 0.1).abs() < 1e-12, "{paired:?}");
        // Each split counts once however many runs it holds: (0.2 − 0.1) / 2.
        assert!((paired.mean - 0.05).abs() < 1e-12, "{paired:?}");
        // A run without test scores, or scored on other sentences, leaves its split unpaired.
        let mut short = scores.clone();
        short.push((21, Strategy::Ppo, ones(3, 5)));
        assert!(paired_with_ppo(&short, &[13, 21], &strategies).is_empty());
        assert_eq!(paired_with_ppo(&short, &[13], &strategies).len(), 1);
    }

    #[test]
    fn each_repeat_searches_with_its_own_seed_in_its_own_directory() {
        let work = Path::new("w");
        assert_eq!(search_seed(13, 0), 13, "the first run keeps the split's seed, as a single run does");
        let seeds: Vec<u64> = (0..3).map(|r| search_seed(13, r)).collect();
        assert_eq!(seeds, [13, 1013, 2013]);
        // No two runs of one benchmark share a seed, even across splits.
        let all: std::collections::HashSet<u64> =
            [13, 21, 42].iter().flat_map(|&s| (0..5).map(move |r| search_seed(s, r))).collect();
        assert_eq!(all.len(), 15);
        assert_eq!(run_dir(work, 13, 13, Strategy::Ppo), Path::new("w/sst-2-13/runs/ppo"));
        assert_eq!(run_dir(work, 13, 1013, Strategy::Ppo), Path::new("w/sst-2-13/runs/ppo-search-1013"));
        assert_ne!(run_dir(work, 13, 1013, Strategy::Ppo), run_dir(work, 13, 1013, Strategy::Random));
        assert_eq!((run_label(13, 13), run_label(13, 1013)), ("13".to_string(), "13/1013".to_string()));
    }
}
