//! Checkpoints: a search's whole state written so that a run killed at any moment resumes
//! exactly, and is resumed only by a run of the same prompt, data, scoring and settings.

use std::path::Path;

use super::{Scorer, Search, SearchConfig, SearchState, Strategy, key};
use crate::eval::Split;
use crate::files::sync_dir;
use crate::optimize::edits::EditSpace;
use crate::optimize::{OptimizeError, PolicyNet, Ppo, Result, Rng};

const STATE_FILE: &str = "search.json";
const PPO_DIR: &str = "ppo";
const ANCHOR_FILE: &str = "anchor.safetensors";

/// What [`SearchConfig::data`] holds: a digest of the two splits' content digests, of the
/// scoring's version ([`crate::eval::evaluate::EVAL_VERSION`]) and of `scoring`, what else the
/// scores depend on (the scorer's model, device, partials, built-in edit banks): results
/// scored by other rules, another model or other partials are not resumed.
pub fn data_digest(train_hash: &str, validation_hash: &str, scoring: &str) -> String {
    let version = crate::eval::evaluate::EVAL_VERSION;
    reprompt_protocol::hash::sha256_hex(
        format!("scoring {version}\ntrain {train_hash}\nvalidation {validation_hash}\n{scoring}").as_bytes(),
    )
}

/// Where [`Search::save`] writes the next checkpoint (`DIR.new`) and puts the one it replaces
/// (`DIR.old`) while it swaps them; `None` for a path without a name of its own (`/`, `..`).
fn checkpoint_siblings(dir: &Path) -> Option<(std::path::PathBuf, std::path::PathBuf)> {
    let name = dir.file_name()?.to_string_lossy().into_owned();
    Some((dir.with_file_name(format!("{name}.new")), dir.with_file_name(format!("{name}.old"))))
}

/// Flushes every file under `dir` to the disk, then the directories' entries.
fn sync_tree(dir: &Path) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            sync_tree(&entry.path())?;
        } else {
            std::fs::File::open(entry.path())?.sync_all()?;
        }
    }
    sync_dir(dir)
}

/// Removes a checkpoint directory, its `search.json` first: a removal cut short never leaves
/// a part that reads as a whole checkpoint.
fn remove_checkpoint_dir(dir: &Path) -> std::io::Result<()> {
    if !dir.exists() {
        return Ok(());
    }
    match std::fs::remove_file(dir.join(STATE_FILE)) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    std::fs::remove_dir_all(dir)
}

/// Finishes a [`Search::save`] that was cut short: a complete new checkpoint (its
/// `search.json` is written last) takes `dir`'s place; else, where `dir` holds no complete
/// one, the one it was replacing comes back. What is left beside it is removed. Idempotent.
pub fn recover_checkpoint(dir: &Path) -> std::io::Result<()> {
    let Some((next, old)) = checkpoint_siblings(dir) else { return Ok(()) };
    let complete = |d: &Path| d.join(STATE_FILE).is_file();
    let found = if complete(&next) {
        Some(&next)
    } else if !complete(dir) && complete(&old) {
        Some(&old)
    } else {
        None
    };
    if let Some(found) = found {
        remove_checkpoint_dir(dir)?;
        std::fs::rename(found, dir)?;
    }
    remove_checkpoint_dir(&next)?;
    remove_checkpoint_dir(&old)
}

/// Removes the checkpoint in `dir` with what a save cut short left beside it (`--fresh`, or
/// a checkpoint of another run).
pub fn remove_checkpoint(dir: &Path) -> std::io::Result<()> {
    if let Some((next, old)) = checkpoint_siblings(dir) {
        remove_checkpoint_dir(&next)?;
        remove_checkpoint_dir(&old)?;
    }
    remove_checkpoint_dir(dir)
}

/// Whether this reprompt resumes a checkpoint's state: format 3 only. Format 2 had one edit kind
/// fewer (no calibration), so its policy does not fit; format 1 also ranked single label sets.
fn resumable(state: &SearchState) -> std::result::Result<(), String> {
    match state.format {
        3 => Ok(()),
        1 | 2 => Err("it was written by an older reprompt with a smaller edit space; remove it or pick another \
                      directory"
            .into()),
        other => Err(format!("unknown format {other}")),
    }
}

