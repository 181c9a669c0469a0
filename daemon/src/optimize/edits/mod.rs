//! Readable prompt edits, applied to the `.prompt` text as minimal text edits, each result
//! checked to parse without errors and keep the same input variables.
//!
//! The optimizer's edit space (DESIGN.md): instruction sentences (delete, swap two neighbours,
//! paraphrase, add a phrase from the bank, GrIPS-style), label words (a verbalizer swap,
//! TEMPERA-style), demonstrations (add, remove or replace an in-context example from the
//! training split, TEMPERA-style), the answer cue (the line the model's answer follows),
//! message structure (chat template or plain text, dropping the role markers), and stop.

use std::collections::BTreeMap;

use reprompt_protocol::settings::{Format, Task};
use reprompt_protocol::{PromptDocument, Severity, Span, parse};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::calibrate::bias_value;
use super::rng::Rng;

mod demos;
mod front;
mod text;

pub use demos::{FoundDemo, Layout, demo_point, demo_text, example_unit, find_demos, layout};
pub use front::{data_labels_value, label_groups_value, stops_at_line_end, without_label_bias};
pub use text::{insertion_points, sentences};

use demos::{final_cue, follow_the_turn, shows_turns};
use front::{entry_line, keep_data_labels, replace_value, set_setting, stop_at_line_end, word_list_value};
use text::{
    capitalized, example_fields, instruction_deletions, label_mentions, line_around, merged_deletions, role_markers,
    text_segments,
};

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
    /// End the model's answer at the end of its line (`config.stopSequences` gets `"\n"`): a
    /// generation prompt whose training answers are one line each, where the model would go
    /// on to write the next example.
    StopAtLineEnd,
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
            // Where the answer starts and where it ends: one kind, so that policies
            // pre-trained before the stop edit keep their shape.
            Edit::AnswerCue(_) | Edit::StopAtLineEnd => 6,
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
        let lines = |span: &Span| demo_lines(source.get(span.start..span.end).unwrap_or(""));
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
            Edit::AddDemo { text, .. } => format!("add example \"{}\"", demo_lines(text)),
            Edit::RemoveDemo(span) => format!("remove example \"{}\"", lines(span)),
            Edit::ReplaceDemo { span, text } => {
                format!("replace example \"{}\" by \"{}\"", lines(span), demo_lines(text))
            }
            Edit::Stop => "stop".into(),
            Edit::Completion(cue) => format!("plain completion prompt ending in \"{cue}\""),
            Edit::Bare(cue) => format!("bare completion prompt: the example's lines and \"{cue}\""),
            Edit::LabelGroups(groups) => {
                format!("label words {}", groups.iter().map(|g| g.join(", ")).collect::<Vec<_>>().join(" / "))
            }
            Edit::LabelBias(bias) => format!("calibrate the labels: label bias {}", bias_value(bias)),
            Edit::StopAtLineEnd => "stop the answer at the end of its line".into(),
        }
    }
}

