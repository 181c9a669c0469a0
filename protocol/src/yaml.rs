//! A YAML tree that keeps the byte span of every key and value, built on saphyr-parser events.
//!
//! Dotprompt front matter is YAML; the language server needs to point at the exact key or value
//! a finding is about, so the tree keeps spans, and converts to `serde_json::Value` with the
//! YAML 1.2 core schema (what Dotprompt's own parsers produce). Bounded: nesting depth and alias
//! expansion are capped so hostile input cannot exhaust the stack or memory.

use std::borrow::Cow;
use std::collections::HashMap;

use saphyr_parser::{Event, Parser, ScalarStyle};
use serde_json::{Map, Number, Value};

use crate::span::Span;

/// Deepest nesting of collections accepted.
pub const MAX_DEPTH: usize = 64;
/// Most nodes a document may expand to (aliases count their whole subtree again).
pub const MAX_NODES: usize = 100_000;

#[derive(Clone, Debug, PartialEq)]
pub enum YamlKind {
    Scalar {
        text: String,
        value: Value,
    },
    Sequence(Vec<YamlNode>),
    /// Entries in document order; keys are scalars rendered to strings.
    Mapping(Vec<(YamlNode, YamlNode)>),
}

#[derive(Clone, Debug, PartialEq)]
pub struct YamlNode {
    pub span: Span,
    pub kind: YamlKind,
}

/// Why a YAML text could not be loaded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct YamlError {
    pub span: Span,
    pub message: String,
    pub kind: YamlErrorKind,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum YamlErrorKind {
    Syntax,
    DuplicateKey,
    TooDeep,
}

impl YamlNode {
    /// The key as a string, if this node is a scalar.
    pub fn as_key(&self) -> Option<&str> {
        match &self.kind {
            YamlKind::Scalar { text, .. } => Some(text),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match &self.kind {
            YamlKind::Scalar { value: Value::String(s), .. } => Some(s),
            _ => None,
        }
    }

    pub fn entries(&self) -> &[(YamlNode, YamlNode)] {
        match &self.kind {
            YamlKind::Mapping(entries) => entries,
            _ => &[],
        }
    }

    /// The entry with this key, if this node is a mapping.
    pub fn get(&self, key: &str) -> Option<(&YamlNode, &YamlNode)> {
        self.entries().iter().find(|(k, _)| k.as_key() == Some(key)).map(|(k, v)| (k, v))
    }

    pub fn to_json(&self) -> Value {
        match &self.kind {
            YamlKind::Scalar { value, .. } => value.clone(),
            YamlKind::Sequence(items) => Value::Array(items.iter().map(YamlNode::to_json).collect()),
            YamlKind::Mapping(entries) => {
                let mut map = Map::new();
                for (key, value) in entries {
                    map.insert(key_string(key), value.to_json());
                }
                Value::Object(map)
            }
        }
    }

    pub fn type_name(&self) -> &'static str {
        match &self.kind {
            YamlKind::Scalar { value: Value::Null, .. } => "null",
            YamlKind::Scalar { value: Value::Bool(_), .. } => "boolean",
            YamlKind::Scalar { value: Value::Number(_), .. } => "number",
            YamlKind::Scalar { .. } => "string",
            YamlKind::Sequence(_) => "list",
            YamlKind::Mapping(_) => "mapping",
        }
    }
}

fn key_string(key: &YamlNode) -> String {
    match &key.kind {
        YamlKind::Scalar { text, .. } => text.clone(),
        _ => key.to_json().to_string(),
    }
}

/// Maps saphyr's character indices to byte offsets of the parsed text.
struct CharOffsets(Vec<usize>);

impl CharOffsets {
    fn new(text: &str) -> Self {
        let mut offsets: Vec<usize> = text.char_indices().map(|(i, _)| i).collect();
        offsets.push(text.len());
        Self(offsets)
    }

    fn byte(&self, char_index: usize) -> usize {
        self.0.get(char_index).copied().unwrap_or_else(|| *self.0.last().unwrap_or(&0))
    }

    fn span(&self, span: saphyr_parser::Span) -> Span {
        Span::new(self.byte(span.start.index()), self.byte(span.end.index()))
    }
}

