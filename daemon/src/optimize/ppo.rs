//! PPO over variable-size candidate sets: GAE advantages, clipped surrogate, value MSE, entropy
//! bonus, manual global-norm gradient clipping and an own AdamW (candle's keeps its moments
//! private, so they could not be checkpointed), plus resumable checkpoints and anchor snapshots.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::backprop::GradStore;
use candle_core::{D, DType, Device, Tensor, Var};
use serde::{Deserialize, Serialize};

use super::policy::{PolicyDims, PolicyNet, PolicySnapshot};
use super::rng::Rng;
use super::{OptimizeError, Result};

/// Checkpoint file with the network weights (`VarMap::save`).
pub const POLICY_FILE: &str = "policy.safetensors";
/// Checkpoint file with the AdamW moments.
pub const OPTIMIZER_FILE: &str = "optimizer.safetensors";
/// Checkpoint file with config, dims, RNG state and counters.
pub const STATE_FILE: &str = "ppo-state.json";

/// PPO hyperparameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PpoConfig {
    /// AdamW learning rate.
    pub lr: f64,
    /// AdamW decoupled weight decay.
    pub weight_decay: f64,
    /// Surrogate clipping range ε.
    pub clip: f32,
    pub gamma: f32,
    pub gae_lambda: f32,
    /// Passes over each batch of episodes.
    pub epochs: usize,
    /// Transitions per gradient step.
    pub minibatch_size: usize,
    pub entropy_coef: f32,
    pub value_coef: f32,
    /// Global gradient-norm bound (≤ 0 disables clipping).
    pub max_grad_norm: f32,
    /// Hidden width of both MLPs.
    pub hidden: usize,
    /// Seeds weight init and minibatch shuffling.
    pub seed: u64,
}

impl Default for PpoConfig {
    fn default() -> Self {
        Self {
            lr: 3e-3,
            weight_decay: 1e-4,
            clip: 0.2,
            gamma: 0.99,
            gae_lambda: 0.95,
            epochs: 4,
            minibatch_size: 32,
            entropy_coef: 0.01,
            value_coef: 0.5,
            max_grad_norm: 0.5,
            hidden: 64,
            seed: 0,
        }
    }
}

/// One step of an episode as recorded while acting.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Transition {
    pub state: Vec<f32>,
    /// Candidate vectors (features + one-hot kind, see [`PolicyDims::candidate_input`]).
    pub candidates: Vec<Vec<f32>>,
    pub action: usize,
    /// Log-probability of `action` under the acting policy.
    pub logp: f32,
    /// Value estimate of `state` when acting.
    pub value: f32,
    pub reward: f32,
    /// The episode ended after this step (no bootstrapping past it).
    pub done: bool,
    /// Logit biases the acting policy added, one per candidate (empty: none); the update adds
    /// them again so the probability ratios compare like with like.
    #[serde(default)]
    pub bias: Vec<f32>,
}

/// Averages over the minibatch steps of one [`Ppo::update`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct UpdateStats {
    pub policy_loss: f32,
    pub value_loss: f32,
    pub entropy: f32,
    /// Estimate of KL(old ‖ new): mean of `(r - 1) - ln r` over the minibatch samples.
    pub approx_kl: f32,
    /// Share of samples whose ratio left `[1 - clip, 1 + clip]`.
    pub clip_fraction: f32,
    /// Global gradient norm before clipping.
    pub grad_norm: f32,
    /// Gradient steps taken.
    pub steps: usize,
}

/// GAE(γ, λ) over one trajectory: returns `(advantages, returns)` with `returns = adv + values`.
/// A step with `done` does not bootstrap; neither does the last step (its successor is unknown,
/// so it counts as terminal).
pub fn gae(rewards: &[f32], values: &[f32], dones: &[bool], gamma: f32, lambda: f32) -> (Vec<f32>, Vec<f32>) {
    let n = rewards.len().min(values.len()).min(dones.len());
    let mut adv = vec![0.0f32; n];
    let mut next_adv = 0.0f32;
    let mut next_value = 0.0f32;
    for t in (0..n).rev() {
        let live = if dones[t] || t + 1 == n { 0.0 } else { 1.0 };
        let delta = rewards[t] + gamma * next_value * live - values[t];
        next_adv = delta + gamma * lambda * live * next_adv;
        adv[t] = next_adv;
        next_value = values[t];
    }
    let returns = adv.iter().zip(values).map(|(a, v)| a + v).collect();
    (adv, returns)
}

