//! Checks that need the file system: partials (`_name.prompt`), dataset files and model paths.
//!
//! [`check_file`] is what `reprompt check` and the language server run: parse, then resolve
//! what the file names relative to its own directory ([`check_document`]) and read the rows of
//! the datasets it names ([`check_datasets`]; up to three files of at most 32 MiB each, so a
//! caller checking on every keystroke should reuse its results while the files are unchanged).
//! Every finding is a diagnostic; nothing here panics or stops at the first problem.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use crate::dataset::{self, Dataset, DatasetSpec};
use crate::diagnostic::{Code, Diagnostic, Related, Severity};
use crate::document::{self, PromptDocument};
use crate::render::Environment;
use crate::settings::{Spanned, plural};
use crate::span::Span;
use crate::template;

/// Deepest chain of partials followed.
const MAX_PARTIAL_DEPTH: usize = 16;

/// Largest dataset file whose rows [`check_datasets`] reads; a larger one is read (and its
/// rows checked) when it is loaded to score.
pub const MAX_CHECKED_DATASET_BYTES: u64 = 32 << 20;

/// Problems of one dataset file reported one by one; the rest are counted in the last.
const MAX_DATASET_PROBLEMS: usize = 5;

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

/// Reads and checks one `.prompt` file, the rows of its datasets included.
pub fn check_file(path: &Path) -> CheckedFile {
    match std::fs::read(path) {
        Ok(bytes) => {
            let document = document::parse_bytes(&bytes, Some(path));
            let mut diagnostics = check_document(&document, path);
            diagnostics.extend(check_datasets(&document, path));
            diagnostics.sort_by_key(|d| (d.span.start, d.span.end));
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

/// A split as [`check_datasets`] found it: its setting, its file, and its examples if they read.
struct ReadSplit<'a> {
    name: &'static str,
    file: &'a Spanned<String>,
    canonical: Option<PathBuf>,
    data: Option<Dataset>,
}

/// The rows of every dataset the prompt names, read as scoring reads them (columns for its
/// variables and the gold, each label known, no empty input): each problem is an error at
/// the setting's value, `file:line` in its message. A validation or test split naming an
/// earlier split's file, or holding an input an earlier split holds too, is a warning: its
/// scores are not held out; so is a `reprompt.budget` below the examples of train and
/// validation, which `reprompt optimize` would refuse. Only for a document without errors of
/// its own, since the columns and labels a row needs come from its settings; a missing file is
/// [`check_document`]'s, the rows of a file over [`MAX_CHECKED_DATASET_BYTES`] are left to the
/// load.
pub fn check_datasets(doc: &PromptDocument, path: &Path) -> Vec<Diagnostic> {
    let mut diagnostics = Vec::new();
    if doc.diagnostics.iter().any(|d| d.severity == Severity::Error) {
        return diagnostics;
    }
    let spec = DatasetSpec::for_document(doc);
    // In order (train, validation, test): each split's file, and its examples where they read.
    let mut splits: Vec<ReadSplit> = Vec::new();
    for (split, file) in doc.settings.splits() {
        let Some(resolved) = doc.settings.split_path(split, path) else { continue };
        let Some(meta) = std::fs::metadata(&resolved).ok().filter(std::fs::Metadata::is_file) else { continue };
        let canonical = resolved.canonicalize().ok();
        let mut read = ReadSplit { name: split, file, canonical, data: None };
        if meta.len() > MAX_CHECKED_DATASET_BYTES {
            splits.push(read);
            continue;
        }
        let problems = match dataset::load(&resolved, &spec) {
            Ok(data) => {
                read.data = Some(data);
                splits.push(read);
                continue;
            }
            Err(problems) => problems,
        };
        splits.push(read);
        let shown = problems.len().min(MAX_DATASET_PROBLEMS);
        for (i, problem) in problems.iter().take(shown).enumerate() {
            let mut message = format!("`reprompt.{split}`: {problem}");
            if i + 1 == shown && problems.len() > shown {
                let more = plural(problems.len() - shown, "more problem");
                message.push_str(&format!(" (and {more} in this file)"));
            }
            diagnostics.push(Diagnostic::error(Code::InvalidDataset, file.span, message));
        }
    }
    // A budget for `reprompt optimize` too small to score the original on both of its splits.
    let size =
        |name: &str| splits.iter().find(|r| r.name == name).and_then(|r| r.data.as_ref()).map(|d| d.examples.len());
    // Without a validation split, `optimize` holds out half of the training examples as one.
    let validation = if doc.settings.validation.is_some() { size("validation") } else { Some(0) };
    if let (Some(budget), Some(train), Some(validation)) = (doc.settings.budget, size("dataset"), validation)
        && budget < (train + validation) as u64
        && let Some((_, span)) = doc.entry_span("reprompt.budget")
    {
        let examples = if doc.settings.validation.is_some() {
            format!("{train} training and {validation} validation examples ({})", train + validation)
        } else {
            format!("{train} training examples (half of them held out for validation)")
        };
        diagnostics.push(Diagnostic::warning(
            Code::InvalidField,
            span,
            format!("a budget of {budget} evaluations cannot score even the original on the {examples}: `reprompt optimize` needs more"),
        ));
    }
    for (i, later) in splits.iter().enumerate().skip(1) {
        let (split, file, earlier) = (later.name, later.file, &splits[..i]);
        let not_held_out = "its scores are not held out";
        // The same file as an earlier split (however spelled), known without reading it.
        if let Some(same) = earlier.iter().find(|e| e.canonical.is_some() && e.canonical == later.canonical) {
            let same = same.name;
            diagnostics.push(Diagnostic::warning(
                Code::SplitOverlap,
                file.span,
                format!("`reprompt.{split}` names the same file as `reprompt.{same}`: {not_held_out}"),
            ));
            continue;
        }
        // Else inputs an earlier split holds too: test against train before validation.
        let Some(data) = &later.data else { continue };
        let found = earlier.iter().find_map(|e| {
            let shared = dataset::shared_inputs(e.data.as_ref()?, data);
            (!shared.is_empty()).then_some((e.name, e.file, shared))
        });
        if let Some((earlier, earlier_file, shared)) = found {
            let pairs: Vec<String> = shared
                .iter()
                .take(3)
                .map(|(at, there)| format!("{}:{at} = {}:{there}", file.value, earlier_file.value))
                .collect();
            diagnostics.push(Diagnostic::warning(
                Code::SplitOverlap,
                file.span,
                format!(
                    "`reprompt.{split}`: {} of {} examples are also in `reprompt.{earlier}` ({}{}): {not_held_out}",
                    shared.len(),
                    data.examples.len(),
                    pairs.join(", "),
                    if shared.len() > 3 { ", …" } else { "" }
                ),
            ));
        }
    }
    diagnostics
}

struct PartialWalk<'a> {
    env: &'a DirEnvironment,
    /// What each partial's own text holds, by name (`None`: missing).
    cache: HashMap<String, Option<PartialFacts>>,
    /// Each partial walked to the end: the root-scope variables it reads, its nested ones
    /// included, and its height (1 for a partial that includes none).
    done: HashMap<String, (Vec<String>, usize)>,
}

/// What the walk needs of one partial's scan.
struct PartialFacts {
    variables: Vec<String>,
    /// Nested partials: name and whether it reads the root scope (at the root, no context).
    nested: Vec<(String, bool)>,
    /// Its own first error: the renderer must not compile it.
    error: Option<Diagnostic>,
}

impl PartialWalk<'_> {
    fn facts(&mut self, name: &str) -> Option<&PartialFacts> {
        if !self.cache.contains_key(name) {
            let facts = self.env.partial(name).map(|source| {
                let scan = template::scan(&source);
                PartialFacts {
                    variables: scan.variables.iter().map(|v| v.name.clone()).collect(),
                    nested: scan.partials.iter().map(|p| (p.name.clone(), p.at_root && !p.has_context)).collect(),
                    error: scan.diagnostics.into_iter().find(|d| d.severity == Severity::Error),
                }
            });
            self.cache.insert(name.to_string(), facts);
        }
        self.cache.get(name).and_then(Option::as_ref)
    }

    /// Follows the partials of `name` depth first, each once; returns the root-scope variables
    /// they read (where they see the root) and `name`'s height, or the first fault: a cycle (as a chain), a
    /// missing nested partial, a chain deeper than the renderer may follow, a partial with
    /// errors of its own.
    fn walk(&mut self, name: &str, chain: &mut Vec<String>) -> Result<(Vec<String>, usize), PartialFault> {
        if let Some((used, height)) = self.done.get(name) {
            // Walked before from elsewhere: here it must fit below this chain too.
            if chain.len() + height > MAX_PARTIAL_DEPTH {
                let mut deep = chain.clone();
                deep.push(name.to_string());
                return Err(PartialFault::TooDeep(deep));
            }
            return Ok((used.clone(), *height));
        }
        if chain.iter().any(|n| n == name) {
            let mut cycle = chain.clone();
            cycle.push(name.to_string());
            return Err(PartialFault::Cycle(cycle));
        }
        if chain.len() >= MAX_PARTIAL_DEPTH {
            let mut deep = chain.clone();
            deep.push(name.to_string());
            return Err(PartialFault::TooDeep(deep));
        }
        let Some(facts) = self.facts(name) else {
            return Err(PartialFault::MissingNested {
                name: name.to_string(),
                from: chain.last().cloned().unwrap_or_default(),
            });
        };
        if let Some(error) = &facts.error {
            return Err(PartialFault::Broken { name: name.to_string(), error: error.clone() });
        }
        let mut used = facts.variables.clone();
        let nested = facts.nested.clone();
        let mut height = 1;
        chain.push(name.to_string());
        for (nested, sees_root) in nested {
            // Partials with their own context still must exist and not loop.
            let (theirs, below) = self.walk(&nested, chain)?;
            height = height.max(below + 1);
            if sees_root {
                used.extend(theirs);
            }
        }
        chain.pop();
        used.sort();
        used.dedup();
        self.done.insert(name.to_string(), (used.clone(), height));
        Ok((used, height))
    }
}

