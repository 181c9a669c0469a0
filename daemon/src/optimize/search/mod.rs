//! The search over prompt edits: a budgeted environment (per-example results cached, so a
//! prompt scored on an example is never paid for twice), the four strategies that share it at
//! equal budget — PPO, random edits, greedy hill-climbing (GrIPS) and evolution — the honesty
//! gate on the validation split, and checkpoints that make a stopped run resume exactly.
//!
//! Everything random comes from one seeded [`Rng`] saved in the checkpoint, so a run is a pure
//! function of (prompt, data, model, config) and a resumed run ends where the uninterrupted one
//! does.
//!
//! This file holds the types, the budget and the run's loop; each other part of [`Search`] has
//! a file of its own:
//! - `results`: per-example results paid for once, calibrations scored from their siblings';
//! - `labelling`: the template step and label-word rankings;
//! - `episodes`: PPO's and random search's episodes, the replay, PPO's update;
//! - `anchor`: StablePrompt's anchor checks;
//! - `greedy` and `evolution`: the other two baselines;
//! - `gate`: the honesty gate;
//! - `checkpoint`: saving, recovering and resuming.

mod anchor;
mod checkpoint;
mod episodes;
mod evolution;
#[cfg(test)]
mod fixture;
mod gate;
mod greedy;
mod labelling;
mod results;

pub use checkpoint::{data_digest, recover_checkpoint, remove_checkpoint};
pub use episodes::Replay;
pub use labelling::{MAX_RANKINGS, answer_context, judged_against, named_cue};

use episodes::ppo_seed;
use results::Family;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;

use reprompt_protocol::hash::sha256_hex;
use reprompt_protocol::settings::Task;
use reprompt_protocol::{PromptDocument, parse};
use serde::{Deserialize, Serialize};

use super::edits::{self, Edit, EditSpace, apply_checked, find_demos};
use super::labels;
use super::{OptimizeError, PolicyDims, PolicyNet, PolicySnapshot, Ppo, PpoConfig, Result, Rng};
use crate::eval::Split;
use crate::eval::stats::Interval;

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
    /// Whether the prompt did not fit the model's context with this example, which then
    /// scored as the worst answer: kept with the result, so a resumed run still counts it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub too_long: bool,
}

/// Bound of the scores a search keeps (see [`Outcome::finite`]).
pub(crate) const SCORE_BOUND: f64 = 1e12;

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
    /// scored from its results ([`calibrate::rebiased`](super::calibrate::rebiased)) instead of by the model.
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
    /// results on enough training examples to fit it ([`calibrate::prior_bias`](super::calibrate::prior_bias)). On by
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
    /// calibration fitted there ([`calibrate::prior_bias`](super::calibrate::prior_bias)) is
    /// recorded beside it, scored from its results without the model ([`Search::rebias`]), so a
    /// prompt whose offsets went stale (demonstrations added, words changed) competes
    /// calibrated too. On by default (`--no-twins` turns it off); a checkpoint from before it
    /// existed reads as off, as it ran. Needs `calibrate`.
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
    /// Whether the prompt did not fit the model's context with some example it was scored on.
    fn too_long(&self) -> bool {
        self.train.iter().chain(&self.validation).flatten().any(|o| o.too_long)
    }

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
    /// ([`calibrate::rebiased`](super::calibrate::rebiased)): evaluations the budget did not pay for.
    #[serde(default)]
    pub derived: usize,
    /// Evaluations spent before the search's first round (the original and the template
    /// scored on all of train) and in its rounds, once known (none in older checkpoints).
    #[serde(default)]
    pub phases: Option<Phases>,
}

/// Where a run's evaluations went before the gate: what a summary explains a short search by.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Phases {
    /// Before the first round: the original, the template's ranking and the template, each
    /// on all of train.
    pub setup: usize,
    /// In the rounds (label rankings at new cues included).
    pub search: Option<usize>,
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
    /// Evaluations held back from the search for the gate's validations; what the gate does
    /// not need of them is left unspent.
    #[serde(default)]
    pub gate_reserve: usize,
    /// Whether the search ended because [`IDLE_ROUNDS`] rounds in a row scored nothing new
    /// (else its share of the budget could no longer pay a minibatch).
    #[serde(default)]
    pub exhausted: bool,
    /// Where the evaluations went before the gate, where known.
    #[serde(default)]
    pub phases: Option<Phases>,
    /// Prompts recorded with some example they did not fit the model's context with (each
    /// such example scored as the worst answer), and whether the original was one.
    #[serde(default)]
    pub too_long: usize,
    #[serde(default)]
    pub original_too_long: bool,
}

