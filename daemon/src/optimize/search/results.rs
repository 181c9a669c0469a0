//! The search's results: each prompt's per-example outcomes, paid for once within the budget,
//! and the results a calibration of a prompt takes from its siblings' without the model.

use reprompt_protocol::PromptDocument;
use reprompt_protocol::settings::Task;

use super::{Outcome, Search, key};
use crate::eval::Split;
use crate::optimize::edits::{self, Edit, apply_checked};
use crate::optimize::{OptimizeError, Result, calibrate};

/// What the calibrations of one classification prompt share: the text without
/// `reprompt.label_bias` ([`edits::without_label_bias`]), and a reward the offsets alone
/// decide (accuracy and RLPrompt's gap, weighted); each has its own offsets.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct Family {
    /// Key of the text without the offsets.
    base: String,
    bias: Vec<f64>,
    reward: Vec<(String, f64)>,
}

impl Family {
    /// `None` for a prompt whose results the offsets do not decide alone: not a
    /// classification, a reward with other parts (`logprob`), a template that could read its
    /// own front matter (`@metadata`, partials), or one the evaluator would refuse (errors,
    /// such as offsets of the wrong length).
    fn of(doc: &PromptDocument) -> Option<Self> {
        let settings = &doc.settings;
        if doc.has_errors()
            || settings.labels.is_none()
            || settings.task.is_some_and(|t| t != Task::Classify)
            || doc.source.contains("@metadata")
            || !doc.scan.partials.is_empty()
        {
            return None;
        }
        let reward = settings
            .reward
            .as_ref()
            .map_or_else(|| vec![("accuracy".to_string(), 1.0)], |r| r.value.components.clone());
        if reward.iter().any(|(name, _)| name != "accuracy" && name != "gap") {
            return None;
        }
        let bias = settings.label_bias.as_ref().map(|b| b.value.clone()).unwrap_or_default();
        Some(Self { base: key(&edits::without_label_bias(doc)?), bias, reward })
    }

    /// An example's result from its label probabilities (offsets applied) and gold label, as
    /// the evaluator scores it: the most probable label answers, the reward is the weighted
    /// accuracy and gap, the training signal the gap.
    fn outcome(&self, probabilities: Vec<f64>, gold: usize) -> Outcome {
        let predicted = crate::eval::rewards::predicted_label(&probabilities);
        let accuracy = crate::eval::rewards::accuracy(predicted, gold);
        let gap = crate::eval::rewards::gap(&probabilities, gold);
        let score = self.reward.iter().map(|(name, w)| w * if name == "accuracy" { accuracy } else { gap }).sum();
        // Bounded like the scorer's outcomes, whatever the source (rebiasing refuses
        // probabilities that are not finite: a safeguard, so no recorded result ever is).
        Outcome { score, signal: gap, probabilities, too_long: false }.finite()
    }
}

