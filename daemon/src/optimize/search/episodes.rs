//! Episodes of edits from a start prompt: the PPO policy picks them (state features, the
//! replay of scored edits, z-scored step rewards, the update), random search picks uniformly.

use std::collections::{BTreeMap, HashSet};

use serde::{Deserialize, Serialize};

use super::{Outcome, Search, beats, mean, score_and_signal};
use crate::eval::Split;
use crate::eval::stats;
use crate::optimize::edits::Edit;
use crate::optimize::{OptimizeError, Result, Rng, Transition};

/// PPO's replay of every edit it has scored: the raw step rewards, by edit description and by
/// edit kind, so the policy acts on all the evidence of the run and not only on what its few
/// gradient updates have absorbed.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Replay {
    by_edit: BTreeMap<String, (usize, f64)>,
    by_kind: BTreeMap<usize, (usize, f64)>,
    n: usize,
    sum: f64,
    sum_sq: f64,
}

impl Replay {
    /// Pseudo-observations of the prior in each shrunk mean.
    const PRIOR: f64 = 1.0;
    /// Bound on an estimate, in spreads.
    const CLIP: f64 = 2.0;

    pub fn add(&mut self, description: &str, kind: usize, reward: f64) {
        let e = self.by_edit.entry(description.to_string()).or_default();
        *e = (e.0 + 1, e.1 + reward);
        let k = self.by_kind.entry(kind).or_default();
        *k = (k.0 + 1, k.1 + reward);
        self.n += 1;
        self.sum += reward;
        self.sum_sq += reward * reward;
    }

    /// How much better than the average scored edit this one has done so far, in standard
    /// deviations of the step rewards: its own mean shrunk toward its kind's, the kind's shrunk
    /// toward the average (0 until four edits have been scored).
    pub fn estimate(&self, description: &str, kind: usize) -> f64 {
        if self.n < 4 {
            return 0.0;
        }
        let n = self.n as f64;
        let center = self.sum / n;
        let sd = (self.sum_sq / n - center * center).max(0.0).sqrt();
        if sd < 1e-9 {
            return 0.0;
        }
        let (kn, ks) = self.by_kind.get(&kind).copied().unwrap_or_default();
        let kind_mean = (ks - kn as f64 * center) / (kn as f64 + Self::PRIOR);
        let (en, es) = self.by_edit.get(description).copied().unwrap_or_default();
        let edit_mean = (es - en as f64 * center + Self::PRIOR * kind_mean) / (en as f64 + Self::PRIOR);
        (edit_mean / sd).clamp(-Self::CLIP, Self::CLIP)
    }
}

/// Scale of the minibatch signal as a state feature: the gap reward's (±200 at certainty).
const SIGNAL_SCALE: f64 = 100.0;

/// The minibatch signal as a state feature, squashed into (−1, 1): unscaled, a gap of tens
/// drowns the other inputs (unit-length embeddings, fractions, scores in [0, 1]) and saturates
/// the networks' tanh units, so every candidate looks alike.
fn signal_feature(signal: f64) -> f32 {
    (signal / SIGNAL_SCALE).tanh() as f32
}

/// The minibatch's mean score as a state feature: as it is within [−1, 1] (accuracy, F1, any
/// score in [0, 1]), beyond it compressed as `±(1 + ln |x|)`, so a perplexity of 1000 reads
/// 7.9 and the −10¹² of a clamped −∞ log-probability 28.6 instead of drowning the other
/// inputs and saturating the networks' tanh units. Continuous with its slope at ±1,
/// monotone, so larger scores still read larger; not a number reads 0.
fn score_feature(score: f64) -> f32 {
    if score.is_nan() {
        0.0
    } else if score.abs() <= 1.0 {
        score as f32
    } else {
        (score.signum() * (1.0 + score.abs().min(f64::MAX).ln())) as f32
    }
}

/// The seed of PPO's own random stream (weights, minibatch shuffles): the search's seed in
/// another domain, so the two streams are not the same numbers.
pub(super) fn ppo_seed(search_seed: u64) -> u64 {
    search_seed ^ 0x7070_6f2d_706f_6c69
}

