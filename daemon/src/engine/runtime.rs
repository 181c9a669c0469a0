//! The scoring API on one loaded model: label-word log-probabilities, teacher-forced
//! continuation likelihoods, generation and embeddings — batched, with the KV cache of the
//! longest shared token prefix computed once and reused.
//!
//! Every context is tokenized whole (never prefix and suffix separately), so cached and
//! uncached paths see identical token ids; the shared prefix is found on the ids.

use candle_core::{D, Device, Tensor};

use super::chat::{ChatTemplate, ChatTurn};
use super::error::{EngineError, Result};
use super::gguf::GgufFile;
use super::model::{DecodeCache, KvCache, Mode, Model, Weights};
use super::tokenizer::TextTokenizer;
use crate::optimize::rng::Rng;

/// How batches are cut and prefixes kept.
#[derive(Clone, Debug)]
pub struct RuntimeOptions {
    /// Most token positions in one forward pass (rows × padded length).
    pub max_batch_tokens: usize,
    /// Most rows in one forward pass.
    pub max_batch_rows: usize,
    /// Shortest shared prefix worth caching.
    pub min_prefix: usize,
    /// Bytes of prefix KV caches kept between calls.
    pub prefix_cache_bytes: usize,
    /// Most bytes of KV cache one batch of generated rows may reach (prefix, padding and
    /// every token a row may still generate, per row); a batch of one row always runs (its
    /// cache is bounded by the context length).
    pub decode_cache_bytes: usize,
}

impl Default for RuntimeOptions {
    fn default() -> Self {
        Self {
            max_batch_tokens: 1024,
            max_batch_rows: 16,
            min_prefix: 4,
            prefix_cache_bytes: 256 << 20,
            decode_cache_bytes: 256 << 20,
        }
    }
}

/// Sampling and stopping for generation.
#[derive(Clone, Debug, PartialEq)]
pub struct GenerateParams {
    pub max_tokens: usize,
    /// 0 is greedy.
    pub temperature: f32,
    pub top_p: f32,
    pub seed: u64,
    pub stop: Vec<String>,
}

impl Default for GenerateParams {
    fn default() -> Self {
        Self { max_tokens: 64, temperature: 0.0, top_p: 1.0, seed: 0, stop: Vec::new() }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopReason {
    EndOfText,
    StopSequence,
    MaxTokens,
    ContextFull,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Generation {
    pub text: String,
    pub tokens: usize,
    pub stop: StopReason,
}

/// Teacher-forced log-likelihood of a continuation.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Likelihood {
    pub logprob: f32,
    pub tokens: usize,
}

impl Likelihood {
    pub fn mean(&self) -> f32 {
        if self.tokens == 0 { 0.0 } else { self.logprob / self.tokens as f32 }
    }

    pub fn perplexity(&self) -> f32 {
        (-self.mean()).exp()
    }
}

/// Counters for benchmarks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub forward_passes: u64,
    /// Token positions computed (padding included).
    pub positions: u64,
    pub prefix_hits: u64,
}

/// Tokens of a text [`Runtime::embed`] reads at most.
pub const EMBED_TOKENS: usize = 1024;

/// Tokens of a context past what a call's contexts share from which it is scored apart from the
/// others, so that the rows of its choices share it (see [`Runtime::choice_logprobs`]).
const LONG_CONTEXT: usize = 256;

/// Rows from which a decoding step runs on dense weights when it has them (see
/// [`Runtime::step_mode`]; measured on the CPU, SmolLM2-135M, 2-core AMD EPYC, tokens/s quantized
/// vs dense: 8 rows 219 vs 180, 12 rows 223 vs 239, 16 rows 223 vs 320).
const DENSE_DECODE_ROWS: usize = 12;

/// One row to score: its token ids and, for each wanted target, (position whose output
/// predicts it, token id).
struct RowSpec {
    ids: Vec<u32>,
    targets: Vec<(usize, u32)>,
}

struct CachedPrefix {
    ids: Vec<u32>,
    cache: KvCache,
    used: u64,
}

pub struct Runtime {
    pub model: Model,
    pub tokenizer: TextTokenizer,
    chat: Option<ChatTemplate>,
    pub options: RuntimeOptions,
    prefixes: Vec<CachedPrefix>,
    clock: u64,
    pub stats: Stats,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime").field("model", &self.model).finish_non_exhaustive()
    }
}