enum PartialFault {
    Cycle(Vec<String>),
    MissingNested { name: String, from: String },
    TooDeep(Vec<String>),
    Broken { name: String, error: Diagnostic },
}

fn check_partials(doc: &PromptDocument, env: &DirEnvironment, diagnostics: &mut Vec<Diagnostic>) {
    if doc.scan.partials.is_empty() {
        return;
    }
    let mut walk = PartialWalk { env, cache: HashMap::new(), done: HashMap::new() };
    let mut used_by_partials = Vec::new();
    // A partial that cannot be followed reads variables no one knows: no unused findings then.
    let mut faulted = false;
    for partial in &doc.scan.partials {
        let location = env.partial_path(&partial.name);
        if walk.facts(&partial.name).is_none() {
            let file = location.map(|p| p.display().to_string()).unwrap_or_else(|| format!("_{}.prompt", partial.name));
            diagnostics.push(Diagnostic::error(
                Code::MissingPartial,
                partial.span,
                format!("partial `{}` not found: expected {file}", partial.name),
            ));
            continue;
        }
        let walked = walk.walk(&partial.name, &mut Vec::new()).map(|(used, _)| used);
        faulted |= walked.is_err();
        if let Ok(used) = &walked
            && partial.at_root
            && !partial.has_context
        {
            used_by_partials.extend(used.iter().cloned());
        }
        used_by_partials.extend(partial.hash_keys.iter().cloned());
        let chain = |names: &[String]| names.iter().map(|c| format!("`{c}`")).collect::<Vec<_>>().join(" → ");
        match walked.err() {
            Some(PartialFault::TooDeep(deep)) => diagnostics.push(Diagnostic::error(
                Code::TooDeep,
                partial.span,
                format!("partials nest deeper than {MAX_PARTIAL_DEPTH}: {}", chain(&deep)),
            )),
            Some(PartialFault::Broken { name, error }) => {
                let mut d = Diagnostic::error(error.code, partial.span, format!("partial `{name}`: {}", error.message));
                if let Some(path) = env.partial_path(&name) {
                    d.related.push(Related {
                        message: "the error is here".into(),
                        span: error.span,
                        path: Some(path.display().to_string()),
                    });
                }
                diagnostics.push(d);
            }
            Some(PartialFault::Cycle(cycle)) => {
                let mut d = Diagnostic::error(
                    Code::CircularPartial,
                    partial.span,
                    format!("partials include each other: {}", chain(&cycle)),
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
    let deferred =
        !faulted && !doc.scan.uses_whole_context && doc.scan.partials.iter().any(|p| p.at_root && !p.has_context);
    if let (true, Some(declared)) = (deferred, doc.declared_variables()) {
        let used: HashSet<&str> = doc
            .scan
            .variables
            .iter()
            .map(|v| v.name.as_str())
            .chain(used_by_partials.iter().map(String::as_str))
            .collect();
        let keys = document::schema_key_spans(doc);
        for name in declared.iter().filter(|d| !used.contains(d.as_str())) {
            let span = keys.get(name.as_str()).copied().unwrap_or(Span::at(0));
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A directory holding `files` (name, text); the main prompt is `main.prompt` in it.
    fn dir_with(test: &str, files: &[(String, String)]) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("reprompt-check-{test}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        for (name, text) in files {
            std::fs::write(dir.join(name), text).unwrap();
        }
        dir
    }

    fn errors(dir: &Path) -> Vec<Diagnostic> {
        let path = dir.join("main.prompt");
        let doc = document::parse(&std::fs::read_to_string(&path).unwrap(), Some(&path));
        check_document(&doc, &path).into_iter().filter(|d| d.severity == Severity::Error).collect()
    }

    #[test]
    fn a_partial_with_errors_of_its_own_is_an_error_where_it_is_included() {
        let main = "---\ninput:\n  schema:\n    a: string\n---\n{{> deep}}\n".to_string();
        let dir = dir_with("broken", &[("main.prompt".into(), main), ("_deep.prompt".into(), "{{#if a}}".repeat(300))]);
        let found = errors(&dir);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].message.starts_with("partial `deep`:"), "{found:?}");
        assert_eq!(found[0].related[0].path.as_deref(), Some(dir.join("_deep.prompt").to_str().unwrap()));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_chain_of_partials_longer_than_the_walk_follows_is_an_error() {
        // A cycle through 17 partials: longer than the walk follows, it is too deep.
        let mut files: Vec<(String, String)> =
            (0..17).map(|i| (format!("_p{i}.prompt"), format!("{{{{> p{}}}}}", (i + 1) % 17))).collect();
        files.push(("main.prompt".into(), "{{> p0}}".into()));
        let dir = dir_with("deep", &files);
        let found = errors(&dir);
        assert_eq!(found.iter().map(|d| d.code).collect::<Vec<_>>(), [Code::TooDeep], "{found:?}");
        let _ = std::fs::remove_dir_all(&dir);

        // A chain of 20 included from its deep end first: each partial is walked once, and
        // found again at the top it still nests too deep.
        let mut files: Vec<(String, String)> = (0..20)
            .map(|i| (format!("_p{i}.prompt"), if i < 19 { format!("{{{{> p{}}}}}", i + 1) } else { "end".into() }))
            .collect();
        files.push(("main.prompt".into(), (0..20).rev().map(|i| format!("{{{{> p{i}}}}}")).collect()));
        let dir = dir_with("deep-memo", &files);
        let found = errors(&dir);
        assert!(!found.is_empty() && found.iter().all(|d| d.code == Code::TooDeep), "{found:?}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn each_partial_is_walked_once() {
        // Four levels of a hundred references each: 10^8 paths, five partials. The variable
        // the last one reads counts as used.
        let names = ["a", "b", "c", "d"];
        let mut files: Vec<(String, String)> = names
            .iter()
            .zip(["b", "c", "d", "e"])
            .map(|(name, next)| (format!("_{name}.prompt"), format!("{{{{> {next}}}}}").repeat(100)))
            .collect();
        files.push(("_e.prompt".into(), "{{x}}".into()));
        files.push(("main.prompt".into(), "---\ninput:\n  schema:\n    x: string\n    y: string\n---\n{{> a}}".into()));
        let dir = dir_with("fanout", &files);
        let path = dir.join("main.prompt");
        let doc = document::parse(&std::fs::read_to_string(&path).unwrap(), Some(&path));
        let found = check_document(&doc, &path);
        let unused: Vec<&str> =
            found.iter().filter(|d| d.code == Code::UnusedVariable).map(|d| d.message.as_str()).collect();
        assert_eq!(unused.len(), 1, "{found:?}");
        assert!(unused[0].contains("`y`"), "{unused:?}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn dotprompt_model_names_are_names_not_missing_files() {
        let dir = dir_with("model", &[("main.prompt".into(), "---\nmodel: googleai/gemini-2.5-flash\n---\nhi".into())]);
        let path = dir.join("main.prompt");
        let doc = document::parse(&std::fs::read_to_string(&path).unwrap(), Some(&path));
        let found = check_document(&doc, &path);
        assert!(found.iter().all(|d| d.severity != Severity::Error), "{found:?}");
        assert!(found.iter().any(|d| d.code == Code::UnknownModel), "{found:?}");
        // A path is still a path.
        std::fs::write(&path, "---\nmodel: ./models/tiny.gguf\n---\nhi").unwrap();
        assert_eq!(errors(&dir).iter().map(|d| d.code).collect::<Vec<_>>(), [Code::MissingModel]);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn bad_rows_of_a_dataset_are_errors_at_the_setting_that_names_it() {
        let main = "---\ninput:\n  schema:\n    sentence: string\nreprompt.labels: [bad, good]\n\
                    reprompt.dataset: train.tsv\nreprompt.validation: dev.jsonl\n---\nReview: {{sentence}}\n";
        let dev = [
            r#"{"sentence": "fine", "label": 1}"#,
            r#"{"sentence": "dull", "label": "awful"}"#,
            r#"{"sentence": ""}"#,
            "not json",
            r#"{"sentence": "a", "label": 2}"#,
            r#"{"sentence": "b", "label": 3}"#,
            r#"{"sentence": "c", "label": 4}"#,
        ]
        .join("\n");
        let train = "sentence\tlabel\nfine\t1\ndull\tbad\n";
        let dir = dir_with(
            "datasets",
            &[("main.prompt".into(), main.into()), ("dev.jsonl".into(), dev), ("train.tsv".into(), train.into())],
        );
        let path = dir.join("main.prompt");
        let doc = document::parse(&std::fs::read_to_string(&path).unwrap(), Some(&path));
        // Scoring and rendering check the document alone; they read the rows at load.
        assert!(check_document(&doc, &path).is_empty(), "{:?}", check_document(&doc, &path));
        let found = check_file(&path).diagnostics;
        assert_eq!(found.len(), 5, "{found:?}");
        let value = doc.source.find("dev.jsonl").unwrap();
        for d in &found {
            assert_eq!((d.code, d.severity), (Code::InvalidDataset, Severity::Error), "{d:?}");
            assert_eq!((d.span.start, d.span.end), (value, value + "dev.jsonl".len()), "{d:?}");
            assert!(d.message.starts_with("`reprompt.validation`: "), "{d:?}");
        }
        let dev = dir.join("dev.jsonl").display().to_string();
        assert!(found[0].message.contains(&format!("{dev}:2: unknown label `awful`")), "{found:?}");
        assert!(found[2].message.contains(&format!("{dev}:4: invalid JSON")), "{found:?}");
        assert!(found[4].message.ends_with("(and 1 more problem in this file)"), "{found:?}");

        // A document with an error of its own is not read against its data: the columns and
        // labels a row needs come from its settings.
        std::fs::write(&path, main.replace("reprompt.labels", "reprompt.lables")).unwrap();
        let found = check_file(&path).diagnostics;
        assert!(found.iter().all(|d| d.code != Code::InvalidDataset), "{found:?}");
        assert!(found.iter().any(|d| d.code == Code::UnknownSetting), "{found:?}");

        // Clean data, no findings.
        std::fs::write(&path, main).unwrap();
        std::fs::write(dir.join("dev.jsonl"), r#"{"sentence": "a gem", "label": "good"}"#).unwrap();
        assert!(check_file(&path).diagnostics.is_empty(), "{:?}", check_file(&path).diagnostics);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_split_that_shares_examples_with_an_earlier_one_is_not_held_out() {
        let main = |validation: &str| {
            format!(
                "---\ninput:\n  schema:\n    s: string\nreprompt.labels: [bad, good]\nreprompt.dataset: train.tsv\n\
                 reprompt.validation: {validation}\nreprompt.test: test.tsv\n---\n{{{{s}}}}\n"
            )
        };
        let tsv = |rows: &[&str]| format!("s\tlabel\n{}\n", rows.join("\n"));
        let dir = dir_with(
            "overlap",
            &[
                ("main.prompt".into(), main("dev.tsv")),
                ("train.tsv".into(), tsv(&["a\t0", "b\t1", "c\t0", "d\t1"])),
                ("dev.tsv".into(), tsv(&["e\t0", "f\t1"])),
                // Two of train's inputs (one under another label: the input is what leaks), one of dev's.
                ("test.tsv".into(), tsv(&["x\t0", "c\t1", "f\t1", "b\t1", "y\t0"])),
            ],
        );
        let path = dir.join("main.prompt");
        let warnings = |path: &Path| -> Vec<(String, String)> {
            let checked = check_file(path);
            checked
                .diagnostics
                .iter()
                .filter(|d| d.code == Code::SplitOverlap && d.severity == Severity::Warning)
                .map(|d| (checked.document.source[d.span.start..d.span.end].to_string(), d.message.clone()))
                .collect()
        };
        assert_eq!(
            warnings(&path),
            [(
                "test.tsv".to_string(),
                "`reprompt.test`: 2 of 5 examples are also in `reprompt.dataset` (test.tsv:3 = train.tsv:4, \
                 test.tsv:5 = train.tsv:3): its scores are not held out"
                    .to_string()
            )]
        );
        // Against validation where train shares none.
        std::fs::write(dir.join("test.tsv"), tsv(&["x\t0", "f\t1"])).unwrap();
        let found = warnings(&path);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(
            found[0].1.starts_with("`reprompt.test`: 1 of 2 examples are also in `reprompt.validation`"),
            "{found:?}"
        );
        // The training file named again, under another spelling.
        std::fs::write(&path, main("./train.tsv")).unwrap();
        std::fs::write(dir.join("test.tsv"), tsv(&["x\t0"])).unwrap();
        let found = warnings(&path);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].0, "./train.tsv");
        assert_eq!(
            found[0].1,
            "`reprompt.validation` names the same file as `reprompt.dataset`: its scores are not held out"
        );
        // Named again by test, it is the file test repeats, though validation shares inputs
        // with train; and found without reading the rows (the check reads none of a file whose
        // rows are bad).
        std::fs::write(&path, main("dev.tsv").replace("reprompt.test: test.tsv", "reprompt.test: ./dev.tsv")).unwrap();
        std::fs::write(dir.join("dev.tsv"), tsv(&["a\t0", "f\t1", "g\t7"])).unwrap();
        let checked = check_file(&path);
        let found: Vec<&str> = checked.diagnostics.iter().map(|d| d.message.as_str()).collect();
        assert_eq!(found.len(), 3, "{found:?}"); // the bad row, twice, and the same file
        assert!(found.iter().filter(|m| m.contains("dev.tsv:4: unknown label `7`")).count() == 2, "{found:?}");
        assert!(
            found
                .contains(&"`reprompt.test` names the same file as `reprompt.validation`: its scores are not held out"),
            "{found:?}"
        );
        std::fs::write(dir.join("dev.tsv"), tsv(&["e\t0", "f\t1"])).unwrap();
        // A budget that cannot pay for the original's scores on train and validation (4 + 2).
        std::fs::write(&path, main("dev.tsv").replace("reprompt.test: test.tsv\n", "reprompt.budget: 5\n")).unwrap();
        let checked = check_file(&path);
        let found: Vec<(&str, &str)> = checked
            .diagnostics
            .iter()
            .map(|d| (&checked.document.source[d.span.start..d.span.end], d.message.as_str()))
            .collect();
        assert_eq!(
            found,
            [(
                "5",
                "a budget of 5 evaluations cannot score even the original on the 4 training and 2 validation \
                 examples (6): `reprompt optimize` needs more"
            )]
        );
        std::fs::write(&path, main("dev.tsv").replace("reprompt.test: test.tsv\n", "reprompt.budget: 6\n")).unwrap();
        assert!(check_file(&path).diagnostics.is_empty(), "{:?}", check_file(&path).diagnostics);
        // Without a validation split, `optimize` holds half of train out: the original costs 4.
        let held_out = |budget: u32| {
            main("dev.tsv")
                .replace("reprompt.validation: dev.tsv\n", "")
                .replace("reprompt.test: test.tsv\n", &format!("reprompt.budget: {budget}\n"))
        };
        std::fs::write(&path, held_out(3)).unwrap();
        let found: Vec<String> = check_file(&path).diagnostics.into_iter().map(|d| d.message).collect();
        assert_eq!(
            found,
            ["a budget of 3 evaluations cannot score even the original on the 4 training examples (half of them held \
              out for validation): `reprompt optimize` needs more"]
        );
        std::fs::write(&path, held_out(4)).unwrap();
        assert!(check_file(&path).diagnostics.is_empty(), "{:?}", check_file(&path).diagnostics);
        // Disjoint splits, nothing.
        std::fs::write(&path, main("dev.tsv")).unwrap();
        assert!(warnings(&path).is_empty());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
