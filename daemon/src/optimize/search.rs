//! The search over prompt edits: a budgeted environment (per-example results cached, so a
//! prompt scored on an example is never paid for twice), the four strategies that share it at
//! equal budget — PPO, random edits, greedy hill-climbing (GrIPS) and evolution — the honesty
//! gate on the validation split, and checkpoints that make a stopped run resume exactly.
//!
//! Everything random comes from one seeded [`Rng`] saved in the checkpoint, so a run is a pure
//! function of (prompt, data, model, config) and a resumed run ends where the uninterrupted one
//! does.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::Path;

use reprompt_protocol::hash::sha256_hex;
use reprompt_protocol::settings::Task;
use reprompt_protocol::{PromptDocument, parse};
use serde::{Deserialize, Serialize};

use super::calibrate;
use super::edits::{self, Edit, EditSpace, apply_checked, find_demos};
use super::labels;
use super::{OptimizeError, PolicyDims, PolicyNet, PolicySnapshot, Ppo, PpoConfig, Result, Rng, Transition};
use crate::eval::Split;
use crate::eval::stats::{self, Interval};
use crate::files::sync_dir;

/// One example's result for one prompt.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Outcome {
    /// The reward the prompt is judged by (accuracy for classification).
    pub score: f64,
    /// A denser training signal (RLPrompt's gap reward for classification, else the score).
    pub signal: f64,
    /// Classification: each label's probability as the prompt chose its answer (its
    /// `reprompt.label_bias` applied), what a calibration of the prompt is fitted to; empty
    /// otherwise.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub probabilities: Vec<f64>,
}

/// Bound of the scores a search keeps (see [`Outcome::finite`]).
const SCORE_BOUND: f64 = 1e12;

impl Outcome {
    /// The outcome with finite numbers: a reward can be −∞ (a `logprob` part where the model
    /// gives the gold words no probability) or NaN (that times a weight of 0), which would
    /// sort unpredictably at the gate and make the checkpoint unreadable (JSON has no
    /// infinities). Scores and signals are clamped to ±[`SCORE_BOUND`], NaN counting as the
    /// worst; a probability that is not a number as 0.
    pub fn finite(mut self) -> Self {
        let bound = |x: f64| if x.is_nan() { -SCORE_BOUND } else { x.clamp(-SCORE_BOUND, SCORE_BOUND) };
        self.score = bound(self.score);
        self.signal = bound(self.signal);
        for p in &mut self.probabilities {
            if !p.is_finite() {
                *p = 0.0;
            }
        }
        self
    }
}

/// The template step's ranking: the ranked sets, and the labellings judged out of sample
/// (`None` where nothing was to be judged: no fixed sets, or a scorer that cannot judge;
/// `Some` without the sets that could not be).
pub type TemplateRanking = (Vec<Vec<String>>, Option<Vec<labels::Screened>>);

/// What the search needs from the world: scores of prompt texts on examples of a split, and
/// feature vectors for texts.
pub trait Scorer {
    /// Results of `text` (a whole `.prompt` file) on the examples `indices` of `split`.
    fn score(&mut self, text: &str, split: Split, indices: &[usize]) -> Result<Vec<Outcome>>;
    /// Number of examples in a split.
    fn split_len(&self, split: Split) -> usize;
    /// Task-model evaluations scoring one example of `text` costs (its reward may ask for more
    /// than the answer: a likelihood, consistency samples); 1 by default.
    fn evaluations_per_example(&mut self, _text: &str) -> Result<usize> {
        Ok(1)
    }
    /// One feature vector per text, all of [`Scorer::feature_dim`] length.
    fn embed(&mut self, text: &str) -> Result<Vec<f32>>;
    fn feature_dim(&self) -> usize;
    /// Rewrites of an instruction sentence (the task model paraphrasing it); none by default.
    fn paraphrase(&mut self, _sentence: &str, _seed: u64) -> Result<Vec<String>> {
        Ok(Vec::new())
    }
    /// Label-word sets the task model ranks best for `text` on the whole training split, best
    /// first, at most `keep` ([`super::labels`]); `None` when the scorer cannot rank labels
    /// for this prompt (the default; also when its answer does not follow a word, as at the
    /// start of a chat turn). Ranking costs one evaluation per training example; a `None`
    /// costs nothing (nor do checks of the words alone, without examples, such as the
    /// model scorer's fragment test).
    fn rank_labels(&mut self, _text: &str, _keep: usize) -> Result<Option<Vec<Vec<String>>>> {
        Ok(None)
    }
    /// The gold label id of each training example, where the split has labels (what a
    /// calibration is fitted to); empty by default.
    fn train_labels(&self) -> Vec<Option<usize>> {
        Vec::new()
    }
    /// The gold label id of each validation example, where the split has labels; empty by
    /// default. With [`Scorer::train_labels`], what lets a calibration of a scored prompt be
    /// scored from its results ([`calibrate::rebiased`]) instead of by the model.
    fn validation_labels(&self) -> Vec<Option<usize>> {
        Vec::new()
    }
    /// The template step's ranking ([`Search::rank_templates`]): [`Scorer::rank_labels`] and,
    /// from the same distributions, the ranking's labelling and each of `fixed` judged out of
    /// sample ([`labels::cross_fitted`]); none of the latter by default. Costs what
    /// `rank_labels` costs.
    fn rank_template(&mut self, text: &str, keep: usize, _fixed: &[Vec<String>]) -> Result<Option<TemplateRanking>> {
        Ok(self.rank_labels(text, keep)?.map(|sets| (sets, None)))
    }
}

/// Which search runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Strategy {
    Ppo,
    Random,
    Greedy,
    Evolution,
}

impl Strategy {
    pub fn name(self) -> &'static str {
        match self {
            Strategy::Ppo => "ppo",
            Strategy::Random => "random",
            Strategy::Greedy => "greedy",
            Strategy::Evolution => "evolution",
        }
    }
}

/// Search settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SearchConfig {
    pub strategy: Strategy,
    /// Task-model example evaluations, validation gate included; never exceeded.
    pub budget: usize,
    pub seed: u64,
    /// Most edits per episode (PPO, random).
    pub episode_len: usize,
    /// Training examples per minibatch (step rewards compare before/after on the same ones).
    pub minibatch: usize,
    /// Episodes per PPO update (and per random-search iteration).
    pub episodes_per_update: usize,
    /// Candidates offered per state (a seeded sample when there are more).
    pub max_candidates: usize,
    /// Prompts the gate re-scores on the whole validation split, best by train first; a
    /// prompt and its calibrations count as one (a calibration's results come free).
    pub top_k: usize,
    /// Sampled candidates per greedy step (the calibration, where there is one, is tried
    /// besides); population size of evolution.
    pub width: usize,
    /// Probability that an episode starts from the best prompt so far instead of the author's.
    pub elite_start: f32,
    /// PPO: validation check of the policy's best prompt every this many updates (anchor).
    pub anchor_every: usize,
    /// Paraphrases asked of the task model per instruction sentence (0 turns them off).
    pub paraphrases: usize,
    /// Label words ranked by the task model on the training split ([`Scorer::rank_labels`]):
    /// first at the bare prompt with the cue the author's words name
    /// (`Search::rank_templates`), then whenever the best prompt so far puts the answer after
    /// a new cue ([`answer_context`]), at most [`MAX_RANKINGS`] times; each ranking offers
    /// several words per label ([`labels::word_groups`]), or, where they make no group, this
    /// many of its best sets; with it the edit space offers bare completion prompts. 4 by
    /// default; 0 turns the ranking off (and is what a checkpoint from before it existed reads
    /// as): with calibration on, the bare template is still scored, with the author's own
    /// words (their lean is what calibration fixes).
    #[serde(default)]
    pub ranked_labels: usize,
    pub ppo: PpoConfig,
    /// PPO: weight of the replayed evidence in the policy's logits — each candidate edit's
    /// shrunk mean step reward so far (by description, then by kind), in units of the step
    /// rewards' spread, clipped to ±2 ([`Replay`]). 0 turns the replay off (and is what a
    /// checkpoint from before the replay existed reads as).
    #[serde(default)]
    pub replay_bonus: f32,
    /// PPO: digest of the pre-trained policy the run starts from ([`Search::warm_start`]);
    /// `None` for a freshly initialised policy (and for the other strategies).
    pub warm_start: Option<String>,
    /// Digest of the training and validation data the run scores ([`data_digest`]), so a
    /// checkpoint is not resumed on edited data; `None` where the caller does not say (and in
    /// checkpoints from before it existed).
    #[serde(default)]
    pub data: Option<String>,
    /// Offer the calibration edit ([`Edit::LabelBias`]) wherever a classification prompt has
    /// results on enough training examples to fit it ([`calibrate::prior_bias`]). On by
    /// default; a checkpoint from before it existed reads as off.
    #[serde(default)]
    pub calibrate: bool,
    /// PPO and random episodes: a prompt is scored on the whole training split when it beats,
    /// on its minibatch, the `promote`-th best whole-train prompt so far (so the gate has that
    /// many to choose from); a checkpoint from before it existed reads as 0, which is 1, the
    /// best alone.
    #[serde(default)]
    pub promote: usize,
    /// Whenever a classification prompt has results on the whole training split, its
    /// calibration fitted there ([`calibrate::prior_bias`]) is recorded beside it, scored from
    /// its results without the model ([`Search::rebias`]), so a prompt whose offsets went
    /// stale (demonstrations added, words changed) competes calibrated too. On by default
    /// (`--no-twins` turns it off); a checkpoint from before it existed reads as off, as it
    /// ran. Needs `calibrate`.
    #[serde(default)]
    pub twins: bool,
}

impl SearchConfig {
    /// The settings as a run keeps them: PPO-only settings are cleared for the other
    /// strategies, so they never make two equal baseline runs look different.
    pub fn canonical(&self) -> Self {
        let mut config = self.clone();
        if config.strategy != Strategy::Ppo {
            config.replay_bonus = 0.0;
            config.warm_start = None;
        }
        if !config.calibrate {
            config.twins = false;
        }
        config
    }
}

impl Default for SearchConfig {
    fn default() -> Self {
        Self {
            strategy: Strategy::Ppo,
            budget: 2000,
            seed: 13,
            episode_len: 4,
            minibatch: 16,
            episodes_per_update: 2,
            max_candidates: 32,
            top_k: 4,
            width: 8,
            elite_start: 0.5,
            anchor_every: 3,
            paraphrases: 2,
            ranked_labels: 4,
            ppo: PpoConfig { epochs: 4, minibatch_size: 16, entropy_coef: 0.02, ..PpoConfig::default() },
            replay_bonus: 2.0,
            warm_start: None,
            data: None,
            calibrate: true,
            promote: 4,
            twins: true,
        }
    }
}

/// Every prompt the search has looked at, with its per-example results.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub text: String,
    /// The edits from the author's prompt, described.
    pub lineage: Vec<String>,
    pub train: Vec<Option<Outcome>>,
    pub validation: Vec<Option<Outcome>>,
    /// Evaluations spent when it was first scored.
    pub found_at: usize,
}

impl Record {
    fn outcomes(&self, split: Split) -> &[Option<Outcome>] {
        match split {
            Split::Validation => &self.validation,
            _ => &self.train,
        }
    }

    /// Mean score on the whole split, if every example has been scored.
    pub fn full_mean(&self, split: Split) -> Option<f64> {
        let all = self.outcomes(split);
        let scores: Option<Vec<f64>> = all.iter().map(|o| o.as_ref().map(|o| o.score)).collect();
        scores.filter(|s| !s.is_empty()).map(|s| s.iter().sum::<f64>() / s.len() as f64)
    }

    fn full_signal(&self, split: Split) -> f64 {
        let all = self.outcomes(split);
        all.iter().flatten().map(|o| o.signal).sum::<f64>() / all.len().max(1) as f64
    }
}

/// A point of the learning curve.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct CurvePoint {
    pub evaluations: usize,
    /// Best whole-train score so far.
    pub train: f64,
    /// Best whole-validation score so far (of prompts validated by then).
    pub validation: Option<f64>,
}

/// Adds a point to a best-so-far curve: each point says where its values were first reached,
/// so a flat stretch keeps its first point and moves only a second one to its end (reading
/// the curve as "the last point at or before x" then shows each gain where it happened).
fn note_point(curve: &mut Vec<CurvePoint>, point: CurvePoint) {
    let same = |p: &CurvePoint| p.train == point.train && p.validation == point.validation;
    match curve.as_mut_slice() {
        [.., before, last] if same(before) && same(last) => last.evaluations = point.evaluations,
        [.., last] if same(last) && last.evaluations == point.evaluations => {}
        _ => curve.push(point),
    }
}

/// What a progress display shows.
#[derive(Clone, Debug, PartialEq)]
pub struct Progress {
    pub evaluations: usize,
    pub budget: usize,
    pub best_train: Option<f64>,
    pub best_validation: Option<f64>,
    pub phase: &'static str,
}

/// Strategy-specific state between iterations.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
struct StrategyState {
    /// Greedy: the current prompt's key.
    current: Option<String>,
    /// Evolution: the population's keys.
    population: Vec<String>,
    /// PPO: validation score of the anchor policy's best prompt.
    anchor_validation: Option<f64>,
    /// PPO: evaluations spent at the last anchor check; the next one judges the prompts found
    /// since.
    #[serde(default)]
    anchor_mark: usize,
    /// PPO: the prompts anchor checks have judged; none is judged twice.
    #[serde(default)]
    anchor_judged: BTreeSet<String>,
    /// PPO: rollbacks to the anchor so far.
    rollbacks: usize,
    /// Iterations in a row that spent nothing (the reachable space is used up).
    idle: usize,
}

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

