//! The summary `optimize` prints: the run, the scores of the original and the optimized
//! prompt with their paired difference, the edits and the diff.

use std::io::Write;
use std::path::Path;

use super::{Report, SplitScores};
use crate::optimize::search::{IDLE_ROUNDS, SearchResult};
use crate::report::printable;

/// A score as a percentage; `–` for none (NaN: a budget too small to score it).
fn pct(x: f64) -> String {
    if x.is_finite() { format!("{:.1}%", 100.0 * x) } else { "–".into() }
}

/// Why a run left part of its budget unspent, when that says something: nothing new was
/// reachable (or only prompts too long for the model's context, which cost nothing), or more
/// than a tenth of it is left (so a larger budget is asked for knowingly).
fn unspent_note(result: &SearchResult) -> Option<String> {
    let unspent = result.budget.saturating_sub(result.evaluations);
    if unspent > 0 && result.exhausted {
        let reachable = if result.too_long > 0 {
            "nothing new was reachable but prompts too long for the model's context with some examples"
        } else {
            "nothing new was reachable"
        };
        Some(format!(
            "{unspent} evaluations unspent: the search scored nothing new in its last {IDLE_ROUNDS} rounds ({reachable})"
        ))
    } else if unspent * 10 > result.budget {
        Some(format!(
            "{unspent} evaluations unspent: {} of the budget are held back to validate the best prompts, and the \
             search stops once the rest cannot pay another minibatch (a larger --budget searches further)",
            result.gate_reserve
        ))
    } else {
        None
    }
}

pub(super) fn print_summary(
    report: &Report,
    original: &str,
    written: Option<&Path>,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    writeln!(
        out,
        "{} · strategy {} · seed {} · {}/{} evaluations · {:.0} s · {} prompts considered",
        report.file.display(),
        report.strategy.name(),
        report.seed,
        report.evaluations,
        report.budget,
        report.seconds,
        report.search.prompts_seen
    )?;
    if let Some(note) = unspent_note(&report.search) {
        writeln!(out, "{note}")?;
    }
    let too_long = report.too_long;
    if too_long.prompts > 0 {
        writeln!(
            out,
            "{} of the prompts scored{} did not fit the model's context ({} tokens) with some examples: each such \
             example scored as the worst answer",
            too_long.prompts,
            if too_long.original { ", the original among them," } else { "" },
            too_long.context
        )?;
    }
    if report.test_too_long > 0 {
        writeln!(
            out,
            "the optimized prompt did not fit the model's context with {} of the {} test examples: each scored as \
             the worst answer",
            report.test_too_long, report.test_examples
        )?;
    }
    if report.search.derived > 0 {
        writeln!(
            out,
            "calibrations scored from other calibrations' results, without the model: {} example results",
            report.search.derived
        )?;
    }
    if let Some(policy) = &report.policy {
        writeln!(out, "policy started from {policy}")?;
    }
    if !report.search.ranked_labels.is_empty() {
        let sets: Vec<String> = report.search.ranked_labels.iter().map(|s| s.join(" / ")).collect();
        writeln!(out, "label words ranked by the model: {}", sets.join(", "))?;
    }
    for groups in &report.search.ranked_groups {
        let words: Vec<String> = groups.iter().map(|g| g.join(", ")).collect();
        writeln!(out, "label words ranked by the model, per label: {}", words.join(" / "))?;
    }
    if !report.search.template_screen.is_empty() {
        let screened: Vec<String> = report
            .search
            .template_screen
            .iter()
            .map(|(words, accuracy, ranked)| {
                let name = if *ranked { "the ranked words".to_string() } else { words.clone() };
                format!("{name} {}", pct(*accuracy))
            })
            .collect();
        writeln!(out, "template label words, calibrated, out of sample on train: {}", screened.join(", "))?;
    }
    writeln!(out)?;
    let test = |s: &SplitScores| s.test.map_or("–".to_string(), pct);
    writeln!(out, "  {:<10} {:>8} {:>11} {:>8}", "", "train", "validation", "test")?;
    for (name, scores) in [("original", &report.original), ("optimized", &report.best)] {
        let (train, validation) = (pct(scores.train), pct(scores.validation));
        writeln!(out, "  {name:<10} {train:>8} {validation:>11} {:>8}", test(scores))?;
    }
    let d = report.paired_difference;
    writeln!(
        out,
        "\n  validation difference {:+.1} points, 95% interval [{:+.1}, {:+.1}] (paired bootstrap over {} examples)",
        100.0 * d.mean,
        100.0 * d.low,
        100.0 * d.high,
        report.search.validation_examples
    )?;
    // The winner is the best of several on these very examples: its lead there is biased up.
    let compared = report.search.validated.len();
    if report.improved && compared > 2 {
        writeln!(
            out,
            "  (the best of {compared} prompts compared on these examples, so the difference flatters it; a test \
             split measures it without that bias)"
        )?;
    }
    if !report.improved {
        writeln!(out, "\nNo candidate beat the original on the validation split; the prompt is left as it is.")?;
        return Ok(());
    }
    // Edits and the diff carry the prompt's text and the model's paraphrases: untrusted.
    writeln!(out, "\nedits:")?;
    for (i, e) in report.edits.iter().enumerate() {
        writeln!(out, "  {}. {}", i + 1, printable(e))?;
    }
    let target = written.map_or("optimized".to_string(), |p| p.display().to_string());
    let diff = similar::TextDiff::from_lines(original, &report.text)
        .unified_diff()
        .context_radius(2)
        .header(&report.file.display().to_string(), &target)
        .to_string();
    writeln!(out, "\n{}", printable(&diff))?;
    if let Some(path) = written {
        writeln!(out, "wrote {}", path.display())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_budget_left_unspent_says_why_when_it_matters() {
        // A search's result as `reprompt optimize --json` wrote it (the example, budget 150).
        let mut result: SearchResult =
            serde_json::from_str(include_str!("../../../tests/fixtures/search-result.json")).expect("a result");
        result.budget = 2000;
        result.gate_reserve = 160;
        result.evaluations = 1965;
        assert_eq!(unspent_note(&result), None, "35 left of 2000 is the last step's change");
        result.evaluations = 1700;
        let note = unspent_note(&result).expect("300 left");
        assert!(note.starts_with("300 evaluations unspent: 160 of the budget are held back"), "{note}");
        result.exhausted = true;
        result.evaluations = 1990;
        let note = unspent_note(&result).expect("nothing new was reachable");
        assert!(note.starts_with("10 evaluations unspent: the search scored nothing new"), "{note}");
        assert!(note.ends_with("(nothing new was reachable)"), "{note}");
        // Prompts too long for the context are recorded free: a search can end among them.
        result.too_long = 3;
        let note = unspent_note(&result).expect("only too long prompts were reachable");
        assert!(note.ends_with("but prompts too long for the model's context with some examples)"), "{note}");
        result.evaluations = 2000;
        assert_eq!(unspent_note(&result), None);
    }

    #[test]
    fn a_score_never_measured_shows_as_a_dash() {
        assert_eq!(pct(0.8125), "81.2%");
        assert_eq!(pct(f64::NAN), "–");
    }
}
