//! Where `optimize` writes its winner: a file the prompt's data is found from, that nobody
//! edited during the run, and a variant file only where reprompt wrote it before.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use reprompt_protocol::check::check_document;
use reprompt_protocol::{Severity, parse};

use crate::files::write_atomic;

/// Refuses `target` as the place of the prompt `text` read from `source` (which has no errors:
/// [`read_prompt`]) where the files it names relative to itself (data, partials, a model file)
/// are not found from there, or where its data would be other files than the ones it was
/// scored on, and where it names a directory.
pub fn check_target(target: &Path, text: &str, source: &Path) -> anyhow::Result<()> {
    let refuse = |why: &str| {
        anyhow::anyhow!(
            "cannot write the optimized prompt to {}: {why} (write it beside {}, or name its files by absolute paths)",
            target.display(),
            source.display()
        )
    };
    if target.is_dir() || target.as_os_str().to_string_lossy().ends_with(['/', std::path::MAIN_SEPARATOR]) {
        anyhow::bail!("cannot write the optimized prompt to {}: it names a directory, not a file", target.display());
    }
    let doc = parse(text, Some(target));
    if let Some(e) = check_document(&doc, target).into_iter().find(|d| d.severity == Severity::Error) {
        return Err(refuse(&e.message));
    }
    for (split, _) in doc.settings.splits() {
        let there = doc.settings.split_path(split, target).and_then(|p| p.canonicalize().ok());
        let here = doc.settings.split_path(split, source).and_then(|p| p.canonicalize().ok());
        if there != here {
            let there = there.map_or_else(String::new, |p| p.display().to_string());
            return Err(refuse(&format!("`reprompt.{split}` would name {there}, not the file it was scored on")));
        }
    }
    Ok(())
}

/// Where reprompt notes what it wrote to the variant files of `dir`: file name → SHA-256.
fn written_record(dir: &Path) -> PathBuf {
    dir.join(".reprompt").join("written.json")
}

fn read_written(dir: &Path) -> BTreeMap<String, String> {
    std::fs::read(written_record(dir)).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default()
}

fn parts(target: &Path) -> (PathBuf, String) {
    let dir = target.parent().map_or_else(PathBuf::new, Path::to_path_buf);
    (dir, target.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default())
}

fn same_file(a: &Path, b: &Path) -> bool {
    a == b || matches!((a.canonicalize(), b.canonicalize()), (Ok(x), Ok(y)) if x == y)
}

/// Before a run: whether the winner may go to `target`, and what `target` holds now (`None`:
/// no file yet), which it must still hold when the winner is written. The prompt's own file
/// may always be rewritten (what it holds is `text`, as read for the run); another existing
/// file only where reprompt wrote it and nobody edited it since, or with `force`: a variant
/// tuned by hand is never replaced silently.
pub fn claim_target(target: &Path, source: &Path, text: &str, force: bool) -> anyhow::Result<Option<Vec<u8>>> {
    if same_file(target, source) {
        // What the run optimizes is what must still be there (not a later read of the file).
        return Ok(Some(text.as_bytes().to_vec()));
    }
    let current = match std::fs::read(target) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("reading {}", target.display())),
    };
    if !force {
        let (dir, name) = parts(target);
        if read_written(&dir).get(&name) != Some(&reprompt_protocol::hash::sha256_hex(&current)) {
            bail!(
                "{} exists and is not what reprompt last wrote there (edited by hand?): pass --force to replace \
                 it, or --output to write elsewhere",
                target.display()
            );
        }
    }
    Ok(Some(current))
}

