//! The search's [`Scorer`] over the real evaluator: prompt texts scored on examples of the
//! prompt's own splits with the task model, features from the model's mean-pooled hidden
//! states, and paraphrases of instruction sentences sampled from the model.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use reprompt_protocol::dataset::{self, Dataset, DatasetSpec, Example};
use reprompt_protocol::settings::{RewardSpec, Task};
use reprompt_protocol::{PromptDocument, parse};

use super::edits::{DemoSource, EditSpace};
use super::labels::{
    FRAGMENT_FRAME, FRAGMENT_MASS, RankedLabels, Screened, continuation_mass, cross_fitted, label_word, rank_label_sets,
};
use super::search::{Outcome, Scorer, TemplateRanking};
use super::{OptimizeError, Result};
use crate::engine::{ChatTurn, GenerateParams};
use crate::eval::evaluate::load_split;
use crate::eval::layout::answer_after;
use crate::eval::{Evaluator, ExampleResult, PreparedPrompt, Split};

/// Refuses a prompt without the training examples an optimization needs, or without a
/// validation split and too few training examples to hold one out of them ([`hold_out`]):
/// before the model loads, reading the training file only where there is no validation split.
pub fn require_splits(doc: &PromptDocument, path: &Path) -> Result<()> {
    if doc.settings.split_path(Split::Train.setting(), path).is_none() {
        return Err(no_training_examples(path));
    }
    if doc.settings.split_path(Split::Validation.setting(), path).is_none() {
        too_few_to_hold_out(path, load_split(doc, path, Split::Train).map_err(failed)?.examples.len())?;
    }
    Ok(())
}

/// The fewest training examples a prompt without `reprompt.validation` can be optimized
/// with: half of them are held out for validation ([`hold_out`]).
pub const MIN_TO_HOLD_OUT: usize = 4;

/// The version of the edits a generation prompt is offered beyond a classification's, in a
/// checkpoint's digest ([`ModelScorer::data_digest`]): 1, the stop at the answer's line end
/// ([`Edit::StopAtLineEnd`](super::edits::Edit::StopAtLineEnd)). Bumped when they change.
pub const GENERATION_EDITS: u32 = 1;

fn no_training_examples(path: &Path) -> OptimizeError {
    OptimizeError::Input(format!(
        "optimizing needs training examples: add `reprompt.dataset: <file>` to {}",
        path.display()
    ))
}

fn too_few_to_hold_out(path: &Path, n: usize) -> Result<()> {
    if n >= MIN_TO_HOLD_OUT {
        return Ok(());
    }
    Err(OptimizeError::Input(format!(
        "optimizing needs validation examples: add `reprompt.validation: <file>` to {}, or give it at least \
         {MIN_TO_HOLD_OUT} training examples to hold half of them out (it has {n})",
        path.display()
    )))
}

/// The training and validation splits optimizing reads, and whether the validation split was
/// held out of the training examples ([`hold_out`]: the prompt names no `reprompt.validation`).
/// Each file is read once.
pub fn train_and_validation(doc: &PromptDocument, path: &Path) -> Result<(Dataset, Dataset, bool)> {
    if doc.settings.split_path(Split::Train.setting(), path).is_none() {
        return Err(no_training_examples(path));
    }
    let train = load_split(doc, path, Split::Train).map_err(failed)?;
    if doc.settings.split_path(Split::Validation.setting(), path).is_some() {
        let validation = load_split(doc, path, Split::Validation).map_err(failed)?;
        return Ok((train, validation, false));
    }
    too_few_to_hold_out(path, train.examples.len())?;
    let (train, validation) = hold_out(train);
    Ok((train, validation, true))
}

