//! The policy network: an MLP that scores each candidate edit from `[state; candidate; one-hot
//! edit kind]` and a value head on the state alone (candle-nn, CPU, f32), with every weight
//! initialised from the seeded [`Rng`] so runs are reproducible.

use std::collections::BTreeMap;
use std::path::Path;

use candle_core::{D, DType, Device, Tensor, Var};
use candle_nn::{Linear, Module, VarMap};
use serde::{Deserialize, Serialize};

use super::rng::Rng;
use super::{OptimizeError, Result};

/// Added to the logits of padding slots so they get zero probability.
pub const MASK_LOGIT: f32 = -1e9;

/// Sizes of the policy's inputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyDims {
    /// State features (S).
    pub state: usize,
    /// Candidate features (C), not counting the edit kind.
    pub candidate: usize,
    /// Number of edit kinds (K); each candidate row ends with their one-hot.
    pub kinds: usize,
}

impl PolicyDims {
    /// Length of a candidate vector as the policy takes it: features then one-hot kind (C + K).
    pub fn candidate_len(&self) -> usize {
        self.candidate + self.kinds
    }

    /// Length of one scorer input row: S + C + K.
    pub fn row_len(&self) -> usize {
        self.state + self.candidate_len()
    }

    /// A candidate vector: `features` (length C) followed by the one-hot of `kind` (< K).
    pub fn candidate_input(&self, features: &[f32], kind: usize) -> Result<Vec<f32>> {
        if features.len() != self.candidate {
            return Err(input_error(format!("candidate has {} features, expected {}", features.len(), self.candidate)));
        }
        if kind >= self.kinds {
            return Err(input_error(format!("edit kind {kind} out of range (there are {})", self.kinds)));
        }
        let mut row = Vec::with_capacity(self.candidate_len());
        row.extend_from_slice(features);
        row.extend((0..self.kinds).map(|k| if k == kind { 1.0 } else { 0.0 }));
        Ok(row)
    }
}

/// A frozen copy of the policy's weights (an anchor / rollback point, StablePrompt-style).
#[derive(Debug, Clone)]
pub struct PolicySnapshot {
    /// Parameter name → detached copy of its value.
    pub params: BTreeMap<String, Tensor>,
}

impl PolicySnapshot {
    /// Weights stored as safetensors (a policy written by [`PolicySnapshot::save`] or
    /// [`PolicyNet::save`], e.g. a shipped warm start).
    pub fn from_safetensors(bytes: &[u8]) -> Result<Self> {
        let params = candle_core::safetensors::load_buffer(bytes, &Device::Cpu)?;
        Ok(Self { params: params.into_iter().collect() })
    }

    /// Writes the weights as safetensors.
    pub fn save(&self, path: &Path) -> Result<()> {
        let params: std::collections::HashMap<&str, Tensor> =
            self.params.iter().map(|(name, t)| (name.as_str(), t.clone())).collect();
        candle_core::safetensors::save(&params, path)?;
        Ok(())
    }

    /// The state-feature length these weights take (the value head's input width).
    pub fn state_len(&self) -> Option<usize> {
        self.params.get("value.l1.weight").and_then(|w| w.dims().get(1).copied())
    }

    /// The hidden width of the two MLPs.
    pub fn hidden(&self) -> Option<usize> {
        self.params.get("value.l1.weight").and_then(|w| w.dims().first().copied())
    }
}

/// Output of the batched, differentiable forward pass.
#[derive(Debug)]
pub struct BatchOutput {
    /// `[B, N]` log-probabilities over each row's candidates (padding slots ≈ -1e9).
    pub log_probs: Tensor,
    /// `[B]` state values.
    pub values: Tensor,
}

/// The candidate scorer and value head.
pub struct PolicyNet {
    dims: PolicyDims,
    hidden: usize,
    device: Device,
    varmap: VarMap,
    /// Parameters sorted by name: the one fixed order for norms, optimizer state and snapshots.
    vars: Vec<(String, Var)>,
    score: [Linear; 3],
    value: [Linear; 3],
}

impl std::fmt::Debug for PolicyNet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicyNet")
            .field("dims", &self.dims)
            .field("hidden", &self.hidden)
            .field("params", &self.vars.iter().map(|(name, _)| name.as_str()).collect::<Vec<_>>())
            .finish()
    }
}

