//! An evaluation: (prompt, model, dataset, reward, split) → per-example results and an
//! aggregate with a 95% interval. Rendering happens here; the engine only sees text.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use reprompt_protocol::check::DirEnvironment;
use reprompt_protocol::dataset::{self, Dataset, DatasetSpec, Example};
use reprompt_protocol::hash::content_hash;
use reprompt_protocol::render::{CompiledPrompt, DataArgument};
use reprompt_protocol::settings::{Format, RewardSpec, Task};
use reprompt_protocol::{PromptDocument, Severity};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::cache::EvalCache;
use super::layout::{answer_after, model_text};
use super::rewards;
use super::stats::{self, Interval};
use crate::engine::{Engine, EngineError, GenerateParams, store, stream_seed};

/// Bumped when scoring changes, so cached evaluations of older code are not reused.
pub const EVAL_VERSION: u32 = 4;

#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error("{path}: the prompt has errors; run `reprompt check {path}`:\n{messages}")]
    Prompt { path: String, messages: String },
    #[error("the prompt names no `reprompt.{0}` dataset for this split")]
    NoSplit(&'static str),
    #[error("dataset problems:\n{}", .0.iter().map(|i| format!("  {i}")).collect::<Vec<_>>().join("\n"))]
    Dataset(Vec<dataset::DatasetIssue>),
    #[error("{0}")]
    Render(#[from] reprompt_protocol::render::RenderFailure),
    #[error(transparent)]
    Engine(#[from] crate::engine::EngineError),
    #[error("{0}")]
    Invalid(String),
    /// A prompt too long for the model's context with the example the message names.
    #[error("{0}")]
    TooLong(String),
}

pub type Result<T, E = EvalError> = std::result::Result<T, E>;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Split {
    Train,
    Validation,
    Test,
}

impl Split {
    pub fn setting(self) -> &'static str {
        match self {
            Split::Train => "dataset",
            Split::Validation => "validation",
            Split::Test => "test",
        }
    }
}

/// One example's outcome.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ExampleResult {
    pub line: usize,
    pub input: Map<String, Value>,
    pub gold: String,
    pub prediction: String,
    /// The weighted reward of this example.
    pub score: f64,
    pub components: BTreeMap<String, f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label_probabilities: Option<Vec<f64>>,
    /// Whether the primary metric was fully met (accuracy, exact or numeric match).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correct: Option<bool>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ComponentSummary {
    pub name: String,
    pub weight: f64,
    pub interval: Interval,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Evaluation {
    pub key: String,
    pub prompt_hash: String,
    pub model: String,
    pub dataset: PathBuf,
    pub dataset_hash: String,
    pub split: Split,
    pub reward: RewardSpec,
    pub n: usize,
    /// The weighted reward with its 95% interval (Wilson for a single 0/1 metric, else
    /// bootstrap).
    pub aggregate: Interval,
    pub interval_method: String,
    pub components: Vec<ComponentSummary>,
    pub examples: Vec<ExampleResult>,
    /// Task-model example evaluations this run spent (0 when served from the cache).
    pub evaluations: usize,
    pub seconds: f64,
    #[serde(default)]
    pub cached: bool,
}

impl Evaluation {
    pub fn failures(&self) -> impl Iterator<Item = &ExampleResult> {
        self.examples.iter().filter(|e| e.correct == Some(false))
    }
}

/// A prompt ready to score examples: compiled, with its task, labels, reward and format.
pub struct PreparedPrompt {
    pub compiled: CompiledPrompt,
    pub task: Task,
    pub labels: Vec<String>,
    /// Every answer word of each label, the label itself first (`Settings::label_words`).
    pub label_words: Vec<Vec<String>>,
    /// Offsets added to each label's log-probability before the answer is chosen
    /// (`reprompt.label_bias`); they change the choice, accuracy and gap, not `logprob`.
    pub label_bias: Option<Vec<f64>>,
    pub reward: RewardSpec,
    pub format: Format,
    pub generate: GenerateParams,
    pub regex: Option<regex::Regex>,
    pub output_schema: Option<jsonschema::Validator>,
    /// The prompt's identity in history (line endings normalised).
    pub prompt_hash: String,
    /// What rendering depends on: the exact text and every partial it includes.
    pub render_hash: String,
}

/// SHA-256 over the prompt's exact text and the sources of the partials it includes
/// (recursively), so editing a partial invalidates cached evaluations.
fn render_hash(doc: &PromptDocument, env: &DirEnvironment) -> String {
    use reprompt_protocol::render::Environment as _;
    let mut material = doc.source.clone();
    let mut pending: Vec<String> = doc.scan.partials.iter().map(|p| p.name.clone()).collect();
    let mut seen = std::collections::BTreeSet::new();
    while let Some(name) = pending.pop() {
        if !seen.insert(name.clone()) {
            continue;
        }
        let source = env.partial(&name).unwrap_or_default();
        material.push_str(&format!("\u{0}{name}\u{0}{source}"));
        pending.extend(reprompt_protocol::template::scan(&source).partials.into_iter().map(|p| p.name));
    }
    reprompt_protocol::hash::sha256_hex(material.as_bytes())
}

impl PreparedPrompt {
    /// Compiles `doc` (read from `path`) for evaluation; refuses a prompt with errors.
    pub fn new(doc: &PromptDocument, path: &Path) -> Result<Self> {
        let errors: Vec<String> = reprompt_protocol::check::check_document(doc, path)
            .into_iter()
            .filter(|d| d.severity == Severity::Error)
            .map(|d| format!("  error[{}]: {}", d.code.as_str(), d.message))
            .collect();
        if !errors.is_empty() {
            return Err(EvalError::Prompt { path: path.display().to_string(), messages: errors.join("\n") });
        }
        let env = DirEnvironment::for_file(path);
        let compiled = CompiledPrompt::new(doc, &env, &Map::new())?;
        let settings = &doc.settings;
        let task = settings.task_or_default();
        let reward = settings.reward.as_ref().map(|r| r.value.clone()).unwrap_or_else(|| {
            RewardSpec::single(match task {
                Task::Classify => "accuracy",
                Task::Generate => "exact_match",
            })
        });
        let config = compiled.metadata().get("config").cloned().unwrap_or(Value::Null);
        let generate = GenerateParams {
            max_tokens: config.get("maxOutputTokens").and_then(Value::as_u64).unwrap_or(256) as usize,
            temperature: config.get("temperature").and_then(Value::as_f64).unwrap_or(0.0) as f32,
            top_p: config.get("topP").and_then(Value::as_f64).unwrap_or(1.0) as f32,
            seed: 0,
            stop: config
                .get("stopSequences")
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(|s| s.as_str().map(str::to_string)).collect())
                .unwrap_or_default(),
        };
        let regex = match &settings.regex {
            Some(p) => {
                Some(regex::Regex::new(&p.value).map_err(|e| EvalError::Invalid(format!("`reprompt.regex`: {e}")))?)
            }
            None => None,
        };
        if reward.components.iter().any(|(n, _)| n == "regex") && regex.is_none() {
            return Err(EvalError::Invalid("the `regex` reward needs `reprompt.regex: <pattern>`".into()));
        }
        let output_schema = match compiled.metadata().get("output").and_then(|o| o.get("schema")) {
            Some(schema) => Some(
                jsonschema::validator_for(schema).map_err(|e| EvalError::Invalid(format!("`output.schema`: {e}")))?,
            ),
            None => None,
        };
        if reward.components.iter().any(|(n, _)| n == "json_schema") && output_schema.is_none() {
            return Err(EvalError::Invalid("the `json_schema` reward needs an `output.schema`".into()));
        }
        Ok(Self {
            compiled,
            task,
            labels: settings.labels.as_ref().map(|l| l.value.clone()).unwrap_or_default(),
            label_words: settings.label_words.clone(),
            label_bias: settings.label_bias.as_ref().map(|b| b.value.clone()),
            reward,
            format: settings.format,
            generate,
            regex,
            output_schema,
            prompt_hash: content_hash(&doc.source),
            render_hash: render_hash(doc, &env),
        })
    }

    fn needs(&self, name: &str) -> bool {
        self.reward.components.iter().any(|(n, _)| n == name)
    }

    /// Every answer word of every label, label by label (the label alone where the prompt
    /// names no other words).
    fn answer_words(&self) -> Vec<Vec<String>> {
        if self.label_words.len() == self.labels.len() {
            self.label_words.clone()
        } else {
            self.labels.iter().map(|l| vec![l.clone()]).collect()
        }
    }

    /// The version of how `consistency` reads its samples ([`CONSISTENCY_VERSION`]) when the
    /// reward has it: part of what its cached results and a checkpoint's scores are keyed by,
    /// so changing it leaves every other reward's cache alone.
    pub fn sampling_version(&self) -> Option<u32> {
        self.needs("consistency").then_some(CONSISTENCY_VERSION)
    }

    /// Task-model evaluations one example costs with this prompt's reward: the answer itself,
    /// one more for a generation's likelihood (`logprob`, `perplexity`, `perplexity_f1`) and
    /// [`CONSISTENCY_SAMPLES`] for `consistency`'s samples. What [`Evaluator::score_examples`]
    /// reports spending, example by example.
    pub fn evaluations_per_example(&self) -> usize {
        1 + usize::from(self.scores_likelihood()) + if self.needs("consistency") { CONSISTENCY_SAMPLES } else { 0 }
    }

    /// Whether a generation's reward reads the gold answer's likelihood (`logprob`,
    /// `perplexity`, `perplexity_f1`): one more pass over the prompt and that answer.
    fn scores_likelihood(&self) -> bool {
        self.task == Task::Generate && ["logprob", "perplexity", "perplexity_f1"].iter().any(|n| self.needs(n))
    }
}

