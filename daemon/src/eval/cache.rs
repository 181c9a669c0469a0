//! The evaluation cache: identical requests (same prompt, model, dataset, reward, split) cost
//! nothing the second time. Behind a trait so the history store can back it later.

use std::path::PathBuf;

use super::evaluate::Evaluation;

pub trait EvalCache: Send + Sync {
    fn get(&self, key: &str) -> Option<Evaluation>;
    fn put(&self, key: &str, evaluation: &Evaluation);
}

/// JSON files under a directory, one per key; writes go to a temporary file then rename, so a
/// crash never leaves a half-written entry.
pub struct FileCache {
    pub dir: PathBuf,
}

impl FileCache {
    pub fn new(dir: PathBuf) -> Self {
        Self { dir }
    }

    /// `<reprompt cache dir>/evals`.
    pub fn default_location() -> Self {
        Self::new(crate::engine::store::cache_dir().join("evals"))
    }

    fn path(&self, key: &str) -> Option<PathBuf> {
        key.chars().all(|c| c.is_ascii_hexdigit()).then(|| self.dir.join(format!("{key}.json")))
    }
}

impl EvalCache for FileCache {
    fn get(&self, key: &str) -> Option<Evaluation> {
        let text = std::fs::read_to_string(self.path(key)?).ok()?;
        serde_json::from_str(&text).ok()
    }

    fn put(&self, key: &str, evaluation: &Evaluation) {
        let Some(path) = self.path(key) else { return };
        // The cache is an optimisation: failing to write it costs time later, never results.
        let written = std::fs::create_dir_all(&self.dir)
            .and_then(|()| serde_json::to_string(evaluation).map_err(std::io::Error::other))
            .and_then(|text| {
                let temporary = path.with_extension(format!("tmp{}", std::process::id()));
                std::fs::write(&temporary, text)?;
                std::fs::rename(&temporary, &path)
            });
        if let Err(err) = written {
            eprintln!("warning: cannot write the evaluation cache {}: {err}", path.display());
        }
    }
}