fn input_error(message: String) -> OptimizeError {
    OptimizeError::Input(message)
}

impl PolicyNet {
    /// A freshly initialised network: Xavier-uniform weights from `rng`, zero biases, the policy
    /// output layer scaled by 0.01 (near-uniform initial policy).
    pub fn new(dims: PolicyDims, hidden: usize, rng: &mut Rng) -> Result<Self> {
        if dims.state == 0 || dims.row_len() == 0 || hidden == 0 {
            return Err(input_error("policy dimensions must be positive".to_string()));
        }
        let device = Device::Cpu;
        let varmap = VarMap::new();
        let mut vars = Vec::new();
        let mut layer = |name: &str, fan_in: usize, fan_out: usize, gain: f32, rng: &mut Rng| -> Result<Linear> {
            let bound = gain * (6.0 / (fan_in + fan_out) as f32).sqrt();
            let w: Vec<f32> = (0..fan_in * fan_out).map(|_| (2.0 * rng.next_f32() - 1.0) * bound).collect();
            let weight = Var::from_vec(w, (fan_out, fan_in), &device)?;
            let bias = Var::zeros(fan_out, DType::F32, &device)?;
            let linear = Linear::new(weight.as_tensor().clone(), Some(bias.as_tensor().clone()));
            vars.push((format!("{name}.weight"), weight));
            vars.push((format!("{name}.bias"), bias));
            Ok(linear)
        };
        let row = dims.row_len();
        let score = [
            layer("policy.l1", row, hidden, 1.0, rng)?,
            layer("policy.l2", hidden, hidden, 1.0, rng)?,
            layer("policy.out", hidden, 1, 0.01, rng)?,
        ];
        let value = [
            layer("value.l1", dims.state, hidden, 1.0, rng)?,
            layer("value.l2", hidden, hidden, 1.0, rng)?,
            layer("value.out", hidden, 1, 1.0, rng)?,
        ];
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        {
            let mut data =
                varmap.data().lock().map_err(|_| input_error("policy variable map lock poisoned".to_string()))?;
            for (name, var) in &vars {
                data.insert(name.clone(), var.clone());
            }
        }
        Ok(Self { dims, hidden, device, varmap, vars, score, value })
    }

    /// A network holding `snapshot`'s weights (e.g. a frozen anchor policy).
    pub fn from_snapshot(dims: PolicyDims, hidden: usize, snapshot: &PolicySnapshot) -> Result<Self> {
        let mut net = Self::new(dims, hidden, &mut Rng::new(0))?;
        net.restore(snapshot)?;
        Ok(net)
    }

    pub fn dims(&self) -> PolicyDims {
        self.dims
    }

    pub fn hidden(&self) -> usize {
        self.hidden
    }

    /// The parameters, sorted by name.
    pub fn vars(&self) -> &[(String, Var)] {
        &self.vars
    }

    /// The candle variable map holding the same parameters.
    pub fn varmap(&self) -> &VarMap {
        &self.varmap
    }

    fn mlp(layers: &[Linear; 3], x: &Tensor) -> Result<Tensor> {
        let h = layers[0].forward(x)?.tanh()?;
        let h = layers[1].forward(&h)?.tanh()?;
        Ok(layers[2].forward(&h)?.squeeze(D::Minus1)?)
    }

    fn check_state(&self, state: &[f32]) -> Result<()> {
        if state.len() != self.dims.state {
            return Err(input_error(format!("state has {} features, expected {}", state.len(), self.dims.state)));
        }
        Ok(())
    }

    fn check_candidates(&self, candidates: &[Vec<f32>]) -> Result<()> {
        if candidates.is_empty() {
            return Err(input_error("empty candidate set".to_string()));
        }
        let want = self.dims.candidate_len();
        if let Some(bad) = candidates.iter().find(|c| c.len() != want) {
            return Err(input_error(format!("candidate vector has length {}, expected {want}", bad.len())));
        }
        Ok(())
    }

    /// Logits over `candidates` (same order) and the state's value, for acting.
    pub fn logits_and_value(&self, state: &[f32], candidates: &[Vec<f32>]) -> Result<(Vec<f32>, f32)> {
        self.logits_and_value_with_bias(state, candidates, &[])
    }

