//! Our llama forward pass, built from candle ops (candle's `quantized_llama` was the reference).
//!
//! What the upstream model lacks and reprompt needs: batches of rows that share a cached prefix
//! (right-padded, so the causal mask is the only mask needed), decoding steps of such rows, each
//! at its own position and masked from its padding, into caches with room for the tokens to
//! come, hidden states and logits at any positions, and two weight forms — dense f32 (fastest
//! for prompt processing: real GEMMs) and quantized (fastest for one-token decoding: fewer bytes
//! to stream). GQA attention groups the query heads of each KV head into one matmul instead of
//! copying K and V per head.

use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{D, DType, Device, Module, Tensor};

use super::error::Result;
use super::gguf::{GgufFile, LlamaConfig};

/// Which weight form a forward pass uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Dense f32 weights (prompt processing, scoring).
    Dense,
    /// Quantized weights as stored in the GGUF (one-token decoding).
    Quantized,
}

/// Which weight forms to keep in memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Weights {
    /// Only the quantized weights: smallest, and bit-for-bit the upstream computation.
    Quantized,
    /// Only dense f32 weights.
    Dense,
    /// Both: dense for prompts, quantized for decoding (the default).
    Both,
}

/// A linear layer in one or both forms; `dense` is stored transposed, `(in, out)`, contiguous.
#[derive(Clone, Debug)]
struct Linear {
    quant: Option<QMatMul>,
    dense: Option<Tensor>,
}

impl Linear {
    fn forward(&self, x: &Tensor, mode: Mode) -> Result<Tensor> {
        match (mode, &self.quant, &self.dense) {
            (Mode::Dense, _, Some(w)) | (Mode::Quantized, None, Some(w)) => Ok(x.matmul(w)?),
            (_, Some(q), _) => Ok(q.forward(x)?),
            (_, None, None) => unreachable!("a linear layer always has one form"),
        }
    }
}

#[derive(Clone, Debug)]
struct Layer {
    attn_norm: Tensor,
    ffn_norm: Tensor,
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    gate: Linear,
    up: Linear,
    down: Linear,
    /// `[q | k | v]` fused, `(hidden, q + 2·kv)`, for dense passes.
    qkv_dense: Option<Tensor>,
    /// `[gate | up]` fused, `(hidden, 2·ffn)`.
    gate_up_dense: Option<Tensor>,
}

/// Keys and values of a processed prefix, per layer: `(batch, kv_heads, len, head_dim)`.
#[derive(Clone, Debug)]
pub struct KvCache {
    pub layers: Vec<(Tensor, Tensor)>,
    pub len: usize,
}

impl KvCache {
    /// Bytes held (f32 keys and values).
    pub fn bytes(&self) -> usize {
        self.layers.iter().map(|(k, v)| (k.elem_count() + v.elem_count()) * 4).sum()
    }
}

/// Keys and values of rows being decoded, in buffers `(batch, kv_heads, capacity, head_dim)`
/// with room for the tokens still to come: a step writes its token's keys and values into the
/// next slot instead of copying the whole cache into a new one (at a few hundred slots and a
/// dozen rows that copy cost more than the step's arithmetic).
#[derive(Debug)]
pub struct DecodeCache {
    layers: Vec<(Tensor, Tensor)>,
    /// Slots filled.
    pub len: usize,
    capacity: usize,
}

impl DecodeCache {
    /// The cache of a prompt pass, with room for `room` more slots; each layer of the pass's
    /// cache is freed once copied, so the two are never whole side by side.
    pub fn new(cache: KvCache, room: usize) -> Result<Self> {
        let (len, capacity) = (cache.len, cache.len + room);
        let with_room = |t: Tensor| -> Result<Tensor> {
            let (batch, heads, _, dim) = t.dims4()?;
            let buffer = Tensor::zeros((batch, heads, capacity, dim), t.dtype(), t.device())?;
            buffer.slice_set(&t.contiguous()?, 2, 0)?;
            Ok(buffer)
        };
        let layers =
            cache.layers.into_iter().map(|(k, v)| Ok((with_room(k)?, with_room(v)?))).collect::<Result<_>>()?;
        Ok(Self { layers, len, capacity })
    }

    /// The cache of the given rows of its batch, in that order. Only the filled slots are
    /// copied: the room after them is fresh zeroed memory, which on the CPU the system maps
    /// only as steps write to it.
    pub fn select(&self, rows: &[usize]) -> Result<Self> {
        let Some((first, _)) = self.layers.first() else {
            return Ok(Self { layers: Vec::new(), len: self.len, capacity: self.capacity });
        };
        let index = Tensor::from_vec(rows.iter().map(|&r| r as u32).collect::<Vec<u32>>(), rows.len(), first.device())?;
        let capacity = self.capacity;
        let pick = |t: &Tensor| -> Result<Tensor> {
            let (_, heads, _, dim) = t.dims4()?;
            let buffer = Tensor::zeros((rows.len(), heads, capacity, dim), t.dtype(), t.device())?;
            buffer.slice_set(&t.narrow(2, 0, self.len)?.contiguous()?.index_select(&index, 0)?, 2, 0)?;
            Ok(buffer)
        };
        let layers = self.layers.iter().map(|(k, v)| Ok((pick(k)?, pick(v)?))).collect::<Result<_>>()?;
        Ok(Self { layers, len: self.len, capacity })
    }
}

