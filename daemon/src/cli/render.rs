//! `reprompt render file.prompt [--data data.json]`: the rendered messages as Dotprompt JSON.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context as _, bail};
use reprompt_protocol::check::{DirEnvironment, check_document};
use reprompt_protocol::diagnostic::did_you_mean;
use reprompt_protocol::render::{CompiledPrompt, DataArgument};
use reprompt_protocol::{LineIndex, PromptDocument, Severity};
use serde_json::{Map, Value};

use crate::report;

#[derive(Debug, clap::Args)]
pub struct RenderArgs {
    /// The `.prompt` file to render
    pub file: PathBuf,
    /// JSON with `input`, `context` and `messages` (the Dotprompt data argument); `-` reads stdin
    #[arg(long)]
    pub data: Option<PathBuf>,
}

pub fn run(args: &RenderArgs, out: &mut dyn Write, err: &mut dyn Write) -> anyhow::Result<()> {
    let doc = crate::cli::read_prompt_file(&args.file)?;
    let diagnostics = check_document(&doc, &args.file);
    let errors: Vec<_> = diagnostics.iter().filter(|d| d.severity == Severity::Error).collect();
    if !errors.is_empty() {
        let index = LineIndex::new(&doc.source);
        for d in &errors {
            writeln!(err, "{}", report::render(&args.file.display().to_string(), &doc.source, &index, d))?;
        }
        bail!("{} has {} error(s); fix them to render", args.file.display(), errors.len());
    }
    let data: DataArgument = match &args.data {
        None => DataArgument::default(),
        Some(path) => {
            let text = if path.as_os_str() == "-" {
                std::io::read_to_string(std::io::stdin()).context("reading data from stdin")?
            } else {
                std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?
            };
            let expected =
                || format!("{}: expected {{\"input\": {{…}}, \"context\": {{…}}, \"messages\": […]}}", path.display());
            let value: Value = serde_json::from_str(&text).with_context(expected)?;
            for key in value.as_object().into_iter().flat_map(Map::keys) {
                if !DATA_KEYS.contains(&key.as_str()) {
                    let hint = did_you_mean(key, DATA_KEYS.iter().copied())
                        .map_or_else(String::new, |k| format!(" (did you mean `{k}`?)"));
                    let known = DATA_KEYS.join(", ");
                    warn(err, format!("`{key}` is not a field of the data argument ({known}): ignored{hint}"))?;
                }
            }
            let data = serde_json::from_value(value).with_context(expected)?;
            warn_input(&doc, &data, err)?; // without data, the template is rendered as it stands
            data
        }
    };
    let env = DirEnvironment::for_file(&args.file);
    let compiled =
        CompiledPrompt::new(&doc, &env, &Map::new()).with_context(|| format!("compiling {}", args.file.display()))?;
    let rendered = compiled.render(&data).with_context(|| format!("rendering {}", args.file.display()))?;
    serde_json::to_writer_pretty(&mut *out, &rendered)?;
    writeln!(out)?;
    Ok(())
}

/// The fields of the Dotprompt data argument.
const DATA_KEYS: &[&str] = &["input", "context", "messages", "docs"];

fn warn(err: &mut dyn Write, message: String) -> std::io::Result<()> {
    writeln!(err, "warning: {}", report::printable(&message))
}

/// Says where `data.input` misses a variable the input schema requires (and `input.default`
/// does not give), or has one the schema does not declare: either renders, the first as empty
/// text, the second not at all, so a typo in the data would pass unseen.
fn warn_input(doc: &PromptDocument, data: &DataArgument, err: &mut dyn Write) -> std::io::Result<()> {
    let Some(schema) = doc.input_schema() else { return Ok(()) };
    let declared = doc.declared_variables().unwrap_or_default();
    let defaults = doc.reserved.get("input").and_then(|i| i.get("default")).and_then(Value::as_object);
    let given = |name: &str| data.input.contains_key(name) || defaults.is_some_and(|d| d.contains_key(name));
    for name in schema.get("required").and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str) {
        if !given(name) {
            warn(
                err,
                format!("the data's `input` has no `{name}`, which the input schema requires: it renders empty"),
            )?;
        }
    }
    if schema.get("additionalProperties") == Some(&Value::Bool(false)) {
        for name in data.input.keys().filter(|k| !declared.contains(k)) {
            let hint = did_you_mean(name, declared.iter().map(String::as_str))
                .map(|d| format!(" (did you mean `{d}`?)"))
                .unwrap_or_default();
            warn(err, format!("`{name}` in the data's `input` is not declared by the input schema{hint}"))?;
        }
    }
    Ok(())
}