impl<'a> Search<'a> {
    /// Writes the checkpoint into `dir`: `search.json`, the PPO agent and its anchor. The whole
    /// checkpoint is written beside it first (`DIR.new`, `search.json` last) and swapped in by
    /// two renames, so a run killed at any moment leaves one complete checkpoint, of one moment
    /// ([`recover_checkpoint`] finishes an interrupted swap).
    pub fn save(&mut self, dir: &Path) -> Result<()> {
        let io =
            |path: &Path, e: std::io::Error| OptimizeError::Checkpoint { path: path.into(), message: e.to_string() };
        self.state.rng = self.rng.state();
        self.state.paraphrases = self.space.paraphrases.clone();
        let (next, old) = checkpoint_siblings(dir).ok_or_else(|| OptimizeError::Checkpoint {
            path: dir.into(),
            message: "a checkpoint directory needs a name".into(),
        })?;
        for stale in [&next, &old] {
            remove_checkpoint_dir(stale).map_err(|e| io(stale, e))?;
        }
        std::fs::create_dir_all(&next).map_err(|e| io(&next, e))?;
        if let Some(ppo) = &self.ppo {
            ppo.save(&next.join(PPO_DIR))?;
        }
        if let Some(anchor) = &self.anchor {
            anchor.save(&next.join(ANCHOR_FILE))?;
        }
        let path = next.join(STATE_FILE);
        let staging = next.join("search.json.new");
        let json = serde_json::to_vec(&self.state)
            .map_err(|e| OptimizeError::Checkpoint { path: path.clone(), message: e.to_string() })?;
        std::fs::write(&staging, json).map_err(|e| io(&staging, e))?;
        // On the disk before it reads as complete, and complete before it is swapped in: a
        // power cut, not only a kill, then leaves one whole checkpoint.
        sync_tree(&next).map_err(|e| io(&next, e))?;
        std::fs::rename(&staging, &path).map_err(|e| io(&path, e))?;
        sync_dir(&next).map_err(|e| io(&next, e))?;
        if dir.exists() {
            std::fs::rename(dir, &old).map_err(|e| io(dir, e))?;
        }
        std::fs::rename(&next, dir).map_err(|e| io(dir, e))?;
        let parent = dir.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        sync_dir(parent).map_err(|e| io(parent, e))?;
        // The swap is done; what is left of the old one goes now or at the next save.
        let _ = remove_checkpoint_dir(&old);
        Ok(())
    }

    /// Where a PPO checkpoint in `dir` keeps the policy's weights (what `reprompt pretrain`
    /// carries from one run into the next).
    pub fn policy_path(dir: &Path) -> std::path::PathBuf {
        dir.join(PPO_DIR).join(crate::optimize::ppo::POLICY_FILE)
    }

    /// Whether `dir` holds a checkpoint (after finishing a save a crash interrupted:
    /// [`recover_checkpoint`]).
    pub fn has_checkpoint(dir: &Path) -> bool {
        let _ = recover_checkpoint(dir);
        dir.join(STATE_FILE).is_file()
    }

    /// Whether the checkpoint in `dir` is of this prompt and these settings (false when there
    /// is none or it cannot be read).
    pub fn checkpoint_matches(dir: &Path, original: &str, config: &SearchConfig) -> bool {
        let _ = recover_checkpoint(dir);
        std::fs::read(dir.join(STATE_FILE))
            .ok()
            .and_then(|bytes| serde_json::from_slice::<SearchState>(&bytes).ok())
            .is_some_and(|state| {
                resumable(&state).is_ok() && state.original_key == key(original) && state.config == config.canonical()
            })
    }