/// What a pass attends to before its own tokens.
#[derive(Clone, Copy)]
enum Past<'a> {
    /// Nothing, or a prefix's cache (copied into the pass's own cache).
    Prefix(Option<&'a KvCache>),
    /// Rows being decoded: one token each, written into the cache's next slot.
    Decode(&'a DecodeCache, Step<'a>),
}

/// One decoding step of rows whose caches hold padding: each row's position, and the additive
/// bias over its cache slots (0 for a key, −∞ for padding), `(batch, 1, 1, slots + 1)`.
#[derive(Clone, Copy)]
struct Step<'a> {
    positions: &'a [usize],
    bias: Option<&'a Tensor>,
}

pub struct Model {
    pub config: LlamaConfig,
    pub device: Device,
    embed: Tensor,
    output: Linear,
    /// Whether the output head is the embedding matrix.
    tied: bool,
    layers: Vec<Layer>,
    final_norm: Tensor,
    cos: Tensor,
    sin: Tensor,
    pub weights: Weights,
    /// Attention scores (f32) above which a pass splits its query positions into blocks, and
    /// the most one such block computes: [`ATTENTION_SPLIT_SCORES`], [`ATTENTION_BLOCK_SCORES`].
    pub attention_blocks: (usize, usize),
}

/// Attention scores of a pass (batch · heads · query positions · keys) above which its query
/// positions are split into blocks: 8 Mi floats (32 MiB). A pass's scores and their scaled,
/// masked and softmaxed copies are fresh allocations each, and at this size each is its own
/// memory map whose pages the kernel zeroes at first touch: a 2000-token row in one block made
/// 580 MB of them per layer and spent more time in page faults than in arithmetic (9.5 s for
/// one row, 3.3 s in blocks, BENCHMARKS.md). Scoring batches of a few hundred tokens stay far
/// below it and compute exactly as before.
pub const ATTENTION_SPLIT_SCORES: usize = 8 << 20;

/// The most attention scores one block of query positions computes (2 Mi floats, 8 MiB): small
/// enough for the allocator to reuse its memory. A block attends to the keys up to its last
/// position only, so a long row also skips the masked half of the work.
pub const ATTENTION_BLOCK_SCORES: usize = 2 << 20;

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model").field("config", &self.config).field("weights", &self.weights).finish_non_exhaustive()
    }
}

fn load_linear(gguf: &mut GgufFile, name: &str, weights: Weights, device: &Device) -> Result<Linear> {
    let q = gguf.tensor(name, device)?;
    let full = match weights {
        Weights::Quantized => None,
        _ => Some(q.dequantize(device)?),
    };
    let quant = match (weights, &full) {
        (Weights::Dense, _) => None,
        // Decoding streams every weight once per token: Q8_0 has SIMD dot products on x86 where
        // the 4-bit formats fall back to scalar code, so requantize (lossless for Q8_0 files).
        (Weights::Both, Some(full)) if decode_format(q.dtype()) != q.dtype() => {
            Some(QMatMul::from_qtensor(QTensor::quantize(full, decode_format(q.dtype()))?)?)
        }
        _ => Some(QMatMul::from_qtensor(q)?),
    };
    let dense = match full {
        Some(full) => Some(full.t()?.contiguous()?),
        None => None,
    };
    Ok(Linear { quant, dense })
}

/// The quantized format decoding uses for weights stored as `stored`.
fn decode_format(stored: GgmlDType) -> GgmlDType {
    match stored {
        GgmlDType::Q4_0 | GgmlDType::Q4_1 | GgmlDType::Q5_0 | GgmlDType::Q5_1 => GgmlDType::Q8_0,
        other => other,
    }
}