fn common_prefix(a: &[u32], b: &[u32]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

impl Runtime {
    pub fn load(path: &std::path::Path, weights: Weights, device: &Device, options: RuntimeOptions) -> Result<Self> {
        let mut gguf = GgufFile::open(path)?;
        let tokenizer = TextTokenizer::from_gguf(&gguf)?;
        let model = Model::load(&mut gguf, weights, device)?;
        if tokenizer.vocab_size != model.config.vocab_size {
            return Err(EngineError::Gguf {
                path: path.to_path_buf(),
                message: format!(
                    "tokenizer has {} tokens but the model {}",
                    tokenizer.vocab_size, model.config.vocab_size
                ),
            });
        }
        let chat = match gguf.get_str("tokenizer.chat_template") {
            Ok(source) => {
                let token = |id: Option<u32>| id.and_then(|i| tokenizer.token_text(i)).unwrap_or_default();
                Some(ChatTemplate::new(source, &token(tokenizer.bos), &token(Some(tokenizer.eos)))?)
            }
            Err(_) => None,
        };
        Ok(Self { model, tokenizer, chat, options, prefixes: Vec::new(), clock: 0, stats: Stats::default() })
    }

    /// Token ids of a model input (special tokens only outside its literal stretches:
    /// [`TextTokenizer::encode`]).
    pub fn tokenize(&self, text: &str) -> Result<Vec<u32>> {
        self.tokenizer.encode(text)
    }

    /// Lays out chat turns with the model's template; errors if the model has none.
    pub fn chat_prompt(&self, turns: &[ChatTurn], add_generation_prompt: bool) -> Result<String> {
        match &self.chat {
            Some(template) => template.render(turns, add_generation_prompt),
            None => Err(EngineError::Template("the model has no chat template: use a plain prompt".into())),
        }
    }

    pub fn has_chat_template(&self) -> bool {
        self.chat.is_some()
    }

    fn dense_mode(&self) -> Mode {
        if self.model.weights == Weights::Quantized { Mode::Quantized } else { Mode::Dense }
    }

    fn decode_mode(&self) -> Mode {
        if self.model.weights == Weights::Dense { Mode::Dense } else { Mode::Quantized }
    }

    /// The weights a decoding step of `rows` rows runs on: quantized ones stream fewer bytes,
    /// but their matmul is a dot product per row and weight row, where dense weights run a GEMM
    /// that gains with every row; from [`DENSE_DECODE_ROWS`] rows on, the GEMM is faster.
    fn step_mode(&self, rows: usize) -> Mode {
        if rows >= DENSE_DECODE_ROWS { self.dense_mode() } else { self.decode_mode() }
    }

    /// Drops every cached prefix.
    pub fn clear_prefixes(&mut self) {
        self.prefixes.clear();
    }

    /// The KV cache for `ids[..len]`, from the cache or computed (reusing the longest cached
    /// prefix of it).
    fn prefix(&mut self, ids: &[u32], len: usize) -> Result<Option<KvCache>> {
        if len == 0 {
            return Ok(None);
        }
        self.clock += 1;
        let best = self
            .prefixes
            .iter_mut()
            .filter(|p| p.ids.len() <= len && ids[..p.ids.len()] == p.ids[..])
            .max_by_key(|p| p.ids.len());
        let (start, base) = match best {
            Some(p) => {
                p.used = self.clock;
                self.stats.prefix_hits += 1;
                (p.ids.len(), Some(p.cache.clone()))
            }
            None => (0, None),
        };
        if start == len {
            return Ok(base);
        }
        let mode = self.dense_mode();
        let (_, cache) = self.model.forward(&ids[start..len], 1, len - start, base.as_ref(), mode, true)?;
        self.stats.forward_passes += 1;
        self.stats.positions += (len - start) as u64;
        let cache = cache.expect("keep_cache returns a cache");
        if len >= self.options.min_prefix {
            self.prefixes.push(CachedPrefix { ids: ids[..len].to_vec(), cache: cache.clone(), used: self.clock });
            self.evict();
        }
        Ok(Some(cache))
    }

    fn evict(&mut self) {
        let limit = self.options.prefix_cache_bytes;
        while self.prefixes.iter().map(|p| p.cache.bytes()).sum::<usize>() > limit && self.prefixes.len() > 1 {
            if let Some(oldest) = self.prefixes.iter().enumerate().min_by_key(|(_, p)| p.used).map(|(i, _)| i) {
                self.prefixes.remove(oldest);
            }
        }
    }

    /// Log-probabilities of every target of every row.
    fn score_rows(&mut self, rows: &[RowSpec]) -> Result<Vec<Vec<f32>>> {
        self.forward_rows(rows, false)
    }

    /// Runs the rows through the model: per row, the log-probability of each target token
    /// or, with `full`, the whole next-token distribution at each target position (one
    /// vocabulary-sized block per target, the targets' tokens ignored).
    fn forward_rows(&mut self, rows: &[RowSpec], full: bool) -> Result<Vec<Vec<f32>>> {
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let limit = self.model.config.context_length;
        for row in rows {
            if row.targets.iter().any(|(pos, _)| *pos >= row.ids.len()) || row.ids.is_empty() {
                return Err(EngineError::Invalid("a scored position lies outside its row".into()));
            }
            // Refused before any row runs, not after the rows that fit have.
            if row.ids.len() > limit {
                return Err(EngineError::TooLong { tokens: row.ids.len(), limit });
            }
        }
        // Shared prefix: common to all rows and before every scored position.
        let mut shared = rows[0].ids.len();
        for row in &rows[1..] {
            shared = shared.min(common_prefix(&rows[0].ids, &row.ids));
        }
        for row in rows {
            let first_target = row.targets.iter().map(|(p, _)| *p).min().unwrap_or(row.ids.len() - 1);
            shared = shared.min(first_target).min(row.ids.len() - 1);
        }
        let prefix = self.prefix(&rows[0].ids, shared)?;
        let mut order: Vec<usize> = (0..rows.len()).collect();
        order.sort_by_key(|&i| rows[i].ids.len());
        let mut results: Vec<Vec<f32>> =
            rows.iter().map(|r| if full { Vec::new() } else { vec![0.0; r.targets.len()] }).collect();
        let mode = self.dense_mode();
        let pad = self.tokenizer.eos;
        let mut at = 0;
        while at < order.len() {
            // Rows are sorted by length: grow the batch while it fits.
            let mut end = at + 1;
            while end < order.len()
                && end - at < self.options.max_batch_rows
                && (end - at + 1) * (rows[order[end]].ids.len() - shared) <= self.options.max_batch_tokens
            {
                end += 1;
            }
            let batch = &order[at..end];
            let seq = rows[batch[batch.len() - 1]].ids.len() - shared;
            let mut tokens = Vec::with_capacity(batch.len() * seq);
            for &r in batch {
                let suffix = &rows[r].ids[shared..];
                tokens.extend_from_slice(suffix);
                tokens.extend(std::iter::repeat_n(pad, seq - suffix.len()));
            }
            let (hidden, _) = self.model.forward(&tokens, batch.len(), seq, prefix.as_ref(), mode, false)?;
            self.stats.forward_passes += 1;
            self.stats.positions += tokens.len() as u64;
            let mut picks = Vec::new();
            let mut wanted = Vec::new();
            for (b, &r) in batch.iter().enumerate() {
                for (t, &(pos, token)) in rows[r].targets.iter().enumerate() {
                    picks.push((b * seq + pos - shared) as u32);
                    wanted.push((r, t, token));
                }
            }
            let index = Tensor::from_vec(picks, wanted.len(), &self.model.device)?;
            let rows_hidden = hidden.index_select(&index, 0)?;
            let log_probs = self.model.log_probs(&rows_hidden, mode)?;
            if full {
                let blocks: Vec<Vec<f32>> = log_probs.to_vec2()?;
                for ((r, _, _), block) in wanted.into_iter().zip(blocks) {
                    results[r].extend(block);
                }
                at = end;
                continue;
            }
            let tokens = Tensor::from_vec(
                wanted.iter().map(|w| w.2).collect::<Vec<u32>>(),
                (wanted.len(), 1),
                &self.model.device,
            )?;
            let chosen: Vec<f32> = log_probs.gather(&tokens, D::Minus1)?.squeeze(1)?.to_vec1()?;
            for ((r, t, _), value) in wanted.into_iter().zip(chosen) {
                results[r][t] = value;
            }
            at = end;
        }
        Ok(results)
    }

    /// For each context, the log-probability of each choice as its continuation (multi-token
    /// choices summed). Choices are tokenized on their own and appended: include the leading
    /// space a plain-text answer needs (`" great"`).
    pub fn choice_logprobs(&mut self, contexts: &[String], choices: &[String]) -> Result<Vec<Vec<f32>>> {
        let choice_ids: Vec<Vec<u32>> =
            choices.iter().map(|c| self.tokenizer.encode_literal(c)).collect::<Result<_>>()?;
        if choice_ids.iter().any(Vec::is_empty) {
            return Err(EngineError::Invalid("a choice tokenizes to nothing".into()));
        }
        let context_ids: Vec<Vec<u32>> = contexts.iter().map(|c| self.tokenize(c)).collect::<Result<_>>()?;
        if context_ids.iter().any(Vec::is_empty) {
            return Err(EngineError::Invalid("a context tokenizes to nothing".into()));
        }
        let single = choice_ids.iter().all(|c| c.len() == 1);
        let mut rows = Vec::new();
        if single {
            for ids in &context_ids {
                let last = ids.len() - 1;
                rows.push(RowSpec { ids: ids.clone(), targets: choice_ids.iter().map(|c| (last, c[0])).collect() });
            }
            return self.score_rows(&rows);
        }
        // Choices of several tokens: one row per context and choice, and a batch runs each row
        // whole after the prefix all its rows share. A context long past what all contexts share
        // is scored on its own instead: its rows share all of it, so it runs once, not once per
        // choice. Short ones stay batched together.
        let shared =
            context_ids[1..].iter().fold(context_ids[0].len(), |s, ids| s.min(common_prefix(&context_ids[0], ids)));
        let (long, short): (Vec<usize>, Vec<usize>) =
            (0..context_ids.len()).partition(|&i| context_ids[i].len() - shared >= LONG_CONTEXT);
        let mut scores = vec![Vec::new(); context_ids.len()];
        let sum_choices = |scored: Vec<Vec<f32>>| -> Vec<Vec<f32>> {
            scored.chunks(choices.len()).map(|per_choice| per_choice.iter().map(|t| t.iter().sum()).collect()).collect()
        };
        for group in std::iter::once(short).chain(long.into_iter().map(|i| vec![i])).filter(|g| !g.is_empty()) {
            rows.clear();
            for &i in &group {
                for choice in &choice_ids {
                    rows.push(continuation_row(&context_ids[i], choice));
                }
            }
            for (i, per_context) in group.into_iter().zip(sum_choices(self.score_rows(&rows)?)) {
                scores[i] = per_context;
            }
        }
        Ok(scores)
    }

    /// For each context, the log-probabilities of every vocabulary token as its next token
    /// (index = token id; see [`Runtime::vocabulary`]).
    pub fn next_token_logprobs(&mut self, contexts: &[String]) -> Result<Vec<Vec<f32>>> {
        let mut rows = Vec::with_capacity(contexts.len());
        for context in contexts {
            let ids = self.tokenize(context)?;
            if ids.is_empty() {
                return Err(EngineError::Invalid("a context tokenizes to nothing".into()));
            }
            rows.push(RowSpec { targets: vec![(ids.len() - 1, 0)], ids });
        }
        self.forward_rows(&rows, true)
    }

    /// The text of every token id as it decodes on its own (`" great"`); empty for special
    /// tokens.
    pub fn vocabulary(&self) -> Result<Vec<String>> {
        (0..self.tokenizer.vocab_size as u32)
            .map(|id| if self.tokenizer.is_special(id) { Ok(String::new()) } else { self.tokenizer.decode(&[id]) })
            .collect()
    }

    /// Teacher-forced log-likelihood of each (context, continuation) pair.
    pub fn continuation_logprobs(&mut self, pairs: &[(String, String)]) -> Result<Vec<Likelihood>> {
        let mut rows = Vec::with_capacity(pairs.len());
        for (context, continuation) in pairs {
            let ids = self.tokenize(context)?;
            let cont = self.tokenizer.encode_literal(continuation)?;
            if ids.is_empty() || cont.is_empty() {
                return Err(EngineError::Invalid("an empty context or continuation cannot be scored".into()));
            }
            rows.push(continuation_row(&ids, &cont));
        }
        let scored = self.score_rows(&rows)?;
        Ok(scored.into_iter().map(|t| Likelihood { logprob: t.iter().sum(), tokens: t.len() }).collect())
    }

    /// Generates a continuation of each context (sharing the KV cache of their common prefix).
    /// Contexts are decoded together in batches of similar length, each row right-padded to
    /// the batch's longest and masked from its padding: every weight is read once per step for
    /// all of a batch's rows, not once per row.
    pub fn generate(&mut self, contexts: &[String], params: &GenerateParams) -> Result<Vec<Generation>> {
        let seeds: Vec<u64> = (0..contexts.len()).map(|i| stream_seed(params.seed, i)).collect();
        self.generate_seeded(contexts, params, &seeds)
    }

    /// [`Runtime::generate`] with each context's random stream seeded by `seeds[i]` (`params.seed`
    /// unused): samples of several calls drawn in one, each as its own call would have.
    pub fn generate_seeded(
        &mut self,
        contexts: &[String],
        params: &GenerateParams,
        seeds: &[u64],
    ) -> Result<Vec<Generation>> {
        if seeds.len() != contexts.len() {
            return Err(EngineError::Invalid(format!("{} seeds for {} contexts", seeds.len(), contexts.len())));
        }
        let ids: Vec<Vec<u32>> = contexts.iter().map(|c| self.tokenize(c)).collect::<Result<_>>()?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        if ids.iter().any(Vec::is_empty) {
            return Err(EngineError::Invalid("an empty context cannot be continued".into()));
        }
        let limit = self.model.config.context_length;
        if let Some(row) = ids.iter().find(|row| row.len() >= limit) {
            return Err(EngineError::TooLong { tokens: row.len(), limit });
        }
        if params.max_tokens == 0 {
            return Ok(ids
                .iter()
                .map(|_| Generation { text: String::new(), tokens: 0, stop: StopReason::MaxTokens })
                .collect());
        }
        let mut shared = ids[0].len() - 1;
        for row in &ids[1..] {
            shared = shared.min(common_prefix(&ids[0], row)).min(row.len() - 1);
        }
        let prefix = self.prefix(&ids[0], shared)?;
        let mut order: Vec<usize> = (0..ids.len()).collect();
        order.sort_by_key(|&i| ids[i].len());
        let cfg = &self.model.config;
        let slot_bytes = cfg.layers * 2 * cfg.kv_heads * cfg.head_dim * 4;
        let mut out: Vec<Option<Generation>> = vec![None; ids.len()];
        let mut at = 0;
        while at < order.len() {
            // Rows are sorted by length: grow the batch while its prompt pass and its caches
            // (prefix, padding and every generated token, per row) fit.
            let shortest = ids[order[at]].len();
            let fits = |rows: usize, longest: usize| {
                let suffix = longest - shared;
                let room = params.max_tokens.min(limit - shortest);
                rows <= self.options.max_batch_rows
                    && rows * suffix <= self.options.max_batch_tokens
                    && rows * (longest + room) * slot_bytes <= self.options.decode_cache_bytes
            };
            let mut end = at + 1;
            while end < order.len() && fits(end - at + 1, ids[order[end]].len()) {
                end += 1;
            }
            let batch = &order[at..end];
            let rows: Vec<&[u32]> = batch.iter().map(|&i| ids[i].as_slice()).collect();
            let mut rngs: Vec<Rng> = batch.iter().map(|&i| Rng::new(seeds[i])).collect();
            for (&i, generation) in
                batch.iter().zip(self.generate_batch(&rows, shared, prefix.as_ref(), params, &mut rngs)?)
            {
                out[i] = Some(generation);
            }
            at = end;
        }
        Ok(out.into_iter().map(|g| g.expect("every row is generated")).collect())
    }

    /// Generates the rows of one batch: one prompt pass over their suffixes after `shared`
    /// (right-padded), then one decoding step per token for the rows still going, each at its
    /// own position and masked from the padding slots of its cache.
    fn generate_batch(
        &mut self,
        rows: &[&[u32]],
        shared: usize,
        prefix: Option<&KvCache>,
        params: &GenerateParams,
        rngs: &mut [Rng],
    ) -> Result<Vec<Generation>> {
        let limit = self.model.config.context_length;
        let lengths: Vec<usize> = rows.iter().map(|r| r.len() - shared).collect();
        let seq = lengths.iter().copied().max().unwrap_or(1);
        let pad = self.tokenizer.eos;
        let mut tokens = Vec::with_capacity(rows.len() * seq);
        for row in rows {
            tokens.extend_from_slice(&row[shared..]);
            tokens.extend(std::iter::repeat_n(pad, seq - (row.len() - shared)));
        }
        let (hidden, cache) = self.model.forward(&tokens, rows.len(), seq, prefix, self.dense_mode(), true)?;
        self.stats.forward_passes += 1;
        self.stats.positions += tokens.len() as u64;
        // Each row generates at most `room` tokens, the first from the prompt pass.
        let shortest = rows.iter().map(|r| r.len()).min().unwrap_or(0);
        let room = params.max_tokens.min(limit - shortest);
        let mut cache = DecodeCache::new(cache.expect("keep_cache returns a cache"), room)?;
        let picks: Vec<u32> = lengths.iter().enumerate().map(|(b, &len)| (b * seq + len - 1) as u32).collect();
        let mut last = hidden.index_select(&Tensor::from_vec(picks, rows.len(), &self.model.device)?, 0)?;
        // Rows still generating (indices into `rows`), with their tokens so far.
        let mut active: Vec<usize> = (0..rows.len()).collect();
        let mut generated: Vec<Vec<u32>> = vec![Vec::new(); rows.len()];
        let mut done: Vec<Option<Generation>> = vec![None; rows.len()];
        let mut mode = self.dense_mode();
        loop {
            let logits: Vec<Vec<f32>> = self.model.logits(&last, mode)?.to_vec2()?;
            let mut next = Vec::with_capacity(active.len());
            let mut kept = Vec::with_capacity(active.len());
            for (a, &r) in active.iter().enumerate() {
                let token = sample(&logits[a], params, &mut rngs[r]);
                let stop = if self.tokenizer.ends_generation(token) {
                    Some(StopReason::EndOfText)
                } else {
                    generated[r].push(token);
                    let position = rows[r].len() + generated[r].len() - 1;
                    if !params.stop.is_empty() && {
                        let text = self.tokenizer.decode(&generated[r])?;
                        params.stop.iter().any(|s| !s.is_empty() && text.contains(s.as_str()))
                    } {
                        Some(StopReason::StopSequence)
                    } else if generated[r].len() >= params.max_tokens {
                        Some(StopReason::MaxTokens)
                    } else if position + 1 > limit {
                        Some(StopReason::ContextFull)
                    } else {
                        None
                    }
                };
                match stop {
                    Some(stop) => done[r] = Some(self.finish(std::mem::take(&mut generated[r]), stop, params)?),
                    None => {
                        kept.push(a);
                        next.push(token);
                    }
                }
            }
            if kept.is_empty() {
                break;
            }
            if kept.len() < active.len() {
                cache = cache.select(&kept)?;
                active = kept.iter().map(|&a| active[a]).collect();
            }
            // Each row's next token sits at its own position; the padding slots of rows
            // shorter than the batch's longest are masked.
            let positions: Vec<usize> = active.iter().map(|&r| rows[r].len() + generated[r].len() - 1).collect();
            let slots = cache.len + 1;
            let bias = if active.iter().all(|&r| lengths[r] == seq) {
                None
            } else {
                let padding = |r: usize, j: usize| j >= shared + lengths[r] && j < shared + seq;
                let values: Vec<f32> = active
                    .iter()
                    .flat_map(|&r| (0..slots).map(move |j| if padding(r, j) { f32::NEG_INFINITY } else { 0.0 }))
                    .collect();
                Some(Tensor::from_vec(values, (active.len(), 1, 1, slots), &self.model.device)?)
            };
            mode = self.step_mode(active.len());
            last = self.model.step(&next, &positions, &mut cache, bias.as_ref(), mode)?;
            self.stats.forward_passes += 1;
            self.stats.positions += active.len() as u64;
        }
        Ok(done.into_iter().map(|g| g.expect("every row finished")).collect())
    }

    fn finish(&self, generated: Vec<u32>, stop: StopReason, params: &GenerateParams) -> Result<Generation> {
        let mut text = self.tokenizer.decode(&generated)?;
        if stop == StopReason::StopSequence
            && let Some(cut) = params.stop.iter().filter(|s| !s.is_empty()).filter_map(|s| text.find(s.as_str())).min()
        {
            text.truncate(cut);
        }
        Ok(Generation { text, tokens: generated.len(), stop })
    }

    /// Mean-pooled final hidden state of each text (policy features, similarity); texts are
    /// plain text throughout.
    pub fn embed(&mut self, texts: &[String]) -> Result<Vec<Vec<f32>>> {
        let mut out = Vec::with_capacity(texts.len());
        let mode = self.dense_mode();
        for text in texts {
            let mut ids = self.tokenizer.encode_literal(text)?;
            // A long text is embedded by its beginning: a prompt grown by long demonstrations
            // is still one the optimizer reads, and its features need not cost seconds.
            ids.truncate(EMBED_TOKENS.min(self.model.config.context_length));
            if ids.is_empty() {
                out.push(vec![0.0; self.model.config.hidden]);
                continue;
            }
            let (hidden, _) = self.model.forward(&ids, 1, ids.len(), None, mode, false)?;
            self.stats.forward_passes += 1;
            self.stats.positions += ids.len() as u64;
            out.push(hidden.mean(0)?.to_vec1()?);
        }
        Ok(out)
    }
}

/// The seed of the random stream of the `index`-th context of a [`Runtime::generate`] call.
pub fn stream_seed(seed: u64, index: usize) -> u64 {
    seed ^ (index as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

fn continuation_row(context: &[u32], continuation: &[u32]) -> RowSpec {
    let mut ids = context.to_vec();
    ids.extend_from_slice(&continuation[..continuation.len() - 1]);
    let first = context.len() - 1;
    RowSpec { ids, targets: continuation.iter().enumerate().map(|(m, &t)| (first + m, t)).collect() }
}

fn sample(logits: &[f32], params: &GenerateParams, rng: &mut Rng) -> u32 {
    let argmax = || logits.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).map_or(0, |(i, _)| i as u32);
    if params.temperature <= 0.0 {
        return argmax();
    }
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut probs: Vec<(u32, f32)> =
        logits.iter().enumerate().map(|(i, &l)| (i as u32, ((l - max) / params.temperature).exp())).collect();
    probs.sort_by(|a, b| b.1.total_cmp(&a.1));
    let total: f32 = probs.iter().map(|p| p.1).sum();
    let mut kept = 0.0;
    let mut cut = probs.len();
    for (i, p) in probs.iter().enumerate() {
        kept += p.1 / total;
        if kept >= params.top_p {
            cut = i + 1;
            break;
        }
    }
    probs.truncate(cut);
    let mass: f32 = probs.iter().map(|p| p.1).sum();
    let mut draw = rng.next_f32() * mass;
    for (id, p) in &probs {
        draw -= p;
        if draw <= 0.0 {
            return *id;
        }
    }
    probs.last().map_or_else(argmax, |p| p.0)
}
