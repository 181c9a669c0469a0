//! Parsing a `.prompt` file: front matter, metadata, reprompt settings and the template, all
//! with spans, plus every finding that needs nothing but the text.
//!
//! Follows the Dotprompt reference: optional leading `#` comment lines, a `---` fenced YAML
//! front matter, reserved keys kept as metadata, dotted keys collected into `ext`
//! (`a.b.c: v` → `ext["a.b"]["c"] = v`), and the body trimmed when front matter is present.
//! Findings that need the file system (partials, datasets, model files) live in `check`.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use serde_json::{Map, Value};

use crate::diagnostic::{Code, Diagnostic, Severity};
use crate::picoschema::{self, NoSchemas};
use crate::settings::{self, KNOWN_MODELS, Settings};
use crate::span::Span;
use crate::template::{self, TemplateScan};
use crate::yaml::{self, YamlErrorKind, YamlKind, YamlNode};

/// Undefined variables that get a did-you-mean suggestion (see `check_variables`).
const MAX_SUGGESTED: usize = 64;

/// Largest file parsed; anything bigger is reported, not read.
pub const MAX_FILE_BYTES: usize = 4 * 1024 * 1024;

/// Reserved Dotprompt front-matter keys (kept as metadata); anything else undotted is dropped.
pub const RESERVED_KEYS: &[&str] = &[
    "config",
    "description",
    "ext",
    "input",
    "model",
    "name",
    "output",
    "raw",
    "toolDefs",
    "tools",
    "variant",
    "version",
];

/// Common undotted keys authors write that Dotprompt silently drops.
const METADATA_KEY: &str = "metadata";

#[derive(Clone, Debug)]
pub struct FrontMatter {
    /// The YAML text between the fences.
    pub span: Span,
    /// The parsed YAML (spans are file offsets); `None` when it did not parse.
    pub root: Option<YamlNode>,
}

/// A parsed `.prompt` file.
#[derive(Clone, Debug)]
pub struct PromptDocument {
    /// The text parsed (lossily decoded if the file was not UTF-8).
    pub source: String,
    pub front_matter: Option<FrontMatter>,
    /// Where the template body is in `source`.
    pub body_span: Span,
    /// Name and variant from the file name (`name.variant.prompt`), if parsed from a path.
    pub file_name: Option<String>,
    pub file_variant: Option<String>,
    /// Reserved keys as written (`model`, `config`, `input`, …), schemas not yet compiled.
    pub reserved: Map<String, Value>,
    /// Dotted keys: `ext["reprompt"]["task"]`.
    pub ext: Map<String, Value>,
    /// The whole front matter as parsed.
    pub raw: Map<String, Value>,
    pub settings: Settings,
    pub scan: TemplateScan,
    pub diagnostics: Vec<Diagnostic>,
}

impl PromptDocument {
    pub fn template(&self) -> &str {
        &self.source[self.body_span.start..self.body_span.end]
    }

    /// The prompt's name: front matter `name`, else the file name.
    pub fn name(&self) -> Option<&str> {
        self.reserved.get("name").and_then(Value::as_str).or(self.file_name.as_deref())
    }

    pub fn variant(&self) -> Option<&str> {
        self.reserved.get("variant").and_then(Value::as_str).or(self.file_variant.as_deref())
    }

    pub fn model(&self) -> Option<&str> {
        self.reserved.get("model").and_then(Value::as_str)
    }

    pub fn has_errors(&self) -> bool {
        self.diagnostics.iter().any(|d| d.severity == Severity::Error)
    }

    /// The span of a top-level front-matter key and of its value.
    pub fn entry_span(&self, key: &str) -> Option<(Span, Span)> {
        let root = self.front_matter.as_ref()?.root.as_ref()?;
        root.get(key).map(|(k, v)| (k.span, v.span))
    }

    /// The compiled input schema (Picoschema → JSON Schema), if any and valid.
    pub fn input_schema(&self) -> Option<Value> {
        let schema = self.reserved.get("input")?.get("schema")?;
        picoschema::compile(schema, &NoSchemas).ok().flatten()
    }

