//! The honesty gate: the best prompts by train scored on all of validation; the best
//! validated one wins only if it beats the original there.

use std::collections::HashSet;

use super::{IDLE_ROUNDS, Outcome, Progress, Search, SearchResult, Validated, mean};
use crate::eval::Split;
use crate::eval::stats;
use crate::optimize::{OptimizeError, Result};

impl Search<'_> {
    /// The honesty gate: the original and the best prompts by train score, on all of
    /// validation; the best validated prompt wins only if it beats the original there.
    pub(super) fn gate(&mut self, progress: &mut dyn FnMut(&Progress)) -> Result<SearchResult> {
        let n = self.scorer.split_len(Split::Validation);
        let all: Vec<usize> = (0..n).collect();
        let original = self.state.original_key.clone();
        let limit = self.budget_left();
        let original_out = self
            .scores(&original, Split::Validation, &all, limit)?
            .ok_or_else(|| OptimizeError::Input("the budget left no room to validate the original prompt".into()))?;
        let mut ranked: Vec<(String, f64, f64)> = self
            .state
            .records
            .iter()
            .filter(|(k, _)| **k != original)
            .filter_map(|(k, r)| r.full_mean(Split::Train).map(|m| (k.clone(), m, r.full_signal(Split::Train))))
            .collect();
        ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then(b.2.total_cmp(&a.2)).then(a.0.cmp(&b.0)));
        // A prompt and its calibrations take one place, and one place's budget: a calibration
        // of a prompt validated here (its twin; the original's family has its place from the
        // start) is compared wherever it ranks, where its results come free from that
        // prompt's, and is not paid for where they cannot (nor where only some can: an
        // example without a gold label, a probability of 0), so the budget kept for the gate
        // goes to the next family down. Places are counted by family, not by what was spent,
        // so a finished run resumed ends at the same gate.
        let original_base = self.family_base(&original);
        let mut places = HashSet::new();
        for (k, _, _) in ranked {
            let family = self.family_base(&k);
            let placed = family == original_base || places.contains(&family);
            if !placed && places.len() >= self.state.config.top_k {
                continue;
            }
            let limit = if placed { 0 } else { self.budget_left() };
            if self.scores(&k, Split::Validation, &all, limit)?.is_some() && !placed {
                places.insert(family);
            }
            progress(&self.progress("validation"));
        }
        let original_validation = mean(original_out.iter().map(|o| o.score));
        let original_train = self.state.records[&original].full_mean(Split::Train).unwrap_or(f64::NAN);
        let mut checked: Vec<Validated> = self
            .state
            .records
            .iter()
            .filter_map(|(k, r)| {
                Some(Validated {
                    key: k.clone(),
                    train: r.full_mean(Split::Train)?,
                    validation: r.full_mean(Split::Validation)?,
                })
            })
            .collect();
        checked.sort_by(|a, b| {
            b.validation.total_cmp(&a.validation).then(b.train.total_cmp(&a.train)).then(a.key.cmp(&b.key))
        });
        let winner = checked.first().filter(|v| v.key != original && v.validation > original_validation).cloned();
        let best_key = winner.as_ref().map_or(original.clone(), |w| w.key.clone());
        let best = &self.state.records[&best_key];
        let scores =
            |o: &[Option<Outcome>]| o.iter().map(|x| x.as_ref().map_or(0.0, |x| x.score)).collect::<Vec<f64>>();
        let paired =
            stats::paired_difference(&scores(&self.state.records[&original].validation), &scores(&best.validation));
        Ok(SearchResult {
            strategy: self.state.config.strategy,
            seed: self.state.config.seed,
            budget: self.state.config.budget,
            evaluations: self.state.spent,
            original_train,
            original_validation,
            best_key: best_key.clone(),
            best_text: best.text.clone(),
            best_lineage: best.lineage.clone(),
            best_train: best.full_mean(Split::Train).unwrap_or(original_train),
            best_validation: best.full_mean(Split::Validation).unwrap_or(original_validation),
            improved: winner.is_some(),
            paired_difference: paired,
            validated: checked,
            curve: self.state.curve.clone(),
            prompts_seen: self.state.records.len(),
            rollbacks: self.state.strategy.rollbacks,
            validation_examples: n,
            seconds: self.state.seconds,
            ranked_labels: self.state.ranked_labels.clone(),
            ranked_groups: self.state.ranked_groups.clone(),
            template_screen: self.state.template_screen.clone(),
            derived: self.state.derived,
            gate_reserve: self.gate_reserve(),
            phases: self.state.phases,
            exhausted: self.state.strategy.idle >= IDLE_ROUNDS,
            too_long: self.state.records.values().filter(|r| r.too_long()).count(),
            original_too_long: self.state.records[&original].too_long(),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::optimize::search::fixture::*;
    use crate::optimize::search::{Scorer, SearchConfig, Strategy};

    /// A recorded prompt after a run: its key, its calibration family, its score on all of
    /// train (if it has one) and whether it was scored on all of validation.
    struct Seen {
        key: String,
        family: String,
        train: Option<f64>,
        validation: bool,
    }

    /// A random search of 1500 evaluations with `scorer`, within its budget: the original's
    /// family, the gate's `top_k` and every prompt recorded.
    fn gated(scorer: &mut dyn Scorer) -> (String, usize, Vec<Seen>) {
        let cfg = config(Strategy::Random, 1500);
        let (top_k, budget) = (cfg.top_k, cfg.budget);
        let mut search = Search::new(EXAMPLE, cfg, space(), scorer).unwrap();
        search.run(None, None, &mut |_| {}).unwrap().unwrap();
        assert!(search.state.spent <= budget);
        let original = search.state.original_key.clone();
        let original_base = search.family_base(&original);
        let keys: Vec<String> = search.state.records.keys().cloned().collect();
        let seen = keys
            .into_iter()
            .map(|key| {
                let family = search.family_base(&key);
                let record = &search.state.records[&key];
                let train = record.full_mean(Split::Train);
                let validation = record.full_mean(Split::Validation).is_some();
                Seen { key, family, train, validation }
            })
            .collect();
        (original_base, top_k, seen)
    }

    #[test]
    fn the_gate_validates_top_k_families_and_their_calibrations_take_no_place() {
        let (original_base, top_k, seen) = gated(&mut Leaning { scored: 0 });
        let (mut families, mut validated) = (HashSet::new(), HashSet::new());
        for p in seen.iter().filter(|p| p.train.is_some() && p.family != original_base) {
            if p.validation {
                validated.insert(p.family.clone());
            }
            families.insert(p.family.clone());
        }
        assert!(families.len() > top_k, "{} families scored on all of train", families.len());
        // top_k families validated: a calibration of a validated prompt comes free and takes
        // no place.
        assert_eq!(validated.len(), top_k, "{validated:?}");
        // A family's place goes to its best prompt by train; the last place is the lowest of
        // those.
        let best_of = |family: &String| {
            seen.iter().filter(|p| &p.family == family).filter_map(|p| p.train).fold(f64::NEG_INFINITY, f64::max)
        };
        let last_place = validated.iter().map(best_of).fold(f64::INFINITY, f64::min);
        // Every prompt of a validated family is compared, below the last place too.
        validated.insert(original_base);
        let kin: Vec<&Seen> = seen.iter().filter(|p| p.train.is_some() && validated.contains(&p.family)).collect();
        for p in &kin {
            assert!(p.validation, "{} left out", p.key);
        }
        assert!(
            kin.iter().any(|p| p.train.is_some_and(|t| t < last_place)),
            "no prompt of a validated family ranks below the last place ({last_place})"
        );
    }

    #[test]
    fn a_calibration_the_gate_cannot_score_free_is_not_paid_for() {
        // Validation results without label probabilities: a calibration's cannot be derived
        // from its sibling's, so each would cost the model as much as a new family.
        let (original_base, top_k, seen) = gated(&mut Opaque(Leaning { scored: 0 }));
        let families: HashSet<&String> =
            seen.iter().filter(|p| p.train.is_some() && p.family != original_base).map(|p| &p.family).collect();
        assert!(families.len() > top_k, "{} families scored on all of train", families.len());
        let mut validated = BTreeMap::<&String, usize>::new();
        for p in seen.iter().filter(|p| p.validation) {
            *validated.entry(&p.family).or_default() += 1;
        }
        // Each family was paid for once: the original alone in its own, one prompt in each of
        // top_k others.
        assert!(validated.values().all(|&n| n == 1), "{validated:?}");
        // And some prompt of those families was passed over for it, not left out by chance.
        let passed_over = seen.iter().any(|p| {
            p.train.is_some() && !p.validation && (p.family == original_base || validated.contains_key(&p.family))
        });
        assert!(passed_over, "no prompt of a validated family went without validation");
        assert_eq!(validated.remove(&original_base), Some(1));
        assert_eq!(validated.len(), top_k, "{validated:?}");
    }

    #[test]
    fn the_gate_has_the_few_best_to_choose_from_not_the_best_alone() {
        // In the Leaning world nothing but a calibration beats the author's prompt; with the
        // best alone as the bar, few prompts reach the whole training split. With the fourth
        // best as the bar, the gate validates a top 4.
        let whole = |promote: usize| {
            let mut scorer = Leaning { scored: 0 };
            let config = SearchConfig { promote, calibrate: false, ..config(Strategy::Random, 1200) };
            let mut search = Search::new(EXAMPLE, config, space(), &mut scorer).unwrap();
            let result = search.run(None, None, &mut |_| {}).unwrap().unwrap();
            (search.state.records.values().filter(|r| r.full_mean(Split::Train).is_some()).count(), result)
        };
        let (few, _) = whole(1);
        let (more, result) = whole(4);
        assert!(more > few, "{more} vs {few}");
        assert!(result.validated.len() >= 4, "the original and three others: {:?}", result.validated);
    }

    #[test]
    fn the_gate_returns_the_original_when_every_candidate_loses_on_validation() {
        for strategy in [Strategy::Ppo, Strategy::Greedy] {
            let (result, _) = run(strategy, 800, true);
            assert!(!result.improved);
            assert_eq!(result.best_text, EXAMPLE);
            assert!(result.validated.len() > 1, "candidates were validated: {:?}", result.validated);
            assert!(
                result.validated.iter().any(|v| v.train > result.original_train),
                "better on train, worse on validation"
            );
        }
    }
}
