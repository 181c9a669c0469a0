//! `reprompt bench engine` (`bench optimize` lives in `bench_optimize`): load time, prompt and decode speed, peak memory, and the cost of
//! scoring SST-2 examples — the numbers BENCHMARKS.md compares with llama.cpp.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context as _, bail};
use candle_core::IndexOp;
use clap::{Args, Subcommand};
use serde_json::json;

use reprompt_protocol::dataset::{self, DatasetSpec};
use reprompt_protocol::settings::Task;

use crate::engine::EngineError;
use crate::engine::model::{Mode, Weights};
use crate::engine::runtime::{GenerateParams, Runtime, RuntimeOptions};
use crate::engine::tokenizer::literal;
use crate::engine::{DeviceChoice, store};

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Engine speed: load, prompt tokens/s, decode tokens/s, peak RSS, ms per scored example
    Engine(EngineBenchArgs),
    /// Optimizer quality: the example prompt through PPO and each baseline at the same budget
    Optimize(super::bench_optimize::OptimizeBenchArgs),
}

#[derive(Debug, Args)]
pub struct EngineBenchArgs {
    /// Model name or .gguf path
    #[arg(long, default_value = store::DEFAULT_MODEL)]
    pub model: String,
    /// Directory with the SST-2 `train.tsv` and `dev.tsv` used for the scoring benchmark
    #[arg(long, default_value = "examples/sentiment/data")]
    pub data: PathBuf,
    /// Timed repetitions per measurement (the median is reported)
    #[arg(long, default_value_t = 5)]
    pub repeats: usize,
    /// cpu, cuda or cuda:N
    #[arg(long, default_value = "cpu")]
    pub device: DeviceChoice,
    /// Print JSON
    #[arg(long)]
    pub json: bool,
}

pub fn run(command: &BenchCommand, out: &mut dyn Write) -> anyhow::Result<()> {
    match command {
        BenchCommand::Engine(args) => engine(args, out),
        BenchCommand::Optimize(args) => super::bench_optimize::run(args, out),
    }
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

/// Peak resident set size of this process, MB (Linux; 0 elsewhere).
pub fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// The SST-2 examples of a split file, as (sentence, label id) pairs.
fn read_sst2(path: &Path) -> anyhow::Result<Vec<(String, usize)>> {
    let spec = DatasetSpec {
        variables: vec!["sentence".into()],
        optional: Vec::new(),
        columns: serde_json::Map::new(),
        types: Default::default(),
        task: Task::Classify,
        labels: vec!["terrible".into(), "great".into()],
        label_words: Vec::new(),
        data_labels: Vec::new(),
        label_column: "label".into(),
        answer_column: "answer".into(),
    };
    let data = dataset::load(path, &spec).map_err(|issues| {
        anyhow::anyhow!("{}", issues.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))
    })?;
    Ok(data
        .examples
        .into_iter()
        .map(|e| (e.input["sentence"].as_str().unwrap_or_default().to_string(), e.label.unwrap_or(0)))
        .collect())
}

/// The benchmark's classification prompt: instruction, four demonstrations, the input.
/// `bench/llamacpp_score.py` builds the identical text.
pub fn sst2_context(demos: &[(String, usize)], sentence: &str) -> String {
    let words = ["terrible", "great"];
    let mut text = String::from("Classify the sentiment of each movie review as great or terrible.\n\n");
    for (demo, label) in demos {
        text.push_str(&format!("Review: {demo}\nSentiment: {}\n\n", words[*label]));
    }
    text.push_str(&format!("Review: {sentence}\nSentiment:"));
    text
}