    /// Variables declared by the input schema and `input.default`.
    pub fn declared_variables(&self) -> Option<Vec<String>> {
        let input = self.reserved.get("input")?;
        let mut names = self.input_schema().and_then(|s| picoschema::property_names(&s));
        if let Some(Value::Object(defaults)) = input.get("default") {
            names.get_or_insert_with(Vec::new).extend(defaults.keys().cloned());
        }
        names
    }
}

/// Splits `name.variant.prompt` (or `_partial.prompt`) into name and variant.
pub fn name_and_variant(path: &Path) -> (Option<String>, Option<String>) {
    let Some(file) = path.file_name().and_then(|f| f.to_str()) else { return (None, None) };
    let stem = file.strip_suffix(".prompt").unwrap_or(file);
    let stem = stem.strip_prefix('_').unwrap_or(stem);
    match stem.rsplit_once('.') {
        Some((name, variant)) if !name.is_empty() && !variant.is_empty() => {
            (Some(name.to_string()), Some(variant.to_string()))
        }
        _ => (Some(stem.to_string()), None),
    }
}

/// Parses raw bytes: invalid UTF-8 and oversized input become diagnostics, never panics.
pub fn parse_bytes(bytes: &[u8], path: Option<&Path>) -> PromptDocument {
    if bytes.len() > MAX_FILE_BYTES {
        let mut doc = empty_document(String::new(), path);
        doc.diagnostics.push(Diagnostic::error(
            Code::FileTooLarge,
            Span::at(0),
            format!("the file is {} bytes; prompts larger than {} bytes are not parsed", bytes.len(), MAX_FILE_BYTES),
        ));
        return doc;
    }
    match std::str::from_utf8(bytes) {
        Ok(text) => parse(text, path),
        Err(err) => {
            let text = String::from_utf8_lossy(bytes).into_owned();
            let at = err.valid_up_to();
            let mut doc = parse(&text, path);
            doc.diagnostics.insert(
                0,
                Diagnostic::error(
                    Code::InvalidUtf8,
                    Span::new(at, at + char::REPLACEMENT_CHARACTER.len_utf8()),
                    format!("invalid UTF-8 at byte {at}: save the file as UTF-8"),
                ),
            );
            doc
        }
    }
}

fn empty_document(source: String, path: Option<&Path>) -> PromptDocument {
    let (file_name, file_variant) = path.map(name_and_variant).unwrap_or_default();
    PromptDocument {
        body_span: Span::new(0, source.len()),
        source,
        front_matter: None,
        file_name,
        file_variant,
        reserved: Map::new(),
        ext: Map::new(),
        raw: Map::new(),
        settings: Settings::default(),
        scan: TemplateScan::default(),
        diagnostics: Vec::new(),
    }
}

/// The fences of a front matter: the YAML text and the body after it.
struct Fences {
    yaml: Span,
    body_start: usize,
}

enum FenceResult {
    None,
    Found(Fences),
    Unclosed(Span),
}

/// Finds `---` fenced front matter after optional `#` comment and blank lines.
fn find_fences(source: &str) -> FenceResult {
    let mut offset = 0;
    let mut lines = lines_inclusive(source);
    let open = loop {
        let Some(line) = lines.next() else { return FenceResult::None };
        let content = line.trim_end_matches(['\n', '\r']);
        if content.starts_with('#') || content.trim_matches([' ', '\t']).is_empty() {
            offset += line.len();
            continue;
        }
        if is_fence(content) {
            break Span::new(offset, offset + content.len());
        }
        return FenceResult::None;
    };
    offset += lines_inclusive(&source[open.start..]).next().map_or(0, str::len);
    if !source[open.start..offset].ends_with(['\n', '\r']) {
        return FenceResult::Unclosed(open); // `---` on the last line
    }
    let yaml_start = offset;
    for line in lines {
        let content = line.trim_end_matches(['\n', '\r']);
        if is_fence(content) {
            // The YAML excludes the newline before the closing fence.
            let yaml_end = offset.max(yaml_start);
            return FenceResult::Found(Fences {
                yaml: Span::new(yaml_start, yaml_end),
                body_start: offset + line.len(),
            });
        }
        offset += line.len();
    }
    FenceResult::Unclosed(open)
}