    /// [`PolicyNet::logits_and_value`] with `bias` (one per candidate, or empty for none) added
    /// to the logits: evidence the policy acts on without learning it (the search's replay).
    pub fn logits_and_value_with_bias(
        &self,
        state: &[f32],
        candidates: &[Vec<f32>],
        bias: &[f32],
    ) -> Result<(Vec<f32>, f32)> {
        let out = self.forward_batch(&[state], &[candidates], &[bias], false)?;
        let logits = out.log_probs.squeeze(0)?.to_vec1::<f32>()?;
        let value = out.values.squeeze(0)?.to_scalar::<f32>()?;
        Ok((logits, value))
    }

    /// Batched differentiable pass: log-probabilities `[B, N]` (candidate sets padded to the
    /// largest, N, with masked slots) and values `[B]`.
    pub fn log_probs_and_values(&self, states: &[&[f32]], candidate_sets: &[&[Vec<f32>]]) -> Result<BatchOutput> {
        self.forward_batch(states, candidate_sets, &[], true)
    }

    /// [`PolicyNet::log_probs_and_values`] with per-row logit biases (each one per candidate,
    /// or empty; `biases` itself may be empty for none).
    pub fn log_probs_and_values_with_bias(
        &self,
        states: &[&[f32]],
        candidate_sets: &[&[Vec<f32>]],
        biases: &[&[f32]],
    ) -> Result<BatchOutput> {
        self.forward_batch(states, candidate_sets, biases, true)
    }

    /// Shared pass; with `normalise` false it returns raw (masked) logits instead of
    /// log-probabilities.
    fn forward_batch(
        &self,
        states: &[&[f32]],
        candidate_sets: &[&[Vec<f32>]],
        biases: &[&[f32]],
        normalise: bool,
    ) -> Result<BatchOutput> {
        if states.is_empty() || states.len() != candidate_sets.len() {
            return Err(input_error(format!(
                "batch of {} states and {} candidate sets",
                states.len(),
                candidate_sets.len()
            )));
        }
        for (i, (state, candidates)) in states.iter().zip(candidate_sets).enumerate() {
            self.check_state(state)?;
            self.check_candidates(candidates)?;
            if let Some(bias) = biases.get(i).filter(|b| !b.is_empty() && b.len() != candidates.len()) {
                return Err(input_error(format!("{} biases for {} candidates", bias.len(), candidates.len())));
            }
        }
        let b = states.len();
        let n = candidate_sets.iter().map(|c| c.len()).max().unwrap_or(1);
        let row = self.dims.row_len();
        let mut rows = vec![0.0f32; b * n * row];
        let mut mask = vec![MASK_LOGIT; b * n];
        let mut flat_states = Vec::with_capacity(b * self.dims.state);
        for (i, (state, candidates)) in states.iter().zip(candidate_sets).enumerate() {
            flat_states.extend_from_slice(state);
            for (j, cand) in candidates.iter().enumerate() {
                let start = (i * n + j) * row;
                rows[start..start + state.len()].copy_from_slice(state);
                rows[start + state.len()..start + row].copy_from_slice(cand);
                mask[i * n + j] = biases.get(i).and_then(|b| b.get(j)).copied().unwrap_or(0.0);
            }
        }
        let rows = Tensor::from_vec(rows, (b * n, row), &self.device)?;
        let mask = Tensor::from_vec(mask, (b, n), &self.device)?;
        let logits = (Self::mlp(&self.score, &rows)?.reshape((b, n))? + mask)?;
        let log_probs = if normalise { candle_nn::ops::log_softmax(&logits, D::Minus1)? } else { logits };
        let states = Tensor::from_vec(flat_states, (b, self.dims.state), &self.device)?;
        let values = Self::mlp(&self.value, &states)?;
        Ok(BatchOutput { log_probs, values })
    }

    /// A detached copy of every weight.
    pub fn snapshot(&self) -> Result<PolicySnapshot> {
        let params =
            self.vars.iter().map(|(name, var)| Ok((name.clone(), var.as_tensor().copy()?))).collect::<Result<_>>()?;
        Ok(PolicySnapshot { params })
    }

