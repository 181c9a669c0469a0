//! The `reprompt` subcommands, written against `Write` so tests can run them in-process.

pub mod bench;
pub mod bench_optimize;
pub mod check;
pub mod labels;
pub mod models;
pub mod optimize;
pub mod pretrain;
pub mod render;
pub mod score;