/// `data` in two halves, train and validation, for a prompt that names no validation split.
/// Stratified: each label's examples (all of them, where there are no labels) in the order
/// of a hash of their input, alternately to train and to validation, train first — so every
/// class with two examples is in both halves, and which half an example lands in depends on
/// the data alone, never on `--seed` or the file's order. Each half keeps the file's order
/// and gets a hash of its own (its evaluations are cached apart from the whole file's).
pub fn hold_out(data: Dataset) -> (Dataset, Dataset) {
    let key = |e: &Example| {
        let input = serde_json::to_string(&e.input).unwrap_or_default();
        reprompt_protocol::hash::sha256_hex(input.as_bytes())
    };
    let mut order: Vec<(Option<usize>, String, usize)> =
        data.examples.iter().enumerate().map(|(i, e)| (e.label, key(e), i)).collect();
    order.sort();
    let mut to_validation = vec![false; data.examples.len()];
    let mut nth = 0;
    for (k, &(label, _, i)) in order.iter().enumerate() {
        if k > 0 && order[k - 1].0 != label {
            nth = 0;
        }
        to_validation[i] = nth % 2 == 1;
        nth += 1;
    }
    let half = |name: &str, validation: bool| Dataset {
        path: data.path.clone(),
        hash: reprompt_protocol::hash::sha256_hex(format!("{name} half of {}", data.hash).as_bytes()),
        examples: data
            .examples
            .iter()
            .zip(&to_validation)
            .filter(|(_, v)| **v == validation)
            .map(|(e, _)| e.clone())
            .collect(),
    };
    (half("train", false), half("validation", true))
}

/// The prompt's label words where its data names labels by them (read by ids alone, some
/// split would give other labels, or none): what a relabelled prompt keeps as
/// `reprompt.data_labels` ([`EditSpace::data_labels`]). `None` where every split names its
/// labels by id, or the prompt names the data's labels itself.
pub fn data_label_names(doc: &PromptDocument, path: &Path) -> Option<Vec<Vec<String>>> {
    let settings = &doc.settings;
    if settings.data_labels.is_some() || settings.labels.is_none() || settings.task_or_default() != Task::Classify {
        return None;
    }
    let spec = DatasetSpec::for_document(doc);
    let labels = |data: Dataset| data.examples.into_iter().map(|e| e.label).collect::<Vec<_>>();
    let named = settings.splits().filter_map(|(name, _)| settings.split_path(name, path)).any(|file| {
        match (dataset::load(&file, &spec), dataset::load(&file, &spec.by_ids())) {
            (Ok(named), Ok(by_ids)) => labels(named) != labels(by_ids),
            (Ok(_), Err(_)) => true,
            // Unreadable either way: its problems are reported where it is loaded.
            (Err(_), _) => false,
        }
    });
    named.then(|| settings.label_words.clone())
}

/// Label words ranked for a prompt ([`ModelScorer::label_ranking`]).
#[derive(Clone, Debug, PartialEq)]
pub struct LabelRanking {
    pub sets: Vec<RankedLabels>,
    /// The prompt's answer starts a line or a chat turn, so the words were ranked after an
    /// added `Answer:` cue.
    pub cue_added: bool,
    /// The ranking's labelling and each of the fixed sets asked for, judged out of sample
    /// ([`cross_fitted`]: those that could be); `None` where no fixed sets were asked for.
    pub screened: Option<Vec<Screened>>,
    /// Training examples left out: the prompt with them does not fit the model's context.
    pub left_out: usize,
    /// The model's context, tokens.
    pub context: usize,
}

/// Scores prompt variants of the file at `path` with the task model.
pub struct ModelScorer<'e> {
    evaluator: &'e Evaluator,
    /// Where the prompt lives: variants resolve partials and datasets from here.
    path: PathBuf,
    train: Dataset,
    validation: Dataset,
    prepared: HashMap<String, PreparedPrompt>,
    dim: usize,
    /// Sampling calls made for paraphrases (not example evaluations).
    pub paraphrase_calls: usize,
    /// The task model's tokens as text (read when labels are first ranked).
    vocabulary: Vec<String>,
    /// Whether the validation split is half of the training file ([`hold_out`]).
    held_out: bool,
}

/// A validation split held out of the training examples ([`hold_out`]), as a report shows it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct HeldOut {
    /// The training file both halves come from.
    pub dataset: PathBuf,
    /// Examples left to train (the search, its demonstrations and calibrations).
    pub train: usize,
    /// Examples held out for validation.
    pub validation: usize,
}

/// The search's view of evaluated examples.
fn outcomes(task: Task, results: Vec<ExampleResult>) -> Vec<Outcome> {
    results
        .into_iter()
        .map(|r| {
            // RLPrompt's gap reward (already ×200 / ×180) for classification.
            let signal = match (task, r.components.get("gap")) {
                (Task::Classify, Some(&gap)) => gap,
                _ => r.score,
            };
            Outcome {
                score: r.score,
                signal,
                probabilities: r.label_probabilities.unwrap_or_default(),
                too_long: false,
            }
        })
        .collect()
}