/// The lines of `source` with their endings (`\n`, `\r\n` or a lone `\r`).
fn lines_inclusive(source: &str) -> impl Iterator<Item = &str> {
    let starts = crate::span::line_starts(source);
    let ends: Vec<usize> = starts.iter().skip(1).copied().chain([source.len()]).collect();
    starts.into_iter().zip(ends).filter(|(start, end)| end > start).map(move |(start, end)| &source[start..end])
}

fn is_fence(line: &str) -> bool {
    line.strip_prefix("---").is_some_and(|rest| rest.trim().is_empty())
}

/// Parses a `.prompt` text. `path` gives the default name and variant.
pub fn parse(source: &str, path: Option<&Path>) -> PromptDocument {
    let mut doc = empty_document(source.to_string(), path);
    if source.len() > MAX_FILE_BYTES {
        doc.diagnostics.push(Diagnostic::error(Code::FileTooLarge, Span::at(0), "the prompt is too large to parse"));
        doc.body_span = Span::at(0);
        return doc;
    }
    // A byte-order mark is not part of the text.
    let start = if source.starts_with('\u{feff}') { 3 } else { 0 };
    match find_fences(&source[start..]) {
        FenceResult::None => {
            doc.body_span = Span::new(start, source.len());
        }
        FenceResult::Unclosed(open) => {
            doc.diagnostics.push(Diagnostic::error(
                Code::UnclosedFrontMatter,
                open.shifted(start),
                "front matter opened with `---` is never closed: add a `---` line after the YAML",
            ));
            doc.body_span = Span::new(start, source.len());
        }
        FenceResult::Found(fences) => {
            let yaml_span = fences.yaml.shifted(start);
            let body = Span::new(fences.body_start + start, source.len());
            doc.body_span = trimmed(source, body);
            let yaml_text = &source[yaml_span.start..yaml_span.end];
            let root = match yaml::load(yaml_text) {
                Ok(root) => Some(shift_node(root, yaml_span.start)),
                Err(err) => {
                    let code = match err.kind {
                        YamlErrorKind::Syntax => Code::InvalidYaml,
                        YamlErrorKind::DuplicateKey => Code::DuplicateKey,
                        YamlErrorKind::TooDeep => Code::TooDeep,
                    };
                    let span = widen_to_char(source, err.span.shifted(yaml_span.start));
                    doc.diagnostics.push(Diagnostic::error(code, span, format!("front matter: {}", err.message)));
                    None
                }
            };
            if let Some(root) = &root {
                read_front_matter(&mut doc, root);
            }
            doc.front_matter = Some(FrontMatter { span: yaml_span, root });
        }
    }
    let body = doc.body_span;
    let mut scan = template::scan(&source[body.start..body.end]);
    shift_scan(&mut scan, body.start);
    doc.diagnostics.extend(scan.diagnostics.iter().cloned());
    doc.scan = scan;
    check_variables(&mut doc);
    check_columns(&mut doc);
    doc.diagnostics.sort_by_key(|d| (d.span.start, d.span.end));
    doc
}

/// A one-character span for an empty error position, so editors can show it.
fn widen_to_char(source: &str, span: Span) -> Span {
    if !span.is_empty() || span.start >= source.len() {
        return span;
    }
    let len = source[span.start..].chars().next().map_or(0, char::len_utf8);
    Span::new(span.start, span.start + len)
}

fn trimmed(source: &str, span: Span) -> Span {
    let text = &source[span.start..span.end];
    let lead = text.len() - text.trim_start().len();
    let trail = text.len() - text.trim_end().len();
    if lead == text.len() {
        return Span::at(span.end);
    }
    Span::new(span.start + lead, span.end - trail)
}

fn shift_node(mut node: YamlNode, delta: usize) -> YamlNode {
    node.span = node.span.shifted(delta);
    node.kind = match node.kind {
        YamlKind::Scalar { .. } => node.kind,
        YamlKind::Sequence(items) => YamlKind::Sequence(items.into_iter().map(|n| shift_node(n, delta)).collect()),
        YamlKind::Mapping(entries) => {
            YamlKind::Mapping(entries.into_iter().map(|(k, v)| (shift_node(k, delta), shift_node(v, delta))).collect())
        }
    };
    node
}

