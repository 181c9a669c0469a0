//! The optimizer's learning core: a PPO agent that picks one edit out of a variable-size
//! candidate set, independent of any language model (features come in as plain `f32` vectors).
//!
//! - [`edits`]: readable prompt edits applied as minimal text edits, each checked to parse and
//!   keep the input variables;
//! - [`calibrate`]: per-label offsets (`reprompt.label_bias`) fitted so a prompt's answers on
//!   the training examples spread over the labels as the gold answers do;
//! - [`labels`]: label-word sets the task model ranks highest on the training examples
//!   (LM-BFF's automatic label search), added to the edit space;
//! - [`rng`]: the seeded deterministic generator behind everything random here (weight init,
//!   action sampling, minibatch shuffling), so runs and resumed runs are reproducible;
//! - [`policy`]: [`PolicyNet`], an MLP scoring `[state; candidate; edit kind]` rows plus a value
//!   head on the state;
//! - [`ppo`]: [`Ppo`], the agent: GAE, clipped surrogate, value loss, entropy bonus, global-norm
//!   gradient clipping, AdamW (own implementation, so its moments go into checkpoints),
//!   checkpoints and anchor snapshots;
//! - [`search`]: the budgeted, cached environment over a [`search::Scorer`], the strategies
//!   (PPO, random, greedy, evolution) at equal budget, the validation gate and resumable runs.

pub mod calibrate;
pub mod edits;
pub mod labels;
pub mod model;
pub mod policy;
pub mod ppo;
pub mod rng;
pub mod search;

pub use policy::{PolicyDims, PolicyNet, PolicySnapshot};
pub use ppo::{Ppo, PpoConfig, Transition, UpdateStats};
pub use rng::Rng;

use std::path::PathBuf;

/// What can go wrong in the optimizer core.
#[derive(Debug, thiserror::Error)]
pub enum OptimizeError {
    #[error("policy computation failed: {0}")]
    Compute(candle_core::Error),
    #[error("{0}")]
    Input(String),
    #[error("checkpoint {path}: {message}")]
    Checkpoint { path: PathBuf, message: String },
}

impl From<candle_core::Error> for OptimizeError {
    fn from(e: candle_core::Error) -> Self {
        Self::Compute(crate::engine::error::without_backtrace(e))
    }
}

/// Result alias of the optimizer core.
pub type Result<T> = std::result::Result<T, OptimizeError>;