/// The lowest score `reward` gives an example: 0 for rewards of 0 to 1 (accuracy, matches),
/// RLPrompt's −180 for the gap; where a part has no floor (a likelihood, a length, a
/// perplexity weighed down) the lowest score a search keeps.
pub fn worst_score(reward: &RewardSpec) -> f64 {
    let mut floor = 0.0;
    for (name, weight) in &reward.components {
        let range = match name.as_str() {
            "accuracy" | "exact_match" | "f1" | "numeric_match" | "contains" | "regex" | "json_schema"
            | "consistency" => (0.0, 1.0),
            "perplexity_f1" => (0.0, 2.0),
            "gap" => (-180.0, 200.0),
            "perplexity" => (1.0, f64::INFINITY),
            _ => (f64::NEG_INFINITY, f64::INFINITY), // `logprob`, `length`
        };
        let worst = weight * if *weight >= 0.0 { range.0 } else { range.1 };
        if !worst.is_finite() {
            return -super::search::SCORE_BOUND;
        }
        floor += worst;
    }
    floor
}

fn failed(e: impl std::fmt::Display) -> OptimizeError {
    OptimizeError::Input(e.to_string())
}

impl<'e> ModelScorer<'e> {
    /// Loads the train and validation splits of `doc` (read from `path`; without a validation
    /// split, half of the training examples held out as one: [`train_and_validation`]).
    pub fn new(evaluator: &'e Evaluator, doc: &PromptDocument, path: &Path) -> Result<Self> {
        let (train, validation, held_out) = train_and_validation(doc, path)?;
        let dim = evaluator.engine.embed(vec!["reprompt".into()]).map_err(failed)?.first().map_or(0, Vec::len);
        let mut scorer = Self::with_splits(evaluator, path, train, validation, dim);
        scorer.held_out = held_out;
        Ok(scorer)
    }

    /// Where the prompt names no validation split: the training and validation examples the
    /// training file was split into ([`hold_out`]).
    pub fn held_out(&self) -> Option<HeldOut> {
        self.held_out.then(|| HeldOut {
            dataset: self.train.path.clone(),
            train: self.train.examples.len(),
            validation: self.validation.examples.len(),
        })
    }

    fn with_splits(evaluator: &'e Evaluator, path: &Path, train: Dataset, validation: Dataset, dim: usize) -> Self {
        Self {
            evaluator,
            path: path.to_path_buf(),
            train,
            validation,
            prepared: HashMap::new(),
            dim,
            paraphrase_calls: 0,
            vocabulary: Vec::new(),
            held_out: false,
        }
    }

    /// A scorer of the training split only, for ranking label words: for a prompt without
    /// `reprompt.validation`, the training half optimizing searches on ([`hold_out`]; fewer
    /// examples than that needs, all of them), so words chosen here never saw the examples a
    /// run validates on (the held-out half is its validation split, else it has none).
    pub fn training_only(evaluator: &'e Evaluator, doc: &PromptDocument, path: &Path) -> Result<Self> {
        if doc.settings.split_path(Split::Train.setting(), path).is_none() {
            return Err(OptimizeError::Input(format!(
                "ranking label words needs training examples: add `reprompt.dataset: <file>` to {}",
                path.display()
            )));
        }
        let mut train = load_split(doc, path, Split::Train).map_err(failed)?;
        let held_out = doc.settings.split_path(Split::Validation.setting(), path).is_none()
            && train.examples.len() >= MIN_TO_HOLD_OUT;
        let mut validation = Dataset { path: PathBuf::new(), hash: String::new(), examples: Vec::new() };
        if held_out {
            (train, validation) = hold_out(train);
        }
        let mut scorer = Self::with_splits(evaluator, path, train, validation, 0);
        scorer.held_out = held_out;
        Ok(scorer)
    }

