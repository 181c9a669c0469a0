//! reprompt's own front-matter settings, the dotted `reprompt.*` keys, typed and validated.
//!
//! Dotprompt collects dotted keys into `ext` and leaves them alone, so files stay valid for
//! Genkit and other Dotprompt tools. Unknown `reprompt.*` keys are errors with a did-you-mean.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::diagnostic::{Code, Diagnostic, did_you_mean};
use crate::span::Span;
use crate::yaml::{YamlKind, YamlNode};

/// Models reprompt can run by name (others are given as a path to a `.gguf` file).
pub const KNOWN_MODELS: &[&str] = &["smollm2-135m-instruct"];

/// Whether a `model` value names a file (a `.gguf`, or an explicit path: `./`, `../`, absolute)
/// rather than a model by name. Dotprompt's own names have a slash too
/// (`googleai/gemini-2.5-flash`): they are names reprompt cannot run, not missing files.
pub fn is_model_path(model: &str) -> bool {
    model.to_ascii_lowercase().ends_with(".gguf")
        || ["./", "../", ".\\", "..\\"].iter().any(|p| model.starts_with(p))
        || std::path::Path::new(model).is_absolute()
}

/// Every `reprompt.*` key, with what it holds.
pub const SETTINGS: &[(&str, &str)] = &[
    ("task", "`classify` or `generate`"),
    ("labels", "answer words, one per label id, or a list of words per label id (classify)"),
    ("dataset", "training examples: a .tsv, .csv or .jsonl path relative to the file"),
    ("validation", "validation examples (a path)"),
    ("test", "held-out test examples (a path)"),
    ("reward", "a reward name, or a map of reward names to weights"),
    ("budget", "task-model example evaluations one optimization may spend"),
    ("format", "`chat` (the model's chat template, default) or `plain` (the rendered text as is)"),
    ("columns", "a map of input variable to dataset column, where the names differ"),
    ("label_column", "the dataset column holding labels (default `label`)"),
    ("answer_column", "the dataset column holding answers (default `answer`)"),
    ("regex", "the pattern the `regex` reward matches outputs against"),
    (
        "data_labels",
        "the words the dataset's label column names each label id by (one, or a list, per id), where they are not the \
         label words (classify)",
    ),
    (
        "label_bias",
        "log-probability offsets added to each label's before the answer is chosen, one number per label id (calibration)",
    ),
];

/// Rewards and the task each needs (`None`: any task).
pub const REWARDS: &[(&str, Option<Task>)] = &[
    ("accuracy", Some(Task::Classify)),
    ("gap", Some(Task::Classify)),
    ("exact_match", Some(Task::Generate)),
    ("f1", Some(Task::Generate)),
    ("numeric_match", Some(Task::Generate)),
    ("contains", Some(Task::Generate)),
    ("regex", Some(Task::Generate)),
    ("logprob", None),
    ("perplexity", None),
    ("perplexity_f1", Some(Task::Generate)),
    ("json_schema", Some(Task::Generate)),
    ("length", None),
    ("consistency", None),
];

/// How rendered messages become model input.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// Through the model's chat template, roles as turns.
    #[default]
    Chat,
    /// The rendered text of all messages concatenated, for plain completion.
    Plain,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Task {
    Classify,
    Generate,
}

impl Task {
    pub fn as_str(self) -> &'static str {
        match self {
            Task::Classify => "classify",
            Task::Generate => "generate",
        }
    }
}

/// A value and the span of its text in the file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Spanned<T> {
    pub value: T,
    pub span: Span,
}

/// How a prompt is rewarded: one named reward, or a weighted sum.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RewardSpec {
    pub components: Vec<(String, f64)>,
}

