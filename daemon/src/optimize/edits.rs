//! Readable prompt edits, applied to the `.prompt` text as minimal text edits, each result
//! checked to parse without errors and keep the same input variables.
//!
//! The first edit kinds of the optimizer's edit space (DESIGN.md): label words (a verbalizer
//! swap, TEMPERA-style), the answer format (chat template or plain text), and instruction
//! sentences (delete one, or add a phrase from a bank, GrIPS-style). Demonstrations and
//! paraphrases come next.

use reprompt_protocol::settings::Format;
use reprompt_protocol::{PromptDocument, Severity, Span, parse};
use serde::{Deserialize, Serialize};

use reprompt_protocol::template::MustacheKind;

/// One edit of a prompt.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Edit {
    /// Replace the label words (`reprompt.labels`), one per label id.
    Labels(Vec<String>),
    /// Lay the prompt out through the chat template or as plain text (`reprompt.format`).
    Format(Format),
    /// Delete the template sentence at this byte span of the file.
    DeleteSentence(Span),
    /// Insert a phrase (with its trailing space or newline) at this byte offset of the file.
    InsertPhrase { at: usize, text: String },
}

impl Edit {
    /// A small stable id per edit kind (policy features).
    pub fn kind(&self) -> usize {
        match self {
            Edit::Labels(_) => 0,
            Edit::Format(_) => 1,
            Edit::DeleteSentence(_) => 2,
            Edit::InsertPhrase { .. } => 3,
        }
    }

    pub const KINDS: usize = 4;
}

/// A replacement of one span of the file's text.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TextEdit {
    pub span: Span,
    pub replacement: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EditError {
    #[error("the edit does not apply to this prompt: {0}")]
    NotApplicable(String),
    #[error("the edited prompt has errors: {0}")]
    Invalid(String),
    #[error("the edit changes the prompt's input variables ({before:?} → {after:?})")]
    Variables { before: Vec<String>, after: Vec<String> },
}

/// Label-word sets that mean the same task, by number of labels (negative first).
pub const LABEL_SETS: &[&[&str]] = &[
    &["terrible", "great"],
    &["bad", "good"],
    &["negative", "positive"],
    &["awful", "wonderful"],
    &["poor", "excellent"],
    &["no", "yes"],
];

/// Instruction phrases the optimizer may add (the built-in bank; the history adds more).
pub const PHRASES: &[&str] = &[
    "Answer with one word.",
    "Think about the overall opinion of the reviewer.",
    "Be accurate.",
    "Read the text carefully.",
    "Ignore details that do not express an opinion.",
];

/// The minimal text edits that carry out `edit` on `doc`.
pub fn text_edits(doc: &PromptDocument, edit: &Edit) -> Result<Vec<TextEdit>, EditError> {
    match edit {
        Edit::Labels(words) => {
            let labels = doc
                .settings
                .labels
                .as_ref()
                .ok_or_else(|| EditError::NotApplicable("the prompt has no labels".into()))?;
            if words.len() != labels.value.len() {
                return Err(EditError::NotApplicable(format!(
                    "{} labels for {} label ids",
                    words.len(),
                    labels.value.len()
                )));
            }
            let list =
                words.iter().map(|w| serde_json::to_string(w).unwrap_or_default()).collect::<Vec<_>>().join(", ");
            Ok(vec![TextEdit { span: labels.span, replacement: format!("[{list}]") }])
        }
        Edit::Format(format) => {
            let value = match format {
                Format::Chat => "chat",
                Format::Plain => "plain",
            };
            if let Some((_, span)) = doc.entry_span("reprompt.format") {
                return Ok(vec![TextEdit { span, replacement: value.into() }]);
            }
            let front = doc
                .front_matter
                .as_ref()
                .ok_or_else(|| EditError::NotApplicable("the prompt has no front matter".into()))?;
            let yaml = &doc.source[front.span.start..front.span.end];
            let newline = if yaml.is_empty() || yaml.ends_with('\n') { "" } else { "\n" };
            Ok(vec![TextEdit {
                span: Span::at(front.span.end),
                replacement: format!("{newline}reprompt.format: {value}\n"),
            }])
        }
        Edit::DeleteSentence(span) => {
            if !sentences(doc).contains(span) {
                return Err(EditError::NotApplicable("no such sentence".into()));
            }
            // Take the space after the sentence along, so no double spaces are left.
            let mut end = span.end;
            if doc.source[end..].starts_with(' ') {
                end += 1;
            }
            Ok(vec![TextEdit { span: Span::new(span.start, end), replacement: String::new() }])
        }
        Edit::InsertPhrase { at, text } => {
            if !insertion_points(doc).contains(at) {
                return Err(EditError::NotApplicable("not an insertion point".into()));
            }
            Ok(vec![TextEdit { span: Span::at(*at), replacement: text.clone() }])
        }
    }
}