enum Frame {
    Sequence {
        start: usize,
        anchor: usize,
        items: Vec<YamlNode>,
    },
    Mapping {
        start: usize,
        anchor: usize,
        entries: Vec<(YamlNode, YamlNode)>,
        key: Option<YamlNode>,
        /// Where each key was first defined (duplicates are found in constant time).
        keys: HashMap<String, usize>,
    },
}

/// Loads the first document of `text`. An empty document is `null`.
pub fn load(text: &str) -> Result<YamlNode, YamlError> {
    let offsets = CharOffsets::new(text);
    let mut stack: Vec<Frame> = Vec::new();
    let mut anchors: HashMap<usize, YamlNode> = HashMap::new();
    let mut root: Option<YamlNode> = None;
    let mut nodes = 0usize;

    for event in Parser::new_from_str(text) {
        let (event, span) = event.map_err(|e| {
            let at = offsets.byte(e.marker().index());
            YamlError { span: Span::new(at, at), message: e.info().to_string(), kind: YamlErrorKind::Syntax }
        })?;
        let span = offsets.span(span);
        let node = match event {
            Event::StreamStart | Event::StreamEnd | Event::Nothing => continue,
            Event::DocumentStart(_) => continue,
            Event::DocumentEnd => break,
            Event::SequenceStart(anchor, _) | Event::MappingStart(anchor, _) if stack.len() >= MAX_DEPTH => {
                let _ = anchor;
                return Err(YamlError {
                    span,
                    message: format!("nesting deeper than {MAX_DEPTH} levels"),
                    kind: YamlErrorKind::TooDeep,
                });
            }
            Event::SequenceStart(anchor, _) => {
                stack.push(Frame::Sequence { start: span.start, anchor, items: Vec::new() });
                continue;
            }
            Event::MappingStart(anchor, _) => {
                stack.push(Frame::Mapping {
                    start: span.start,
                    anchor,
                    entries: Vec::new(),
                    key: None,
                    keys: HashMap::new(),
                });
                continue;
            }
            Event::SequenceEnd => match stack.pop() {
                Some(Frame::Sequence { start, anchor, items }) => {
                    let end = collection_end(text, span, items.last().map(|n| n.span.end), start);
                    remember(
                        &mut anchors,
                        anchor,
                        YamlNode { span: Span::new(start, end), kind: YamlKind::Sequence(items) },
                    )
                }
                _ => return Err(syntax(span, "unexpected end of sequence")),
            },
            Event::MappingEnd => match stack.pop() {
                Some(Frame::Mapping { start, anchor, entries, .. }) => {
                    let end = collection_end(text, span, entries.last().map(|(_, v)| v.span.end), start);
                    remember(
                        &mut anchors,
                        anchor,
                        YamlNode { span: Span::new(start, end), kind: YamlKind::Mapping(entries) },
                    )
                }
                _ => return Err(syntax(span, "unexpected end of mapping")),
            },
            Event::Scalar(text, style, anchor, tag) => {
                let value =
                    resolve_scalar(&text, style, tag.as_deref().map(|t| (t.handle.as_str(), t.suffix.as_str())));
                remember(
                    &mut anchors,
                    anchor,
                    YamlNode { span, kind: YamlKind::Scalar { text: text.into_owned(), value } },
                )
            }
            Event::Alias(id) => match anchors.get(&id) {
                // An alias pastes its anchor's whole subtree here: nested as deep as that reaches.
                Some(target) if stack.len() + depth(target) > MAX_DEPTH => {
                    return Err(YamlError {
                        span,
                        message: format!("nesting deeper than {MAX_DEPTH} levels (through an alias)"),
                        kind: YamlErrorKind::TooDeep,
                    });
                }
                Some(target) => {
                    nodes += count_nodes(target);
                    YamlNode { span, ..target.clone() }
                }
                None => return Err(syntax(span, "alias to an unknown anchor")),
            },
        };
        nodes += 1;
        if nodes > MAX_NODES {
            return Err(YamlError {
                span,
                message: format!("the document expands to more than {MAX_NODES} nodes"),
                kind: YamlErrorKind::TooDeep,
            });
        }
        match stack.last_mut() {
            None => {
                root = Some(node);
            }
            Some(Frame::Sequence { items, .. }) => items.push(node),
            Some(Frame::Mapping { entries, key, keys, .. }) => match key.take() {
                None => *key = Some(node),
                Some(k) => {
                    if let Some(name) = k.as_key()
                        && let Some(first) = keys.insert(name.to_string(), k.span.start)
                    {
                        return Err(YamlError {
                            span: k.span,
                            message: format!("duplicate key `{name}` (first defined at byte {first})"),
                            kind: YamlErrorKind::DuplicateKey,
                        });
                    }
                    entries.push((k, node));
                }
            },
        }
    }
    Ok(root
        .unwrap_or(YamlNode { span: Span::at(0), kind: YamlKind::Scalar { text: String::new(), value: Value::Null } }))
}

