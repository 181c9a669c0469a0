//! The prompt's prose: its sentences, where phrases may be inserted, the instruction lines
//! a bare prompt drops, and the words of the prose that name a label.

use reprompt_protocol::template::MustacheKind;
use reprompt_protocol::{PromptDocument, Span};

use super::demos::{example_unit, final_cue, find_demos};
use super::{EditSpace, TextEdit};

/// What [`Edit::Bare`] deletes: every prose sentence outside the demonstrations — a line of
/// nothing but such sentences as a whole line, one that shares its line with other text with
/// the spaces between them. Sentences on lines that open with a field name (`Review: I loved
/// it.`, the author's own examples) are content, not instructions, and stay.
pub(super) fn instruction_deletions(doc: &PromptDocument, space: &EditSpace) -> Vec<Span> {
    let demos = find_demos(doc, space);
    let prose: Vec<Span> = sentences(doc)
        .into_iter()
        .filter(|s| !demos.iter().any(|d| s.start < d.span.end && s.end > d.span.start))
        .collect();
    let source = &doc.source;
    let mut spans: Vec<Span> = Vec::new();
    for sentence in &prose {
        let Span { start: line_start, end: line_end } = line_around(doc, sentence.start);
        if fielded(&source[line_start..line_end]) {
            continue;
        }
        let mut rest = source[line_start..line_end].to_string();
        for other in prose.iter().filter(|o| o.start >= line_start && o.end <= line_end) {
            rest.replace_range(other.start - line_start..other.end - line_start, &" ".repeat(other.end - other.start));
        }
        spans.push(if rest.trim().is_empty() {
            Span::new(line_start, (line_end + 1).min(source.len()))
        } else {
            let before = source[line_start..sentence.start].trim_end_matches([' ', '\t']).len();
            if before == 0 {
                let after = source[sentence.end..line_end].len() - source[sentence.end..line_end].trim_start().len();
                Span::new(sentence.start, sentence.end + after)
            } else {
                Span::new(line_start + before, sentence.end)
            }
        });
    }
    spans
}

/// The field names of the example's own lines (`Review`) and of its cue (`Sentiment`): lines
/// opening with them are the author's examples and their answers, not instructions.
pub(super) fn example_fields(doc: &PromptDocument) -> (Vec<String>, Option<String>) {
    let fields: Vec<String> = example_unit(doc)
        .map(|unit| {
            doc.source[unit.start..unit.end]
                .lines()
                .filter(|line| fielded(line))
                .filter_map(|line| line.trim_start().split_once(": ").map(|(name, _)| name.to_string()))
                .collect()
        })
        .unwrap_or_default();
    let cue = final_cue(doc)
        .map(|(cue, _)| cue.trim_end_matches(':').to_string())
        .filter(|c| !c.is_empty() && fielded(&format!("{c}: ")));
    (fields, cue)
}

/// The template line holding byte `at`, without its line break.
pub(super) fn line_around(doc: &PromptDocument, at: usize) -> Span {
    let source = &doc.source;
    let start = source[..at].rfind('\n').map_or(0, |i| i + 1).max(doc.body_span.start);
    let end = source[at..].find('\n').map_or(source.len(), |i| at + i);
    Span::new(start, end)
}

/// Whether a line opens with a field name (`Review: I loved it.`): content, not instructions.
fn fielded(line: &str) -> bool {
    line.trim_start().split_once(": ").is_some_and(|(name, _)| {
        !name.is_empty() && name.len() <= 24 && name.chars().all(|c| c.is_alphabetic() || c == ' ')
    })
}

/// Deletions as disjoint text edits: overlapping or touching spans merged, and a span that
/// reaches the end of the template's text ends there instead, taking the line break before
/// it, so the line endings after it stay and an answer cue inserted at the end of the text
/// (`AnswerCue`) follows the line before.
pub(super) fn merged_deletions(doc: &PromptDocument, mut spans: Vec<Span>) -> Vec<TextEdit> {
    let source = &doc.source;
    let body_start = doc.body_span.start;
    let body_end = body_start + source[body_start..doc.body_span.end].trim_end().len();
    spans.sort_by_key(|s| (s.start, s.end));
    let mut merged: Vec<Span> = Vec::new();
    for span in spans {
        match merged.last_mut() {
            Some(last) if span.start <= last.end => last.end = last.end.max(span.end),
            _ => merged.push(span),
        }
    }
    for span in &mut merged {
        if span.end > body_end && span.start < body_end {
            span.end = body_end;
            if span.start > body_start && source[..span.start].ends_with('\n') {
                span.start -= 1;
            }
        }
    }
    merged.into_iter().map(|span| TextEdit { span, replacement: String::new() }).collect()
}

/// The `{{role …}}` mustaches of the template.
pub(super) fn role_markers(doc: &PromptDocument) -> Vec<Span> {
    doc.scan
        .mustaches
        .iter()
        .filter(|m| m.kind == MustacheKind::Expression && m.expr.as_ref().and_then(|e| e.head_name()) == Some("role"))
        .map(|m| m.span)
        .collect()
}

/// Whole-word, case-insensitive mentions of label words in a prose segment: (span, label id).
pub(super) fn label_mentions(doc: &PromptDocument, segment: Span, labels: &[String]) -> Vec<(Span, usize)> {
    let text = &doc.source[segment.start..segment.end];
    let mut out = Vec::new();
    let mut word_start: Option<usize> = None;
    for (i, c) in text.char_indices().chain(std::iter::once((text.len(), ' '))) {
        let part_of_word = c.is_alphanumeric() || c == '\'' || c == '-';
        match (word_start, part_of_word) {
            (None, true) => word_start = Some(i),
            (Some(start), false) => {
                let word = &text[start..i];
                if let Some(label) = labels.iter().position(|l| !l.is_empty() && l.eq_ignore_ascii_case(word)) {
                    out.push((Span::new(segment.start + start, segment.start + i), label));
                }
                word_start = None;
            }
            _ => {}
        }
    }
    out
}

pub(super) fn capitalized(word: &str) -> String {
    let mut chars = word.chars();
    chars.next().map_or_else(String::new, |first| first.to_uppercase().chain(chars).collect())
}

/// Text spans of the template that lie between mustaches (the author's prose).
pub(super) fn text_segments(doc: &PromptDocument) -> Vec<Span> {
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

/// Whole sentences inside prose segments: runs ending in `.`, `?` or `!`.
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

/// Where a phrase may be inserted: the start of each prose sentence, and the start of the
/// template when it begins with text.
pub fn insertion_points(doc: &PromptDocument) -> Vec<usize> {
    let mut points: Vec<usize> = sentences(doc).iter().map(|s| s.start).collect();
    let body = doc.body_span;
    if !doc.source[body.start..body.end].starts_with("{{") && !points.contains(&body.start) {
        points.insert(0, body.start);
    }
    points
}
