//! Front-matter lines the edits write: label lists, `reprompt.data_labels`, a setting set
//! or replaced where it is written, an entry's whole line.

use reprompt_protocol::{PromptDocument, Span};

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
    let between = doc.source.get(key_span.end..value_span.start)?;
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
    let front =
        doc.front_matter.as_ref().ok_or_else(|| EditError::NotApplicable("the prompt has no front matter".into()))?;
    let yaml = &doc.source[front.span.start..front.span.end];
    let newline = if yaml.is_empty() || yaml.ends_with('\n') { "" } else { "\n" };
    Ok(vec![TextEdit { span: Span::at(front.span.end), replacement: format!("{newline}{key}: {value}\n") }])
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