    /// [`SearchConfig::data`](super::search::SearchConfig::data) for these splits, this model
    /// and device, the partials `original` includes, and the edit `space`'s built-in banks and
    /// the data's label names a relabelled prompt keeps ([`data_label_names`]) — its
    /// demonstrations are the training split, hashed already: what a checkpoint's scores and
    /// prompts were made with, so a run resumes only where they still hold.
    pub fn data_digest(&mut self, original: &str, space: &EditSpace) -> Result<String> {
        let key = self.prepare(original)?;
        let space = EditSpace { demos: Vec::new(), ..space.clone() };
        let banks = serde_json::to_string(&space).unwrap_or_default();
        let mut scoring = serde_json::json!({
            "model": self.evaluator.model_id,
            "device": format!("{:?}", self.evaluator.engine.device),
            "rendering": self.prepared[&key].render_hash,
            "edit banks": reprompt_protocol::hash::sha256_hex(banks.as_bytes()),
        });
        if let Some(version) = self.prepared[&key].sampling_version() {
            scoring["sampling"] = serde_json::json!(version);
        }
        // A generation prompt's edits were extended after classification's last changed
        // (the stop at the answer's line end): its checkpoints from before are not resumed.
        if self.prepared[&key].task == Task::Generate {
            scoring["generation edits"] = serde_json::json!(GENERATION_EDITS);
        }
        Ok(super::search::data_digest(&self.train.hash, &self.validation.hash, &scoring.to_string()))
    }

    /// The training examples as demonstration sources.
    pub fn demo_sources(&self) -> Vec<DemoSource> {
        self.train
            .examples
            .iter()
            .map(|e| DemoSource { input: e.input.clone(), label: e.label, answer: e.answer.clone() })
            .collect()
    }

    /// Prepares a prompt text for the evaluator (kept for the texts scored recently); returns
    /// its key in `self.prepared`.
    fn prepare(&mut self, text: &str) -> Result<String> {
        let key = reprompt_protocol::hash::sha256_hex(text.as_bytes());
        if !self.prepared.contains_key(&key) {
            if self.prepared.len() >= 64 {
                self.prepared.clear();
            }
            let doc = parse(text, Some(&self.path));
            let prepared = PreparedPrompt::new(&doc, &self.path).map_err(failed)?;
            self.prepared.insert(key.clone(), prepared);
        }
        Ok(key)
    }

    /// Label-word sets for the classification prompt `text` ranked by the task model on the
    /// training split, best first, with their training accuracy ([`rank_label_sets`]), and
    /// whether an `Answer:` cue had to be added for the ranking (then the accuracies are of the
    /// prompt with that cue, not as written); `None` for a prompt that is not a
    /// classification with labels, for a training split without a gold label on every
    /// example, without an example of every class or with more classes than the ranking
    /// takes ([`per_class`](super::labels::per_class)) — refused before the model runs — or,
    /// unless `add_cue`, for one whose answer starts a line or a chat turn.
    /// With `fixed` sets (one word per label each), the ranking's labelling and those sets are
    /// also compared out of sample on the same distributions, at no further cost.
    pub fn label_ranking(
        &mut self,
        text: &str,
        keep: usize,
        add_cue: bool,
        fixed: &[Vec<String>],
    ) -> Result<Option<LabelRanking>> {
        self.load_vocabulary()?;
        let key = self.prepare(text)?;
        let prepared = &self.prepared[&key];
        let gold: Option<Vec<usize>> = self.train.examples.iter().map(|e| e.label).collect();
        let (Task::Classify, Some(gold)) = (prepared.task, gold) else { return Ok(None) };
        // What the ranking would refuse after the model ran (a class without a training
        // example, too many classes) is refused before it runs, so it costs nothing.
        let classes = prepared.labels.len();
        if classes < 2
            || gold.is_empty()
            || super::labels::per_class(classes).is_none()
            || (0..classes).any(|c| !gold.contains(&c))
        {
            return Ok(None);
        }
        let engine = &self.evaluator.engine;
        let mut contexts = self.evaluator.contexts(prepared, &self.train.examples).map_err(failed)?;
        // Words are ranked where the answer follows a word (`… Sentiment: great`): at the start
        // of a line or a chat turn the model's first token is rarely a whole word (`The`,
        // fragments), so an answer cue is added there for the ranking.
        let cue_added = contexts.iter().any(|c| answer_after(c, "x") == "x");
        if cue_added && !add_cue {
            return Ok(None);
        }
        // Every context gets the cue when one needs it, so the ranking reads one distribution.
        if cue_added {
            for context in &mut contexts {
                if answer_after(context, "x") != "x" {
                    context.push('\n');
                }
                context.push_str("Answer:");
            }
        }
        // A training example too long for the model's context with this prompt takes no part.
        let texts = contexts.clone();
        let (fits, context): (Vec<bool>, usize) = engine
            .run(move |rt| {
                let limit = rt.model.config.context_length;
                let fits = texts
                    .iter()
                    .map(|c| rt.tokenize(c).map(|ids| ids.len() <= limit))
                    .collect::<std::result::Result<_, _>>()?;
                Ok((fits, limit))
            })
            .map_err(failed)?;
        let left_out = fits.iter().filter(|f| !**f).count();
        let (contexts, gold): (Vec<String>, Vec<usize>) =
            contexts.into_iter().zip(gold).zip(fits).filter(|(_, fits)| *fits).map(|(pair, _)| pair).unzip();
        if (0..classes).any(|c| !gold.contains(&c)) {
            return Ok(None);
        }
        let columns = ranking_columns(&self.vocabulary, fixed);
        let mut log_probs = Vec::with_capacity(contexts.len());
        for chunk in contexts.chunks(32) {
            for row in engine.next_token_logprobs(chunk.to_vec()).map_err(failed)? {
                log_probs.push(columns.iter().map(|&id| row.get(id).copied().unwrap_or(f32::NEG_INFINITY)).collect());
            }
        }
        let vocabulary: Vec<String> = columns.iter().map(|&id| self.vocabulary[id].clone()).collect();
        // Word fragments (`apolog`, `congrat`) are tokens too; each word of the sets is
        // checked once, and sets are ranked again without the fragments found.
        let mut fragments: Vec<String> = Vec::new();
        let mut checked: BTreeSet<String> = BTreeSet::new();
        loop {
            let sets = rank_label_sets(&log_probs, &gold, classes, &vocabulary, true, keep, &fragments);
            let new: BTreeSet<String> =
                sets.iter().flat_map(|s| s.words.iter()).filter(|w| !checked.contains(*w)).cloned().collect();
            if new.is_empty() {
                let screened = (!fixed.is_empty())
                    .then(|| cross_fitted(&log_probs, &gold, classes, &vocabulary, true, &fragments, fixed));
                return Ok(Some(LabelRanking { sets, cue_added, screened, left_out, context }));
            }
            for (word, is) in new.iter().zip(self.fragments(&new)?) {
                if is {
                    fragments.push(word.clone());
                }
            }
            checked.extend(new);
        }
    }

