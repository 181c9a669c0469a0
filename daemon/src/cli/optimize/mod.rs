//! `reprompt optimize file.prompt`: searches readable edits of the prompt with PPO (or a
//! baseline) on its training split within a budget of example evaluations, validates the best
//! candidates, and offers the winner as a Dotprompt variant file with a diff, a JSON report and
//! a learning-curve plot.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

mod summary;
mod target;

pub(crate) use summary::judged_labellings;
use summary::print_summary;
pub use target::{check_target, claim_target, write_prompt};

use super::plot::plot;
use anyhow::{Context as _, bail};
use indicatif::{ProgressBar, ProgressStyle};
use reprompt_protocol::{PromptDocument, parse};
use serde::Serialize;

use crate::cli::score::open_engine;
use crate::engine::DeviceChoice;
use crate::eval::evaluate::load_split;
use crate::eval::{EvalCache, Evaluator, FileCache, PreparedPrompt, Split};
use crate::files::write_atomic;
use crate::optimize::PolicySnapshot;
use crate::optimize::edits::EditSpace;
use crate::optimize::model::{HeldOut, ModelScorer, data_label_names, worst_score};
use crate::optimize::search::{
    Progress, Search, SearchConfig, SearchResult, Strategy, policy_digest, recover_checkpoint, remove_checkpoint,
};

/// Budget when neither `--budget` nor `reprompt.budget` gives one.
pub const DEFAULT_BUDGET: usize = 2000;

/// What the search may edit and how: the options `optimize` and `bench optimize` share.
#[derive(Debug, clap::Args)]
pub struct EditOptions {
    /// Paraphrases sampled from the task model per instruction sentence (0: none)
    #[arg(long, default_value_t = SearchConfig::default().paraphrases)]
    pub paraphrases: usize,
    /// Label words ranked by the task model on the training examples (LM-BFF; costs one
    /// evaluation per training example): each ranking offers 8 words per label, or where they
    /// make no group this many of its best sets; 0: only the built-in sets
    #[arg(long, default_value_t = SearchConfig::default().ranked_labels)]
    pub ranked_labels: usize,
    /// Do not offer the calibration edit (`reprompt.label_bias` fitted to the prompt's answers on
    /// training examples)
    #[arg(long)]
    pub no_calibration: bool,
    /// Do not record each whole-train prompt's calibration beside it (its calibrated twin,
    /// scored from its results without the model)
    #[arg(long)]
    pub no_twins: bool,
}

impl EditOptions {
    /// `config` with these options.
    pub fn apply(&self, config: SearchConfig) -> SearchConfig {
        SearchConfig {
            paraphrases: self.paraphrases,
            ranked_labels: self.ranked_labels,
            calibrate: !self.no_calibration,
            twins: !self.no_twins,
            ..config
        }
    }
}

