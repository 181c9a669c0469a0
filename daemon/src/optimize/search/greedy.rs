//! Greedy hill-climbing (GrIPS): edits of the current prompt compared on one minibatch, the
//! best kept if it also wins on all of train.

use super::{Search, beats, score_and_signal};
use crate::eval::Split;
use crate::optimize::Result;
use crate::optimize::edits::Edit;

impl Search<'_> {
    /// Where greedy's climb and evolution's population start: the best prompt scored on all of
    /// train so far (the template, when there is one, as PPO's and random's elite starts have
    /// it), else the author's.
    pub(super) fn starting_point(&self) -> String {
        self.best_by(Split::Train).map_or_else(|| self.state.original_key.clone(), |(k, _)| k.clone())
    }

    /// GrIPS: sample edits of the current prompt, score them on one minibatch with it, and move
    /// to the best if it also wins on the whole train split.
    pub(super) fn greedy_iteration(&mut self) -> Result<()> {
        let current = self.state.strategy.current.clone().unwrap_or_else(|| self.starting_point());
        self.state.strategy.current = Some(current.clone());
        let text = self.state.records[&current].text.clone();
        let mut options = self.candidates(&text)?;
        // The calibration stays whatever the sample, as for the other strategies ([`Search::candidates`]),
        // and goes first: its results mostly come free from the current prompt's, and a budget
        // that runs out within the step (or a tie) does not pass it over.
        let calibration = options.pop_if(|(e, _)| matches!(e, Edit::LabelBias(_)));
        self.rng.shuffle(&mut options);
        options.truncate(self.state.config.width);
        if let Some(c) = calibration {
            options.insert(0, c);
        }
        let batch = self.sample_minibatch();
        let limit = self.search_budget_left();
        let Some(base) = self.scores(&current, Split::Train, &batch, limit)? else { return Ok(()) };
        let base_score = score_and_signal(&base);
        let doc = self.doc(&text).clone();
        let mut best: Option<(String, (f64, f64))> = None;
        for (edit, edited) in options {
            let mut lineage = self.state.records[&current].lineage.clone();
            lineage.push(edit.describe(&doc.source));
            let child = self.record(&edited, lineage);
            let limit = self.search_budget_left();
            let Some(out) = self.scores(&child, Split::Train, &batch, limit)? else { break };
            let s = score_and_signal(&out);
            if best.as_ref().is_none_or(|(_, b)| beats(s, *b)) {
                best = Some((child, s));
            }
        }
        if let Some((child, s)) = best
            && beats(s, base_score)
        {
            let all: Vec<usize> = (0..self.scorer.split_len(Split::Train)).collect();
            let limit = self.search_budget_left();
            let cur = self.scores(&current, Split::Train, &all, limit)?;
            let limit = self.search_budget_left();
            let new = self.scores(&child, Split::Train, &all, limit)?;
            if let (Some(cur), Some(new)) = (cur, new)
                && beats(score_and_signal(&new), score_and_signal(&cur))
            {
                self.state.strategy.current = Some(child);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::optimize::search::fixture::*;
    use crate::optimize::search::{SearchConfig, Strategy, key};

    #[test]
    fn greedy_tries_the_calibration_whatever_its_sample_of_the_other_edits() {
        // Also with the search's budget spent: the calibration, scored from the current
        // prompt's results for free, comes before the edits that would cost evaluations.
        for (seed, spent) in (0..10).flat_map(|seed| [(seed, false), (seed, true)]) {
            let mut scorer = Leaning { scored: 0 };
            let cfg = SearchConfig { seed, width: 2, twins: false, ..config(Strategy::Greedy, 1500) };
            let mut search = Search::new(EXAMPLE, cfg, space(), &mut scorer).unwrap();
            let original = search.record(EXAMPLE, Vec::new());
            let all: Vec<usize> = (0..32).collect();
            search.scores(&original, Split::Train, &all, usize::MAX).unwrap().unwrap();
            if spent {
                search.state.spent = search.state.config.budget - search.gate_reserve();
                assert_eq!(search.search_budget_left(), 0);
            }
            search.state.strategy.current = Some(original);
            search.greedy_iteration().unwrap();
            let calibrated = search
                .state
                .records
                .values()
                .find(|r| r.lineage.last().is_some_and(|l| l.starts_with("calibrate the labels")))
                .unwrap_or_else(|| panic!("seed {seed} {spent}: no calibration tried"));
            assert!(calibrated.train.iter().any(Option::is_some), "seed {seed} {spent}: scored on the minibatch");
            // It wins: the leaning prompt's calibration is the step greedy takes.
            let took = search.state.strategy.current.as_deref();
            assert_eq!(took, Some(key(&calibrated.text).as_str()), "seed {seed} {spent}");
        }
    }
}
