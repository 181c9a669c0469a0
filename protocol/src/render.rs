//! Rendering a prompt to messages, exactly as the Dotprompt spec says, on the `handlebars` crate.
//!
//! A [`CompiledPrompt`] holds a Handlebars registry with the Dotprompt helpers, the partials the
//! template needs, and the resolved metadata; render it once per input. Context variables
//! (`@state.x`, `@auth.y`, `@metadata.prompt`) are data variables in Dotprompt; Handlebars-rust
//! has no data frames with sub-paths, so the scanner rewrites each such path into a lookup
//! helper before compiling (precise, span-based: never a text search-and-replace).

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};

use handlebars::{
    Context, Handlebars, Helper, HelperDef, HelperResult, Output, RenderContext, RenderError, RenderErrorReason,
    Renderable, ScopedJson,
};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::document::PromptDocument;
use crate::messages::{Message, to_messages};
use crate::picoschema::{self, SchemaResolver};
use crate::template::{self, BUILTIN_DATA, Expr, MustacheKind, Term};

/// What a render is given: input variables, context (`@state`, `@auth`, …) and prior messages.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct DataArgument {
    #[serde(default)]
    pub input: Map<String, Value>,
    #[serde(default)]
    pub context: Map<String, Value>,
    #[serde(default)]
    pub messages: Vec<Message>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub docs: Option<Value>,
}

/// Why a prompt could not be compiled or rendered.
#[derive(Debug, thiserror::Error)]
pub enum RenderFailure {
    #[error("template does not compile{}: {message}", position.map(|(l, c)| format!(" at line {l}, column {c}")).unwrap_or_default())]
    Template { message: String, position: Option<(usize, usize)> },
    #[error("partial `{name}` does not compile: {message}")]
    Partial { name: String, message: String },
    #[error("{0}")]
    Schema(#[from] picoschema::SchemaError),
    #[error("render failed: {0}")]
    Render(String),
}

pub type Result<T, E = RenderFailure> = std::result::Result<T, E>;

/// Where partials and named schemas come from.
pub trait Environment {
    /// The source of partial `name`, if there is one.
    fn partial(&self, name: &str) -> Option<String>;
    /// A named schema for Picoschema type names.
    fn schema(&self, _name: &str) -> Option<Value> {
        None
    }
}

/// No partials, no named schemas.
pub struct EmptyEnvironment;

impl Environment for EmptyEnvironment {
    fn partial(&self, _: &str) -> Option<String> {
        None
    }
}

/// Partials and schemas from maps (tests, the spec suite, hosts that preload).
#[derive(Default)]
pub struct MapEnvironment {
    pub partials: HashMap<String, String>,
    pub schemas: HashMap<String, Value>,
}

impl Environment for MapEnvironment {
    fn partial(&self, name: &str) -> Option<String> {
        self.partials.get(name).cloned()
    }

    fn schema(&self, name: &str) -> Option<Value> {
        self.schemas.get(name).cloned()
    }
}

struct EnvSchemas<'a>(&'a dyn Environment);

impl SchemaResolver for EnvSchemas<'_> {
    fn resolve(&self, name: &str) -> Option<Value> {
        self.0.schema(name)
    }
}

/// The rendered prompt in the Dotprompt shape: metadata keys plus `messages`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RenderedPrompt {
    #[serde(flatten)]
    pub metadata: Map<String, Value>,
    pub messages: Vec<Message>,
}

const MAIN: &str = "main";
const DATA_HELPER: &str = "__dotprompt_data";

/// A prompt ready to render many times.
pub struct CompiledPrompt {
    registry: Handlebars<'static>,
    /// Resolved metadata (schemas compiled, options merged), `input` included.
    metadata: Map<String, Value>,
}

impl std::fmt::Debug for CompiledPrompt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompiledPrompt").field("metadata", &self.metadata).finish_non_exhaustive()
    }
}