#[derive(Debug, clap::Args)]
pub struct OptimizeArgs {
    /// The `.prompt` file to optimize
    pub file: PathBuf,
    /// Search strategy (the baselines share the edit space, evaluator and budget)
    #[arg(long, value_enum, default_value_t = Strategy::Ppo)]
    pub strategy: Strategy,
    /// Task-model example evaluations to spend, validation included [default: reprompt.budget, else 2000]
    #[arg(long)]
    pub budget: Option<usize>,
    /// Seed: the same seed gives the same run
    #[arg(long, default_value_t = 13)]
    pub seed: u64,
    /// Rewrite the file in place instead of writing `<name>.optimized.prompt`
    #[arg(long)]
    pub write: bool,
    /// Where to write the optimized prompt [default: `<name>.optimized.prompt` beside it]
    #[arg(long, conflicts_with = "write")]
    pub output: Option<PathBuf>,
    /// Replace an existing variant (or `--output` file) even where reprompt did not write it or
    /// it was edited since
    #[arg(long)]
    pub force: bool,
    /// Directory for the checkpoint, report and plot [default: `.reprompt/runs/<name>-<strategy>-<seed>` beside the prompt]
    #[arg(long)]
    pub run_dir: Option<PathBuf>,
    /// Start over even if the run directory holds a checkpoint of this run (a checkpoint of
    /// another prompt text, data, settings or scoring is always replaced)
    #[arg(long)]
    pub fresh: bool,
    /// Do not score the test split (when the prompt names one)
    #[arg(long)]
    pub no_test: bool,
    /// Score only the first N test examples
    #[arg(long, value_parser = crate::cli::at_least_one)]
    pub test_limit: Option<usize>,
    #[command(flatten)]
    pub edits: EditOptions,
    /// Where PPO's policy starts: `none` (freshly initialised) or a policy file written by
    /// `reprompt pretrain` (pre-trained on other prompts for the same model)
    #[arg(long, default_value = "none")]
    pub policy: PolicyChoice,
    /// PPO: weight of the replayed step rewards of every edit scored so far in the policy's
    /// logits (0: the policy alone)
    #[arg(long, default_value_t = SearchConfig::default().replay_bonus)]
    pub replay_bonus: f32,
    /// cpu, cuda or cuda:N
    #[arg(long, default_value = "cpu")]
    pub device: DeviceChoice,
    /// Print the report as JSON instead of the summary
    #[arg(long)]
    pub json: bool,
}

/// Where PPO's policy starts.
#[derive(Clone, Debug, PartialEq)]
pub enum PolicyChoice {
    /// A freshly initialised policy.
    Fresh,
    /// Weights written by `reprompt pretrain`.
    File(PathBuf),
}

impl std::str::FromStr for PolicyChoice {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "none" => Ok(Self::Fresh),
            "" => Err("expected none or a policy file".into()),
            path => Ok(Self::File(PathBuf::from(path))),
        }
    }
}

/// A pre-trained policy to start PPO from.
#[derive(Debug)]
pub struct WarmStart {
    /// Shown in reports: where the weights come from.
    pub name: String,
    /// [`policy_digest`] of the weights.
    pub digest: String,
    pub weights: PolicySnapshot,
}

impl WarmStart {
    /// Reads safetensors weights.
    pub fn from_bytes(name: String, bytes: &[u8]) -> anyhow::Result<Self> {
        let weights = PolicySnapshot::from_safetensors(bytes).with_context(|| format!("reading the policy {name}"))?;
        Ok(Self { digest: policy_digest(bytes), name, weights })
    }

    /// The warm start `choice` names (`None`: a fresh policy).
    pub fn resolve(choice: &PolicyChoice) -> anyhow::Result<Option<Self>> {
        match choice {
            PolicyChoice::Fresh => Ok(None),
            PolicyChoice::File(path) => {
                let bytes = std::fs::read(path).with_context(|| format!("reading the policy {}", path.display()))?;
                Ok(Some(Self::from_bytes(path.display().to_string(), &bytes)?))
            }
        }
    }
}

/// Scores of one prompt on each split.
#[derive(Clone, Debug, Serialize)]
pub struct SplitScores {
    pub train: f64,
    pub validation: f64,
    pub test: Option<f64>,
}

/// Everything a run produced, as written to `report.json`.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub file: PathBuf,
    pub strategy: Strategy,
    pub seed: u64,
    pub budget: usize,
    pub evaluations: usize,
    /// Wall time of the search and validation (test scoring not included).
    pub seconds: f64,
    /// Wall time of this command, test scoring included.
    pub wall_seconds: f64,
    pub original: SplitScores,
    pub best: SplitScores,
    pub improved: bool,
    /// Validation: best minus original, paired over the same examples, 95% bootstrap interval.
    pub paired_difference: crate::eval::stats::Interval,
    pub edits: Vec<String>,
    pub text: String,
    /// Test examples scored (0 without a test split).
    pub test_examples: usize,
    pub paraphrase_calls: usize,
    /// PPO: the pre-trained policy it started from (`None`: a fresh one, or another strategy).
    pub policy: Option<String>,
    /// Prompts scored that did not fit the model's context with some example.
    pub too_long: TooLong,
    /// Test examples the optimized prompt did not fit the model's context with, each scored as
    /// the worst answer.
    pub test_too_long: usize,
    /// Where the prompt names no validation split: the halves its training file was split
    /// into, train and held-out validation (`null` otherwise).
    pub held_out: Option<HeldOut>,
    pub search: SearchResult,
    /// The best prompt's score on each test example, in the split's order (empty without a
    /// test split); for paired comparisons, not written to `report.json`.
    #[serde(skip)]
    pub best_test_scores: Vec<f64>,
}

