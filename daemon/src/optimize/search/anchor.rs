//! StablePrompt's anchor for PPO: the best prompt found since the last check, scored on
//! validation, advances the anchor policy or rolls the policy back to it.

use super::{Outcome, Search, mean};
use crate::eval::Split;
use crate::optimize::{PolicyNet, PolicySnapshot, Result};

/// What an anchor check does with the policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum AnchorDecision {
    /// Back to the anchor's weights.
    RollBack,
    /// Neither rolled back nor the new anchor.
    Keep,
    /// The policy becomes the anchor, with the score just measured.
    Advance,
}

/// StablePrompt's rule: a validation score at or above the anchor's advances the anchor; one
/// below it by more than 1.5 examples of the `n` rolls back; in between is noise on a small
/// split, and nothing changes. An example is worth `spread`, the range its score takes (1
/// for accuracy; hundreds for the gap reward).
fn anchor_decision(anchor: Option<f64>, validation: f64, n: usize, spread: f64) -> AnchorDecision {
    let tolerance = 1.5 * spread / n.max(1) as f64;
    match anchor {
        None => AnchorDecision::Advance,
        Some(a) if validation >= a => AnchorDecision::Advance,
        Some(a) if validation + tolerance < a => AnchorDecision::RollBack,
        Some(_) => AnchorDecision::Keep,
    }
}

/// The range of the examples' scores in `outcomes` (1 where they are all equal): what one
/// example can move a mean by, on the reward's own scale.
fn score_spread(outcomes: &[Outcome]) -> f64 {
    let (low, high) =
        outcomes.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), o| (l.min(o.score), h.max(o.score)));
    let spread = high - low;
    if spread.is_finite() && spread > 0.0 { spread } else { 1.0 }
}

