//! `reprompt check <files|dirs>`: diagnostics for every `.prompt` file, like a compiler.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context as _;
use reprompt_protocol::check::{self, CheckedFile};
use reprompt_protocol::{LineIndex, Severity};
use serde::Serialize;

use crate::report;

#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// `.prompt` files or directories to search for them (default: the current directory)
    pub paths: Vec<PathBuf>,
    /// Print diagnostics as JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(Serialize)]
struct JsonFile<'a> {
    path: String,
    diagnostics: Vec<report::JsonDiagnostic<'a>>,
}

#[derive(Serialize)]
struct JsonReport<'a> {
    files: Vec<JsonFile<'a>>,
    errors: usize,
    warnings: usize,
}

/// Runs the check; returns whether any error was found.
pub fn run(args: &CheckArgs, out: &mut dyn Write) -> anyhow::Result<bool> {
    let roots = if args.paths.is_empty() { vec![PathBuf::from(".")] } else { args.paths.clone() };
    let mut files = Vec::new();
    for root in &roots {
        if !root.exists() {
            anyhow::bail!("{}: no such file or directory", root.display());
        }
        files.extend(check::collect_prompt_files(root).with_context(|| format!("reading {}", root.display()))?);
    }
    files.sort();
    files.dedup();
    if files.is_empty() && !args.json {
        let roots: Vec<String> = roots.iter().map(|r| r.display().to_string()).collect();
        eprintln!("warning: no .prompt files found in {}", roots.join(", "));
    }
    let checked: Vec<CheckedFile> = files.iter().map(|f| check::check_file(f)).collect();
    let count =
        |severity: Severity| checked.iter().flat_map(|c| &c.diagnostics).filter(|d| d.severity == severity).count();
    let (errors, warnings) = (count(Severity::Error), count(Severity::Warning));
    if args.json {
        let indexes: Vec<LineIndex> = checked.iter().map(|c| LineIndex::new(&c.document.source)).collect();
        let files = checked
            .iter()
            .zip(&indexes)
            .map(|(c, index)| JsonFile {
                path: c.path.display().to_string(),
                diagnostics: c.diagnostics.iter().map(|d| report::to_json(index, d)).collect(),
            })
            .collect();
        serde_json::to_writer_pretty(&mut *out, &JsonReport { files, errors, warnings })?;
        writeln!(out)?;
    } else {
        for file in &checked {
            let index = LineIndex::new(&file.document.source);
            let path = file.path.display().to_string();
            for diagnostic in &file.diagnostics {
                writeln!(out, "{}", report::render(&path, &file.document.source, &index, diagnostic))?;
            }
        }
        let plural = |n: usize, what: &str| format!("{n} {what}{}", if n == 1 { "" } else { "s" });
        writeln!(
            out,
            "checked {}: {}, {}",
            plural(checked.len(), "file"),
            plural(errors, "error"),
            plural(warnings, "warning")
        )?;
    }
    Ok(errors > 0)
}
