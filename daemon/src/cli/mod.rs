//! The `reprompt` subcommands, written against `Write` so tests can run them in-process.

pub mod bench;
pub mod bench_optimize;
pub mod check;
pub mod labels;
pub mod models;
pub mod optimize;
pub mod plot;
pub mod pretrain;
pub mod render;
pub mod score;

use std::path::Path;

use anyhow::Context as _;
use reprompt_protocol::{PromptDocument, parse_bytes};

/// Reads and parses the `.prompt` file a command is given. Any text parses as a template, so
/// a dataset, model or policy passed by mistake is refused by its extension here, not later
/// as a prompt missing its settings.
pub fn read_prompt_file(path: &Path) -> anyhow::Result<PromptDocument> {
    let extension = path.extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase();
    let what = match extension.as_str() {
        "tsv" | "csv" | "jsonl" | "ndjson" => Some("a dataset; pass the .prompt file that names it"),
        "gguf" => Some("a model; a .prompt file names it in `model:`"),
        "safetensors" => Some("a policy; pass it as `--policy`"),
        _ => None,
    };
    if let Some(what) = what {
        anyhow::bail!("{} is {what}", path.display());
    }
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(parse_bytes(&bytes, Some(path)))
}

/// Parses a count that must be at least 1 (`--limit 0` would score nothing and say 0%).
pub fn at_least_one(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(e.to_string()),
    }
}

/// Says on stderr where a validation or test split (`only` that one, by setting name) names an
/// earlier split's file or shares its examples (the `split-overlap` warnings of `reprompt
/// check`): the scores a command is about to report on it would not be held out.
pub fn warn_split_overlaps(doc: &PromptDocument, path: &Path, only: Option<&str>) {
    if only == Some("dataset") {
        return; // the training split is not held out, nor said to be
    }
    let span_of = |split: &str| doc.settings.splits().find(|(name, _)| *name == split).map(|(_, file)| file.span);
    let only = only.map(span_of);
    for d in reprompt_protocol::check::check_datasets(doc, path) {
        if d.code == reprompt_protocol::Code::SplitOverlap && only.is_none_or(|span| span == Some(d.span)) {
            eprintln!("warning[{}]: {}", d.code.as_str(), crate::report::printable(&d.message));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dataset_model_or_policy_passed_as_the_prompt_is_named_for_what_it_is() {
        let dir = std::env::temp_dir().join(format!("reprompt-read-prompt-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for (name, expected) in [
            ("dev.TSV", "is a dataset; pass the .prompt file that names it"),
            ("train.jsonl", "is a dataset"),
            ("model.gguf", "is a model"),
            ("policy.safetensors", "is a policy; pass it as `--policy`"),
        ] {
            let path = dir.join(name);
            std::fs::write(&path, "sentence\tlabel\n").unwrap();
            let err = read_prompt_file(&path).expect_err(name).to_string();
            assert!(err.starts_with(&path.display().to_string()) && err.contains(expected), "{err}");
        }
        // Any other name is read as a prompt: a template without front matter is one.
        let path = dir.join("notes.txt");
        std::fs::write(&path, "Review: {{sentence}}").unwrap();
        assert_eq!(read_prompt_file(&path).unwrap().scan.variables[0].name, "sentence");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