/// The document's metadata in the reference shape: reserved keys, `ext`, `raw`, and `config`
/// and `metadata` defaulting to `{}`; `options` override (configs merge).
pub fn resolve_metadata(
    doc: &PromptDocument,
    options: &Map<String, Value>,
    env: &dyn Environment,
) -> Result<Map<String, Value>> {
    let mut out = Map::new();
    out.insert("ext".into(), Value::Object(doc.ext.clone()));
    out.insert("metadata".into(), json!({}));
    out.insert("config".into(), json!({}));
    for (key, value) in &doc.reserved {
        out.insert(key.clone(), value.clone());
    }
    if doc.front_matter.as_ref().is_some_and(|f| f.root.is_some()) {
        out.insert("raw".into(), Value::Object(doc.raw.clone()));
    }
    let base_config = out.get("config").cloned().unwrap_or_else(|| json!({}));
    for (key, value) in options {
        out.insert(key.clone(), value.clone());
    }
    let mut config = base_config.as_object().cloned().unwrap_or_default();
    if let Some(Value::Object(extra)) = options.get("config") {
        config.extend(extra.clone());
    }
    out.insert("config".into(), Value::Object(config));
    let resolver = EnvSchemas(env);
    for section in ["input", "output"] {
        if let Some(Value::Object(map)) = out.get_mut(section)
            && let Some(schema) = map.get("schema")
        {
            match picoschema::compile(schema, &resolver)? {
                Some(compiled) => {
                    map.insert("schema".into(), compiled);
                }
                None => {
                    map.remove("schema");
                }
            }
        }
    }
    Ok(out)
}

impl CompiledPrompt {
    /// Compiles `doc` with partials and schemas from `env`; `options` override metadata (the
    /// spec's `options`, e.g. `input.default`).
    pub fn new(doc: &PromptDocument, env: &dyn Environment, options: &Map<String, Value>) -> Result<Self> {
        let metadata = resolve_metadata(doc, options, env)?;
        let mut registry = Handlebars::new();
        registry.register_escape_fn(handlebars::no_escape);
        registry.set_strict_mode(false);
        register_helpers(&mut registry);
        register_partials(&mut registry, doc.template(), env, &mut HashSet::new())?;
        let template = rewrite_data_paths(doc.template());
        registry
            .register_template_string(MAIN, template)
            .map_err(|e| RenderFailure::Template { message: e.reason().to_string(), position: e.pos() })?;
        Ok(Self { registry, metadata })
    }

    /// The resolved metadata (what the spec calls `renderMetadata`).
    pub fn metadata(&self) -> &Map<String, Value> {
        &self.metadata
    }

    /// Renders with `data`; `input.default` fills in missing input variables.
    pub fn render(&self, data: &DataArgument) -> Result<RenderedPrompt> {
        let mut input = self
            .metadata
            .get("input")
            .and_then(|i| i.get("default"))
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        input.extend(data.input.clone());
        let mut metadata = self.metadata.clone();
        metadata.remove("input");
        let mut frame = Map::new();
        let mut meta = Map::new();
        meta.insert("prompt".into(), Value::Object(metadata.clone()));
        if let Some(docs) = &data.docs {
            meta.insert("docs".into(), docs.clone());
        }
        meta.insert("messages".into(), serde_json::to_value(&data.messages).unwrap_or(Value::Null));
        frame.insert("metadata".into(), Value::Object(meta));
        frame.extend(data.context.clone());
        let rendered = with_data_frame(Value::Object(frame), || self.registry.render(MAIN, &Value::Object(input)))
            .map_err(|e| RenderFailure::Render(e.to_string()))?;
        Ok(RenderedPrompt { metadata, messages: to_messages(&rendered, &data.messages) })
    }
}

/// Registers every partial `template` references (recursively), from `env`.
fn register_partials(
    registry: &mut Handlebars<'static>,
    template: &str,
    env: &dyn Environment,
    seen: &mut HashSet<String>,
) -> Result<()> {
    for partial in template::scan(template).partials {
        if !seen.insert(partial.name.clone()) {
            continue; // registered already, or a cycle (`check` refuses cycles and chains too deep to follow)
        }
        let Some(source) = env.partial(&partial.name) else { continue };
        registry
            .register_partial(&partial.name, rewrite_data_paths(&source))
            .map_err(|e| RenderFailure::Partial { name: partial.name.clone(), message: e.to_string() })?;
        register_partials(registry, &source, env, seen)?;
    }
    Ok(())
}

thread_local! {
    static DATA_FRAME: RefCell<Value> = const { RefCell::new(Value::Null) };
}

fn with_data_frame<T>(frame: Value, f: impl FnOnce() -> T) -> T {
    let previous = DATA_FRAME.with(|d| d.replace(frame));
    let result = f();
    DATA_FRAME.with(|d| d.replace(previous));
    result
}

