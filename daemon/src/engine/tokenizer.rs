//! The tokenizer, built from GGUF metadata (`tokenizer.ggml.*`) with the `tokenizers` crate.
//!
//! Byte-level BPE with the pre-tokenizer the GGUF names. Only pre-tokenizers whose exact
//! behaviour we know are accepted (`smollm`, `starcoder`: digits split one by one, then GPT-2
//! byte-level without a prefix space); anything else is refused rather than guessed, because a
//! wrong guess silently shifts every token id.

use std::path::Path;

use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::BPE;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::{AddedToken, Tokenizer};

use super::error::{EngineError, Result};
use super::gguf::GgufFile;

/// GGUF token types: 3 = control, 4 = user-defined (both are special tokens).
const CONTROL: i64 = 3;
const USER_DEFINED: i64 = 4;

pub struct TextTokenizer {
    inner: Tokenizer,
    pub bos: Option<u32>,
    pub eos: u32,
    pub vocab_size: usize,
    /// Ids of the special tokens (never produced by plain text).
    specials: Vec<u32>,
}

impl std::fmt::Debug for TextTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TextTokenizer").field("vocab_size", &self.vocab_size).field("eos", &self.eos).finish()
    }
}

fn unsupported(path: &Path, what: &'static str, found: &str) -> EngineError {
    EngineError::Unsupported {
        path: path.to_path_buf(),
        what,
        found: found.to_string(),
        supported: "GPT-2 byte-level BPE tokenizers with the `smollm` or `starcoder` pre-tokenizer",
    }
}

impl TextTokenizer {
    pub fn from_gguf(gguf: &GgufFile) -> Result<Self> {
        let path = gguf.path.as_path();
        let model = gguf.get_str("tokenizer.ggml.model")?;
        if model != "gpt2" {
            return Err(unsupported(path, "tokenizer model", model));
        }
        let pre = gguf.get_str("tokenizer.ggml.pre").unwrap_or("default");
        if !matches!(pre, "smollm" | "starcoder") {
            return Err(unsupported(path, "pre-tokenizer", pre));
        }
        let bad = |m: String| EngineError::Gguf { path: path.to_path_buf(), message: m };
        let tokens: Vec<String> = gguf
            .get("tokenizer.ggml.tokens")?
            .to_vec()
            .map_err(|e| bad(e.to_string()))?
            .iter()
            .map(|v| v.to_string().cloned())
            .collect::<candle_core::Result<_>>()
            .map_err(|e| bad(format!("tokenizer.ggml.tokens: {e}")))?;
        let merges: Vec<(String, String)> = gguf
            .get("tokenizer.ggml.merges")?
            .to_vec()
            .map_err(|e| bad(e.to_string()))?
            .iter()
            .map(|v| {
                let merge = v.to_string().map_err(|e| bad(e.to_string()))?;
                merge
                    .split_once(' ')
                    .map(|(a, b)| (a.to_string(), b.to_string()))
                    .ok_or_else(|| bad(format!("bad merge `{merge}`")))
            })
            .collect::<Result<_>>()?;
        let types: Vec<i64> = match gguf.get("tokenizer.ggml.token_type") {
            Ok(v) => v
                .to_vec()
                .map_err(|e| bad(e.to_string()))?
                .iter()
                .map(|t| t.to_i32().map(i64::from))
                .collect::<candle_core::Result<_>>()
                .map_err(|e| bad(format!("tokenizer.ggml.token_type: {e}")))?,
            Err(_) => vec![1; tokens.len()],
        };
        if types.len() != tokens.len() {
            return Err(bad(format!("{} token types for {} tokens", types.len(), tokens.len())));
        }
        let vocab: tokenizers::models::bpe::Vocab =
            tokens.iter().enumerate().map(|(i, t)| (t.clone(), i as u32)).collect();
        let bpe = BPE::builder()
            .vocab_and_merges(vocab, merges)
            .build()
            .map_err(|e| EngineError::Tokenizer(e.to_string()))?;
        let mut inner = Tokenizer::new(bpe);
        inner.with_pre_tokenizer(Some(Sequence::new(vec![
            Digits::new(true).into(),
            ByteLevel::new(false, true, true).into(),
        ])));
        inner.with_decoder(Some(ByteLevelDecoder::new(false, true, true)));
        let specials: Vec<u32> = types
            .iter()
            .enumerate()
            .filter(|(_, t)| matches!(**t, CONTROL | USER_DEFINED))
            .map(|(i, _)| i as u32)
            .collect();
        inner
            .add_special_tokens(specials.iter().map(|&i| AddedToken::from(tokens[i as usize].clone(), true)))
            .map_err(|e| EngineError::Tokenizer(e.to_string()))?;
        let eos = gguf.get_u32("tokenizer.ggml.eos_token_id")?;
        let bos = gguf.get_u32("tokenizer.ggml.bos_token_id").ok();
        Ok(Self { inner, bos, eos, vocab_size: tokens.len(), specials })
    }

    /// Token ids of `text`; special-token text (`<|im_start|>`) maps to its special id.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let encoding = self.inner.encode(text, false).map_err(|e| EngineError::Tokenizer(e.to_string()))?;
        Ok(encoding.get_ids().to_vec())
    }

    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.inner.decode(ids, false).map_err(|e| EngineError::Tokenizer(e.to_string()))
    }

    pub fn is_special(&self, id: u32) -> bool {
        self.specials.contains(&id)
    }

    /// The text of one token (for showing which words a model ranks highest).
    pub fn token_text(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }
}
