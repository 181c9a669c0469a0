//! Content hashes of prompts: stable across platforms, so evaluations can be keyed by them.
//!
//! The hash covers the text with line endings normalized to `\n` and a leading byte-order mark
//! removed, so the same prompt checked out on Windows and Linux hashes the same.

use sha2::{Digest, Sha256};

/// Hex SHA-256 of `text` after normalizing line endings (`\r\n` and lone `\r` → `\n`) and
/// dropping a leading byte-order mark.
pub fn content_hash(text: &str) -> String {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut hasher = Sha256::new();
    let mut rest = text;
    while let Some(i) = rest.find('\r') {
        hasher.update(&rest.as_bytes()[..i]);
        hasher.update(b"\n");
        rest = &rest[i + 1..];
        if let Some(after) = rest.strip_prefix('\n') {
            rest = after;
        }
    }
    hasher.update(rest.as_bytes());
    to_hex(&hasher.finalize())
}

/// Hex SHA-256 of raw bytes.
pub fn sha256_hex(bytes: &[u8]) -> String {
    to_hex(&Sha256::digest(bytes))
}

/// Lower-case hex of bytes.
pub fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_endings_and_bom_do_not_change_the_hash() {
        let unix = content_hash("a\nb\n");
        assert_eq!(unix, content_hash("a\r\nb\r\n"));
        assert_eq!(unix, content_hash("a\rb\r"));
        assert_eq!(unix, content_hash("\u{feff}a\nb\n"));
        assert_ne!(unix, content_hash("a\nb"));
        // pinned: sha256("a\nb\n"), the same on every platform
        assert_eq!(unix, "911169ddaaf146aff539f58c26c489af3b892dff0fe283c1c264c65ae5aa59a2");
    }
}
