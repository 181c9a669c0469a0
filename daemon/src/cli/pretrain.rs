//! `reprompt pretrain`: trains PPO's policy across several prompts and tasks — each a whole
//! optimization run at a budget, the policy carried from one run into the next — and writes it
//! as a warm start for `reprompt optimize --policy`.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};

use super::optimize::{
    DEFAULT_BUDGET, PolicyChoice, WarmStart, checkpoint_dir, lock_run_dir, optimize, progress_bar, read_prompt,
    show_progress,
};
use crate::cli::score::open_engine;
use crate::engine::{DeviceChoice, store};
use crate::eval::{EvalCache, Evaluator, FileCache};
use crate::optimize::search::{Search, SearchConfig, Strategy};

#[derive(Debug, clap::Args)]
pub struct PretrainArgs {
    /// The `.prompt` files to train on (each with training and validation splits, one model)
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// Where to write the policy (safetensors)
    #[arg(long)]
    pub out: PathBuf,
    /// Passes over the files
    #[arg(long, default_value_t = 1, value_parser = crate::cli::at_least_one)]
    pub rounds: usize,
    /// Example evaluations per run (validation included)
    #[arg(long, default_value_t = DEFAULT_BUDGET)]
    pub budget: usize,
    /// Seed of the first run; each later run adds one
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Where the first run's policy starts: none or a policy file
    #[arg(long, default_value = "none")]
    pub policy: PolicyChoice,
    /// Paraphrases sampled from the task model per instruction sentence (0: none)
    #[arg(long, default_value_t = 2)]
    pub paraphrases: usize,
    /// Working directory for the runs' checkpoints (a rerun resumes finished runs)
    #[arg(long, default_value = ".reprompt/pretrain")]
    pub work: PathBuf,
    /// cpu, cuda or cuda:N
    #[arg(long, default_value = "cpu")]
    pub device: DeviceChoice,
}

pub fn run(args: &PretrainArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    // Every file is checked (and must use the same model) before the model loads.
    let mut prompts = Vec::new();
    for file in &args.files {
        let (doc, _) = read_prompt(file)?;
        prompts.push((file.clone(), doc));
    }
    let model = |doc: &reprompt_protocol::PromptDocument| doc.model().unwrap_or(store::DEFAULT_MODEL).to_string();
    let first_model = model(&prompts[0].1);
    let first = model_identity(&prompts[0].1, &prompts[0].0);
    if let Some((file, doc)) = prompts.iter().find(|(file, doc)| model_identity(doc, file) != first) {
        bail!(
            "{} uses the model {}, {} uses {}: a policy is trained for one model",
            file.display(),
            model(doc),
            prompts[0].0.display(),
            first_model
        );
    }
    let mut warm = WarmStart::resolve(&args.policy)?;
    // One pre-training at a time in a work directory: they would share its runs' checkpoints.
    let _lock = lock_run_dir(&args.work)?;
    let engine = open_engine(&prompts[0].1, &prompts[0].0, args.device)?;
    let evaluator = Evaluator::new(engine, Some(Box::new(FileCache::default_location()) as Box<dyn EvalCache>));
    if let Some(parent) = args.out.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    }
    let pct = |x: f64| if x.is_finite() { format!("{:.1}", 100.0 * x) } else { "–".into() };
    let mut n = 0;
    for _ in 0..args.rounds {
        for (file, doc) in &prompts {
            n += 1;
            let seed = args.seed.wrapping_add(n as u64 - 1);
            let stem = file.file_stem().and_then(|s| s.to_str()).unwrap_or("prompt");
            let run_dir = args.work.join(format!("{n:02}-{stem}-{seed}"));
            let _run_lock = lock_run_dir(&run_dir)?;
            let config = SearchConfig {
                strategy: Strategy::Ppo,
                budget: args.budget,
                seed,
                paraphrases: args.paraphrases,
                ..SearchConfig::default()
            };
            let bar = progress_bar(args.budget, false);
            bar.set_prefix(format!("run {n} {stem}"));
            let report =
                optimize(&evaluator, doc, file, config, warm.as_ref(), Some(&run_dir), false, None, &mut |p| {
                    show_progress(&bar, p)
                })?;
            bar.finish_and_clear();
            let policy = Search::policy_path(&checkpoint_dir(&run_dir));
            let bytes = std::fs::read(&policy).with_context(|| format!("reading {}", policy.display()))?;
            crate::files::write_atomic(&args.out, &bytes).with_context(|| format!("writing {}", args.out.display()))?;
            warm = Some(WarmStart::from_bytes(format!("{} after run {n}", args.out.display()), &bytes)?);
            let (o, b) = (&report.original, &report.best);
            if n == 1 {
                // After the first run, not before: a run refused at its start prints no table.
                writeln!(
                    out,
                    "| run | prompt | seed | train before → after | validation before → after | evaluations | seconds |"
                )?;
                writeln!(out, "|---|---|---|---|---|---|---|")?;
            }
            writeln!(
                out,
                "| {n} | {} | {seed} | {} → {} | {} → {} | {} | {:.0} |",
                file.display(),
                pct(o.train),
                pct(b.train),
                pct(o.validation),
                pct(b.validation),
                report.evaluations,
                report.seconds
            )?;
            out.flush()?;
        }
    }
    let digest = warm.map(|w| w.digest).unwrap_or_default();
    writeln!(out, "\npolicy {} ({digest}) for {first_model}, {n} runs", args.out.display())?;
    Ok(())
}

/// Which model a prompt runs: a known model by its name, a file by its real path
/// (`./m.gguf` in two folders is two models; two spellings of one file are one).
fn model_identity(doc: &reprompt_protocol::PromptDocument, file: &Path) -> String {
    let model = doc.model().unwrap_or(store::DEFAULT_MODEL);
    if let Some(known) = store::known(model) {
        return format!("known {}", known.name);
    }
    let path = file.parent().unwrap_or(Path::new("")).join(model);
    format!("file {}", std::fs::canonicalize(&path).unwrap_or(path).display())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_model_means_one_file_not_one_spelling() {
        let root = std::env::temp_dir().join(format!("reprompt-pretrain-models-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        for dir in ["a", "b"] {
            std::fs::create_dir_all(root.join(dir)).unwrap();
            std::fs::write(root.join(dir).join("m.gguf"), dir).unwrap();
        }
        let doc = |model: &str| reprompt_protocol::parse(&format!("---\nmodel: {model}\n---\n{{{{x}}}}"), None);
        let a = model_identity(&doc("./m.gguf"), &root.join("a/p.prompt"));
        assert_ne!(a, model_identity(&doc("./m.gguf"), &root.join("b/p.prompt")));
        assert_eq!(a, model_identity(&doc("../a/m.gguf"), &root.join("b/p.prompt")));
        let known = model_identity(&doc(store::DEFAULT_MODEL), &root.join("a/p.prompt"));
        assert_eq!(known, model_identity(&doc(store::DEFAULT_MODEL), &root.join("b/p.prompt")));
        assert_ne!(known, a);
        let _ = std::fs::remove_dir_all(&root);
    }
}