impl Model {
    pub fn load(gguf: &mut GgufFile, weights: Weights, device: &Device) -> Result<Self> {
        let config = gguf.llama_config()?;
        let embed_q = gguf.tensor("token_embd.weight", device)?;
        let embed = embed_q.dequantize(device)?;
        // Tied models reuse the embedding as the output head.
        let tied = !gguf.has_tensor("output.weight");
        let output = if !tied {
            load_linear(gguf, "output.weight", weights, device)?
        } else {
            let quant = match weights {
                Weights::Dense => None,
                _ => Some(QMatMul::from_qtensor(embed_q)?),
            };
            Linear { quant, dense: None }
        };
        let mut layers = Vec::with_capacity(config.layers);
        for i in 0..config.layers {
            let p = format!("blk.{i}");
            let mut linear = |n: &str| load_linear(gguf, &format!("{p}.{n}.weight"), weights, device);
            let (q, k, v, o) = (linear("attn_q")?, linear("attn_k")?, linear("attn_v")?, linear("attn_output")?);
            let (gate, up, down) = (linear("ffn_gate")?, linear("ffn_up")?, linear("ffn_down")?);
            let fuse = |parts: &[&Linear]| -> Result<Option<Tensor>> {
                let dense: Option<Vec<&Tensor>> = parts.iter().map(|l| l.dense.as_ref()).collect();
                Ok(match dense {
                    Some(ts) => Some(Tensor::cat(&ts, 1)?),
                    None => None,
                })
            };
            let qkv_dense = fuse(&[&q, &k, &v])?;
            let gate_up_dense = fuse(&[&gate, &up])?;
            // The fused copies replace the separate dense ones.
            let quant_only = |l: Linear| Linear { quant: l.quant, dense: None };
            let (q, k, v, gate, up) = (quant_only(q), quant_only(k), quant_only(v), quant_only(gate), quant_only(up));
            layers.push(Layer {
                attn_norm: gguf.tensor(&format!("{p}.attn_norm.weight"), device)?.dequantize(device)?,
                ffn_norm: gguf.tensor(&format!("{p}.ffn_norm.weight"), device)?.dequantize(device)?,
                q,
                k,
                v,
                o,
                gate,
                up,
                down,
                qkv_dense,
                gate_up_dense,
            });
        }
        let final_norm = gguf.tensor("output_norm.weight", device)?.dequantize(device)?;
        let half = config.head_dim / 2;
        let inv_freq: Vec<f32> =
            (0..half).map(|i| 1.0 / config.rope_base.powf((2 * i) as f32 / config.head_dim as f32)).collect();
        let positions = config.context_length;
        let inv_freq = Tensor::from_vec(inv_freq, (1, half), device)?;
        let t = Tensor::arange(0u32, positions as u32, device)?.to_dtype(DType::F32)?.reshape((positions, 1))?;
        let freqs = t.matmul(&inv_freq)?;
        Ok(Self {
            cos: freqs.cos()?,
            sin: freqs.sin()?,
            config,
            device: device.clone(),
            embed,
            output,
            tied,
            layers,
            final_norm,
            weights,
            attention_blocks: (ATTENTION_SPLIT_SCORES, ATTENTION_BLOCK_SCORES),
        })
    }

    /// Runs `batch` rows of `seq` tokens each (row-major in `tokens`) after `prefix`, at
    /// positions `prefix.len..prefix.len + seq`. Returns the final normalized hidden states
    /// `(batch·seq, hidden)` and, if `keep_cache`, the keys and values of prefix + these tokens.
    pub fn forward(
        &self,
        tokens: &[u32],
        batch: usize,
        seq: usize,
        prefix: Option<&KvCache>,
        mode: Mode,
        keep_cache: bool,
    ) -> Result<(Tensor, Option<KvCache>)> {
        let start = prefix.map_or(0, |p| p.len);
        if start + seq > self.config.context_length {
            return Err(super::error::EngineError::TooLong { tokens: start + seq, limit: self.config.context_length });
        }
        self.run(tokens, batch, seq, Past::Prefix(prefix), mode, keep_cache)
    }

    /// One token per row after `cache`, each at its own position (`positions`), attending to the
    /// cache slots `bias` leaves open (all of them without one): the decoding step of rows of
    /// different lengths that were right-padded to one batch. The cache's slot count may pass
    /// the context length (padding is no position); positions may not. Returns the hidden
    /// states `(batch, hidden)`; the cache holds the new tokens in one more slot.
    pub fn step(
        &self,
        tokens: &[u32],
        positions: &[usize],
        cache: &mut DecodeCache,
        bias: Option<&Tensor>,
        mode: Mode,
    ) -> Result<Tensor> {
        if let Some(&far) = positions.iter().find(|&&p| p >= self.config.context_length) {
            return Err(super::error::EngineError::TooLong { tokens: far + 1, limit: self.config.context_length });
        }
        let rows = cache.layers.first().map_or(Ok(0), |(k, _)| k.dim(0))?;
        if positions.len() != tokens.len() || rows != tokens.len() || cache.layers.len() != self.layers.len() {
            return Err(super::error::EngineError::Invalid(format!(
                "{} tokens and {} positions for a cache of {rows} rows",
                tokens.len(),
                positions.len()
            )));
        }
        if cache.len >= cache.capacity {
            return Err(super::error::EngineError::Invalid("the decoding cache is full".into()));
        }
        let step = Step { positions, bias };
        let (hidden, _) = self.run(tokens, tokens.len(), 1, Past::Decode(cache, step), mode, false)?;
        cache.len += 1;
        Ok(hidden)
    }