/// Prompts a run scored that were too long for the model's context with some example: each
/// such example scored as the worst answer ([`crate::optimize::search::Outcome::too_long`]).
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct TooLong {
    pub prompts: usize,
    /// The model's context, tokens (0 when no prompt was too long).
    pub context: usize,
    /// Whether the prompt as written was one of them.
    pub original: bool,
}

/// The run directory used when none is given.
pub fn default_run_dir(file: &Path, strategy: Strategy, seed: u64) -> PathBuf {
    let stem = file.file_stem().and_then(|s| s.to_str()).unwrap_or("prompt");
    file.parent()
        .unwrap_or(Path::new(""))
        .join(".reprompt")
        .join("runs")
        .join(format!("{stem}-{}-{seed}", strategy.name()))
}

/// Where a run directory keeps the search checkpoint.
pub fn checkpoint_dir(run_dir: &Path) -> PathBuf {
    run_dir.join("checkpoint")
}

/// Takes the lock of a run directory (created if needed) for as long as the returned file is
/// open: two runs writing one checkpoint would interleave their saves. The operating system
/// drops the lock when the process dies, so a killed run never leaves it held.
pub fn lock_run_dir(run_dir: &Path) -> anyhow::Result<std::fs::File> {
    if run_dir.exists() && !run_dir.is_dir() {
        bail!("{} is a file: a run keeps its checkpoints in a directory (give another)", run_dir.display());
    }
    std::fs::create_dir_all(run_dir).with_context(|| format!("creating {}", run_dir.display()))?;
    let path = run_dir.join("lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => bail!(
            "another reprompt run is using {} (it holds {}): wait for it to finish, or give this one another --run-dir",
            run_dir.display(),
            path.display()
        ),
        Err(std::fs::TryLockError::Error(e)) if e.kind() == std::io::ErrorKind::Unsupported => {
            eprintln!(
                "warning: {} cannot be locked here ({e}): nothing stops a second run from using it",
                path.display()
            );
            Ok(file)
        }
        Err(std::fs::TryLockError::Error(e)) => Err(e).with_context(|| format!("locking {}", path.display())),
    }
}

/// The variant file name: `sentiment.prompt` → `sentiment.optimized.prompt`.
pub fn variant_path(file: &Path) -> PathBuf {
    let stem = file.file_stem().and_then(|s| s.to_str()).unwrap_or("prompt");
    file.with_file_name(format!("{stem}.optimized.prompt"))
}

/// Reads a prompt and refuses one with errors or without training and validation splits.
pub fn read_prompt(file: &Path) -> anyhow::Result<(PromptDocument, String)> {
    let doc = crate::cli::read_prompt_file(file)?;
    PreparedPrompt::new(&doc, file)?;
    crate::optimize::model::require_splits(&doc, file)?;
    let text = doc.source.clone();
    Ok((doc, text))
}

