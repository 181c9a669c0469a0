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
    Compute(candle_core::Error),
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

impl From<candle_core::Error> for EngineError {
    fn from(e: candle_core::Error) -> Self {
        Self::Compute(without_backtrace(e))
    }
}

/// `e` without the backtrace candle attaches to its errors where `RUST_BACKTRACE` is set:
/// an error reaches the user as its message, not as the message and thirty stack frames.
pub fn without_backtrace(e: candle_core::Error) -> candle_core::Error {
    use candle_core::Error;
    match e {
        Error::WithBacktrace { inner, .. } => without_backtrace(*inner),
        Error::Context { inner, context } => Error::Context { inner: Box::new(without_backtrace(*inner)), context },
        Error::WithPath { inner, path } => Error::WithPath { inner: Box::new(without_backtrace(*inner)), path },
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_candle_error_reads_as_its_message_without_a_backtrace() {
        let inner = candle_core::Error::Msg("unknown magic 0x6b6e756a".into());
        let wrapped = candle_core::Error::WithBacktrace {
            inner: Box::new(inner),
            backtrace: Box::new(std::backtrace::Backtrace::force_capture()),
        }
        .context("reading the header");
        assert!(wrapped.to_string().lines().count() > 2, "{wrapped}");
        let error = EngineError::from(wrapped);
        assert_eq!(error.to_string(), "model computation failed: reading the header\nunknown magic 0x6b6e756a");
    }
}