impl Search<'_> {
    /// The best prompt by train (the same order as [`Search::best_by`]) among those first
    /// scored at or after `mark` evaluations and not judged by an anchor check yet (a free
    /// calibration recorded right before a check is found at its mark, and could come again).
    fn best_found_since(&self, mark: usize) -> Option<String> {
        let judged = &self.state.strategy.anchor_judged;
        self.best_where(Split::Train, |k, r| r.found_at >= mark && !judged.contains(k)).map(|(k, _)| k.clone())
    }

    /// StablePrompt's anchor: the best prompt the policy found since the last check (and not
    /// judged before) is scored on validation. Below the anchor's by more than the tolerance, the policy rolls back to
    /// the anchor; at or above it, `searcher` — the weights that found it, the policy before
    /// its latest update, which no check has seen act — becomes the anchor with that score
    /// (the policy itself goes on from its update); in between both stay. Nothing found since
    /// (no new prompt scored on all of train) decides nothing.
    pub(super) fn anchor_check(&mut self, searcher: &PolicySnapshot) -> Result<()> {
        let now = self.state.spent;
        let Some(best) = self.best_found_since(self.state.strategy.anchor_mark) else {
            self.state.strategy.anchor_mark = now;
            return Ok(());
        };
        let n = self.scorer.split_len(Split::Validation);
        let all: Vec<usize> = (0..n).collect();
        let limit = self.search_budget_left();
        // Unaffordable now, it is neither judged nor passed over: a later check may afford it.
        let Some(out) = self.scores(&best, Split::Validation, &all, limit)? else { return Ok(()) };
        self.state.strategy.anchor_mark = now;
        self.state.strategy.anchor_judged.insert(best);
        let validation = mean(out.iter().map(|o| o.score));
        let spread = score_spread(&out);
        let ppo = self.ppo.as_mut().expect("ppo strategy");
        let anchor_validation = self.anchor.as_ref().and(self.state.strategy.anchor_validation);
        match (anchor_decision(anchor_validation, validation, n, spread), &self.anchor) {
            (AnchorDecision::RollBack, Some(anchor)) => {
                ppo.restore(&anchor.snapshot()?)?;
                self.state.strategy.rollbacks += 1;
            }
            (AnchorDecision::Keep, _) => {}
            _ => {
                let dims = ppo.dims();
                self.anchor = Some(PolicyNet::from_snapshot(dims, ppo.config().hidden, searcher)?);
                self.state.strategy.anchor_validation = Some(validation);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::optimize::search::fixture::*;
    use crate::optimize::search::{SearchConfig, Strategy};

    #[test]
    fn anchor_checks_judge_only_the_prompts_found_since_the_last_check() {
        // Validation favours the author's prompt, train the planted words.
        let mut scorer = Planted { scored: 0, adversarial_validation: true };
        let mut search = Search::new(EXAMPLE, config(Strategy::Ppo, 10_000), space(), &mut scorer).unwrap();
        let searcher = search.ppo.as_ref().unwrap().snapshot().unwrap();
        let train: Vec<usize> = (0..24).collect();
        let original = search.record(EXAMPLE, Vec::new());
        search.scores(&original, Split::Train, &train, usize::MAX).unwrap().unwrap();
        search.anchor_check(&searcher).unwrap();
        assert_eq!(search.state.strategy.anchor_validation, Some(1.0), "the first check sets the anchor");
        assert!(search.anchor.is_some());

        // A prompt better on train and worse on validation: the policy rolls back, once.
        let better = EXAMPLE.replace("[terrible, great]", "[negative, positive]");
        let k = search.record(&better, vec!["label words negative / positive".into()]);
        search.scores(&k, Split::Train, &train, usize::MAX).unwrap().unwrap();
        assert_eq!(search.best_by(Split::Train).map(|(b, _)| b.clone()), Some(k.clone()));
        search.anchor_check(&searcher).unwrap();
        assert_eq!(search.state.strategy.rollbacks, 1);
        assert_eq!(search.state.strategy.anchor_validation, Some(1.0), "the anchor keeps its score");

        // Nothing found since: it stays the best on train, but it was judged; nothing is
        // spent and the policy is not rolled back again — not even where it was found at the
        // very mark of the last check (as a free calibration recorded right before it is).
        let spent = search.state.spent;
        search.state.records.get_mut(&k).unwrap().found_at = search.state.strategy.anchor_mark;
        search.anchor_check(&searcher).unwrap();
        assert_eq!(search.state.strategy.rollbacks, 1);
        assert_eq!(search.state.spent, spent);

        // A new best the check cannot afford to validate is neither judged nor passed over:
        // the next check that can afford it judges it.
        let third = better.replace("Answer with one word.", "Sentiment:");
        let k3 = search.record(&third, vec!["instruction".into()]);
        search.scores(&k3, Split::Train, &train, usize::MAX).unwrap().unwrap();
        let (mark, budget) = (search.state.strategy.anchor_mark, search.state.config.budget);
        search.state.config.budget = search.state.spent + search.gate_reserve() + 8;
        assert_eq!(search.search_budget_left(), 8, "less than the 16 validation examples");
        search.anchor_check(&searcher).unwrap();
        assert_eq!(search.state.strategy.anchor_mark, mark);
        assert!(!search.state.strategy.anchor_judged.contains(&k3));
        search.state.config.budget = budget;
        search.anchor_check(&searcher).unwrap();
        assert!(search.state.strategy.anchor_judged.contains(&k3));
        assert_eq!(search.state.strategy.rollbacks, 2);
    }

    #[test]
    fn a_check_that_advances_anchors_the_policy_that_found_the_prompt_not_its_update() {
        let mut scorer = Planted { scored: 0, adversarial_validation: false };
        let config = SearchConfig { anchor_every: 1, ..config(Strategy::Ppo, 10_000) };
        let mut search = Search::new(EXAMPLE, config, space(), &mut scorer).unwrap();
        // A prompt scored on all of train, for the check to judge whatever the episodes find.
        let train: Vec<usize> = (0..24).collect();
        let original = search.record(EXAMPLE, Vec::new());
        search.scores(&original, Split::Train, &train, usize::MAX).unwrap().unwrap();
        let searcher = flat(&search.ppo.as_ref().unwrap().snapshot().unwrap());
        search.ppo_iteration().unwrap();
        assert_eq!(search.ppo.as_ref().unwrap().updates(), 1);
        assert!(search.state.strategy.anchor_validation.is_some(), "the first check sets the anchor");
        let anchor = flat(&search.anchor.as_ref().expect("anchored").snapshot().unwrap());
        let updated = flat(&search.ppo.as_ref().unwrap().snapshot().unwrap());
        assert_ne!(updated, searcher, "the update moved the policy");
        assert_eq!(anchor, searcher, "the anchor is the policy the check saw act");
    }

    #[test]
    fn anchor_decisions() {
        assert_eq!(anchor_decision(None, 0.1, 32, 1.0), AnchorDecision::Advance);
        assert_eq!(anchor_decision(Some(0.8), 0.8, 32, 1.0), AnchorDecision::Advance);
        assert_eq!(anchor_decision(Some(0.8), 0.9, 32, 1.0), AnchorDecision::Advance);
        // One example below, within 1.5 of 32: noise, nothing changes.
        assert_eq!(anchor_decision(Some(0.8), 0.8 - 1.0 / 32.0, 32, 1.0), AnchorDecision::Keep);
        // Two examples below: back to the anchor.
        assert_eq!(anchor_decision(Some(0.8), 0.8 - 2.0 / 32.0, 32, 1.0), AnchorDecision::RollBack);
        // On the gap reward's scale an example moves the mean by hundreds: half a point is noise.
        assert_eq!(anchor_decision(Some(120.0), 119.5, 64, 380.0), AnchorDecision::Keep);
        assert_eq!(anchor_decision(Some(120.0), 110.0, 64, 380.0), AnchorDecision::RollBack);
        let scored =
            |scores: &[f64]| scores.iter().map(|&score| Outcome { score, ..Outcome::default() }).collect::<Vec<_>>();
        assert_eq!(score_spread(&scored(&[150.0, -170.0, 20.0])), 320.0);
        assert_eq!(score_spread(&scored(&[1.0, 1.0])), 1.0, "all alike: one example is worth 1");
        assert_eq!(score_spread(&[]), 1.0);
    }
}