impl Search<'_> {
    /// One episode of up to `episode_len` edits; with `learn`, the PPO policy picks them,
    /// else they are uniform. Returns the transitions (empty features without a policy).
    pub(super) fn episode(&mut self, learn: bool) -> Result<Vec<(Transition, f64)>> {
        let config = self.state.config.clone();
        let elite = self.best_by(Split::Train).map(|(k, _)| k.clone());
        let start = match elite {
            Some(k) if self.rng.next_f32() < config.elite_start => k,
            _ => self.state.original_key.clone(),
        };
        let batch = self.sample_minibatch();
        let mut parent = start;
        let limit = self.search_budget_left();
        let Some(mut parent_out) = self.scores(&parent, Split::Train, &batch, limit)? else { return Ok(Vec::new()) };
        let mut steps = Vec::new();
        let mut episode_rng = Rng::new(self.rng.next_u64());
        for t in 0..config.episode_len {
            let text = self.state.records[&parent].text.clone();
            let mut options = self.candidates(&text)?;
            options.push((Edit::Stop, text.clone()));
            let mut bias = Vec::new();
            let (state_vec, candidate_vecs) = if learn {
                let mut s = self.feature(&text)?;
                s.push(t as f32 / config.episode_len as f32);
                s.push(signal_feature(mean(parent_out.iter().map(|o| o.signal))));
                s.push(score_feature(mean(parent_out.iter().map(|o| o.score))));
                let doc = self.doc(&text).clone();
                let dims = self.dims();
                let mut cands = Vec::with_capacity(options.len());
                for (edit, edited) in &options {
                    let description = edit.describe(&doc.source);
                    let mut f = self.feature(&description)?;
                    f.push((edited.len() as f32 - text.len() as f32) / 500.0);
                    cands.push(dims.candidate_input(&f, edit.kind())?);
                    if config.replay_bonus != 0.0 && *edit != Edit::Stop {
                        bias.push(config.replay_bonus * self.state.replay.estimate(&description, edit.kind()) as f32);
                    } else {
                        bias.push(0.0);
                    }
                }
                (s, cands)
            } else {
                (Vec::new(), Vec::new())
            };
            let (action, logp, value) = match (&self.ppo, learn) {
                (Some(ppo), true) => ppo.act_with_bias(&state_vec, &candidate_vecs, &bias, &mut episode_rng, false)?,
                _ => (episode_rng.below(options.len()), 0.0, 0.0),
            };
            let (edit, edited) = options.swap_remove(action);
            let mut transition = Transition {
                state: state_vec,
                candidates: candidate_vecs,
                action,
                logp,
                value,
                reward: 0.0,
                done: false,
                bias,
            };
            if edit == Edit::Stop {
                transition.done = true;
                steps.push((transition, 0.0));
                break;
            }
            let mut lineage = self.state.records[&parent].lineage.clone();
            let doc = self.doc(&text).clone();
            let description = edit.describe(&doc.source);
            lineage.push(description.clone());
            let child = self.record(&edited, lineage);
            let limit = self.search_budget_left();
            let Some(child_out) = self.scores(&child, Split::Train, &batch, limit)? else { break };
            let raw = mean(child_out.iter().map(|o| o.signal)) - mean(parent_out.iter().map(|o| o.signal));
            if learn {
                self.state.replay.add(&description, edit.kind(), raw);
            }
            // Promising prompts (better on this same minibatch than one of the best few whole-train
            // prompts so far) get the whole train split.
            if self.enters_top_on(&child_out, &batch) {
                let all: Vec<usize> = (0..self.scorer.split_len(Split::Train)).collect();
                let limit = self.search_budget_left();
                self.scores(&child, Split::Train, &all, limit)?;
            }
            transition.done = t + 1 == config.episode_len;
            steps.push((transition, raw));
            parent = child;
            parent_out = child_out;
        }
        if let Some(last) = steps.last_mut() {
            last.0.done = true;
        }
        Ok(steps)
    }

    /// Whether results on `batch` beat, on the same examples (score first, then the dense
    /// signal), the `promote`-th best whole-train prompt so far: with fewer than that many, any
    /// result does. One best prompt alone is a poor bar: a prompt fitted to the training
    /// examples (label words ranked on them) would then keep every other prompt from being
    /// scored on the whole split, and the gate from having anything else to validate.
    /// A prompt and its calibrations count as one place (with twins, each whole-train prompt
    /// has one beside it), as they do at the gate.
    fn enters_top_on(&mut self, outcomes: &[Outcome], batch: &[usize]) -> bool {
        let mut whole: Vec<(String, f64, f64, usize)> = self
            .state
            .records
            .iter()
            .filter_map(|(k, r)| {
                r.full_mean(Split::Train).map(|m| (k.clone(), m, r.full_signal(Split::Train), r.found_at))
            })
            .collect();
        whole.sort_by(|a, b| b.1.total_cmp(&a.1).then(b.2.total_cmp(&a.2)).then(a.3.cmp(&b.3)));
        let mut places = HashSet::new();
        let mut bar = None;
        for (k, ..) in whole {
            if places.insert(self.family_base(&k)) && places.len() == self.state.config.promote.max(1) {
                bar = Some(k);
                break;
            }
        }
        let Some(bar) = bar.map(|k| &self.state.records[&k]) else { return true };
        let on_batch: Vec<Outcome> = batch.iter().filter_map(|&i| bar.train[i].clone()).collect();
        beats(score_and_signal(outcomes), score_and_signal(&on_batch))
    }

    pub(super) fn random_iteration(&mut self) -> Result<()> {
        for _ in 0..self.state.config.episodes_per_update {
            self.episode(false)?;
        }
        Ok(())
    }

    pub(super) fn ppo_iteration(&mut self) -> Result<()> {
        let mut episodes = Vec::new();
        for _ in 0..self.state.config.episodes_per_update {
            let steps = self.episode(true)?;
            if !steps.is_empty() {
                episodes.push(steps);
            }
        }
        // Step rewards z-scored across the batch (RLPrompt's stabilisation); Stop's raw reward
        // is 0, so it earns what any step that changed nothing does, −mean / std.
        let raw: Vec<f64> = episodes.iter().flatten().map(|(_, r)| *r).collect();
        let z = stats::z_scores(&raw);
        let mut zs = z.into_iter();
        let batch: Vec<Vec<Transition>> = episodes
            .into_iter()
            .map(|steps| {
                steps
                    .into_iter()
                    .map(|(mut t, _)| {
                        t.reward = zs.next().unwrap_or(0.0) as f32;
                        t
                    })
                    .collect()
            })
            .collect();
        let Some(ppo) = self.ppo.as_mut() else { return Err(OptimizeError::Input("no policy".into())) };
        let learns = batch.iter().map(Vec::len).sum::<usize>() > 0;
        let updates = ppo.updates() + u64::from(learns);
        let check = updates > 0 && updates % self.state.config.anchor_every.max(1) as u64 == 0;
        // The weights that searched this batch: the ones a check vouches for, not their update.
        let searcher = if check { Some(ppo.snapshot()?) } else { None };
        if learns {
            ppo.update(&batch)?;
        }
        if let Some(searcher) = searcher {
            self.anchor_check(&searcher)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::optimize::search::fixture::*;
    use crate::optimize::search::{STATE_EXTRA, SearchConfig, Strategy, policy_digest};
    use crate::optimize::{PolicyDims, PolicyNet, PolicySnapshot, Ppo, PpoConfig};

    #[test]
    fn the_score_reads_as_it_is_within_one_and_compressed_beyond() {
        for x in [-1.0, -0.25, 0.0, 0.5, 1.0] {
            assert_eq!(score_feature(x), x as f32);
        }
        assert!((score_feature(1000.0) - 7.9078).abs() < 1e-3);
        assert!((score_feature(-1e12) + 28.631).abs() < 1e-2);
        assert_eq!(score_feature(f64::NAN), 0.0);
        assert!(score_feature(f64::INFINITY).is_finite() && score_feature(f64::NEG_INFINITY).is_finite());
        // Monotone and without a jump at ±1.
        let xs: Vec<f64> = (-4000..=4000).map(|i| i as f64 / 100.0).collect();
        assert!(xs.windows(2).all(|w| score_feature(w[0]) < score_feature(w[1])));
        assert!((score_feature(1.0 + 1e-9) - 1.0).abs() < 1e-6 && (score_feature(-1.0 - 1e-9) + 1.0).abs() < 1e-6);
    }

    #[test]
    fn ppo_draws_its_weights_from_a_stream_of_its_own() {
        for seed in [0, 5, 13, 21, 42, 1013, u64::MAX] {
            let mut search = Rng::new(seed);
            let mut ppo = Rng::new(ppo_seed(seed));
            let a: std::collections::BTreeSet<u64> = (0..256).map(|_| search.next_u64()).collect();
            assert!((0..256).all(|_| !a.contains(&ppo.next_u64())), "seed {seed}: the streams share numbers");
        }
        // And a search's policy starts from the PPO stream's weights, not the search's.
        let mut scorer = Planted { scored: 0, adversarial_validation: false };
        let search = Search::new(EXAMPLE, config(Strategy::Ppo, 1_000), space(), &mut scorer).unwrap();
        let ppo = search.ppo.as_ref().unwrap();
        let weights =
            |seed| flat(&Ppo::new(ppo.dims(), PpoConfig { seed, ..ppo.config().clone() }).unwrap().snapshot().unwrap());
        let own = flat(&ppo.snapshot().unwrap());
        assert_eq!(own, weights(ppo_seed(5)));
        assert_ne!(own, weights(5));
    }

    #[test]
    fn the_policy_reads_a_gap_scale_signal_on_the_scale_of_its_other_inputs() {
        let mut scorer = Altered::gap_scaled();
        let mut search = Search::new(EXAMPLE, config(Strategy::Ppo, 2_000), space(), &mut scorer).unwrap();
        search.record(EXAMPLE, Vec::new());
        let steps = search.episode(true).unwrap();
        assert!(!steps.is_empty());
        for (transition, _) in &steps {
            // Embeddings have length 4; the step fraction, signal and score lie within ±1.
            let extra = &transition.state[transition.state.len() - STATE_EXTRA..];
            assert!(extra.iter().all(|x| x.abs() < 1.0), "{extra:?}");
            assert!(transition.state.iter().all(|x| x.abs() <= 4.0), "{:?}", transition.state);
        }
    }

    #[test]
    fn replay_favours_edits_that_paid_off_and_their_kind() {
        let mut replay = Replay::default();
        replay.add("labels a", 0, 0.3);
        replay.add("delete x", 2, -0.1);
        replay.add("delete y", 2, 0.0);
        assert_eq!(replay.estimate("labels a", 0), 0.0, "no opinion before four edits");
        replay.add("labels a", 0, 0.25);
        replay.add("delete z", 2, -0.05);
        let good = replay.estimate("labels a", 0);
        let unseen_same_kind = replay.estimate("labels b", 0);
        let unseen_other = replay.estimate("swap", 4);
        let bad = replay.estimate("delete x", 2);
        assert!(good > unseen_same_kind && unseen_same_kind > unseen_other, "{good} {unseen_same_kind} {unseen_other}");
        assert!(unseen_other.abs() < 1e-12, "an untried edit of an untried kind is average");
        assert!(bad < 0.0, "{bad}");
        for _ in 0..8 {
            replay.add("delete x", 2, -0.1);
        }
        assert!(replay.estimate("delete x", 2) < 0.0, "still below the average edit");
        for _ in 0..50 {
            replay.add("swap", 4, 0.0);
        }
        for _ in 0..3 {
            replay.add("labels a", 0, 5.0);
        }
        assert_eq!(replay.estimate("labels a", 0), Replay::CLIP);
    }

    #[test]
    fn replaying_scored_edits_steers_ppo_to_better_prompts() {
        let visited = |replay_bonus: f32, seed: u64| {
            let mut scorer = Planted { scored: 0, adversarial_validation: false };
            let cfg = SearchConfig { seed, replay_bonus, ..config(Strategy::Ppo, 800) };
            let mut search = Search::new(EXAMPLE, cfg, space(), &mut scorer).unwrap();
            search.run(None, None, &mut |_| {}).unwrap().unwrap();
            visited_quality(&search)
        };
        let seeds = [5, 6, 7, 8];
        let with: f64 = seeds.iter().map(|&s| visited(2.0, s)).sum::<f64>() / 4.0;
        let without: f64 = seeds.iter().map(|&s| visited(0.0, s)).sum::<f64>() / 4.0;
        assert!(with > without + 0.02, "with replay {with:.3}, without {without:.3}");
    }

    #[test]
    fn a_warm_started_policy_carries_what_it_learned_into_a_new_run() {
        let dir = std::env::temp_dir().join(format!("reprompt-warm-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        // Pre-train: three runs of other seeds, the policy carried from one into the next. The
        // best prompt alone is the bar for whole-train scoring here: the measure is how good
        // the prompts the policy picks are, and at 400 evaluations every whole-train scoring
        // is a pick fewer.
        let mut weights: Option<PolicySnapshot> = None;
        let config = |strategy, budget| SearchConfig { promote: 1, ..config(strategy, budget) };
        for seed in [101, 102, 103] {
            let mut scorer = Planted { scored: 0, adversarial_validation: false };
            let mut search =
                Search::new(EXAMPLE, SearchConfig { seed, ..config(Strategy::Ppo, 1500) }, space(), &mut scorer)
                    .unwrap();
            if let Some(w) = &weights {
                search.warm_start(w).unwrap();
            }
            search.run(None, None, &mut |_| {}).unwrap().unwrap();
            weights = search.policy().unwrap();
        }
        let path = dir.join("policy.safetensors");
        weights.unwrap().save(&path).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        let learned = PolicySnapshot::from_safetensors(&bytes).unwrap();

        let run = |warm: Option<&PolicySnapshot>, seed: u64| {
            let mut scorer = Planted { scored: 0, adversarial_validation: false };
            let cfg =
                SearchConfig { seed, warm_start: warm.map(|_| policy_digest(&bytes)), ..config(Strategy::Ppo, 400) };
            let mut search = Search::new(EXAMPLE, cfg, space(), &mut scorer).unwrap();
            if let Some(w) = warm {
                search.warm_start(w).unwrap();
                let now = search.policy().unwrap().unwrap();
                for (name, t) in &w.params {
                    assert!(values(&now.params[name]) == values(t), "{name} differs from the warm start");
                }
            }
            search.run(None, None, &mut |_| {}).unwrap().unwrap();
            let quality = visited_quality(&search);
            // Too late for a warm start once the search has begun.
            assert!(search.warm_start(&learned).is_err());
            quality
        };
        // On new seeds, the pre-trained policy visits better prompts than a fresh one.
        let seeds = [5, 6, 7, 8];
        let warm: f64 = seeds.iter().map(|&s| run(Some(&learned), s)).sum::<f64>() / 4.0;
        let cold: f64 = seeds.iter().map(|&s| run(None, s)).sum::<f64>() / 4.0;
        assert!(warm > cold + 0.02, "warm start visits quality {warm:.3}, fresh policy {cold:.3}");

        // Only PPO has a policy; a policy of another feature size is refused with a clear error.
        let mut scorer = Planted { scored: 0, adversarial_validation: false };
        let mut greedy = Search::new(EXAMPLE, config(Strategy::Greedy, 400), space(), &mut scorer).unwrap();
        assert!(greedy.warm_start(&learned).is_err());
        drop(greedy);
        let other = PolicyNet::new(PolicyDims { state: 7, candidate: 5, kinds: Edit::KINDS }, 64, &mut Rng::new(1))
            .unwrap()
            .snapshot()
            .unwrap();
        let mut scorer = Planted { scored: 0, adversarial_validation: false };
        let mut ppo = Search::new(EXAMPLE, config(Strategy::Ppo, 400), space(), &mut scorer).unwrap();
        let err = ppo.warm_start(&other).unwrap_err().to_string();
        assert!(err.contains("7 state features"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
