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
        if std::fs::create_dir_all(&self.dir).is_err() {
            return;
        }
        let Ok(text) = serde_json::to_string(evaluation) else { return };
        let temporary = path.with_extension(format!("tmp{}", std::process::id()));
        if std::fs::write(&temporary, text).is_ok() {
            let _ = std::fs::rename(&temporary, &path);
        }
    }
}