/// Where a collection ends: after its closing bracket for flow style (`[a, b]`, `{a: b}`),
/// else after its last item (a block collection's end event sits at the next token).
fn collection_end(text: &str, end_event: Span, last_item_end: Option<usize>, start: usize) -> usize {
    let closes_flow =
        end_event.end > end_event.start && matches!(text.as_bytes().get(end_event.end - 1), Some(b']' | b'}'));
    match (closes_flow, last_item_end) {
        (true, _) | (false, None) => end_event.end.max(start),
        (false, Some(end)) => end.max(start),
    }
}

fn syntax(span: Span, message: &str) -> YamlError {
    YamlError { span, message: message.to_string(), kind: YamlErrorKind::Syntax }
}

fn remember(anchors: &mut HashMap<usize, YamlNode>, anchor: usize, node: YamlNode) -> YamlNode {
    if anchor != 0 {
        anchors.insert(anchor, node.clone());
    }
    node
}

/// Levels of collections in `node` (0 for a scalar); bounded by [`MAX_DEPTH`] for every node
/// [`load`] keeps.
fn depth(node: &YamlNode) -> usize {
    match &node.kind {
        YamlKind::Scalar { .. } => 0,
        YamlKind::Sequence(items) => 1 + items.iter().map(depth).max().unwrap_or(0),
        YamlKind::Mapping(entries) => 1 + entries.iter().map(|(k, v)| depth(k).max(depth(v))).max().unwrap_or(0),
    }
}

fn count_nodes(node: &YamlNode) -> usize {
    match &node.kind {
        YamlKind::Scalar { .. } => 1,
        YamlKind::Sequence(items) => 1 + items.iter().map(count_nodes).sum::<usize>(),
        YamlKind::Mapping(entries) => 1 + entries.iter().map(|(k, v)| count_nodes(k) + count_nodes(v)).sum::<usize>(),
    }
}

/// YAML 1.2 core-schema resolution of a scalar (plain scalars only; quoted ones are strings).
fn resolve_scalar(text: &str, style: ScalarStyle, tag: Option<(&str, &str)>) -> Value {
    if let Some((handle, suffix)) = tag {
        if handle == "!!" || handle == "tag:yaml.org,2002:" {
            match suffix {
                "str" => return Value::String(text.to_string()),
                "null" => return Value::Null,
                "bool" | "int" | "float" => {
                    let resolved = resolve_plain(text);
                    if !resolved.is_string() {
                        return resolved;
                    }
                }
                _ => {}
            }
        }
        return Value::String(text.to_string());
    }
    if style != ScalarStyle::Plain {
        return Value::String(text.to_string());
    }
    resolve_plain(text)
}

fn resolve_plain(text: &str) -> Value {
    match text {
        "" | "~" | "null" | "Null" | "NULL" => return Value::Null,
        "true" | "True" | "TRUE" => return Value::Bool(true),
        "false" | "False" | "FALSE" => return Value::Bool(false),
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" | "-.inf" | "-.Inf" | "-.INF" | ".nan" | ".NaN"
        | ".NAN" => {
            // JSON has no infinities or NaN: keep the text.
            return Value::String(text.to_string());
        }
        _ => {}
    }
    let integer = |digits: &str, radix: u32| i64::from_str_radix(digits, radix).ok().map(|n| Value::Number(n.into()));
    if let Some(hex) = text.strip_prefix("0x")
        && let Some(v) = integer(hex, 16)
    {
        return v;
    }
    if let Some(oct) = text.strip_prefix("0o")
        && let Some(v) = integer(oct, 8)
    {
        return v;
    }
    let bytes = text.as_bytes();
    let looks_numeric = bytes.iter().all(|b| b.is_ascii_digit() || matches!(b, b'-' | b'+' | b'.' | b'e' | b'E'))
        && bytes.iter().any(u8::is_ascii_digit);
    if looks_numeric {
        let unsigned = text.strip_prefix(['-', '+']).unwrap_or(text);
        if unsigned.bytes().all(|b| b.is_ascii_digit()) {
            if let Ok(n) = text.parse::<i64>() {
                return Value::Number(n.into());
            }
            if let Ok(n) = text.parse::<u64>() {
                return Value::Number(n.into());
            }
        }
        if let Ok(f) = text.parse::<f64>()
            && let Some(n) = Number::from_f64(f)
        {
            return Value::Number(n);
        }
    }
    Value::String(text.to_string())
}