fn shift_scan(scan: &mut TemplateScan, delta: usize) {
    for m in &mut scan.mustaches {
        m.span = m.span.shifted(delta);
        if let Some(expr) = &mut m.expr {
            shift_expr(expr, delta);
        }
    }
    for b in &mut scan.blocks {
        b.open = b.open.shifted(delta);
        b.close = b.close.map(|c| c.shifted(delta));
    }
    for v in &mut scan.variables {
        v.span = v.span.shifted(delta);
    }
    for p in &mut scan.partials {
        p.span = p.span.shifted(delta);
    }
    for (_, span) in &mut scan.roles {
        *span = span.shifted(delta);
    }
    scan.diagnostics = std::mem::take(&mut scan.diagnostics).into_iter().map(|d| d.shifted(delta)).collect();
}

fn shift_expr(expr: &mut template::Expr, delta: usize) {
    fn shift_term(term: &mut template::Term, delta: usize) {
        match term {
            template::Term::Path { span, .. } | template::Term::Literal { span, .. } => *span = span.shifted(delta),
            template::Term::SubExpression { expr, span } => {
                *span = span.shifted(delta);
                shift_expr(expr, delta);
            }
        }
    }
    shift_term(&mut expr.head, delta);
    expr.params.iter_mut().for_each(|t| shift_term(t, delta));
    for arg in &mut expr.hash {
        arg.key_span = arg.key_span.shifted(delta);
        shift_term(&mut arg.value, delta);
    }
}

fn read_front_matter(doc: &mut PromptDocument, root: &YamlNode) {
    let entries = match &root.kind {
        YamlKind::Mapping(entries) => entries,
        YamlKind::Scalar { value: Value::Null, .. } => return,
        _ => {
            doc.diagnostics.push(Diagnostic::error(
                Code::InvalidYaml,
                root.span,
                format!("front matter must be a mapping of keys to values, not {}", root.type_name()),
            ));
            return;
        }
    };
    let mut reprompt_entries = Vec::new();
    for (key, value) in entries {
        let Some(name) = key.as_key() else { continue };
        let json = value.to_json();
        doc.raw.insert(name.to_string(), json.clone());
        if RESERVED_KEYS.contains(&name) {
            check_reserved(name, value, &mut doc.diagnostics);
            doc.reserved.insert(name.to_string(), json);
        } else if let Some((namespace, field)) = name.rsplit_once('.') {
            let entry = doc.ext.entry(namespace.to_string()).or_insert_with(|| Value::Object(Map::new()));
            if let Value::Object(map) = entry {
                map.insert(field.to_string(), json);
            }
            if let Some(setting) = name.strip_prefix("reprompt.") {
                reprompt_entries.push((setting, key, value));
            }
        } else if name == METADATA_KEY {
            // Genkit reads `metadata`; Dotprompt's parser keeps it in `raw` only.
            doc.reserved.insert(name.to_string(), json);
        } else {
            let suggestion = crate::diagnostic::did_you_mean(name, RESERVED_KEYS.iter().copied())
                .map(str::to_string)
                .or_else(|| {
                    crate::diagnostic::did_you_mean(name, settings::SETTINGS.iter().map(|(n, _)| *n))
                        .map(|s| format!("reprompt.{s}"))
                });
            let hint = match &suggestion {
                Some(s) => format!(": did you mean `{s}`?"),
                None => ": use a dotted key such as `myapp.key` for custom settings".to_string(),
            };
            doc.diagnostics.push(
                Diagnostic::warning(Code::UnknownField, key.span, format!("Dotprompt ignores the key `{name}`{hint}"))
                    .with_suggestion(suggestion),
            );
        }
    }
    doc.settings = settings::read(&reprompt_entries, &mut doc.diagnostics);
    if let Some(reward) = &doc.settings.reward
        && reward.value.components.iter().any(|(n, _)| n == "json_schema")
        && doc.reserved.get("output").and_then(|o| o.get("schema")).is_none()
    {
        doc.diagnostics.push(Diagnostic::error(
            Code::InvalidField,
            reward.span,
            "the `json_schema` reward needs an `output.schema`: the schema an output must satisfy",
        ));
    }
}