/// The whole state of a search, checkpointed after every iteration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SearchState {
    pub format: u32,
    pub config: SearchConfig,
    pub original: String,
    pub original_key: String,
    pub spent: usize,
    pub iterations: usize,
    pub records: BTreeMap<String, Record>,
    pub curve: Vec<CurvePoint>,
    pub paraphrases: BTreeMap<String, Vec<String>>,
    rng: u64,
    strategy: StrategyState,
    pub done: bool,
    /// Wall time spent searching and validating, over every session of the run.
    #[serde(default)]
    pub seconds: f64,
    /// PPO: every scored edit's step reward.
    #[serde(default)]
    pub replay: Replay,
    /// The label-word sets the task model ranked, newest ranking first.
    #[serde(default)]
    pub ranked_labels: Vec<Vec<String>>,
    /// The answer contexts ([`answer_context`]) labels were ranked at or found unrankable.
    #[serde(default)]
    pub ranked_at: Vec<String>,
    /// Rankings made at the best prompt so far (each cost the training split).
    #[serde(default)]
    pub rankings: usize,
    /// Whether the answer cues were tried with ranked label words ([`Search::rank_templates`]).
    #[serde(default)]
    pub templates_ranked: bool,
    /// Several words per label made from the rankings ([`labels::word_groups`]), newest first.
    #[serde(default)]
    pub ranked_groups: Vec<Vec<Vec<String>>>,
    /// The template step's labellings (words, out-of-sample training accuracy, whether
    /// ranked), where it compared them ([`labels::cross_fitted`]).
    #[serde(default)]
    pub template_screen: Vec<(String, f64, bool)>,
    /// Results scored from another calibration of the same prompt rather than by the model
    /// ([`calibrate::rebiased`]): evaluations the budget did not pay for.
    #[serde(default)]
    pub derived: usize,
}

/// What the calibrations of one classification prompt share: the text without
/// `reprompt.label_bias` ([`edits::without_label_bias`]), and a reward the offsets alone
/// decide (accuracy and RLPrompt's gap, weighted); each has its own offsets.
#[derive(Clone, Debug, PartialEq)]
struct Family {
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
        Outcome { score, signal: gap, probabilities }.finite()
    }
}

/// A prompt the gate validated.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Validated {
    pub key: String,
    pub train: f64,
    pub validation: f64,
}

/// The result of a search: the original and, if one beat it on validation, the best prompt.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SearchResult {
    pub strategy: Strategy,
    pub seed: u64,
    pub budget: usize,
    pub evaluations: usize,
    pub original_train: f64,
    pub original_validation: f64,
    /// The best validated prompt (the original when nothing beat it).
    pub best_key: String,
    pub best_text: String,
    pub best_lineage: Vec<String>,
    pub best_train: f64,
    pub best_validation: f64,
    /// Whether the best prompt beats the original on validation.
    pub improved: bool,
    /// Validation score of the best minus the original's, paired over the same examples.
    pub paired_difference: Interval,
    pub validated: Vec<Validated>,
    pub curve: Vec<CurvePoint>,
    pub prompts_seen: usize,
    pub rollbacks: usize,
    pub validation_examples: usize,
    /// Wall time of the search and the gate (resumed sessions added up).
    pub seconds: f64,
    /// Label-word sets the task model ranked and the search could use (newest ranking first,
    /// each ranking best first); only from rankings that made no group of words per label.
    #[serde(default)]
    pub ranked_labels: Vec<Vec<String>>,
    /// Several words per label made from the rankings and offered to the search (newest first).
    #[serde(default)]
    pub ranked_groups: Vec<Vec<Vec<String>>>,
    /// The template step's labellings, out-of-sample training accuracy, whether ranked.
    #[serde(default)]
    pub template_screen: Vec<(String, f64, bool)>,
    /// Results scored from another calibration of the same prompt, free of the budget.
    #[serde(default)]
    pub derived: usize,
}

/// Why a search ended early.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// The caller's `stop_after` iterations were reached (tests, Ctrl-C handling).
    Interrupted,
}

/// A search run: the state plus what is rebuilt on load (policy, feature caches).
pub struct Search<'a> {
    pub state: SearchState,
    scorer: &'a mut dyn Scorer,
    space: EditSpace,
    ppo: Option<Ppo>,
    anchor: Option<PolicyNet>,
    features: HashMap<String, Vec<f32>>,
    docs: HashMap<String, PromptDocument>,
    rng: Rng,
    /// The training examples' gold label ids ([`Scorer::train_labels`]).
    gold: Vec<Option<usize>>,
    /// The validation examples' gold label ids ([`Scorer::validation_labels`]).
    gold_validation: Vec<Option<usize>>,
    /// Each record's calibration family, where its results can be rescored for other offsets.
    families: HashMap<String, Option<Family>>,
    /// When the time not yet added to `state.seconds` started.
    clock: std::time::Instant,
    /// Task-model evaluations one example costs ([`Scorer::evaluations_per_example`] of the
    /// author's prompt; edits leave the reward as it is).
    per_example: usize,
}

const STATE_FILE: &str = "search.json";
const PPO_DIR: &str = "ppo";
const ANCHOR_FILE: &str = "anchor.safetensors";
/// Most label rankings per run at the best prompt so far ([`SearchConfig::ranked_labels`]),
/// besides the one at the start (`Search::rank_templates`).
pub const MAX_RANKINGS: usize = 4;
/// Extra state features: step fraction, minibatch signal and score of the current prompt.
const STATE_EXTRA: usize = 3;
/// Extra candidate features: length change of the prompt.
const CANDIDATE_EXTRA: usize = 1;

/// Short digest naming a policy's weights (the first 16 hex digits of their SHA-256).
pub fn policy_digest(safetensors: &[u8]) -> String {
    sha256_hex(safetensors)[..16].to_string()
}

fn key(text: &str) -> String {
    sha256_hex(text.as_bytes())
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
fn ppo_seed(search_seed: u64) -> u64 {
    search_seed ^ 0x7070_6f2d_706f_6c69
}

/// Mean score and mean signal of a prompt's outcomes: what the strategies compare.
fn score_and_signal(outcomes: &[Outcome]) -> (f64, f64) {
    (mean(outcomes.iter().map(|o| o.score)), mean(outcomes.iter().map(|o| o.signal)))
}

/// Whether `a` beats `b`: a higher score, or the same score and a higher signal.
fn beats(a: (f64, f64), b: (f64, f64)) -> bool {
    a.0 > b.0 || (a.0 == b.0 && a.1 > b.1)
}

fn mean(values: impl IntoIterator<Item = f64>) -> f64 {
    let (sum, n) = values.into_iter().fold((0.0, 0usize), |(s, n), v| (s + v, n + 1));
    if n == 0 { 0.0 } else { sum / n as f64 }
}

/// Puts `sets` first among `list` (once each).
fn add_sets<T: Clone + Eq + std::hash::Hash>(list: &mut Vec<T>, sets: &[T]) {
    let mut all: Vec<T> = sets.to_vec();
    all.append(list);
    let mut seen = std::collections::HashSet::new();
    all.retain(|set| seen.insert(set.clone()));
    *list = all;
}

fn add_label_sets(space: &mut EditSpace, sets: &[Vec<String>]) {
    add_sets(&mut space.label_sets, sets);
}

/// What [`SearchConfig::data`] holds: a digest of the two splits' content digests, of the
/// scoring's version ([`crate::eval::evaluate::EVAL_VERSION`]) and of `scoring`, what else the
/// scores depend on (the scorer's model, device, partials, built-in edit banks): results
/// scored by other rules, another model or other partials are not resumed.
pub fn data_digest(train_hash: &str, validation_hash: &str, scoring: &str) -> String {
    let version = crate::eval::evaluate::EVAL_VERSION;
    reprompt_protocol::hash::sha256_hex(
        format!("scoring {version}\ntrain {train_hash}\nvalidation {validation_hash}\n{scoring}").as_bytes(),
    )
}

/// Where [`Search::save`] writes the next checkpoint (`DIR.new`) and puts the one it replaces
/// (`DIR.old`) while it swaps them; `None` for a path without a name of its own (`/`, `..`).
fn checkpoint_siblings(dir: &Path) -> Option<(std::path::PathBuf, std::path::PathBuf)> {
    let name = dir.file_name()?.to_string_lossy().into_owned();
    Some((dir.with_file_name(format!("{name}.new")), dir.with_file_name(format!("{name}.old"))))
}

/// Flushes every file under `dir` to the disk, then the directories' entries.
fn sync_tree(dir: &Path) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            sync_tree(&entry.path())?;
        } else {
            std::fs::File::open(entry.path())?.sync_all()?;
        }
    }
    sync_dir(dir)
}

/// Removes a checkpoint directory, its `search.json` first: a removal cut short never leaves
/// a part that reads as a whole checkpoint.
fn remove_checkpoint_dir(dir: &Path) -> std::io::Result<()> {
    if !dir.exists() {
        return Ok(());
    }
    match std::fs::remove_file(dir.join(STATE_FILE)) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    std::fs::remove_dir_all(dir)
}

/// Finishes a [`Search::save`] that was cut short: a complete new checkpoint (its
/// `search.json` is written last) takes `dir`'s place; else, where `dir` holds no complete
/// one, the one it was replacing comes back. What is left beside it is removed. Idempotent.
pub fn recover_checkpoint(dir: &Path) -> std::io::Result<()> {
    let Some((next, old)) = checkpoint_siblings(dir) else { return Ok(()) };
    let complete = |d: &Path| d.join(STATE_FILE).is_file();
    let found = if complete(&next) {
        Some(&next)
    } else if !complete(dir) && complete(&old) {
        Some(&old)
    } else {
        None
    };
    if let Some(found) = found {
        remove_checkpoint_dir(dir)?;
        std::fs::rename(found, dir)?;
    }
    remove_checkpoint_dir(&next)?;
    remove_checkpoint_dir(&old)
}

/// Removes the checkpoint in `dir` with what a save cut short left beside it (`--fresh`, or
/// a checkpoint of another run).
pub fn remove_checkpoint(dir: &Path) -> std::io::Result<()> {
    if let Some((next, old)) = checkpoint_siblings(dir) {
        remove_checkpoint_dir(&next)?;
        remove_checkpoint_dir(&old)?;
    }
    remove_checkpoint_dir(dir)
}

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

/// Whether this reprompt resumes a checkpoint's state: format 3 only. Format 2 had one edit kind
/// fewer (no calibration), so its policy does not fit; format 1 also ranked single label sets.
fn resumable(state: &SearchState) -> std::result::Result<(), String> {
    match state.format {
        3 => Ok(()),
        1 | 2 => Err("it was written by an older reprompt with a smaller edit space; remove it or pick another \
                      directory"
            .into()),
        other => Err(format!("unknown format {other}")),
    }
}

/// What a ranking offers the search: the words of its sets (the caller asks for at least
/// [`labels::GROUP_SETS`]) as one group per label ([`labels::word_groups`]), or, where they make no group, its best
/// `keep` sets. Not both: a single pair is the best of hundreds on the few training examples,
/// so it wins the search's training comparisons by its chance fit; on the development splits
/// the search then left the group (84.1 / 81.0% held out) for such pairs (73.0%).
fn ranked_offers(mut sets: Vec<Vec<String>>, keep: usize) -> (Vec<Vec<String>>, Option<Vec<Vec<String>>>) {
    match labels::word_groups(&sets, labels::GROUP_WORDS) {
        Some(groups) => (Vec::new(), Some(groups)),
        None => {
            sets.truncate(keep);
            (sets, None)
        }
    }
}

/// The built-in set that does best out of sample among those a ranking was judged against
/// ([`labels::cross_fitted`]); the first of equals.
fn best_fixed(screened: &[labels::Screened]) -> Option<&labels::Screened> {
    screened.iter().filter(|s| !s.ranked).fold(None, |best, s| match best {
        Some(b) if s.accuracy <= b.accuracy => Some(b),
        _ => Some(s),
    })
}

/// Whether a ranking's words do clearly better out of sample than the best built-in set they
/// were judged against ([`labels::clearly_better`]: by more than a standard error). Words
/// ranked on 32 examples and only as good as `negative / positive` there have been fitted to
/// those examples: they look best on them and worse elsewhere. Where nothing was to be judged
/// (`None`: calibration off) they hold; where no built-in set could be judged (a split too
/// small to fit offsets on its halves), they do not: unchecked, they would win the search's
/// training comparisons by their fit alone.
fn ranked_holds_up(screened: Option<&[labels::Screened]>) -> bool {
    let Some(screened) = screened else { return true };
    best_fixed(screened).is_some_and(|fixed| screened.iter().any(|s| s.ranked && labels::clearly_better(s, fixed)))
}

