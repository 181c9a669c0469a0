//! `reprompt render file.prompt [--data data.json]`: the rendered messages as Dotprompt JSON.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context as _, bail};
use reprompt_protocol::check::{DirEnvironment, check_document};
use reprompt_protocol::render::{CompiledPrompt, DataArgument};
use reprompt_protocol::{LineIndex, Severity};
use serde_json::Map;

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
            serde_json::from_str(&text).with_context(|| {
                format!("{}: expected {{\"input\": {{…}}, \"context\": {{…}}, \"messages\": […]}}", path.display())
            })?
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
