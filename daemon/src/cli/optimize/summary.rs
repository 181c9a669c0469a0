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

/// Why a search tried few prompts, when most of the budget went to scoring whole splits:
/// the original and the template on all of train before the first round, and the gate's
/// validations (large splits make each of these cost hundreds). Said when those took more
/// than half of the budget and the search ended for want of it.
fn short_search_note(result: &SearchResult) -> Option<String> {
    let phases = result.phases?;
    let searched = phases.search?;
    ((phases.setup + result.gate_reserve) * 2 > result.budget && !result.exhausted).then(|| {
        format!(
            "the search's rounds had {searched} of the {} evaluations: scoring the original and the template on the \
             whole training split took {}, and {} are held back to validate the best prompts on {} examples each \
             (a larger --budget searches further)",
            result.budget, phases.setup, result.gate_reserve, result.validation_examples
        )
    })
}

/// For a winner whose lead over the original on validation has a paired interval reaching
/// zero: a lead this size on so few examples may be chance (the gate offers it all the same:
/// it did win there, and the test split, if any, says more).
fn chance_note(improved: bool, difference: crate::eval::stats::Interval, n: usize) -> Option<String> {
    (improved && difference.low <= 0.0).then(|| {
        format!(
            "the interval includes no gain: on {n} examples the lead may be chance; more validation examples would tell"
        )
    })
}

/// Labellings judged out of sample ([`Screened::record`](crate::optimize::labels::Screened::record)),
/// as one line: `the ranked words 68.8%, terrible / great 55.5%, …`.
pub(crate) fn judged_labellings(records: &[(String, f64, bool)]) -> String {
    let judged: Vec<String> = records
        .iter()
        .map(|(words, accuracy, ranked)| {
            let name = if *ranked { "the ranked words" } else { words.as_str() };
            format!("{name} {}", pct(*accuracy))
        })
        .collect();
    judged.join(", ")
}

/// The last quoted value of an edit's description (`answer cue "Topic:"` → `Topic:`).
fn last_quoted(edit: &str) -> Option<&str> {
    let body = edit.strip_suffix('"')?;
    body.rfind('"').map(|at| &body[at + 1..])
}

/// Whether an edit (by its description) makes a completion prompt, plain or bare.
fn completion(edit: &str) -> bool {
    edit.starts_with("plain completion prompt") || edit.starts_with("bare completion prompt")
}

/// The settings an edit (by its description, [`Edit::describe`](crate::optimize::edits::Edit::describe))
/// gives a value, with the value, its own first: a completion prompt, plain or bare, sets the
/// answer cue and the layout (plain text); new label words drop the calibration.
fn settings(edit: &str) -> Vec<(&'static str, Option<&str>)> {
    if edit.starts_with("label words ") {
        vec![("labels", Some(edit)), ("calibration", None)]
    } else if edit.starts_with("calibrate the labels") {
        vec![("calibration", Some(edit))]
    } else if edit.starts_with("answer cue ") {
        vec![("cue", last_quoted(edit))]
    } else if completion(edit) {
        vec![("cue", last_quoted(edit)), ("format", Some("plain"))]
    } else if edit == "plain text instead of the chat template" {
        vec![("format", Some("plain"))]
    } else if edit == "the chat template instead of plain text" {
        vec![("format", Some("chat"))]
    } else {
        Vec::new()
    }
}