    fn run(
        &self,
        tokens: &[u32],
        batch: usize,
        seq: usize,
        past: Past<'_>,
        mode: Mode,
        keep_cache: bool,
    ) -> Result<(Tensor, Option<KvCache>)> {
        let cfg = &self.config;
        let (prefix, step, start) = match past {
            Past::Prefix(prefix) => (prefix, None, prefix.map_or(0, |p| p.len)),
            Past::Decode(cache, step) => (None, Some(step), cache.len),
        };
        if tokens.len() != batch * seq || seq == 0 {
            return Err(super::error::EngineError::Invalid(format!(
                "{} tokens for {batch} rows of {seq}",
                tokens.len()
            )));
        }
        let (heads, kv_heads, hd) = (cfg.heads, cfg.kv_heads, cfg.head_dim);
        let groups = heads / kv_heads;
        let total = start + seq;
        let ids = Tensor::from_slice(tokens, batch * seq, &self.device)?;
        let mut x = self.embed.index_select(&ids, 0)?;
        let (cos, sin) = match &step {
            Some(step) => {
                let at = Tensor::from_vec(
                    step.positions.iter().map(|&p| p as u32).collect::<Vec<u32>>(),
                    batch,
                    &self.device,
                )?;
                let half = cfg.head_dim / 2;
                (
                    self.cos.index_select(&at, 0)?.reshape((batch, 1, half))?,
                    self.sin.index_select(&at, 0)?.reshape((batch, 1, half))?,
                )
            }
            None => (self.cos.narrow(0, start, seq)?, self.sin.narrow(0, start, seq)?),
        };
        // Query positions per attention block: all of them but in a long pass (see
        // `attention_blocks`); a block attends to the keys up to its last position only.
        let (split, most) = self.attention_blocks;
        let per_position = batch * heads * total;
        let block = if per_position * seq <= split { seq } else { (most / per_position).clamp(1, seq) };
        // Causal mask of each block over [prefix | rows up to its end], repeated for the query
        // heads grouped per KV head.
        let masks: Vec<Option<Tensor>> = (0..seq)
            .step_by(block)
            .map(|from| {
                let len = block.min(seq - from);
                let keys = start + from + len;
                if seq == 1 {
                    return Ok(step.as_ref().and_then(|s| s.bias.cloned()));
                }
                let bias: Vec<f32> = (0..groups * len)
                    .flat_map(|r| {
                        let i = from + r % len;
                        (0..keys).map(move |j| if j <= start + i { 0.0 } else { f32::NEG_INFINITY })
                    })
                    .collect();
                Ok(Some(Tensor::from_vec(bias, (groups * len, keys), &self.device)?))
            })
            .collect::<Result<_>>()?;
        let scale = 1.0 / (hd as f64).sqrt();
        let mut caches = Vec::with_capacity(if keep_cache { self.layers.len() } else { 0 });
        for (li, layer) in self.layers.iter().enumerate() {
            let h = candle_nn::ops::rms_norm(&x, &layer.attn_norm, cfg.rms_eps)?;
            let (q, k, v) = match &layer.qkv_dense {
                Some(w) if mode == Mode::Dense || layer.q.quant.is_none() => {
                    let qkv = h.matmul(w)?;
                    let kv = kv_heads * hd;
                    (qkv.narrow(1, 0, heads * hd)?, qkv.narrow(1, heads * hd, kv)?, qkv.narrow(1, heads * hd + kv, kv)?)
                }
                _ => (layer.q.forward(&h, mode)?, layer.k.forward(&h, mode)?, layer.v.forward(&h, mode)?),
            };
            let q = q.reshape((batch, seq, heads, hd))?.transpose(1, 2)?.contiguous()?;
            let k = k.reshape((batch, seq, kv_heads, hd))?.transpose(1, 2)?.contiguous()?;
            let v = v.reshape((batch, seq, kv_heads, hd))?.transpose(1, 2)?.contiguous()?;
            let q = candle_nn::rotary_emb::rope_i(&q, &cos, &sin)?;
            let k = candle_nn::rotary_emb::rope_i(&k, &cos, &sin)?;
            let (k, v) = match (past, prefix) {
                (Past::Decode(cache, _), _) => {
                    let (ck, cv) = &cache.layers[li];
                    ck.slice_set(&k, 2, cache.len)?;
                    cv.slice_set(&v, 2, cache.len)?;
                    (ck.narrow(2, 0, cache.len + 1)?, cv.narrow(2, 0, cache.len + 1)?)
                }
                (_, Some(p)) => {
                    let (pk, pv) = &p.layers[li];
                    let widen = |t: &Tensor| -> Result<Tensor> {
                        Ok(if t.dim(0)? == batch {
                            t.clone()
                        } else {
                            t.broadcast_as((batch, kv_heads, p.len, hd))?.contiguous()?
                        })
                    };
                    (Tensor::cat(&[&widen(pk)?, &k], 2)?, Tensor::cat(&[&widen(pv)?, &v], 2)?)
                }
                (_, None) => (k, v),
            };
            let mut blocks = Vec::with_capacity(masks.len());
            for (from, mask) in (0..seq).step_by(block).zip(&masks) {
                let len = block.min(seq - from);
                let keys = start + from + len;
                // Query heads sharing a KV head become one (groups·len) block of rows.
                let qg = q.narrow(2, from, len)?.contiguous()?.reshape((batch, kv_heads, groups * len, hd))?;
                let (kb, vb) = (k.narrow(2, 0, keys)?, v.narrow(2, 0, keys)?);
                let mut att = (qg.matmul(&kb.t()?)? * scale)?;
                if let Some(mask) = mask {
                    att = att.broadcast_add(mask)?;
                }
                let att = candle_nn::ops::softmax_last_dim(&att)?;
                blocks.push(att.matmul(&vb)?.reshape((batch, heads, len, hd))?.transpose(1, 2)?);
            }
            let y = if blocks.len() == 1 { blocks.pop().expect("one block") } else { Tensor::cat(&blocks, 1)? };
            let y = y.reshape((batch * seq, heads * hd))?;
            if keep_cache {
                caches.push((k, v));
            }
            x = (x + layer.o.forward(&y, mode)?)?;
            let h = candle_nn::ops::rms_norm(&x, &layer.ffn_norm, cfg.rms_eps)?;
            let act = match &layer.gate_up_dense {
                Some(w) if mode == Mode::Dense || layer.gate.quant.is_none() => {
                    let gu = h.matmul(w)?;
                    let gate = gu.narrow(1, 0, cfg.ffn)?;
                    let up = gu.narrow(1, cfg.ffn, cfg.ffn)?;
                    (candle_nn::ops::silu(&gate)? * up)?
                }
                _ => (candle_nn::ops::silu(&layer.gate.forward(&h, mode)?)? * layer.up.forward(&h, mode)?)?,
            };
            x = (x + layer.down.forward(&act, mode)?)?;
        }
        let hidden = candle_nn::ops::rms_norm(&x, &self.final_norm, cfg.rms_eps)?;
        let cache = keep_cache.then_some(KvCache { layers: caches, len: total });
        Ok((hidden, cache))
    }

