//! Writing files so that a crash, a kill or a full disk never leaves one half written.

use std::io::Write;
use std::path::{Path, PathBuf};

/// Replaces the file at `path` with `bytes` in one step: written beside it under a temporary
/// name, flushed to the disk, then renamed over it. A reader (or a crash) sees the old file or
/// the new one, never a mix. A symbolic link stays a link (the file it names is replaced), and
/// the replaced file's permissions carry over.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let path = match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_symlink() => std::fs::canonicalize(path)?,
        _ => path.to_path_buf(),
    };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let temporary = dir.join(format!(".{name}.{}.partial", std::process::id()));
    let written = (|| {
        let mut file = std::fs::File::create(&temporary)?;
        file.write_all(bytes)?;
        if let Ok(old) = std::fs::metadata(&path) {
            file.set_permissions(old.permissions())?;
        }
        file.sync_all()?;
        std::fs::rename(&temporary, &path)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&temporary);
    }
    written?;
    sync_dir(&dir)
}

/// Flushes a directory's entries (renames, new files) to the disk; where directories cannot
/// be opened for that (Windows), the rename's own durability has to do.
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    if cfg!(unix) { std::fs::File::open(dir)?.sync_all() } else { Ok(()) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_is_replaced_whole_keeping_its_mode_and_links() {
        let dir = std::env::temp_dir().join(format!("reprompt-files-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("a.prompt");
        write_atomic(&file, b"first").unwrap();
        assert_eq!(std::fs::read(&file).unwrap(), b"first");
        #[cfg(unix)]
        {
            use std::os::unix::fs::{MetadataExt, PermissionsExt};
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o640)).unwrap();
            let before = std::fs::metadata(&file).unwrap().ino();
            let link = dir.join("link.prompt");
            std::os::unix::fs::symlink(&file, &link).unwrap();
            write_atomic(&link, b"second").unwrap();
            // A new file took the old one's place (no reader sees it half written), with its mode.
            let after = std::fs::metadata(&file).unwrap();
            assert_ne!(after.ino(), before);
            assert_eq!(after.permissions().mode() & 0o777, 0o640);
            assert!(std::fs::symlink_metadata(&link).unwrap().file_type().is_symlink());
            assert_eq!(std::fs::read(&link).unwrap(), b"second");
        }
        // Nothing else is left beside it.
        let mut names: Vec<String> =
            std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        names.sort();
        assert!(names.iter().all(|n| !n.contains("partial")), "{names:?}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