/// Samples drawn per example for the `consistency` reward.
pub const CONSISTENCY_SAMPLES: usize = 5;

/// Bumped when `consistency` changes what it compares (2: the samples' answers, read by
/// [`rewards::sample_answer`], where 1 compared their whole texts).
pub const CONSISTENCY_VERSION: u32 = 2;

/// Loads the dataset of `split` named by the prompt at `path`.
pub fn load_split(doc: &PromptDocument, path: &Path, split: Split) -> Result<Dataset> {
    let resolved = doc.settings.split_path(split.setting(), path).ok_or(EvalError::NoSplit(split.setting()))?;
    dataset::load(&resolved, &DatasetSpec::for_document(doc)).map_err(EvalError::Dataset)
}

/// Scores examples with a model; optionally caches whole evaluations.
pub struct Evaluator {
    pub engine: Engine,
    /// Identifies the model in cache keys (a known model's pinned hash, else path and size).
    pub model_id: String,
    pub cache: Option<Box<dyn EvalCache>>,
    /// Examples per engine call (and per progress report).
    pub chunk: usize,
}

/// Identifies a model file for cache keys without hashing it every time: a known model by its
/// pinned hash, any other by its canonical path (the same from any working directory), size
/// and modification time (a file replaced in place is another model).
pub fn model_id(path: &Path) -> String {
    let canonical = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    let path = canonical(path);
    if let Some(known) = store::KNOWN_MODELS.iter().find(|m| canonical(&store::model_path(m)) == path) {
        return format!("{}@{}", known.name, known.sha256);
    }
    let meta = std::fs::metadata(&path).ok();
    let modified =
        meta.as_ref().and_then(|m| m.modified().ok()).and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok());
    format!("{}:{}:{}", path.display(), meta.map_or(0, |m| m.len()), modified.map_or(0, |d| d.as_secs()))
}