/// Writes an optimized prompt after checking it again: it must parse without errors, find its
/// files from `target` as it does from `source` ([`check_target`]), and `target` must hold what
/// it held when the run started (`before`, from [`claim_target`]): edits made meanwhile are
/// never overwritten. The file is replaced in one step ([`write_atomic`]).
pub fn write_prompt(target: &Path, text: &str, source: &Path, before: Option<&[u8]>) -> anyhow::Result<()> {
    let doc = parse(text, Some(target));
    if let Some(e) = doc.diagnostics.iter().find(|d| d.severity == Severity::Error) {
        bail!("refusing to write an invalid prompt ({})", e.message);
    }
    check_target(target, text, source)?;
    let now = std::fs::read(target).ok();
    if now.as_deref() != before {
        bail!("{} changed during the run: it is left as it is", target.display());
    }
    write_atomic(target, text.as_bytes()).with_context(|| format!("writing {}", target.display()))?;
    if !same_file(target, source) {
        let (dir, name) = parts(target);
        let mut written = read_written(&dir);
        written.insert(name, reprompt_protocol::hash::sha256_hex(text.as_bytes()));
        let record = written_record(&dir);
        // The prompt is written: a record that cannot be is worth a warning, not a failure (the
        // next run then asks for --force).
        if let Err(e) = std::fs::create_dir_all(record.parent().unwrap_or(&dir))
            .and_then(|()| write_atomic(&record, &serde_json::to_vec_pretty(&written)?))
        {
            eprintln!("warning: cannot note what was written in {}: {e}", record.display());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example's data under `ROOT/sentiment/data`; returns that directory and the prompt text.
    fn example_copy(root: &Path) -> (PathBuf, String) {
        let _ = std::fs::remove_dir_all(root);
        let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/sentiment");
        let beside = root.join("sentiment");
        std::fs::create_dir_all(beside.join("data")).unwrap();
        for name in ["train.tsv", "dev.tsv", "test.tsv"] {
            std::fs::copy(examples.join("data").join(name), beside.join("data").join(name)).unwrap();
        }
        (beside, std::fs::read_to_string(examples.join("sentiment.prompt")).unwrap())
    }

    #[test]
    fn a_prompt_edited_during_the_run_or_by_hand_is_never_overwritten() {
        let root = std::env::temp_dir().join(format!("reprompt-claim-{}", std::process::id()));
        let (beside, text) = example_copy(&root);
        let source = beside.join("sentiment.prompt");
        std::fs::write(&source, &text).unwrap();
        let better = text.replace("one word", "a single word");

        // In place: edits made while the run went on are kept.
        let before = claim_target(&source, &source, &text, false).unwrap();
        let edited = format!("{text}Be brief.\n");
        std::fs::write(&source, &edited).unwrap();
        let err = write_prompt(&source, &better, &source, before.as_deref()).unwrap_err().to_string();
        assert!(err.contains("changed during the run"), "{err}");
        assert_eq!(std::fs::read_to_string(&source).unwrap(), edited);
        std::fs::write(&source, &text).unwrap();
        let before = claim_target(&source, &source, &text, false).unwrap();
        write_prompt(&source, &better, &source, before.as_deref()).unwrap();
        assert_eq!(std::fs::read_to_string(&source).unwrap(), better);

        // A variant written by hand is refused before any run, unless forced.
        let variant = beside.join("sentiment.optimized.prompt");
        std::fs::write(&variant, "mine").unwrap();
        let err = claim_target(&variant, &source, &text, false).unwrap_err().to_string();
        assert!(err.contains("--force"), "{err}");
        assert_eq!(claim_target(&variant, &source, &text, true).unwrap().as_deref(), Some(&b"mine"[..]));
        // One reprompt wrote, untouched since, may be replaced by the next run.
        std::fs::remove_file(&variant).unwrap();
        assert_eq!(claim_target(&variant, &source, &text, false).unwrap(), None);
        write_prompt(&variant, &text, &source, None).unwrap();
        assert_eq!(claim_target(&variant, &source, &text, false).unwrap().as_deref(), Some(text.as_bytes()));
        // A file that appeared during the run is not overwritten either.
        std::fs::remove_file(&variant).unwrap();
        std::fs::write(&variant, "made meanwhile").unwrap();
        assert!(write_prompt(&variant, &text, &source, None).is_err());
        assert_eq!(std::fs::read_to_string(&variant).unwrap(), "made meanwhile");
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn an_optimized_prompt_is_written_only_where_its_data_is_found() {
        let root = std::env::temp_dir().join(format!("reprompt-write-{}", std::process::id()));
        let (beside, text) = example_copy(&root);

        let source = beside.join("sentiment.prompt");
        let variant = beside.join("sentiment.optimized.prompt");
        write_prompt(&variant, &text, &source, None).unwrap();
        assert_eq!(std::fs::read_to_string(&variant).unwrap(), text);

        // Elsewhere its `data/…` paths point at nothing: refused, nothing written.
        let elsewhere = root.join("elsewhere");
        std::fs::create_dir_all(&elsewhere).unwrap();
        let err = write_prompt(&elsewhere.join("sentiment.prompt"), &text, &source, None).unwrap_err().to_string();
        assert!(err.contains("no file at") && err.contains("write it beside"), "{err}");
        assert!(!elsewhere.join("sentiment.prompt").exists());

        // Nor where it would find other data than it was scored on.
        std::fs::create_dir_all(elsewhere.join("data")).unwrap();
        for name in ["train.tsv", "dev.tsv", "test.tsv"] {
            std::fs::copy(beside.join("data").join(name), elsewhere.join("data").join(name)).unwrap();
        }
        let err = check_target(&elsewhere.join("sentiment.prompt"), &text, &source).unwrap_err().to_string();
        assert!(err.contains("not the file it was scored on"), "{err}");
        // In place is always fine.
        check_target(&source, &text, &source).unwrap();
        // A directory is no file to write.
        let err = check_target(&beside, &text, &source).unwrap_err().to_string();
        assert!(err.contains("it names a directory"), "{err}");
        let err = check_target(&root.join("not-yet/"), &text, &source).unwrap_err().to_string();
        assert!(err.contains("it names a directory"), "{err}");

        // An invalid prompt is refused too.
        let broken = text.replacen("{{sentence}}", "{{#if}}", 1);
        assert!(write_prompt(&beside.join("broken.prompt"), &broken, &source, None).is_err());
        std::fs::remove_dir_all(&root).unwrap();
    }
}