impl Search<'_> {
    /// Results of the recorded prompt `k` on `indices`, scoring only the missing ones (first
    /// from other calibrations of the prompt, free: [`Search::rebias`]); `None` (and nothing
    /// spent, though what was free is kept) when the rest do not fit in `limit` evaluations.
    pub(super) fn scores(
        &mut self,
        k: &str,
        split: Split,
        indices: &[usize],
        limit: usize,
    ) -> Result<Option<Vec<Outcome>>> {
        let known = self.state.records[k].outcomes(split);
        let was_whole = self.state.records[k].train.iter().all(Option::is_some);
        let mut missing: Vec<usize> = indices.iter().copied().filter(|&i| known[i].is_none()).collect();
        if !missing.is_empty() {
            missing = self.rebias(k, split, missing);
        }
        if limit == 0 && !missing.is_empty() {
            // Nothing to pay with (the gate's calibrations of placed families): no need to
            // ask the scorer what an example costs.
            return Ok(None);
        }
        let text = self.state.records[k].text.clone();
        let cost = if missing.is_empty() { 0 } else { missing.len() * self.scorer.evaluations_per_example(&text)? };
        if cost > limit {
            return Ok(None);
        }
        if !missing.is_empty() {
            let results = self.scorer.score(&text, split, &missing)?;
            if results.len() != missing.len() {
                return Err(OptimizeError::Input("the scorer returned a wrong number of results".into()));
            }
            // An example the prompt does not fit the model's context with was never put to
            // the model: it costs nothing.
            let unscored = results.iter().filter(|o| o.too_long).count();
            self.state.spent += cost - unscored * (cost / missing.len());
            let record = self.state.records.get_mut(k).expect("recorded");
            let slots = match split {
                Split::Validation => &mut record.validation,
                _ => &mut record.train,
            };
            for (i, outcome) in missing.into_iter().zip(results) {
                slots[i] = Some(outcome.finite());
            }
            self.note_curve();
        }
        if self.state.config.twins && !was_whole && self.state.records[k].full_mean(Split::Train).is_some() {
            self.add_twin(k)?;
        }
        let known = self.state.records[k].outcomes(split);
        Ok(Some(indices.iter().map(|&i| known[i].clone().expect("scored")).collect()))
    }

    /// [`SearchConfig::twins`](super::SearchConfig::twins): records the calibration of `k`
    /// fitted on its whole training split (where it differs from `k`'s own offsets) with its
    /// training results, all from `k`'s, free. A twin is filled directly ([`Search::rebias`]), never through
    /// [`Search::scores`], so it gets no twin of its own; one that cannot be filled whole (an
    /// example without a gold label or without probabilities) is not kept.
    fn add_twin(&mut self, k: &str) -> Result<()> {
        if self.family(k).is_none() {
            return Ok(());
        }
        let text = self.state.records[k].text.clone();
        let doc = self.doc(&text).clone();
        let Some(bias) = self.calibration(&text, &doc) else { return Ok(()) };
        let edit = Edit::LabelBias(bias);
        let Ok(twin) = apply_checked(&doc, &edit, &self.space) else { return Ok(()) };
        let mut lineage = self.state.records[k].lineage.clone();
        lineage.push(edit.describe(&text));
        let is_new = !self.state.records.contains_key(&key(&twin));
        let t = self.record(&twin, lineage);
        let train = &self.state.records[&t].train;
        let missing: Vec<usize> = (0..train.len()).filter(|&i| train[i].is_none()).collect();
        let derived_before = self.state.derived;
        if !self.rebias(&t, Split::Train, missing).is_empty() && is_new {
            self.state.records.remove(&t);
            self.state.derived = derived_before;
        }
        Ok(())
    }

    /// The calibration family of the recorded prompt `k` ([`Family`]), worked out once.
    pub(super) fn family(&mut self, k: &str) -> Option<Family> {
        if let Some(family) = self.families.get(k) {
            return family.clone();
        }
        let text = self.state.records[k].text.clone();
        let family = Family::of(self.doc(&text));
        self.families.insert(k.to_string(), family.clone());
        family
    }

    /// What stands for `k`'s calibration family when prompts are counted: the key of its text
    /// without offsets, or its own key where it has no family.
    pub(super) fn family_base(&mut self, k: &str) -> String {
        self.family(k).map_or_else(|| k.to_string(), |f| f.base)
    }

    /// The gold label ids of a split's examples (empty where the scorer has none).
    fn gold_of(&self, split: Split) -> &[Option<usize>] {
        match split {
            Split::Validation => &self.gold_validation,
            _ => &self.gold,
        }
    }

    /// Fills in the results of `k` on `missing` examples of `split` that another calibration
    /// of the same prompt has (its label probabilities under the other offsets, moved to `k`'s:
    /// [`calibrate::rebiased`]) and returns the examples still missing. No model call, nothing
    /// spent: the model's answer does not depend on the offsets, only the choice among labels.
    pub(super) fn rebias(&mut self, k: &str, split: Split, missing: Vec<usize>) -> Vec<usize> {
        let gold = self.gold_of(split);
        if !missing.iter().any(|&i| gold.get(i).copied().flatten().is_some()) {
            return missing;
        }
        let Some(family) = self.family(k) else { return missing };
        let keys: Vec<String> = self.state.records.keys().filter(|j| j.as_str() != k).cloned().collect();
        let mut siblings = Vec::new();
        for j in keys {
            if let Some(other) = self.family(&j).filter(|f| f.base == family.base) {
                siblings.push((j, other.bias));
            }
        }
        if siblings.is_empty() {
            return missing;
        }
        let gold = self.gold_of(split);
        let mut still = Vec::new();
        let mut found = Vec::new();
        for i in missing {
            let derived = gold.get(i).copied().flatten().and_then(|g| {
                siblings.iter().find_map(|(j, bias)| {
                    let outcome = self.state.records[j].outcomes(split)[i].as_ref()?;
                    let q = calibrate::rebiased(&outcome.probabilities, bias, &family.bias)?;
                    (g < q.len()).then(|| family.outcome(q, g))
                })
            });
            match derived {
                Some(outcome) => found.push((i, outcome)),
                None => still.push(i),
            }
        }
        if !found.is_empty() {
            self.state.derived += found.len();
            let record = self.state.records.get_mut(k).expect("recorded");
            let slots = match split {
                Split::Validation => &mut record.validation,
                _ => &mut record.train,
            };
            for (i, outcome) in found {
                slots[i] = Some(outcome);
            }
            self.note_curve();
        }
        still
    }

    /// The label offsets fitted to the known training results of `text`
    /// ([`calibrate::prior_bias`]), where calibration is on and they differ from the prompt's
    /// own by at least 0.05 for some label.
    pub(super) fn calibration(&self, text: &str, doc: &PromptDocument) -> Option<Vec<f64>> {
        if !self.state.config.calibrate {
            return None;
        }
        let record = self.state.records.get(&key(text))?;
        let gold = &self.gold;
        let known: Vec<(&[f64], usize)> = record
            .train
            .iter()
            .zip(gold)
            .filter_map(|(o, g)| Some((o.as_ref()?.probabilities.as_slice(), (*g)?)))
            .filter(|(p, _)| !p.is_empty())
            .collect();
        let current = doc.settings.label_bias.as_ref().map(|b| b.value.clone()).unwrap_or_default();
        let bias = calibrate::prior_bias(&known, &current)?;
        let old = |k: usize| current.get(k).copied().unwrap_or(0.0);
        bias.iter().enumerate().any(|(k, b)| (b - old(k)).abs() >= 0.05).then_some(bias)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::optimize::edits::EditSpace;
    use crate::optimize::search::fixture::*;
    use crate::optimize::search::{Record, SCORE_BOUND, Scorer, SearchConfig, Stop, Strategy};
    use reprompt_protocol::parse;

    #[test]
    fn scores_that_are_not_finite_are_kept_finite_and_the_checkpoint_stays_readable() {
        let dir = std::env::temp_dir().join(format!("reprompt-search-nan-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let cfg = config(Strategy::Random, 600);
        let mut scorer = Altered::unbounded();
        let mut first = Search::new(EXAMPLE, cfg.clone(), space(), &mut scorer).unwrap();
        assert_eq!(first.run(Some(&dir), Some(2), &mut |_| {}).unwrap(), Err(Stop::Interrupted));
        let state = first.state.clone();
        drop(first);
        let outcomes = state.records.values().flat_map(|r| r.train.iter().chain(&r.validation).flatten());
        assert!(outcomes.clone().all(|o| o.score.is_finite() && o.signal.is_finite()));
        assert!(
            outcomes.clone().any(|o| o.score == -SCORE_BOUND) && outcomes.clone().any(|o| o.signal == -SCORE_BOUND)
        );
        assert!(Search::checkpoint_matches(&dir, EXAMPLE, &cfg), "the checkpoint reads back");
        let mut scorer = Altered::unbounded();
        let mut resumed = Search::load(&dir, EXAMPLE, &cfg, space(), &mut scorer).unwrap();
        let result = resumed.run(Some(&dir), None, &mut |_| {}).unwrap().unwrap();
        assert!(result.best_validation.is_finite() && result.original_validation.is_finite());
        drop(resumed);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn results_derived_from_another_calibration_are_kept_finite_too() {
        let family = Family { base: String::new(), bias: vec![0.0, 0.0], reward: vec![("gap".into(), 1.0)] };
        let outcome = family.outcome(vec![f64::NAN, 0.5], 0);
        assert_eq!((outcome.score, outcome.signal), (-SCORE_BOUND, -SCORE_BOUND));
        assert_eq!(outcome.probabilities, vec![0.0, 0.5]);
    }

    #[test]
    fn a_calibration_of_a_scored_prompt_is_scored_from_its_results_not_by_the_model() {
        let mut scorer = Leaning { scored: 0 };
        // Without twins, so that only the calibrations made here share results.
        let cfg = SearchConfig { twins: false, ..config(Strategy::Random, 1500) };
        let mut search = Search::new(EXAMPLE, cfg, space(), &mut scorer).unwrap();
        let original = search.record(EXAMPLE, Vec::new());
        let all: Vec<usize> = (0..32).collect();
        search.scores(&original, Split::Train, &all, usize::MAX).unwrap().unwrap();
        search.scores(&original, Split::Validation, &all[..8], usize::MAX).unwrap().unwrap();
        assert_eq!(search.state.spent, 40);
        let with = |text: &str, edit: Edit, space: &EditSpace| apply_checked(&parse(text, None), &edit, space).unwrap();
        let calibrated = with(EXAMPLE, Edit::LabelBias(vec![0.0, -2.0]), &search.space);
        let again = with(&calibrated, Edit::LabelBias(vec![0.0, -1.75]), &search.space);
        for (text, derived_before) in [(&calibrated, 0), (&again, 40)] {
            let k = search.record(text, Vec::new());
            let train = search.scores(&k, Split::Train, &all, usize::MAX).unwrap().unwrap();
            // Half of validation is known for the original: the rest is the model's to score.
            let validation = search.scores(&k, Split::Validation, &all[..16], usize::MAX).unwrap().unwrap();
            assert_eq!(search.state.derived, derived_before + 32 + 8 + if derived_before == 0 { 0 } else { 8 });
            let mut direct = Leaning { scored: 0 };
            for (split, got, n) in [(Split::Train, &train, 32), (Split::Validation, &validation, 16)] {
                let want = direct.score(text, split, &all[..n]).unwrap();
                for (g, w) in got.iter().zip(&want) {
                    assert_eq!(g.score, w.score, "{split:?}");
                    assert!((g.signal - w.signal).abs() < 1e-9, "{split:?}: {} vs {}", g.signal, w.signal);
                    assert!(g.probabilities.iter().zip(&w.probabilities).all(|(a, b)| (a - b).abs() < 1e-12));
                }
            }
        }
        // The model scored only what no calibration had: 32 + 8 for the original, 8 more of
        // validation for the first calibration, nothing for the second.
        assert_eq!(search.state.spent, 48);
        // The calibration is what the author's prompt lacked: every training example right.
        assert_eq!(search.state.records[&key(&calibrated)].full_mean(Split::Train), Some(1.0));
        assert_eq!(search.state.records[&original].full_mean(Split::Train), Some(0.5));
        // A reward the offsets do not decide alone (`logprob`) is the model's to score.
        let weighted = EXAMPLE.replace("reprompt.reward: accuracy", "reprompt.reward: {accuracy: 1.0, logprob: 0.1}");
        assert_ne!(weighted, EXAMPLE, "the example names its reward");
        let base = search.record(&weighted, Vec::new());
        search.scores(&base, Split::Train, &all[..8], usize::MAX).unwrap().unwrap();
        let k = search.record(&with(&weighted, Edit::LabelBias(vec![0.0, -2.0]), &search.space), Vec::new());
        search.scores(&k, Split::Train, &all[..8], usize::MAX).unwrap().unwrap();
        assert_eq!(search.state.spent, 64);
        drop(search);
        assert_eq!(scorer.scored, 64);
    }

    #[test]
    fn only_calibrations_of_one_prompt_whose_reward_the_offsets_decide_share_results() {
        let family = |text: &str| Family::of(&parse(text, None));
        let with = |text: &str, edit: Edit| apply_checked(&parse(text, None), &edit, &space()).unwrap();
        let plain = family(EXAMPLE).expect("a classification prompt");
        let calibrated = family(&with(EXAMPLE, Edit::LabelBias(vec![0.0, 0.7]))).expect("calibrated");
        assert_eq!(calibrated.base, plain.base);
        assert_eq!((plain.bias.clone(), calibrated.bias), (Vec::new(), vec![0.0, 0.7]));
        // Other words, other instructions, another cue: other prompts.
        let relabelled = family(&with(EXAMPLE, Edit::Labels(vec!["bad".into(), "good".into()]))).unwrap();
        let reworded = family(&EXAMPLE.replace("movie reviews", "film reviews")).unwrap();
        let plain_layout = family(&with(EXAMPLE, Edit::Format(reprompt_protocol::settings::Format::Plain))).unwrap();
        for other in [&relabelled, &reworded, &plain_layout] {
            assert_ne!(other.base, plain.base);
        }
        // Accuracy and gap, weighted: the evaluator's sum, the gap the signal; three labels.
        let weighted =
            family(&EXAMPLE.replace("reprompt.reward: accuracy", "reprompt.reward: {accuracy: 1.0, gap: 0.01}"))
                .unwrap();
        let right = weighted.outcome(vec![0.2, 0.5, 0.3], 1);
        assert!((right.signal - 40.0).abs() < 1e-9 && (right.score - 1.4).abs() < 1e-9, "{right:?}");
        let wrong = weighted.outcome(vec![0.6, 0.1, 0.3], 1);
        assert!((wrong.signal + 90.0).abs() < 1e-9 && (wrong.score + 0.9).abs() < 1e-9, "{wrong:?}");
        // Not decided by the offsets alone, or not for the model to score at all.
        let none = [
            EXAMPLE.replace("reprompt.reward: accuracy", "reprompt.reward: {accuracy: 1.0, logprob: 0.1}"),
            include_str!("../../../../examples/gsm8k/gsm8k.prompt").to_string(),
            format!("{EXAMPLE}{{{{~> footer}}}}\n"),
            format!("{EXAMPLE}{{{{@metadata.prompt.name}}}}\n"),
            EXAMPLE.replace("reprompt.reward: accuracy", "reprompt.reward: accuracy\nreprompt.label_bias: [0, 1, 2]"),
        ];
        for text in &none {
            assert_eq!(family(text), None, "{text}");
        }
    }

    #[test]
    fn with_twins_a_whole_train_prompt_gets_its_calibration_beside_it_for_free() {
        let all: Vec<usize> = (0..32).collect();
        for twins in [false, true] {
            let mut scorer = Leaning { scored: 0 };
            let cfg = SearchConfig { twins, ..config(Strategy::Random, 600) };
            let mut search = Search::new(EXAMPLE, cfg, space(), &mut scorer).unwrap();
            let original = search.record(EXAMPLE, Vec::new());
            // A minibatch is not the whole split: no twin yet.
            search.scores(&original, Split::Train, &all[..16], usize::MAX).unwrap().unwrap();
            assert_eq!(search.state.records.len(), 1);
            search.scores(&original, Split::Train, &all, usize::MAX).unwrap().unwrap();
            assert_eq!(search.state.spent, 32);
            let calibrated: Vec<&Record> = search
                .state
                .records
                .values()
                .filter(|r| r.lineage.last().is_some_and(|l| l.starts_with("calibrate the labels")))
                .collect();
            if !twins {
                assert!(calibrated.is_empty() && search.state.derived == 0);
                continue;
            }
            // The twin: the offsets fitted on all of train, every training result from the
            // original's, nothing spent; and it is what the leaning prompt lacked.
            assert_eq!(calibrated.len(), 1);
            assert_eq!(calibrated[0].full_mean(Split::Train), Some(1.0));
            assert_eq!(search.state.derived, 32);
            let bias = parse(&calibrated[0].text, None).settings.label_bias.expect("offsets").value;
            assert!(bias[0] == 0.0 && bias[1] < -1.0, "{bias:?}");
            // Its own calibration is itself: no twin of the twin.
            assert_eq!(search.state.records.len(), 2);
        }
    }

    #[test]
    fn a_prompt_that_leans_to_one_label_is_calibrated() {
        for strategy in [Strategy::Ppo, Strategy::Random, Strategy::Greedy, Strategy::Evolution] {
            let mut scorer = Leaning { scored: 0 };
            let mut search = Search::new(EXAMPLE, config(strategy, 1500), space(), &mut scorer).unwrap();
            let result = search.run(None, None, &mut |_| {}).unwrap().unwrap();
            assert_eq!(result.original_validation, 0.5, "{strategy:?}");
            assert_eq!(result.best_validation, 1.0, "{strategy:?}: {}", result.best_text);
            let doc = parse(&result.best_text, None);
            assert!(doc.diagnostics.is_empty(), "{:?}", doc.diagnostics);
            let bias = doc.settings.label_bias.expect("calibrated").value;
            assert!(bias[0] == 0.0 && bias[1] < -1.0 && bias[1] > -3.0, "{strategy:?}: {bias:?}");
            assert!(
                result.best_lineage.iter().any(|l| l.starts_with("calibrate the labels")),
                "{:?}",
                result.best_lineage
            );
        }
        // Off, the edit is never offered: no prompt of the run has a bias.
        let mut scorer = Leaning { scored: 0 };
        let config = SearchConfig { calibrate: false, ..config(Strategy::Random, 600) };
        let mut search = Search::new(EXAMPLE, config, space(), &mut scorer).unwrap();
        let result = search.run(None, None, &mut |_| {}).unwrap().unwrap();
        assert!(!result.improved);
        assert!(search.state.records.values().all(|r| !r.text.contains("reprompt.label_bias")));
    }
}
