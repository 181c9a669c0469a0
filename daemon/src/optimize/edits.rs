//! Readable prompt edits, applied to the `.prompt` text as minimal text edits, each result
//! checked to parse without errors and keep the same input variables.
//!
//! The optimizer's edit space (DESIGN.md): instruction sentences (delete, swap two neighbours,
//! paraphrase, add a phrase from the bank, GrIPS-style), label words (a verbalizer swap,
//! TEMPERA-style), demonstrations (add, remove or replace an in-context example from the
//! training split, TEMPERA-style), the answer cue (the line the model's answer follows),
//! message structure (chat template or plain text, dropping the role markers), and stop.

use std::collections::BTreeMap;

use reprompt_protocol::settings::Format;
use reprompt_protocol::template::MustacheKind;
use reprompt_protocol::{PromptDocument, Severity, Span, parse};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::calibrate::bias_value;
use super::rng::Rng;

/// One edit of a prompt.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Edit {
    /// Replace the label words (`reprompt.labels`), one per label id; the answers of the
    /// demonstrations in the prompt follow.
    Labels(Vec<String>),
    /// Lay the prompt out through the chat template or as plain text (`reprompt.format`).
    Format(Format),
    /// Delete the template sentence at this byte span of the file.
    DeleteSentence(Span),
    /// Insert a phrase (with its trailing space or newline) at this byte offset of the file.
    InsertPhrase { at: usize, text: String },
    /// Swap two neighbouring sentences (the first span comes first in the file).
    SwapSentences(Span, Span),
    /// Replace the sentence at `span` by a rewrite of it (a paraphrase by the task model).
    Paraphrase { span: Span, text: String },
    /// End the prompt with this answer cue line (`Answer:`), or replace the cue it ends with;
    /// the demonstrations answer after it too.
    AnswerCue(String),
    /// Remove every `{{role …}}` marker: one message instead of turns.
    DropRoles,
    /// Insert a demonstration block (an example with its answer) at this byte offset.
    AddDemo { at: usize, text: String },
    /// Remove the demonstration block at this span.
    RemoveDemo(Span),
    /// Replace the demonstration block at `span` by another one.
    ReplaceDemo { span: Span, text: String },
    /// End the episode: the prompt stays as it is.
    Stop,
    /// A plain completion prompt: plain text, no role markers, ending with this answer cue.
    Completion(String),
    /// A bare completion prompt (LM-BFF's templates): a [`Edit::Completion`] with every
    /// instruction sentence outside the demonstrations deleted, so only the example's lines
    /// (`Review: {{sentence}}`), any demonstrations and this cue are left.
    Bare(String),
    /// Replace the label words by several answer words per label id (`reprompt.labels:
    /// [[harsh, poor], [hopeful, sweet]]`): a label's probability is its words' summed, the
    /// first word names it (in the demonstrations and instructions).
    LabelGroups(Vec<Vec<String>>),
    /// Set the offsets added to each label's log-probability before the answer is chosen
    /// (`reprompt.label_bias`), fitted to the prompt's own answers on training examples
    /// ([`super::calibrate::prior_bias`]).
    LabelBias(Vec<f64>),
}

/// Whether `edit` gives `doc` the very answer words it has (a relabelling that would only
/// re-quote `reprompt.labels` and drop its calibration): no edit worth offering or taking.
pub fn keeps_labels(doc: &PromptDocument, edit: &Edit) -> bool {
    let words = match edit {
        Edit::Labels(words) => words.iter().map(|w| vec![w.clone()]).collect(),
        Edit::LabelGroups(groups) => groups.clone(),
        _ => return false,
    };
    doc.settings.labels.is_some() && words == doc.settings.label_words
}

impl Edit {
    /// A small stable id per edit kind (policy features).
    pub fn kind(&self) -> usize {
        match self {
            Edit::Labels(_) | Edit::LabelGroups(_) => 0,
            Edit::Format(_) => 1,
            Edit::DeleteSentence(_) => 2,
            Edit::InsertPhrase { .. } => 3,
            Edit::SwapSentences(..) => 4,
            Edit::Paraphrase { .. } => 5,
            Edit::AnswerCue(_) => 6,
            Edit::DropRoles => 7,
            Edit::AddDemo { .. } => 8,
            Edit::RemoveDemo(_) => 9,
            Edit::ReplaceDemo { .. } => 10,
            Edit::Stop => 11,
            // A leaner completion prompt: the same kind of edit to the policy and the replay
            // (its description tells the two apart).
            Edit::Completion(_) | Edit::Bare(_) => 12,
            Edit::LabelBias(_) => 13,
        }
    }

    pub const KINDS: usize = 14;

    /// A one-line description for people (and the text the policy embeds).
    pub fn describe(&self, source: &str) -> String {
        let quote = |span: &Span| source.get(span.start..span.end).unwrap_or("").trim().replace('\n', " ");
        // A demonstration's lines, kept apart as in `add example`.
        let lines = |span: &Span| source.get(span.start..span.end).unwrap_or("").trim().replace('\n', " | ");
        match self {
            Edit::Labels(words) => format!("label words {}", words.join(" / ")),
            Edit::Format(Format::Plain) => "plain text instead of the chat template".into(),
            Edit::Format(Format::Chat) => "the chat template instead of plain text".into(),
            Edit::DeleteSentence(span) => format!("delete \"{}\"", quote(span)),
            Edit::InsertPhrase { text, .. } => format!("add \"{}\"", text.trim()),
            Edit::SwapSentences(a, b) => format!("swap \"{}\" and \"{}\"", quote(a), quote(b)),
            Edit::Paraphrase { span, text } => format!("rewrite \"{}\" as \"{}\"", quote(span), text.trim()),
            Edit::AnswerCue(cue) => format!("answer cue \"{cue}\""),
            Edit::DropRoles => "drop the role markers".into(),
            Edit::AddDemo { text, .. } => format!("add example \"{}\"", text.trim().replace('\n', " | ")),
            Edit::RemoveDemo(span) => format!("remove example \"{}\"", lines(span)),
            Edit::ReplaceDemo { span, text } => {
                format!("replace example \"{}\" by \"{}\"", lines(span), text.trim().replace('\n', " | "))
            }
            Edit::Stop => "stop".into(),
            Edit::Completion(cue) => format!("plain completion prompt ending in \"{cue}\""),
            Edit::Bare(cue) => format!("bare completion prompt: the example's lines and \"{cue}\""),
            Edit::LabelGroups(groups) => {
                format!("label words {}", groups.iter().map(|g| g.join(", ")).collect::<Vec<_>>().join(" / "))
            }
            Edit::LabelBias(bias) => format!("calibrate the labels: label bias {}", bias_value(bias)),
        }
    }
}

/// The `reprompt.labels` value of several words per label: `[["harsh", "poor"], ["sweet"]]`
/// (each word quoted, so any word parses as text).
pub fn label_groups_value(groups: &[Vec<String>]) -> String {
    let quoted = |w: &String| serde_json::to_string(w).unwrap_or_default();
    let list: Vec<String> =
        groups.iter().map(|g| format!("[{}]", g.iter().map(quoted).collect::<Vec<_>>().join(", "))).collect();
    format!("[{}]", list.join(", "))
}

/// `reprompt.data_labels`'s value: a word per label id, or a list where an id has several.
pub fn data_labels_value(groups: &[Vec<String>]) -> String {
    if groups.iter().all(|g| g.len() == 1) {
        let quoted: Vec<String> = groups.iter().map(|g| serde_json::to_string(&g[0]).unwrap_or_default()).collect();
        format!("[{}]", quoted.join(", "))
    } else {
        label_groups_value(groups)
    }
}

