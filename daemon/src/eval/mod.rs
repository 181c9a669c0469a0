//! Evaluation: datasets through prompts through the engine into rewards, with intervals and a
//! cache (see DESIGN.md, Rewards).

pub mod cache;
pub mod evaluate;
pub mod layout;
pub mod rewards;
pub mod stats;

pub use cache::{EvalCache, FileCache};
pub use evaluate::{EvalError, Evaluation, Evaluator, ExampleResult, PreparedPrompt, Split};