    /// Resumes the search checkpointed in `dir`; it must be of the same prompt and settings.
    pub fn load(
        dir: &Path,
        original: &str,
        config: &SearchConfig,
        space: EditSpace,
        scorer: &'a mut dyn Scorer,
    ) -> Result<Self> {
        recover_checkpoint(dir).map_err(|e| OptimizeError::Checkpoint { path: dir.into(), message: e.to_string() })?;
        let path = dir.join(STATE_FILE);
        let bad = |message: String| OptimizeError::Checkpoint { path: path.clone(), message };
        let bytes = std::fs::read(&path).map_err(|e| bad(e.to_string()))?;
        let state: SearchState = serde_json::from_slice(&bytes).map_err(|e| bad(e.to_string()))?;
        resumable(&state).map_err(bad)?;
        if state.original_key != key(original) || state.config != config.canonical() {
            return Err(bad(
                "it belongs to another run (different prompt, data or settings); remove it or pick another directory"
                    .into(),
            ));
        }
        let mut search = Self::from_state(state, space, scorer)?;
        let sizes = (search.scorer.split_len(Split::Train), search.scorer.split_len(Split::Validation));
        if search.state.records.values().any(|r| (r.train.len(), r.validation.len()) != sizes) {
            return Err(bad("its results are of training or validation data of another size; remove it".into()));
        }
        if search.state.config.strategy == Strategy::Ppo {
            search.ppo = Some(Ppo::load(&dir.join(PPO_DIR))?);
            let anchor_path = dir.join(ANCHOR_FILE);
            if anchor_path.is_file() {
                let dims = search.dims();
                let mut anchor = PolicyNet::new(dims, search.state.config.ppo.hidden, &mut Rng::new(0))?;
                anchor.load(&anchor_path)?;
                search.anchor = Some(anchor);
            }
        }
        Ok(search)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::optimize::search::fixture::*;
    use crate::optimize::search::{SearchResult, Stop};

    #[test]
    fn a_run_killed_while_saving_resumes_from_a_whole_checkpoint() {
        let timeless = |r: &SearchResult| SearchResult { seconds: 0.0, ..r.clone() };
        let (whole, _) = run(Strategy::Ppo, 900, false);
        let cfg = config(Strategy::Ppo, 900);
        let iterations = |dir: &Path| {
            let state: SearchState = serde_json::from_slice(&std::fs::read(dir.join(STATE_FILE)).unwrap()).unwrap();
            state.iterations
        };
        // The states a kill leaves, by where it strikes in `save`, and the checkpoint that must
        // come back: (DIR, DIR.new, DIR.old) as (absent, half written, the earlier one, the later one).
        #[derive(Clone, Copy, Debug, PartialEq)]
        enum At {
            Absent,
            Half,
            Earlier,
            Later,
        }
        let cases = [
            // Writing DIR.new.
            (At::Earlier, At::Half, At::Absent, 2),
            // DIR.new written, DIR not moved yet.
            (At::Earlier, At::Later, At::Absent, 3),
            // Between the two renames.
            (At::Absent, At::Later, At::Earlier, 3),
            // Removing DIR.old after the swap, its `search.json` gone first.
            (At::Later, At::Absent, At::Half, 3),
            // Moving DIR aside when DIR.new was not complete (a recovery's rename cut short).
            (At::Absent, At::Half, At::Earlier, 2),
            // A recovery cut short while it removed DIR to put DIR.new in its place.
            (At::Half, At::Later, At::Earlier, 3),
            // A recovery cut short while it removed DIR to put DIR.old back.
            (At::Half, At::Absent, At::Earlier, 2),
        ];
        let base = std::env::temp_dir().join(format!("reprompt-search-kill-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        // The earlier checkpoint after two iterations, the later one after three.
        let (earlier, later) = (base.join("earlier"), base.join("later"));
        for (dir, n) in [(&earlier, 2), (&later, 3)] {
            let mut scorer = Planted { scored: 0, adversarial_validation: false };
            let mut first = Search::new(EXAMPLE, cfg.clone(), space(), &mut scorer).unwrap();
            assert_eq!(first.run(Some(dir), Some(n), &mut |_| {}).unwrap(), Err(Stop::Interrupted));
            drop(first);
            let (next, old) = checkpoint_siblings(dir).unwrap();
            assert!(!next.exists() && !old.exists(), "a finished save leaves one directory");
            assert_eq!(iterations(dir), n);
        }
        for (i, (at_dir, at_next, at_old, expected)) in cases.into_iter().enumerate() {
            let dir = base.join(format!("case-{i}")).join("checkpoint");
            let (next, old) = checkpoint_siblings(&dir).unwrap();
            for (path, at) in [(&dir, at_dir), (&next, at_next), (&old, at_old)] {
                match at {
                    At::Absent => {}
                    At::Half => std::fs::create_dir_all(path.join(PPO_DIR)).unwrap(),
                    At::Earlier => copy_dir(&earlier, path),
                    At::Later => copy_dir(&later, path),
                }
            }
            assert!(Search::has_checkpoint(&dir), "case {i}: the save is finished on the next look");
            assert_eq!(iterations(&dir), expected, "case {i}: the latest whole checkpoint");
            assert!(!next.exists() && !old.exists(), "case {i}: nothing left beside it");
            assert!(Search::checkpoint_matches(&dir, EXAMPLE, &cfg));
            let mut scorer = Planted { scored: 0, adversarial_validation: false };
            let mut resumed = Search::load(&dir, EXAMPLE, &cfg, space(), &mut scorer).unwrap();
            let result = resumed.run(Some(&dir), None, &mut |_| {}).unwrap().unwrap();
            assert_eq!(timeless(&result), timeless(&whole), "case {i}");
            drop(resumed);
        }
        // Starting over removes a checkpoint with whatever a cut-short save left beside it.
        let dir = base.join("fresh").join("checkpoint");
        let (next, old) = checkpoint_siblings(&dir).unwrap();
        copy_dir(&later, &next);
        copy_dir(&earlier, &old);
        remove_checkpoint(&dir).unwrap();
        assert!(!Search::has_checkpoint(&dir) && !next.exists() && !old.exists());
        // A path without a name of its own has no siblings to swap through.
        assert!(checkpoint_siblings(Path::new("/")).is_none());
        std::fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn a_checkpoint_of_other_data_is_not_resumed() {
        let dir = std::env::temp_dir().join(format!("reprompt-search-data-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let cfg = SearchConfig { data: Some(data_digest("a", "b", "model m")), ..config(Strategy::Random, 600) };
        let mut scorer = Planted { scored: 0, adversarial_validation: false };
        let mut first = Search::new(EXAMPLE, cfg.clone(), space(), &mut scorer).unwrap();
        assert_eq!(first.run(Some(&dir), Some(2), &mut |_| {}).unwrap(), Err(Stop::Interrupted));
        drop(first);
        assert!(Search::checkpoint_matches(&dir, EXAMPLE, &cfg));
        let edited = SearchConfig { data: Some(data_digest("a", "c", "model m")), ..cfg.clone() };
        assert!(!Search::checkpoint_matches(&dir, EXAMPLE, &edited), "validation data edited");
        let other_model = SearchConfig { data: Some(data_digest("a", "b", "model n")), ..cfg.clone() };
        assert!(!Search::checkpoint_matches(&dir, EXAMPLE, &other_model), "another model");
        let mut scorer = Planted { scored: 0, adversarial_validation: false };
        let err = Search::load(&dir, EXAMPLE, &edited, space(), &mut scorer).err().expect("refused").to_string();
        assert!(err.contains("data"), "{err}");
        // Results of splits of another size are refused, whatever the settings say.
        let mut scorer = Shrunk(Planted { scored: 0, adversarial_validation: false });
        let err = Search::load(&dir, EXAMPLE, &cfg, space(), &mut scorer).err().expect("refused").to_string();
        assert!(err.contains("another size"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_run_that_scores_calibrations_from_their_siblings_resumes_exactly() {
        let dir = std::env::temp_dir().join(format!("reprompt-search-rebias-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let cfg = config(Strategy::Ppo, 1500);
        let mut scorer = Leaning { scored: 0 };
        let mut whole = Search::new(EXAMPLE, cfg.clone(), space(), &mut scorer).unwrap();
        let expected = whole.run(None, None, &mut |_| {}).unwrap().unwrap();
        let whole_state = whole.state.clone();
        drop(whole);
        assert!(expected.derived > 0 && expected.derived == whole_state.derived);
        // What the model scored is what was spent; the derived results came on top.
        assert_eq!(scorer.scored, whole_state.spent);
        let timeless = |r: &SearchResult| SearchResult { seconds: 0.0, ..r.clone() };
        let mut scorer = Leaning { scored: 0 };
        let mut first = Search::new(EXAMPLE, cfg.clone(), space(), &mut scorer).unwrap();
        assert_eq!(first.run(Some(&dir), Some(4), &mut |_| {}).unwrap(), Err(Stop::Interrupted));
        drop(first);
        let mut scorer = Leaning { scored: 0 };
        let mut resumed = Search::load(&dir, EXAMPLE, &cfg, space(), &mut scorer).unwrap();
        let result = resumed.run(Some(&dir), None, &mut |_| {}).unwrap().unwrap();
        assert_eq!(timeless(&result), timeless(&expected));
        assert_eq!(resumed.state.records, whole_state.records, "the same results, derived ones included");
        drop(resumed);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn runs_are_deterministic_and_resume_exactly() {
        let dir = std::env::temp_dir().join(format!("reprompt-search-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        for strategy in [Strategy::Ppo, Strategy::Evolution] {
            let (whole, _) = run(strategy, 900, false);
            let timeless = |r: &SearchResult| SearchResult { seconds: 0.0, ..r.clone() };
            assert_eq!(timeless(&whole), timeless(&run(strategy, 900, false).0), "same seed, same run");
            let cfg = config(strategy, 900);
            let mut scorer = Planted { scored: 0, adversarial_validation: false };
            let mut first = Search::new(EXAMPLE, cfg.clone(), space(), &mut scorer).unwrap();
            assert_eq!(first.run(Some(&dir), Some(3), &mut |_| {}).unwrap(), Err(Stop::Interrupted));
            drop(first);
            assert!(Search::has_checkpoint(&dir));
            let mut scorer = Planted { scored: 0, adversarial_validation: false };
            let mut resumed = Search::load(&dir, EXAMPLE, &cfg, space(), &mut scorer).unwrap();
            let result = resumed.run(Some(&dir), None, &mut |_| {}).unwrap().unwrap();
            assert_eq!(timeless(&result), timeless(&whole), "{strategy:?}: resumed run differs");
            drop(resumed);
            // A checkpoint of another run is refused.
            let mut scorer = Planted { scored: 0, adversarial_validation: false };
            let other = SearchConfig { seed: 6, ..cfg.clone() };
            assert!(Search::load(&dir, EXAMPLE, &other, space(), &mut scorer).is_err());
            // So is a PPO run that started from another policy or replays differently; the
            // baselines have no policy, so those settings leave their runs alone.
            let warm = SearchConfig { warm_start: Some("0123456789abcdef".into()), ..cfg.clone() };
            let replay = SearchConfig { replay_bonus: 0.0, ..cfg };
            for other in [warm, replay] {
                assert_eq!(
                    Search::checkpoint_matches(&dir, EXAMPLE, &other),
                    strategy != Strategy::Ppo,
                    "{strategy:?}"
                );
            }
            std::fs::remove_dir_all(&dir).unwrap();
        }
    }

    #[test]
    fn checkpoints_of_an_older_edit_space_are_not_resumed() {
        let mut scorer = fresh_ranking();
        let mut state = Search::new(EXAMPLE, config(Strategy::Greedy, 1500), space(), &mut scorer).unwrap().state;
        assert_eq!(state.format, 3);
        assert!(resumable(&state).is_ok());
        for old in [1, 2] {
            state.format = old;
            assert!(resumable(&state).unwrap_err().contains("older reprompt"));
        }
        state.format = 4;
        assert!(resumable(&state).is_err());
    }
}