/// Applies text edits (non-overlapping) to `source`.
pub fn apply(source: &str, edits: &[TextEdit]) -> String {
    let mut edits: Vec<&TextEdit> = edits.iter().collect();
    edits.sort_by_key(|e| (e.span.start, e.span.end));
    let mut out = String::with_capacity(source.len());
    let mut at = 0;
    for edit in edits {
        if edit.span.start < at {
            continue;
        }
        out.push_str(&source[at..edit.span.start]);
        out.push_str(&edit.replacement);
        at = edit.span.end;
    }
    out.push_str(&source[at..]);
    out
}

fn variables(doc: &PromptDocument) -> Vec<String> {
    let mut names: Vec<String> = doc.scan.variables.iter().map(|v| v.name.clone()).collect();
    names.sort();
    names.dedup();
    names
}

/// The edited prompt text, or why the edit is refused: the result must parse without errors
/// and read exactly the same input variables.
pub fn apply_checked(doc: &PromptDocument, edit: &Edit) -> Result<String, EditError> {
    let text = apply(&doc.source, &text_edits(doc, edit)?);
    let edited = parse(&text, None);
    if let Some(error) = edited.diagnostics.iter().find(|d| d.severity == Severity::Error) {
        return Err(EditError::Invalid(error.message.clone()));
    }
    let (before, after) = (variables(doc), variables(&edited));
    if before != after {
        return Err(EditError::Variables { before, after });
    }
    Ok(text)
}

/// Text spans of the template that lie between mustaches (the author's prose).
fn text_segments(doc: &PromptDocument) -> Vec<Span> {
    let body = doc.body_span;
    let mut segments = Vec::new();
    let mut at = body.start;
    for m in &doc.scan.mustaches {
        if m.span.start > at {
            segments.push(Span::new(at, m.span.start));
        }
        at = at.max(m.span.end);
        if matches!(m.kind, MustacheKind::BlockOpen | MustacheKind::InverseOpen | MustacheKind::PartialBlockOpen) {
            // Text inside blocks repeats or may vanish: leave it alone.
            return segments;
        }
    }
    if body.end > at {
        segments.push(Span::new(at, body.end));
    }
    segments
}

/// Whole sentences inside prose segments: runs ending in `.`, `?` or `!` (or a line end).
pub fn sentences(doc: &PromptDocument) -> Vec<Span> {
    let mut out = Vec::new();
    for segment in text_segments(doc) {
        let text = &doc.source[segment.start..segment.end];
        // A sentence starts at the start of the template or of a line, or after another
        // sentence: text right after a `{{variable}}` continues that sentence.
        let mut can_start = segment.start == doc.body_span.start;
        let mut start: Option<usize> = None;
        for (i, c) in text.char_indices() {
            match (start, c) {
                (_, '\n') => {
                    start = None;
                    can_start = true;
                }
                (None, c) if c.is_whitespace() => {}
                (None, c) if can_start && c.is_alphanumeric() => start = Some(i),
                // Punctuation ends the sentence a variable was part of; a word continues it.
                (None, c) => can_start = matches!(c, '.' | '?' | '!'),
                (Some(s), '.' | '?' | '!') => {
                    let end = i + c.len_utf8();
                    if text[end..].chars().next().is_none_or(char::is_whitespace) {
                        out.push(Span::new(segment.start + s, segment.start + end));
                        start = None;
                        can_start = true;
                    }
                }
                _ => {}
            }
        }
    }
    out
}

/// Where a phrase may be inserted: the start of each prose sentence.
pub fn insertion_points(doc: &PromptDocument) -> Vec<usize> {
    sentences(doc).iter().map(|s| s.start).collect()
}

