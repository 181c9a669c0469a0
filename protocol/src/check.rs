//! Checks that need the file system: partials (`_name.prompt`), dataset files and model paths.
//!
//! [`check_file`] is what `reprompt check` and the language server run: parse, then resolve
//! what the file names relative to its own directory. Every finding is a diagnostic; nothing
//! here panics or stops at the first problem.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::diagnostic::{Code, Diagnostic, Related};
use crate::document::{self, PromptDocument};
use crate::render::Environment;
use crate::span::Span;
use crate::template::{self, TemplateScan};

/// Deepest chain of partials followed.
const MAX_PARTIAL_DEPTH: usize = 16;

/// Partials from the directory of a prompt: `{{> name}}` is `_name.prompt` there.
#[derive(Clone, Debug)]
pub struct DirEnvironment {
    pub dir: PathBuf,
}

impl DirEnvironment {
    pub fn for_file(path: &Path) -> Self {
        Self { dir: path.parent().map(Path::to_path_buf).unwrap_or_default() }
    }

    pub fn partial_path(&self, name: &str) -> Option<PathBuf> {
        // A partial name may hold sub-directories (`{{> shared/header}}`) but never climbs out.
        if name.is_empty()
            || name.split(['/', '\\']).any(|s| s == ".." || s.is_empty())
            || Path::new(name).is_absolute()
        {
            return None;
        }
        let (dir, file) = match name.rsplit_once('/') {
            Some((dir, file)) => (self.dir.join(dir), file),
            None => (self.dir.clone(), name),
        };
        Some(dir.join(format!("_{file}.prompt")))
    }
}

impl Environment for DirEnvironment {
    fn partial(&self, name: &str) -> Option<String> {
        let path = self.partial_path(name)?;
        let bytes = std::fs::read(path).ok()?;
        Some(String::from_utf8_lossy(&bytes).into_owned())
    }
}

/// A checked file: its text (for snippets) and every diagnostic, sorted by position.
#[derive(Clone, Debug)]
pub struct CheckedFile {
    pub path: PathBuf,
    pub document: PromptDocument,
    pub diagnostics: Vec<Diagnostic>,
}

/// Reads and checks one `.prompt` file.
pub fn check_file(path: &Path) -> CheckedFile {
    match std::fs::read(path) {
        Ok(bytes) => {
            let document = document::parse_bytes(&bytes, Some(path));
            let diagnostics = check_document(&document, path);
            CheckedFile { path: path.to_path_buf(), document, diagnostics }
        }
        Err(err) => {
            let document = document::parse("", Some(path));
            let diagnostics =
                vec![Diagnostic::error(Code::Io, Span::at(0), format!("cannot read {}: {err}", path.display()))];
            CheckedFile { path: path.to_path_buf(), document, diagnostics }
        }
    }
}

/// The document's own diagnostics plus those about partials, datasets and the model file.
pub fn check_document(doc: &PromptDocument, path: &Path) -> Vec<Diagnostic> {
    let mut diagnostics = doc.diagnostics.clone();
    let env = DirEnvironment::for_file(path);
    check_partials(doc, &env, &mut diagnostics);
    let base = path.parent().unwrap_or(Path::new(""));
    for (split, file) in doc.settings.splits() {
        let Some(resolved) = doc.settings.split_path(split, path) else { continue };
        if !resolved.is_file() {
            diagnostics.push(Diagnostic::error(
                Code::MissingDataset,
                file.span,
                format!(
                    "`reprompt.{split}`: no file at {} (paths are relative to the .prompt file)",
                    resolved.display()
                ),
            ));
        }
    }
    if let Some(model) = doc.model()
        && crate::settings::is_model_path(model)
    {
        let resolved = base.join(model);
        if !resolved.is_file() {
            let span = doc.entry_span("model").map_or(Span::at(0), |(_, v)| v);
            diagnostics.push(Diagnostic::error(
                Code::MissingModel,
                span,
                format!("no model file at {}", resolved.display()),
            ));
        }
    }
    diagnostics.sort_by_key(|d| (d.span.start, d.span.end));
    diagnostics
}

struct PartialWalk<'a> {
    env: &'a DirEnvironment,
    /// Parsed partials by name (`None`: missing).
    cache: HashMap<String, Option<TemplateScan>>,
}