impl Evaluator {
    pub fn new(engine: Engine, cache: Option<Box<dyn EvalCache>>) -> Self {
        let model_id = model_id(&engine.path);
        Self { engine, model_id, cache, chunk: 32 }
    }

    /// Evaluates the prompt at `path` on a split (the first `limit` examples if given).
    /// Evaluates a prepared prompt on `data` (a split's examples, possibly truncated).
    pub fn evaluate(
        &self,
        prepared: &PreparedPrompt,
        data: &Dataset,
        split: Split,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<Evaluation> {
        if data.examples.is_empty() {
            return Err(EvalError::Invalid(format!("{}: no examples to score", data.path.display())));
        }
        let mut material = json!({
            "version": EVAL_VERSION,
            "prompt": prepared.render_hash,
            "device": format!("{:?}", self.engine.device),
            "model": self.model_id,
            "dataset": data.hash,
            "reward": prepared.reward,
            "split": split,
            "n": data.examples.len(),
        });
        if let Some(version) = prepared.sampling_version() {
            material["sampling"] = json!(version);
        }
        let key = reprompt_protocol::hash::sha256_hex(material.to_string().as_bytes());
        if let Some(cache) = &self.cache
            && let Some(mut hit) = cache.get(&key)
        {
            hit.cached = true;
            // The same content may have been scored from another file.
            hit.dataset = data.path.clone();
            hit.evaluations = 0;
            hit.seconds = 0.0;
            return Ok(hit);
        }
        let started = Instant::now();
        let total = data.examples.len();
        let mut examples = Vec::with_capacity(total);
        let mut evaluations = 0;
        for chunk in data.examples.chunks(self.chunk.max(1)) {
            let (results, spent) =
                self.score_examples(prepared, chunk).map_err(|e| self.located(e, prepared, chunk, data))?;
            examples.extend(results);
            evaluations += spent;
            progress(examples.len(), total);
        }
        let (aggregate, method, components) = summarize(&prepared.reward, &examples);
        let evaluation = Evaluation {
            key: key.clone(),
            prompt_hash: prepared.prompt_hash.clone(),
            model: self.model_id.clone(),
            dataset: data.path.clone(),
            dataset_hash: data.hash.clone(),
            split,
            reward: prepared.reward.clone(),
            n: examples.len(),
            aggregate,
            interval_method: method,
            components,
            examples,
            evaluations,
            seconds: started.elapsed().as_secs_f64(),
            cached: false,
        };
        if let Some(cache) = &self.cache {
            cache.put(&key, &evaluation);
        }
        Ok(evaluation)
    }

    /// `error` of scoring `examples` of `data`, naming the example where it is one's alone: a
    /// prompt too long for the model's context with one of them names the longest.
    fn located(&self, error: EvalError, prepared: &PreparedPrompt, examples: &[Example], data: &Dataset) -> EvalError {
        let EvalError::Engine(EngineError::TooLong { limit, .. }) = error else { return error };
        let Some((tokens, example)) = self.longest_row(prepared, examples).ok().flatten().map(|(n, e, _)| (n, e))
        else {
            return error;
        };
        EvalError::TooLong(format!(
            "{}:{}: the prompt with this example and its answer take {tokens} tokens, and the model's context \
             holds {limit} (shorten the example or the prompt)",
            data.path.display(),
            example.line
        ))
    }

    /// Scores the examples the prompt fits the model's context with, answers included
    /// ([`Evaluator::row_tokens`]; the model reads none of the others); `None` for each example
    /// that does not fit, and the evaluations spent.
    pub fn score_fitting(
        &self,
        prepared: &PreparedPrompt,
        examples: &[Example],
    ) -> Result<(Vec<Option<ExampleResult>>, usize)> {
        let (rows, limit) = self.row_tokens(prepared, examples)?;
        let fits: Vec<bool> = rows.into_iter().map(|n| n <= limit).collect();
        let fitting: Vec<Example> =
            examples.iter().zip(&fits).filter(|(_, fits)| **fits).map(|(e, _)| e.clone()).collect();
        let (scored, spent) =
            if fitting.is_empty() { (Vec::new(), 0) } else { self.score_examples(prepared, &fitting)? };
        let mut scored = scored.into_iter();
        Ok((fits.into_iter().map(|fits| if fits { scored.next() } else { None }).collect(), spent))
    }

    /// The example of `examples` whose scoring takes the longest row of the model's context
    /// with this prompt ([`Evaluator::row_tokens`]), that row's tokens and the most the
    /// context holds (`None` without examples).
    pub fn longest_row<'x>(
        &self,
        prepared: &PreparedPrompt,
        examples: &'x [Example],
    ) -> Result<Option<(usize, &'x Example, usize)>> {
        let (rows, limit) = self.row_tokens(prepared, examples)?;
        Ok(rows.into_iter().zip(examples).max_by_key(|(n, _)| *n).map(|(n, e)| (n, e, limit)))
    }