fn check_reserved(name: &str, value: &YamlNode, diagnostics: &mut Vec<Diagnostic>) {
    let expect = |what: &str| {
        Diagnostic::error(Code::InvalidField, value.span, format!("`{name}` must be {what}, not {}", value.type_name()))
    };
    match name {
        "name" | "variant" | "version" | "description" if !matches!(value.kind, YamlKind::Scalar { .. }) => {
            diagnostics.push(expect("text"));
        }
        "model" => match &value.kind {
            YamlKind::Scalar { value: Value::String(model), .. } => {
                if !settings::is_model_path(model) && !KNOWN_MODELS.contains(&model.as_str()) {
                    let suggestion =
                        crate::diagnostic::did_you_mean(model, KNOWN_MODELS.iter().copied()).map(str::to_string);
                    diagnostics.push(
                        Diagnostic::warning(
                            Code::UnknownModel,
                            value.span,
                            format!(
                                "reprompt cannot run model `{model}`: use {} or a path to a .gguf file",
                                KNOWN_MODELS.iter().map(|m| format!("`{m}`")).collect::<Vec<_>>().join(", ")
                            ),
                        )
                        .with_suggestion(suggestion),
                    );
                }
            }
            _ => diagnostics.push(expect("a model name")),
        },
        "config" => match &value.kind {
            YamlKind::Mapping(entries) => {
                for (k, v) in entries {
                    let key = k.as_key().unwrap_or_default();
                    let number = matches!(v.to_json(), Value::Number(_));
                    let bad = match key {
                        "temperature" | "topP" => !number,
                        "topK" | "maxOutputTokens" => v.to_json().as_u64().is_none(),
                        "stopSequences" => !matches!(v.kind, YamlKind::Sequence(_)),
                        _ => false,
                    };
                    if bad {
                        let what = match key {
                            "topK" | "maxOutputTokens" => "a whole number",
                            "stopSequences" => "a list of strings",
                            _ => "a number",
                        };
                        diagnostics.push(Diagnostic::error(
                            Code::InvalidField,
                            v.span,
                            format!("`config.{key}` must be {what}"),
                        ));
                    }
                }
            }
            _ => diagnostics.push(expect("a mapping")),
        },
        "input" | "output" => match &value.kind {
            YamlKind::Mapping(_) => {
                if let Some((_, schema)) = value.get("schema")
                    && let Err(err) = picoschema::compile(&schema.to_json(), &NoSchemas)
                {
                    let span = path_span(schema, &err.path);
                    diagnostics.push(Diagnostic::error(
                        Code::InvalidSchema,
                        span,
                        format!("`{name}.schema`: {}", err.message),
                    ));
                }
                if name == "input"
                    && let Some((_, default)) = value.get("default")
                    && !matches!(default.kind, YamlKind::Mapping(_))
                {
                    diagnostics.push(Diagnostic::error(
                        Code::InvalidField,
                        default.span,
                        "`input.default` must be a mapping of variable values",
                    ));
                }
                if name == "output"
                    && let Some((_, format)) = value.get("format")
                {
                    let ok = format
                        .as_str()
                        .is_some_and(|f| matches!(f, "json" | "text" | "array" | "enum" | "jsonl" | "media"));
                    if !ok {
                        diagnostics.push(Diagnostic::error(
                            Code::InvalidField,
                            format.span,
                            "`output.format` must be one of json, text, array, enum, jsonl, media",
                        ));
                    }
                }
            }
            _ => diagnostics.push(expect("a mapping")),
        },
        "tools" => {
            let ok = matches!(&value.kind, YamlKind::Sequence(items) if items.iter().all(|i| i.as_str().is_some()));
            if !ok {
                diagnostics.push(expect("a list of tool names"));
            }
        }
        _ => {}
    }
}

/// The span of the node reached by following mapping keys from `node` (the deepest one found).
fn path_span(node: &YamlNode, path: &[String]) -> Span {
    let mut current = node;
    let mut span = node.span;
    for key in path {
        match current.get(key) {
            Some((k, v)) => {
                span = if matches!(v.kind, YamlKind::Mapping(_)) { k.span } else { v.span };
                current = v;
            }
            None => break,
        }
    }
    span
}

