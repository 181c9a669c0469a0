//! The tokenizer, built from GGUF metadata (`tokenizer.ggml.*`) with the `tokenizers` crate.
//!
//! Byte-level BPE with the pre-tokenizer the GGUF names. Only pre-tokenizers whose exact
//! behaviour we know are accepted (`smollm`, `starcoder`: digits split one by one, then GPT-2
//! byte-level without a prefix space); anything else is refused rather than guessed, because a
//! wrong guess silently shifts every token id.
//!
//! Prompt and dataset text is untrusted: spelled inside a model input it must stay text, never
//! become a control token (`<|im_end|>` in a review would otherwise end the turn and forge the
//! next). The chat template's own markup is the only place special tokens come from: content is
//! marked as [`literal`] (between two private-use characters) where it enters a model input, and
//! [`TextTokenizer::encode`] maps special-token text to its id only outside such stretches.

use std::path::Path;

use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::BPE;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::{AddedToken, Tokenizer};

use super::error::{EngineError, Result, without_backtrace};
use super::gguf::GgufFile;

/// GGUF token types: 3 = control, 4 = user-defined (both are special tokens).
const CONTROL: i64 = 3;
const USER_DEFINED: i64 = 4;

/// Opens a stretch of literal text in a model input (see [`literal`]).
pub const LITERAL_OPEN: char = '\u{E000}';
/// Closes a stretch of literal text.
pub const LITERAL_CLOSE: char = '\u{E001}';

/// `text` marked as literal: inside a model input it is tokenized as plain text even where it
/// spells a special token. Marks it carries itself are dropped, so it cannot end its stretch.
/// Empty text stays empty, so a chat template that tests a turn for content still sees none.
pub fn literal(text: &str) -> String {
    if text.chars().all(is_mark) {
        return String::new();
    }
    let mut out = String::with_capacity(text.len() + 2 * LITERAL_OPEN.len_utf8());
    out.push(LITERAL_OPEN);
    out.extend(text.chars().filter(|c| !is_mark(*c)));
    out.push(LITERAL_CLOSE);
    out
}

/// A model input as the model reads it (and people see it): without the literal marks.
pub fn unmarked(text: &str) -> String {
    text.chars().filter(|c| !is_mark(*c)).collect()
}

fn is_mark(c: char) -> bool {
    c == LITERAL_OPEN || c == LITERAL_CLOSE
}

pub struct TextTokenizer {
    /// Decodes; encodes plain text (special-token text stays text).
    inner: Tokenizer,
    /// The special tokens' texts and ids, longest first (the first match is the longest).
    special_texts: Vec<(String, u32)>,
    pub bos: Option<u32>,
    pub eos: u32,
    pub vocab_size: usize,
    /// Ids of the special tokens (never produced by plain text).
    specials: Vec<u32>,
    /// Tokens that end a generation (see [`TextTokenizer::ends_generation`]).
    end_of_generation: Vec<u32>,
}

/// Special tokens that end a text or a turn in the chat formats we know, beside `eos`.
const END_OF_GENERATION: [&str; 5] = ["<|endoftext|>", "<|im_end|>", "<|eot_id|>", "<end_of_turn>", "</s>"];

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
            .map_err(|e| bad(without_backtrace(e).to_string()))?
            .iter()
            .map(|v| v.to_string().cloned())
            .collect::<candle_core::Result<_>>()
            .map_err(|e| bad(format!("tokenizer.ggml.tokens: {}", without_backtrace(e))))?;
        let merges: Vec<(String, String)> = gguf
            .get("tokenizer.ggml.merges")?
            .to_vec()
            .map_err(|e| bad(without_backtrace(e).to_string()))?
            .iter()
            .map(|v| {
                let merge = v.to_string().map_err(|e| bad(without_backtrace(e).to_string()))?;
                merge
                    .split_once(' ')
                    .map(|(a, b)| (a.to_string(), b.to_string()))
                    .ok_or_else(|| bad(format!("bad merge `{merge}`")))
            })
            .collect::<Result<_>>()?;
        let types: Vec<i64> = match gguf.get("tokenizer.ggml.token_type") {
            Ok(v) => v
                .to_vec()
                .map_err(|e| bad(without_backtrace(e).to_string()))?
                .iter()
                .map(|t| t.to_i32().map(i64::from))
                .collect::<candle_core::Result<_>>()
                .map_err(|e| bad(format!("tokenizer.ggml.token_type: {}", without_backtrace(e))))?,
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
        // Registered so that decoding writes them out whole; encoding never matches them
        // (`encode_special_tokens`): [`TextTokenizer::encode`] finds them itself, outside literal
        // stretches only.
        inner
            .add_special_tokens(specials.iter().map(|&i| AddedToken::from(tokens[i as usize].clone(), true)))
            .map_err(|e| EngineError::Tokenizer(e.to_string()))?;
        inner.set_encode_special_tokens(true);
        let mut special_texts: Vec<(String, u32)> =
            specials.iter().map(|&i| (tokens[i as usize].clone(), i)).filter(|(t, _)| !t.is_empty()).collect();
        special_texts.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then(a.1.cmp(&b.1)));
        let eos = gguf.get_u32("tokenizer.ggml.eos_token_id")?;
        let bos = gguf.get_u32("tokenizer.ggml.bos_token_id").ok();
        let end_of_generation = END_OF_GENERATION
            .iter()
            .filter_map(|name| special_texts.iter().find(|(t, _)| t == name).map(|&(_, id)| id))
            .chain([eos])
            .collect();
        Ok(Self { inner, special_texts, bos, eos, vocab_size: tokens.len(), specials, end_of_generation })
    }

    /// Token ids of a model input: special-token text (`<|im_start|>`) maps to its special id
    /// outside [`literal`] stretches and stays text inside them; the marks themselves are not
    /// read. The input is cut at those special tokens and each piece between them is tokenized
    /// whole, as the tokenizer would cut it at its added tokens.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let mut ids = Vec::new();
        let mut piece = String::new();
        let mut inside = false;
        let mut rest = text;
        while let Some(c) = rest.chars().next() {
            let special =
                if inside { None } else { self.special_texts.iter().find(|(t, _)| rest.starts_with(t.as_str())) };
            if let Some((t, id)) = special {
                self.encode_plain(&piece, &mut ids)?;
                piece.clear();
                ids.push(*id);
                rest = &rest[t.len()..];
                continue;
            }
            match c {
                LITERAL_OPEN => inside = true,
                LITERAL_CLOSE => inside = false,
                c => piece.push(c),
            }
            rest = &rest[c.len_utf8()..];
        }
        self.encode_plain(&piece, &mut ids)?;
        Ok(ids)
    }

    /// Token ids of untrusted text on its own (an answer, a label word): all of it plain text.
    pub fn encode_literal(&self, text: &str) -> Result<Vec<u32>> {
        let mut ids = Vec::new();
        self.encode_plain(&unmarked(text), &mut ids)?;
        Ok(ids)
    }

    fn encode_plain(&self, text: &str, ids: &mut Vec<u32>) -> Result<()> {
        if !text.is_empty() {
            let encoding = self.inner.encode(text, false).map_err(|e| EngineError::Tokenizer(e.to_string()))?;
            ids.extend_from_slice(encoding.get_ids());
        }
        Ok(())
    }

    /// Whether generating `id` ends a generation: the end-of-sequence token, or another special
    /// token that ends a turn or a text (`<|endoftext|>` where `eos` is `<|im_end|>`).
    pub fn ends_generation(&self, id: u32) -> bool {
        self.end_of_generation.contains(&id)
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