    /// For each example, the tokens of the longest row of the model's context its scoring
    /// takes with this prompt, and the most the context holds. A row is the prompt with an
    /// answer: every label word of a classification (its last token predicted, not read), a
    /// generation's gold answer where the reward reads its likelihood, and room for one token
    /// where the model generates. The prompt fits an example when its longest row does not
    /// pass the context: the engine refuses exactly the rows that do.
    pub fn row_tokens(&self, prepared: &PreparedPrompt, examples: &[Example]) -> Result<(Vec<usize>, usize)> {
        let contexts = self.contexts(prepared, examples)?;
        let words: Vec<String> = prepared.answer_words().into_iter().flatten().collect();
        let answers: Vec<Vec<String>> = contexts
            .iter()
            .zip(examples)
            .map(|(c, e)| match prepared.task {
                Task::Classify => words.iter().map(|w| answer_after(c, w)).collect(),
                Task::Generate if prepared.scores_likelihood() => {
                    vec![answer_after(c, e.answer.as_deref().unwrap_or_default())]
                }
                Task::Generate => Vec::new(),
            })
            .collect();
        let generates = prepared.task == Task::Generate || prepared.needs("consistency");
        Ok(self.engine.run(move |rt| {
            let mut lengths = Vec::with_capacity(contexts.len());
            for (context, answers) in contexts.iter().zip(&answers) {
                let read = rt.tokenize(context)?.len();
                let mut row = if generates { read + 1 } else { read };
                for answer in answers {
                    row = row.max(read + rt.tokenizer.encode_literal(answer)?.len().max(1) - 1);
                }
                lengths.push(row);
            }
            Ok((lengths, rt.model.config.context_length))
        })?)
    }