/// Scales `grads` of `vars` so that their global L2 norm is at most `max_norm` (when positive);
/// returns the norm before clipping. Accumulates in `vars` order, in f64.
pub fn clip_grad_norm(grads: &mut GradStore, vars: &[(String, Var)], max_norm: f32) -> Result<f32> {
    let mut sq = 0.0f64;
    for (_, var) in vars {
        if let Some(g) = grads.get(var.as_tensor()) {
            sq += f64::from(g.sqr()?.sum_all()?.to_scalar::<f32>()?);
        }
    }
    let norm = sq.sqrt() as f32;
    if max_norm > 0.0 && norm > max_norm {
        let scale = f64::from(max_norm / norm);
        for (_, var) in vars {
            if let Some(g) = grads.remove(var.as_tensor()) {
                grads.insert(var.as_tensor(), (g * scale)?);
            }
        }
    }
    Ok(norm)
}

/// AdamW (Loshchilov & Hutter) with checkpointable moments, one pair per parameter in the
/// policy's sorted order. Same update as `candle_nn::AdamW`: β = (0.9, 0.999), ε = 1e-8.
#[derive(Debug)]
struct AdamW {
    lr: f64,
    weight_decay: f64,
    beta1: f64,
    beta2: f64,
    eps: f64,
    step: u64,
    moments: Vec<(Tensor, Tensor)>,
}

impl AdamW {
    fn new(vars: &[(String, Var)], lr: f64, weight_decay: f64) -> Result<Self> {
        let moments = vars
            .iter()
            .map(|(_, v)| {
                Ok((
                    Tensor::zeros(v.shape(), DType::F32, &Device::Cpu)?,
                    Tensor::zeros(v.shape(), DType::F32, &Device::Cpu)?,
                ))
            })
            .collect::<Result<_>>()?;
        Ok(Self { lr, weight_decay, beta1: 0.9, beta2: 0.999, eps: 1e-8, step: 0, moments })
    }

    fn step(&mut self, vars: &[(String, Var)], grads: &GradStore) -> Result<()> {
        self.step += 1;
        let t = i32::try_from(self.step).unwrap_or(i32::MAX);
        let scale_m = 1.0 / (1.0 - self.beta1.powi(t));
        let scale_v = 1.0 / (1.0 - self.beta2.powi(t));
        for ((_, var), (m, v)) in vars.iter().zip(self.moments.iter_mut()) {
            let Some(g) = grads.get(var.as_tensor()) else { continue };
            let g = g.detach();
            let next_m = ((&*m * self.beta1)? + (&g * (1.0 - self.beta1))?)?;
            let next_v = ((&*v * self.beta2)? + (g.sqr()? * (1.0 - self.beta2))?)?;
            let m_hat = (&next_m * scale_m)?;
            let v_hat = (&next_v * scale_v)?;
            let theta = var.as_tensor().detach();
            let decayed = (&theta * (1.0 - self.lr * self.weight_decay))?;
            let adj = (m_hat / (v_hat.sqrt()? + self.eps)?)?;
            var.set(&(decayed - (adj * self.lr)?)?)?;
            *m = next_m;
            *v = next_v;
        }
        Ok(())
    }

    /// Forgets the moments and the step count: a fresh optimizer over the same parameters.
    fn reset(&mut self) -> Result<()> {
        for (m, v) in &mut self.moments {
            *m = m.zeros_like()?;
            *v = v.zeros_like()?;
        }
        self.step = 0;
        Ok(())
    }

    fn save(&self, vars: &[(String, Var)], path: &Path) -> Result<()> {
        let mut map = HashMap::new();
        for ((name, _), (m, v)) in vars.iter().zip(&self.moments) {
            map.insert(format!("m.{name}"), m.clone());
            map.insert(format!("v.{name}"), v.clone());
        }
        candle_core::safetensors::save(&map, path)?;
        Ok(())
    }

    fn load(&mut self, vars: &[(String, Var)], path: &Path) -> Result<()> {
        let mut map = candle_core::safetensors::load(path, &Device::Cpu)?;
        for ((name, var), slot) in vars.iter().zip(self.moments.iter_mut()) {
            let mut take = |key: String| -> Result<Tensor> {
                let t = map.remove(&key).ok_or_else(|| checkpoint_error(path, format!("missing {key}")))?;
                if t.dims() != var.dims() || t.dtype() != DType::F32 {
                    return Err(checkpoint_error(path, format!("{key} has the wrong shape or type")));
                }
                Ok(t)
            };
            *slot = (take(format!("m.{name}"))?, take(format!("v.{name}"))?);
        }
        Ok(())
    }
}

