//! `reprompt labels file.prompt`: the label-word sets the task model ranks best for a
//! classification prompt on its training examples (what `optimize --ranked-labels` adds to
//! the edits), with their training accuracy, and the several words per label the optimizer
//! makes of them.

use std::io::Write;
use std::path::PathBuf;

use serde::Serialize;

use super::optimize::judged_labellings;
use super::score::open_engine;
use crate::engine::DeviceChoice;
use crate::eval::{Evaluator, PreparedPrompt};
use crate::optimize::edits::EditSpace;
use crate::optimize::model::{ModelScorer, data_label_names};
use crate::optimize::search::judged_against;
use crate::optimize::{edits, labels};

#[derive(Debug, clap::Args)]
pub struct LabelsArgs {
    /// The classification `.prompt` file (with `reprompt.labels` and its splits)
    pub file: PathBuf,
    /// How many sets to show
    #[arg(long, default_value_t = 8, value_parser = crate::cli::at_least_one)]
    pub keep: usize,
    /// cpu, cuda or cuda:N
    #[arg(long, default_value = "cpu")]
    pub device: DeviceChoice,
    /// Print the sets as JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Serialize)]
struct Row {
    words: Vec<String>,
    train_accuracy: f64,
    margin: f64,
}

pub fn run(args: &LabelsArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    let doc = crate::cli::read_prompt_file(&args.file)?;
    PreparedPrompt::new(&doc, &args.file)?;
    let text = doc.source.clone();
    let engine = open_engine(&doc, &args.file, args.device)?;
    let evaluator = Evaluator::new(engine, None);
    let mut scorer = ModelScorer::training_only(&evaluator, &doc, &args.file)?;
    let held_out = scorer.held_out();
    if let Some(h) = &held_out {
        eprintln!(
            "note: the prompt names no `reprompt.validation`: ranking on the {} of its {} training examples that \
             `reprompt optimize` searches on (it holds the other {} out for validation)",
            h.train,
            h.train + h.validation,
            h.validation
        );
    }
    // Judged, as `optimize` judges them, against the built-in sets of the prompt's size (in its
    // labels' order), or else its own words.
    let own = doc.settings.labels.as_ref().map(|l| l.value.clone()).unwrap_or_default();
    let fixed = judged_against(&EditSpace::for_prompt(&doc, Vec::new()), own);
    let Some(ranking) = scorer.label_ranking(&text, args.keep.max(labels::GROUP_SETS), true, &fixed)? else {
        anyhow::bail!(
            "{}: no label words to rank (ranking needs a classification prompt with `reprompt.labels`, at most 12 \
             of them, and training examples of each)",
            args.file.display()
        );
    };
    if ranking.cue_added {
        eprintln!(
            "note: the answer starts a line or a chat turn, so the words were ranked (and their accuracy measured) \
             after an added `Answer:` cue; with the prompt as written they may score differently"
        );
    }
    if ranking.left_out > 0 {
        eprintln!(
            "note: {} training example{} left out: the prompt with {} does not fit the model's context ({} tokens)",
            ranking.left_out,
            if ranking.left_out == 1 { " was" } else { "s were" },
            if ranking.left_out == 1 { "it" } else { "them" },
            ranking.context
        );
    }
    let sets: Vec<Vec<String>> = ranking.sets.iter().map(|r| r.words.clone()).collect();
    let groups = labels::word_groups(&sets, labels::GROUP_WORDS);
    let rows: Vec<Row> = ranking
        .sets
        .into_iter()
        .take(args.keep)
        .map(|r| Row { words: r.words, train_accuracy: r.accuracy, margin: r.margin })
        .collect();
    if args.json {
        serde_json::to_writer_pretty(&mut *out, &rows)?;
        writeln!(out)?;
        return Ok(());
    }
    let split = if held_out.is_some() { "half" } else { "split" };
    writeln!(out, "label words ranked by the model on the training {split} of {}", args.file.display())?;
    writeln!(out, "{:>3}  {:<40} {:>6} {:>7}", "#", "words", "train", "margin")?;
    for (i, row) in rows.iter().enumerate() {
        writeln!(
            out,
            "{:>3}  {:<40} {:>5.1}% {:>7.2}",
            i + 1,
            row.words.join(" / "),
            100.0 * row.train_accuracy,
            row.margin
        )?;
    }
    if rows.is_empty() {
        writeln!(out, "(none: a class has no training example, or no word separates them)")?;
    }
    if let Some(groups) = groups {
        let tried = if ranking.cue_added { "after the added cue" } else { "what `optimize` tries" };
        writeln!(out, "\nseveral words per label ({tried}; a label scores its words' summed probability):")?;
        writeln!(out, "reprompt.labels: {}", edits::label_groups_value(&groups))?;
        // Data that names its labels by the current words reads them through these.
        if let Some(names) = data_label_names(&doc, &args.file) {
            writeln!(out, "reprompt.data_labels: {}", edits::data_labels_value(&names))?;
        }
    }
    if let Some(screened) = ranking.screened.filter(|s| s.len() > 1) {
        // The same words ranked on one half of the examples, calibrated there, scored on the
        // other: what the table's accuracy, chosen on the very examples, flatters.
        let records: Vec<_> = screened.iter().map(labels::Screened::record).collect();
        writeln!(
            out,
            "\ncalibrated, out of sample on train (as `optimize` judges them): {}",
            judged_labellings(&records)
        )?;
    }
    Ok(())
}