    /// The most tokens the model's context holds.
    pub fn context_length(&self) -> Result<usize> {
        Ok(self.engine.run(|rt| Ok(rt.model.config.context_length))?)
    }

    /// The tokens the model reads for each example ([`Evaluator::contexts`]) and the most its
    /// context holds.
    pub fn context_tokens(&self, prepared: &PreparedPrompt, examples: &[Example]) -> Result<(Vec<usize>, usize)> {
        let contexts = self.contexts(prepared, examples)?;
        Ok(self.engine.run(move |rt| {
            let lengths = contexts.iter().map(|c| rt.tokenize(c).map(|t| t.len())).collect::<Result<_, _>>()?;
            Ok((lengths, rt.model.config.context_length))
        })?)
    }

    /// The text the model reads for each example: the prompt rendered with its input,
    /// through the chat template or as plain text.
    pub fn contexts(&self, prepared: &PreparedPrompt, examples: &[Example]) -> Result<Vec<String>> {
        let rendered: Vec<_> = examples
            .iter()
            .map(|e| prepared.compiled.render(&DataArgument { input: e.input.clone(), ..DataArgument::default() }))
            .collect::<std::result::Result<_, _>>()?;
        let format = prepared.format;
        let messages: Vec<_> = rendered.into_iter().map(|r| r.messages).collect();
        Ok(self.engine.run(move |rt| messages.iter().map(|m| model_text(rt, m, format)).collect())?)
    }