/// Rounds in a row that score nothing new, by the model or from a calibration's results,
/// after which a search ends: nothing new is reachable.
pub const IDLE_ROUNDS: usize = 20;

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
            phases: None,
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
        if self.state.iterations == 0 && self.state.phases.is_none() {
            self.state.phases = Some(Phases { setup: self.state.spent, search: None });
        }
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
            if self.search_budget_left() < minibatch || self.state.strategy.idle >= IDLE_ROUNDS {
                self.state.done = true;
                if let Some(phases) = &mut self.state.phases {
                    phases.search = Some(self.state.spent - phases.setup);
                }
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::optimize::search::fixture::*;

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
    fn a_result_says_what_was_held_back_for_the_gate_and_whether_nothing_new_was_left() {
        // Budget-bound: the gate's reserve is the original and top_k prompts on validation.
        let (result, _) = run(Strategy::Random, 1200, false);
        assert!(!result.exhausted, "{result:?}");
        assert_eq!(result.gate_reserve, (SearchConfig::default().top_k + 1) * 16);
        assert!(result.evaluations > 1200 - result.gate_reserve - 8, "spent up to its share at least: {result:?}");
        // An edit space with nothing to add, and no label words ranked, leaves a few deletions
        // and template steps to score: the search runs out of new prompts long before the budget.
        for strategy in [Strategy::Ppo, Strategy::Random, Strategy::Greedy, Strategy::Evolution] {
            let mut scorer = Planted { scored: 0, adversarial_validation: false };
            let config = SearchConfig { ranked_labels: 0, ..config(strategy, 100_000) };
            let mut search = Search::new(EXAMPLE, config, EditSpace::default(), &mut scorer).unwrap();
            let result = search.run(None, None, &mut |_| {}).unwrap().unwrap();
            assert!(result.exhausted, "{strategy:?}: {result:?}");
            assert!(result.evaluations < 100_000 - result.gate_reserve, "{strategy:?} spent {}", result.evaluations);
        }
    }

    /// [`Planted`] where a prompt with a demonstration does not fit the context with every
    /// fourth example (scored as the worst answer, not put to the model), each example
    /// costing three evaluations; counts what the model would have evaluated.
    struct Cramped {
        planted: Planted,
        evaluated: usize,
    }

    impl Scorer for Cramped {
        fn score(&mut self, text: &str, split: Split, indices: &[usize]) -> Result<Vec<Outcome>> {
            let mut out = self.planted.score(text, split, indices)?;
            for (o, &i) in out.iter_mut().zip(indices) {
                if text.contains("review number") && i % 4 == 0 {
                    *o = Outcome { score: 0.0, signal: -1.0, probabilities: Vec::new(), too_long: true };
                } else {
                    self.evaluated += 3;
                }
            }
            Ok(out)
        }
        fn split_len(&self, split: Split) -> usize {
            self.planted.split_len(split)
        }
        fn evaluations_per_example(&mut self, _text: &str) -> Result<usize> {
            Ok(3)
        }
        fn embed(&mut self, text: &str) -> Result<Vec<f32>> {
            self.planted.embed(text)
        }
        fn feature_dim(&self) -> usize {
            self.planted.feature_dim()
        }
    }

    #[test]
    fn an_example_a_prompt_does_not_fit_costs_nothing() {
        for strategy in [Strategy::Ppo, Strategy::Random, Strategy::Greedy, Strategy::Evolution] {
            let mut scorer = Cramped { planted: Planted { scored: 0, adversarial_validation: false }, evaluated: 0 };
            let mut search = Search::new(EXAMPLE, config(strategy, 900), space(), &mut scorer).unwrap();
            let result = search.run(None, None, &mut |_| {}).unwrap().unwrap();
            drop(search);
            assert!(result.too_long > 0 && !result.original_too_long, "{strategy:?}: {result:?}");
            // What the budget counts is what the model evaluated, and stays within it.
            assert_eq!(result.evaluations, scorer.evaluated, "{strategy:?}");
            assert!(result.evaluations <= 900, "{strategy:?}");
        }
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
}
