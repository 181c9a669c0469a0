//! Demonstrations: a training example rendered as the prompt's own example lines with its
//! answer (or, in a chat generation prompt, as a user turn and the model's reply), and the
//! demonstrations a prompt already holds, found.

use reprompt_protocol::settings::{Format, Task};
use reprompt_protocol::template::{MustacheKind, Term};
use reprompt_protocol::{PromptDocument, Span, parse};
use serde_json::{Map, Value};

use super::text::role_markers;
use super::{DemoSource, EditError, EditSpace};

/// A demonstration found in a prompt.
#[derive(Clone, Debug, PartialEq)]
pub struct FoundDemo {
    /// The whole block, with the blank line after it.
    pub span: Span,
    /// The answer word(s) on its last line.
    pub answer: Span,
    /// The cue before them (`Sentiment:`), colon included; `None` for a model turn.
    pub cue: Option<Span>,
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
    plain_text_and_variables(doc, unit).then_some(unit)
}

/// Whether `span` of the template holds nothing but text and plain variable mustaches,
/// outside any block.
fn plain_text_and_variables(doc: &PromptDocument, span: Span) -> bool {
    let (start, end) = (span.start, span.end);
    let plain = doc.scan.mustaches.iter().filter(|m| m.span.start < end && m.span.end > start).all(|m| {
        matches!(m.kind, MustacheKind::Expression | MustacheKind::Triple)
            && m.expr.as_ref().is_some_and(|e| !e.is_helper_call() && e.head_name().is_some())
    });
    let inside_block = doc.scan.blocks.iter().any(|b| b.open.start < start && b.close.is_none_or(|c| c.end > end));
    plain && !inside_block
}

/// Where a prompt's demonstrations go and how they read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// Before the example's own lines ([`example_unit`]): the lines with a training
    /// example's values, the cue and its answer, a blank line.
    Lines { unit: Span },
    /// A chat generation prompt whose last turn is the user's and holds the example: before
    /// that turn's `{{role "user"}}` marker, the turn with a training example's values and a
    /// `{{role "model"}}` turn with its answer — a conversation the model goes on with.
    /// (Shown inside the user's turn instead, SmolLM2-135M answers in sentences: an exact
    /// match of 0 of 32 city names against 29 of 32 with one demonstration as turns;
    /// BENCHMARKS.md.)
    Turns {
        /// The last `{{role "user"}}` marker (it opens its line).
        marker: Span,
        /// The turn's text after the marker's line, to the template's last non-space.
        turn: Span,
    },
}

/// The prompt's [`Layout`], if it can show demonstrations at all. A prompt that shows
/// demonstrations of `space` as lines stays laid out in lines, turns or not (one written
/// before turns were offered, or laid out as plain text when they were added).
pub fn layout(doc: &PromptDocument, space: &EditSpace) -> Option<Layout> {
    let unit = example_unit(doc);
    match turns(doc) {
        Some(turns) if unit.is_none_or(|unit| found_lines(doc, space, unit).is_empty()) => Some(turns),
        _ => unit.map(|unit| Layout::Lines { unit }),
    }
}

/// Whether `doc` shows demonstrations of `space` as turns: then an edit that lays it out
/// otherwise (plain text, no role markers) would leave them as no demonstration at all.
pub(super) fn shows_turns(doc: &PromptDocument, space: &EditSpace) -> bool {
    matches!(layout(doc, space), Some(Layout::Turns { .. })) && !find_demos(doc, space).is_empty()
}

/// [`Layout::Turns`] where it applies: a generation prompt laid out through the chat template
/// whose last role marker, alone on its line, opens the user's turn, and that turn holds every
/// variable of the template in plain text.
fn turns(doc: &PromptDocument) -> Option<Layout> {
    if doc.settings.task_or_default() != Task::Generate || doc.settings.format != Format::Chat {
        return None;
    }
    let marker = *role_markers(doc).last()?;
    let role = doc.scan.mustaches.iter().find(|m| m.span == marker)?.expr.as_ref()?.params.first()?;
    if !matches!(role, Term::Literal { value: Value::String(r), .. } if r == "user") {
        return None;
    }
    let source = &doc.source;
    let line_start = source[..marker.start].rfind('\n').map_or(0, |i| i + 1);
    let after = &source[marker.end..];
    let break_len = if after.starts_with("\r\n") { 2 } else { usize::from(after.starts_with('\n')) };
    if line_start != marker.start || line_start < doc.body_span.start || break_len == 0 {
        return None;
    }
    let body = &source[doc.body_span.start..doc.body_span.end];
    let turn = Span::new(marker.end + break_len, doc.body_span.start + body.trim_end().len());
    let first = doc.scan.variables.iter().map(|v| v.span.start).min()?;
    (turn.start <= first && turn.start < turn.end && plain_text_and_variables(doc, turn))
        .then_some(Layout::Turns { marker, turn })
}