    /// Logits `(n, vocab)` for hidden-state rows `(n, hidden)`.
    pub fn logits(&self, hidden: &Tensor, mode: Mode) -> Result<Tensor> {
        match (mode, &self.output.quant, &self.output.dense) {
            (Mode::Quantized, Some(q), _) => Ok(q.forward(hidden)?),
            (_, _, Some(w)) => Ok(hidden.matmul(w)?),
            // Tied head in dense mode: the f32 embedding is the output matrix.
            (_, _, None) if self.tied => Ok(hidden.matmul(&self.embed.t()?)?),
            (_, Some(q), None) => Ok(q.forward(hidden)?),
            (_, None, None) => unreachable!("an untied head always has one form"),
        }
    }

    /// Log-softmax over the vocabulary of each row.
    pub fn log_probs(&self, hidden: &Tensor, mode: Mode) -> Result<Tensor> {
        let logits = self.logits(hidden, mode)?;
        Ok(candle_nn::ops::log_softmax(&logits, D::Minus1)?)
    }
}

#[cfg(test)]
mod tests {
    //! A tiny random llama written as a GGUF by the test itself: the forward pass's batching,
    //! padding and prefix reuse checked without the real model.

    use candle_core::quantized::gguf_file::{self, Value};
    use candle_core::quantized::{GgmlDType, QTensor};
    use candle_core::{Device, IndexOp, Tensor};

    use super::*;
    use crate::optimize::rng::Rng;

    const VOCAB: usize = 96;
    const HIDDEN: usize = 64;
    const HEADS: usize = 4;
    const KV_HEADS: usize = 2;
    const FFN: usize = 128;
    const LAYERS: usize = 2;

    fn random(rng: &mut Rng, shape: (usize, usize), scale: f32) -> Tensor {
        let data: Vec<f32> = (0..shape.0 * shape.1).map(|_| rng.normal() * scale).collect();
        Tensor::from_vec(data, shape, &Device::Cpu).unwrap()
    }

    fn tiny_gguf(path: &std::path::Path) {
        tiny_gguf_with(path, &[]);
    }