    /// Reads the task model's tokens as text, once.
    fn load_vocabulary(&mut self) -> Result<()> {
        if self.vocabulary.is_empty() {
            self.vocabulary = self.evaluator.engine.vocabulary().map_err(failed)?;
        }
        Ok(())
    }

    /// Which of `words` are fragments of longer words to the task model: after
    /// [`FRAGMENT_FRAME`] and the word, its next token most likely goes on with the word
    /// ([`continuation_mass`] above [`FRAGMENT_MASS`]).
    pub fn fragments<'w>(&mut self, words: impl IntoIterator<Item = &'w String>) -> Result<Vec<bool>> {
        self.load_vocabulary()?;
        let frames: Vec<String> = words.into_iter().map(|w| format!("{FRAGMENT_FRAME} {w}")).collect();
        let mut out = Vec::with_capacity(frames.len());
        for chunk in frames.chunks(32) {
            for row in self.evaluator.engine.next_token_logprobs(chunk.to_vec()).map_err(failed)? {
                out.push(continuation_mass(&row, &self.vocabulary) > FRAGMENT_MASS);
            }
        }
        Ok(out)
    }

    /// Scores the examples the prompt at `key` fits the model's context with, answers included
    /// ([`Evaluator::score_fitting`]); the others score the lowest the reward gives
    /// ([`worst_score`]) with the worst signal, marked [`Outcome::too_long`]: an edit can make a
    /// prompt too long (a demonstration added to long inputs), and it must lose, not end the
    /// run (a resumed run would meet it again).
    fn score_fitting(&mut self, key: &str, examples: &[dataset::Example]) -> Result<Vec<Outcome>> {
        let prepared = &self.prepared[key];
        let floor = worst_score(&prepared.reward);
        let wrong = |e: &dataset::Example| {
            Outcome {
                score: floor,
                // RLPrompt's gap with the gold label at 0 and another at 1; the score for generation.
                signal: if prepared.task == Task::Classify && e.label.is_some() { -180.0 } else { floor },
                probabilities: Vec::new(),
                too_long: true,
            }
            .finite()
        };
        let (scored, spent) = self.evaluator.score_fitting(prepared, examples).map_err(failed)?;
        // The search paid for this in advance (and refunds the examples left out); spending
        // more would break its budget.
        let fitting = scored.iter().filter(|r| r.is_some()).count();
        if spent != fitting * prepared.evaluations_per_example() {
            return Err(OptimizeError::Input(format!(
                "scoring {fitting} examples spent {spent} evaluations, not the {} per example the budget counts",
                prepared.evaluations_per_example()
            )));
        }
        Ok(examples
            .iter()
            .zip(scored)
            .map(|(e, r)| r.and_then(|r| outcomes(prepared.task, vec![r]).pop()).unwrap_or_else(|| wrong(e)))
            .collect())
    }

    fn split(&self, split: Split) -> &Dataset {
        match split {
            Split::Validation => &self.validation,
            _ => &self.train,
        }
    }
}