/// Rewrites `@name.path` data paths (other than Handlebars' own `@index`, `@root`, …) into
/// calls of the data-lookup helper.
pub fn rewrite_data_paths(template: &str) -> String {
    let scan = template::scan(template);
    let mut edits: Vec<(usize, usize, String)> = Vec::new();
    for mustache in &scan.mustaches {
        let Some(expr) = &mustache.expr else { continue };
        let bare = matches!(mustache.kind, MustacheKind::Expression | MustacheKind::Triple) && !expr.is_helper_call();
        collect_data_edits(expr, bare, &mut edits);
    }
    if edits.is_empty() {
        return template.to_string();
    }
    edits.sort_by_key(|e| e.0);
    let mut out = String::with_capacity(template.len() + edits.len() * 24);
    let mut at = 0;
    for (start, end, replacement) in edits {
        if start < at {
            continue;
        }
        out.push_str(&template[at..start]);
        out.push_str(&replacement);
        at = end;
    }
    out.push_str(&template[at..]);
    out
}

fn data_path(raw: &str) -> Option<String> {
    let path = raw.strip_prefix('@')?;
    let name = path.split(['.', '/']).next().unwrap_or(path);
    (!BUILTIN_DATA.contains(&name)).then(|| path.replace('/', "."))
}

fn collect_data_edits(expr: &Expr, bare_head: bool, edits: &mut Vec<(usize, usize, String)>) {
    let term_edit = |term: &Term, bare: bool, edits: &mut Vec<(usize, usize, String)>| match term {
        Term::Path { raw, span } => {
            if let Some(path) = data_path(raw) {
                let quoted = serde_json::to_string(&path).unwrap_or_default();
                let call = if bare { format!("{DATA_HELPER} {quoted}") } else { format!("({DATA_HELPER} {quoted})") };
                edits.push((span.start, span.end, call));
            }
        }
        Term::SubExpression { expr, .. } => collect_data_edits(expr, false, edits),
        Term::Literal { .. } => {}
    };
    if bare_head || matches!(expr.head, Term::SubExpression { .. }) {
        term_edit(&expr.head, bare_head, edits);
    }
    for param in &expr.params {
        term_edit(param, false, edits);
    }
    for arg in &expr.hash {
        term_edit(&arg.value, false, edits);
    }
}

struct DataLookup;

impl HelperDef for DataLookup {
    fn call_inner<'reg: 'rc, 'rc>(
        &self,
        h: &Helper<'rc>,
        _: &'reg Handlebars<'reg>,
        _: &'rc Context,
        _: &mut RenderContext<'reg, 'rc>,
    ) -> Result<ScopedJson<'rc>, RenderError> {
        let path = h.param(0).and_then(|p| p.value().as_str()).unwrap_or_default();
        let value = DATA_FRAME.with(|frame| {
            let frame = frame.borrow();
            let mut current = &*frame;
            for segment in path.split('.') {
                current = match current {
                    Value::Object(map) => map.get(segment).unwrap_or(&Value::Null),
                    Value::Array(items) => {
                        segment.parse::<usize>().ok().and_then(|i| items.get(i)).unwrap_or(&Value::Null)
                    }
                    _ => &Value::Null,
                };
            }
            current.clone()
        });
        Ok(ScopedJson::Derived(value))
    }
}

fn param_str<'a>(h: &'a Helper, index: usize) -> &'a str {
    h.param(index).and_then(|p| p.value().as_str()).unwrap_or_default()
}

fn role(h: &Helper, _: &Handlebars, _: &Context, _: &mut RenderContext, out: &mut dyn Output) -> HelperResult {
    out.write(&format!("<<<dotprompt:role:{}>>>", param_str(h, 0)))?;
    Ok(())
}

fn history(_: &Helper, _: &Handlebars, _: &Context, _: &mut RenderContext, out: &mut dyn Output) -> HelperResult {
    out.write("<<<dotprompt:history>>>")?;
    Ok(())
}

fn section(h: &Helper, _: &Handlebars, _: &Context, _: &mut RenderContext, out: &mut dyn Output) -> HelperResult {
    out.write(&format!("<<<dotprompt:section {}>>>", param_str(h, 0)))?;
    Ok(())
}