/// Loads YAML straight to JSON (for test data and tooling).
pub fn to_json(text: &str) -> Result<Value, YamlError> {
    load(text).map(|node| node.to_json())
}

/// Escapes nothing; a helper to name the node kind in messages.
pub fn describe(value: &Value) -> Cow<'static, str> {
    match value {
        Value::Null => "null".into(),
        Value::Bool(_) => "a boolean".into(),
        Value::Number(_) => "a number".into(),
        Value::String(_) => "a string".into(),
        Value::Array(_) => "a list".into(),
        Value::Object(_) => "a mapping".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn converts_with_core_schema() {
        let value = to_json("a: 1\nb: 1.5\nc: true\nd: ~\ne: '1'\nf: [x, 2]\ng: {h: i}\nk: 0x1f\n").unwrap();
        assert_eq!(
            value,
            json!({"a": 1, "b": 1.5, "c": true, "d": null, "e": "1", "f": ["x", 2], "g": {"h": "i"}, "k": 31})
        );
    }

    #[test]
    fn keeps_byte_spans_of_keys_and_values() {
        let text = "näme: wörld\nlist:\n  - x\n";
        let root = load(text).unwrap();
        let (key, value) = root.get("list").unwrap();
        assert_eq!(&text[key.span.start..key.span.end], "list");
        let YamlKind::Sequence(items) = &value.kind else { panic!("not a list") };
        assert_eq!(&text[items[0].span.start..items[0].span.end], "x");
        let (_, value) = root.get("näme").unwrap();
        assert_eq!(&text[value.span.start..value.span.end], "wörld");
    }

    #[test]
    fn flow_collections_span_their_brackets() {
        let text = "a: [x, y]\nb: {c: d}\ne:\n  - f\n";
        let root = load(text).unwrap();
        let span_of = |key: &str| {
            let (_, v) = root.get(key).unwrap();
            &text[v.span.start..v.span.end]
        };
        assert_eq!(span_of("a"), "[x, y]");
        assert_eq!(span_of("b"), "{c: d}");
        assert_eq!(span_of("e"), "- f");
    }

    #[test]
    fn reports_duplicates_depth_and_syntax() {
        assert_eq!(load("a: 1\na: 2\n").unwrap_err().kind, YamlErrorKind::DuplicateKey);
        let deep = "[".repeat(200) + &"]".repeat(200);
        assert!(load(&deep).is_err());
        let err = load("a: [1, 2\nb: 3\n").unwrap_err();
        assert_eq!(err.kind, YamlErrorKind::Syntax);
        let bomb = "a: &a [x, x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]\nc: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]\ne: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d]\nf: [*e, *e, *e, *e, *e, *e, *e, *e, *e, *e]\n";
        assert_eq!(load(bomb).unwrap_err().kind, YamlErrorKind::TooDeep);
    }

    #[test]
    fn aliases_cannot_nest_deeper_than_the_limit() {
        // Each anchor nests the one before 40 levels deeper: within the limit as written, 80
        // levels through the alias.
        let nest = |inner: &str| format!("{}{inner}{}", "[".repeat(40), "]".repeat(40));
        let text = format!(
            "a: &a {}
b: &b {}
",
            nest("x"),
            nest("*a")
        );
        let err = load(&text).unwrap_err();
        assert_eq!(err.kind, YamlErrorKind::TooDeep);
        assert!(err.message.contains("alias"), "{err:?}");
        // Within the limit an alias is fine, and a duplicate key still names the first.
        assert!(
            load(&format!(
                "a: &a {}
b: [[*a]]
",
                nest("x")
            ))
            .is_ok()
        );
        let err = load(
            "k: 1
j: 2
k: 3
",
        )
        .unwrap_err();
        assert!(err.message.contains("duplicate key `k` (first defined at byte 0)"), "{err:?}");
    }
}
