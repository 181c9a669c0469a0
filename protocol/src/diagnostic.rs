//! Diagnostics as plain data: a stable code, a severity, a message, a span and related spans.
//!
//! Protocol-free on purpose: the language server converts these to LSP diagnostics and the CLI
//! prints them like a compiler; neither owns the rules that produce them.

use serde::{Deserialize, Serialize};

use crate::span::Span;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Hint,
    Info,
    Warning,
    Error,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Hint => "hint",
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Error => "error",
        }
    }
}

macro_rules! codes {
    ($($variant:ident => $name:literal: $doc:literal,)*) => {
        /// Stable identifiers of every finding; the string form appears in output and LSP `code`.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
        pub enum Code {
            $(#[doc = $doc] #[serde(rename = $name)] $variant,)*
        }

        impl Code {
            pub const ALL: &[Code] = &[$(Code::$variant,)*];

            pub fn as_str(self) -> &'static str {
                match self { $(Code::$variant => $name,)* }
            }

            pub fn description(self) -> &'static str {
                match self { $(Code::$variant => $doc,)* }
            }
        }
    };
}

codes! {
    InvalidUtf8 => "invalid-utf8": "the file is not valid UTF-8",
    FileTooLarge => "file-too-large": "the file is larger than a prompt can sensibly be",
    Io => "io-error": "the file could not be read",
    InvalidYaml => "invalid-yaml": "the front matter is not valid YAML",
    UnclosedFrontMatter => "unclosed-front-matter": "the front matter has no closing `---` line",
    DuplicateKey => "duplicate-key": "a YAML mapping repeats a key",
    InvalidField => "invalid-field": "a front-matter field has the wrong type or value",
    UnknownField => "unknown-field": "an undotted front-matter key that Dotprompt drops",
    UnknownSetting => "unknown-setting": "a `reprompt.*` key that reprompt does not know",
    InvalidSchema => "invalid-schema": "a Picoschema or JSON Schema that cannot be compiled",
    UnclosedBlock => "unclosed-block": "a `{{#block}}` without its `{{/block}}`",
    UnmatchedClosingBlock => "unmatched-closing-block": "a `{{/block}}` that closes nothing or the wrong block",
    UnbalancedBrace => "unbalanced-brace": "a `{{` without `}}`, or the reverse",
    InvalidTemplate => "invalid-template": "the Handlebars template does not compile",
    UnknownHelper => "unknown-helper": "a block helper that Dotprompt does not define",
    InvalidRole => "invalid-role": "a `{{role}}` other than system, user or model",
    UndefinedVariable => "undefined-variable": "a template variable missing from the input schema",
    UnusedVariable => "unused-variable": "an input-schema variable that the template never uses",
    MissingPartial => "missing-partial": "a `{{> partial}}` whose `_name.prompt` file does not exist",
    CircularPartial => "circular-partial": "partials that include each other",
    MissingDataset => "missing-dataset": "a dataset file named in `reprompt.*` does not exist",
    InvalidDataset => "invalid-dataset": "a dataset file named in `reprompt.*` has rows or columns reprompt cannot read",
    SplitOverlap => "split-overlap": "validation or test examples that an earlier split holds too: their scores are not held out",
    LabelMismatch => "label-mismatch": "`reprompt.labels` does not fit `reprompt.task`",
    UnknownModel => "unknown-model": "a model that is neither a known name nor a `.gguf` path",
    MissingModel => "missing-model": "a `.gguf` model path that does not exist",
    TooDeep => "too-deep": "nesting deeper than reprompt accepts",
}

/// A secondary location that explains a diagnostic (the other half of a pair, a definition).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Related {
    pub message: String,
    pub span: Span,
    /// Another file, when the related location is not in the diagnosed file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Diagnostic {
    pub code: Code,
    pub severity: Severity,
    pub message: String,
    pub span: Span,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub related: Vec<Related>,
    /// A suggested replacement for the text under `span` (did-you-mean), if there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suggestion: Option<String>,
}

impl Diagnostic {
    pub fn new(code: Code, severity: Severity, span: Span, message: impl Into<String>) -> Self {
        Self { code, severity, message: message.into(), span, related: Vec::new(), suggestion: None }
    }

    pub fn error(code: Code, span: Span, message: impl Into<String>) -> Self {
        Self::new(code, Severity::Error, span, message)
    }

    pub fn warning(code: Code, span: Span, message: impl Into<String>) -> Self {
        Self::new(code, Severity::Warning, span, message)
    }

    pub fn with_related(mut self, span: Span, message: impl Into<String>) -> Self {
        self.related.push(Related { message: message.into(), span, path: None });
        self
    }

    pub fn with_suggestion(mut self, suggestion: Option<String>) -> Self {
        self.suggestion = suggestion;
        self
    }

    pub fn shifted(mut self, delta: usize) -> Self {
        self.span = self.span.shifted(delta);
        for related in &mut self.related {
            if related.path.is_none() {
                related.span = related.span.shifted(delta);
            }
        }
        self
    }
}

/// The closest candidate to `word` by edit distance, if it is close enough to be a likely typo.
pub fn did_you_mean<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|candidate| (strsim::jaro_winkler(word, candidate), candidate))
        .filter(|(score, _)| *score >= 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, candidate)| candidate)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_unique_and_kebab_case() {
        let mut names: Vec<_> = Code::ALL.iter().map(|c| c.as_str()).collect();
        assert!(names.iter().all(|n| n.chars().all(|c| c.is_ascii_lowercase() || c == '-' || c.is_ascii_digit())));
        names.sort();
        names.dedup();
        assert_eq!(names.len(), Code::ALL.len());
    }

    #[test]
    fn did_you_mean_finds_typos_only() {
        let keys = ["task", "labels", "dataset", "validation"];
        assert_eq!(did_you_mean("lables", keys), Some("labels"));
        assert_eq!(did_you_mean("datset", keys), Some("dataset"));
        assert_eq!(did_you_mean("zzz", keys), None);
    }
}