/// The cue the author's own words name: the last of `cues` (they go from generic to
/// specific: `Answer:` … `Sentiment:`, `Topic:`) whose word the prompt's template uses, whole
/// word, any case (`Sentiment:` for "…the sentiment of movie reviews. Answer with one word.").
pub fn named_cue(doc: &PromptDocument, cues: &[String]) -> Option<String> {
    let body = doc.source.get(doc.body_span.start..doc.body_span.end).unwrap_or_default().to_lowercase();
    let words: std::collections::HashSet<&str> = body.split(|c: char| !c.is_alphanumeric()).collect();
    cues.iter().rev().find(|c| words.contains(c.trim_end_matches(':').to_lowercase().as_str())).cloned()
}

/// Where a prompt's answer goes, as a key: its format and the last line of the template
/// (the cue or question the answer follows), lower-cased, with its label words blanked out
/// (relabelling or editing the instructions above is no new context).
pub fn answer_context(doc: &PromptDocument) -> String {
    let body = doc.source.get(doc.body_span.start..doc.body_span.end).unwrap_or_default().trim_end();
    let mut tail = body.rsplit('\n').next().unwrap_or_default().trim().to_lowercase();
    if let Some(labels) = &doc.settings.labels {
        for word in labels.value.iter().filter(|w| !w.is_empty()) {
            tail = tail.replace(&word.to_lowercase(), "<label>");
        }
    }
    format!("{:?}: {tail}", doc.settings.format)
}

fn normalized(mut v: Vec<f32>) -> Vec<f32> {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        for x in &mut v {
            *x *= 4.0 / norm;
        }
    }
    v
}

impl<'a> Search<'a> {
    /// A fresh search from the author's prompt `original`.
    pub fn new(original: &str, config: SearchConfig, space: EditSpace, scorer: &'a mut dyn Scorer) -> Result<Self> {
        let (train, validation) = (scorer.split_len(Split::Train), scorer.split_len(Split::Validation));
        if train == 0 || validation == 0 {
            return Err(OptimizeError::Input("optimizing needs training and validation examples".into()));
        }
        // The original scored on both splits is the least a run reports (its train score
        // would otherwise be unknown, and nothing could be compared with it).
        let per_example = scorer.evaluations_per_example(original)?.max(1);
        let least = (train + validation).saturating_mul(per_example);
        if config.budget < least {
            let each = if per_example > 1 { format!(", {per_example} evaluations each") } else { String::new() };
            return Err(OptimizeError::Input(format!(
                "a budget of {} evaluations cannot score even the original on the {train} training and {validation} \
                 validation examples ({least}{each})",
                config.budget
            )));
        }
        let state = SearchState {
            format: 3,
            original: original.to_string(),
            original_key: key(original),
            spent: 0,
            iterations: 0,
            records: BTreeMap::new(),
            curve: Vec::new(),
            paraphrases: BTreeMap::new(),
            rng: config.seed,
            strategy: StrategyState::default(),
            done: false,
            seconds: 0.0,
            replay: Replay::default(),
            ranked_labels: Vec::new(),
            ranked_at: Vec::new(),
            rankings: 0,
            templates_ranked: false,
            ranked_groups: Vec::new(),
            template_screen: Vec::new(),
            derived: 0,
            config: config.canonical(),
        };
        let mut search = Self::from_state(state, space, scorer)?;
        if search.state.config.strategy == Strategy::Ppo {
            let dims = search.dims();
            search.ppo = Some(Ppo::new(
                dims,
                PpoConfig { seed: ppo_seed(search.state.config.seed), ..search.state.config.ppo.clone() },
            )?);
        }
        Ok(search)
    }

    /// PPO: starts from a policy pre-trained on other tasks instead of a fresh one. Only
    /// before the search begins; `config.warm_start` should carry [`policy_digest`] of the
    /// weights so a checkpoint of the run is not mistaken for a cold one.
    pub fn warm_start(&mut self, weights: &PolicySnapshot) -> Result<()> {
        if !self.state.records.is_empty() {
            return Err(OptimizeError::Input("a policy can only be warm-started before the search begins".into()));
        }
        let Some(ppo) = self.ppo.as_mut() else {
            return Err(OptimizeError::Input("only the ppo strategy has a policy to warm-start".into()));
        };
        let (state, hidden) = (ppo.dims().state, ppo.config().hidden);
        if weights.state_len() != Some(state) || weights.hidden() != Some(hidden) {
            return Err(OptimizeError::Input(format!(
                "the policy was trained for {} state features and {} hidden units; this model gives {state} and {hidden} \
                 (a policy belongs to the model it was trained with)",
                weights.state_len().map_or("?".into(), |n| n.to_string()),
                weights.hidden().map_or("?".into(), |n| n.to_string()),
            )));
        }
        ppo.restore(weights)
    }

    /// PPO: the policy's current weights (`None` for the other strategies).
    pub fn policy(&self) -> Result<Option<PolicySnapshot>> {
        self.ppo.as_ref().map(Ppo::snapshot).transpose()
    }

    fn from_state(state: SearchState, mut space: EditSpace, scorer: &'a mut dyn Scorer) -> Result<Self> {
        space.paraphrases = state.paraphrases.clone();
        // Bare prompts only for classification with label words (a generation prompt's
        // instructions say how to answer; there are no words to rank for it).
        let settings = parse(&state.original, None).settings;
        let classifies = settings.labels.is_some() && settings.task.is_none_or(|t| t == Task::Classify);
        space.bare = (state.config.ranked_labels > 0 || state.config.calibrate) && classifies;
        add_label_sets(&mut space, &state.ranked_labels);
        add_sets(&mut space.label_groups, &state.ranked_groups);
        let rng = Rng::from_state(state.rng);
        let gold = scorer.train_labels();
        let gold_validation = scorer.validation_labels();
        let per_example = scorer.evaluations_per_example(&state.original)?.max(1);
        Ok(Self {
            state,
            gold,
            gold_validation,
            families: HashMap::new(),
            scorer,
            space,
            ppo: None,
            anchor: None,
            features: HashMap::new(),
            docs: HashMap::new(),
            rng,
            clock: std::time::Instant::now(),
            per_example,
        })
    }

    fn dims(&self) -> PolicyDims {
        let d = self.scorer.feature_dim();
        PolicyDims { state: d + STATE_EXTRA, candidate: d + CANDIDATE_EXTRA, kinds: Edit::KINDS }
    }

    /// Writes the checkpoint into `dir`: `search.json`, the PPO agent and its anchor. The whole
    /// checkpoint is written beside it first (`DIR.new`, `search.json` last) and swapped in by
    /// two renames, so a run killed at any moment leaves one complete checkpoint, of one moment
    /// ([`recover_checkpoint`] finishes an interrupted swap).
    pub fn save(&mut self, dir: &Path) -> Result<()> {
        let io =
            |path: &Path, e: std::io::Error| OptimizeError::Checkpoint { path: path.into(), message: e.to_string() };
        self.state.rng = self.rng.state();
        self.state.paraphrases = self.space.paraphrases.clone();
        let (next, old) = checkpoint_siblings(dir).ok_or_else(|| OptimizeError::Checkpoint {
            path: dir.into(),
            message: "a checkpoint directory needs a name".into(),
        })?;
        for stale in [&next, &old] {
            remove_checkpoint_dir(stale).map_err(|e| io(stale, e))?;
        }
        std::fs::create_dir_all(&next).map_err(|e| io(&next, e))?;
        if let Some(ppo) = &self.ppo {
            ppo.save(&next.join(PPO_DIR))?;
        }
        if let Some(anchor) = &self.anchor {
            anchor.save(&next.join(ANCHOR_FILE))?;
        }
        let path = next.join(STATE_FILE);
        let staging = next.join("search.json.new");
        let json = serde_json::to_vec(&self.state)
            .map_err(|e| OptimizeError::Checkpoint { path: path.clone(), message: e.to_string() })?;
        std::fs::write(&staging, json).map_err(|e| io(&staging, e))?;
        // On the disk before it reads as complete, and complete before it is swapped in: a
        // power cut, not only a kill, then leaves one whole checkpoint.
        sync_tree(&next).map_err(|e| io(&next, e))?;
        std::fs::rename(&staging, &path).map_err(|e| io(&path, e))?;
        sync_dir(&next).map_err(|e| io(&next, e))?;
        if dir.exists() {
            std::fs::rename(dir, &old).map_err(|e| io(dir, e))?;
        }
        std::fs::rename(&next, dir).map_err(|e| io(dir, e))?;
        let parent = dir.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        sync_dir(parent).map_err(|e| io(parent, e))?;
        // The swap is done; what is left of the old one goes now or at the next save.
        let _ = remove_checkpoint_dir(&old);
        Ok(())
    }

    /// Where a PPO checkpoint in `dir` keeps the policy's weights (what `reprompt pretrain`
    /// carries from one run into the next).
    pub fn policy_path(dir: &Path) -> std::path::PathBuf {
        dir.join(PPO_DIR).join(super::ppo::POLICY_FILE)
    }

    /// Whether `dir` holds a checkpoint (after finishing a save a crash interrupted:
    /// [`recover_checkpoint`]).
    pub fn has_checkpoint(dir: &Path) -> bool {
        let _ = recover_checkpoint(dir);
        dir.join(STATE_FILE).is_file()
    }

    /// Whether the checkpoint in `dir` is of this prompt and these settings (false when there
    /// is none or it cannot be read).
    pub fn checkpoint_matches(dir: &Path, original: &str, config: &SearchConfig) -> bool {
        let _ = recover_checkpoint(dir);
        std::fs::read(dir.join(STATE_FILE))
            .ok()
            .and_then(|bytes| serde_json::from_slice::<SearchState>(&bytes).ok())
            .is_some_and(|state| {
                resumable(&state).is_ok() && state.original_key == key(original) && state.config == config.canonical()
            })
    }

    /// Resumes the search checkpointed in `dir`; it must be of the same prompt and settings.
    pub fn load(
        dir: &Path,
        original: &str,
        config: &SearchConfig,
        space: EditSpace,
        scorer: &'a mut dyn Scorer,
    ) -> Result<Self> {
        recover_checkpoint(dir).map_err(|e| OptimizeError::Checkpoint { path: dir.into(), message: e.to_string() })?;
        let path = dir.join(STATE_FILE);
        let bad = |message: String| OptimizeError::Checkpoint { path: path.clone(), message };
        let bytes = std::fs::read(&path).map_err(|e| bad(e.to_string()))?;
        let state: SearchState = serde_json::from_slice(&bytes).map_err(|e| bad(e.to_string()))?;
        resumable(&state).map_err(bad)?;
        if state.original_key != key(original) || state.config != config.canonical() {
            return Err(bad(
                "it belongs to another run (different prompt, data or settings); remove it or pick another directory"
                    .into(),
            ));
        }
        let mut search = Self::from_state(state, space, scorer)?;
        let sizes = (search.scorer.split_len(Split::Train), search.scorer.split_len(Split::Validation));
        if search.state.records.values().any(|r| (r.train.len(), r.validation.len()) != sizes) {
            return Err(bad("its results are of training or validation data of another size; remove it".into()));
        }
        if search.state.config.strategy == Strategy::Ppo {
            search.ppo = Some(Ppo::load(&dir.join(PPO_DIR))?);
            let anchor_path = dir.join(ANCHOR_FILE);
            if anchor_path.is_file() {
                let dims = search.dims();
                let mut anchor = PolicyNet::new(dims, search.state.config.ppo.hidden, &mut Rng::new(0))?;
                anchor.load(&anchor_path)?;
                search.anchor = Some(anchor);
            }
        }
        Ok(search)
    }

    /// Adds the time since the last tick to the run's total.
    fn tick(&mut self) {
        self.state.seconds += self.clock.elapsed().as_secs_f64();
        self.clock = std::time::Instant::now();
    }

    fn budget_left(&self) -> usize {
        self.state.config.budget.saturating_sub(self.state.spent)
    }

    /// What the gate needs at most: the original and `top_k` prompts on all of validation —
    /// less when the budget is small, but always the original's validation and, if the
    /// budget allows, its train score.
    fn gate_reserve(&self) -> usize {
        let validation = self.scorer.split_len(Split::Validation) * self.per_example;
        let train = self.scorer.split_len(Split::Train) * self.per_example;
        ((self.state.config.top_k + 1) * validation).min(self.state.config.budget.saturating_sub(train)).max(validation)
    }

    fn search_budget_left(&self) -> usize {
        self.state.config.budget.saturating_sub(self.gate_reserve()).saturating_sub(self.state.spent)
    }

    fn doc(&mut self, text: &str) -> &PromptDocument {
        let k = key(text);
        if self.docs.len() > 4096 {
            self.docs.clear();
        }
        self.docs.entry(k).or_insert_with(|| parse(text, None))
    }

    fn record(&mut self, text: &str, lineage: Vec<String>) -> String {
        let k = key(text);
        if !self.state.records.contains_key(&k) {
            let record = Record {
                text: text.to_string(),
                lineage,
                train: vec![None; self.scorer.split_len(Split::Train)],
                validation: vec![None; self.scorer.split_len(Split::Validation)],
                found_at: self.state.spent,
            };
            self.state.records.insert(k.clone(), record);
        }
        k
    }

