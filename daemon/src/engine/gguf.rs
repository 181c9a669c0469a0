//! Reading a GGUF file: metadata, hyperparameters and tensors, with errors that name the file.

use std::collections::HashMap;
use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};

use candle_core::Device;
use candle_core::quantized::QTensor;
use candle_core::quantized::gguf_file::{Content, Value};

use super::error::{EngineError, Result, without_backtrace};

/// Longest context the engine sets up (the RoPE table is built for it at load).
pub const MAX_CONTEXT: usize = 32_768;

/// Llama-family hyperparameters from GGUF metadata.
#[derive(Clone, Debug, PartialEq)]
pub struct LlamaConfig {
    pub vocab_size: usize,
    pub hidden: usize,
    pub layers: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub ffn: usize,
    pub rms_eps: f32,
    pub rope_base: f32,
    pub context_length: usize,
}

/// An opened GGUF file: its metadata and a reader for its tensors.
pub struct GgufFile {
    pub path: PathBuf,
    pub content: Content,
    reader: BufReader<File>,
}

impl GgufFile {
    pub fn open(path: &Path) -> Result<Self> {
        let file = File::open(path).map_err(|source| EngineError::Io { path: path.to_path_buf(), source })?;
        let len = file.metadata().map(|m| m.len()).unwrap_or(0);
        let mut reader = BufReader::new(file);
        let unreadable = |e: &dyn std::fmt::Display| EngineError::Gguf {
            path: path.to_path_buf(),
            message: format!("{e} (is it a .gguf file, complete and not truncated?)"),
        };
        // The reader trusts the header (an alignment of 0 divides by zero): a file that makes
        // it panic is an unreadable file, not a crash.
        let content = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| Content::read(&mut reader)))
            .map_err(|_| unreadable(&"its header is malformed"))?
            .map_err(|e| unreadable(&without_backtrace(e)))?;
        // A truncated download parses its header but lacks tensor data. Sizes are counted
        // wide: a header's dimensions may multiply past any `usize`.
        let needed = content
            .tensor_infos
            .values()
            .map(|t| {
                let elements: u128 = t.shape.dims().iter().map(|&d| d as u128).product();
                let block = t.ggml_dtype.block_size().max(1) as u128;
                t.offset as u128 + elements / block * t.ggml_dtype.type_size() as u128
            })
            .max()
            .unwrap_or(0)
            + content.tensor_data_offset as u128;
        if (len as u128) < needed {
            return Err(EngineError::Gguf {
                path: path.to_path_buf(),
                message: format!("the file has {len} bytes but its tensors need {needed}: it is truncated"),
            });
        }
        Ok(Self { path: path.to_path_buf(), content, reader })
    }

    pub fn metadata(&self) -> &HashMap<String, Value> {
        &self.content.metadata
    }

    fn bad(&self, message: impl Into<String>) -> EngineError {
        EngineError::Gguf { path: self.path.clone(), message: message.into() }
    }

    pub fn get(&self, key: &str) -> Result<&Value> {
        self.content.metadata.get(key).ok_or_else(|| self.bad(format!("metadata key `{key}` is missing")))
    }

    pub fn get_u32(&self, key: &str) -> Result<u32> {
        self.get(key)?.to_u32().map_err(|e| self.bad(format!("`{key}`: {}", without_backtrace(e))))
    }

    pub fn get_f32(&self, key: &str) -> Result<f32> {
        self.get(key)?.to_f32().map_err(|e| self.bad(format!("`{key}`: {}", without_backtrace(e))))
    }

    pub fn get_str(&self, key: &str) -> Result<&str> {
        self.get(key)?
            .to_string()
            .map(String::as_str)
            .map_err(|e| self.bad(format!("`{key}`: {}", without_backtrace(e))))
    }

    pub fn tensor(&mut self, name: &str, device: &Device) -> Result<QTensor> {
        if !self.content.tensor_infos.contains_key(name) {
            return Err(self.bad(format!("tensor `{name}` is missing")));
        }
        self.content
            .tensor(&mut self.reader, name, device)
            .map_err(|e| self.bad(format!("tensor `{name}`: {}", without_backtrace(e))))
    }

    pub fn has_tensor(&self, name: &str) -> bool {
        self.content.tensor_infos.contains_key(name)
    }

    /// The llama hyperparameters; refuses other architectures.
    pub fn llama_config(&self) -> Result<LlamaConfig> {
        let arch = self.get_str("general.architecture")?;
        if arch != "llama" {
            return Err(EngineError::Unsupported {
                path: self.path.clone(),
                what: "architecture",
                found: arch.to_string(),
                supported: "llama-architecture GGUF models (SmolLM2, Llama)",
            });
        }
        let hidden = self.get_u32("llama.embedding_length")? as usize;
        let heads = self.get_u32("llama.attention.head_count")? as usize;
        let kv_heads = self.get_u32("llama.attention.head_count_kv").unwrap_or(heads as u32) as usize;
        if heads == 0 || kv_heads == 0 || !hidden.is_multiple_of(heads) || !heads.is_multiple_of(kv_heads) {
            return Err(self.bad(format!("inconsistent heads: hidden {hidden}, heads {heads}, kv heads {kv_heads}")));
        }
        if self.content.metadata.contains_key("llama.expert_count") {
            return Err(EngineError::Unsupported {
                path: self.path.clone(),
                what: "model kind",
                found: "mixture of experts".into(),
                supported: "dense llama models",
            });
        }
        let vocab_size = match self.get_u32("llama.vocab_size") {
            Ok(v) => v as usize,
            Err(_) => self
                .get("tokenizer.ggml.tokens")?
                .to_vec()
                .map(Vec::len)
                .map_err(|e| self.bad(without_backtrace(e).to_string()))?,
        };
        let layers = self.get_u32("llama.block_count")? as usize;
        let ffn = self.get_u32("llama.feed_forward_length")? as usize;
        // Sizes are allocated from these numbers before any weight is read: they must be the
        // ones the file's tensors have (which the file's length bounds), not just claimed.
        let blocks = self
            .content
            .tensor_infos
            .keys()
            .filter_map(|name| name.strip_prefix("blk.")?.split_once('.')?.0.parse::<usize>().ok())
            .max()
            .map_or(0, |last| last + 1);
        if layers != blocks {
            return Err(self.bad(format!("`llama.block_count` is {layers} but the file has {blocks} blocks")));
        }
        for (name, expected) in [("token_embd.weight", [vocab_size, hidden]), ("blk.0.ffn_up.weight", [ffn, hidden])] {
            match self.content.tensor_infos.get(name) {
                Some(t) if t.shape.dims() == expected => {}
                Some(t) => {
                    return Err(self.bad(format!(
                        "tensor `{name}` has shape {:?}, the metadata says {expected:?}",
                        t.shape.dims()
                    )));
                }
                None if layers == 0 && name.starts_with("blk.") => {}
                None => return Err(self.bad(format!("tensor `{name}` is missing"))),
            }
        }
        Ok(LlamaConfig {
            vocab_size,
            hidden,
            layers,
            heads,
            kv_heads,
            head_dim: hidden / heads,
            ffn,
            rms_eps: self.get_f32("llama.attention.layer_norm_rms_epsilon").unwrap_or(1e-5),
            rope_base: self.get_f32("llama.rope.freq_base").unwrap_or(10_000.0),
            context_length: (self.get_u32("llama.context_length").unwrap_or(2048) as usize).min(MAX_CONTEXT),
        })
    }
}