fn engine(args: &EngineBenchArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    let path = store::resolve(&args.model, Path::new("."))?;
    let device = args.device.device()?;
    let started = Instant::now();
    let mut rt = Runtime::load(&path, Weights::Both, &device, RuntimeOptions::default())?;
    let load_seconds = started.elapsed().as_secs_f64();
    let repeats = args.repeats.max(1);

    // Prompt processing: b = 1, all positions, logits at the last one.
    let filler = "The film follows a young woman who returns to her small coastal town after years away, and slowly reconnects with the family she left behind. ";
    let long_ids = rt.tokenize(&filler.repeat(80))?;
    let prompt_speed = |rt: &Runtime, n: usize| -> anyhow::Result<f64> {
        let ids = &long_ids[..n];
        let mut times = Vec::new();
        for i in 0..=repeats {
            let t = Instant::now();
            let (hidden, _) = rt.model.forward(ids, 1, n, None, Mode::Dense, false)?;
            let _ = rt.model.logits(&hidden.i(n - 1..n).map_err(EngineError::from)?, Mode::Dense)?;
            if i > 0 {
                times.push(t.elapsed().as_secs_f64());
            }
        }
        Ok(n as f64 / median(times))
    };
    let mut prompt_tps = serde_json::Map::new();
    for n in [64usize, 256, 2048] {
        prompt_tps.insert(n.to_string(), json!(prompt_speed(&rt, n)?));
    }

    // Decode: 64 greedy steps after a 16-token prompt, quantized weights.
    let steps = 64;
    let mut decode = Vec::new();
    for _ in 0..repeats.min(3) {
        let prompt = &long_ids[..16];
        let (hidden, cache) = rt.model.forward(prompt, 1, prompt.len(), None, Mode::Dense, true)?;
        let mut cache = cache.context("cache")?;
        let mut last = hidden.i(prompt.len() - 1..prompt.len()).map_err(EngineError::from)?;
        let t = Instant::now();
        for _ in 0..steps {
            let logits: Vec<f32> = rt
                .model
                .logits(&last, Mode::Quantized)?
                .squeeze(0)
                .and_then(|l| l.to_vec1())
                .map_err(EngineError::from)?;
            let next = logits.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).map_or(0, |(i, _)| i as u32);
            let (hidden, next_cache) = rt.model.forward(&[next], 1, 1, Some(&cache), Mode::Quantized, true)?;
            cache = next_cache.context("cache")?;
            last = hidden;
        }
        decode.push(steps as f64 / t.elapsed().as_secs_f64());
    }
    let decode_tps = median(decode);

    // Scoring: 32 SST-2 dev sentences, instruction + 4 demonstrations, label words.
    let train = read_sst2(&args.data.join("train.tsv"))?;
    let dev = read_sst2(&args.data.join("dev.tsv"))?;
    if train.len() < 18 || dev.len() < 32 {
        bail!("{} needs the 16-shot SST-2 train.tsv and dev.tsv", args.data.display());
    }
    let demos: Vec<(String, usize)> = [0, 16, 1, 17].iter().map(|&i| train[i].clone()).collect();
    // The data is read from a user's path: its text is marked literal like any dataset's.
    let contexts: Vec<String> = dev[..32].iter().map(|(s, _)| literal(&sst2_context(&demos, s))).collect();
    let choices = vec![" great".to_string(), " terrible".to_string()];
    let mut per_example = Vec::new();
    let mut correct = 0;
    for i in 0..=repeats {
        rt.clear_prefixes();
        let t = Instant::now();
        let scores = rt.choice_logprobs(&contexts, &choices)?;
        let elapsed = t.elapsed().as_secs_f64();
        if i > 0 {
            per_example.push(elapsed * 1000.0 / contexts.len() as f64);
        }
        correct =
            scores.iter().zip(&dev).filter(|(s, (_, label))| (if s[0] >= s[1] { 1 } else { 0 }) == *label).count();
    }
    let ms_per_example = median(per_example);
    let tokens_per_example =
        contexts.iter().map(|c| rt.tokenize(c).map(|t| t.len())).sum::<Result<usize, _>>()? / contexts.len();
    // Generation: 8 of those contexts continued together (one batch, the prefix shared) and
    // one at a time, greedy. The texts are counted, not required, equal: decoding rounds
    // activations to 8 bits, and a batched prompt pass's last bits differ from a lone one's, so
    // free text can take another word at a near tie (with dense weights they agree: engine tests).
    let params = GenerateParams { max_tokens: 48, ..GenerateParams::default() };
    let generate_contexts = &contexts[..8];
    let (mut together, mut alone) = (Vec::new(), Vec::new());
    let mut same = 0;
    let mut generated_tokens = 0;
    for i in 0..=repeats.min(3) {
        rt.clear_prefixes();
        let t = Instant::now();
        let batched = rt.generate(generate_contexts, &params)?;
        let batched_seconds = t.elapsed().as_secs_f64();
        rt.clear_prefixes();
        let t = Instant::now();
        let mut single = Vec::new();
        for context in generate_contexts {
            single.extend(rt.generate(std::slice::from_ref(context), &params)?);
        }
        let single_seconds = t.elapsed().as_secs_f64();
        generated_tokens = batched.iter().map(|g| g.tokens).sum::<usize>();
        same = batched.iter().zip(&single).filter(|(a, b)| a == b).count();
        if i > 0 {
            together.push(generated_tokens as f64 / batched_seconds);
            alone.push(single.iter().map(|g| g.tokens).sum::<usize>() as f64 / single_seconds);
        }
    }
    let (together, alone) = (median(together), median(alone));
    // A long prompt with its attention in one block, as before blocks (side by side with the
    // blocked pp2048 above); last, so its transient memory is not in the peak RSS reported.
    let peak_rss = peak_rss_mb();
    let blocks = rt.model.attention_blocks;
    rt.model.attention_blocks = (usize::MAX, usize::MAX);
    let one_block_2048 = prompt_speed(&rt, 2048)?;
    rt.model.attention_blocks = blocks;
    let report = json!({
        "model": path.display().to_string(),
        "device": format!("{:?}", args.device),
        "threads": candle_core::utils::get_num_threads(),
        "load_seconds": load_seconds,
        "prompt_tokens_per_s": prompt_tps,
        "prompt_2048_one_block_tokens_per_s": one_block_2048,
        "decode_tokens_per_s": decode_tps,
        "generate_8_tokens_per_s": together,
        "generate_8_one_at_a_time_tokens_per_s": alone,
        "generate_8_tokens": generated_tokens,
        "generate_8_same_texts": same,
        "ms_per_scored_example": ms_per_example,
        "scored_examples": contexts.len(),
        "tokens_per_scored_example": tokens_per_example,
        "scoring_accuracy": correct as f64 / contexts.len() as f64,
        "peak_rss_mb": peak_rss,
    });
    if args.json {
        writeln!(out, "{}", serde_json::to_string_pretty(&report)?)?;
    } else {
        writeln!(out, "model            {}", path.display())?;
        writeln!(out, "threads          {}", candle_core::utils::get_num_threads())?;
        writeln!(out, "load             {:.2} s", load_seconds)?;
        writeln!(out, "prompt pp64      {:.0} tok/s", prompt_tps["64"].as_f64().unwrap_or(0.0))?;
        writeln!(out, "prompt pp256     {:.0} tok/s", prompt_tps["256"].as_f64().unwrap_or(0.0))?;
        let pp2048 = prompt_tps["2048"].as_f64().unwrap_or(0.0);
        writeln!(
            out,
            "prompt pp2048    {pp2048:.0} tok/s (attention in one block: {one_block_2048:.0} tok/s, {:.2}×)",
            pp2048 / one_block_2048
        )?;
        writeln!(out, "decode tg64      {:.0} tok/s", decode_tps)?;
        writeln!(
            out,
            "generate 8×48    {together:.0} tok/s (one at a time: {alone:.0} tok/s, {:.2}×; {generated_tokens} tokens, {same} of 8 texts the same)",
            together / alone,
        )?;
        writeln!(
            out,
            "scoring          {:.1} ms per SST-2 example ({} examples, {} tokens each, accuracy {:.1}%)",
            ms_per_example,
            contexts.len(),
            tokens_per_example,
            100.0 * correct as f64 / contexts.len() as f64
        )?;
        writeln!(out, "peak RSS         {peak_rss:.0} MB")?;
    }
    Ok(())
}