fn checkpoint_error(path: &Path, message: impl Into<String>) -> OptimizeError {
    OptimizeError::Checkpoint { path: path.to_path_buf(), message: message.into() }
}

/// What `ppo-state.json` holds.
#[derive(Debug, Serialize, Deserialize)]
struct SavedState {
    format: u32,
    dims: PolicyDims,
    config: PpoConfig,
    rng_state: u64,
    updates: u64,
    adam_step: u64,
}

/// The PPO agent.
#[derive(Debug)]
pub struct Ppo {
    config: PpoConfig,
    policy: PolicyNet,
    adam: AdamW,
    /// Weight init, then minibatch shuffling.
    rng: Rng,
    updates: u64,
}

impl Ppo {
    /// A fresh agent; weights come from `Rng::new(config.seed)`.
    pub fn new(dims: PolicyDims, config: PpoConfig) -> Result<Self> {
        if config.minibatch_size == 0 {
            return Err(OptimizeError::Input("minibatch_size must be positive".to_string()));
        }
        let mut rng = Rng::new(config.seed);
        let policy = PolicyNet::new(dims, config.hidden, &mut rng)?;
        let adam = AdamW::new(policy.vars(), config.lr, config.weight_decay)?;
        Ok(Self { config, policy, adam, rng, updates: 0 })
    }

    pub fn config(&self) -> &PpoConfig {
        &self.config
    }

    pub fn dims(&self) -> PolicyDims {
        self.policy.dims()
    }

    pub fn policy(&self) -> &PolicyNet {
        &self.policy
    }

    /// Completed [`Ppo::update`] calls.
    pub fn updates(&self) -> u64 {
        self.updates
    }

    /// Picks a candidate: the most likely one when `greedy`, else a sample drawn with `rng`.
    /// Returns `(action, log-probability of it, state value)`.
    pub fn act(
        &self,
        state: &[f32],
        candidates: &[Vec<f32>],
        rng: &mut Rng,
        greedy: bool,
    ) -> Result<(usize, f32, f32)> {
        self.act_with_bias(state, candidates, &[], rng, greedy)
    }

    /// [`Ppo::act`] with logit biases added (one per candidate, or empty); record them in the
    /// [`Transition`].
    pub fn act_with_bias(
        &self,
        state: &[f32],
        candidates: &[Vec<f32>],
        bias: &[f32],
        rng: &mut Rng,
        greedy: bool,
    ) -> Result<(usize, f32, f32)> {
        let (logits, value) = self.policy.logits_and_value_with_bias(state, candidates, bias)?;
        let logp =
            candle_nn::ops::log_softmax(&Tensor::new(logits.as_slice(), &Device::Cpu)?, D::Minus1)?.to_vec1::<f32>()?;
        let action = if greedy {
            logits.iter().enumerate().fold(0, |best, (i, &l)| if l > logits[best] { i } else { best })
        } else {
            let probs: Vec<f32> = logp.iter().map(|l| l.exp()).collect();
            rng.categorical(&probs)
        };
        Ok((action, logp[action], value))
    }

    /// One PPO update on a batch of episodes (each in time order).
    pub fn update(&mut self, episodes: &[Vec<Transition>]) -> Result<UpdateStats> {
        let mut samples: Vec<&Transition> = Vec::new();
        let mut advantages = Vec::new();
        let mut returns = Vec::new();
        for episode in episodes {
            for tr in episode {
                if tr.action >= tr.candidates.len() {
                    return Err(OptimizeError::Input(format!(
                        "action {} out of {} candidates",
                        tr.action,
                        tr.candidates.len()
                    )));
                }
            }
            let rewards: Vec<f32> = episode.iter().map(|t| t.reward).collect();
            let values: Vec<f32> = episode.iter().map(|t| t.value).collect();
            let dones: Vec<bool> = episode.iter().map(|t| t.done).collect();
            let (adv, ret) = gae(&rewards, &values, &dones, self.config.gamma, self.config.gae_lambda);
            samples.extend(episode);
            advantages.extend(adv);
            returns.extend(ret);
        }
        if samples.is_empty() {
            return Ok(UpdateStats::default());
        }
        normalise(&mut advantages);

        let vars: Vec<(String, Var)> = self.policy.vars().to_vec();
        let mut sums = UpdateStats::default();
        let mut order: Vec<usize> = (0..samples.len()).collect();
        for _ in 0..self.config.epochs {
            self.rng.shuffle(&mut order);
            for chunk in order.chunks(self.config.minibatch_size) {
                let s = self.minibatch_step(&vars, chunk, &samples, &advantages, &returns)?;
                sums.policy_loss += s.policy_loss;
                sums.value_loss += s.value_loss;
                sums.entropy += s.entropy;
                sums.approx_kl += s.approx_kl;
                sums.clip_fraction += s.clip_fraction;
                sums.grad_norm += s.grad_norm;
                sums.steps += 1;
            }
        }
        self.updates += 1;
        let n = sums.steps.max(1) as f32;
        Ok(UpdateStats {
            policy_loss: sums.policy_loss / n,
            value_loss: sums.value_loss / n,
            entropy: sums.entropy / n,
            approx_kl: sums.approx_kl / n,
            clip_fraction: sums.clip_fraction / n,
            grad_norm: sums.grad_norm / n,
            steps: sums.steps,
        })
    }