/// A demonstration's lines kept apart (`Review: a gem | Sentiment: great`), a turn's role
/// markers left out.
fn demo_lines(block: &str) -> String {
    let role = |line: &str| line.trim().starts_with("{{role ") && line.trim().ends_with("}}");
    block.trim().lines().filter(|l| !role(l)).collect::<Vec<_>>().join(" | ")
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

/// Label-word sets for sentiment, by number of labels (negative first).
pub const LABEL_SETS: &[&[&str]] = &[
    &["terrible", "great"],
    &["bad", "good"],
    &["negative", "positive"],
    &["awful", "wonderful"],
    &["poor", "excellent"],
    &["no", "yes"],
];

/// Label-word pairs no built-in set offers, but whose poles are as plain (negative first):
/// they tell which way round a prompt names its labels ([`positive_first`]).
pub const OTHER_POLES: &[[&str; 2]] = &[
    ["sad", "happy"],
    ["hate", "love"],
    ["dislike", "like"],
    ["unfavorable", "favorable"],
    ["unfavourable", "favourable"],
    ["dissatisfied", "satisfied"],
    ["displeased", "pleased"],
    ["neg", "pos"],
    ["false", "true"],
    ["incorrect", "correct"],
    ["wrong", "right"],
];

/// The built-in label words of a two-label classification that is not about sentiment.
pub const YES_NO: &[&[&str]] = &[&["no", "yes"]];

/// Instruction phrases the optimizer may add to a sentiment prompt (the built-in bank; the
/// history adds more).
pub const PHRASES: &[&str] = &[
    "Answer with one word.",
    "Think about the overall opinion of the reviewer.",
    "Be accurate.",
    "Read the text carefully.",
    "Ignore details that do not express an opinion.",
];

/// Instruction phrases for other classifications: [`PHRASES`] less the ones about opinions.
pub const CLASSIFY_PHRASES: &[&str] = &["Answer with one word.", "Be accurate.", "Read the text carefully."];

/// Instruction phrases for generation: no "one word" (the answer may need its reasoning
/// first), and zero-shot chain of thought's cue (Kojima et al., 2022).
pub const GENERATE_PHRASES: &[&str] =
    &["Let's think step by step.", "Be accurate.", "Read the text carefully.", "Check your answer before you give it."];

/// Answer cues for a sentiment prompt: the line the model's answer follows, from generic to
/// specific ([`named_cue`](super::search::named_cue) takes the most specific the prompt names).
pub const CUES: &[&str] = &["Answer:", "Output:", "Label:", "Category:", "Sentiment:", "Topic:"];

/// Answer cues for other classifications: [`CUES`] less `Sentiment:`.
pub const CLASSIFY_CUES: &[&str] = &["Answer:", "Output:", "Label:", "Category:", "Topic:"];

/// Answer cues for a yes-or-no question: [`CLASSIFY_CUES`] less the ones that name a class
/// (`Topic: yes` reads as nonsense).
pub const QUESTION_CUES: &[&str] = &["Answer:", "Output:", "Label:"];

/// Answer cues for generation.
pub const GENERATE_CUES: &[&str] = &["Answer:", "Output:", "Response:", "Solution:"];

/// Which built-in banks fit a prompt ([`EditSpace::with_banks`]): a sentiment phrase such as
/// "Ignore details that do not express an opinion." only misleads a topic classifier, and
/// "Answer with one word." a model that has to reason before it answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Banks {
    /// A classification whose labels include both words of one of [`LABEL_SETS`] but `no` /
    /// `yes` (a pair in either order, or a scale such as `terrible … great`), or whose
    /// template says `sentiment`.
    Sentiment,
    /// A yes-or-no question: another classification whose labels are `no` and `yes` (either
    /// order, any case). As [`Banks::Classification`], but with cues that answer a question.
    Question,
    /// Any other classification: of the built-in label words only `no` / `yes` (two labels),
    /// the model ranks its own; a ranking is still judged out of sample, against `no` /
    /// `yes` where there are two labels, else against the prompt's own words.
    Classification,
    /// A generation task.
    Generation,
}

impl Banks {
    /// The banks for `doc` as written.
    pub fn of(doc: &PromptDocument) -> Self {
        if doc.settings.task_or_default() != reprompt_protocol::settings::Task::Classify {
            return Self::Generation;
        }
        let labels: std::collections::BTreeSet<String> =
            doc.settings.labels.iter().flat_map(|l| l.value.iter()).map(|w| w.trim().to_lowercase()).collect();
        // Both poles of a sentiment pair: the pair itself, or a scale between them
        // (`terrible, bad, okay, good, great`; `negative, neutral, positive`).
        let sentiment_labels =
            LABEL_SETS.iter().filter(|set| set != &&YES_NO[0]).any(|set| set.iter().all(|w| labels.contains(*w)));
        let body = doc.source.get(doc.body_span.start..doc.body_span.end).unwrap_or_default().to_lowercase();
        let says_sentiment = body.split(|c: char| !c.is_alphanumeric()).any(|w| w == "sentiment" || w == "sentiments");
        if sentiment_labels || says_sentiment {
            Self::Sentiment
        } else if labels.len() == 2 && YES_NO[0].iter().all(|w| labels.contains(*w)) {
            Self::Question
        } else {
            Self::Classification
        }
    }
}