    /// The tiny model's file with some metadata values replaced or added.
    fn tiny_gguf_with(path: &std::path::Path, changed: &[(&str, Value)]) {
        let mut rng = Rng::new(7);
        let head_dim = HIDDEN / HEADS;
        let mut tensors: Vec<(String, QTensor)> = Vec::new();
        let q8 = |t: &Tensor| QTensor::quantize(t, GgmlDType::Q8_0).unwrap();
        let f32 = |t: &Tensor| QTensor::quantize(t, GgmlDType::F32).unwrap();
        tensors.push(("token_embd.weight".into(), q8(&random(&mut rng, (VOCAB, HIDDEN), 0.5))));
        let ones = Tensor::ones(HIDDEN, candle_core::DType::F32, &Device::Cpu).unwrap();
        for i in 0..LAYERS {
            let p = format!("blk.{i}");
            tensors.push((format!("{p}.attn_norm.weight"), f32(&ones)));
            tensors.push((format!("{p}.ffn_norm.weight"), f32(&ones)));
            tensors.push((format!("{p}.attn_q.weight"), q8(&random(&mut rng, (HIDDEN, HIDDEN), 0.2))));
            tensors.push((format!("{p}.attn_k.weight"), q8(&random(&mut rng, (KV_HEADS * head_dim, HIDDEN), 0.2))));
            tensors.push((format!("{p}.attn_v.weight"), q8(&random(&mut rng, (KV_HEADS * head_dim, HIDDEN), 0.2))));
            tensors.push((format!("{p}.attn_output.weight"), q8(&random(&mut rng, (HIDDEN, HIDDEN), 0.2))));
            tensors.push((format!("{p}.ffn_gate.weight"), q8(&random(&mut rng, (FFN, HIDDEN), 0.2))));
            tensors.push((format!("{p}.ffn_up.weight"), q8(&random(&mut rng, (FFN, HIDDEN), 0.2))));
            tensors.push((format!("{p}.ffn_down.weight"), q8(&random(&mut rng, (HIDDEN, FFN), 0.2))));
        }
        tensors.push(("output_norm.weight".into(), f32(&ones)));
        let metadata: Vec<(&str, Value)> = vec![
            ("general.architecture", Value::String("llama".into())),
            ("llama.block_count", Value::U32(LAYERS as u32)),
            ("llama.embedding_length", Value::U32(HIDDEN as u32)),
            ("llama.attention.head_count", Value::U32(HEADS as u32)),
            ("llama.attention.head_count_kv", Value::U32(KV_HEADS as u32)),
            ("llama.feed_forward_length", Value::U32(FFN as u32)),
            ("llama.context_length", Value::U32(256)),
            ("llama.vocab_size", Value::U32(VOCAB as u32)),
            ("llama.rope.freq_base", Value::F32(10_000.0)),
            ("llama.attention.layer_norm_rms_epsilon", Value::F32(1e-5)),
        ];
        let mut metadata: Vec<(&str, &Value)> =
            metadata.iter().filter(|(k, _)| changed.iter().all(|(c, _)| c != k)).map(|(k, v)| (*k, v)).collect();
        metadata.extend(changed.iter().map(|(k, v)| (*k, v)));
        let tensors: Vec<(&str, &QTensor)> = tensors.iter().map(|(k, v)| (k.as_str(), v)).collect();
        let mut file = std::fs::File::create(path).unwrap();
        gguf_file::write(&mut file, &metadata, &tensors).unwrap();
    }