    fn minibatch_step(
        &mut self,
        vars: &[(String, Var)],
        idx: &[usize],
        samples: &[&Transition],
        advantages: &[f32],
        returns: &[f32],
    ) -> Result<UpdateStats> {
        let cfg = &self.config;
        let dev = Device::Cpu;
        let b = idx.len();
        let states: Vec<&[f32]> = idx.iter().map(|&i| samples[i].state.as_slice()).collect();
        let sets: Vec<&[Vec<f32>]> = idx.iter().map(|&i| samples[i].candidates.as_slice()).collect();
        let actions: Vec<u32> = idx.iter().map(|&i| samples[i].action as u32).collect();
        let old_logp = Tensor::from_vec(idx.iter().map(|&i| samples[i].logp).collect::<Vec<f32>>(), b, &dev)?;
        let adv = Tensor::from_vec(idx.iter().map(|&i| advantages[i]).collect::<Vec<f32>>(), b, &dev)?;
        let ret = Tensor::from_vec(idx.iter().map(|&i| returns[i]).collect::<Vec<f32>>(), b, &dev)?;
        let actions = Tensor::from_vec(actions, (b, 1), &dev)?;

        let biases: Vec<&[f32]> = idx.iter().map(|&i| samples[i].bias.as_slice()).collect();
        let out = self.policy.log_probs_and_values_with_bias(&states, &sets, &biases)?;
        let logp = out.log_probs.gather(&actions, 1)?.squeeze(1)?;
        let ratio = (&logp - &old_logp)?.exp()?;
        let clip = f64::from(cfg.clip);
        let surr1 = (&ratio * &adv)?;
        let surr2 = (ratio.clamp(1.0 - clip, 1.0 + clip)? * &adv)?;
        let policy_loss = surr1.minimum(&surr2)?.mean_all()?.neg()?;
        let entropy = (out.log_probs.exp()? * &out.log_probs)?.sum(D::Minus1)?.mean_all()?.neg()?;
        let value_loss = (&out.values - &ret)?.sqr()?.mean_all()?;
        let loss =
            ((&policy_loss + (&value_loss * f64::from(cfg.value_coef))?)? - (&entropy * f64::from(cfg.entropy_coef))?)?;

        let mut grads = loss.backward()?;
        let grad_norm = clip_grad_norm(&mut grads, vars, cfg.max_grad_norm)?;
        // A non-finite gradient (a non-finite reward or feature upstream) would turn every
        // weight into NaN for good, checkpoints included: such a step is not taken.
        if grad_norm.is_finite() {
            self.adam.step(vars, &grads)?;
        }

        let ratios = ratio.to_vec1::<f32>()?;
        let approx_kl = ratios.iter().map(|&r| (r - 1.0) - r.ln()).sum::<f32>() / b as f32;
        let clipped = ratios.iter().filter(|&&r| (r - 1.0).abs() > cfg.clip).count() as f32 / b as f32;
        Ok(UpdateStats {
            policy_loss: policy_loss.to_scalar::<f32>()?,
            value_loss: value_loss.to_scalar::<f32>()?,
            entropy: entropy.to_scalar::<f32>()?,
            approx_kl,
            clip_fraction: clipped,
            grad_norm,
            steps: 1,
        })
    }

    /// The current weights, for an anchor policy or a later [`Ppo::restore`].
    pub fn snapshot(&self) -> Result<PolicySnapshot> {
        self.policy.snapshot()
    }