/// Where [`Edit::AddDemo`](super::Edit::AddDemo) inserts a demonstration: before the
/// example's lines, or before its user turn.
pub fn demo_point(doc: &PromptDocument, space: &EditSpace) -> Option<usize> {
    match layout(doc, space)? {
        Layout::Lines { unit } => Some(unit.start),
        Layout::Turns { marker, .. } => Some(marker.start),
    }
}

/// The opening of a model turn in a [`Layout::Turns`] demonstration.
const MODEL_TURN: &str = "{{role \"model\"}}";

/// A [`Layout::Turns`] demonstration of `demo` up to its answer: the user's turn with its
/// values and the model turn's marker, each line ended by `nl`.
fn turn_head(doc: &PromptDocument, marker: Span, turn: Span, demo: &DemoSource, nl: &str) -> Option<String> {
    let rendered = render_unit(doc, turn, demo)?;
    let user = &doc.source[marker.start..marker.end];
    Some(format!("{user}{nl}{rendered}{nl}{MODEL_TURN}{nl}"))
}

/// The line break after the user turn's marker (`\r\n` in a CRLF file).
fn marker_break(doc: &PromptDocument, marker: Span) -> &'static str {
    if doc.source[marker.end..].starts_with("\r\n") { "\r\n" } else { "\n" }
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

/// The block that shows `demo` in `doc`: its lines, the cue and the answer, a blank line; or,
/// in [`Layout::Turns`], the user's turn and the model's answering it.
pub fn demo_text(doc: &PromptDocument, space: &EditSpace, demo: &DemoSource) -> Option<String> {
    let answer = demo_answer(doc, demo)?;
    match layout(doc, space)? {
        Layout::Lines { unit } => {
            let rendered = render_unit(doc, unit, demo)?;
            let cue = final_cue(doc).map_or_else(|| "Answer:".to_string(), |(c, _)| c);
            Some(format!("{rendered}\n{cue} {answer}\n\n"))
        }
        Layout::Turns { marker, turn } => Some(format!("{}{answer}\n", turn_head(doc, marker, turn, demo, "\n")?)),
    }
}

/// The demonstrations from `space` that `doc` shows, in file order.
pub fn find_demos(doc: &PromptDocument, space: &EditSpace) -> Vec<FoundDemo> {
    let found = match layout(doc, space) {
        None => return Vec::new(),
        Some(Layout::Lines { unit }) => found_lines(doc, space, unit),
        Some(Layout::Turns { marker, turn }) => found_turns(doc, space, marker, turn),
    };
    one_per_block(doc, space, found)
}

/// Where `needle` occurs in `region` at the start of a line, in order (overlaps included).
fn at_line_starts<'a>(region: &'a str, needle: &'a str) -> impl Iterator<Item = usize> + 'a {
    let mut from = 0;
    std::iter::from_fn(move || {
        while let Some(pos) = region[from..].find(needle) {
            let start = from + pos;
            from = start + region[start..].chars().next().map_or(1, char::len_utf8);
            if start == 0 || region[..start].ends_with('\n') {
                return Some(start);
            }
        }
        None
    })
}

/// Each demonstration of `space` that `region` shows: the first place, at a line start, where
/// its `needle` (`None`: it cannot be shown) opens a block that `read` accepts — called with
/// the demonstration's index, the block's start and where the needle ends.
fn first_blocks(
    space: &EditSpace,
    region: &str,
    needle: impl Fn(&DemoSource) -> Option<String>,
    read: impl Fn(usize, usize, usize) -> Option<FoundDemo>,
) -> Vec<FoundDemo> {
    let shown = |(i, demo): (usize, &DemoSource)| {
        let needle = needle(demo)?;
        at_line_starts(region, &needle).find_map(|start| read(i, start, start + needle.len()))
    };
    space.demos.iter().enumerate().filter_map(shown).collect()
}