impl Scorer for ModelScorer<'_> {
    fn score(&mut self, text: &str, split: Split, indices: &[usize]) -> Result<Vec<Outcome>> {
        let key = self.prepare(text)?;
        let data = self.split(split);
        let examples: Vec<_> = indices.iter().map(|&i| data.examples[i].clone()).collect();
        self.score_fitting(&key, &examples)
    }

    fn split_len(&self, split: Split) -> usize {
        self.split(split).examples.len()
    }

    fn evaluations_per_example(&mut self, text: &str) -> Result<usize> {
        let key = self.prepare(text)?;
        Ok(self.prepared[&key].evaluations_per_example())
    }

    fn train_labels(&self) -> Vec<Option<usize>> {
        self.train.examples.iter().map(|e| e.label).collect()
    }

    fn validation_labels(&self) -> Vec<Option<usize>> {
        self.validation.examples.iter().map(|e| e.label).collect()
    }

    fn embed(&mut self, text: &str) -> Result<Vec<f32>> {
        let mut out = self.evaluator.engine.embed(vec![text.to_string()]).map_err(failed)?;
        out.pop().ok_or_else(|| failed("no embedding"))
    }

    fn feature_dim(&self) -> usize {
        self.dim
    }

    fn rank_labels(&mut self, text: &str, keep: usize) -> Result<Option<Vec<Vec<String>>>> {
        // Only where the prompt itself puts the answer after a word: words ranked after an
        // added cue were noise on the development splits (see `label_ranking`).
        Ok(self.label_ranking(text, keep, false, &[])?.map(|r| r.sets.into_iter().map(|s| s.words).collect()))
    }

    fn rank_template(&mut self, text: &str, keep: usize, fixed: &[Vec<String>]) -> Result<Option<TemplateRanking>> {
        Ok(self
            .label_ranking(text, keep, false, fixed)?
            .map(|r| (r.sets.into_iter().map(|s| s.words).collect(), r.screened)))
    }

    fn paraphrase(&mut self, sentence: &str, seed: u64) -> Result<Vec<String>> {
        let request = format!(
            "Rewrite the following instruction in different words. Reply with the rewritten instruction only.\n\n{sentence}"
        );
        let context = self.evaluator.engine.chat_prompt(vec![ChatTurn::new("user", &request)], true).map_err(failed)?;
        let mut out: Vec<String> = Vec::new();
        for k in 0..3 {
            let params = GenerateParams {
                max_tokens: 48,
                temperature: 0.7,
                top_p: 0.95,
                seed: seed.wrapping_add(k),
                stop: vec!["\n".into()],
            };
            self.paraphrase_calls += 1;
            let generated = self.evaluator.engine.generate(vec![context.clone()], params).map_err(failed)?;
            let Some(g) = generated.into_iter().next() else { continue };
            if let Some(rewrite) = clean_paraphrase(sentence, &g.text)
                && !out.contains(&rewrite)
            {
                out.push(rewrite);
            }
        }
        Ok(out)
    }
}