/// Searches, gates and (optionally) scores the test split: the core shared with the benchmark.
#[allow(clippy::too_many_arguments)]
pub fn optimize(
    evaluator: &Evaluator,
    doc: &PromptDocument,
    file: &Path,
    mut config: SearchConfig,
    warm: Option<&WarmStart>,
    run_dir: Option<&Path>,
    fresh: bool,
    test_limit: Option<Option<usize>>,
    progress: &mut dyn FnMut(&Progress),
) -> anyhow::Result<Report> {
    let started = Instant::now();
    let warm = warm.filter(|_| config.strategy == Strategy::Ppo);
    config.warm_start = warm.map(|w| w.digest.clone());
    let mut scorer = ModelScorer::new(evaluator, doc, file)?;
    let mut space = EditSpace::for_prompt(doc, scorer.demo_sources());
    space.data_labels = data_label_names(doc, file);
    config.data = Some(scorer.data_digest(&doc.source, &space)?);
    // The test split is read before the search, so that a problem in it (a bad row, an example
    // the prompt as written does not fit the model's context with) is found before the budget
    // is spent, not after.
    let test_data = match test_limit {
        Some(limit) if doc.settings.test.is_some() => {
            let mut data = load_split(doc, file, Split::Test)?;
            if let Some(limit) = limit {
                data.examples.truncate(limit);
            }
            check_test_fits(evaluator, &PreparedPrompt::new(doc, file)?, &data)?;
            Some(data)
        }
        _ => None,
    };
    let text = doc.source.clone();
    let checkpoint = run_dir.map(checkpoint_dir);
    // First finishes a save a killed run cut short, then looks at what is there: an edited
    // prompt, other data or other settings make another run, which starts over.
    let mut other = false;
    if let Some(dir) = &checkpoint {
        recover_checkpoint(dir).with_context(|| format!("recovering the checkpoint in {}", dir.display()))?;
        other = Search::has_checkpoint(dir) && !Search::checkpoint_matches(dir, &text, &config);
    }
    let replaced = fresh || other;
    let resuming = !replaced && checkpoint.as_deref().is_some_and(Search::has_checkpoint);
    let (result, paraphrase_calls, too_long) = {
        let mut search = if let Some(dir) = checkpoint.as_deref().filter(|_| resuming) {
            eprintln!("resuming the run checkpointed in {}", dir.display());
            Search::load(dir, &text, &config, space, &mut scorer)?
        } else {
            let mut search = Search::new(&text, config.clone(), space, &mut scorer)?;
            if let Some(warm) = warm {
                search.warm_start(&warm.weights).with_context(|| format!("starting from the policy {}", warm.name))?;
            }
            search
        };
        // The checkpoint it replaces goes only once the new run has passed its checks (its
        // budget, its policy): a command refused keeps the run it would have replaced.
        if let Some(dir) = checkpoint.as_deref().filter(|_| replaced) {
            if other {
                eprintln!(
                    "{} holds a run of another prompt text, data, settings or scoring: starting over",
                    dir.display()
                );
            }
            remove_checkpoint(dir).with_context(|| format!("removing {}", dir.display()))?;
        }
        let result = match search.run(checkpoint.as_deref(), None, progress)? {
            Ok(result) => result,
            Err(stop) => bail!("the search stopped early: {stop:?}"),
        };
        drop(search);
        let too_long = TooLong {
            prompts: result.too_long,
            context: if result.too_long > 0 { evaluator.context_length()? } else { 0 },
            original: result.original_too_long,
        };
        (result, scorer.paraphrase_calls, too_long)
    };
    let held_out = scorer.held_out();
    let mut test = (None, None);
    let mut test_examples = 0;
    let mut best_test_scores = Vec::new();
    let mut test_too_long = 0;
    if let Some(data) = test_data {
        test_examples = data.examples.len();
        let original = PreparedPrompt::new(doc, file)?;
        let scored = evaluator.evaluate(&original, &data, Split::Test, &mut |_, _| {})?;
        test.0 = Some(scored.aggregate.mean);
        best_test_scores = scored.examples.iter().map(|e| e.score).collect();
        if result.improved {
            let best_doc = parse(&result.best_text, Some(file));
            let best = PreparedPrompt::new(&best_doc, file)?;
            (best_test_scores, test_too_long) = score_fitting_test(evaluator, &best, &data)?;
        }
        test.1 = Some(best_test_scores.iter().sum::<f64>() / best_test_scores.len().max(1) as f64);
    }
    Ok(Report {
        file: file.to_path_buf(),
        strategy: result.strategy,
        seed: result.seed,
        budget: result.budget,
        evaluations: result.evaluations,
        seconds: result.seconds,
        wall_seconds: started.elapsed().as_secs_f64(),
        original: SplitScores { train: result.original_train, validation: result.original_validation, test: test.0 },
        best: SplitScores { train: result.best_train, validation: result.best_validation, test: test.1 },
        improved: result.improved,
        paired_difference: result.paired_difference,
        edits: result.best_lineage.clone(),
        text: result.best_text.clone(),
        test_examples,
        paraphrase_calls,
        policy: warm.map(|w| w.name.clone()),
        too_long,
        test_too_long,
        held_out,
        search: result,
        best_test_scores,
    })
}