/// Undefined variables (read by the template, absent from the input schema) and unused ones.
fn check_variables(doc: &mut PromptDocument) {
    let Some(declared) = doc.declared_variables() else { return };
    let declared_set: HashSet<&str> = declared.iter().map(String::as_str).collect();
    let mut seen = HashSet::new();
    for var in &doc.scan.variables {
        if !declared_set.contains(var.name.as_str()) && seen.insert(var.name.as_str()) {
            // Suggestions compare a name with every declared one: past the first few undefined
            // names (a generated file), the warning goes without one rather than taking O(u·d).
            let suggestion = (seen.len() <= MAX_SUGGESTED)
                .then(|| crate::diagnostic::did_you_mean(&var.name, declared.iter().map(String::as_str)))
                .flatten()
                .map(str::to_string);
            let hint = suggestion
                .as_ref()
                .map(|s| format!(": did you mean `{s}`?"))
                .unwrap_or_else(|| ": add it to `input.schema`".into());
            let mut diagnostic = Diagnostic::warning(
                Code::UndefinedVariable,
                var.span,
                format!("`{}` is not declared in the input schema{hint}", var.name),
            )
            .with_suggestion(suggestion);
            if let Some((key, _)) = doc.entry_span("input") {
                diagnostic = diagnostic.with_related(key, "input variables are declared here");
            }
            doc.diagnostics.push(diagnostic);
        }
    }
    // Partials that see the root context may use any variable: leave unused ones to `check`,
    // which reads the partials.
    if doc.scan.uses_whole_context || doc.scan.partials.iter().any(|p| p.at_root && !p.has_context) {
        return;
    }
    let used: HashSet<&str> = doc.scan.variables.iter().map(|v| v.name.as_str()).collect();
    let unused: Vec<String> = declared.iter().filter(|d| !used.contains(d.as_str())).cloned().collect();
    let keys = schema_key_spans(doc);
    let fallback = doc.entry_span("input").map_or(Span::at(0), |(k, _)| k);
    for name in unused {
        let span = keys.get(name.as_str()).copied().unwrap_or(fallback);
        doc.diagnostics.push(Diagnostic::warning(
            Code::UnusedVariable,
            span,
            format!("input variable `{name}` is never used in the template"),
        ));
    }
}

/// `reprompt.columns` keys that name no input variable (a typo there is otherwise silent: the
/// variable it meant reads its own column name). Without an input schema the template's
/// variables count, and a template whose partials see the whole context is left alone.
fn check_columns(doc: &mut PromptDocument) {
    let Some(root) = doc.front_matter.as_ref().and_then(|f| f.root.as_ref()) else { return };
    let Some((_, columns)) = root.get("reprompt.columns") else { return };
    let YamlKind::Mapping(entries) = &columns.kind else { return };
    let variables: Vec<String> = match doc.declared_variables() {
        Some(declared) => declared,
        None if doc.scan.uses_whole_context || doc.scan.partials.iter().any(|p| p.at_root && !p.has_context) => return,
        None => doc.scan.variables.iter().map(|v| v.name.clone()).collect(),
    };
    let mut found = Vec::new();
    for (key, _) in entries {
        let Some(name) = key.as_key() else { continue };
        if variables.iter().any(|v| v == name) {
            continue;
        }
        let suggestion =
            crate::diagnostic::did_you_mean(name, variables.iter().map(String::as_str)).map(str::to_string);
        let hint = suggestion.as_ref().map(|s| format!(": did you mean `{s}`?")).unwrap_or_default();
        found.push(
            Diagnostic::warning(
                Code::InvalidField,
                key.span,
                format!("`reprompt.columns` maps `{name}`, which is not an input variable{hint}"),
            )
            .with_suggestion(suggestion),
        );
    }
    doc.diagnostics.extend(found);
}