    fn tiny_model(weights: Weights) -> Model {
        // One file per call: tests run in parallel, and one's removal must not race another's open.
        static CALLS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let call = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("reprompt-tiny-{}-{weights:?}-{call}.gguf", std::process::id()));
        tiny_gguf(&path);
        let mut gguf = GgufFile::open(&path).unwrap();
        let model = Model::load(&mut gguf, weights, &Device::Cpu).unwrap();
        let _ = std::fs::remove_file(&path);
        model
    }

    #[test]
    fn a_header_that_claims_other_sizes_than_its_tensors_is_refused_before_allocating() {
        let path = std::env::temp_dir().join(format!("reprompt-lying-{}.gguf", std::process::id()));
        for (key, value, expected) in [
            ("llama.block_count", Value::U32(u32::MAX), "block_count"),
            ("llama.block_count", Value::U32(0), "block_count"),
            ("llama.embedding_length", Value::U32(1 << 30), "token_embd.weight"),
            ("llama.feed_forward_length", Value::U32(1 << 30), "ffn_up"),
        ] {
            tiny_gguf_with(&path, &[(key, value)]);
            let mut gguf = GgufFile::open(&path).unwrap();
            let Err(err) = Model::load(&mut gguf, Weights::Quantized, &Device::Cpu) else { panic!("{key}: loaded") };
            let err = err.to_string();
            assert!(err.contains(expected), "{key}: {err}");
        }
        // A header the reader cannot take (an alignment of 0 divides by zero) is an error too.
        tiny_gguf_with(&path, &[("general.alignment", Value::U32(0))]);
        let Err(err) = GgufFile::open(&path) else { panic!("alignment 0: opened") };
        let err = err.to_string();
        assert!(err.contains("malformed"), "{err}");
        let _ = std::fs::remove_file(&path);
    }

    /// Hidden state of the last token of `ids`, computed in one pass without a prefix.
    fn last_hidden(model: &Model, ids: &[u32], mode: Mode) -> Vec<f32> {
        let (hidden, _) = model.forward(ids, 1, ids.len(), None, mode, false).unwrap();
        hidden.i(ids.len() - 1).unwrap().to_vec1().unwrap()
    }

    fn max_diff(a: &[f32], b: &[f32]) -> f32 {
        a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
    }

    #[test]
    fn prefix_reuse_and_right_padded_batches_match_single_passes() {
        let model = tiny_model(Weights::Both);
        let prefix: Vec<u32> = vec![5, 17, 3, 88, 42, 9];
        let suffixes: [&[u32]; 3] = [&[11, 12, 13, 14], &[70], &[1, 2]];
        let (_, cache) = model.forward(&prefix, 1, prefix.len(), None, Mode::Dense, true).unwrap();
        let cache = cache.unwrap();
        // One batch, right-padded to the longest suffix, after the shared prefix.
        let seq = 4;
        let mut tokens = Vec::new();
        for s in suffixes {
            tokens.extend_from_slice(s);
            tokens.extend(std::iter::repeat_n(0, seq - s.len()));
        }
        let (hidden, _) = model.forward(&tokens, 3, seq, Some(&cache), Mode::Dense, false).unwrap();
        for (row, s) in suffixes.iter().enumerate() {
            let batched: Vec<f32> = hidden.i(row * seq + s.len() - 1).unwrap().to_vec1().unwrap();
            let full: Vec<u32> = prefix.iter().chain(s.iter()).copied().collect();
            let single = last_hidden(&model, &full, Mode::Dense);
            assert!(max_diff(&batched, &single) < 1e-4, "row {row}: {}", max_diff(&batched, &single));
        }
    }

    #[test]
    fn attention_in_blocks_of_query_positions_matches_one_block() {
        let whole = tiny_model(Weights::Dense);
        let mut blocked = tiny_model(Weights::Dense); // the same weights
        let prefix: Vec<u32> = vec![5, 17, 3, 88, 42, 9, 61];
        let (_, cache) = whole.forward(&prefix, 1, prefix.len(), None, Mode::Dense, true).unwrap();
        let rows: Vec<u32> = vec![11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 70, 1, 2, 0, 0, 0, 0, 0, 0, 0, 0];
        let (batch, seq) = (2, 11);
        for prefix in [None, cache.as_ref()] {
            let total = prefix.map_or(0, |p| p.len) + seq;
            let (one, one_cache) = whole.forward(&rows, batch, seq, prefix, Mode::Dense, true).unwrap();
            assert_eq!(one.dims(), [batch * seq, HIDDEN]);
            // Blocks of 1, 3 and 4 query positions (the last one short), every pass split.
            for positions in [1, 3, 4] {
                blocked.attention_blocks = (0, positions * batch * HEADS * total);
                let (split, split_cache) = blocked.forward(&rows, batch, seq, prefix, Mode::Dense, true).unwrap();
                let (a, b) =
                    (one.flatten_all().unwrap().to_vec1().unwrap(), split.flatten_all().unwrap().to_vec1().unwrap());
                assert!(max_diff(&a, &b) < 1e-4, "{positions} positions: {}", max_diff(&a, &b));
                let (k1, k2) = (&one_cache.as_ref().unwrap().layers[1].0, &split_cache.unwrap().layers[1].0);
                assert_eq!(k1.dims(), k2.dims());
                let (k1, k2): (Vec<f32>, Vec<f32>) =
                    (k1.flatten_all().unwrap().to_vec1().unwrap(), k2.flatten_all().unwrap().to_vec1().unwrap());
                assert!(max_diff(&k1, &k2) < 1e-4, "{positions} positions: keys {}", max_diff(&k1, &k2));
            }
        }
    }

    #[test]
    fn decoding_token_by_token_matches_one_pass() {
        let model = tiny_model(Weights::Quantized);
        let ids: Vec<u32> = vec![4, 8, 15, 16, 23, 42];
        let one_pass = last_hidden(&model, &ids, Mode::Quantized);
        let (_, mut cache) = model.forward(&ids[..1], 1, 1, None, Mode::Quantized, true).unwrap();
        let mut last = Vec::new();
        for &id in &ids[1..] {
            let (hidden, next) = model.forward(&[id], 1, 1, cache.as_ref(), Mode::Quantized, true).unwrap();
            cache = next;
            last = hidden.i(0).unwrap().to_vec1().unwrap();
        }
        assert_eq!(cache.map(|c| c.len), Some(ids.len()));
        assert!(max_diff(&last, &one_pass) < 1e-4, "{}", max_diff(&last, &one_pass));
    }

    #[test]
    fn a_step_of_padded_rows_at_their_own_positions_matches_each_row_alone() {
        let model = tiny_model(Weights::Both);
        let prefix: Vec<u32> = vec![5, 17, 3, 88, 42];
        let suffixes: [&[u32]; 3] = [&[11, 12, 13, 14], &[70], &[1, 2]];
        let next: [u32; 3] = [60, 61, 62];
        let (_, cache) = model.forward(&prefix, 1, prefix.len(), None, Mode::Dense, true).unwrap();
        let seq = 4;
        let mut tokens = Vec::new();
        for s in suffixes {
            tokens.extend_from_slice(s);
            tokens.extend(std::iter::repeat_n(0, seq - s.len()));
        }
        let (_, padded) = model.forward(&tokens, 3, seq, cache.as_ref(), Mode::Dense, true).unwrap();
        let padded = padded.unwrap();
        let slots = prefix.len() + seq + 1;
        let padding_end = prefix.len() + seq;
        let bias = |rows: &[usize], slots: usize| {
            let values: Vec<f32> = rows
                .iter()
                .flat_map(|&r| {
                    let open = prefix.len() + suffixes[r].len();
                    (0..slots).map(move |j| if j >= open && j < padding_end { f32::NEG_INFINITY } else { 0.0 })
                })
                .collect();
            Tensor::from_vec(values, (rows.len(), 1, 1, slots), &Device::Cpu).unwrap()
        };
        for mode in [Mode::Dense, Mode::Quantized] {
            let positions: Vec<usize> = suffixes.iter().map(|s| prefix.len() + s.len()).collect();
            let mut cache = DecodeCache::new(padded.clone(), 2).unwrap();
            let hidden = model.step(&next, &positions, &mut cache, Some(&bias(&[0, 1, 2], slots)), mode).unwrap();
            assert_eq!(cache.len, slots);
            // Alone: the row's prompt in one dense pass, then its tokens decoded one by one.
            let alone = |prompt: Vec<u32>, decoded: &[u32]| -> Vec<f32> {
                let (_, mut cache) = model.forward(&prompt, 1, prompt.len(), None, Mode::Dense, true).unwrap();
                let mut last = Vec::new();
                for &token in decoded {
                    let (hidden, next) = model.forward(&[token], 1, 1, cache.as_ref(), mode, true).unwrap();
                    cache = next;
                    last = hidden.i(0).unwrap().to_vec1().unwrap();
                }
                last
            };
            let prompt = |row: usize| -> Vec<u32> { prefix.iter().chain(suffixes[row]).copied().collect() };
            for (row, &token) in next.iter().enumerate() {
                let alone = alone(prompt(row), &[token]);
                let batched: Vec<f32> = hidden.i(row).unwrap().to_vec1().unwrap();
                assert!(max_diff(&batched, &alone) < 1e-5, "{mode:?} row {row}: {}", max_diff(&batched, &alone));
            }
            // Rows 2 and 1 of the batch, selected out of it, take a second step.
            let mut kept = cache.select(&[2, 1]).unwrap();
            let after: Vec<usize> = [2, 1].iter().map(|&r| prefix.len() + suffixes[r].len() + 1).collect();
            let hidden = model.step(&[7, 8], &after, &mut kept, Some(&bias(&[2, 1], slots + 1)), mode).unwrap();
            for (b, (row, token)) in [(2usize, 7u32), (1, 8)].into_iter().enumerate() {
                let alone = alone(prompt(row), &[next[row], token]);
                let batched: Vec<f32> = hidden.i(b).unwrap().to_vec1().unwrap();
                assert!(max_diff(&batched, &alone) < 1e-5, "{mode:?} row {row}, second step");
            }
            // The cache has room for two steps, not three.
            let third = model.step(&[9, 9], &after.iter().map(|p| p + 1).collect::<Vec<_>>(), &mut kept, None, mode);
            assert!(matches!(third, Err(crate::engine::EngineError::Invalid(_))), "{third:?}");
        }
        // A position past the context, or a row count other than the cache's, is refused.
        let mut cache = DecodeCache::new(padded, 2).unwrap().select(&[0]).unwrap();
        let past = model.step(&[1], &[256], &mut cache, None, Mode::Dense);
        assert!(matches!(past, Err(crate::engine::EngineError::TooLong { .. })), "{past:?}");
        let rows = model.step(&[1, 2], &[9, 9], &mut cache, None, Mode::Dense);
        assert!(matches!(rows, Err(crate::engine::EngineError::Invalid(_))), "{rows:?}");
        assert_eq!(cache.len, prefix.len() + seq);
    }

    #[test]
    fn dense_and_quantized_weights_agree_and_bad_calls_are_errors() {
        let model = tiny_model(Weights::Both);
        let ids: Vec<u32> = vec![3, 1, 4, 1, 5, 9, 2, 6];
        let dense = last_hidden(&model, &ids, Mode::Dense);
        let quant = last_hidden(&model, &ids, Mode::Quantized);
        // Q8_0 weights are exact here (dense ones are their dequantization); the quantized
        // matmul also rounds activations to 8 bits, so close, not equal.
        assert!(max_diff(&dense, &quant) < 0.1, "{}", max_diff(&dense, &quant));
        assert!(model.forward(&ids, 2, 3, None, Mode::Dense, false).is_err());
        let long = vec![1u32; 300];
        assert!(matches!(
            model.forward(&long, 1, long.len(), None, Mode::Dense, false),
            Err(crate::engine::EngineError::TooLong { .. })
        ));
    }
}