fn media(h: &Helper, _: &Handlebars, _: &Context, _: &mut RenderContext, out: &mut dyn Output) -> HelperResult {
    let hash = |key: &str| h.hash_get(key).map(|v| v.value().clone()).unwrap_or(Value::Null);
    let url = match hash("url") {
        Value::String(s) => s,
        Value::Null => String::new(),
        other => other.to_string(),
    };
    let content_type = match hash("contentType") {
        Value::String(s) if !s.is_empty() => format!(" {s}"),
        _ => String::new(),
    };
    out.write(&format!("<<<dotprompt:media:url {url}{content_type}>>>"))?;
    Ok(())
}

fn json_helper(h: &Helper, _: &Handlebars, _: &Context, _: &mut RenderContext, out: &mut dyn Output) -> HelperResult {
    let value = h.param(0).map(|p| p.value().clone()).unwrap_or(Value::Null);
    let indent = h.hash_get("indent").and_then(|v| v.value().as_u64()).unwrap_or(0).min(10) as usize;
    let text = if indent == 0 {
        serde_json::to_string(&value)
    } else {
        let indent = " ".repeat(indent);
        let mut buffer = Vec::new();
        let formatter = serde_json::ser::PrettyFormatter::with_indent(indent.as_bytes());
        let mut serializer = serde_json::Serializer::with_formatter(&mut buffer, formatter);
        value.serialize(&mut serializer).map(|()| String::from_utf8_lossy(&buffer).into_owned())
    }
    .map_err(|e| RenderErrorReason::Other(format!("json: {e}")))?;
    out.write(&text)?;
    Ok(())
}

/// `ifEquals` (`when_equal`) and `unlessEquals`: render the block or its inverse by strict
/// equality of the two arguments.
struct EqualityBlock {
    when_equal: bool,
}

impl HelperDef for EqualityBlock {
    fn call<'reg: 'rc, 'rc>(
        &self,
        h: &Helper<'rc>,
        r: &'reg Handlebars<'reg>,
        ctx: &'rc Context,
        rc: &mut RenderContext<'reg, 'rc>,
        out: &mut dyn Output,
    ) -> HelperResult {
        let a = h.param(0).map(|p| p.value().clone()).unwrap_or(Value::Null);
        let b = h.param(1).map(|p| p.value().clone()).unwrap_or(Value::Null);
        let branch = if (a == b) == self.when_equal { h.template() } else { h.inverse() };
        if let Some(template) = branch {
            template.render(r, ctx, rc, out)?;
        }
        Ok(())
    }
}

fn register_helpers(registry: &mut Handlebars<'static>) {
    registry.register_helper("role", Box::new(role));
    registry.register_helper("history", Box::new(history));
    registry.register_helper("section", Box::new(section));
    registry.register_helper("media", Box::new(media));
    registry.register_helper("json", Box::new(json_helper));
    registry.register_helper("ifEquals", Box::new(EqualityBlock { when_equal: true }));
    registry.register_helper("unlessEquals", Box::new(EqualityBlock { when_equal: false }));
    registry.register_helper(DATA_HELPER, Box::new(DataLookup));
}

/// Parses and renders in one call (compiles every time: prefer [`CompiledPrompt`] in loops).
pub fn render(doc: &PromptDocument, data: &DataArgument, env: &dyn Environment) -> Result<RenderedPrompt> {
    CompiledPrompt::new(doc, env, &Map::new())?.render(data)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::document::parse;

    #[test]
    fn data_paths_are_rewritten_precisely() {
        let out =
            rewrite_data_paths("{{@state.n}} {{#if @auth.ok}}{{@index}}{{/if}} {{json x=@user.role}} \"{{@state.n}}\"");
        assert_eq!(
            out,
            "{{__dotprompt_data \"state.n\"}} {{#if (__dotprompt_data \"auth.ok\")}}{{@index}}{{/if}} {{json x=(__dotprompt_data \"user.role\")}} \"{{__dotprompt_data \"state.n\"}}\""
        );
    }

    #[test]
    fn renders_roles_and_context() {
        let doc = parse("---\nmodel: m\n---\n{{role \"system\"}}S {{@state.n}}\n{{role \"user\"}}Q: {{q}}", None);
        let mut data = DataArgument::default();
        data.input.insert("q".into(), json!("why?"));
        data.context.insert("state".into(), json!({"n": 3}));
        let out = render(&doc, &data, &EmptyEnvironment).unwrap();
        assert_eq!(out.messages.len(), 2);
        assert_eq!(out.messages[0].text(), "S 3\n");
        assert_eq!(out.messages[1].text(), "Q: why?");
        assert_eq!(out.metadata["model"], "m");
    }
}
