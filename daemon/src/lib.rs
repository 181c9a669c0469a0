//! reprompt's daemon crate: the command-line tool today; the engine, evaluation, optimizer,
//! history store and HTTP API grow here as their issues land (see ARCHITECTURE.md).

pub mod cli;
pub mod engine;
pub mod eval;
pub mod files;
pub mod optimize;
pub mod report;
