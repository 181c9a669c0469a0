//! The `reprompt` subcommands, written against `Write` so tests can run them in-process.

pub mod bench;
pub mod check;
pub mod models;
pub mod render;
pub mod score;
