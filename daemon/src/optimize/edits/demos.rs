//! Demonstrations: a training example rendered as the prompt's own example lines with its
//! answer, and the demonstrations a prompt already holds, found.

use reprompt_protocol::template::MustacheKind;
use reprompt_protocol::{PromptDocument, Span};
use serde_json::{Map, Value};

use super::{DemoSource, EditSpace};

/// A demonstration found in a prompt.
#[derive(Clone, Debug, PartialEq)]
pub struct FoundDemo {
    /// The whole block, with the blank line after it.
    pub span: Span,
    /// The answer word(s) on its last line.
    pub answer: Span,
    /// The cue before them (`Sentiment:`), colon included.
    pub cue: Span,
    /// Which [`EditSpace::demos`] entry it shows.
    pub source: usize,
}

/// The lines of the template that read the input variables (the example's own lines), if
/// they hold nothing but text and plain variable mustaches outside any block.
pub fn example_unit(doc: &PromptDocument) -> Option<Span> {
    let body = doc.body_span;
    let first = doc.scan.variables.iter().map(|v| v.span.start).min()?;
    let last = doc.scan.variables.iter().map(|v| v.span.end).max()?;
    let start = doc.source[body.start..first].rfind('\n').map_or(body.start, |i| body.start + i + 1);
    let end = doc.source[last..body.end].find('\n').map_or(body.end, |i| last + i);
    let unit = Span::new(start, end);
    let plain = doc.scan.mustaches.iter().filter(|m| m.span.start < end && m.span.end > start).all(|m| {
        matches!(m.kind, MustacheKind::Expression | MustacheKind::Triple)
            && m.expr.as_ref().is_some_and(|e| !e.is_helper_call() && e.head_name().is_some())
    });
    let inside_block = doc.scan.blocks.iter().any(|b| b.open.start < start && b.close.is_none_or(|c| c.end > end));
    (plain && !inside_block).then_some(unit)
}

/// The value of a dotted path in an example's input, as one line of template-safe text.
fn input_text(input: &Map<String, Value>, path: &str) -> Option<String> {
    let mut parts = path.split('.');
    let mut value = input.get(parts.next()?)?;
    for part in parts {
        value = value.get(part)?;
    }
    let text = match value {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    };
    literal(&text)
}

/// Data as one line of template text that renders as itself. Data is untrusted: `{{` is
/// escaped, and text the escape cannot keep literal (a backslash already before `{{` escapes
/// the escape) is refused (`None`).
fn literal(text: &str) -> Option<String> {
    let text = text.replace(['\n', '\r'], " ").replace("{{", "\\{{");
    only_text(&text).then_some(text)
}

/// Whether template text holds nothing a template reads: no mustache but escaped ones.
fn only_text(text: &str) -> bool {
    let scan = reprompt_protocol::template::scan(text);
    // An escape that runs to the end unclosed (`\{{b`) would swallow what follows it.
    scan.diagnostics.is_empty()
        && scan
            .mustaches
            .iter()
            .all(|m| m.kind == MustacheKind::Escaped && text[m.span.start..m.span.end].ends_with("}}"))
}

/// The unit with the example's values in place of its variables.
fn render_unit(doc: &PromptDocument, unit: Span, demo: &DemoSource) -> Option<String> {
    let mut out = String::new();
    let mut at = unit.start;
    for m in doc.scan.mustaches.iter().filter(|m| m.span.start >= unit.start && m.span.end <= unit.end) {
        out.push_str(&doc.source[at..m.span.start]);
        out.push_str(&input_text(&demo.input, m.expr.as_ref()?.head_name()?)?);
        at = m.span.end;
    }
    out.push_str(&doc.source[at..unit.end]);
    // Values next to each other may still make a mustache together (`x{` then `{y`).
    only_text(&out).then_some(out)
}

