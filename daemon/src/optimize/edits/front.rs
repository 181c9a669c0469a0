//! Front-matter lines the edits write: label lists, `reprompt.data_labels`, a setting set
//! or replaced where it is written, an entry's whole line, the answer's stop sequences.

use reprompt_protocol::yaml::{YamlKind, YamlNode};
use reprompt_protocol::{PromptDocument, Span};
use serde_json::Value;

use super::{EditError, EditSpace, TextEdit};

/// A flow list of words, each quoted so that any word parses as text: `["bad", "good"]`.
pub(super) fn word_list_value(words: &[String]) -> String {
    let quoted: Vec<String> = words.iter().map(|w| serde_json::to_string(w).unwrap_or_default()).collect();
    format!("[{}]", quoted.join(", "))
}

/// The `reprompt.labels` value of several words per label: `[["harsh", "poor"], ["sweet"]]`
/// (each word quoted, so any word parses as text).
pub fn label_groups_value(groups: &[Vec<String>]) -> String {
    let list: Vec<String> = groups.iter().map(|g| word_list_value(g)).collect();
    format!("[{}]", list.join(", "))
}

/// `reprompt.data_labels`'s value: a word per label id, or a list where an id has several.
pub fn data_labels_value(groups: &[Vec<String>]) -> String {
    if groups.iter().all(|g| g.len() == 1) { word_list_value(&groups.concat()) } else { label_groups_value(groups) }
}

/// Where the data names its labels by word ([`EditSpace::data_labels`]) and `doc` does not
/// say so yet, the `reprompt.data_labels` line a relabelling adds (under the labels'), so
/// that the relabelled prompt still reads its data.
pub(super) fn keep_data_labels(doc: &PromptDocument, space: &EditSpace) -> Result<Vec<TextEdit>, EditError> {
    let Some(names) = space.data_labels.as_ref().filter(|_| doc.settings.data_labels.is_none()) else {
        return Ok(Vec::new());
    };
    let value = data_labels_value(names);
    match entry_line(doc, "reprompt.labels") {
        Some(line) => {
            Ok(vec![TextEdit { span: Span::at(line.end), replacement: format!("reprompt.data_labels: {value}\n") }])
        }
        None => set_setting(doc, "reprompt.data_labels", &value),
    }
}

/// Replaces the value of the front-matter entry `key` with a one-line (flow) `value`. A value
/// written on the lines below its key (a block list at column 0) is replaced from the key's
/// end: a flow value there would not be indented enough to belong to the key.
pub(super) fn replace_value(doc: &PromptDocument, key: &str, value: &str) -> Option<TextEdit> {
    let (key_span, value_span) = doc.entry_span(key)?;
    value_replaced(&doc.source, key_span, value_span, value)
}

/// [`replace_value`] for the entry whose key and value are at these spans (one nested in a
/// mapping too).
fn value_replaced(source: &str, key_span: Span, value_span: Span, value: &str) -> Option<TextEdit> {
    let between = source.get(key_span.end..value_span.start)?;
    Some(if between.contains('\n') {
        TextEdit { span: Span::new(key_span.end, value_span.end), replacement: format!(": {value}") }
    } else {
        TextEdit { span: value_span, replacement: value.into() }
    })
}

/// Sets the front-matter entry `key` to `value`: its value replaced where it is written, else a
/// line added at the end of the front matter.
pub(super) fn set_setting(doc: &PromptDocument, key: &str, value: &str) -> Result<Vec<TextEdit>, EditError> {
    if let Some(edit) = replace_value(doc, key, value) {
        return Ok(vec![edit]);
    }
    appended(doc, &format!("{key}: {value}\n"))
}

/// `lines` added at the end of the front matter (on a line of their own).
fn appended(doc: &PromptDocument, lines: &str) -> Result<Vec<TextEdit>, EditError> {
    let front =
        doc.front_matter.as_ref().ok_or_else(|| EditError::NotApplicable("the prompt has no front matter".into()))?;
    let yaml = &doc.source[front.span.start..front.span.end];
    let newline = if yaml.is_empty() || yaml.ends_with('\n') { "" } else { "\n" };
    Ok(vec![TextEdit { span: Span::at(front.span.end), replacement: format!("{newline}{lines}") }])
}

/// The whole line of the front-matter entry `key` (with its line end), where it is written on
/// lines of its own.
pub(super) fn entry_line(doc: &PromptDocument, key: &str) -> Option<Span> {
    let (key_span, value_span) = doc.entry_span(key)?;
    let source = &doc.source;
    let start = source[..key_span.start].rfind('\n').map_or(0, |i| i + 1);
    if !source[start..key_span.start].trim().is_empty() {
        return None;
    }
    let end = source[value_span.end..].find('\n').map_or(source.len(), |i| value_span.end + i + 1);
    Some(Span::new(start, end))
}

