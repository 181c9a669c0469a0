//! Model-free scorers and helpers the search's tests share.

use super::*;

use crate::optimize::edits::DemoSource;
use serde_json::{Map, Value};

pub(super) const EXAMPLE: &str = include_str!("../../../../examples/sentiment/sentiment.prompt");

/// A model-free world: a prompt's quality is planted in its label words, layout and
/// demonstrations; example `i` is right when the quality clears its difficulty.
pub(super) struct Planted {
    pub(super) scored: usize,
    /// Validation favours the author's prompt over every edit (the gate must notice).
    pub(super) adversarial_validation: bool,
}

impl Planted {
    pub(super) fn quality(text: &str) -> f64 {
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

pub(super) fn space() -> EditSpace {
    let demos = (0..6)
        .map(|i| {
            let mut input = Map::new();
            input.insert("sentence".into(), Value::String(format!("review number {i} .")));
            DemoSource { input, label: Some(i % 2), answer: None }
        })
        .collect();
    EditSpace::builtin(demos)
}

pub(super) fn config(strategy: Strategy, budget: usize) -> SearchConfig {
    SearchConfig { strategy, budget, seed: 5, minibatch: 8, paraphrases: 0, ..SearchConfig::default() }
}

pub(super) fn run(strategy: Strategy, budget: usize, adversarial: bool) -> (SearchResult, usize) {
    let mut scorer = Planted { scored: 0, adversarial_validation: adversarial };
    let mut search = Search::new(EXAMPLE, config(strategy, budget), space(), &mut scorer).unwrap();
    let result = search.run(None, None, &mut |_| {}).unwrap().unwrap();
    drop(search);
    (result, scorer.scored)
}

/// [`Planted`] with its outcomes changed by `alter` (an example's index and its outcome)
/// and `cost` task-model evaluations an example.
pub(super) struct Altered {
    pub(super) planted: Planted,
    pub(super) cost: usize,
    pub(super) alter: fn(usize, &mut Outcome),
}

impl Altered {
    pub(super) fn new(cost: usize, alter: fn(usize, &mut Outcome)) -> Self {
        Self { planted: Planted { scored: 0, adversarial_validation: false }, cost, alter }
    }

    /// RLPrompt's gap scale: signals of ±200 at certainty.
    pub(super) fn gap_scaled() -> Self {
        Self::new(1, |_, o| o.signal *= 200.0)
    }

    /// A reward that is not a number on one example and a signal of −∞ on another (a
    /// `logprob` reward where the model gives the gold words no probability).
    pub(super) fn unbounded() -> Self {
        Self::new(1, |i, o| match i {
            0 => o.score = f64::NAN,
            1 => o.signal = f64::NEG_INFINITY,
            _ => {}
        })
    }

    /// A reward that costs three task-model evaluations an example (a generation's
    /// answer, its likelihood and more, say).
    pub(super) fn costly() -> Self {
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
pub(super) fn values(t: &candle_core::Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

/// Every weight of a snapshot, in name order.
pub(super) fn flat(snapshot: &PolicySnapshot) -> Vec<f32> {
    snapshot.params.values().flat_map(values).collect()
}

/// [`Planted`] with four validation examples fewer.
pub(super) struct Shrunk(pub(super) Planted);

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

/// A world whose prompts rank every input right but lean to the second label by 2 in
/// log-odds, whatever their words: only a calibration ([`Edit::LabelBias`]) helps.
pub(super) struct Leaning {
    pub(super) scored: usize,
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
                    too_long: false,
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

/// [`Leaning`] with validation results that carry no label probabilities: nothing can be
/// derived from them for another calibration.
pub(super) struct Opaque(pub(super) Leaning);

impl Scorer for Opaque {
    fn score(&mut self, text: &str, split: Split, indices: &[usize]) -> Result<Vec<Outcome>> {
        let mut outcomes = self.0.score(text, split, indices)?;
        if split == Split::Validation {
            for o in &mut outcomes {
                o.probabilities.clear();
            }
        }
        Ok(outcomes)
    }
    fn split_len(&self, split: Split) -> usize {
        self.0.split_len(split)
    }
    fn embed(&mut self, text: &str) -> Result<Vec<f32>> {
        self.0.embed(text)
    }
    fn feature_dim(&self) -> usize {
        self.0.feature_dim()
    }
    fn train_labels(&self) -> Vec<Option<usize>> {
        self.0.train_labels()
    }
    fn validation_labels(&self) -> Vec<Option<usize>> {
        self.0.validation_labels()
    }
}

/// Mean planted quality of every prompt a search looked at: how well its policy steers.
pub(super) fn visited_quality(search: &Search) -> f64 {
    mean(search.state.records.values().map(|r| Planted::quality(&r.text)))
}

/// The planted world plus a label ranker: offers `dreadful / superb`, which the world
/// rewards more than any built-in set, and notes where it was asked.
pub(super) struct Ranking {
    pub(super) world: Planted,
    pub(super) asked: Vec<String>,
    pub(super) refused: Vec<String>,
}

pub(super) fn fresh_ranking() -> Ranking {
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
pub(super) struct Screening {
    pub(super) ranking: Ranking,
    pub(super) group: f64,
    pub(super) posneg: f64,
    pub(super) fixed: Vec<Vec<String>>,
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

pub(super) fn copy_dir(from: &Path, to: &Path) {
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