/// The cue line the prompt ends with (`Sentiment:`), if any, and its span.
pub(super) fn final_cue(doc: &PromptDocument) -> Option<(String, Span)> {
    let body = &doc.source[doc.body_span.start..doc.body_span.end];
    let trimmed = body.trim_end();
    let line_start = trimmed.rfind('\n').map_or(0, |i| i + 1);
    let line = trimmed[line_start..].trim();
    let is_cue = line.ends_with(':') && line.len() <= 40 && !line.contains("{{") && !line.contains("}}");
    let start =
        doc.body_span.start + line_start + (trimmed[line_start..].len() - trimmed[line_start..].trim_start().len());
    is_cue.then(|| (line.to_string(), Span::new(start, doc.body_span.start + trimmed.len())))
}

/// The answer of a demonstration under the prompt's current label words.
fn demo_answer(doc: &PromptDocument, demo: &DemoSource) -> Option<String> {
    match (demo.label, &doc.settings.labels) {
        (Some(label), Some(labels)) => labels.value.get(label).cloned(),
        _ => demo.answer.as_deref().and_then(literal),
    }
}

/// The block that shows `demo` in `doc`: its lines, the cue and the answer, a blank line.
pub fn demo_text(doc: &PromptDocument, demo: &DemoSource) -> Option<String> {
    let unit = example_unit(doc)?;
    let rendered = render_unit(doc, unit, demo)?;
    let cue = final_cue(doc).map_or_else(|| "Answer:".to_string(), |(c, _)| c);
    let answer = demo_answer(doc, demo)?;
    Some(format!("{rendered}\n{cue} {answer}\n\n"))
}

/// The demonstrations from `space` that `doc` shows, in file order.
pub fn find_demos(doc: &PromptDocument, space: &EditSpace) -> Vec<FoundDemo> {
    let Some(unit) = example_unit(doc) else { return Vec::new() };
    let region = &doc.source[doc.body_span.start..unit.start];
    // A cue may hold ": " itself (`Q: Answer:`); the prompt's own cue is read whole.
    let cue = final_cue(doc).map(|(c, _)| c);
    let mut found = Vec::new();
    for (i, demo) in space.demos.iter().enumerate() {
        let Some(rendered) = render_unit(doc, unit, demo) else { continue };
        let needle = format!("{rendered}\n");
        let mut from = 0;
        while let Some(pos) = region[from..].find(&needle) {
            let start = from + pos;
            from = start + region[start..].chars().next().map_or(1, char::len_utf8);
            if start > 0 && !region[..start].ends_with('\n') {
                continue;
            }
            let line_start = start + needle.len();
            let Some(line_len) = region[line_start..].find('\n') else { continue };
            let line = &region[line_start..line_start + line_len];
            let own = cue.as_deref().filter(|c| line.strip_prefix(c).is_some_and(|r| r.starts_with(' ')));
            let Some(colon) = own.map(|c| c.len() - 1).or_else(|| line.find(": ")) else { continue };
            let answer_start = line_start + colon + 2;
            let mut end = line_start + line_len + 1;
            if region[end..].starts_with('\n') {
                end += 1;
            }
            let base = doc.body_span.start;
            found.push(FoundDemo {
                span: Span::new(base + start, base + end),
                answer: Span::new(base + answer_start, base + line_start + line_len),
                cue: Span::new(base + line_start, base + line_start + colon + 1),
                source: i,
            });
            break;
        }
    }
    found.sort_by_key(|d| d.span.start);
    // One block, one source: where several show the same text, the one whose answer it shows
    // (else the first), so a block is counted, relabelled and removed once.
    let shows_its_answer = |d: &FoundDemo| {
        demo_answer(doc, &space.demos[d.source]).is_some_and(|a| doc.source[d.answer.start..d.answer.end] == a)
    };
    let mut kept: Vec<FoundDemo> = Vec::with_capacity(found.len());
    for demo in found {
        match kept.last_mut() {
            Some(last) if last.span == demo.span => {
                if !shows_its_answer(last) && shows_its_answer(&demo) {
                    *last = demo;
                }
            }
            _ => kept.push(demo),
        }
    }
    kept
}