/// Where the data names its labels by word ([`EditSpace::data_labels`]) and `doc` does not
/// say so yet, the `reprompt.data_labels` line a relabelling adds (under the labels'), so
/// that the relabelled prompt still reads its data.
fn keep_data_labels(doc: &PromptDocument, space: &EditSpace) -> Result<Vec<TextEdit>, EditError> {
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
fn replace_value(doc: &PromptDocument, key: &str, value: &str) -> Option<TextEdit> {
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
fn set_setting(doc: &PromptDocument, key: &str, value: &str) -> Result<Vec<TextEdit>, EditError> {
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
fn entry_line(doc: &PromptDocument, key: &str) -> Option<Span> {
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

/// Answer cues: the line the model's answer follows (generic classification cues).
pub const CUES: &[&str] = &["Answer:", "Output:", "Label:", "Category:", "Sentiment:", "Topic:"];

/// A training example the optimizer may show as a demonstration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DemoSource {
    pub input: Map<String, Value>,
    /// The gold label id (classification).
    pub label: Option<usize>,
    /// The gold answer (generation).
    pub answer: Option<String>,
}

/// What the edit space draws from beyond the prompt itself.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct EditSpace {
    /// Instruction phrases to add.
    pub phrases: Vec<String>,
    /// Label-word sets to try.
    pub label_sets: Vec<Vec<String>>,
    /// Sets of several words per label to try ([`Edit::LabelGroups`]).
    #[serde(default)]
    pub label_groups: Vec<Vec<Vec<String>>>,
    /// Answer cues to try.
    pub cues: Vec<String>,
    /// Training examples usable as demonstrations.
    pub demos: Vec<DemoSource>,
    /// Rewrites of sentences (sentence text → rewrites), filled by the task model.
    pub paraphrases: BTreeMap<String, Vec<String>>,
    /// Most demonstrations a prompt may hold.
    pub max_demos: usize,
    /// Demonstrations offered per state (a seeded sample of the pool).
    pub demo_offers: usize,
    /// Offer [`Edit::Bare`]. A bare prompt needs label words chosen for it (on SST-2
    /// development splits bare prompts kept the author's words and scored at chance), so
    /// the search offers it only where the model ranks label words.
    #[serde(default)]
    pub bare: bool,
    /// The words the data names each label id by, where it names them by word rather than
    /// by id (`None` otherwise): a relabelled prompt keeps them as `reprompt.data_labels`,
    /// so that it still reads its data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_labels: Option<Vec<Vec<String>>>,
}

impl EditSpace {
    /// The built-in banks and `demos`.
    pub fn builtin(demos: Vec<DemoSource>) -> Self {
        Self {
            phrases: PHRASES.iter().map(|s| s.to_string()).collect(),
            label_sets: LABEL_SETS.iter().map(|set| set.iter().map(|s| s.to_string()).collect()).collect(),
            cues: CUES.iter().map(|s| s.to_string()).collect(),
            demos,
            label_groups: Vec::new(),
            paraphrases: BTreeMap::new(),
            max_demos: 4,
            demo_offers: 3,
            bare: false,
            data_labels: None,
        }
    }
}

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
fn final_cue(doc: &PromptDocument) -> Option<(String, Span)> {
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

/// The minimal text edits that carry out `edit` on `doc`.
pub fn text_edits(doc: &PromptDocument, edit: &Edit, space: &EditSpace) -> Result<Vec<TextEdit>, EditError> {
    let not = |why: &str| EditError::NotApplicable(why.to_string());
    match edit {
        Edit::Labels(_) | Edit::LabelGroups(_) => {
            let (words, value): (Vec<String>, String) = match edit {
                Edit::LabelGroups(groups) => {
                    if groups.iter().any(|g| g.is_empty()) {
                        return Err(not("a label without words"));
                    }
                    (groups.iter().map(|g| g[0].clone()).collect(), label_groups_value(groups))
                }
                Edit::Labels(words) => {
                    let quoted: Vec<String> =
                        words.iter().map(|w| serde_json::to_string(w).unwrap_or_default()).collect();
                    (words.clone(), format!("[{}]", quoted.join(", ")))
                }
                _ => unreachable!("matched above"),
            };
            let labels = doc.settings.labels.as_ref().ok_or_else(|| not("the prompt has no labels"))?;
            if words.len() != labels.value.len() {
                return Err(EditError::NotApplicable(format!(
                    "{} labels for {} label ids",
                    words.len(),
                    labels.value.len()
                )));
            }
            let mut edits = vec![
                replace_value(doc, "reprompt.labels", &value)
                    .unwrap_or(TextEdit { span: labels.span, replacement: value }),
            ];
            edits.extend(keep_data_labels(doc, space)?);
            // A calibration belongs to the words it was fitted to.
            if let Some(line) = entry_line(doc, "reprompt.label_bias") {
                edits.push(TextEdit { span: line, replacement: String::new() });
            }
            // The demonstrations answer with the new words too.
            let demos = find_demos(doc, space);
            for demo in &demos {
                if let Some(word) = space.demos[demo.source].label.and_then(|l| words.get(l)) {
                    edits.push(TextEdit { span: demo.answer, replacement: word.clone() });
                }
            }
            // And the instructions name the new words where they named the old ones
            // ("great or terrible?" → "positive or negative?"); by the labels' names only:
            // a group's other words are often common ones ("light", "language") that an
            // instruction uses in their own sense.
            let source = &doc.source;
            let (fields, cue) = example_fields(doc);
            let field_of = |line: &str| line.trim_start().split_once(": ").map(|(name, _)| name.to_string());
            for segment in text_segments(doc) {
                for (span, label) in label_mentions(doc, segment, &labels.value) {
                    if demos.iter().any(|d| span.start < d.span.end && span.end > d.span.start) {
                        continue;
                    }
                    // The example's own lines are content; a line under the cue is an answer,
                    // renamed only whole; other lines are instructions.
                    let line_span = line_around(doc, span.start);
                    let line = &source[line_span.start..line_span.end];
                    let field = field_of(line);
                    if field.as_ref().is_some_and(|f| fields.contains(f)) {
                        continue;
                    }
                    if field.is_some() && field == cue {
                        let whole = line.trim().split_once(": ").is_some_and(|(_, value)| {
                            value.trim().trim_end_matches(['.', '!']) == &source[span.start..span.end]
                        });
                        if !whole {
                            continue;
                        }
                    }
                    let old = &doc.source[span.start..span.end];
                    let mut word = words[label].clone();
                    if old.chars().next().is_some_and(char::is_uppercase) {
                        word = capitalized(&word);
                    }
                    edits.push(TextEdit { span, replacement: word });
                }
            }
            Ok(edits)
        }
        Edit::Format(format) => {
            let value = match format {
                Format::Chat => "chat",
                Format::Plain => "plain",
            };
            set_setting(doc, "reprompt.format", value)
        }
        Edit::LabelBias(bias) => {
            let labels = doc.settings.labels.as_ref().ok_or_else(|| not("the prompt has no labels"))?;
            if bias.len() != labels.value.len() || bias.iter().any(|b| !b.is_finite()) {
                return Err(not("one finite offset per label id"));
            }
            set_setting(doc, "reprompt.label_bias", &bias_value(bias))
        }
        Edit::DeleteSentence(span) => {
            if !sentences(doc).contains(span) {
                return Err(not("no such sentence"));
            }
            // Take the space after the sentence along, so no double spaces are left; a
            // sentence alone on its line goes with its line end.
            let mut end = span.end;
            let alone = doc.source[..span.start].ends_with('\n') && doc.source[end..].starts_with('\n');
            if doc.source[end..].starts_with(' ') || alone {
                end += 1;
            }
            Ok(vec![TextEdit { span: Span::new(span.start, end), replacement: String::new() }])
        }
        Edit::InsertPhrase { at, text } => {
            if !insertion_points(doc).contains(at) {
                return Err(not("not an insertion point"));
            }
            Ok(vec![TextEdit { span: Span::at(*at), replacement: text.clone() }])
        }
        Edit::SwapSentences(a, b) => {
            let all = sentences(doc);
            if !(all.contains(a) && all.contains(b) && a.end <= b.start) {
                return Err(not("no such pair of sentences"));
            }
            Ok(vec![
                TextEdit { span: *a, replacement: doc.source[b.start..b.end].to_string() },
                TextEdit { span: *b, replacement: doc.source[a.start..a.end].to_string() },
            ])
        }
        Edit::Paraphrase { span, text } => {
            if !sentences(doc).contains(span) {
                return Err(not("no such sentence"));
            }
            if text.contains(['\n', '\r']) || text.contains("{{") || text.contains("}}") || text.trim().is_empty() {
                return Err(not("a rewrite is one line of plain text"));
            }
            Ok(vec![TextEdit { span: *span, replacement: text.trim().to_string() }])
        }
        Edit::AnswerCue(cue) => {
            if cue.contains(['\n', '\r']) || cue.contains("{{") || cue.trim().is_empty() {
                return Err(not("a cue is one line of plain text"));
            }
            // The demonstrations answer after the same cue as the example.
            let mut edits: Vec<TextEdit> = find_demos(doc, space)
                .into_iter()
                .filter(|d| doc.source[d.cue.start..d.cue.end] != *cue)
                .map(|d| TextEdit { span: d.cue, replacement: cue.clone() })
                .collect();
            match final_cue(doc) {
                Some((current, _)) if current == *cue => {
                    if edits.is_empty() {
                        return Err(not("the prompt already ends with this cue"));
                    }
                }
                Some((_, span)) => edits.push(TextEdit { span, replacement: cue.clone() }),
                None => {
                    let body = &doc.source[doc.body_span.start..doc.body_span.end];
                    let at = doc.body_span.start + body.trim_end().len();
                    edits.push(TextEdit { span: Span::at(at), replacement: format!("\n{cue}") });
                }
            }
            Ok(edits)
        }
        Edit::DropRoles => {
            let markers = role_markers(doc);
            if markers.is_empty() {
                return Err(not("the prompt has no role markers"));
            }
            Ok(markers
                .into_iter()
                .map(|span| {
                    let end = if doc.source[span.end..].starts_with('\n') { span.end + 1 } else { span.end };
                    TextEdit { span: Span::new(span.start, end), replacement: String::new() }
                })
                .collect())
        }
        Edit::AddDemo { at, text } => {
            if example_unit(doc).map(|u| u.start) != Some(*at) {
                return Err(not("demonstrations go right before the example's lines"));
            }
            if find_demos(doc, space).len() >= space.max_demos.max(1) {
                return Err(not("the prompt holds the most demonstrations allowed"));
            }
            Ok(vec![TextEdit { span: Span::at(*at), replacement: text.clone() }])
        }
        Edit::RemoveDemo(span) => {
            if !find_demos(doc, space).iter().any(|d| d.span == *span) {
                return Err(not("no such demonstration"));
            }
            Ok(vec![TextEdit { span: *span, replacement: String::new() }])
        }
        Edit::ReplaceDemo { span, text } => {
            if !find_demos(doc, space).iter().any(|d| d.span == *span) {
                return Err(not("no such demonstration"));
            }
            Ok(vec![TextEdit { span: *span, replacement: text.clone() }])
        }
        Edit::Stop => Ok(Vec::new()),
        Edit::Completion(cue) => {
            if doc.settings.format == Format::Plain && role_markers(doc).is_empty() {
                return Err(not("the prompt is a plain completion prompt already"));
            }
            let mut edits = Vec::new();
            if doc.settings.format != Format::Plain {
                edits.extend(text_edits(doc, &Edit::Format(Format::Plain), space)?);
            }
            if !role_markers(doc).is_empty() {
                edits.extend(text_edits(doc, &Edit::DropRoles, space)?);
            }
            match text_edits(doc, &Edit::AnswerCue(cue.clone()), space) {
                Ok(cue_edits) => edits.extend(cue_edits),
                Err(EditError::NotApplicable(_)) if final_cue(doc).is_some_and(|(c, _)| c == *cue) => {}
                Err(e) => return Err(e),
            }
            // A role marker at the end of the template is deleted with its line break, where
            // the cue goes: deletions there end at the text's end, before the cue.
            let (deletions, mut others): (Vec<TextEdit>, Vec<TextEdit>) =
                edits.into_iter().partition(|e| e.replacement.is_empty() && e.span.end > e.span.start);
            others.extend(merged_deletions(doc, deletions.into_iter().map(|e| e.span).collect()));
            Ok(others)
        }
        Edit::Bare(cue) => {
            if cue.contains(['\n', '\r']) || cue.contains("{{") || cue.trim().is_empty() {
                return Err(not("a cue is one line of plain text"));
            }
            let sentences = instruction_deletions(doc, space);
            if sentences.is_empty() {
                return Err(not("the prompt has no instruction sentences to leave out"));
            }
            // The layout and cue edits of a plain completion (or just the cue, on a plain
            // prompt; none when it already ends with this cue).
            let structure = match text_edits(doc, &Edit::Completion(cue.clone()), space) {
                Ok(edits) => edits,
                Err(EditError::NotApplicable(_)) => {
                    text_edits(doc, &Edit::AnswerCue(cue.clone()), space).unwrap_or_default()
                }
                Err(e) => return Err(e),
            };
            let (mut deletions, others): (Vec<TextEdit>, Vec<TextEdit>) =
                structure.into_iter().partition(|e| e.replacement.is_empty() && e.span.end > e.span.start);
            // A sentence on the cue line goes with the line the new cue replaces.
            let replaced: Vec<Span> = others.iter().map(|e| e.span).filter(|s| s.end > s.start).collect();
            deletions.extend(
                sentences
                    .into_iter()
                    .filter(|s| !replaced.iter().any(|r| s.start < r.end && r.start < s.end))
                    .map(|span| TextEdit { span, replacement: String::new() }),
            );
            let mut edits = others;
            edits.extend(merged_deletions(doc, deletions.into_iter().map(|e| e.span).collect()));
            Ok(edits)
        }
    }
}

/// What [`Edit::Bare`] deletes: every prose sentence outside the demonstrations — a line of
/// nothing but such sentences as a whole line, one that shares its line with other text with
/// the spaces between them. Sentences on lines that open with a field name (`Review: I loved
/// it.`, the author's own examples) are content, not instructions, and stay.
fn instruction_deletions(doc: &PromptDocument, space: &EditSpace) -> Vec<Span> {
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
fn example_fields(doc: &PromptDocument) -> (Vec<String>, Option<String>) {
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
fn line_around(doc: &PromptDocument, at: usize) -> Span {
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
fn merged_deletions(doc: &PromptDocument, mut spans: Vec<Span>) -> Vec<TextEdit> {
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
fn role_markers(doc: &PromptDocument) -> Vec<Span> {
    doc.scan
        .mustaches
        .iter()
        .filter(|m| m.kind == MustacheKind::Expression && m.expr.as_ref().and_then(|e| e.head_name()) == Some("role"))
        .map(|m| m.span)
        .collect()
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
pub fn apply_checked(doc: &PromptDocument, edit: &Edit, space: &EditSpace) -> Result<String, EditError> {
    let mut edits = text_edits(doc, edit, space)?;
    // The same change twice is one change; of two different ones that overlap, `apply` would
    // drop the later: half an edit is not this edit.
    edits.sort_by(|a, b| (a.span.start, a.span.end, &a.replacement).cmp(&(b.span.start, b.span.end, &b.replacement)));
    edits.dedup();
    if edits.windows(2).any(|w| w[1].span.start < w[0].span.end) {
        return Err(EditError::Invalid("the edit's changes overlap".into()));
    }
    let mut text = apply(&doc.source, &edits);
    // New lines end as the file's lines do: a CRLF file stays CRLF throughout (a file of
    // mixed line endings is left as the edit made it).
    if crlf_file(&doc.source) {
        text = with_crlf(&text);
    }
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

/// Whether every line of `source` ends in CRLF (and one does): then every line break an edit
/// makes is one of the edit's.
fn crlf_file(source: &str) -> bool {
    let bytes = source.as_bytes();
    let mut breaks = bytes.iter().enumerate().filter(|(_, b)| matches!(b, b'\r' | b'\n')).peekable();
    breaks.peek().is_some()
        && breaks.all(|(i, &b)| match b {
            b'\r' => bytes.get(i + 1) == Some(&b'\n'),
            _ => i > 0 && bytes[i - 1] == b'\r',
        })
}

/// `text` with every line break CRLF: a bare LF, and a CR that a deletion parted from its LF.
fn with_crlf(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\r' => {
                out.push_str("\r\n");
                if chars.peek() == Some(&'\n') {
                    chars.next();
                }
            }
            '\n' => out.push_str("\r\n"),
            c => out.push(c),
        }
    }
    out
}

/// Whole-word, case-insensitive mentions of label words in a prose segment: (span, label id).
fn label_mentions(doc: &PromptDocument, segment: Span, labels: &[String]) -> Vec<(Span, usize)> {
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

fn capitalized(word: &str) -> String {
    let mut chars = word.chars();
    chars.next().map_or_else(String::new, |first| first.to_uppercase().chain(chars).collect())
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

/// The edits offered for `doc`: every one that applies and passes [`apply_checked`], with a
/// seeded sample of the demonstration pool. [`Edit::Stop`] is the caller's to add.
pub fn candidates(doc: &PromptDocument, space: &EditSpace, rng: &mut Rng) -> Vec<Edit> {
    applied_candidates(doc, space, rng).into_iter().map(|(edit, _)| edit).collect()
}

/// [`candidates`] with the text each edit produces (every edit is applied once, to check it).
pub fn applied_candidates(doc: &PromptDocument, space: &EditSpace, rng: &mut Rng) -> Vec<(Edit, String)> {
    let mut edits = Vec::new();
    let demos = find_demos(doc, space);
    let in_demo = |s: &Span| demos.iter().any(|d| s.start < d.span.end && s.end > d.span.start);
    let prose: Vec<Span> = sentences(doc).into_iter().filter(|s| !in_demo(s)).collect();
    if let Some(labels) = &doc.settings.labels {
        let sets = space.label_sets.iter().filter(|s| s.len() == labels.value.len()).cloned().map(Edit::Labels);
        let groups =
            space.label_groups.iter().filter(|g| g.len() == labels.value.len()).cloned().map(Edit::LabelGroups);
        edits.extend(sets.chain(groups).filter(|edit| !keeps_labels(doc, edit)));
    }
    edits.push(Edit::Format(match doc.settings.format {
        Format::Chat => Format::Plain,
        Format::Plain => Format::Chat,
    }));
    if !role_markers(doc).is_empty() {
        edits.push(Edit::DropRoles);
    }
    if doc.settings.format == Format::Chat || !role_markers(doc).is_empty() {
        edits.extend(space.cues.iter().map(|c| Edit::Completion(c.clone())));
    }
    if space.bare && !prose.is_empty() {
        edits.extend(space.cues.iter().map(|c| Edit::Bare(c.clone())));
    }
    edits.extend(space.cues.iter().map(|c| Edit::AnswerCue(c.clone())));
    edits.extend(prose.iter().copied().map(Edit::DeleteSentence));
    edits.extend(prose.windows(2).map(|w| Edit::SwapSentences(w[0], w[1])));
    for span in &prose {
        let sentence = &doc.source[span.start..span.end];
        for text in space.paraphrases.get(sentence).into_iter().flatten() {
            edits.push(Edit::Paraphrase { span: *span, text: text.clone() });
        }
    }
    for at in
        insertion_points(doc).into_iter().filter(|&at| !demos.iter().any(|d| d.span.start <= at && at < d.span.end))
    {
        let sentence_here = prose.iter().any(|s| s.start == at);
        for phrase in space.phrases.iter().filter(|p| !doc.source.contains(p.as_str())) {
            let text = if sentence_here { format!("{phrase} ") } else { format!("{phrase}\n") };
            edits.push(Edit::InsertPhrase { at, text });
        }
    }
    if let Some(unit) = example_unit(doc) {
        let mut absent: Vec<usize> = (0..space.demos.len()).filter(|i| !demos.iter().any(|d| d.source == *i)).collect();
        rng.shuffle(&mut absent);
        let mut offers = absent.into_iter();
        if demos.len() < space.max_demos {
            for source in offers.by_ref().take(space.demo_offers) {
                if let Some(text) = demo_text(doc, &space.demos[source]) {
                    edits.push(Edit::AddDemo { at: unit.start, text });
                }
            }
        }
        for demo in &demos {
            edits.push(Edit::RemoveDemo(demo.span));
            if let Some(text) = offers.next().and_then(|s| demo_text(doc, &space.demos[s])) {
                edits.push(Edit::ReplaceDemo { span: demo.span, text });
            }
        }
    }
    edits.into_iter().filter_map(|e| apply_checked(doc, &e, space).ok().map(|text| (e, text))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = include_str!("../../../examples/sentiment/sentiment.prompt");

    fn doc() -> PromptDocument {
        parse(EXAMPLE, None)
    }

    /// A training example of the example prompt: its sentence and label.
    fn sentence_demo(sentence: &str, label: usize) -> DemoSource {
        let mut input = Map::new();
        input.insert("sentence".into(), Value::String(sentence.into()));
        DemoSource { input, label: Some(label), answer: None }
    }

    fn space() -> EditSpace {
        let demo = sentence_demo;
        EditSpace::builtin(vec![
            demo("a dull , lifeless film .", 0),
            demo("a joy to watch {{ even twice }} .", 1),
            demo("the cast is superb .", 1),
        ])
    }

    #[test]
    fn a_crlf_file_keeps_its_line_endings() {
        let doc = parse("---\r\nreprompt.labels: [bad, good]\r\n---\r\nReview: {{x}}\r\nSentiment:\r\n", None);
        let space = EditSpace::builtin(Vec::new());
        for edit in [
            Edit::LabelBias(vec![0.0, -1.0]),
            Edit::AddDemo { at: doc.body_span.start, text: "Review: fine\nSentiment: good\n\n".into() },
        ] {
            let text = apply_checked(&doc, &edit, &space).unwrap();
            assert!(!text.replace("\r\n", "").contains('\n'), "{edit:?}: {text:?}");
            assert_ne!(text, doc.source);
        }
        assert_eq!(with_crlf("a\nb\r\nc\rd\n"), "a\r\nb\r\nc\r\nd\r\n");
        // A file of mixed line endings is left as it is.
        assert!(crlf_file("a\r\nb\r\n") && !crlf_file("a\r\nb\nc\r\n") && !crlf_file("a\nb\n"));
    }

    #[test]
    fn label_and_format_edits_touch_only_their_values() {
        let (doc, space) = (doc(), space());
        let text = apply_checked(&doc, &Edit::Labels(vec!["negative".into(), "positive".into()]), &space).unwrap();
        assert!(text.contains("reprompt.labels: [\"negative\", \"positive\"]\n"), "{text}");
        // The instruction that names the labels follows them.
        assert!(text.contains("Is the sentiment of this review positive or negative?"), "{text}");
        let capital = parse("---\nreprompt.labels: [no, yes]\n---\nYes or no? Say yes. Notes: {{x}}", None);
        let relabelled = apply_checked(&capital, &Edit::Labels(vec!["bad".into(), "good".into()]), &space).unwrap();
        assert!(relabelled.ends_with("Good or bad? Say good. Notes: {{x}}"), "{relabelled}");
        assert_eq!(text.lines().count(), EXAMPLE.lines().count());
        let plain = apply_checked(&doc, &Edit::Format(Format::Plain), &space).unwrap();
        let reparsed = parse(&plain, None);
        assert_eq!(reparsed.settings.format, Format::Plain);
        assert_eq!(reparsed.template(), doc.template());
        // And back: the key now exists, so its value is replaced in place.
        let chat = apply_checked(&reparsed, &Edit::Format(Format::Chat), &space).unwrap();
        assert_eq!(parse(&chat, None).settings.format, Format::Chat);
        assert_eq!(chat.len(), plain.len() - "plain".len() + "chat".len());
    }

    #[test]
    fn a_label_edit_leaves_the_authors_own_examples_alone_but_their_answers() {
        let doc = parse(
            "---\nreprompt.labels: [terrible, great]\n---\nGreat or terrible?\nReview: a great cast .\nSentiment: great\n\nReview: {{sentence}}\nSentiment:\n",
            None,
        );
        let text = apply_checked(&doc, &Edit::Labels(vec!["bad".into(), "good".into()]), &space()).unwrap();
        assert!(text.contains("Good or bad?\nReview: a great cast .\nSentiment: good\n"), "{text}");
        // A field-shaped instruction is not an example; an answer may end a sentence.
        let doc = parse(
            "---\nreprompt.labels: [terrible, great]\n---\nQuestion: great or terrible?\nReview: a great cast .\nSentiment: great.\n\nReview: {{sentence}}\nSentiment:\n",
            None,
        );
        let text = apply_checked(&doc, &Edit::Labels(vec!["bad".into(), "good".into()]), &space()).unwrap();
        assert!(text.contains("Question: good or bad?\nReview: a great cast .\nSentiment: good.\n"), "{text}");
        // The example's own line stays whole even when it is a label word and nothing else.
        let doc = parse(
            "---\nreprompt.labels: [terrible, great]\n---\nReview: Great!\nSentiment: great\n\nReview: {{sentence}}\nSentiment:\n",
            None,
        );
        let text = apply_checked(&doc, &Edit::Labels(vec!["bad".into(), "good".into()]), &space()).unwrap();
        assert!(text.contains("Review: Great!\nSentiment: good\n"), "{text}");
    }

    #[test]
    fn a_block_two_training_examples_show_is_edited_once() {
        // The same sentence twice in the training data, even labelled both ways.
        let superb = "the cast is superb .";
        let space = EditSpace::builtin(vec![sentence_demo(superb, 0), sentence_demo(superb, 1)]);
        let doc = doc();
        let shown = demo_text(&doc, &space.demos[1]).unwrap();
        let at = example_unit(&doc).unwrap().start;
        let with = parse(&apply_checked(&doc, &Edit::AddDemo { at, text: shown }, &space).unwrap(), None);
        let found = find_demos(&with, &space);
        assert_eq!(found.len(), 1, "one block");
        assert_eq!(found[0].source, 1, "the source whose answer it shows");
        let text = apply_checked(&with, &Edit::Labels(vec!["bad".into(), "good".into()]), &space).unwrap();
        assert!(text.contains("Review: the cast is superb .\nAnswer: good\n"), "{text}");
    }

    #[test]
    fn labels_written_as_a_block_list_are_edited_too() {
        for yaml in ["reprompt.labels:\n- terrible\n- great\n", "reprompt.labels:\n  - terrible\n  - great\n"] {
            let doc = parse(
                &format!("---\n{yaml}reprompt.label_bias:\n- 0\n- 1\n---\nReview: {{{{x}}}}\nSentiment:\n"),
                None,
            );
            assert!(doc.diagnostics.is_empty(), "{:?}", doc.diagnostics);
            let text = apply_checked(&doc, &Edit::Labels(vec!["bad".into(), "good".into()]), &space()).unwrap();
            assert_eq!(parse(&text, None).settings.labels.unwrap().value, ["bad", "good"], "{text}");
            let text = apply_checked(&doc, &Edit::LabelBias(vec![0.0, -0.5]), &space()).unwrap();
            assert_eq!(parse(&text, None).settings.label_bias.unwrap().value, [0.0, -0.5], "{text}");
        }
    }

    #[test]
    fn a_completion_keeps_its_cue_where_a_role_marker_ended_the_template() {
        let doc = parse(
            "---\nreprompt.labels: [bad, good]\n---\n{{role \"user\"}}\nReview: {{x}}\n{{role \"model\"}}\n",
            None,
        );
        let text = apply_checked(&doc, &Edit::Completion("Sentiment:".into()), &space()).unwrap();
        assert!(text.trim_end().ends_with("Review: {{x}}\nSentiment:"), "{text:?}");
    }

    #[test]
    fn demonstrations_of_untrusted_text_stay_literal_and_never_panic() {
        let demo = |s: &str| sentence_demo(s, 1);
        // A match inside a longer line, right before a multi-byte character.
        let doc = parse("---\nreprompt.labels: [bad, good]\n---\nNote: éa\n\n{{sentence}}\nSentiment:\n", None);
        let space = EditSpace::builtin(vec![demo("éa")]);
        assert!(find_demos(&doc, &space).is_empty());
        // An escaped mustache in the data would come alive behind the escape's escape.
        let doc = parse("---\nreprompt.labels: [bad, good]\n---\nReview: {{sentence}}\nSentiment:\n", None);
        assert!(demo_text(&doc, &demo(r"a \{{sentence}} b")).is_none());
        // Neighbouring values that make a mustache together.
        let pair = parse("---\nreprompt.labels: [bad, good]\n---\nPair: {{a}}{{b}}\nSentiment:\n", None);
        let mut input = Map::new();
        input.insert("a".into(), Value::String("x{".into()));
        input.insert("b".into(), Value::String("{y".into()));
        assert!(demo_text(&pair, &DemoSource { input: input.clone(), label: Some(0), answer: None }).is_none());
        input.insert("b".into(), Value::String("y".into()));
        assert!(demo_text(&pair, &DemoSource { input, label: Some(0), answer: None }).is_some());
        // An escape left open would run on over the template's own variables.
        assert!(demo_text(&doc, &demo("a {{b")).is_none());
        // A brace at the end of a value is just text when plain text follows it.
        assert!(demo_text(&doc, &demo("ends in {")).is_some());
        let shown = demo_text(&doc, &demo("a {{b}} c")).unwrap();
        let unit = example_unit(&doc).unwrap();
        let text = apply_checked(
            &doc,
            &Edit::AddDemo { at: unit.start, text: shown },
            &EditSpace::builtin(vec![demo("a {{b}} c")]),
        )
        .unwrap();
        assert_eq!(parse(&text, None).scan.variables.len(), 1, "{text}");
    }

    #[test]
    fn sentences_are_found_in_prose_and_edits_keep_variables() {
        let (doc, space) = (doc(), space());
        let found: Vec<&str> = sentences(&doc).iter().map(|s| &doc.source[s.start..s.end]).collect();
        assert_eq!(
            found,
            [
                "You are a helpful assistant that classifies the sentiment of movie reviews.",
                "Is the sentiment of this review great or terrible?",
                "Answer with one word."
            ]
        );
        let deleted = apply_checked(&doc, &Edit::DeleteSentence(sentences(&doc)[1]), &space).unwrap();
        assert!(deleted.contains("Review: {{sentence}}\nAnswer with one word."), "{deleted}");
        let at = insertion_points(&doc)[0];
        let inserted = apply_checked(&doc, &Edit::InsertPhrase { at, text: "Be accurate. ".into() }, &space).unwrap();
        assert!(inserted.contains("Be accurate. You are a helpful assistant"), "{inserted}");
        let s = sentences(&doc);
        let swapped = apply_checked(&doc, &Edit::SwapSentences(s[1], s[2]), &space).unwrap();
        assert!(swapped.contains("Answer with one word. Is the sentiment of this review great or terrible?"));
        let rewrite = Edit::Paraphrase { span: s[2], text: "Reply in a single word.".into() };
        assert!(apply_checked(&doc, &rewrite, &space).unwrap().contains("terrible? Reply in a single word.\n"));
    }

    #[test]
    fn cues_and_roles_change_the_structure() {
        let (doc, space) = (doc(), space());
        let cued = apply_checked(&doc, &Edit::AnswerCue("Sentiment:".into()), &space).unwrap();
        assert!(cued.ends_with("Answer with one word.\nSentiment:\n"), "{cued:?}");
        // A second cue replaces the first instead of stacking.
        let recued = apply_checked(&parse(&cued, None), &Edit::AnswerCue("Answer:".into()), &space).unwrap();
        assert!(recued.ends_with("one word.\nAnswer:\n"), "{recued:?}");
        let completion = apply_checked(&doc, &Edit::Completion("Sentiment:".into()), &space).unwrap();
        let reparsed = parse(&completion, None);
        assert_eq!(reparsed.settings.format, Format::Plain);
        assert!(completion.ends_with("reviews.\nReview: {{sentence}}\nIs the sentiment of this review great or terrible? Answer with one word.\nSentiment:\n"), "{completion}");
        assert!(apply_checked(&reparsed, &Edit::Completion("Answer:".into()), &space).is_err(), "already plain");
        let system = sentences(&doc)[0];
        let deleted = apply_checked(&doc, &Edit::DeleteSentence(system), &space).unwrap();
        assert!(deleted.contains("{{role \"system\"}}\n{{role \"user\"}}"), "the emptied line goes: {deleted}");
        let flat = apply_checked(&doc, &Edit::DropRoles, &space).unwrap();
        assert!(!flat.contains("{{role"));
        assert!(
            flat.contains("---\nYou are a helpful assistant that classifies the sentiment of movie reviews.\nReview:")
        );
    }

    #[test]
    fn a_bare_completion_keeps_only_the_example_lines_demonstrations_and_the_cue() {
        let space = space();
        let front = |text: &str| text[..parse(text, None).body_span.start].to_string();
        let body = |text: &str| text[parse(text, None).body_span.start..].to_string();
        let bare_body = |text: &str, cue: &str, space: &EditSpace| {
            body(&apply_checked(&parse(text, None), &Edit::Bare(cue.into()), space).unwrap())
        };
        // The example (chat, instructions around the input line): roles and sentences go.
        let bare = apply_checked(&doc(), &Edit::Bare("Sentiment:".into()), &space).unwrap();
        assert_eq!(body(&bare), "Review: {{sentence}}\nSentiment:\n");
        assert_eq!(parse(&bare, None).settings.format, Format::Plain);
        assert_eq!(front(&bare), front(&apply_checked(&doc(), &Edit::Format(Format::Plain), &space).unwrap()));
        // A plain prompt ending in a cue: the cue is replaced, the demonstration stays and
        // answers after the new cue.
        let plain = "---\nreprompt.format: plain\nreprompt.labels: [terrible, great]\n---\nBe brief. Think.\n\
                     Review: a joy to watch \\{{ even twice }} .\nAnswer: great\n\nReview: {{sentence}}\n\
                     Answer with one word.\nAnswer:\n";
        let doc = parse(plain, None);
        assert_eq!(find_demos(&doc, &space).len(), 1);
        let bare = apply_checked(&doc, &Edit::Bare("Sentiment:".into()), &space).unwrap();
        assert_eq!(
            body(&bare),
            "Review: a joy to watch \\{{ even twice }} .\nSentiment: great\n\nReview: {{sentence}}\nSentiment:\n"
        );
        // Same cue: only the sentences go. With nothing left to delete it is no edit.
        let same = apply_checked(&doc, &Edit::Bare("Answer:".into()), &space).unwrap();
        assert!(same.ends_with("Review: {{sentence}}\nAnswer:\n"), "{same}");
        let err = apply_checked(&parse(&same, None), &Edit::Bare("Answer:".into()), &space);
        assert!(matches!(err, Err(EditError::NotApplicable(_))), "{err:?}");
        assert!(!candidates(&doc, &space, &mut Rng::new(1)).iter().any(|e| matches!(e, Edit::Bare(_))), "off");
        let space = EditSpace { bare: true, ..space };
        assert!(!candidates(&parse(&same, None), &space, &mut Rng::new(1)).iter().any(|e| matches!(e, Edit::Bare(_))));
        assert!(candidates(&doc, &space, &mut Rng::new(1)).contains(&Edit::Bare("Sentiment:".into())));
        // A last line of sentences goes with the line break before it, so the cue follows the
        // input line.
        let last = "---\nreprompt.format: plain\n---\nText: {{x}}\nIs it good? Say yes or no.\n";
        assert_eq!(bare_body(last, "Answer:", &space), "Text: {{x}}\nAnswer:\n");
        // A sentence sharing the input's line goes with the spaces after it (text after a
        // variable continues the variable's sentence and stays).
        let mixed = "---\nreprompt.format: plain\n---\nBe brief.\nClassify it.  Text: {{x}} ?\nAnswer:\n";
        assert_eq!(bare_body(mixed, "Answer:", &space), "Text: {{x}} ?\nAnswer:\n");
        // Several instruction lines at the end go without leaving a blank line; CRLF files
        // keep their line endings and still get the cue.
        let trailing = "---\nreprompt.format: plain\n---\nText: {{x}}\nBe brief.\nSay yes or no.\n";
        assert_eq!(bare_body(trailing, "Answer:", &space), "Text: {{x}}\nAnswer:\n");
        let crlf = "---\r\nreprompt.format: plain\r\n---\r\nText: {{x}}\r\nSay yes or no.\r\n";
        assert_eq!(bare_body(crlf, "Answer:", &space), "Text: {{x}}\r\nAnswer:\r\n");
        // The last instructions right after a role marker go too, and a sentence on the cue
        // line goes with the cue it replaces.
        let roles = "---\nreprompt.labels: [terrible, great]\n---\n{{role \"system\"}}\nReview: {{sentence}}\n\
                     {{role \"user\"}}\nIs it great or terrible? Answer with one word.\n";
        assert_eq!(bare_body(roles, "Sentiment:", &space), "Review: {{sentence}}\nSentiment:\n");
        let cue_line = "---\nreprompt.format: plain\n---\nBe brief.\nText: {{x}}\nAnswer with one word. Sentiment:\n";
        assert_eq!(bare_body(cue_line, "Answer:", &space), "Text: {{x}}\nAnswer:\n");
        // The author's own examples (lines opening with a field name) are not instructions.
        let own = "---\nreprompt.format: plain\n---\nBe brief.\nReview: I loved it.\nSentiment: great\n\n\
                   Review: {{x}}\nSentiment:\n";
        assert_eq!(
            bare_body(own, "Sentiment:", &space),
            "Review: I loved it.\nSentiment: great\n\nReview: {{x}}\nSentiment:\n"
        );
        let err = apply_checked(&parse(own, None), &Edit::Bare("Two\nlines:".into()), &space);
        assert!(matches!(err, Err(EditError::NotApplicable(_))), "{err:?}");
        assert_eq!(Edit::Bare("Answer:".into()).kind(), Edit::Completion("Answer:".into()).kind());
    }

    #[test]
    fn demonstrations_are_added_found_relabelled_and_removed() {
        let space = space();
        let doc = parse(&apply_checked(&doc(), &Edit::AnswerCue("Sentiment:".into()), &space).unwrap(), None);
        let text = demo_text(&doc, &space.demos[1]).unwrap();
        assert_eq!(text, "Review: a joy to watch \\{{ even twice }} .\nSentiment: great\n\n");
        let at = example_unit(&doc).unwrap().start;
        let one = parse(&apply_checked(&doc, &Edit::AddDemo { at, text }, &space).unwrap(), None);
        assert!(one.diagnostics.is_empty(), "{:?}", one.diagnostics);
        let two_text = demo_text(&one, &space.demos[0]).unwrap();
        let at = example_unit(&one).unwrap().start;
        let two = parse(&apply_checked(&one, &Edit::AddDemo { at, text: two_text }, &space).unwrap(), None);
        let found = find_demos(&two, &space);
        assert_eq!(found.iter().map(|d| d.source).collect::<Vec<_>>(), [1, 0]);
        // Relabelling rewrites the demonstrations' answers.
        let relabelled =
            apply_checked(&two, &Edit::Labels(vec!["negative".into(), "positive".into()]), &space).unwrap();
        assert!(relabelled.contains("twice }} .\nSentiment: positive\n\nReview: a dull , lifeless film .\nSentiment: negative\n\nReview: {{sentence}}"), "{relabelled}");
        assert_eq!(find_demos(&parse(&relabelled, None), &space).len(), 2);
        // A new answer cue is the demonstrations' cue too.
        let recued = apply_checked(&two, &Edit::AnswerCue("Answer:".into()), &space).unwrap();
        assert!(recued.contains("twice }} .\nAnswer: great\n\nReview: a dull , lifeless film .\nAnswer: terrible\n\nReview: {{sentence}}\n"), "{recued}");
        assert!(recued.ends_with("one word.\nAnswer:\n"), "{recued}");
        assert!(!recued.contains("Sentiment:"), "{recued}");
        assert_eq!(find_demos(&parse(&recued, None), &space).len(), 2);
        // A prompt that ends with the cue but shows a demonstration under another one (written
        // by hand) gets only the demonstration's cue; once all agree there is nothing to do.
        let mixed = parse(&two.source.replacen("Sentiment: great", "Verdict: great", 1), None);
        let fixed = apply_checked(&mixed, &Edit::AnswerCue("Sentiment:".into()), &space).unwrap();
        assert_eq!(fixed, two.source);
        assert!(apply_checked(&two, &Edit::AnswerCue("Sentiment:".into()), &space).is_err());
        // A cue with ": " inside is one cue, in the demonstrations as at the end.
        let qa = parse(&apply_checked(&two, &Edit::AnswerCue("Q: Answer:".into()), &space).unwrap(), None);
        let found_qa = find_demos(&qa, &space);
        assert_eq!(found_qa.len(), 2);
        assert_eq!(&qa.source[found_qa[0].cue.start..found_qa[0].cue.end], "Q: Answer:");
        assert_eq!(&qa.source[found_qa[0].answer.start..found_qa[0].answer.end], "great");
        let back = apply_checked(&qa, &Edit::AnswerCue("Sentiment:".into()), &space).unwrap();
        assert_eq!(back, two.source);
        let removed = apply_checked(&two, &Edit::RemoveDemo(found[0].span), &space).unwrap();
        // Described with its lines apart, as it was added.
        assert_eq!(
            Edit::RemoveDemo(found[0].span).describe(&two.source),
            r#"remove example "Review: a joy to watch \{{ even twice }} . | Sentiment: great""#
        );
        assert_eq!(find_demos(&parse(&removed, None), &space).iter().map(|d| d.source).collect::<Vec<_>>(), [0]);
        // The rendered prompt shows the escaped example literally.
        let mut input = Map::new();
        input.insert("sentence".into(), Value::String("x".into()));
        let data = reprompt_protocol::render::DataArgument { input, ..Default::default() };
        let env = reprompt_protocol::render::MapEnvironment::default();
        let messages = reprompt_protocol::render::render(&two, &data, &env).unwrap().messages;
        let rendered: String = messages.iter().map(|m| m.text()).collect();
        assert!(rendered.contains("a joy to watch {{ even twice }} ."), "{rendered}");
    }

    #[test]
    fn several_words_per_label_are_written_as_lists_and_named_by_their_first() {
        let space = space();
        let words = |w: &[&str]| w.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let groups = vec![words(&["harsh", "poor"]), words(&["sweet", "hopeful", "warm"])];
        let edit = Edit::LabelGroups(groups.clone());
        assert_eq!(edit.kind(), Edit::Labels(Vec::new()).kind());
        assert_eq!(edit.describe(""), "label words harsh, poor / sweet, hopeful, warm");
        let cued = parse(&apply_checked(&doc(), &Edit::AnswerCue("Sentiment:".into()), &space).unwrap(), None);
        let at = example_unit(&cued).unwrap().start;
        let demo = demo_text(&cued, &space.demos[1]).unwrap();
        let with_demo = parse(&apply_checked(&cued, &Edit::AddDemo { at, text: demo }, &space).unwrap(), None);
        let text = apply_checked(&with_demo, &edit, &space).unwrap();
        assert!(
            text.contains("reprompt.labels: [[\"harsh\", \"poor\"], [\"sweet\", \"hopeful\", \"warm\"]]\n"),
            "{text}"
        );
        // The demonstration answers and the instruction use each label's first word.
        assert!(text.contains("Sentiment: sweet\n\nReview: {{sentence}}"), "{text}");
        assert!(text.contains("Is the sentiment of this review sweet or harsh?"), "{text}");
        let reparsed = parse(&text, None);
        assert!(reparsed.diagnostics.is_empty(), "{:?}", reparsed.diagnostics);
        assert_eq!(reparsed.settings.label_words, groups);
        assert_eq!(find_demos(&reparsed, &space).len(), 1);
        // Offered when the space holds groups, not again once the prompt has them; a single
        // set is offered to a prompt with groups even when it is their first words.
        let mut offering = space.clone();
        offering.label_groups = vec![groups.clone()];
        offering.label_sets = vec![words(&["harsh", "sweet"])];
        let mut rng = Rng::new(1);
        assert!(candidates(&with_demo, &offering, &mut rng).contains(&edit));
        let offered = candidates(&reparsed, &offering, &mut rng);
        assert!(!offered.contains(&edit), "{offered:?}");
        assert!(offered.contains(&Edit::Labels(words(&["harsh", "sweet"]))), "{offered:?}");
        // Back to one word each.
        let single = apply_checked(&reparsed, &Edit::Labels(words(&["bad", "good"])), &space).unwrap();
        assert_eq!(parse(&single, None).settings.label_words, [words(&["bad"]), words(&["good"])]);
        assert!(apply_checked(&with_demo, &Edit::LabelGroups(vec![words(&["bad"]), vec![]]), &space).is_err());
    }

    #[test]
    fn edits_that_break_the_prompt_are_refused() {
        let (doc, space) = (doc(), space());
        assert!(matches!(
            apply_checked(&doc, &Edit::Labels(vec!["one".into()]), &space),
            Err(EditError::NotApplicable(_))
        ));
        assert!(apply_checked(&doc, &Edit::DeleteSentence(Span::new(0, 3)), &space).is_err());
        assert!(apply_checked(&doc, &Edit::InsertPhrase { at: 1, text: "x".into() }, &space).is_err());
        assert!(apply_checked(&doc, &Edit::AddDemo { at: 1, text: "x".into() }, &space).is_err());
        let s = sentences(&doc)[0];
        assert!(apply_checked(&doc, &Edit::Paraphrase { span: s, text: "{{evil}}".into() }, &space).is_err());
        // A phrase that removes a variable is refused by the variable check.
        let tricky = parse("---\ninput:\n  schema: {a: string}\n---\nSay {{a}}. Done.", None);
        let found: Vec<&str> = sentences(&tricky).iter().map(|s| &tricky.source[s.start..s.end]).collect();
        assert_eq!(found, ["Done."], "the fragment after the variable is not a sentence of its own");
    }

    #[test]
    fn random_edit_walks_keep_every_prompt_valid() {
        let prompts = [
            EXAMPLE,
            include_str!("../../../examples/gsm8k/gsm8k.prompt"),
            include_str!("../../../bench/sst2-variants/v3-plain-posneg.prompt"),
            include_str!("../../../bench/sst2-variants/v7-plain-4demos.prompt"),
        ];
        let mut space = space();
        space.demos.push(DemoSource {
            input: [("question".to_string(), Value::String("What is {{2}} + 2?\nThink.".into()))].into_iter().collect(),
            label: None,
            answer: Some("2 + 2 = 4\n#### 4".into()),
        });
        space.paraphrases.insert("Answer with one word.".into(), vec!["Reply with a single word.".into()]);
        space.bare = true;
        for (p, prompt) in prompts.iter().enumerate() {
            let names = variables(&parse(prompt, None));
            for seed in 0..40 {
                let mut rng = Rng::new(seed);
                let mut text = prompt.to_string();
                for _ in 0..8 {
                    let doc = parse(&text, None);
                    let all = candidates(&doc, &space, &mut rng);
                    if all.is_empty() {
                        break;
                    }
                    let edit = &all[rng.below(all.len())];
                    text = apply_checked(&doc, edit, &space)
                        .unwrap_or_else(|e| panic!("prompt {p} seed {seed}: {edit:?}: {e}"));
                    let edited = parse(&text, None);
                    assert!(
                        edited.diagnostics.iter().all(|d| d.severity != Severity::Error),
                        "prompt {p} seed {seed} after {edit:?}: {:?}\n{text}",
                        edited.diagnostics
                    );
                    assert_eq!(variables(&edited), names, "prompt {p} seed {seed} after {edit:?}");
                    assert!(find_demos(&edited, &space).len() <= space.max_demos);
                }
            }
        }
    }

    #[test]
    fn every_candidate_of_the_example_applies_cleanly() {
        let (doc, space) = (doc(), space());
        let all = candidates(&doc, &space, &mut Rng::new(1));
        for kind in [0, 1, 2, 3, 4, 6, 7, 8, 12] {
            assert!(all.iter().any(|e| e.kind() == kind), "no edit of kind {kind}");
        }
        assert_eq!(all.iter().filter(|e| matches!(e, Edit::DeleteSentence(_))).count(), 3);
        for edit in &all {
            let text = apply_checked(&doc, edit, &space).unwrap();
            assert_ne!(text, EXAMPLE, "{edit:?} changed nothing");
            assert!(!edit.describe(&doc.source).is_empty());
        }
        assert_eq!(candidates(&doc, &space, &mut Rng::new(1)), all, "seeded");
    }

    #[test]
    fn a_calibration_is_written_replaced_and_dropped_with_new_label_words() {
        let calibrated = apply_checked(&doc(), &Edit::LabelBias(vec![0.0, -1.25]), &space()).unwrap();
        let d = parse(&calibrated, None);
        assert!(d.diagnostics.is_empty(), "{:?}", d.diagnostics);
        assert!(calibrated.contains("reprompt.label_bias: [0, -1.25]\n---"), "{calibrated}");
        assert_eq!(d.settings.label_bias.as_ref().map(|b| b.value.clone()), Some(vec![0.0, -1.25]));
        assert_eq!(Edit::LabelBias(vec![0.0, -1.25]).describe(""), "calibrate the labels: label bias [0, -1.25]");
        // Set again: the value is replaced where it is written.
        let again = apply_checked(&d, &Edit::LabelBias(vec![0.0, 0.5]), &space()).unwrap();
        assert_eq!(again, calibrated.replace("[0, -1.25]", "[0, 0.5]"));
        // New label words drop the calibration fitted to the old ones, line and all.
        let relabelled = apply_checked(&d, &Edit::Labels(vec!["bad".into(), "good".into()]), &space()).unwrap();
        let r = parse(&relabelled, None);
        assert!(r.diagnostics.is_empty() && r.settings.label_bias.is_none(), "{relabelled}");
        assert!(!relabelled.contains("label_bias") && relabelled.contains("reprompt.reward: accuracy\n---"));
        // One offset per label id, finite.
        assert!(apply_checked(&doc(), &Edit::LabelBias(vec![0.0]), &space()).is_err());
        assert!(apply_checked(&doc(), &Edit::LabelBias(vec![0.0, f64::NAN]), &space()).is_err());
        assert_eq!(Edit::LabelBias(Vec::new()).kind(), Edit::KINDS - 1);
        // Every calibration of a prompt shares its text without the entry: the prompt itself.
        let plain = doc().source.clone();
        assert_eq!(without_label_bias(&doc()).as_deref(), Some(plain.as_str()));
        assert_eq!(without_label_bias(&d).as_deref(), Some(plain.as_str()));
        assert_eq!(without_label_bias(&parse(&again, None)).as_deref(), Some(plain.as_str()));
    }

    #[test]
    fn new_label_words_keep_the_names_the_data_reads_its_labels_by() {
        let named = |groups: &[&[&str]]| -> Vec<Vec<String>> {
            groups.iter().map(|g| g.iter().map(|w| w.to_string()).collect()).collect()
        };
        let space = EditSpace { data_labels: Some(named(&[&["terrible"], &["great"]])), ..space() };
        let calibrated = parse(&apply_checked(&doc(), &Edit::LabelBias(vec![0.0, -1.0]), &space).unwrap(), None);
        let relabelled = apply_checked(&calibrated, &Edit::Labels(vec!["bad".into(), "good".into()]), &space).unwrap();
        assert!(
            relabelled
                .contains("reprompt.labels: [\"bad\", \"good\"]\nreprompt.data_labels: [\"terrible\", \"great\"]\n"),
            "{relabelled}"
        );
        let r = parse(&relabelled, None);
        assert!(r.diagnostics.is_empty() && r.settings.label_bias.is_none(), "{:?}", r.diagnostics);
        let spec = reprompt_protocol::dataset::DatasetSpec::for_document(&r);
        assert_eq!(spec.data_labels, named(&[&["terrible"], &["great"]]));
        // Once written, the names stay as they are: a second relabelling adds no line.
        let twice = apply_checked(&r, &Edit::LabelGroups(named(&[&["poor", "dull"], &["fine"]])), &space).unwrap();
        assert_eq!(twice.matches("reprompt.data_labels").count(), 1, "{twice}");
        assert!(twice.contains("reprompt.data_labels: [\"terrible\", \"great\"]\n"), "{twice}");
        // Several names for an id are written as a list; data read by id needs none of this.
        let grouped = EditSpace { data_labels: Some(named(&[&["terrible", "awful"], &["great"]])), ..space.clone() };
        let text = apply_checked(&doc(), &Edit::Labels(vec!["bad".into(), "good".into()]), &grouped).unwrap();
        assert!(text.contains("reprompt.data_labels: [[\"terrible\", \"awful\"], [\"great\"]]\n"), "{text}");
        let text =
            apply_checked(&doc(), &Edit::Labels(vec!["bad".into(), "good".into()]), &super::tests::space()).unwrap();
        assert!(!text.contains("data_labels"), "{text}");
        // Nor does anything but a relabelling.
        let text = apply_checked(&doc(), &Edit::Format(Format::Plain), &space).unwrap();
        assert!(!text.contains("data_labels"), "{text}");
        // A calibration on the next line goes, the names come; block-style labels and CRLF
        // files alike.
        let layouts = [
            EXAMPLE.replace(
                "reprompt.labels: [terrible, great]\n",
                "reprompt.labels: [terrible, great]\nreprompt.label_bias: [0, 1]\n",
            ),
            EXAMPLE.replace("reprompt.labels: [terrible, great]\n", "reprompt.labels:\n- terrible\n- great\n"),
            EXAMPLE.replace('\n', "\r\n"),
        ];
        for layout in layouts {
            let text =
                apply_checked(&parse(&layout, None), &Edit::Labels(vec!["bad".into(), "good".into()]), &space).unwrap();
            let r = parse(&text, None);
            assert!(r.diagnostics.is_empty(), "{:?}\n{text}", r.diagnostics);
            assert_eq!(r.settings.labels.map(|l| l.value), Some(vec!["bad".to_string(), "good".into()]), "{text}");
            assert_eq!(r.settings.data_labels.map(|d| d.value), Some(named(&[&["terrible"], &["great"]])), "{text}");
            assert!(r.settings.label_bias.is_none() && !text.contains("label_bias"), "{text}");
            assert_eq!(layout.contains('\r'), text.contains("data_labels: [\"terrible\", \"great\"]\r\n"), "{text}");
        }
        // Data read by id changes nothing a checkpoint records: the space's JSON has no such key.
        let json = serde_json::to_string(&super::tests::space()).unwrap();
        assert!(!json.contains("data_labels"), "{json}");
    }
}