    /// Rolls the weights back to `snapshot` and starts AdamW afresh: the moments belong to the
    /// trajectory being rejected, and kept they would push the weights straight back along it.
    /// The update count and the RNG go on.
    pub fn restore(&mut self, snapshot: &PolicySnapshot) -> Result<()> {
        self.policy.restore(snapshot)?;
        self.adam.reset()
    }

    /// Writes a checkpoint into `dir` (created if needed): `policy.safetensors`,
    /// `optimizer.safetensors` (AdamW moments) and `ppo-state.json`. Resuming from it continues
    /// bit-for-bit like the uninterrupted run.
    pub fn save(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|e| checkpoint_error(dir, e.to_string()))?;
        self.policy.save(&dir.join(POLICY_FILE))?;
        self.adam.save(self.policy.vars(), &dir.join(OPTIMIZER_FILE))?;
        let state = SavedState {
            format: 1,
            dims: self.policy.dims(),
            config: self.config.clone(),
            rng_state: self.rng.state(),
            updates: self.updates,
            adam_step: self.adam.step,
        };
        let path: PathBuf = dir.join(STATE_FILE);
        let json = serde_json::to_string_pretty(&state).map_err(|e| checkpoint_error(&path, e.to_string()))?;
        std::fs::write(&path, json).map_err(|e| checkpoint_error(&path, e.to_string()))?;
        Ok(())
    }

    /// Reads a checkpoint written by [`Ppo::save`].
    pub fn load(dir: &Path) -> Result<Self> {
        let path = dir.join(STATE_FILE);
        let json = std::fs::read_to_string(&path).map_err(|e| checkpoint_error(&path, e.to_string()))?;
        let state: SavedState = serde_json::from_str(&json).map_err(|e| checkpoint_error(&path, e.to_string()))?;
        if state.format != 1 {
            return Err(checkpoint_error(&path, format!("unknown format {}", state.format)));
        }
        let mut ppo = Self::new(state.dims, state.config)?;
        ppo.policy.load(&dir.join(POLICY_FILE))?;
        ppo.adam.load(ppo.policy.vars(), &dir.join(OPTIMIZER_FILE))?;
        ppo.adam.step = state.adam_step;
        ppo.rng = Rng::from_state(state.rng_state);
        ppo.updates = state.updates;
        Ok(ppo)
    }
}