/// The prompt's text without its `reprompt.label_bias` entry (the text itself when it has
/// none): what every calibration of the same prompt shares. `None` where the entry is not
/// written on lines of its own.
pub fn without_label_bias(doc: &PromptDocument) -> Option<String> {
    if doc.entry_span("reprompt.label_bias").is_none() {
        return Some(doc.source.clone());
    }
    let line = entry_line(doc, "reprompt.label_bias")?;
    let mut text = doc.source.clone();
    text.replace_range(line.start..line.end, "");
    Some(text)
}

/// The stop sequence that ends the model's answer at the end of its line.
pub const LINE_END: &str = "\n";

/// The prompt's `config.stopSequences` as written (none where it has none, or not a list).
fn stop_sequences(doc: &PromptDocument) -> Vec<String> {
    let list = doc.reserved.get("config").and_then(|c| c.get("stopSequences")).and_then(Value::as_array);
    list.into_iter().flatten().filter_map(|s| s.as_str().map(str::to_string)).collect()
}

/// Whether the prompt's answers end at the end of their line already (`stopSequences`
/// holds [`LINE_END`]).
pub fn stops_at_line_end(doc: &PromptDocument) -> bool {
    stop_sequences(doc).iter().any(|s| s == LINE_END)
}

/// The front-matter edit that adds [`LINE_END`] to `config.stopSequences` (Dotprompt's
/// generation config, so the file stays valid for other Dotprompt tools): the list replaced
/// where it is written, else an entry added to the `config` mapping (block or flow), else a
/// `config` mapping added at the end of the front matter.
pub(super) fn stop_at_line_end(doc: &PromptDocument) -> Result<Vec<TextEdit>, EditError> {
    let not = |why: &str| EditError::NotApplicable(why.to_string());
    if stops_at_line_end(doc) {
        return Err(not("the answer stops at its line's end already"));
    }
    let front = doc.front_matter.as_ref().ok_or_else(|| not("the prompt has no front matter"))?;
    let root = front.root.as_ref().ok_or_else(|| not("the front matter does not parse"))?;
    let source = &doc.source;
    let mut stops = stop_sequences(doc);
    stops.push(LINE_END.to_string());
    let value = word_list_value(&stops);
    let Some((config_key, config)) = root.get("config") else {
        return appended(doc, &format!("config:\n  stopSequences: {value}\n"));
    };
    if !matches!(config.kind, YamlKind::Mapping(_)) {
        return Err(not("the prompt's `config` is not a mapping"));
    }
    if let Some((key, list)) = config.get("stopSequences") {
        if !matches!(list.kind, YamlKind::Sequence(_)) || stops.len() != list_len(list) + 1 {
            return Err(not("the prompt's `config.stopSequences` is not a list of text"));
        }
        let edit = value_replaced(source, key.span, list.span, &value);
        return edit.map(|e| vec![e]).ok_or_else(|| not("the prompt's `config.stopSequences` is not where it says"));
    }
    let written = source.get(config.span.start..config.span.end).unwrap_or_default();
    if written.starts_with('{') {
        // A flow mapping on one line without comments: the entry goes before its closing
        // brace, after a comma unless one (or the opening brace) is there already.
        let open = config.span.start;
        let line_end = source[open..].find(['\n', '\r']).map_or(source.len(), |i| open + i);
        let last = config.entries().last().map_or(open + 1, |(_, v)| v.span.end);
        // What lies between the last value and the closing brace: spaces and a comma at most.
        let rest = &source[last.min(line_end)..line_end];
        let gap = rest.len() - rest.trim_start_matches([' ', ',']).len();
        if source[open..line_end].contains('#') || !rest[gap..].starts_with('}') || rest[..gap].matches(',').count() > 1
        {
            return Err(not("the prompt's `config` is a flow mapping with comments or several lines"));
        }
        let comma = if config.entries().is_empty() { "" } else { ", " };
        let replacement = format!("{comma}stopSequences: {value}");
        return Ok(vec![TextEdit { span: Span::new(last, last + gap), replacement }]);
    }
    // A block mapping: a line of its own after its last entry, indented as its first key.
    let first = config.entries().first().map(|(k, _)| k.span.start).ok_or_else(|| not("an empty `config`"))?;
    let line_start = source[..first].rfind('\n').map_or(0, |i| i + 1);
    let indent = &source[line_start..first];
    if !indent.chars().all(|c| c == ' ') || line_start <= config_key.span.start {
        return Err(not("the prompt's `config` is not laid out one entry per line"));
    }
    let end = config.span.end;
    let line_end =
        if source[..end].ends_with('\n') { Some(end) } else { source[end..].find('\n').map(|i| end + i + 1) };
    Ok(vec![match line_end {
        Some(at) => TextEdit { span: Span::at(at), replacement: format!("{indent}stopSequences: {value}\n") },
        None => TextEdit { span: Span::at(end), replacement: format!("\n{indent}stopSequences: {value}") },
    }])
}

/// How many items a YAML sequence holds.
fn list_len(node: &YamlNode) -> usize {
    match &node.kind {
        YamlKind::Sequence(items) => items.len(),
        _ => 0,
    }
}