/// A usable rewrite: one sentence of plain text, not the original, of a similar length.
pub fn clean_paraphrase(original: &str, generated: &str) -> Option<String> {
    let text = generated.trim().trim_matches(|c| c == '"' || c == '\'' || c == '*').trim();
    let text = text.strip_prefix("Rewritten instruction:").map_or(text, str::trim);
    let ends = text.ends_with(['.', '?', '!']);
    let sentences = text.matches(". ").count() + text.matches("? ").count() + text.matches("! ").count();
    let len_ok = text.len() >= 8 && text.len() <= original.len() * 2 + 20;
    let plain = !text.contains("{{") && !text.contains("}}") && !text.contains(['\n', '\r', '`', '#']);
    let new = !text.eq_ignore_ascii_case(original.trim());
    // A rewrite keeps some of the original's words; the small model otherwise drifts off topic.
    let words = |s: &str| -> std::collections::BTreeSet<String> {
        s.split(|c: char| !c.is_alphanumeric()).filter(|w| w.len() > 2).map(str::to_lowercase).collect()
    };
    let (a, b) = (words(original), words(text));
    let shared = a.intersection(&b).count() as f64 / a.union(&b).count().max(1) as f64;
    (ends && sentences == 0 && len_ok && plain && new && shared >= 0.2).then(|| text.to_string())
}