/// The span of the input-schema (or default) key naming each variable, the schema's first.
pub fn schema_key_spans(doc: &PromptDocument) -> HashMap<String, Span> {
    let mut spans = HashMap::new();
    let Some((_, input)) = doc.front_matter.as_ref().and_then(|f| f.root.as_ref()).and_then(|r| r.get("input")) else {
        return spans;
    };
    for section in ["schema", "default"] {
        let Some((_, node)) = input.get(section) else { continue };
        let node = node.get("properties").map_or(node, |(_, v)| v);
        for (key, _) in node.entries() {
            let text = key.as_key().unwrap_or_default();
            let bare = text.split('(').next().unwrap_or(text).trim_end_matches('?');
            spans.entry(bare.to_string()).or_insert(key.span);
        }
    }
    spans
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn front_matter_is_found_whatever_the_line_endings() {
        for newline in ["\n", "\r\n", "\r"] {
            let text = ["---", "model: ./m.gguf", "---", "Hi {{name}}"].join(newline);
            let doc = parse(&text, None);
            assert_eq!(doc.model(), Some("./m.gguf"), "{newline:?}");
            assert_eq!(&text[doc.body_span.start..doc.body_span.end], "Hi {{name}}", "{newline:?}");
        }
    }

    #[test]
    fn undefined_and_unused_variables_point_at_their_own_names() {
        let text = "---\ninput:\n  schema:\n    title: string\n    body?: string, the text\n    spare(array): string\n---\n{{titel}} {{titel}} {{zzz}} {{body}}";
        let doc = parse(text, None);
        let messages: Vec<(&str, &str)> = doc
            .diagnostics
            .iter()
            .filter(|d| matches!(d.code, Code::UndefinedVariable | Code::UnusedVariable))
            .map(|d| (&text[d.span.start..d.span.end], d.message.as_str()))
            .collect();
        assert_eq!(messages.len(), 4, "{messages:?}");
        // In the file's order: the schema's keys, then the template's names (each once).
        assert!(messages[0].0 == "title" && messages[0].1.contains("`title` is never used"), "{messages:?}");
        assert!(messages[1].0 == "spare(array)" && messages[1].1.contains("`spare`"), "{messages:?}");
        assert!(messages[2].0 == "titel" && messages[2].1.contains("did you mean `title`"), "{messages:?}");
        assert!(messages[3].0 == "zzz" && messages[3].1.contains("add it to `input.schema`"), "{messages:?}");
    }

    #[test]
    fn a_column_mapping_for_no_variable_is_named() {
        let found = |text: &str| -> Vec<(String, String, Option<String>)> {
            let doc = parse(text, None);
            doc.diagnostics
                .iter()
                .filter(|d| d.code == Code::InvalidField)
                .map(|d| (text[d.span.start..d.span.end].to_string(), d.message.clone(), d.suggestion.clone()))
                .collect()
        };
        let schema = "---\ninput:\n  schema:\n    sentence: string\n";
        let typo = format!("{schema}reprompt.columns: {{sentense: text, sentence: text}}\n---\n{{{{sentence}}}}");
        assert_eq!(
            found(&typo),
            [(
                "sentense".to_string(),
                "`reprompt.columns` maps `sentense`, which is not an input variable: did you mean `sentence`?"
                    .to_string(),
                Some("sentence".to_string())
            )]
        );
        assert!(found(&format!("{schema}reprompt.columns: {{sentence: text}}\n---\n{{{{sentence}}}}")).is_empty());
        // Without a schema the template's variables count; a root partial may read any.
        assert_eq!(found("---\nreprompt.columns: {q: question}\n---\n{{question}}").len(), 1);
        assert!(found("---\nreprompt.columns: {q: question}\n---\n{{> shared}}").is_empty());
    }

    #[test]
    fn a_generated_file_with_many_undefined_names_is_checked_without_comparing_each_with_all() {
        let declared: String = (0..500).map(|i| format!("    name{i}: string\n")).collect();
        let used: String = (0..500).map(|i| format!("{{{{name{i}x}}}}")).collect();
        let text = format!("---\ninput:\n  schema:\n{declared}---\n{used}");
        let doc = parse(&text, None);
        let undefined: Vec<&Diagnostic> =
            doc.diagnostics.iter().filter(|d| d.code == Code::UndefinedVariable).collect();
        assert_eq!(undefined.len(), 500);
        let suggested = undefined.iter().filter(|d| d.message.contains("did you mean")).count();
        assert_eq!(suggested, MAX_SUGGESTED);
        assert_eq!(doc.diagnostics.iter().filter(|d| d.code == Code::UnusedVariable).count(), 500);
    }
}