impl PartialWalk<'_> {
    fn scan(&mut self, name: &str) -> Option<&TemplateScan> {
        if !self.cache.contains_key(name) {
            let scan = self.env.partial(name).map(|source| template::scan(&source));
            self.cache.insert(name.to_string(), scan);
        }
        self.cache.get(name).and_then(Option::as_ref)
    }

    /// Follows the partials of `name`; returns the first cycle (as a chain) or missing nested
    /// partial found, and collects root-scope variables the partials read.
    fn walk(&mut self, name: &str, chain: &mut Vec<String>, used: &mut Vec<String>, fault: &mut Option<PartialFault>) {
        if fault.is_some() {
            return;
        }
        if chain.iter().any(|n| n == name) {
            let mut cycle = chain.clone();
            cycle.push(name.to_string());
            *fault = Some(PartialFault::Cycle(cycle));
            return;
        }
        if chain.len() >= MAX_PARTIAL_DEPTH {
            return;
        }
        let Some(scan) = self.scan(name) else {
            if !chain.is_empty() {
                *fault = Some(PartialFault::MissingNested {
                    name: name.to_string(),
                    from: chain.last().cloned().unwrap_or_default(),
                });
            }
            return;
        };
        let scan = scan.clone();
        used.extend(scan.variables.iter().map(|v| v.name.clone()));
        chain.push(name.to_string());
        for nested in scan.partials.iter().filter(|p| p.at_root && !p.has_context) {
            self.walk(&nested.name, chain, used, fault);
        }
        for nested in scan.partials.iter().filter(|p| !p.at_root || p.has_context) {
            // Partials with their own context still must exist and not loop.
            let mut ignored = Vec::new();
            self.walk(&nested.name, chain, &mut ignored, fault);
        }
        chain.pop();
    }
}

enum PartialFault {
    Cycle(Vec<String>),
    MissingNested { name: String, from: String },
}

fn check_partials(doc: &PromptDocument, env: &DirEnvironment, diagnostics: &mut Vec<Diagnostic>) {
    if doc.scan.partials.is_empty() {
        return;
    }
    let mut walk = PartialWalk { env, cache: HashMap::new() };
    let mut used_by_partials = Vec::new();
    for partial in &doc.scan.partials {
        let location = env.partial_path(&partial.name);
        if walk.scan(&partial.name).is_none() {
            let file = location.map(|p| p.display().to_string()).unwrap_or_else(|| format!("_{}.prompt", partial.name));
            diagnostics.push(Diagnostic::error(
                Code::MissingPartial,
                partial.span,
                format!("partial `{}` not found: expected {file}", partial.name),
            ));
            continue;
        }
        let mut chain = Vec::new();
        let mut used = Vec::new();
        let mut fault = None;
        walk.walk(&partial.name, &mut chain, &mut used, &mut fault);
        if partial.at_root && !partial.has_context {
            used_by_partials.extend(used);
        }
        used_by_partials.extend(partial.hash_keys.iter().cloned());
        match fault {
            Some(PartialFault::Cycle(cycle)) => {
                let mut d = Diagnostic::error(
                    Code::CircularPartial,
                    partial.span,
                    format!(
                        "partials include each other: {}",
                        cycle.iter().map(|c| format!("`{c}`")).collect::<Vec<_>>().join(" → ")
                    ),
                );
                if let Some(path) = env.partial_path(&partial.name) {
                    d.related.push(Related {
                        message: "the cycle starts in this partial".into(),
                        span: Span::at(0),
                        path: Some(path.display().to_string()),
                    });
                }
                diagnostics.push(d);
            }
            Some(PartialFault::MissingNested { name, from }) => {
                let mut d = Diagnostic::error(
                    Code::MissingPartial,
                    partial.span,
                    format!("partial `{from}` includes `{name}`, which does not exist"),
                );
                if let Some(path) = env.partial_path(&from) {
                    d.related.push(Related {
                        message: format!("`{name}` is included here"),
                        span: Span::at(0),
                        path: Some(path.display().to_string()),
                    });
                }
                diagnostics.push(d);
            }
            None => {}
        }
    }
    // Unused-variable findings were deferred to here when partials see the root context.
    let deferred = !doc.scan.uses_whole_context && doc.scan.partials.iter().any(|p| p.at_root && !p.has_context);
    if let (true, Some(declared)) = (deferred, doc.declared_variables()) {
        let used: Vec<&str> = doc
            .scan
            .variables
            .iter()
            .map(|v| v.name.as_str())
            .chain(used_by_partials.iter().map(String::as_str))
            .collect();
        for name in declared.iter().filter(|d| !used.contains(&d.as_str())) {
            let span = document::schema_key_span(doc, name).unwrap_or(Span::at(0));
            diagnostics.push(Diagnostic::warning(
                Code::UnusedVariable,
                span,
                format!("input variable `{name}` is never used in the template or its partials"),
            ));
        }
    }
}

/// Every `.prompt` file under `root` (or `root` itself), sorted; hidden and `target` dirs skipped.
pub fn collect_prompt_files(root: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    if root.is_file() {
        files.push(root.to_path_buf());
        return Ok(files);
    }
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let entry = entry?;
            let path = entry.path();
            let name = entry.file_name();
            let name = name.to_string_lossy();
            let kind = entry.file_type()?;
            if kind.is_dir() {
                if !name.starts_with('.') && name != "target" && name != "node_modules" {
                    stack.push(path);
                }
            } else if name.ends_with(".prompt") && !name.starts_with('_') {
                files.push(path);
            }
        }
    }
    files.sort();
    Ok(files)
}