/// The token ids a label ranking reads the next-token distributions at: the tokens that are
/// words ([`label_word`]; the whole distribution of every example would not fit in memory for
/// large splits), and the words of the built-in `fixed` sets, though too short to be ranked
/// (`no / yes`), so that those sets are judged too.
fn ranking_columns(vocabulary: &[String], fixed: &[Vec<String>]) -> Vec<usize> {
    let fixed_words: BTreeSet<&str> = fixed.iter().flatten().map(String::as_str).collect();
    (0..vocabulary.len())
        .filter(|&id| {
            let token = &vocabulary[id];
            label_word(token, true).is_some() || token.strip_prefix(' ').is_some_and(|w| fixed_words.contains(w))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_out_validation_half_is_stratified_disjoint_and_fixed_by_the_data() {
        let example = |line: usize, text: &str, label: Option<usize>| Example {
            line,
            input: serde_json::json!({ "sentence": text }).as_object().unwrap().clone(),
            label,
            answer: None,
        };
        // Seven of label 0, three of label 1, two of label 2, one of label 3.
        let labels = [0, 0, 1, 0, 2, 0, 1, 0, 0, 2, 1, 0, 3];
        let examples: Vec<Example> =
            labels.iter().enumerate().map(|(i, &l)| example(i + 2, &format!("sentence {i}"), Some(l))).collect();
        let data = Dataset { path: PathBuf::from("train.tsv"), hash: "h".into(), examples: examples.clone() };
        let (train, validation) = hold_out(data.clone());
        let count = |d: &Dataset, label: usize| d.examples.iter().filter(|e| e.label == Some(label)).count();
        // Per label: half to each, the odd one to train; a label's only example stays in train.
        assert_eq!([0, 1, 2, 3].map(|l| count(&train, l)), [4, 2, 1, 1]);
        assert_eq!([0, 1, 2, 3].map(|l| count(&validation, l)), [3, 1, 1, 0]);
        // Disjoint, together every example once, each half in the file's order.
        let mut lines: Vec<usize> = train.examples.iter().chain(&validation.examples).map(|e| e.line).collect();
        assert!(train.examples.windows(2).all(|w| w[0].line < w[1].line));
        lines.sort();
        assert_eq!(lines, (2..2 + labels.len()).collect::<Vec<_>>());
        // Hashed apart from the file and from each other (evaluations are cached by them).
        assert!(train.hash != validation.hash && train.hash != data.hash && validation.hash != data.hash);
        // The file's order does not decide the halves: reversed, the same examples go each way.
        let reversed = Dataset { examples: examples.iter().rev().cloned().collect(), ..data.clone() };
        let (train_r, validation_r) = hold_out(reversed);
        let texts = |d: &Dataset| {
            let mut t: Vec<String> = d.examples.iter().map(|e| e.input["sentence"].to_string()).collect();
            t.sort();
            t
        };
        assert_eq!((texts(&train_r), texts(&validation_r)), (texts(&train), texts(&validation)));
        // Generation examples (no labels) split the same way, as one group.
        let answers = Dataset { examples: (0..5).map(|i| example(i + 2, &format!("q{i}"), None)).collect(), ..data };
        let (train, validation) = hold_out(answers);
        assert_eq!((train.examples.len(), validation.examples.len()), (3, 2));
    }

    #[test]
    fn a_ranking_reads_word_tokens_and_the_built_in_sets_short_words() {
        let vocabulary: Vec<String> = [" no", " yes", " great", "ing", " ok", " the", "no"].map(String::from).to_vec();
        assert_eq!(ranking_columns(&vocabulary, &[]), vec![1, 2]);
        let fixed = vec![vec!["no".to_string(), "yes".to_string()], vec!["bad".to_string(), "ok".to_string()]];
        // The short words of the sets join, spaced only; fragments and function words stay out.
        assert_eq!(ranking_columns(&vocabulary, &fixed), vec![0, 1, 2, 4]);
    }

    #[test]
    fn an_example_a_prompt_does_not_fit_scores_below_any_answer() {
        let reward =
            |parts: &[(&str, f64)]| RewardSpec { components: parts.iter().map(|(n, w)| (n.to_string(), *w)).collect() };
        assert_eq!(worst_score(&reward(&[("accuracy", 1.0)])), 0.0);
        assert_eq!(worst_score(&reward(&[("gap", 1.0)])), -180.0);
        assert_eq!(worst_score(&reward(&[("f1", 1.0), ("exact_match", -0.5)])), -0.5);
        assert_eq!(worst_score(&reward(&[("perplexity_f1", 2.0)])), 0.0);
        // A part without a floor: the lowest score a search keeps.
        let lowest = -crate::optimize::search::SCORE_BOUND;
        assert_eq!(worst_score(&reward(&[("accuracy", 1.0), ("length", -0.001)])), lowest);
        assert_eq!(worst_score(&reward(&[("logprob", 1.0)])), lowest);
        assert_eq!(worst_score(&reward(&[("perplexity", -1.0)])), lowest);
        assert_eq!(worst_score(&reward(&[("perplexity", 1.0)])), 1.0);
    }

    #[test]
    fn paraphrases_are_filtered_to_single_plain_sentences() {
        let original = "Answer with one word.";
        assert_eq!(
            clean_paraphrase(original, " \"Answer using one single word.\" "),
            Some("Answer using one single word.".into())
        );
        assert_eq!(clean_paraphrase(original, "Answer with one word."), None);
        assert_eq!(clean_paraphrase(original, "Use {{sentence}} here."), None);
        assert_eq!(clean_paraphrase(original, "One word. Then stop."), None);
        assert_eq!(clean_paraphrase(original, "ok"), None);
        assert_eq!(clean_paraphrase(original, "no ending punctuation"), None);
        assert_eq!(clean_paraphrase(original, "Amused, miserially warm; plumb, this is bitter."), None, "off topic");
    }

    #[test]
    fn the_data_needs_its_label_names_kept_only_where_it_reads_labels_by_them() {
        let dir = std::env::temp_dir().join(format!("reprompt-data-labels-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let prompt = dir.join("s.prompt");
        let text = |labels: &str, test: &str| {
            format!(
                "---\nreprompt.labels: {labels}\nreprompt.dataset: train.tsv\nreprompt.validation: dev.tsv\n\
                 reprompt.test: {test}\n---\nReview: {{{{sentence}}}}\nSentiment:\n"
            )
        };
        let names = |doc: &str| data_label_names(&parse(doc, Some(&prompt)), &prompt);
        let write =
            |name: &str, rows: &str| std::fs::write(dir.join(name), format!("sentence\tlabel\n{rows}")).unwrap();
        write("train.tsv", "dull .\t0\nfine .\t1\n");
        write("dev.tsv", "bad .\t0\ngood .\t1\n");
        write("ids.tsv", "meh .\t1\n");
        write("words.tsv", "meh .\tGreat\n");
        write("numbers.tsv", "meh .\t1\n");
        // By id everywhere: nothing to keep.
        assert_eq!(names(&text("[terrible, great]", "ids.tsv")), None);
        // One split by word (even only the test split): the label words, groups and all.
        assert_eq!(
            names(&text("[terrible, great]", "words.tsv")),
            Some(vec![vec!["terrible".into()], vec!["great".into()]])
        );
        assert_eq!(
            names(&text("[[terrible, awful], great]", "words.tsv")),
            Some(vec![vec!["terrible".to_string(), "awful".into()], vec!["great".into()]])
        );
        // Numeric label words that read other ids than the ids would: by word.
        assert_eq!(names(&text("[\"1\", \"2\"]", "numbers.tsv")), Some(vec![vec!["1".into()], vec!["2".into()]]));
        // Named by the prompt itself already: nothing to add.
        let pinned = text("[bad, good]", "words.tsv")
            .replace("---\nReview", "reprompt.data_labels: [terrible, great]\n---\nReview");
        assert_eq!(names(&pinned), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