    /// Results of the recorded prompt `k` on `indices`, scoring only the missing ones (first
    /// from other calibrations of the prompt, free: [`Search::rebias`]); `None` (and nothing
    /// spent, though what was free is kept) when the rest do not fit in `limit` evaluations.
    fn scores(&mut self, k: &str, split: Split, indices: &[usize], limit: usize) -> Result<Option<Vec<Outcome>>> {
        let known = self.state.records[k].outcomes(split);
        let was_whole = self.state.records[k].train.iter().all(Option::is_some);
        let mut missing: Vec<usize> = indices.iter().copied().filter(|&i| known[i].is_none()).collect();
        if !missing.is_empty() {
            missing = self.rebias(k, split, missing);
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
            self.state.spent += cost;
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

    /// [`SearchConfig::twins`]: records the calibration of `k` fitted on its whole training
    /// split (where it differs from `k`'s own offsets) with its training results, all from
    /// `k`'s, free. A twin is filled directly ([`Search::rebias`]), never through
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
    fn family(&mut self, k: &str) -> Option<Family> {
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
    fn family_base(&mut self, k: &str) -> String {
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
    fn rebias(&mut self, k: &str, split: Split, missing: Vec<usize>) -> Vec<usize> {
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

    fn best_by(&self, split: Split) -> Option<(&String, f64)> {
        self.best_where(split, |_, _| true)
    }

    /// The best of the records `keep` admits, scored on all of `split`: highest mean; ties go
    /// to the denser signal, then to the earlier find.
    fn best_where(&self, split: Split, keep: impl Fn(&String, &Record) -> bool) -> Option<(&String, f64)> {
        self.state
            .records
            .iter()
            .filter(|(k, r)| keep(k, r))
            .filter_map(|(k, r)| r.full_mean(split).map(|m| (k, m, r.full_signal(split), r.found_at)))
            .max_by(|a, b| a.1.total_cmp(&b.1).then(a.2.total_cmp(&b.2)).then(b.3.cmp(&a.3)))
            .map(|(k, m, _, _)| (k, m))
    }

    fn note_curve(&mut self) {
        let train = self.best_by(Split::Train).map(|(_, m)| m);
        let validation = self.best_by(Split::Validation).map(|(_, m)| m);
        if let Some(train) = train {
            note_point(&mut self.state.curve, CurvePoint { evaluations: self.state.spent, train, validation });
        }
    }

    pub fn progress(&self, phase: &'static str) -> Progress {
        Progress {
            evaluations: self.state.spent,
            budget: self.state.config.budget,
            best_train: self.best_by(Split::Train).map(|(_, m)| m),
            best_validation: self.best_by(Split::Validation).map(|(_, m)| m),
            phase,
        }
    }

    fn sample_minibatch(&mut self) -> Vec<usize> {
        let n = self.scorer.split_len(Split::Train);
        let mut all: Vec<usize> = (0..n).collect();
        self.rng.shuffle(&mut all);
        all.truncate(self.state.config.minibatch.clamp(1, n));
        all.sort_unstable();
        all
    }

    /// Ranks label words at the best prompt so far (the author's at the start) if its answer
    /// context is new, labels are asked for and the budget allows: the sets join the edit
    /// space (and the checkpoint).
    fn ensure_ranked_labels(&mut self) -> Result<()> {
        let keep = self.state.config.ranked_labels;
        let cost = self.scorer.split_len(Split::Train);
        if keep == 0 || self.state.rankings >= MAX_RANKINGS || self.search_budget_left() < cost {
            return Ok(());
        }
        let best = match self.best_by(Split::Train) {
            Some((k, _)) => self.state.records[k].text.clone(),
            None => self.state.original.clone(),
        };
        let context = answer_context(self.doc(&best));
        // Only where the answer follows a cue (`Sentiment:`): after a question or an
        // instruction the model's next words are rarely answers, and the words ranked there
        // were noise on the development splits.
        if !context.ends_with(':') || self.state.ranked_at.contains(&context) {
            return Ok(());
        }
        self.state.ranked_at.push(context);
        let fixed = self.fixed_label_sets(&best);
        let Some((sets, screened)) = self.scorer.rank_template(&best, keep.max(labels::GROUP_SETS), &fixed)? else {
            return Ok(());
        };
        self.state.spent += cost;
        self.state.rankings += 1;
        if ranked_holds_up(screened.as_deref()) {
            let (sets, groups) = ranked_offers(sets, keep);
            self.offer_ranked(&sets, groups);
        }
        Ok(())
    }

    /// With calibration on, the built-in label sets a ranking at `text` is judged against out of
    /// sample ([`labels::cross_fitted`]); none without.
    fn fixed_label_sets(&mut self, text: &str) -> Vec<Vec<String>> {
        if !self.state.config.calibrate {
            return Vec::new();
        }
        let classes = self.doc(text).settings.labels.as_ref().map_or(0, |l| l.value.len());
        self.space.label_sets.iter().filter(|s| s.len() == classes).cloned().collect()
    }

    /// Puts a ranking's sets and groups into the edit space and the state.
    fn offer_ranked(&mut self, sets: &[Vec<String>], groups: Option<Vec<Vec<String>>>) {
        add_label_sets(&mut self.space, sets);
        add_sets(&mut self.state.ranked_labels, sets);
        if let Some(groups) = groups {
            let groups = [groups];
            add_sets(&mut self.space.label_groups, &groups);
            add_sets(&mut self.state.ranked_groups, &groups);
        }
    }

    /// With ranked labels on, once at the start: the author's prompt as a bare completion
    /// prompt (LM-BFF's template: the example's lines and a cue; a plain completion where
    /// there are no sentences to leave out) ending in the answer cue the author's own words
    /// name (`Sentiment:` for a prompt about "the sentiment of movie reviews"), label words
    /// ranked there, and that prompt with the best set scored on all of train, where it
    /// competes like every prompt found; its sets join the edit space. Costs two trains; not
    /// made when no cue is named or the budget cannot pay for it.
    fn rank_templates(&mut self) -> Result<()> {
        let keep = self.state.config.ranked_labels;
        let n = self.scorer.split_len(Split::Train);
        if (keep == 0 && !self.state.config.calibrate)
            || self.state.templates_ranked
            || self.search_budget_left() < n + n * self.per_example
        {
            return Ok(());
        }
        self.state.templates_ranked = true;
        let original = self.state.original.clone();
        let doc = self.doc(&original).clone();
        let Some(cue) = named_cue(&doc, &self.space.cues) else { return Ok(()) };
        let edited = [Edit::Bare(cue.clone()), Edit::Completion(cue.clone()), Edit::AnswerCue(cue)]
            .into_iter()
            .find_map(|e| apply_checked(&doc, &e, &self.space).ok().map(|text| (e, text)));
        let Some((edit, text)) = edited else { return Ok(()) };
        if keep == 0 {
            // No ranking: the template with the author's own words (calibration can fix their lean).
            let k = self.record(&text, vec![edit.describe(&doc.source)]);
            let all: Vec<usize> = (0..n).collect();
            let limit = self.search_budget_left();
            self.scores(&k, Split::Train, &all, limit)?;
            return Ok(());
        }
        let context = answer_context(self.doc(&text));
        self.state.ranked_at.push(context);
        let fixed = self.fixed_label_sets(&text);
        let Some((sets, mut screened)) = self.scorer.rank_template(&text, keep.max(labels::GROUP_SETS), &fixed)? else {
            return Ok(());
        };
        if !self.state.config.calibrate {
            screened = None;
        }
        self.state.spent += n;
        let (sets, groups) = ranked_offers(sets, keep);
        // Ranked words that do not clearly beat every built-in set out of sample stay out of
        // the edit space: on the training examples they would still look best, and win the
        // search's comparisons.
        let holds_up = ranked_holds_up(screened.as_deref());
        let screened = screened.unwrap_or_default();
        if holds_up {
            self.offer_ranked(&sets, groups.clone());
        }
        let ranked_labels = match (groups, sets.first()) {
            (Some(groups), _) => Edit::LabelGroups(groups),
            (None, Some(first)) => Edit::Labels(first.clone()),
            (None, None) => return Ok(()),
        };
        // With calibration, the words the template starts with are the ones that do best out of
        // sample ([`labels::cross_fitted`]): the ranking's where they clearly beat every
        // built-in set, else the best built-in set, calibrated on all of train.
        self.state.template_screen = screened
            .iter()
            .map(|s| (s.words.iter().map(|g| g.join(", ")).collect::<Vec<_>>().join(" / "), s.accuracy, s.ranked))
            .collect();
        let best = if holds_up { None } else { best_fixed(&screened) };
        let mut steps = vec![ranked_labels];
        if let Some(best) = best {
            steps = vec![if best.words.iter().all(|g| g.len() == 1) {
                Edit::Labels(best.words.iter().map(|g| g[0].clone()).collect())
            } else {
                Edit::LabelGroups(best.words.clone())
            }];
        } else if !holds_up {
            // Nothing could be judged: the template keeps the author's own words.
            steps.clear();
        }
        if !steps.is_empty()
            && let Some(start) = screened.iter().find(|s| best.is_none_or(|b| b.words == s.words))
            && start.bias.iter().any(|b| b.abs() >= 0.05)
        {
            steps.push(Edit::LabelBias(start.bias.clone()));
        }
        let mut lineage = vec![edit.describe(&doc.source)];
        let mut text = text;
        for step in steps {
            let current = self.doc(&text).clone();
            if let Ok(next) = apply_checked(&current, &step, &self.space) {
                lineage.push(step.describe(&current.source));
                text = next;
            }
        }
        let k = self.record(&text, lineage);
        let all: Vec<usize> = (0..n).collect();
        let limit = self.search_budget_left();
        self.scores(&k, Split::Train, &all, limit)?;
        Ok(())
    }

    /// Fills in paraphrases of the prompt's instruction sentences (once per sentence).
    fn ensure_paraphrases(&mut self, text: &str) -> Result<()> {
        if self.state.config.paraphrases == 0 {
            return Ok(());
        }
        let doc = self.doc(text).clone();
        let demos = find_demos(&doc, &self.space);
        for span in edits::sentences(&doc) {
            if demos.iter().any(|d| span.start < d.span.end && span.end > d.span.start) {
                continue;
            }
            let sentence = doc.source[span.start..span.end].to_string();
            // Only the author's own sentences: rewrites of rewrites drift off topic.
            if self.space.paraphrases.contains_key(&sentence) || !self.state.original.contains(&sentence) {
                continue;
            }
            let seed = self.state.config.seed
                ^ u64::from_le_bytes(key(&sentence).as_bytes()[..8].try_into().unwrap_or_default());
            let mut rewrites = self.scorer.paraphrase(&sentence, seed)?;
            rewrites.truncate(self.state.config.paraphrases);
            self.space.paraphrases.insert(sentence, rewrites);
        }
        Ok(())
    }

    /// The edits offered at `text` (a seeded sample when there are many), without Stop.
    fn candidates(&mut self, text: &str) -> Result<Vec<(Edit, String)>> {
        self.ensure_paraphrases(text)?;
        let doc = self.doc(text).clone();
        let mut all = edits::applied_candidates(&doc, &self.space, &mut self.rng);
        if all.len() > self.state.config.max_candidates {
            self.rng.shuffle(&mut all);
            all.truncate(self.state.config.max_candidates);
        }
        // The calibration is never sampled away: it is one edit, fitted to this prompt.
        if let Some(bias) = self.calibration(text, &doc)
            && let Ok(edited) = apply_checked(&doc, &Edit::LabelBias(bias.clone()), &self.space)
        {
            all.push((Edit::LabelBias(bias), edited));
        }
        Ok(all)
    }

    /// The label offsets fitted to the known training results of `text`
    /// ([`calibrate::prior_bias`]), where calibration is on and they differ from the prompt's
    /// own by at least 0.05 for some label.
    fn calibration(&self, text: &str, doc: &PromptDocument) -> Option<Vec<f64>> {
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

    fn feature(&mut self, text: &str) -> Result<Vec<f32>> {
        if let Some(f) = self.features.get(text) {
            return Ok(f.clone());
        }
        let f = normalized(self.scorer.embed(text)?);
        if f.len() != self.scorer.feature_dim() {
            return Err(OptimizeError::Input("the scorer's features have the wrong length".into()));
        }
        self.features.insert(text.to_string(), f.clone());
        Ok(f)
    }

    /// Runs until the budget is spent (or `stop_after` iterations of this call), checkpointing
    /// into `checkpoint` after every iteration, then the gate.
    pub fn run(
        &mut self,
        checkpoint: Option<&Path>,
        stop_after: Option<usize>,
        progress: &mut dyn FnMut(&Progress),
    ) -> Result<std::result::Result<SearchResult, Stop>> {
        let mut iterations = 0;
        let finished_before = self.state.done;
        if self.state.records.is_empty() {
            let original = self.state.original.clone();
            let k = self.record(&original, Vec::new());
            let n = self.scorer.split_len(Split::Train);
            let all: Vec<usize> = (0..n).collect();
            let limit = self.search_budget_left();
            self.scores(&k, Split::Train, &all, limit)?;
        }
        self.rank_templates()?;
        self.ensure_ranked_labels()?;
        while !self.state.done {
            if stop_after.is_some_and(|n| iterations >= n) {
                return Ok(Err(Stop::Interrupted));
            }
            let before = (self.state.spent, self.state.derived);
            match self.state.config.strategy {
                Strategy::Ppo => self.ppo_iteration()?,
                Strategy::Random => self.random_iteration()?,
                Strategy::Greedy => self.greedy_iteration()?,
                Strategy::Evolution => self.evolution_iteration()?,
            }
            self.ensure_ranked_labels()?;
            self.state.iterations += 1;
            iterations += 1;
            // Idle: nothing new scored, by the model or from a calibration's results.
            let now = (self.state.spent, self.state.derived);
            self.state.strategy.idle = if now == before { self.state.strategy.idle + 1 } else { 0 };
            // Done when too little budget is left for a minibatch, or nothing new is reachable.
            let minibatch = self.state.config.minibatch.max(1) * self.per_example;
            if self.search_budget_left() < minibatch || self.state.strategy.idle >= 20 {
                self.state.done = true;
            }
            progress(&self.progress("search"));
            self.tick();
            if let Some(dir) = checkpoint {
                self.save(dir)?;
            }
        }
        let mut result = self.gate(progress)?;
        // Re-reading a finished run's result costs nothing worth counting.
        if !finished_before {
            self.tick();
        }
        result.seconds = self.state.seconds;
        if let Some(dir) = checkpoint {
            self.save(dir)?;
        }
        Ok(Ok(result))
    }

    /// One episode of up to `episode_len` edits; with `learn`, the PPO policy picks them,
    /// else they are uniform. Returns the transitions (empty features without a policy).
    fn episode(&mut self, learn: bool) -> Result<Vec<(Transition, f64)>> {
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

    fn random_iteration(&mut self) -> Result<()> {
        for _ in 0..self.state.config.episodes_per_update {
            self.episode(false)?;
        }
        Ok(())
    }

    fn ppo_iteration(&mut self) -> Result<()> {
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
    fn anchor_check(&mut self, searcher: &PolicySnapshot) -> Result<()> {
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

    /// GrIPS: sample edits of the current prompt, score them on one minibatch with it, and move
    /// to the best if it also wins on the whole train split.
    /// Where greedy's climb and evolution's population start: the best prompt scored on all of
    /// train so far (the template, when there is one, as PPO's and random's elite starts have
    /// it), else the author's.
    fn starting_point(&self) -> String {
        self.best_by(Split::Train).map_or_else(|| self.state.original_key.clone(), |(k, _)| k.clone())
    }

    fn greedy_iteration(&mut self) -> Result<()> {
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

    fn full_train(&mut self, k: &str) -> Result<Option<f64>> {
        let all: Vec<usize> = (0..self.scorer.split_len(Split::Train)).collect();
        let limit = self.search_budget_left();
        Ok(self.scores(k, Split::Train, &all, limit)?.map(|o| mean(o.iter().map(|x| x.score))))
    }

    fn fitness(&self, k: &str) -> (f64, f64) {
        let r = &self.state.records[k];
        (r.full_mean(Split::Train).unwrap_or(f64::NEG_INFINITY), r.full_signal(Split::Train))
    }

    fn tournament(&mut self) -> String {
        let pop = &self.state.strategy.population;
        let a = pop[self.rng.below(pop.len())].clone();
        let b = pop[self.rng.below(pop.len())].clone();
        let (fa, fb) = (self.fitness(&a), self.fitness(&b));
        if beats(fb, fa) { b } else { a }
    }

    /// A random edit of `parent`, recorded.
    fn mutate(&mut self, parent: &str) -> Result<Option<String>> {
        let text = self.state.records[parent].text.clone();
        let options = self.candidates(&text)?;
        if options.is_empty() {
            return Ok(None);
        }
        let (edit, edited) = options[self.rng.below(options.len())].clone();
        let doc = self.doc(&text).clone();
        let mut lineage = self.state.records[parent].lineage.clone();
        lineage.push(edit.describe(&doc.source));
        Ok(Some(self.record(&edited, lineage)))
    }

    /// Crossover: `a` takes `b`'s label words with their calibration, layout and the
    /// demonstrations it lacks. Words `a` already has stay as they are, calibration included.
    fn crossover(&mut self, a: &str, b: &str) -> Option<String> {
        let (ta, tb) = (self.state.records[a].text.clone(), self.state.records[b].text.clone());
        let db = parse(&tb, None);
        let mut text = ta.clone();
        let mut lineage = self.state.records[a].lineage.clone();
        // Whether the edit applied (a refused one changes nothing).
        let mut apply = |text: &mut String, edit: Edit, space: &EditSpace| -> bool {
            let doc = parse(text, None);
            let Ok(t) = edits::apply_checked(&doc, &edit, space) else { return false };
            lineage.push(edit.describe(&doc.source));
            *text = t;
            true
        };
        let words = &db.settings.label_words;
        if let Some(labels) = db.settings.labels.as_ref().filter(|_| parse(&text, None).settings.label_words != *words)
        {
            let edit = if words.iter().any(|g| g.len() > 1) {
                Edit::LabelGroups(words.clone())
            } else {
                Edit::Labels(labels.value.clone())
            };
            // New words drop the old offsets; `b`'s were fitted to these words, so they come
            // along only where the words did.
            if apply(&mut text, edit, &self.space)
                && let Some(bias) = &db.settings.label_bias
            {
                apply(&mut text, Edit::LabelBias(bias.value.clone()), &self.space);
            }
        }
        if parse(&text, None).settings.format != db.settings.format {
            apply(&mut text, Edit::Format(db.settings.format), &self.space);
        }
        for demo in find_demos(&db, &self.space) {
            let doc = parse(&text, None);
            if find_demos(&doc, &self.space).iter().any(|d| d.source == demo.source) {
                continue;
            }
            if let (Some(unit), Some(t)) =
                (edits::example_unit(&doc), edits::demo_text(&doc, &self.space.demos[demo.source]))
            {
                apply(&mut text, Edit::AddDemo { at: unit.start, text: t }, &self.space);
            }
        }
        (text != ta).then(|| self.record(&text, lineage))
    }

    /// Evolution (μ + λ): children by crossover or mutation of tournament winners, all scored
    /// on the whole train split; the best `width` of parents and children survive.
    fn evolution_iteration(&mut self) -> Result<()> {
        let width = self.state.config.width.max(2);
        if self.state.strategy.population.is_empty() {
            let original = self.state.original_key.clone();
            let mut population = vec![original.clone()];
            let start = self.starting_point();
            if start != original {
                population.push(start);
            }
            for _ in 0..width * 2 {
                if population.len() >= width {
                    break;
                }
                if let Some(child) = self.mutate(&original)?
                    && !population.contains(&child)
                    && self.full_train(&child)?.is_some()
                {
                    population.push(child);
                }
            }
            self.state.strategy.population = population;
            return Ok(());
        }
        let mut children = Vec::new();
        for _ in 0..width {
            let a = self.tournament();
            let child = if self.rng.next_f32() < 0.3 {
                let b = self.tournament();
                match self.crossover(&a, &b) {
                    Some(c) => Some(c),
                    None => self.mutate(&a)?,
                }
            } else {
                self.mutate(&a)?
            };
            if let Some(child) = child
                && self.full_train(&child)?.is_some()
            {
                children.push(child);
            }
        }
        let mut pool = self.state.strategy.population.clone();
        for c in children {
            if !pool.contains(&c) {
                pool.push(c);
            }
        }
        pool.sort_by(|a, b| {
            let (fa, fb) = (self.fitness(a), self.fitness(b));
            fb.0.total_cmp(&fa.0).then(fb.1.total_cmp(&fa.1))
        });
        pool.truncate(width);
        self.state.strategy.population = pool;
        Ok(())
    }

    /// The honesty gate: the original and the best prompts by train score, on all of
    /// validation; the best validated prompt wins only if it beats the original there.
    fn gate(&mut self, progress: &mut dyn FnMut(&Progress)) -> Result<SearchResult> {
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
        // A prompt and its calibrations take one place: a calibration of a prompt validated
        // here (its twin) is scored from its results, free, and compared anyway, and the
        // budget kept for the gate goes to the next prompt down. Places are counted by family,
        // not by what was spent, so a finished run resumed ends at the same gate.
        let original_base = self.family_base(&original);
        let mut places = HashSet::new();
        for (k, _, _) in ranked {
            if places.len() >= self.state.config.top_k {
                break;
            }
            let limit = self.budget_left();
            if self.scores(&k, Split::Validation, &all, limit)?.is_some() {
                let family = self.family_base(&k);
                if family != original_base {
                    places.insert(family);
                }
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
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_learning_curve_shows_each_gain_where_it_happened() {
        let mut curve = Vec::new();
        let at = |evaluations, train| CurvePoint { evaluations, train, validation: None };
        for (evaluations, train) in [(16, 0.5), (32, 0.6), (48, 0.6), (64, 0.6), (64, 0.6), (80, 0.7)] {
            note_point(&mut curve, at(evaluations, train));
        }
        // The gain to 0.6 stays at 32; the flat stretch keeps its end (64).
        assert_eq!(curve, [at(16, 0.5), at(32, 0.6), at(64, 0.6), at(80, 0.7)]);
        let value_at = |x: usize| curve.iter().take_while(|p| p.evaluations <= x).last().map(|p| p.train);
        assert_eq!([16, 32, 48, 79].map(value_at), [Some(0.5), Some(0.6), Some(0.6), Some(0.6)]);
        // A validation score reached later is a point of its own.
        note_point(&mut curve, CurvePoint { evaluations: 96, train: 0.7, validation: Some(0.8) });
        assert_eq!(curve.len(), 5);
    }
    use crate::optimize::edits::DemoSource;
    use serde_json::{Map, Value};

    const EXAMPLE: &str = include_str!("../../../examples/sentiment/sentiment.prompt");

    /// A model-free world: a prompt's quality is planted in its label words, layout and
    /// demonstrations; example `i` is right when the quality clears its difficulty.
    struct Planted {
        scored: usize,
        /// Validation favours the author's prompt over every edit (the gate must notice).
        adversarial_validation: bool,
    }

    impl Planted {
        fn quality(text: &str) -> f64 {
            let doc = parse(text, None);
            let mut q = 0.3;
            if doc.settings.labels.as_ref().is_some_and(|l| l.value == ["negative", "positive"]) {
                q += 0.25;
            }
            if doc.settings.format == reprompt_protocol::settings::Format::Plain {
                q += 0.2;
            }
            if text.contains("Sentiment:") {
                q += 0.1;
            }
            q
        }
    }

    impl Scorer for Planted {
        fn score(&mut self, text: &str, split: Split, indices: &[usize]) -> Result<Vec<Outcome>> {
            self.scored += indices.len();
            let q = Self::quality(text);
            let original = text == EXAMPLE;
            Ok(indices
                .iter()
                .map(|&i| {
                    let difficulty = ((i * 7) % 10) as f64 / 10.0;
                    let score = match (split, self.adversarial_validation) {
                        (Split::Validation, true) => f64::from(u8::from(original)),
                        _ => f64::from(u8::from(q > difficulty)),
                    };
                    Outcome { score, signal: q - difficulty, ..Outcome::default() }
                })
                .collect())
        }

        fn split_len(&self, split: Split) -> usize {
            if split == Split::Validation { 16 } else { 24 }
        }

        fn embed(&mut self, text: &str) -> Result<Vec<f32>> {
            let mut v = vec![0.0; 16];
            for word in text.split_whitespace() {
                v[word.bytes().fold(7usize, |h, b| h.wrapping_mul(31).wrapping_add(b as usize)) % 16] += 1.0;
            }
            Ok(v)
        }

        fn feature_dim(&self) -> usize {
            16
        }
    }

    fn space() -> EditSpace {
        let demos = (0..6)
            .map(|i| {
                let mut input = Map::new();
                input.insert("sentence".into(), Value::String(format!("review number {i} .")));
                DemoSource { input, label: Some(i % 2), answer: None }
            })
            .collect();
        EditSpace::builtin(demos)
    }

    fn config(strategy: Strategy, budget: usize) -> SearchConfig {
        SearchConfig { strategy, budget, seed: 5, minibatch: 8, paraphrases: 0, ..SearchConfig::default() }
    }

    fn run(strategy: Strategy, budget: usize, adversarial: bool) -> (SearchResult, usize) {
        let mut scorer = Planted { scored: 0, adversarial_validation: adversarial };
        let mut search = Search::new(EXAMPLE, config(strategy, budget), space(), &mut scorer).unwrap();
        let result = search.run(None, None, &mut |_| {}).unwrap().unwrap();
        drop(search);
        (result, scorer.scored)
    }

    #[test]
    fn every_strategy_stays_within_budget_and_finds_better_prompts() {
        for strategy in [Strategy::Ppo, Strategy::Random, Strategy::Greedy, Strategy::Evolution] {
            let (result, scored) = run(strategy, 1200, false);
            assert_eq!(result.evaluations, scored, "{strategy:?}: every scored example is counted");
            assert!(scored <= 1200, "{strategy:?} spent {scored}");
            assert!(result.improved, "{strategy:?} found nothing: {result:?}");
            assert!(result.best_validation > result.original_validation);
            let doc = parse(&result.best_text, None);
            assert!(doc.diagnostics.is_empty(), "{:?}", doc.diagnostics);
            assert!(!result.best_lineage.is_empty());
        }
    }

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

    /// [`Planted`] with its outcomes changed by `alter` (an example's index and its outcome)
    /// and `cost` task-model evaluations an example.
    struct Altered {
        planted: Planted,
        cost: usize,
        alter: fn(usize, &mut Outcome),
    }

    impl Altered {
        fn new(cost: usize, alter: fn(usize, &mut Outcome)) -> Self {
            Self { planted: Planted { scored: 0, adversarial_validation: false }, cost, alter }
        }

        /// RLPrompt's gap scale: signals of ±200 at certainty.
        fn gap_scaled() -> Self {
            Self::new(1, |_, o| o.signal *= 200.0)
        }

        /// A reward that is not a number on one example and a signal of −∞ on another (a
        /// `logprob` reward where the model gives the gold words no probability).
        fn unbounded() -> Self {
            Self::new(1, |i, o| match i {
                0 => o.score = f64::NAN,
                1 => o.signal = f64::NEG_INFINITY,
                _ => {}
            })
        }

        /// A reward that costs three task-model evaluations an example (a generation's
        /// answer, its likelihood and more, say).
        fn costly() -> Self {
            Self::new(3, |_, _| {})
        }
    }

    impl Scorer for Altered {
        fn score(&mut self, text: &str, split: Split, indices: &[usize]) -> Result<Vec<Outcome>> {
            let mut out = self.planted.score(text, split, indices)?;
            for (o, &i) in out.iter_mut().zip(indices) {
                (self.alter)(i, o);
            }
            Ok(out)
        }
        fn split_len(&self, split: Split) -> usize {
            self.planted.split_len(split)
        }
        fn evaluations_per_example(&mut self, _text: &str) -> Result<usize> {
            Ok(self.cost)
        }
        fn embed(&mut self, text: &str) -> Result<Vec<f32>> {
            self.planted.embed(text)
        }
        fn feature_dim(&self) -> usize {
            self.planted.feature_dim()
        }
    }

    /// A tensor's values, flattened.
    fn values(t: &candle_core::Tensor) -> Vec<f32> {
        t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
    }

    /// Every weight of a snapshot, in name order.
    fn flat(snapshot: &PolicySnapshot) -> Vec<f32> {
        snapshot.params.values().flat_map(values).collect()
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

    fn copy_dir(from: &Path, to: &Path) {
        std::fs::create_dir_all(to).unwrap();
        for entry in std::fs::read_dir(from).unwrap() {
            let entry = entry.unwrap();
            let target = to.join(entry.file_name());
            if entry.file_type().unwrap().is_dir() {
                copy_dir(&entry.path(), &target);
            } else {
                std::fs::copy(entry.path(), target).unwrap();
            }
        }
    }

    #[test]
    fn a_run_killed_while_saving_resumes_from_a_whole_checkpoint() {
        let timeless = |r: &SearchResult| SearchResult { seconds: 0.0, ..r.clone() };
        let (whole, _) = run(Strategy::Ppo, 900, false);
        let cfg = config(Strategy::Ppo, 900);
        let iterations = |dir: &Path| {
            let state: SearchState = serde_json::from_slice(&std::fs::read(dir.join(STATE_FILE)).unwrap()).unwrap();
            state.iterations
        };
        // The states a kill leaves, by where it strikes in `save`, and the checkpoint that must
        // come back: (DIR, DIR.new, DIR.old) as (absent, half written, the earlier one, the later one).
        #[derive(Clone, Copy, Debug, PartialEq)]
        enum At {
            Absent,
            Half,
            Earlier,
            Later,
        }
        let cases = [
            // Writing DIR.new.
            (At::Earlier, At::Half, At::Absent, 2),
            // DIR.new written, DIR not moved yet.
            (At::Earlier, At::Later, At::Absent, 3),
            // Between the two renames.
            (At::Absent, At::Later, At::Earlier, 3),
            // Removing DIR.old after the swap, its `search.json` gone first.
            (At::Later, At::Absent, At::Half, 3),
            // Moving DIR aside when DIR.new was not complete (a recovery's rename cut short).
            (At::Absent, At::Half, At::Earlier, 2),
            // A recovery cut short while it removed DIR to put DIR.new in its place.
            (At::Half, At::Later, At::Earlier, 3),
            // A recovery cut short while it removed DIR to put DIR.old back.
            (At::Half, At::Absent, At::Earlier, 2),
        ];
        let base = std::env::temp_dir().join(format!("reprompt-search-kill-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        // The earlier checkpoint after two iterations, the later one after three.
        let (earlier, later) = (base.join("earlier"), base.join("later"));
        for (dir, n) in [(&earlier, 2), (&later, 3)] {
            let mut scorer = Planted { scored: 0, adversarial_validation: false };
            let mut first = Search::new(EXAMPLE, cfg.clone(), space(), &mut scorer).unwrap();
            assert_eq!(first.run(Some(dir), Some(n), &mut |_| {}).unwrap(), Err(Stop::Interrupted));
            drop(first);
            let (next, old) = checkpoint_siblings(dir).unwrap();
            assert!(!next.exists() && !old.exists(), "a finished save leaves one directory");
            assert_eq!(iterations(dir), n);
        }
        for (i, (at_dir, at_next, at_old, expected)) in cases.into_iter().enumerate() {
            let dir = base.join(format!("case-{i}")).join("checkpoint");
            let (next, old) = checkpoint_siblings(&dir).unwrap();
            for (path, at) in [(&dir, at_dir), (&next, at_next), (&old, at_old)] {
                match at {
                    At::Absent => {}
                    At::Half => std::fs::create_dir_all(path.join(PPO_DIR)).unwrap(),
                    At::Earlier => copy_dir(&earlier, path),
                    At::Later => copy_dir(&later, path),
                }
            }
            assert!(Search::has_checkpoint(&dir), "case {i}: the save is finished on the next look");
            assert_eq!(iterations(&dir), expected, "case {i}: the latest whole checkpoint");
            assert!(!next.exists() && !old.exists(), "case {i}: nothing left beside it");
            assert!(Search::checkpoint_matches(&dir, EXAMPLE, &cfg));
            let mut scorer = Planted { scored: 0, adversarial_validation: false };
            let mut resumed = Search::load(&dir, EXAMPLE, &cfg, space(), &mut scorer).unwrap();
            let result = resumed.run(Some(&dir), None, &mut |_| {}).unwrap().unwrap();
            assert_eq!(timeless(&result), timeless(&whole), "case {i}");
            drop(resumed);
        }
        // Starting over removes a checkpoint with whatever a cut-short save left beside it.
        let dir = base.join("fresh").join("checkpoint");
        let (next, old) = checkpoint_siblings(&dir).unwrap();
        copy_dir(&later, &next);
        copy_dir(&earlier, &old);
        remove_checkpoint(&dir).unwrap();
        assert!(!Search::has_checkpoint(&dir) && !next.exists() && !old.exists());
        // A path without a name of its own has no siblings to swap through.
        assert!(checkpoint_siblings(Path::new("/")).is_none());
        std::fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn a_checkpoint_of_other_data_is_not_resumed() {
        let dir = std::env::temp_dir().join(format!("reprompt-search-data-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let cfg = SearchConfig { data: Some(data_digest("a", "b", "model m")), ..config(Strategy::Random, 600) };
        let mut scorer = Planted { scored: 0, adversarial_validation: false };
        let mut first = Search::new(EXAMPLE, cfg.clone(), space(), &mut scorer).unwrap();
        assert_eq!(first.run(Some(&dir), Some(2), &mut |_| {}).unwrap(), Err(Stop::Interrupted));
        drop(first);
        assert!(Search::checkpoint_matches(&dir, EXAMPLE, &cfg));
        let edited = SearchConfig { data: Some(data_digest("a", "c", "model m")), ..cfg.clone() };
        assert!(!Search::checkpoint_matches(&dir, EXAMPLE, &edited), "validation data edited");
        let other_model = SearchConfig { data: Some(data_digest("a", "b", "model n")), ..cfg.clone() };
        assert!(!Search::checkpoint_matches(&dir, EXAMPLE, &other_model), "another model");
        let mut scorer = Planted { scored: 0, adversarial_validation: false };
        let err = Search::load(&dir, EXAMPLE, &edited, space(), &mut scorer).err().expect("refused").to_string();
        assert!(err.contains("data"), "{err}");
        // Results of splits of another size are refused, whatever the settings say.
        let mut scorer = Shrunk(Planted { scored: 0, adversarial_validation: false });
        let err = Search::load(&dir, EXAMPLE, &cfg, space(), &mut scorer).err().expect("refused").to_string();
        assert!(err.contains("another size"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// [`Planted`] with four validation examples fewer.
    struct Shrunk(Planted);

    impl Scorer for Shrunk {
        fn score(&mut self, text: &str, split: Split, indices: &[usize]) -> Result<Vec<Outcome>> {
            self.0.score(text, split, indices)
        }
        fn split_len(&self, split: Split) -> usize {
            self.0.split_len(split) - if split == Split::Validation { 4 } else { 0 }
        }
        fn embed(&mut self, text: &str) -> Result<Vec<f32>> {
            self.0.embed(text)
        }
        fn feature_dim(&self) -> usize {
            self.0.feature_dim()
        }
    }

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
    fn examples_that_cost_several_evaluations_are_paid_in_full_within_the_budget() {
        for strategy in [Strategy::Ppo, Strategy::Random, Strategy::Greedy, Strategy::Evolution] {
            let mut scorer = Altered::costly();
            let mut search = Search::new(EXAMPLE, config(strategy, 1200), space(), &mut scorer).unwrap();
            let result = search.run(None, None, &mut |_| {}).unwrap().unwrap();
            drop(search);
            assert_eq!(result.evaluations, 3 * scorer.planted.scored, "{strategy:?}: three per example");
            assert!(result.evaluations <= 1200, "{strategy:?} spent {}", result.evaluations);
            assert!(result.evaluations > 1000, "{strategy:?} left {} unspent", 1200 - result.evaluations);
        }
        // The original on both splits (16 + 24 examples) needs 120.
        let mut scorer = Altered::costly();
        let err = Search::new(EXAMPLE, config(Strategy::Ppo, 119), space(), &mut scorer).err().expect("refused");
        assert!(err.to_string().contains("(120, 3 evaluations each)"), "{err}");
        let mut scorer = Altered::costly();
        assert!(Search::new(EXAMPLE, config(Strategy::Ppo, 120), space(), &mut scorer).is_ok());
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

    /// A world whose prompts rank every input right but lean to the second label by 2 in
    /// log-odds, whatever their words: only a calibration ([`Edit::LabelBias`]) helps.
    struct Leaning {
        scored: usize,
    }

    impl Scorer for Leaning {
        fn score(&mut self, text: &str, _split: Split, indices: &[usize]) -> Result<Vec<Outcome>> {
            self.scored += indices.len();
            let bias = parse(text, None).settings.label_bias.map(|b| b.value).unwrap_or_default();
            let shift = bias.get(1).copied().unwrap_or(0.0) - bias.first().copied().unwrap_or(0.0);
            Ok(indices
                .iter()
                .map(|&i| {
                    let gold = i % 2;
                    let margin = 0.5 + (i % 4) as f64 * 0.25;
                    let odds = 2.0 + shift + if gold == 1 { margin } else { -margin };
                    let p = 1.0 / (1.0 + (-odds).exp());
                    let probabilities = vec![1.0 - p, p];
                    let predicted = usize::from(p > 0.5);
                    Outcome {
                        score: f64::from(u8::from(predicted == gold)),
                        signal: crate::eval::rewards::gap(&probabilities, gold),
                        probabilities,
                    }
                })
                .collect())
        }
        fn split_len(&self, _split: Split) -> usize {
            32
        }
        fn embed(&mut self, text: &str) -> Result<Vec<f32>> {
            Planted { scored: 0, adversarial_validation: false }.embed(text)
        }
        fn feature_dim(&self) -> usize {
            16
        }
        fn train_labels(&self) -> Vec<Option<usize>> {
            (0..32).map(|i| Some(i % 2)).collect()
        }
        fn validation_labels(&self) -> Vec<Option<usize>> {
            self.train_labels()
        }
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
            include_str!("../../../examples/gsm8k/gsm8k.prompt").to_string(),
            format!("{EXAMPLE}{{{{~> footer}}}}\n"),
            format!("{EXAMPLE}{{{{@metadata.prompt.name}}}}\n"),
            EXAMPLE.replace("reprompt.reward: accuracy", "reprompt.reward: accuracy\nreprompt.label_bias: [0, 1, 2]"),
        ];
        for text in &none {
            assert_eq!(family(text), None, "{text}");
        }
    }

    #[test]
    fn a_run_that_scores_calibrations_from_their_siblings_resumes_exactly() {
        let dir = std::env::temp_dir().join(format!("reprompt-search-rebias-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let cfg = config(Strategy::Ppo, 1500);
        let mut scorer = Leaning { scored: 0 };
        let mut whole = Search::new(EXAMPLE, cfg.clone(), space(), &mut scorer).unwrap();
        let expected = whole.run(None, None, &mut |_| {}).unwrap().unwrap();
        let whole_state = whole.state.clone();
        drop(whole);
        assert!(expected.derived > 0 && expected.derived == whole_state.derived);
        // What the model scored is what was spent; the derived results came on top.
        assert_eq!(scorer.scored, whole_state.spent);
        let timeless = |r: &SearchResult| SearchResult { seconds: 0.0, ..r.clone() };
        let mut scorer = Leaning { scored: 0 };
        let mut first = Search::new(EXAMPLE, cfg.clone(), space(), &mut scorer).unwrap();
        assert_eq!(first.run(Some(&dir), Some(4), &mut |_| {}).unwrap(), Err(Stop::Interrupted));
        drop(first);
        let mut scorer = Leaning { scored: 0 };
        let mut resumed = Search::load(&dir, EXAMPLE, &cfg, space(), &mut scorer).unwrap();
        let result = resumed.run(Some(&dir), None, &mut |_| {}).unwrap().unwrap();
        assert_eq!(timeless(&result), timeless(&expected));
        assert_eq!(resumed.state.records, whole_state.records, "the same results, derived ones included");
        drop(resumed);
        std::fs::remove_dir_all(&dir).unwrap();
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
    fn the_gate_validates_top_k_families_and_their_calibrations_take_no_place() {
        let mut scorer = Leaning { scored: 0 };
        let cfg = config(Strategy::Random, 1500);
        let (top_k, budget) = (cfg.top_k, cfg.budget);
        let mut search = Search::new(EXAMPLE, cfg, space(), &mut scorer).unwrap();
        search.run(None, None, &mut |_| {}).unwrap().unwrap();
        assert!(search.state.spent <= budget);
        let original = search.state.original_key.clone();
        let original_base = search.family_base(&original);
        let whole: Vec<String> = search
            .state
            .records
            .iter()
            .filter(|(_, r)| r.full_mean(Split::Train).is_some())
            .map(|(k, _)| k.clone())
            .collect();
        let (mut families, mut validated) = (HashSet::new(), HashSet::new());
        for k in whole {
            let b = search.family_base(&k);
            if b == original_base {
                continue;
            }
            if search.state.records[&k].full_mean(Split::Validation).is_some() {
                validated.insert(b.clone());
            }
            families.insert(b);
        }
        assert!(families.len() > top_k, "{} families scored on all of train", families.len());
        // top_k families validated: a calibration of a validated prompt comes free and takes
        // no place.
        assert_eq!(validated.len(), top_k, "{validated:?}");
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
    fn tiny_budgets_are_never_exceeded() {
        for budget in [40, 41, 57, 100, 333] {
            for strategy in [Strategy::Ppo, Strategy::Random, Strategy::Greedy, Strategy::Evolution] {
                let (result, scored) = run(strategy, budget, false);
                assert!(scored <= budget, "{strategy:?} spent {scored} of {budget}");
                assert_eq!(result.evaluations, scored);
            }
        }
        let mut scorer = Planted { scored: 0, adversarial_validation: false };
        // Less than the original on both splits (16 + 24) is refused, saying what it takes.
        let err = Search::new(EXAMPLE, config(Strategy::Ppo, 39), space(), &mut scorer).err().expect("refused");
        assert!(err.to_string().contains("(40)"), "{err}");
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

    /// Mean planted quality of every prompt a search looked at: how well its policy steers.
    fn visited_quality(search: &Search) -> f64 {
        mean(search.state.records.values().map(|r| Planted::quality(&r.text)))
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

    #[test]
    fn runs_are_deterministic_and_resume_exactly() {
        let dir = std::env::temp_dir().join(format!("reprompt-search-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        for strategy in [Strategy::Ppo, Strategy::Evolution] {
            let (whole, _) = run(strategy, 900, false);
            let timeless = |r: &SearchResult| SearchResult { seconds: 0.0, ..r.clone() };
            assert_eq!(timeless(&whole), timeless(&run(strategy, 900, false).0), "same seed, same run");
            let cfg = config(strategy, 900);
            let mut scorer = Planted { scored: 0, adversarial_validation: false };
            let mut first = Search::new(EXAMPLE, cfg.clone(), space(), &mut scorer).unwrap();
            assert_eq!(first.run(Some(&dir), Some(3), &mut |_| {}).unwrap(), Err(Stop::Interrupted));
            drop(first);
            assert!(Search::has_checkpoint(&dir));
            let mut scorer = Planted { scored: 0, adversarial_validation: false };
            let mut resumed = Search::load(&dir, EXAMPLE, &cfg, space(), &mut scorer).unwrap();
            let result = resumed.run(Some(&dir), None, &mut |_| {}).unwrap().unwrap();
            assert_eq!(timeless(&result), timeless(&whole), "{strategy:?}: resumed run differs");
            drop(resumed);
            // A checkpoint of another run is refused.
            let mut scorer = Planted { scored: 0, adversarial_validation: false };
            let other = SearchConfig { seed: 6, ..cfg.clone() };
            assert!(Search::load(&dir, EXAMPLE, &other, space(), &mut scorer).is_err());
            // So is a PPO run that started from another policy or replays differently; the
            // baselines have no policy, so those settings leave their runs alone.
            let warm = SearchConfig { warm_start: Some("0123456789abcdef".into()), ..cfg.clone() };
            let replay = SearchConfig { replay_bonus: 0.0, ..cfg };
            for other in [warm, replay] {
                assert_eq!(
                    Search::checkpoint_matches(&dir, EXAMPLE, &other),
                    strategy != Strategy::Ppo,
                    "{strategy:?}"
                );
            }
            std::fs::remove_dir_all(&dir).unwrap();
        }
    }

    /// The planted world plus a label ranker: offers `dreadful / superb`, which the world
    /// rewards more than any built-in set, and notes where it was asked.
    struct Ranking {
        world: Planted,
        asked: Vec<String>,
        refused: Vec<String>,
    }

    fn fresh_ranking() -> Ranking {
        Ranking { world: Planted { scored: 0, adversarial_validation: false }, asked: Vec::new(), refused: Vec::new() }
    }

    impl Scorer for Ranking {
        fn score(&mut self, text: &str, split: Split, indices: &[usize]) -> Result<Vec<Outcome>> {
            let mut out = self.world.score(text, split, indices)?;
            let ranked = parse(text, None).settings.labels.is_some_and(|l| l.value == ["dreadful", "superb"]);
            if ranked && split == Split::Train {
                for (o, &i) in out.iter_mut().zip(indices) {
                    o.signal += 0.5;
                    o.score = f64::from(u8::from(o.signal > 0.0 || i % 3 != 0));
                }
            }
            Ok(out)
        }
        fn split_len(&self, split: Split) -> usize {
            self.world.split_len(split)
        }
        fn embed(&mut self, text: &str) -> Result<Vec<f32>> {
            self.world.embed(text)
        }
        fn feature_dim(&self) -> usize {
            self.world.feature_dim()
        }
        fn rank_labels(&mut self, text: &str, keep: usize) -> Result<Option<Vec<Vec<String>>>> {
            // Like the task model's scorer: a chat prompt's answer starts the assistant turn,
            // not a cue, so there is nothing to rank.
            if parse(text, None).settings.format == reprompt_protocol::settings::Format::Chat {
                self.refused.push(text.to_string());
                return Ok(None);
            }
            self.asked.push(text.to_string());
            let sets = vec![vec!["dreadful".to_string(), "superb".to_string()], vec!["sad".into(), "glad".into()]];
            Ok(Some(sets.into_iter().take(keep).collect()))
        }
    }

    /// The ranking world whose template step also judges labellings out of sample: the ranked
    /// group at `group`, the fixed sets at 0.7 except `negative / positive` at `posneg`;
    /// nothing judged where `posneg` is negative (a split too small to fit offsets on).
    struct Screening {
        ranking: Ranking,
        group: f64,
        posneg: f64,
        fixed: Vec<Vec<String>>,
    }

    impl Scorer for Screening {
        fn score(&mut self, text: &str, split: Split, indices: &[usize]) -> Result<Vec<Outcome>> {
            self.ranking.score(text, split, indices)
        }
        fn split_len(&self, split: Split) -> usize {
            self.ranking.split_len(split)
        }
        fn embed(&mut self, text: &str) -> Result<Vec<f32>> {
            self.ranking.embed(text)
        }
        fn feature_dim(&self) -> usize {
            self.ranking.feature_dim()
        }
        fn rank_labels(&mut self, text: &str, keep: usize) -> Result<Option<Vec<Vec<String>>>> {
            self.ranking.rank_labels(text, keep)
        }
        fn rank_template(&mut self, text: &str, keep: usize, fixed: &[Vec<String>]) -> Result<Option<TemplateRanking>> {
            self.fixed = fixed.to_vec();
            let Some(sets) = self.ranking.rank_labels(text, keep)? else { return Ok(None) };
            let group = vec![vec!["dreadful".to_string(), "sad".into()], vec!["superb".into(), "glad".into()]];
            if fixed.is_empty() {
                return Ok(Some((sets, None)));
            }
            if self.posneg < 0.0 {
                return Ok(Some((sets, Some(Vec::new()))));
            }
            // Per-example hits: the first examples right, so a higher accuracy is a superset.
            let hits = |accuracy: f64| -> Vec<f64> {
                (0..32).map(|i| f64::from(u8::from(i < (accuracy * 32.0) as usize))).collect()
            };
            let mut screened = vec![labels::Screened {
                words: group,
                ranked: true,
                accuracy: self.group,
                bias: vec![0.0, 0.3],
                hits: hits(self.group),
            }];
            for set in fixed {
                let accuracy = if set[0] == "negative" { self.posneg } else { 0.7 };
                let words = set.iter().map(|w| vec![w.clone()]).collect();
                screened.push(labels::Screened {
                    words,
                    ranked: false,
                    accuracy,
                    bias: vec![0.0, -0.5],
                    hits: hits(accuracy),
                });
            }
            Ok(Some((sets, Some(screened))))
        }
    }

    #[test]
    fn the_template_starts_from_the_words_that_do_best_out_of_sample_calibrated() {
        let template = |group: f64, posneg: f64, calibrate: bool| {
            let mut scorer = Screening { ranking: fresh_ranking(), group, posneg, fixed: Vec::new() };
            let cfg = SearchConfig { calibrate, ..config(Strategy::Greedy, 1500) };
            let mut search = Search::new(EXAMPLE, cfg, space(), &mut scorer).unwrap();
            search.run(None, Some(0), &mut |_| {}).unwrap().unwrap_err();
            let state = search.state.clone();
            drop(search);
            let bare = r#"bare completion prompt: the example's lines and "Sentiment:""#;
            let record = state
                .records
                .values()
                .find(|r| r.lineage.first().map(String::as_str) == Some(bare))
                .expect("a template")
                .clone();
            assert!(record.train.iter().all(Option::is_some), "scored on all of train");
            (record, state, scorer.fixed)
        };
        // A built-in set beats the ranked words out of sample: the template takes it, calibrated.
        let (record, state, fixed) = template(0.6, 0.8, true);
        assert_eq!(fixed.len(), 6, "the built-in two-label sets: {fixed:?}");
        assert_eq!(
            record.lineage[1..],
            ["label words negative / positive", "calibrate the labels: label bias [0, -0.5]"]
        );
        let doc = parse(&record.text, None);
        assert!(doc.diagnostics.is_empty(), "{:?}", doc.diagnostics);
        assert_eq!(doc.settings.label_bias.map(|b| b.value), Some(vec![0.0, -0.5]));
        assert_eq!(state.template_screen.len(), 7);
        assert_eq!(state.template_screen[0], ("dreadful, sad / superb, glad".to_string(), 0.6, true));
        // Beaten out of sample, the ranked words never join the edit space (at later cues
        // neither: the same world judges them there).
        assert!(state.ranked_groups.is_empty() && state.ranked_labels.is_empty());
        assert!(state.records.values().all(|r| !r.text.contains("dreadful")));
        // A tie goes to the built-in set (one-standard-error rule): the ranked words stay out.
        let (record, state, _) = template(0.8, 0.8, true);
        assert_eq!(record.lineage[1], "label words negative / positive");
        assert!(state.ranked_groups.is_empty());
        // Clearly better (three more examples right, none fewer), the ranked words win, with
        // their own offsets, and are offered.
        let (record, state, _) = template(0.9, 0.8, true);
        assert_eq!(
            record.lineage[1..],
            ["label words dreadful, sad / superb, glad", "calibrate the labels: label bias [0, 0.3]"]
        );
        assert_eq!(state.ranked_groups[0], [["dreadful", "sad"], ["superb", "glad"]]);
        // Without calibration nothing is screened: the ranked words, as they are.
        let (record, state, fixed) = template(0.6, 0.8, false);
        assert!(fixed.is_empty() && state.template_screen.is_empty());
        assert_eq!(record.lineage[1..], ["label words dreadful, sad / superb, glad"]);
        // Built-in sets given but none judged: the ranked words are unchecked, so they neither
        // start the template (the author's words do) nor join the edit space.
        let (record, state, fixed) = template(0.9, -1.0, true);
        assert_eq!(fixed.len(), 6);
        assert!(record.lineage[1..].is_empty(), "{:?}", record.lineage);
        assert!(state.ranked_groups.is_empty() && state.ranked_labels.is_empty());
        assert!(state.records.values().all(|r| !r.text.contains("dreadful")));
    }

    #[test]
    fn labels_are_ranked_after_new_cues_within_the_budget() {
        for strategy in [Strategy::Greedy, Strategy::Ppo] {
            let mut scorer = fresh_ranking();
            let cfg = SearchConfig { ranked_labels: 1, ..config(strategy, 1500) };
            let mut search = Search::new(EXAMPLE, cfg, space(), &mut scorer).unwrap();
            let result = search.run(None, None, &mut |_| {}).unwrap().unwrap();
            let state = search.state.clone();
            drop(search);
            // Every ranking costs the train split and is counted; the budget holds. First the
            // bare prompt with the cue the author's words name, then at most MAX_RANKINGS new
            // contexts of the best prompt.
            let rankings = scorer.asked.len();
            assert!((1..=1 + MAX_RANKINGS).contains(&rankings), "{strategy:?}: {rankings}");
            assert_eq!(state.spent, scorer.world.scored + rankings * 24);
            assert!(state.spent <= 1500);
            assert_eq!(state.rankings + 1, rankings);
            assert!(state.templates_ranked);
            // The bare prompt with each label's ranked words (the words of the sets the
            // ranking gave, beyond `keep`), scored on all of train before the search began.
            let lineage = [
                r#"bare completion prompt: the example's lines and "Sentiment:""#,
                "label words dreadful, sad / superb, glad",
            ];
            let template =
                state.records.values().find(|r| r.lineage == lineage).expect("the template winner is recorded");
            assert!(template.text.ends_with("---\nReview: {{sentence}}\nSentiment:\n"), "{}", template.text);
            assert!(template.text.contains(r#"reprompt.labels: [["dreadful", "sad"], ["superb", "glad"]]"#));
            assert!(template.train.iter().all(Option::is_some));
            assert_eq!(state.ranked_groups[0], [["dreadful", "sad"], ["superb", "glad"]]);
            assert_eq!(template.found_at, 24 + 24);
            // Only at prompts whose answer follows a cue, each cue once; a refusal is free
            // and not asked again.
            let context = |t: &String| answer_context(&parse(t, None));
            let contexts: Vec<String> = scorer.asked.iter().map(context).collect();
            let refused: Vec<String> = scorer.refused.iter().map(context).collect();
            assert!(contexts.iter().chain(&refused).all(|c| c.ends_with(':')), "{contexts:?} {refused:?}");
            let mut all = [contexts.clone(), refused].concat();
            all.sort();
            let mut at = state.ranked_at.clone();
            at.sort();
            assert_eq!(all, at);
            // The group is offered, not the single sets it came from; the search goes on
            // from the ranked words (prompts beyond the template have them).
            assert!(result.ranked_labels.is_empty(), "{:?}", result.ranked_labels);
            assert!(!state.records.values().any(|r| r.text.contains(r#"reprompt.labels: ["dreadful", "superb"]"#)));
            let ranked = |r: &&Record| r.text.contains(r#"reprompt.labels: [["dreadful", "sad"], ["superb", "glad"]]"#);
            assert!(
                state.records.values().filter(ranked).count() > 1,
                "{strategy:?} never went on from the ranked labels"
            );
        }
        // A chat prompt ending in a cue: the scorer refuses, which costs nothing and is not
        // asked again; the same prompt in plain text is ranked and paid for.
        let chat = EXAMPLE.replace("Answer with one word.", "Answer with one word.\nSentiment:");
        let plain = chat.replace("reprompt.reward: accuracy\n", "reprompt.reward: accuracy\nreprompt.format: plain\n");
        for (text, ranked) in [(&chat, false), (&plain, true)] {
            let mut scorer = fresh_ranking();
            let cfg = SearchConfig { ranked_labels: 2, ..config(Strategy::Greedy, 1500) };
            let mut search = Search::new(text, cfg.clone(), space(), &mut scorer).unwrap();
            assert!(search.space.bare, "bare prompts come with ranked labels");
            let gsm8k = include_str!("../../../examples/gsm8k/gsm8k.prompt");
            let mut other = fresh_ranking();
            let generation = Search::new(gsm8k, cfg.clone(), space(), &mut other).unwrap();
            assert!(!generation.space.bare, "no bare prompts for generation");
            drop(generation);
            search.ensure_ranked_labels().unwrap();
            search.ensure_ranked_labels().unwrap();
            let (spent, rankings, at) = (search.state.spent, search.state.rankings, search.state.ranked_at.clone());
            drop(search);
            assert_eq!(at, [answer_context(&parse(text, None))]);
            assert_eq!((scorer.asked.len(), scorer.refused.len()), if ranked { (1, 0) } else { (0, 1) });
            assert_eq!((spent, rankings), if ranked { (24, 1) } else { (0, 0) });
        }
        // The ranked sets are part of the checkpoint: a resumed run is the same run.
        let dir = std::env::temp_dir().join(format!("reprompt-ranking-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let cfg = SearchConfig { ranked_labels: 1, ..config(Strategy::Greedy, 1500) };
        let fresh = fresh_ranking;
        let mut scorer = fresh();
        let whole = Search::new(EXAMPLE, cfg.clone(), space(), &mut scorer).unwrap().run(None, None, &mut |_| {});
        let mut scorer = fresh();
        let mut first = Search::new(EXAMPLE, cfg.clone(), space(), &mut scorer).unwrap();
        assert_eq!(first.run(Some(&dir), Some(12), &mut |_| {}).unwrap(), Err(Stop::Interrupted));
        assert!(!first.state.ranked_groups.is_empty(), "ranked before the interruption");
        drop(first);
        let mut scorer = fresh();
        let resumed =
            Search::load(&dir, EXAMPLE, &cfg, space(), &mut scorer).unwrap().run(Some(&dir), None, &mut |_| {});
        let timeless = |r: SearchResult| SearchResult { seconds: 0.0, ..r };
        assert_eq!(timeless(resumed.unwrap().unwrap()), timeless(whole.unwrap().unwrap()));
        std::fs::remove_dir_all(&dir).unwrap();
        // On by default (4 sets); 0 turns it off: never asked, nothing spent on it (and without
        // calibration either, no bare prompts: the author's words at a bare prompt are no better
        // than chance until calibrated).
        assert_eq!(SearchConfig::default().ranked_labels, 4);
        let mut scorer = fresh_ranking();
        let off = SearchConfig { ranked_labels: 0, calibrate: false, ..config(Strategy::Greedy, 1500) };
        let mut search = Search::new(EXAMPLE, off, space(), &mut scorer).unwrap();
        assert!(!search.space.bare);
        search.run(None, None, &mut |_| {}).unwrap().unwrap();
        let spent = search.state.spent;
        drop(search);
        assert!(scorer.asked.is_empty());
        assert_eq!(spent, scorer.world.scored);
    }

    #[test]
    fn crossover_carries_several_words_per_label() {
        let mut scorer = fresh_ranking();
        let mut search = Search::new(EXAMPLE, config(Strategy::Evolution, 1500), space(), &mut scorer).unwrap();
        let doc = parse(EXAMPLE, None);
        let words = |w: &[&str]| w.iter().map(|s| s.to_string()).collect::<Vec<String>>();
        let groups = vec![words(&["harsh", "poor"]), words(&["sweet", "warm"])];
        let grouped = apply_checked(&doc, &Edit::LabelGroups(groups.clone()), &search.space).unwrap();
        let single = apply_checked(&doc, &Edit::Labels(words(&["bad", "good"])), &search.space).unwrap();
        let (a, b) = (search.record(&single, Vec::new()), search.record(&grouped, Vec::new()));
        let child = search.crossover(&a, &b).expect("a child");
        assert_eq!(parse(&search.state.records[&child].text, None).settings.label_words, groups);
        let back = search.crossover(&b, &a).expect("a child");
        assert_eq!(
            parse(&search.state.records[&back].text, None).settings.label_words,
            [words(&["bad"]), words(&["good"])]
        );
    }

    #[test]
    fn crossover_carries_the_calibration_with_the_words_and_keeps_its_own_for_the_same_words() {
        let mut scorer = fresh_ranking();
        let mut search = Search::new(EXAMPLE, config(Strategy::Evolution, 1500), space(), &mut scorer).unwrap();
        let words = |w: &[&str]| w.iter().map(|s| s.to_string()).collect::<Vec<String>>();
        let with = |text: &str, edit: Edit, space: &EditSpace| apply_checked(&parse(text, None), &edit, space).unwrap();
        let bad_good = with(EXAMPLE, Edit::Labels(words(&["bad", "good"])), &search.space);
        let calibrated = with(&bad_good, Edit::LabelBias(vec![0.0, 0.75]), &search.space);
        let other = with(EXAMPLE, Edit::Labels(words(&["poor", "excellent"])), &search.space);
        let other = with(&other, Edit::LabelBias(vec![0.0, -1.5]), &search.space);
        let bias =
            |search: &Search, k: &str| parse(&search.state.records[k].text, None).settings.label_bias.map(|b| b.value);
        let (plain, cal, oth) = (
            search.record(&bad_good, Vec::new()),
            search.record(&calibrated, Vec::new()),
            search.record(&other, Vec::new()),
        );
        // The same words: nothing to take, and the calibration stays (it used to be dropped).
        assert!(search.crossover(&cal, &plain).is_none());
        // Other words come with the offsets fitted to them: here nothing else differs, so the
        // child is `b` itself.
        let child = search.crossover(&cal, &oth).expect("a child");
        assert_eq!(bias(&search, &child), Some(vec![0.0, -1.5]));
        assert_eq!(child, oth);
        // Words without offsets drop the old ones.
        let child = search.crossover(&oth, &plain).expect("a child");
        assert_eq!(bias(&search, &child), None);
    }

    #[test]
    fn crossover_leaves_the_calibration_behind_when_the_words_do_not_come() {
        let mut scorer = fresh_ranking();
        let mut search = Search::new(EXAMPLE, config(Strategy::Evolution, 1500), space(), &mut scorer).unwrap();
        // `b`'s words cannot be `a`'s (three labels for two ids), so its offsets, fitted to
        // those words, must not land on `a`'s words, though two numbers would fit them.
        let three = EXAMPLE.replace(
            "reprompt.labels: [terrible, great]",
            "reprompt.labels: [awful, fine, great]\nreprompt.label_bias: [0.0, 0.5]",
        );
        assert_ne!(three, EXAMPLE);
        assert_eq!(parse(&three, None).settings.label_bias.map(|b| b.value), Some(vec![0.0, 0.5]));
        let (a, b) = (search.record(EXAMPLE, Vec::new()), search.record(&three, Vec::new()));
        assert!(search.crossover(&a, &b).is_none(), "nothing of b applies to a");
        // Where the words do come, the offsets come with them.
        let two = three.replace("[awful, fine, great]", "[awful, great]");
        let b = search.record(&two, Vec::new());
        let child = search.crossover(&a, &b).expect("a child");
        let settings = parse(&search.state.records[&child].text, None).settings;
        assert_eq!(settings.labels.map(|l| l.value), Some(vec!["awful".to_string(), "great".to_string()]));
        assert_eq!(settings.label_bias.map(|b| b.value), Some(vec![0.0, 0.5]));
    }

    #[test]
    fn checkpoints_of_an_older_edit_space_are_not_resumed() {
        let mut scorer = fresh_ranking();
        let mut state = Search::new(EXAMPLE, config(Strategy::Greedy, 1500), space(), &mut scorer).unwrap().state;
        assert_eq!(state.format, 3);
        assert!(resumable(&state).is_ok());
        for old in [1, 2] {
            state.format = old;
            assert!(resumable(&state).unwrap_err().contains("older reprompt"));
        }
        state.format = 4;
        assert!(resumable(&state).is_err());
    }

    #[test]
    fn a_ranking_offers_its_group_or_else_its_best_sets() {
        let sets =
            |s: &[[&str; 2]]| s.iter().map(|p| p.iter().map(|w| w.to_string()).collect()).collect::<Vec<Vec<String>>>();
        let (single, groups) = ranked_offers(sets(&[["bad", "good"], ["poor", "good"], ["bad", "fine"]]), 1);
        assert!(single.is_empty());
        assert_eq!(groups, Some(vec![vec!["bad".to_string(), "poor".into()], vec!["good".into(), "fine".into()]]));
        // Every set shares the first label's word: no group, the best `keep` sets.
        let (single, groups) = ranked_offers(sets(&[["bad", "good"], ["bad", "fine"], ["bad", "nice"]]), 2);
        assert_eq!((single, groups), (sets(&[["bad", "good"], ["bad", "fine"]]), None));
    }

    #[test]
    fn the_named_cue_is_the_most_specific_one_the_prompt_uses() {
        let cues: Vec<String> = edits::CUES.iter().map(|c| c.to_string()).collect();
        assert_eq!(named_cue(&parse(EXAMPLE, None), &cues).as_deref(), Some("Sentiment:"));
        let news = "---\nreprompt.labels: [a, b]\n---\nWhat is the TOPIC of this article?\n{{text}}\nAnswer:\n";
        assert_eq!(named_cue(&parse(news, None), &cues).as_deref(), Some("Topic:"));
        let plain = "---\nreprompt.labels: [a, b]\n---\nIs this good? Reply yes or no.\n{{text}}\n";
        assert_eq!(named_cue(&parse(plain, None), &cues), None);
        // Front matter does not count, nor do parts of words.
        let front = "---\nname: sentiment\nreprompt.labels: [a, b]\n---\nSentimental? {{text}}\n";
        assert_eq!(named_cue(&parse(front, None), &cues), None);
    }

    #[test]
    fn the_answer_context_is_the_cue_line_without_label_words() {
        let doc = parse("---\nreprompt.labels: [bad, good]\n---\nSay it.\nText: {{x}}\nIs it good or bad?\n", None);
        assert_eq!(answer_context(&doc), "Chat: is it <label> or <label>?");
        let cue = parse("---\nreprompt.format: plain\nreprompt.labels: [no, yes]\n---\nText: {{x}}\nSentiment:", None);
        assert_eq!(answer_context(&cue), "Plain: sentiment:");
    }
}