/// Refuses a test split the prompt as written does not fit the model's context with, an
/// answer included ([`Evaluator::longest_row`]): its test score would end the run after the
/// search had spent its budget.
pub fn check_test_fits(
    evaluator: &Evaluator,
    original: &PreparedPrompt,
    data: &reprompt_protocol::dataset::Dataset,
) -> anyhow::Result<()> {
    if let Some((tokens, example, context)) =
        evaluator.longest_row(original, &data.examples)?.filter(|(n, _, context)| n > context)
    {
        bail!(
            "{}:{}: the prompt with this test example and its answer take {tokens} tokens, and the model's context \
             holds {context} (shorten the example, or leave the test split out with --no-test)",
            data.path.display(),
            example.line
        );
    }
    Ok(())
}

/// The optimized prompt's score on each test example, and how many of them it did not fit the
/// model's context with: those are scored as the worst answer, as in the search (the prompt as
/// written was checked to fit them all before it). Its edits were chosen on training and
/// validation data alone, so a test example it is too long for counts against it, not out.
pub fn score_fitting_test(
    evaluator: &Evaluator,
    best: &PreparedPrompt,
    data: &reprompt_protocol::dataset::Dataset,
) -> anyhow::Result<(Vec<f64>, usize)> {
    // The split in one evaluation (cached) where the prompt fits every example.
    let (rows, context) = evaluator.row_tokens(best, &data.examples)?;
    if rows.iter().all(|&n| n <= context) {
        let scored = evaluator.evaluate(best, data, Split::Test, &mut |_, _| {})?;
        return Ok((scored.examples.iter().map(|e| e.score).collect(), 0));
    }
    let (scored, _) = evaluator.score_fitting(best, &data.examples)?;
    let worst = worst_score(&best.reward);
    let too_long = scored.iter().filter(|s| s.is_none()).count();
    Ok((scored.into_iter().map(|s| s.map_or(worst, |r| r.score)).collect(), too_long))
}