/// Whether a two-label prompt names its positive label first: label 0 has a built-in set's
/// second word (`great`, `positive`, `yes`, any case; or one of [`OTHER_POLES`]': `happy`,
/// `true`) or label 1 a first word (`terrible`, `negative`, `no`; `sad`, `false`), and neither
/// the other way round. The built-in sets are negative first
/// ([`LABEL_SETS`], [`YES_NO`]): offered as they are to a `[great, terrible]` prompt, every
/// one would swap its labels' meanings ([`EditSpace::for_prompt`] turns them round).
pub fn positive_first(doc: &PromptDocument) -> bool {
    let words = &doc.settings.label_words;
    if words.len() != 2 {
        return false;
    }
    let names = |label: usize, pole: usize| {
        words[label].iter().any(|w| {
            let w = w.trim().to_lowercase();
            LABEL_SETS.iter().any(|set| set[pole] == w) || OTHER_POLES.iter().any(|set| set[pole] == w)
        })
    };
    (names(0, 1) || names(1, 0)) && !(names(0, 0) || names(1, 1))
}

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
    /// The built-in sentiment banks and `demos`.
    pub fn builtin(demos: Vec<DemoSource>) -> Self {
        Self::with_banks(Banks::Sentiment, demos)
    }

    /// The built-in banks that fit `doc` ([`Banks::of`]), their two-label sets in the order of
    /// its labels ([`positive_first`]), and `demos`.
    pub fn for_prompt(doc: &PromptDocument, demos: Vec<DemoSource>) -> Self {
        let mut space = Self::with_banks(Banks::of(doc), demos);
        if positive_first(doc) {
            for set in space.label_sets.iter_mut().filter(|s| s.len() == 2) {
                set.reverse();
            }
        }
        space
    }

    /// The built-in `banks` and `demos`.
    pub fn with_banks(banks: Banks, demos: Vec<DemoSource>) -> Self {
        let owned = |words: &[&str]| words.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let (phrases, label_sets, cues) = match banks {
            Banks::Sentiment => (PHRASES, LABEL_SETS, CUES),
            Banks::Classification => (CLASSIFY_PHRASES, YES_NO, CLASSIFY_CUES),
            Banks::Question => (CLASSIFY_PHRASES, YES_NO, QUESTION_CUES),
            Banks::Generation => (GENERATE_PHRASES, &[][..], GENERATE_CUES),
        };
        Self {
            phrases: owned(phrases),
            label_sets: label_sets.iter().map(|set| owned(set)).collect(),
            cues: owned(cues),
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

/// The minimal text edits that carry out `edit` on `doc`.
pub fn text_edits(doc: &PromptDocument, edit: &Edit, space: &EditSpace) -> Result<Vec<TextEdit>, EditError> {
    let not = |why: &str| EditError::NotApplicable(why.to_string());
    let relayout = matches!(edit, Edit::Format(_) | Edit::DropRoles | Edit::Completion(_) | Edit::Bare(_));
    if relayout && shows_turns(doc, space) {
        // Laid out otherwise, the turns would be left as no demonstration at all.
        return Err(not("the prompt's demonstrations are turns of the chat: remove them first"));
    }
    match edit {
        Edit::Labels(_) | Edit::LabelGroups(_) => {
            let (words, value): (Vec<String>, String) = match edit {
                Edit::LabelGroups(groups) => {
                    if groups.iter().any(|g| g.is_empty()) {
                        return Err(not("a label without words"));
                    }
                    (groups.iter().map(|g| g[0].clone()).collect(), label_groups_value(groups))
                }
                Edit::Labels(words) => (words.clone(), word_list_value(words)),
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
                .filter_map(|d| d.cue)
                .filter(|span| doc.source[span.start..span.end] != *cue)
                .map(|span| TextEdit { span, replacement: cue.clone() })
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
            if demo_point(doc, space) != Some(*at) {
                return Err(not("demonstrations go right before the example's lines or turn"));
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
        Edit::StopAtLineEnd => {
            if doc.settings.task_or_default() != Task::Generate {
                return Err(not("a classification's answer is read from its label words, not generated"));
            }
            // A worked solution that ends in its answer's line would lose that line.
            if space.demos.iter().filter_map(|d| d.answer.as_deref()).any(|a| a.trim().contains(['\n', '\r'])) {
                return Err(not("the training answers run over several lines"));
            }
            stop_at_line_end(doc)
        }
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
    let mut text = follow_the_turn(doc, apply(&doc.source, &edits), space)?;
    // New lines end as the file's lines do: a CRLF file stays CRLF throughout (a file of
    // mixed line endings is left as the edit made it).
    if crlf_file(&doc.source) {
        text = with_crlf(&text);
    }
    let edited = parse(&text, None);
    if let Some(error) = edited.diagnostics.iter().find(|d| d.severity == Severity::Error) {
        return Err(EditError::Invalid(error.message.clone()));
    }
    if *edit == Edit::StopAtLineEnd && !stops_at_line_end(&edited) {
        // Written where the YAML does not read it (after a `...` that ends the document).
        return Err(EditError::Invalid("the edited config does not stop the answer at its line's end".into()));
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
    if let Some(at) = demo_point(doc, space) {
        let mut absent: Vec<usize> = (0..space.demos.len()).filter(|i| !demos.iter().any(|d| d.source == *i)).collect();
        rng.shuffle(&mut absent);
        let mut offers = absent.into_iter();
        if demos.len() < space.max_demos {
            for source in offers.by_ref().take(space.demo_offers) {
                if let Some(text) = demo_text(doc, space, &space.demos[source]) {
                    edits.push(Edit::AddDemo { at, text });
                }
            }
        }
        for demo in &demos {
            edits.push(Edit::RemoveDemo(demo.span));
            if let Some(text) = offers.next().and_then(|s| demo_text(doc, space, &space.demos[s])) {
                edits.push(Edit::ReplaceDemo { span: demo.span, text });
            }
        }
    }
    // Last, so that a classification's candidates (and the draws that sample them) are the
    // same as before the stop edit was offered.
    if doc.settings.task_or_default() == Task::Generate {
        edits.push(Edit::StopAtLineEnd);
    }
    edits.into_iter().filter_map(|e| apply_checked(doc, &e, space).ok().map(|text| (e, text))).collect()
}

#[cfg(test)]
mod tests;