    /// Scores examples with a prepared prompt; returns the results and the task-model example
    /// evaluations spent.
    pub fn score_examples(
        &self,
        prepared: &PreparedPrompt,
        examples: &[Example],
    ) -> Result<(Vec<ExampleResult>, usize)> {
        let contexts = self.contexts(prepared, examples)?;
        let mut components: Vec<BTreeMap<String, f64>> = vec![BTreeMap::new(); examples.len()];
        let mut predictions = vec![String::new(); examples.len()];
        let mut golds = vec![String::new(); examples.len()];
        let mut label_probabilities: Vec<Option<Vec<f64>>> = vec![None; examples.len()];
        let mut correct: Vec<Option<bool>> = vec![None; examples.len()];
        let mut spent = examples.len();

        if prepared.needs("length") {
            let cs = contexts.clone();
            let lengths: Vec<usize> =
                self.engine.run(move |rt| cs.iter().map(|c| rt.tokenize(c).map(|t| t.len())).collect())?;
            for (c, n) in components.iter_mut().zip(lengths) {
                c.insert("length".into(), n as f64);
            }
        }
        match prepared.task {
            Task::Classify => {
                // Every answer word of every label, label by label; a label's probability is
                // the sum of its words'.
                let label_words = prepared.answer_words();
                let sizes: Vec<usize> = label_words.iter().map(Vec::len).collect();
                let flat: Vec<&String> = label_words.iter().flatten().collect();
                let choices: Vec<Vec<String>> =
                    contexts.iter().map(|c| flat.iter().map(|l| answer_after(c, l)).collect()).collect();
                // Contexts that need the same choice strings are scored together.
                let mut groups: Vec<(Vec<String>, Vec<usize>)> = Vec::new();
                for (i, ch) in choices.iter().enumerate() {
                    match groups.iter_mut().find(|(g, _)| g == ch) {
                        Some((_, members)) => members.push(i),
                        None => groups.push((ch.clone(), vec![i])),
                    }
                }
                for (choice_set, members) in groups {
                    let group_contexts: Vec<String> = members.iter().map(|&i| contexts[i].clone()).collect();
                    // Token counts of the choices, so `logprob` is a per-token mean as for
                    // generation.
                    let words = choice_set.clone();
                    let lengths: Vec<usize> = self.engine.run(move |rt| {
                        words.iter().map(|w| rt.tokenizer.encode_literal(w).map(|t| t.len().max(1))).collect()
                    })?;
                    let logprobs = self.engine.choice_logprobs(group_contexts, choice_set)?;
                    for (&i, lp) in members.iter().zip(logprobs) {
                        let mut probabilities = rewards::label_group_probabilities(&lp, &sizes);
                        if let Some(bias) = &prepared.label_bias {
                            probabilities = rewards::biased_probabilities(&probabilities, bias);
                        }
                        let predicted = rewards::predicted_label(&probabilities);
                        let gold = examples[i].label.unwrap_or(0);
                        let c = &mut components[i];
                        c.insert("accuracy".into(), rewards::accuracy(predicted, gold));
                        c.insert("gap".into(), rewards::gap(&probabilities, gold));
                        if prepared.needs("logprob") || prepared.needs("perplexity") {
                            // The gold label's words together (log of their summed
                            // probability), per token of its first word.
                            let first: usize = sizes[..gold].iter().sum();
                            let gold_lp = lp[first..first + sizes[gold]].iter().map(|&l| f64::from(l)).fold(
                                f64::NEG_INFINITY,
                                |a, b| {
                                    if a == f64::NEG_INFINITY { b } else { a.max(b) + (-(a - b).abs()).exp().ln_1p() }
                                },
                            );
                            let mean = gold_lp / lengths[first] as f64;
                            c.insert("logprob".into(), mean);
                            c.insert("perplexity".into(), (-mean).exp());
                        }
                        predictions[i] = prepared.labels.get(predicted).cloned().unwrap_or_default();
                        golds[i] = prepared.labels.get(gold).cloned().unwrap_or_default();
                        correct[i] = Some(predicted == gold);
                        label_probabilities[i] = Some(probabilities);
                    }
                }
            }
            Task::Generate => {
                let outputs = self.engine.generate(contexts.clone(), prepared.generate.clone())?;
                for (i, output) in outputs.into_iter().enumerate() {
                    let gold = examples[i].answer.clone().unwrap_or_default();
                    let text = output.text.trim().to_string();
                    let c = &mut components[i];
                    c.insert("exact_match".into(), rewards::exact_match(&text, &gold));
                    c.insert("f1".into(), rewards::token_f1(&text, &gold));
                    c.insert("numeric_match".into(), rewards::numeric_match(&text, &gold));
                    c.insert("contains".into(), rewards::contains(&text, &gold));
                    if let Some(pattern) = &prepared.regex {
                        c.insert("regex".into(), rewards::regex_match(&text, pattern));
                    }
                    if let Some(schema) = &prepared.output_schema {
                        c.insert("json_schema".into(), rewards::json_schema_valid(&text, schema));
                    }
                    let primary =
                        prepared.reward.components.iter().map(|(n, _)| n.as_str()).find(|n| {
                            matches!(*n, "exact_match" | "numeric_match" | "contains" | "regex" | "json_schema")
                        });
                    correct[i] = primary.and_then(|p| c.get(p)).map(|v| *v == 1.0);
                    predictions[i] = text;
                    golds[i] = gold;
                }
                if prepared.scores_likelihood() {
                    let pairs: Vec<(String, String)> = contexts
                        .iter()
                        .zip(examples)
                        .map(|(c, e)| (c.clone(), answer_after(c, e.answer.as_deref().unwrap_or_default())))
                        .collect();
                    let likelihoods = self.engine.continuation_logprobs(pairs)?;
                    spent += examples.len();
                    for (c, l) in components.iter_mut().zip(likelihoods) {
                        c.insert("logprob".into(), l.mean() as f64);
                        c.insert("perplexity".into(), l.perplexity() as f64);
                        let f1 = c.get("f1").copied().unwrap_or(0.0);
                        c.insert("perplexity_f1".into(), rewards::perplexity_f1(f1, l.perplexity() as f64));
                    }
                }
            }
        }
        if prepared.needs("consistency") {
            // Every example's samples in one call (decoded in batches), each drawn from the
            // stream a call of its own example's samples, seeded by its line, would use.
            // A numeric answer comes after its reasoning: those samples get the prompt's own
            // length; other answers come first, and 64 tokens show them.
            const SAMPLES: usize = CONSISTENCY_SAMPLES;
            let numeric = prepared.task == Task::Generate && prepared.needs("numeric_match");
            let params = GenerateParams {
                temperature: prepared.generate.temperature.max(0.7),
                max_tokens: if numeric { prepared.generate.max_tokens } else { prepared.generate.max_tokens.min(64) },
                ..prepared.generate.clone()
            };
            let label_words = prepared.answer_words();
            let mut sampled = Vec::with_capacity(contexts.len() * SAMPLES);
            let mut seeds = Vec::with_capacity(contexts.len() * SAMPLES);
            for (context, example) in contexts.iter().zip(examples) {
                for s in 0..SAMPLES {
                    sampled.push(context.clone());
                    seeds.push(stream_seed(example.line as u64, s));
                }
            }
            let samples = self.engine.generate_seeded(sampled, params, seeds)?;
            for (c, per_example) in components.iter_mut().zip(samples.chunks(SAMPLES)) {
                let answers: Vec<String> =
                    per_example.iter().map(|g| rewards::sample_answer(&g.text, numeric, &label_words)).collect();
                c.insert("consistency".into(), rewards::consistency(&answers));
                spent += SAMPLES;
            }
        }
        let results = examples
            .iter()
            .enumerate()
            .map(|(i, e)| {
                let score = prepared
                    .reward
                    .components
                    .iter()
                    .map(|(name, weight)| weight * components[i].get(name).copied().unwrap_or(0.0))
                    .sum();
                ExampleResult {
                    line: e.line,
                    input: e.input.clone(),
                    gold: golds[i].clone(),
                    prediction: predictions[i].clone(),
                    score,
                    components: components[i].clone(),
                    label_probabilities: label_probabilities[i].clone(),
                    correct: correct[i],
                }
            })
            .collect();
        debug_assert_eq!(spent, examples.len() * prepared.evaluations_per_example());
        Ok((results, spent))
    }
}