/// A progress bar over the budget showing the best scores so far.
pub fn progress_bar(budget: usize, hidden: bool) -> ProgressBar {
    let bar = if hidden || !std::io::stderr().is_terminal() {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(budget as u64)
    };
    bar.set_style(
        ProgressStyle::with_template("{spinner} {prefix} {pos}/{len} evaluations [{elapsed_precise}] {wide_bar} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar
}

/// Updates `bar` from a search progress report.
pub fn show_progress(bar: &ProgressBar, p: &Progress) {
    let pct = |x: Option<f64>| x.map_or("–".to_string(), |x| format!("{:.1}%", 100.0 * x));
    bar.set_position(p.evaluations as u64);
    bar.set_message(format!("{} · best train {} · validation {}", p.phase, pct(p.best_train), pct(p.best_validation)));
}

pub fn run(args: &OptimizeArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    let (doc, text) = read_prompt(&args.file)?;
    crate::cli::warn_split_overlaps(&doc, &args.file, None);
    // Where a winner goes, checked before the search: its files must be found from there.
    let target =
        if args.write { args.file.clone() } else { args.output.clone().unwrap_or_else(|| variant_path(&args.file)) };
    check_target(&target, &text, &args.file)?;
    let before = claim_target(&target, &args.file, &text, args.force)?;
    let budget = args.budget.or(doc.settings.budget.map(|b| b as usize)).unwrap_or(DEFAULT_BUDGET);
    let config = args.edits.apply(SearchConfig {
        strategy: args.strategy,
        budget,
        seed: args.seed,
        replay_bonus: args.replay_bonus,
        ..SearchConfig::default()
    });
    let warm = WarmStart::resolve(&args.policy)?;
    let run_dir = args.run_dir.clone().unwrap_or_else(|| default_run_dir(&args.file, args.strategy, args.seed));
    let _lock = lock_run_dir(&run_dir)?;
    let engine = open_engine(&doc, &args.file, args.device)?;
    let evaluator = Evaluator::new(engine, Some(Box::new(FileCache::default_location()) as Box<dyn EvalCache>));
    let bar = progress_bar(budget, args.json);
    bar.set_prefix(args.strategy.name());
    let test_limit = (!args.no_test).then_some(args.test_limit);
    let report = optimize(
        &evaluator,
        &doc,
        &args.file,
        config,
        warm.as_ref(),
        Some(&run_dir),
        args.fresh,
        test_limit,
        &mut |p| show_progress(&bar, p),
    )?;
    bar.finish_and_clear();

    std::fs::create_dir_all(&run_dir).with_context(|| format!("creating {}", run_dir.display()))?;
    let report_path = run_dir.join("report.json");
    write_atomic(&report_path, serde_json::to_string_pretty(&report)?.as_bytes())
        .with_context(|| format!("writing {}", report_path.display()))?;
    let plot_path = run_dir.join("curve.svg");
    let series = vec![
        (
            format!("{} best train", report.strategy.name()),
            report.search.curve.iter().map(|p| (p.evaluations as f64, p.train)).collect(),
        ),
        (
            format!("{} best validation", report.strategy.name()),
            report.search.curve.iter().filter_map(|p| p.validation.map(|v| (p.evaluations as f64, v))).collect(),
        ),
    ];
    plot(&plot_path, &format!("{} · reward vs evaluations", args.file.display()), &series)?;

    let written = if report.improved {
        write_prompt(&target, &report.text, &args.file, before.as_deref())
            .with_context(|| format!("the optimized prompt is in {}", report_path.display()))?;
        Some(target)
    } else {
        None
    };
    if args.json {
        serde_json::to_writer_pretty(&mut *out, &report)?;
        writeln!(out)?;
        return Ok(());
    }
    print_summary(&report, &text, written.as_deref(), out)?;
    writeln!(out, "report {} · plot {}", report_path.display(), plot_path.display())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_directory_is_used_by_one_run_at_a_time() {
        let dir = std::env::temp_dir().join(format!("reprompt-lock-{}", std::process::id())).join("run");
        let _ = std::fs::remove_dir_all(&dir);
        let held = lock_run_dir(&dir).unwrap();
        let err = lock_run_dir(&dir).unwrap_err().to_string();
        assert!(err.contains("another reprompt run is using"), "{err}");
        // Another directory is free meanwhile; the lock goes with the file that holds it.
        drop(lock_run_dir(&dir.with_file_name("other")).unwrap());
        drop(held);
        drop(lock_run_dir(&dir).unwrap());
        // A file where the directory would be is named as such.
        let file = dir.with_file_name("a-file");
        std::fs::write(&file, "").unwrap();
        let err = lock_run_dir(&file).unwrap_err().to_string();
        assert!(err.ends_with("a-file is a file: a run keeps its checkpoints in a directory (give another)"), "{err}");
        let _ = std::fs::remove_dir_all(dir.parent().unwrap());
    }
}
