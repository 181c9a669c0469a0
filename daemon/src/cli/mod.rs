//! The `reprompt` subcommands, written against `Write` so tests can run them in-process.

pub mod bench;
pub mod bench_optimize;
pub mod check;
pub mod labels;
pub mod models;
pub mod optimize;
pub mod plot;
pub mod pretrain;
pub mod render;
pub mod score;

/// Parses a count that must be at least 1 (`--limit 0` would score nothing and say 0%).
pub fn at_least_one(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(e.to_string()),
    }
}