/// The weighted reward's interval, how it was computed, and each component's interval.
pub fn summarize(reward: &RewardSpec, examples: &[ExampleResult]) -> (Interval, String, Vec<ComponentSummary>) {
    let components: Vec<ComponentSummary> = reward
        .components
        .iter()
        .map(|(name, weight)| {
            let values: Vec<f64> = examples.iter().map(|e| e.components.get(name).copied().unwrap_or(0.0)).collect();
            ComponentSummary { name: name.clone(), weight: *weight, interval: stats::interval(&values).0 }
        })
        .collect();
    let scores: Vec<f64> = examples.iter().map(|e| e.score).collect();
    let (interval, method) = stats::interval(&scores);
    (interval, method.to_string(), components)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prepared(task: &str, reward: &str) -> PreparedPrompt {
        let labels = if task == "classify" { "reprompt.labels: [no, yes]\n" } else { "" };
        let text = format!(
            "---\nmodel: smollm2-135m-instruct\ninput:\n  schema:\n    q: string\nreprompt.task: {task}\n{labels}\
             reprompt.reward: {reward}\n---\n{{{{q}}}}\n"
        );
        let path = Path::new("cost.prompt");
        let doc = reprompt_protocol::parse(&text, Some(path));
        assert!(doc.diagnostics.is_empty(), "{:?}", doc.diagnostics);
        PreparedPrompt::new(&doc, path).unwrap()
    }

    #[test]
    fn a_model_file_is_the_same_model_however_its_path_is_spelled() {
        let dir = std::env::temp_dir().join(format!("reprompt-model-id-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        let file = dir.join("m.gguf");
        std::fs::write(&file, b"GGUF").unwrap();
        let roundabout = dir.join("sub").join("..").join("m.gguf");
        assert_eq!(model_id(&file), model_id(&roundabout));
        assert!(model_id(&file).contains(":4:"), "{}", model_id(&file));
        // Another file of the same size is another model.
        std::fs::write(dir.join("n.gguf"), b"GGUF").unwrap();
        assert_ne!(model_id(&file), model_id(&dir.join("n.gguf")));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn an_example_costs_what_its_reward_asks_the_model_for() {
        assert_eq!(prepared("classify", "accuracy").evaluations_per_example(), 1);
        assert_eq!(prepared("generate", "exact_match").evaluations_per_example(), 1);
        assert_eq!(prepared("generate", "{exact_match: 1, logprob: 0.1}").evaluations_per_example(), 2);
        assert_eq!(
            prepared("generate", "{exact_match: 1, perplexity_f1: 0.5, consistency: 0.1}").evaluations_per_example(),
            2 + CONSISTENCY_SAMPLES
        );
        assert_eq!(
            prepared("classify", "{accuracy: 1, consistency: 0.1}").evaluations_per_example(),
            1 + CONSISTENCY_SAMPLES
        );
    }
}