impl RewardSpec {
    pub fn single(name: &str) -> Self {
        Self { components: vec![(name.to_string(), 1.0)] }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Settings {
    pub task: Option<Task>,
    /// The label names, one per label id: each label's (first) answer word.
    pub labels: Option<Spanned<Vec<String>>>,
    /// Every answer word of each label id, the name first (a label given as a list of words
    /// counts the model's probability of any of them); empty without labels.
    #[serde(default)]
    pub label_words: Vec<Vec<String>>,
    pub dataset: Option<Spanned<String>>,
    pub validation: Option<Spanned<String>>,
    pub test: Option<Spanned<String>>,
    pub reward: Option<Spanned<RewardSpec>>,
    pub budget: Option<u64>,
    pub format: Format,
    pub columns: Option<serde_json::Map<String, Value>>,
    pub label_column: Option<String>,
    pub answer_column: Option<String>,
    pub regex: Option<Spanned<String>>,
    /// Offsets added to each label's log-probability before the answer is chosen, one per
    /// label id (a calibration of the model's prior over the labels).
    #[serde(default)]
    pub label_bias: Option<Spanned<Vec<f64>>>,
    /// The words the dataset's label column names each label id by (any of a list), where
    /// they differ from the label words (which an optimizer may change while the data stays
    /// as it is).
    #[serde(default)]
    pub data_labels: Option<Spanned<Vec<Vec<String>>>>,
}

impl Settings {
    /// The task, defaulting to `classify` when labels are given and `generate` otherwise.
    pub fn task_or_default(&self) -> Task {
        self.task.unwrap_or(if self.labels.is_some() { Task::Classify } else { Task::Generate })
    }

    /// The file of split `name` (`dataset`, `validation`, `test`), resolved next to `prompt`.
    pub fn split_path(&self, name: &str, prompt: &std::path::Path) -> Option<std::path::PathBuf> {
        let (_, file) = self.splits().find(|(n, _)| *n == name)?;
        Some(prompt.parent().unwrap_or(std::path::Path::new("")).join(&file.value))
    }

    /// Dataset paths by split name, as written.
    pub fn splits(&self) -> impl Iterator<Item = (&'static str, &Spanned<String>)> {
        [("dataset", &self.dataset), ("validation", &self.validation), ("test", &self.test)]
            .into_iter()
            .filter_map(|(name, path)| path.as_ref().map(|p| (name, p)))
    }
}

/// A label word: a scalar that is neither null nor blank, as written.
fn label_word(node: &YamlNode) -> Option<String> {
    match &node.kind {
        YamlKind::Scalar { text, value } if !value.is_null() && !text.trim().is_empty() => Some(text.clone()),
        _ => None,
    }
}

/// An error at each word of `groups` (case aside) that an earlier one repeats: a word
/// belongs to one label id. `spans` are the groups'.
fn report_repeats(groups: &[Vec<String>], spans: &[Span], what: &str, diagnostics: &mut Vec<Diagnostic>) {
    for (i, group) in groups.iter().enumerate() {
        let earlier: Vec<&String> = groups[..i].iter().flatten().collect();
        for (j, word) in group.iter().enumerate() {
            let same = |w: &&String| w.eq_ignore_ascii_case(word);
            if earlier.iter().any(same) || group[..j].iter().any(|w| same(&w)) {
                diagnostics.push(Diagnostic::error(
                    Code::LabelMismatch,
                    spans[i],
                    format!("{what} `{word}` appears twice: each belongs to one label id"),
                ));
            }
        }
    }
}

/// `n` and `what`, plural where `n` is not 1.
pub(crate) fn plural(n: usize, what: &str) -> String {
    format!("{n} {what}{}", if n == 1 { "" } else { "s" })
}

/// Reads the `reprompt.*` entries of the front matter. `entries` are (setting name without the
/// prefix, key node, value node).
pub fn read(entries: &[(&str, &YamlNode, &YamlNode)], diagnostics: &mut Vec<Diagnostic>) -> Settings {
    let mut settings = Settings::default();
    let mut task_span = None;
    // Whether `reprompt.regex` is there at all, and the reward read without a fault: a bad
    // value is reported once, where it is, not again as a missing or unused pattern.
    let (mut regex_given, mut reward_read) = (false, true);
    for &(name, key, value) in entries {
        regex_given |= name == "regex";
        match name {
            "task" => match value.as_str() {
                Some("classify") => settings.task = Some(Task::Classify),
                Some("generate") => settings.task = Some(Task::Generate),
                other => {
                    let suggestion = other.and_then(|o| did_you_mean(o, ["classify", "generate"])).map(str::to_string);
                    diagnostics.push(
                        Diagnostic::error(
                            Code::InvalidField,
                            value.span,
                            "`reprompt.task` must be `classify` or `generate`",
                        )
                        .with_suggestion(suggestion),
                    );
                }
            },
            "labels" => match &value.kind {
                YamlKind::Sequence(items) => {
                    let mut words: Vec<Vec<String>> = Vec::new();
                    let mut spans = Vec::new();
                    for item in items {
                        let group = match &item.kind {
                            YamlKind::Sequence(synonyms) if !synonyms.is_empty() => {
                                synonyms.iter().map(label_word).collect::<Option<Vec<String>>>()
                            }
                            _ => label_word(item).map(|w| vec![w]),
                        };
                        match group {
                            Some(group) => {
                                words.push(group);
                                spans.push(item.span);
                            }
                            None => diagnostics.push(Diagnostic::error(
                                Code::InvalidField,
                                item.span,
                                "each label must be a non-empty word or phrase, or a list of them",
                            )),
                        }
                    }
                    report_repeats(&words, &spans, "label word", diagnostics);
                    let labels: Vec<String> = words.iter().map(|g| g[0].clone()).collect();
                    settings.label_words = words;
                    settings.labels = Some(Spanned { value: labels, span: value.span });
                }
                _ => diagnostics.push(Diagnostic::error(
                    Code::InvalidField,
                    value.span,
                    format!("`reprompt.labels` must be a list of answer words, not {}", value.type_name()),
                )),
            },
            "dataset" | "validation" | "test" => match value.as_str() {
                Some(path) if !path.trim().is_empty() => {
                    let spanned = Some(Spanned { value: path.to_string(), span: value.span });
                    match name {
                        "dataset" => settings.dataset = spanned,
                        "validation" => settings.validation = spanned,
                        _ => settings.test = spanned,
                    }
                }
                _ => diagnostics.push(Diagnostic::error(
                    Code::InvalidField,
                    value.span,
                    format!("`reprompt.{name}` must be a path to a .tsv, .csv or .jsonl file"),
                )),
            },
            "reward" => {
                let before = diagnostics.len();
                let spec = read_reward(value, diagnostics);
                reward_read = diagnostics.len() == before;
                if let Some(spec) = spec {
                    settings.reward = Some(Spanned { value: spec, span: value.span });
                }
            }
            "budget" => match value.to_json() {
                Value::Number(n) if n.as_u64().is_some_and(|b| b > 0) => settings.budget = n.as_u64(),
                _ => diagnostics.push(Diagnostic::error(
                    Code::InvalidField,
                    value.span,
                    "`reprompt.budget` must be a positive whole number of example evaluations",
                )),
            },
            "format" => match value.as_str() {
                Some("chat") => settings.format = Format::Chat,
                Some("plain") => settings.format = Format::Plain,
                _ => diagnostics.push(Diagnostic::error(
                    Code::InvalidField,
                    value.span,
                    "`reprompt.format` must be `chat` or `plain`",
                )),
            },
            "columns" => match value.to_json() {
                Value::Object(map) if map.values().all(Value::is_string) => settings.columns = Some(map),
                _ => diagnostics.push(Diagnostic::error(
                    Code::InvalidField,
                    value.span,
                    "`reprompt.columns` must map input variables to column names: `{sentence: text}`",
                )),
            },
            "label_column" | "answer_column" => match value.as_str() {
                Some(column) if !column.trim().is_empty() => {
                    if name == "label_column" {
                        settings.label_column = Some(column.to_string());
                    } else {
                        settings.answer_column = Some(column.to_string());
                    }
                }
                _ => diagnostics.push(Diagnostic::error(
                    Code::InvalidField,
                    value.span,
                    format!("`reprompt.{name}` must be a column name"),
                )),
            },
            "regex" => match value.as_str() {
                Some(pattern) => {
                    if let Err(e) = regex::Regex::new(pattern) {
                        diagnostics.push(Diagnostic::error(
                            Code::InvalidField,
                            value.span,
                            format!("`reprompt.regex` is not a valid pattern: {}", regex_problem(&e)),
                        ));
                    }
                    settings.regex = Some(Spanned { value: pattern.to_string(), span: value.span });
                }
                None => diagnostics.push(Diagnostic::error(
                    Code::InvalidField,
                    value.span,
                    "`reprompt.regex` must be a pattern string",
                )),
            },
            "data_labels" => {
                // Like the labels: a word per label id, or a list of words for one.
                let items = match &value.kind {
                    YamlKind::Sequence(items) => items.as_slice(),
                    _ => &[],
                };
                let names: Option<Vec<Vec<String>>> = items
                    .iter()
                    .map(|item| match &item.kind {
                        YamlKind::Sequence(words) if !words.is_empty() => words.iter().map(label_word).collect(),
                        _ => label_word(item).map(|w| vec![w]),
                    })
                    .collect();
                match names {
                    Some(names) if !names.is_empty() => {
                        let spans: Vec<Span> = items.iter().map(|item| item.span).collect();
                        report_repeats(&names, &spans, "data label", diagnostics);
                        settings.data_labels = Some(Spanned { value: names, span: value.span });
                    }
                    _ => diagnostics.push(Diagnostic::error(
                        Code::InvalidField,
                        value.span,
                        "`reprompt.data_labels` must be a list of words (or of lists of words), one per label id: \
                         `[terrible, great]`",
                    )),
                }
            }
            "label_bias" => {
                let numbers: Option<Vec<f64>> = match value.to_json() {
                    Value::Array(items) => items.iter().map(|v| v.as_f64().filter(|x| x.is_finite())).collect(),
                    _ => None,
                };
                match numbers {
                    Some(bias) if !bias.is_empty() => {
                        settings.label_bias = Some(Spanned { value: bias, span: value.span });
                    }
                    _ => diagnostics.push(Diagnostic::error(
                        Code::InvalidField,
                        value.span,
                        "`reprompt.label_bias` must be a list of numbers, one per label id: `[0, 0.8]`",
                    )),
                }
            }
            unknown => {
                let suggestion =
                    did_you_mean(unknown, SETTINGS.iter().map(|(n, _)| *n)).map(|s| format!("reprompt.{s}"));
                let hint = suggestion.as_ref().map(|s| format!(": did you mean `{s}`?")).unwrap_or_default();
                diagnostics.push(
                    Diagnostic::error(
                        Code::UnknownSetting,
                        key.span,
                        format!("unknown setting `reprompt.{unknown}`{hint}"),
                    )
                    .with_suggestion(suggestion),
                );
            }
        }
        if name == "task" {
            task_span = Some(value.span);
        }
    }
    check_task_fit(&settings, task_span, diagnostics);
    // The `regex` reward and its pattern come together.
    let regex_reward = settings.reward.as_ref().filter(|r| r.value.components.iter().any(|(n, _)| n == "regex"));
    match (regex_reward, &settings.regex) {
        (Some(reward), None) if !regex_given => diagnostics.push(Diagnostic::error(
            Code::InvalidField,
            reward.span,
            "the `regex` reward needs `reprompt.regex: <pattern>`: the pattern an output must match",
        )),
        (None, Some(regex)) if reward_read => diagnostics.push(Diagnostic::warning(
            Code::InvalidField,
            regex.span,
            "`reprompt.regex` is read only by the `regex` reward, which `reprompt.reward` does not name",
        )),
        _ => {}
    }
    settings
}

/// What is wrong with a pattern, in one line: the regex crate's syntax errors draw the
/// pattern with a caret under the fault over several lines, its last line saying what.
fn regex_problem(e: &regex::Error) -> String {
    let text = e.to_string();
    let last = text.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or(&text);
    last.trim().trim_start_matches("error: ").to_string()
}

fn read_reward(value: &YamlNode, diagnostics: &mut Vec<Diagnostic>) -> Option<RewardSpec> {
    fn check_name(name: &str, span: Span, diagnostics: &mut Vec<Diagnostic>) -> bool {
        if REWARDS.iter().any(|(r, _)| *r == name) {
            return true;
        }
        let suggestion = did_you_mean(name, REWARDS.iter().map(|(r, _)| *r)).map(str::to_string);
        let known = REWARDS.iter().map(|(r, _)| format!("`{r}`")).collect::<Vec<_>>().join(", ");
        diagnostics.push(
            Diagnostic::error(Code::InvalidField, span, format!("unknown reward `{name}` (known: {known})"))
                .with_suggestion(suggestion),
        );
        false
    }
    match &value.kind {
        YamlKind::Scalar { value: Value::String(name), .. } => {
            check_name(name, value.span, diagnostics).then(|| RewardSpec::single(name))
        }
        YamlKind::Mapping(entries) => {
            let mut components = Vec::new();
            for (k, v) in entries {
                let name = k.as_key().unwrap_or_default();
                if !check_name(name, k.span, diagnostics) {
                    continue;
                }
                match v.to_json().as_f64() {
                    Some(weight) => components.push((name.to_string(), weight)),
                    None => diagnostics.push(Diagnostic::error(
                        Code::InvalidField,
                        v.span,
                        format!("the weight of `{name}` must be a number"),
                    )),
                }
            }
            (!components.is_empty()).then_some(RewardSpec { components })
        }
        _ => {
            diagnostics.push(Diagnostic::error(
                Code::InvalidField,
                value.span,
                "`reprompt.reward` must be a reward name or a map of reward names to weights",
            ));
            None
        }
    }
}

fn check_task_fit(settings: &Settings, task_span: Option<Span>, diagnostics: &mut Vec<Diagnostic>) {
    let task = settings.task_or_default();
    match (&settings.labels, task) {
        (None, Task::Classify) => {
            if let Some(span) = task_span {
                diagnostics.push(Diagnostic::error(
                    Code::LabelMismatch,
                    span,
                    "`reprompt.task: classify` needs `reprompt.labels`: one answer word per label id",
                ));
            }
        }
        (Some(labels), Task::Classify) if labels.value.len() < 2 => diagnostics.push(Diagnostic::error(
            Code::LabelMismatch,
            labels.span,
            "a classification task needs at least two labels",
        )),
        (Some(labels), Task::Generate) => diagnostics.push(
            Diagnostic::warning(
                Code::LabelMismatch,
                labels.span,
                "`reprompt.labels` is ignored for `reprompt.task: generate`: generation is scored against answers",
            )
            .with_related(task_span.unwrap_or(labels.span), "the task is set here"),
        ),
        _ => {}
    }
    // Settings with one item per label id: as many as the labels, and nothing to do in generation.
    let per_label = [
        settings
            .data_labels
            .as_ref()
            .map(|d| ("data_labels", d.span, d.value.len(), "item", "it names the dataset's labels")),
        settings
            .label_bias
            .as_ref()
            .map(|b| ("label_bias", b.span, b.value.len(), "number", "it shifts the choice between label words")),
    ];
    for (name, span, count, item, does) in per_label.into_iter().flatten() {
        match (&settings.labels, task) {
            (Some(labels), Task::Classify) if labels.value.len() != count => diagnostics.push(
                Diagnostic::error(
                    Code::LabelMismatch,
                    span,
                    format!(
                        "`reprompt.{name}` has {} for {} labels: one per label id",
                        plural(count, item),
                        labels.value.len()
                    ),
                )
                .with_related(labels.span, "the labels are set here"),
            ),
            (_, Task::Generate) => diagnostics.push(Diagnostic::warning(
                Code::LabelMismatch,
                span,
                format!("`reprompt.{name}` is ignored for generation: {does}"),
            )),
            _ => {}
        }
    }
    if let Some(reward) = &settings.reward {
        for (name, _) in &reward.value.components {
            if let Some((_, Some(needs))) = REWARDS.iter().find(|(r, _)| r == name)
                && *needs != task
            {
                diagnostics.push(Diagnostic::error(
                    Code::InvalidField,
                    reward.span,
                    format!(
                        "reward `{name}` needs `reprompt.task: {}`, but the task is `{}`",
                        needs.as_str(),
                        task.as_str()
                    ),
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diagnostic::Severity;
    use crate::document::parse;

    #[test]
    fn every_setting_is_read_and_typos_are_caught() {
        let doc = parse(
            "---\ninput:\n  schema: {text: string}\nreprompt.task: generate\nreprompt.dataset: d.jsonl\n\
             reprompt.reward: {f1: 1.0, length: -0.01}\nreprompt.budget: 300\nreprompt.format: plain\n\
             reprompt.columns: {text: question}\nreprompt.answer_column: solution\nreprompt.regex: '^\\\\d+$'\n\
             reprompt.bugdet: 3\n---\n{{text}}",
            None,
        );
        let s = &doc.settings;
        assert_eq!(s.task, Some(Task::Generate));
        assert_eq!(s.budget, Some(300));
        assert_eq!(s.format, Format::Plain);
        assert_eq!(s.columns.as_ref().and_then(|c| c.get("text")).and_then(Value::as_str), Some("question"));
        assert_eq!(s.answer_column.as_deref(), Some("solution"));
        assert_eq!(s.reward.as_ref().map(|r| r.value.components.len()), Some(2));
        assert!(s.regex.is_some());
        let unknown: Vec<_> = doc.diagnostics.iter().filter(|d| d.code == Code::UnknownSetting).collect();
        assert_eq!(unknown.len(), 1, "{:?}", doc.diagnostics);
        assert_eq!(unknown[0].suggestion.as_deref(), Some("reprompt.budget"));
    }

    #[test]
    fn a_label_may_have_several_answer_words() {
        let doc = parse("---\nreprompt.labels: [[harsh, poor], great]\n---\nReview: {{x}}\nSentiment:", None);
        assert!(doc.diagnostics.is_empty(), "{:?}", doc.diagnostics);
        let s = &doc.settings;
        assert_eq!(s.labels.as_ref().map(|l| l.value.clone()), Some(vec!["harsh".to_string(), "great".to_string()]));
        assert_eq!(s.label_words, [vec!["harsh".to_string(), "poor".to_string()], vec!["great".to_string()]]);
        assert_eq!(s.task_or_default(), Task::Classify);
        // A word in two labels is an error at the second label; so is an empty word list.
        let twice = parse("---\nreprompt.labels: [[bad, poor], [good, Poor]]\n---\n{{x}}", None);
        let errors: Vec<_> = twice.diagnostics.iter().filter(|d| d.code == Code::LabelMismatch).collect();
        assert_eq!(errors.len(), 1, "{:?}", twice.diagnostics);
        assert!(errors[0].message.contains("`Poor`"), "{}", errors[0].message);
        assert_eq!(&twice.source[errors[0].span.start..errors[0].span.end], "[good, Poor]");
        let empty = parse("---\nreprompt.labels: [[], good]\n---\n{{x}}", None);
        assert!(empty.diagnostics.iter().any(|d| d.code == Code::InvalidField), "{:?}", empty.diagnostics);
    }

    #[test]
    fn data_labels_name_each_label_id_once() {
        let doc = parse("---\nreprompt.labels: [bad, good]\nreprompt.data_labels: [terrible, great]\n---\n{{x}}", None);
        assert!(doc.diagnostics.is_empty(), "{:?}", doc.diagnostics);
        let words = |groups: &[&[&str]]| -> Vec<Vec<String>> {
            groups.iter().map(|g| g.iter().map(|w| w.to_string()).collect()).collect()
        };
        assert_eq!(doc.settings.data_labels.map(|d| d.value), Some(words(&[&["terrible"], &["great"]])));
        let grouped = parse(
            "---\nreprompt.labels: [bad, good]\nreprompt.data_labels: [[terrible, awful], great]\n---\n{{x}}",
            None,
        );
        assert!(grouped.diagnostics.is_empty(), "{:?}", grouped.diagnostics);
        assert_eq!(grouped.settings.data_labels.map(|d| d.value), Some(words(&[&["terrible", "awful"], &["great"]])));
        let short = parse("---\nreprompt.labels: [bad, good]\nreprompt.data_labels: [terrible]\n---\n{{x}}", None);
        let mismatch = short.diagnostics.iter().find(|d| d.code == Code::LabelMismatch).expect("a mismatch");
        assert!(mismatch.message.contains("has 1 item for 2 labels"), "{}", mismatch.message);
        let twice =
            parse("---\nreprompt.labels: [bad, good]\nreprompt.data_labels: [[great, ok], Great]\n---\n{{x}}", None);
        let repeat = twice.diagnostics.iter().find(|d| d.code == Code::LabelMismatch).expect("a repeat");
        assert!(repeat.message.contains("data label `Great` appears twice"), "{}", repeat.message);
        for bad in ["terrible", "[]", "[[], b]", "[a, null]", "[[a, {b: c}], d]"] {
            let doc =
                parse(&format!("---\nreprompt.labels: [bad, good]\nreprompt.data_labels: {bad}\n---\n{{{{x}}}}"), None);
            assert!(doc.diagnostics.iter().any(|d| d.code == Code::InvalidField), "{bad}: {:?}", doc.diagnostics);
            assert!(doc.settings.data_labels.is_none());
        }
    }

    #[test]
    fn a_label_bias_has_one_finite_number_per_label() {
        let doc = parse("---\nreprompt.labels: [bad, good]\nreprompt.label_bias: [0, -0.85]\n---\n{{x}}", None);
        assert!(doc.diagnostics.is_empty(), "{:?}", doc.diagnostics);
        assert_eq!(doc.settings.label_bias.as_ref().map(|b| b.value.clone()), Some(vec![0.0, -0.85]));
        let source = "---\nreprompt.labels: [bad, good]\nreprompt.label_bias: [0.5]\n---\n{{x}}";
        let short = parse(source, None);
        let errors: Vec<_> = short.diagnostics.iter().filter(|d| d.code == Code::LabelMismatch).collect();
        assert_eq!(errors.len(), 1, "{:?}", short.diagnostics);
        assert_eq!(&source[errors[0].span.start..errors[0].span.end], "[0.5]");
        for bad in ["[0, high]", "0.5", "[]", "[0, .nan]"] {
            let doc =
                parse(&format!("---\nreprompt.labels: [bad, good]\nreprompt.label_bias: {bad}\n---\n{{{{x}}}}"), None);
            assert!(doc.diagnostics.iter().any(|d| d.code == Code::InvalidField), "{bad}: {:?}", doc.diagnostics);
        }
        let generate = parse("---\nreprompt.task: generate\nreprompt.label_bias: [0, 1]\n---\n{{x}}", None);
        assert!(generate.diagnostics.iter().any(|d| d.code == Code::LabelMismatch && d.severity == Severity::Warning));
    }

    #[test]
    fn a_reward_that_needs_a_pattern_or_a_schema_is_checked_with_it() {
        let findings = |front: &str| -> Vec<(Code, Severity, String)> {
            let doc = parse(&format!("---\nreprompt.task: generate\n{front}---\n{{{{q}}}}"), None);
            doc.diagnostics
                .iter()
                .filter(|d| d.code == Code::InvalidField)
                .map(|d| (d.code, d.severity, doc.source[d.span.start..d.span.end].to_string()))
                .collect()
        };
        let error = |at: &str| vec![(Code::InvalidField, Severity::Error, at.to_string())];
        // The pattern the reward matches: missing, broken, or there without the reward.
        assert_eq!(findings("reprompt.reward: regex\n"), error("regex"));
        assert_eq!(findings("reprompt.reward: {regex: 1.0, length: -0.1}\n"), error("{regex: 1.0, length: -0.1}"));
        assert_eq!(findings("reprompt.reward: regex\nreprompt.regex: '^\\d+$'\n"), []);
        assert_eq!(findings("reprompt.reward: regex\nreprompt.regex: '([0-9'\n"), error("'([0-9'"));
        let doc = parse("---\nreprompt.task: generate\nreprompt.regex: '(a'\nreprompt.reward: regex\n---\n{{q}}", None);
        let message = &doc.diagnostics.iter().find(|d| d.code == Code::InvalidField).expect("an error").message;
        assert_eq!(message, "`reprompt.regex` is not a valid pattern: unclosed group", "{message}");
        let unused = findings("reprompt.regex: '^\\d+$'\n");
        assert_eq!(
            unused.iter().map(|(_, s, at)| (*s, at.as_str())).collect::<Vec<_>>(),
            [(Severity::Warning, "'^\\d+$'")]
        );
        // A bad value is reported once, where it is.
        let doc = parse("---\nreprompt.task: generate\nreprompt.reward: regex\nreprompt.regex: 5\n---\n{{q}}", None);
        let found: Vec<&str> = doc.diagnostics.iter().map(|d| d.message.as_str()).collect();
        assert_eq!(found, ["`reprompt.regex` must be a pattern string"]);
        let doc =
            parse("---\nreprompt.task: generate\nreprompt.reward: {regex: high}\nreprompt.regex: a\n---\n{{q}}", None);
        assert_eq!(doc.diagnostics.len(), 1, "{:?}", doc.diagnostics);
        assert_eq!(doc.diagnostics[0].severity, Severity::Error, "{:?}", doc.diagnostics);
        // The schema the `json_schema` reward checks outputs against.
        assert_eq!(findings("reprompt.reward: json_schema\n"), error("json_schema"));
        assert_eq!(findings("output:\n  schema:\n    answer: string\nreprompt.reward: json_schema\n"), []);
    }
}