/// Every edit that applies to `doc` and passes [`apply_checked`].
pub fn candidates(doc: &PromptDocument) -> Vec<Edit> {
    let mut edits = Vec::new();
    if let Some(labels) = &doc.settings.labels {
        for set in LABEL_SETS.iter().filter(|s| s.len() == labels.value.len()) {
            if set.iter().zip(&labels.value).any(|(a, b)| a != b) {
                edits.push(Edit::Labels(set.iter().map(|s| s.to_string()).collect()));
            }
        }
    }
    edits.push(Edit::Format(match doc.settings.format {
        Format::Chat => Format::Plain,
        Format::Plain => Format::Chat,
    }));
    edits.extend(sentences(doc).into_iter().map(Edit::DeleteSentence));
    for at in insertion_points(doc) {
        for phrase in PHRASES {
            let already = doc.source.contains(phrase);
            if !already {
                edits.push(Edit::InsertPhrase { at, text: format!("{phrase} ") });
            }
        }
    }
    edits.retain(|e| apply_checked(doc, e).is_ok());
    edits
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = include_str!("../../../examples/sentiment/sentiment.prompt");

    fn doc() -> PromptDocument {
        parse(EXAMPLE, None)
    }

    #[test]
    fn label_and_format_edits_touch_only_their_values() {
        let doc = doc();
        let text = apply_checked(&doc, &Edit::Labels(vec!["negative".into(), "positive".into()])).unwrap();
        assert!(text.contains("reprompt.labels: [\"negative\", \"positive\"]\n"), "{text}");
        assert_eq!(text.lines().count(), EXAMPLE.lines().count());
        let plain = apply_checked(&doc, &Edit::Format(Format::Plain)).unwrap();
        let reparsed = parse(&plain, None);
        assert_eq!(reparsed.settings.format, Format::Plain);
        assert_eq!(reparsed.template(), doc.template());
        // And back: the key now exists, so its value is replaced in place.
        let chat = apply_checked(&reparsed, &Edit::Format(Format::Chat)).unwrap();
        assert_eq!(parse(&chat, None).settings.format, Format::Chat);
        assert_eq!(chat.len(), plain.len() - "plain".len() + "chat".len());
    }

    #[test]
    fn sentences_are_found_in_prose_and_edits_keep_variables() {
        let doc = doc();
        let found: Vec<&str> = sentences(&doc).iter().map(|s| &doc.source[s.start..s.end]).collect();
        assert_eq!(
            found,
            [
                "You are a helpful assistant that classifies the sentiment of movie reviews.",
                "Is the sentiment of this review great or terrible?",
                "Answer with one word."
            ]
        );
        let deleted = apply_checked(&doc, &Edit::DeleteSentence(sentences(&doc)[1])).unwrap();
        assert!(deleted.contains("Review: {{sentence}}\nAnswer with one word."), "{deleted}");
        let at = insertion_points(&doc)[0];
        let inserted = apply_checked(&doc, &Edit::InsertPhrase { at, text: "Be accurate. ".into() }).unwrap();
        assert!(inserted.contains("Be accurate. You are a helpful assistant"), "{inserted}");
    }

    #[test]
    fn edits_that_break_the_prompt_are_refused() {
        let doc = doc();
        assert!(matches!(apply_checked(&doc, &Edit::Labels(vec!["one".into()])), Err(EditError::NotApplicable(_))));
        assert!(apply_checked(&doc, &Edit::DeleteSentence(Span::new(0, 3))).is_err());
        assert!(apply_checked(&doc, &Edit::InsertPhrase { at: 1, text: "x".into() }).is_err());
        // A phrase that removes a variable is refused by the variable check.
        let tricky = parse("---\ninput:\n  schema: {a: string}\n---\nSay {{a}}. Done.", None);
        let found: Vec<&str> = sentences(&tricky).iter().map(|s| &tricky.source[s.start..s.end]).collect();
        assert_eq!(found, ["Done."], "the fragment after the variable is not a sentence of its own");
    }

    #[test]
    fn every_candidate_of_the_example_applies_cleanly() {
        let doc = doc();
        let all = candidates(&doc);
        assert!(all.iter().any(|e| matches!(e, Edit::Labels(_))));
        assert!(all.iter().any(|e| matches!(e, Edit::Format(Format::Plain))));
        assert!(all.iter().filter(|e| matches!(e, Edit::DeleteSentence(_))).count() == 3);
        assert!(all.iter().any(|e| matches!(e, Edit::InsertPhrase { .. })));
        for edit in &all {
            let text = apply_checked(&doc, edit).unwrap();
            assert_ne!(text, EXAMPLE, "{edit:?} changed nothing");
        }
    }
}