/// Normalises to zero mean and unit (population) standard deviation, in place.
fn normalise(xs: &mut [f32]) {
    if xs.is_empty() {
        return;
    }
    let n = xs.len() as f64;
    let mean = xs.iter().map(|&x| f64::from(x)).sum::<f64>() / n;
    let var = xs.iter().map(|&x| (f64::from(x) - mean).powi(2)).sum::<f64>() / n;
    let std = var.sqrt() + 1e-8;
    for x in xs {
        *x = ((f64::from(*x) - mean) / std) as f32;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gae_matches_a_hand_computed_three_step_example() {
        // γ = 0.9, λ = 0.8, rewards [1, 0, 2], values [0.5, 0.4, 0.3], last step done.
        // δ2 = 2 - 0.3 = 1.7                     A2 = 1.7
        // δ1 = 0 + 0.9·0.3 - 0.4 = -0.13         A1 = -0.13 + 0.72·1.7   = 1.094
        // δ0 = 1 + 0.9·0.4 - 0.5 = 0.86          A0 =  0.86 + 0.72·1.094 = 1.64768
        // returns = A + V = [2.14768, 1.494, 2.0]
        let (adv, ret) = gae(&[1.0, 0.0, 2.0], &[0.5, 0.4, 0.3], &[false, false, true], 0.9, 0.8);
        for (got, want) in adv.iter().zip([1.64768f32, 1.094, 1.7]) {
            assert!((got - want).abs() < 1e-5, "{adv:?}");
        }
        for (got, want) in ret.iter().zip([2.14768f32, 1.494, 2.0]) {
            assert!((got - want).abs() < 1e-5, "{ret:?}");
        }
        // A done in the middle cuts bootstrapping: step 0 sees only its own reward.
        let (adv, _) = gae(&[1.0, 5.0], &[0.25, 0.0], &[true, true], 0.9, 0.8);
        assert!((adv[0] - 0.75).abs() < 1e-6 && (adv[1] - 5.0).abs() < 1e-6);
    }

    #[test]
    fn gradient_clipping_bounds_the_global_norm() {
        let dev = Device::Cpu;
        let a = Var::from_vec(vec![1.0f32, 2.0], 2, &dev).expect("var");
        let b = Var::from_vec(vec![3.0f32], 1, &dev).expect("var");
        let vars = vec![("a".to_string(), a.clone()), ("b".to_string(), b.clone())];
        // loss = 10·sum(a²) + 10·sum(b²): grads 20a = [20, 40], 20b = [60]; norm = 20·√14.
        let loss = ((a.as_tensor().sqr().expect("sqr").sum_all().expect("sum")
            + b.as_tensor().sqr().expect("sqr").sum_all().expect("sum"))
        .expect("add")
            * 10.0)
            .expect("mul");
        let mut grads = loss.backward().expect("backward");
        let norm = clip_grad_norm(&mut grads, &vars, 1.0).expect("clip");
        assert!((norm - 20.0 * 14f32.sqrt()).abs() < 1e-3);
        let ga = grads.get(a.as_tensor()).expect("grad").to_vec1::<f32>().expect("vec");
        let gb = grads.get(b.as_tensor()).expect("grad").to_vec1::<f32>().expect("vec");
        let after = (ga.iter().chain(&gb).map(|x| x * x).sum::<f32>()).sqrt();
        assert!((after - 1.0).abs() < 1e-5, "norm after clipping {after}");
        // Direction kept: [1, 2, 3] / √14.
        assert!((ga[1] / ga[0] - 2.0).abs() < 1e-5 && (gb[0] / ga[0] - 3.0).abs() < 1e-5);
        // Under the bound: untouched.
        let mut grads = loss.backward().expect("backward");
        let norm2 = clip_grad_norm(&mut grads, &vars, 1000.0).expect("clip");
        assert_eq!(norm, norm2);
        assert_eq!(grads.get(a.as_tensor()).expect("grad").to_vec1::<f32>().expect("vec"), vec![20.0, 40.0]);
    }

    #[test]
    fn own_adamw_matches_candle_adamw() {
        use candle_nn::Optimizer;
        let dev = Device::Cpu;
        let mine = Var::from_vec(vec![0.5f32, -1.5, 2.0], 3, &dev).expect("var");
        let theirs = Var::from_vec(vec![0.5f32, -1.5, 2.0], 3, &dev).expect("var");
        let vars = vec![("w".to_string(), mine.clone())];
        let mut adam = AdamW::new(&vars, 0.05, 0.01).expect("adam");
        let params = candle_nn::ParamsAdamW { lr: 0.05, weight_decay: 0.01, ..Default::default() };
        let mut reference = candle_nn::AdamW::new(vec![theirs.clone()], params).expect("adam");
        for _ in 0..5 {
            let loss = mine.as_tensor().powf(3.0).expect("pow").sum_all().expect("sum");
            adam.step(&vars, &loss.backward().expect("backward")).expect("step");
            let loss = theirs.as_tensor().powf(3.0).expect("pow").sum_all().expect("sum");
            reference.backward_step(&loss).expect("step");
        }
        let a = mine.as_tensor().to_vec1::<f32>().expect("vec");
        let b = theirs.as_tensor().to_vec1::<f32>().expect("vec");
        for (x, y) in a.iter().zip(&b) {
            assert!((x - y).abs() < 1e-6, "{a:?} vs {b:?}");
        }
    }

    /// The synthetic task: T steps, N candidates per step with fixed random features and kinds;
    /// one planted right candidate per step (reward 1, else 0).
    struct PlantedEnv {
        dims: PolicyDims,
        candidates: Vec<Vec<Vec<f32>>>,
        right: Vec<usize>,
    }

    const T: usize = 4;
    const N: usize = 8;

    impl PlantedEnv {
        fn new(seed: u64) -> Self {
            let c = 6;
            let kinds = 4;
            // State: one-hot step (T) + one-hot of each earlier action (T × N).
            let dims = PolicyDims { state: T + T * N, candidate: c, kinds };
            let mut rng = Rng::new(seed);
            let candidates = (0..T)
                .map(|_| {
                    (0..N)
                        .map(|_| {
                            let f: Vec<f32> = (0..c).map(|_| rng.normal()).collect();
                            dims.candidate_input(&f, rng.below(kinds)).expect("candidate")
                        })
                        .collect()
                })
                .collect();
            let right = (0..T).map(|_| rng.below(N)).collect();
            Self { dims, candidates, right }
        }

        fn state(&self, step: usize, previous: &[usize]) -> Vec<f32> {
            let mut s = vec![0.0; self.dims.state];
            s[step] = 1.0;
            for (t, &a) in previous.iter().enumerate() {
                s[T + t * N + a] = 1.0;
            }
            s
        }

        fn episode(&self, ppo: &Ppo, rng: &mut Rng, greedy: bool) -> Vec<Transition> {
            let mut previous = Vec::new();
            let mut out = Vec::new();
            for step in 0..T {
                let state = self.state(step, &previous);
                let cands = self.candidates[step].clone();
                let (action, logp, value) = ppo.act(&state, &cands, rng, greedy).expect("act");
                let reward = if action == self.right[step] { 1.0 } else { 0.0 };
                out.push(Transition {
                    state,
                    candidates: cands,
                    action,
                    logp,
                    value,
                    reward,
                    done: step + 1 == T,
                    bias: Vec::new(),
                });
                previous.push(action);
            }
            out
        }
    }

    fn total_reward(episode: &[Transition]) -> f32 {
        episode.iter().map(|t| t.reward).sum()
    }

    #[test]
    fn ppo_finds_a_planted_edit_sequence() {
        let env = PlantedEnv::new(11);
        let config = PpoConfig { seed: 3, ..PpoConfig::default() };
        let mut ppo = Ppo::new(env.dims, config).expect("ppo");
        let mut rng = Rng::new(99);
        let batches = 25;
        let batch = 16;
        let mut rewards = Vec::new();
        for _ in 0..batches {
            let episodes: Vec<Vec<Transition>> = (0..batch).map(|_| env.episode(&ppo, &mut rng, false)).collect();
            rewards.extend(episodes.iter().map(|e| total_reward(e)));
            ppo.update(&episodes).expect("update");
        }
        let last: Vec<f32> = rewards[rewards.len() - 64..].to_vec();
        let mean_last = last.iter().sum::<f32>() / last.len() as f32;
        let mean_first = rewards[..64].iter().sum::<f32>() / 64.0;
        eprintln!("episodes {} first-64 mean {mean_first} last-64 mean {mean_last}", rewards.len());
        assert!(mean_last > 3.0, "mean reward over the last 64 episodes {mean_last} (chance 0.5)");
        let greedy = env.episode(&ppo, &mut rng, true);
        let chosen: Vec<usize> = greedy.iter().map(|t| t.action).collect();
        assert_eq!(chosen, env.right, "greedy rollout must reproduce the planted sequence");
    }

    fn probe_logits(ppo: &Ppo, env: &PlantedEnv) -> (Vec<f32>, f32) {
        ppo.policy().logits_and_value(&env.state(1, &[2]), &env.candidates[1]).expect("probe")
    }

    /// Runs updates `from..to`; episodes of update `u` are sampled with `Rng::new(1000 + u)`.
    fn train(ppo: &mut Ppo, env: &PlantedEnv, from: u64, to: u64) {
        for u in from..to {
            let mut rng = Rng::new(1000 + u);
            let episodes: Vec<Vec<Transition>> = (0..8).map(|_| env.episode(ppo, &mut rng, false)).collect();
            ppo.update(&episodes).expect("update");
        }
    }

    #[test]
    fn resume_from_checkpoint_matches_uninterrupted() {
        let env = PlantedEnv::new(5);
        let config = PpoConfig { seed: 8, minibatch_size: 12, ..PpoConfig::default() };
        let (n, m) = (3, 3);

        let mut straight = Ppo::new(env.dims, config.clone()).expect("ppo");
        train(&mut straight, &env, 0, n + m);

        let dir = std::env::temp_dir().join(format!("reprompt-ppo-resume-{}", std::process::id()));
        let mut first = Ppo::new(env.dims, config).expect("ppo");
        train(&mut first, &env, 0, n);
        first.save(&dir).expect("save");
        let before_load = probe_logits(&first, &env);
        drop(first);
        let mut resumed = Ppo::load(&dir).expect("load");
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(probe_logits(&resumed, &env), before_load);
        assert_eq!(resumed.updates(), n);
        train(&mut resumed, &env, n, n + m);

        assert_eq!(resumed.updates(), straight.updates());
        assert_eq!(probe_logits(&resumed, &env), probe_logits(&straight, &env));
        // And the run actually moved the policy.
        let fresh = Ppo::new(env.dims, PpoConfig { seed: 8, ..PpoConfig::default() }).expect("ppo");
        assert_ne!(probe_logits(&fresh, &env), probe_logits(&straight, &env));
    }

    #[test]
    fn snapshot_restore_rolls_back_training() {
        let env = PlantedEnv::new(2);
        let mut ppo = Ppo::new(env.dims, PpoConfig::default()).expect("ppo");
        let anchor = ppo.snapshot().expect("snapshot");
        let before = probe_logits(&ppo, &env);
        train(&mut ppo, &env, 0, 2);
        assert_ne!(probe_logits(&ppo, &env), before);
        assert!(ppo.adam.step > 0);
        ppo.restore(&anchor).expect("restore");
        assert_eq!(probe_logits(&ppo, &env), before);
        // The rejected trajectory's momentum is gone with it.
        assert_eq!(ppo.adam.step, 0);
        for (m, v) in &ppo.adam.moments {
            for t in [m, v] {
                assert_eq!(t.abs().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap(), 0.0);
            }
        }
        assert!(ppo.updates() > 0, "the update count goes on");
    }

    #[test]
    fn logit_biases_steer_acting_and_are_replayed_in_the_update() {
        let dims = PolicyDims { state: 2, candidate: 1, kinds: 1 };
        let mut ppo = Ppo::new(dims, PpoConfig { epochs: 1, ..PpoConfig::default() }).expect("ppo");
        let state = [0.3f32, -0.2];
        let cands = vec![vec![0.1f32, 1.0], vec![-0.4, 1.0], vec![0.9, 1.0]];
        let (plain, _) = ppo.policy().logits_and_value(&state, &cands).expect("logits");
        let bias = [0.0f32, 3.0, -1.0];
        let (biased, _) = ppo.policy().logits_and_value_with_bias(&state, &cands, &bias).expect("logits");
        for i in 0..3 {
            assert!((biased[i] - plain[i] - bias[i]).abs() < 1e-5);
        }
        assert!(ppo.policy().logits_and_value_with_bias(&state, &cands, &[1.0]).is_err(), "one bias per candidate");
        let mut rng = Rng::new(3);
        let picks =
            (0..200).filter(|_| ppo.act_with_bias(&state, &cands, &bias, &mut rng, false).unwrap().0 == 1).count();
        assert!(picks > 150, "the biased candidate was picked {picks} of 200 times");
        // Acting and updating see the same probabilities: the first ratio is exactly 1.
        let (action, logp, value) = ppo.act_with_bias(&state, &cands, &bias, &mut rng, false).unwrap();
        let tr = Transition {
            state: state.to_vec(),
            candidates: cands.clone(),
            action,
            logp,
            value,
            reward: 1.0,
            done: true,
            bias: bias.to_vec(),
        };
        let stats = ppo.update(&[vec![tr]]).expect("update");
        assert!(stats.approx_kl.abs() < 1e-6 && stats.clip_fraction == 0.0, "{stats:?}");
    }

    #[test]
    fn a_non_finite_reward_does_not_poison_the_weights() {
        let dims = PolicyDims { state: 2, candidate: 1, kinds: 1 };
        let mut ppo = Ppo::new(dims, PpoConfig::default()).expect("ppo");
        let step = |reward: f32| Transition {
            state: vec![0.2, -0.1],
            candidates: vec![vec![0.5, 1.0], vec![-0.5, 1.0]],
            action: 0,
            logp: -std::f32::consts::LN_2,
            value: 0.0,
            reward,
            done: false,
            bias: Vec::new(),
        };
        ppo.update(&[vec![step(1.0), step(f32::NAN)]]).expect("update");
        let (logits, value) = ppo.policy().logits_and_value(&[0.2, -0.1], &[vec![0.5, 1.0]]).expect("logits");
        assert!(logits.iter().all(|l| l.is_finite()) && value.is_finite(), "{logits:?} {value}");
    }

    #[test]
    fn update_rejects_out_of_range_actions() {
        let dims = PolicyDims { state: 2, candidate: 1, kinds: 1 };
        let mut ppo = Ppo::new(dims, PpoConfig::default()).expect("ppo");
        let tr = Transition {
            state: vec![0.0, 1.0],
            candidates: vec![vec![0.5, 1.0]],
            action: 1,
            logp: 0.0,
            value: 0.0,
            reward: 1.0,
            done: true,
            bias: Vec::new(),
        };
        assert!(ppo.update(&[vec![tr]]).is_err());
        assert_eq!(ppo.update(&[]).expect("empty"), UpdateStats::default());
    }
}