/// [`Layout::Lines`] demonstrations: the example's lines with a training example's values,
/// then a cue line with the answer (and a blank line).
fn found_lines(doc: &PromptDocument, space: &EditSpace, unit: Span) -> Vec<FoundDemo> {
    let base = doc.body_span.start;
    let region = &doc.source[base..unit.start];
    // A cue may hold ": " itself (`Q: Answer:`); the prompt's own cue is read whole.
    let cue = final_cue(doc).map(|(c, _)| c);
    let needle = |demo: &DemoSource| render_unit(doc, unit, demo).map(|rendered| format!("{rendered}\n"));
    first_blocks(space, region, needle, |source, start, line_start| {
        let line_len = region[line_start..].find('\n')?;
        let line = &region[line_start..line_start + line_len];
        let own = cue.as_deref().filter(|c| line.strip_prefix(c).is_some_and(|r| r.starts_with(' ')));
        let colon = own.map(|c| c.len() - 1).or_else(|| line.find(": "))?;
        let mut end = line_start + line_len + 1;
        if region[end..].starts_with('\n') {
            end += 1;
        }
        Some(FoundDemo {
            span: Span::new(base + start, base + end),
            answer: Span::new(base + line_start + colon + 2, base + line_start + line_len),
            cue: Some(Span::new(base + line_start, base + line_start + colon + 1)),
            source,
        })
    })
}

/// [`Layout::Turns`] demonstrations: a user turn as the example's with a training example's
/// values, then a model turn of one line.
fn found_turns(doc: &PromptDocument, space: &EditSpace, marker: Span, turn: Span) -> Vec<FoundDemo> {
    let base = doc.body_span.start;
    let region = &doc.source[base..marker.start];
    let nl = marker_break(doc, marker);
    let needle = |demo: &DemoSource| turn_head(doc, marker, turn, demo, nl);
    first_blocks(space, region, needle, |source, start, answer_start| {
        let line_end = answer_start + region[answer_start..].find('\n')?;
        let answer_end = if region[..line_end].ends_with('\r') { line_end - 1 } else { line_end };
        Some(FoundDemo {
            span: Span::new(base + start, base + line_end + 1),
            answer: Span::new(base + answer_start, base + answer_end.max(answer_start)),
            cue: None,
            source,
        })
    })
}

/// `found` in file order, one per block: where several sources show the same text, the one
/// whose answer it shows (else the first), so a block is counted, relabelled and removed once.
fn one_per_block(doc: &PromptDocument, space: &EditSpace, mut found: Vec<FoundDemo>) -> Vec<FoundDemo> {
    found.sort_by_key(|d| d.span.start);
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

/// `text`, `doc` edited, with its [`Layout::Turns`] demonstrations showing the edited user
/// turn: an edit of the example's turn (a sentence added, deleted or rewritten, a cue) is
/// carried into every demonstration's copy of it, so that the conversation keeps one
/// pattern; their answers stay as they are. Text whose turn the edit left alone is returned
/// as it is; a demonstration that cannot show the edited turn refuses the edit.
pub(super) fn follow_the_turn(doc: &PromptDocument, text: String, space: &EditSpace) -> Result<String, EditError> {
    let Some(Layout::Turns { turn, .. }) = layout(doc, space) else { return Ok(text) };
    let demos = find_demos(doc, space);
    if demos.is_empty() {
        return Ok(text);
    }
    let edited = parse(&text, None);
    let Some(Layout::Turns { marker: new_marker, turn: new_turn }) = layout(&edited, space) else { return Ok(text) };
    if doc.source[turn.start..turn.end] == edited.source[new_turn.start..new_turn.end] {
        return Ok(text);
    }
    let nl = marker_break(&edited, new_marker);
    let mut out = text.clone();
    let mut from = 0;
    for demo in demos {
        let head = &doc.source[demo.span.start..demo.answer.start];
        // A block the edit removed or replaced is not there any more.
        let Some(pos) = out[from..].find(head) else { continue };
        let shown = turn_head(&edited, new_marker, new_turn, &space.demos[demo.source], nl)
            .ok_or_else(|| EditError::Invalid("a demonstration cannot show the edited turn".into()))?;
        let at = from + pos;
        out.replace_range(at..at + head.len(), &shown);
        from = at + shown.len();
    }
    Ok(out)
}
