//! Helpers shared by the CLI tests: the workspace root, running the real binary, and a
//! private cache directory that shares the fetched model but nothing else.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root").to_path_buf()
}

/// Runs `reprompt` from the workspace root with `cache` as its cache directory.
pub fn reprompt(args: &[&str], cache: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_reprompt"))
        .args(args)
        .current_dir(workspace())
        .env("REPROMPT_CACHE_DIR", cache)
        .output()
        .expect("reprompt runs")
}

/// Makes `dir` a cache directory whose models are links to the fetched ones.
pub fn link_models(dir: &Path) {
    std::fs::create_dir_all(dir.join("models")).expect("cache dir");
    let shared = reprompt::engine::store::models_dir();
    for entry in std::fs::read_dir(&shared).expect("run `reprompt models fetch` first (scripts/test.sh does)") {
        let entry = entry.expect("entry");
        if entry.path().extension().is_some_and(|e| e == "gguf") {
            std::os::unix::fs::symlink(entry.path(), dir.join("models").join(entry.file_name())).expect("link model");
        }
    }
}