/// What became of each edit of a lineage in the `result` text, where the listing would
/// otherwise mislead: the setting it gave a value (label words, calibration, answer cue,
/// layout; not a completion prompt, whose deletions stay) given another by a later edit, or
/// the sentence it added gone — only where a later edit took it out (a bare completion
/// prompt, or a deletion or rewrite that quotes it), as new label words rename the label
/// words a sentence names.
fn fates(edits: &[String], result: &str) -> Vec<Option<String>> {
    edits
        .iter()
        .enumerate()
        .map(|(i, edit)| {
            let later = || edits.iter().enumerate().skip(i + 1);
            if let Some(&(setting, value)) = settings(edit).first().filter(|_| !completion(edit)) {
                let (n, by) = later().find_map(|(n, e)| {
                    settings(e).into_iter().find(|(s, v)| *s == setting && *v != value).map(|(_, v)| (n, v))
                })?;
                let how = if by.is_some() { "replaced" } else { "dropped" };
                return Some(format!("{how} by {}", n + 1));
            }
            // The sentence an `add "…"` or `rewrite "…" as "…"` put in, every way the
            // description can be read (the quoted texts may hold `" as "` themselves).
            let added: Vec<&str> = if let Some(phrase) = edit.strip_prefix("add \"") {
                vec![phrase.strip_suffix('"')?]
            } else if edit.starts_with("rewrite \"") {
                let body = edit.strip_suffix('"')?;
                body.match_indices("\" as \"").map(|(at, sep)| &body[at + sep.len()..]).collect()
            } else {
                return None;
            };
            let took_out = |e: &String| {
                e.starts_with("bare completion prompt")
                    || added.iter().any(|text| {
                        e.starts_with(&format!("delete \"{text}\"")) || e.starts_with(&format!("rewrite \"{text}\" as"))
                    })
            };
            let gone = !added.is_empty() && added.iter().all(|text| !result.contains(text));
            (gone && later().any(|(_, e)| took_out(e)))
                .then(|| "not in the result: a later edit removed it".to_string())
        })
        .collect()
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
    if let Some(h) = &report.held_out {
        writeln!(
            out,
            "validation: {} of the {} examples in {}, held out (the prompt names no `reprompt.validation`); the \
             search, its demonstrations and calibrations used the other {}",
            h.validation,
            h.train + h.validation,
            h.dataset.display(),
            h.train
        )?;
    }
    for note in [unspent_note(&report.search), short_search_note(&report.search)].into_iter().flatten() {
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
        let judged = judged_labellings(&report.search.template_screen);
        writeln!(out, "template label words, calibrated, out of sample on train: {judged}")?;
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
    if let Some(note) = chance_note(report.improved, d, report.search.validation_examples) {
        writeln!(out, "  ({note})")?;
    }
    if !report.improved {
        writeln!(out, "\nNo candidate beat the original on the validation split; the prompt is left as it is.")?;
        return Ok(());
    }
    // Edits and the diff carry the prompt's text and the model's paraphrases: untrusted.
    writeln!(out, "\nedits:")?;
    for (i, (e, fate)) in report.edits.iter().zip(fates(&report.edits, &report.text)).enumerate() {
        let fate = fate.map(|f| format!("  ({f})")).unwrap_or_default();
        writeln!(out, "  {}. {}{fate}", i + 1, printable(e))?;
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
    use crate::optimize::search::Phases;

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
    fn a_search_left_little_by_whole_split_scores_says_so() {
        let mut result: SearchResult =
            serde_json::from_str(include_str!("../../../tests/fixtures/search-result.json")).expect("a result");
        assert_eq!(result.phases, None, "a result written before phases were kept");
        assert_eq!(short_search_note(&result), None);
        // 200 training and 100 validation examples at budget 2000: the original and the
        // template took 600, the gate holds 500 back, the rounds had 896.
        result.budget = 2000;
        result.gate_reserve = 500;
        result.validation_examples = 100;
        result.exhausted = false;
        result.phases = Some(Phases { setup: 600, search: Some(896) });
        let note = short_search_note(&result).expect("a short search");
        assert!(note.starts_with("the search's rounds had 896 of the 2000 evaluations"), "{note}");
        assert!(
            note.contains("took 600, and 500 are held back to validate the best prompts on 100 examples"),
            "{note}"
        );
        // The example's run: whole splits took 96 and 160, the rounds most of the budget.
        result.gate_reserve = 160;
        result.phases = Some(Phases { setup: 96, search: Some(1709) });
        assert_eq!(short_search_note(&result), None);
        // Still running (the rounds' share not known yet): nothing to say.
        result.gate_reserve = 500;
        result.phases = Some(Phases { setup: 600, search: None });
        assert_eq!(short_search_note(&result), None);
        // A search that ran out of new prompts was not cut short by the budget.
        result.phases = Some(Phases { setup: 600, search: Some(300) });
        result.exhausted = true;
        assert_eq!(short_search_note(&result), None);
    }

    #[test]
    fn a_lead_whose_interval_reaches_zero_may_be_chance() {
        use crate::eval::stats::Interval;
        let interval = |low: f64| Interval { mean: 0.094, low, high: 0.375 };
        // A claim check's winner: +9.4 points, [-15.6, +37.5] over 32 examples.
        let note = chance_note(true, interval(-0.156), 32).expect("a lead that may be chance");
        assert!(note.starts_with("the interval includes no gain: on 32 examples"), "{note}");
        assert!(chance_note(true, interval(0.0), 32).is_some());
        assert_eq!(chance_note(true, interval(0.031), 32), None);
        assert_eq!(chance_note(false, interval(-0.156), 32), None, "nothing offered, nothing to doubt");
    }

    #[test]
    fn a_score_never_measured_shows_as_a_dash() {
        assert_eq!(pct(0.8125), "81.2%");
        assert_eq!(pct(f64::NAN), "–");
    }

    #[test]
    fn an_edit_a_later_one_undid_says_so() {
        let edits: Vec<String> = [
            "add \"Be accurate.\"",
            "label words bad / good",
            "answer cue \"Answer:\"",
            "rewrite \"Say \" as \" one word.\" as \"Answer in one word.\"",
            "calibrate the labels: label bias [0, 0.21]",
            "add example \"Review: fine | Answer: good\"",
            "bare completion prompt: the example's lines and \"Sentiment:\"",
            "add \"Read the text carefully.\"",
            "label words negative / positive",
            "calibrate the labels: label bias [0, 0.69]",
            "rewrite \"Read the text carefully.\" as \"Read it.\"",
        ]
        .map(String::from)
        .to_vec();
        let result = "Read it.\nReview: {{sentence}}\nSentiment:";
        let got = fates(&edits, result);
        let gone = Some("not in the result: a later edit removed it".to_string());
        assert_eq!(got[0], gone, "the bare prompt took it out");
        assert_eq!(got[1].as_deref(), Some("replaced by 9"));
        assert_eq!(got[2].as_deref(), Some("replaced by 7"), "a bare prompt sets its own cue");
        assert_eq!(got[3], gone, "every reading of the rewrite is gone");
        assert_eq!(got[4].as_deref(), Some("dropped by 9"), "new label words drop the calibration");
        assert_eq!(got[5], None, "a demonstration is rewritten, not judged by its text");
        assert_eq!(got[6], None);
        assert_eq!(got[7], gone, "rewritten later");
        assert_eq!((got[8].clone(), got[9].clone(), got[10].clone()), (None, None, None));
        // An added sentence still there, under any reading of its description, is no news.
        let kept = fates(&edits, "Answer in one word. Be accurate.");
        assert_eq!((kept[0].clone(), kept[3].clone()), (None, None));
        let ambiguous = fates(&["rewrite \"a\" as \"b\" as \"c\"".to_string()], "x b\" as \"c y");
        assert_eq!(ambiguous, vec![None]);
    }

    #[test]
    fn only_a_change_of_value_replaces_a_setting() {
        let edits: Vec<String> = [
            "answer cue \"Sentiment:\"",
            "bare completion prompt: the example's lines and \"Sentiment:\"",
            "the chat template instead of plain text",
            "plain completion prompt ending in \"Answer:\"",
            "add \"Say great or terrible.\"",
            "label words negative / positive",
        ]
        .map(String::from)
        .to_vec();
        // The sentence was renamed by the new label words, not removed: no claim.
        let got = fates(&edits, "Say positive or negative.\nReview: {{sentence}}\nAnswer:");
        assert_eq!(got[0].as_deref(), Some("replaced by 4"), "the bare prompt kept Sentiment:, the completion did not");
        assert_eq!(got[1], None, "a completion prompt's deletions stay");
        assert_eq!(got[2].as_deref(), Some("replaced by 4"), "a completion prompt is plain text");
        assert_eq!(got[4], None);
        let deleted = [edits[4].clone(), "delete \"Say great or terrible.\"".to_string()];
        assert_eq!(
            fates(&deleted, "Review: {{sentence}}")[0].as_deref(),
            Some("not in the result: a later edit removed it")
        );
    }
}