    /// Overwrites every weight with `snapshot`'s (which must hold all of them, same shapes).
    pub fn restore(&mut self, snapshot: &PolicySnapshot) -> Result<()> {
        for (name, var) in &self.vars {
            let value =
                snapshot.params.get(name).ok_or_else(|| input_error(format!("snapshot lacks parameter {name}")))?;
            if value.dims() != var.dims() {
                return Err(input_error(format!(
                    "snapshot parameter {name} has shape {:?}, expected {:?}",
                    value.dims(),
                    var.dims()
                )));
            }
            var.set(value)?;
        }
        Ok(())
    }

    /// Writes the weights as safetensors.
    pub fn save(&self, path: &Path) -> Result<()> {
        self.varmap.save(path)?;
        Ok(())
    }

    /// Reads weights written by [`PolicyNet::save`] into this (same-shaped) network.
    pub fn load(&mut self, path: &Path) -> Result<()> {
        self.varmap.load(path)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dims() -> PolicyDims {
        PolicyDims { state: 3, candidate: 2, kinds: 2 }
    }

    fn candidates(d: &PolicyDims) -> Vec<Vec<f32>> {
        vec![
            d.candidate_input(&[0.5, -1.0], 0).expect("candidate"),
            d.candidate_input(&[1.0, 0.2], 1).expect("candidate"),
            d.candidate_input(&[-0.3, 0.7], 1).expect("candidate"),
        ]
    }

    #[test]
    fn same_seed_same_weights_and_padding_does_not_change_log_probs() {
        let d = dims();
        let a = PolicyNet::new(d, 8, &mut Rng::new(5)).expect("net");
        let b = PolicyNet::new(d, 8, &mut Rng::new(5)).expect("net");
        let state = [0.1f32, -0.2, 0.3];
        let cands = candidates(&d);
        let (la, va) = a.logits_and_value(&state, &cands).expect("forward");
        let (lb, vb) = b.logits_and_value(&state, &cands).expect("forward");
        assert_eq!((la.clone(), va), (lb, vb));
        assert_eq!(la.len(), 3);

        // Batched with a larger second set: the first row's log-probs are padded but unchanged.
        let bigger: Vec<Vec<f32>> = cands.iter().chain(cands.iter()).cloned().collect();
        let out = a.log_probs_and_values(&[&state, &state], &[&cands, &bigger]).expect("batch");
        let lp = out.log_probs.to_vec2::<f32>().expect("vec");
        assert_eq!(lp[0].len(), 6);
        let direct = candle_nn::ops::log_softmax(&Tensor::new(la.as_slice(), &Device::Cpu).expect("t"), 0)
            .expect("lsm")
            .to_vec1::<f32>()
            .expect("vec");
        for (x, y) in lp[0][..3].iter().zip(&direct) {
            assert!((x - y).abs() < 1e-6);
        }
        assert!(lp[0][3..].iter().all(|&x| x < -1e8));
        let total: f32 = lp[1].iter().map(|x| x.exp()).sum();
        assert!((total - 1.0).abs() < 1e-5);
    }

    #[test]
    fn snapshot_restore_round_trips() {
        let d = dims();
        let mut a = PolicyNet::new(d, 8, &mut Rng::new(1)).expect("net");
        let state = [0.1f32, -0.2, 0.3];
        let cands = candidates(&d);
        let before = a.logits_and_value(&state, &cands).expect("forward");
        let snap = a.snapshot().expect("snapshot");
        let other = PolicyNet::new(d, 8, &mut Rng::new(2)).expect("net").snapshot().expect("snapshot");
        a.restore(&other).expect("restore");
        assert_ne!(a.logits_and_value(&state, &cands).expect("forward"), before);
        a.restore(&snap).expect("restore");
        assert_eq!(a.logits_and_value(&state, &cands).expect("forward"), before);
        let anchor = PolicyNet::from_snapshot(d, 8, &snap).expect("anchor");
        assert_eq!(anchor.logits_and_value(&state, &cands).expect("forward"), before);
    }

    #[test]
    fn bad_inputs_are_errors() {
        let d = dims();
        let net = PolicyNet::new(d, 4, &mut Rng::new(0)).expect("net");
        assert!(net.logits_and_value(&[0.0; 2], &candidates(&d)).is_err());
        assert!(net.logits_and_value(&[0.0; 3], &[]).is_err());
        assert!(net.logits_and_value(&[0.0; 3], &[vec![0.0; 3]]).is_err());
        assert!(d.candidate_input(&[0.0, 0.0], 2).is_err());
    }
}
