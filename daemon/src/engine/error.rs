//! The engine's error type: every failure names the file or input it concerns and what to do.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("cannot read model file {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path} is not a usable GGUF model: {message}")]
    Gguf { path: PathBuf, message: String },
    #[error("{path}: unsupported {what} `{found}`; reprompt runs {supported}")]
    Unsupported { path: PathBuf, what: &'static str, found: String, supported: &'static str },
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    #[error("chat template: {0}")]
    Template(String),
    #[error("model computation failed: {0}")]
    Compute(#[from] candle_core::Error),
    #[error("input is too long: {tokens} tokens, the model's context holds {limit}")]
    TooLong { tokens: usize, limit: usize },
    #[error("{0}")]
    Invalid(String),
    #[error("model fetch failed: {0}")]
    Fetch(String),
    #[error("{path} is corrupt or incomplete: sha256 {actual}, expected {expected}; run `reprompt models fetch` again")]
    Checksum { path: PathBuf, expected: String, actual: String },
    #[error("unknown model `{0}`: use a known model name (see `reprompt models list`) or a path to a .gguf file")]
    UnknownModel(String),
    #[error("the engine worker stopped")]
    WorkerGone,
    #[error("the engine job failed unexpectedly (a bug: please report it with the input)")]
    JobFailed,
}

pub type Result<T, E = EngineError> = std::result::Result<T, E>;
