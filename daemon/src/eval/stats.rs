//! Intervals and stabilisation: Wilson intervals for proportions, seeded bootstrap intervals
//! for everything else, paired differences, and RLPrompt's z-score across a batch of prompts.

use serde::{Deserialize, Serialize};

use crate::optimize::rng::Rng;

/// A mean with a 95% interval.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Interval {
    pub mean: f64,
    pub low: f64,
    pub high: f64,
}

const Z95: f64 = 1.959_963_984_540_054;

/// Wilson score interval of `successes` out of `n`.
pub fn wilson(successes: f64, n: usize) -> Interval {
    if n == 0 {
        return Interval { mean: 0.0, low: 0.0, high: 0.0 };
    }
    let n = n as f64;
    let p = successes / n;
    let z2 = Z95 * Z95;
    let denominator = 1.0 + z2 / n;
    let center = (p + z2 / (2.0 * n)) / denominator;
    let half = Z95 * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt() / denominator;
    Interval { mean: p, low: (center - half).max(0.0), high: (center + half).min(1.0) }
}

/// Percentile bootstrap interval of the mean (1000 resamples, seeded: reproducible).
pub fn bootstrap(values: &[f64], seed: u64) -> Interval {
    let n = values.len();
    if n == 0 {
        return Interval { mean: 0.0, low: 0.0, high: 0.0 };
    }
    let mean = values.iter().sum::<f64>() / n as f64;
    let mut rng = Rng::new(seed);
    let mut means: Vec<f64> = (0..1000).map(|_| (0..n).map(|_| values[rng.below(n)]).sum::<f64>() / n as f64).collect();
    means.sort_by(f64::total_cmp);
    Interval { mean, low: means[25], high: means[974] }
}

/// Whether every value is 0 or 1 (then Wilson applies).
pub fn is_proportion(values: &[f64]) -> bool {
    values.iter().all(|v| *v == 0.0 || *v == 1.0)
}

/// The interval appropriate to `values` and its method: Wilson for 0/1 outcomes, bootstrap
/// otherwise.
pub fn interval(values: &[f64]) -> (Interval, &'static str) {
    if is_proportion(values) {
        (wilson(values.iter().sum(), values.len()), "wilson")
    } else {
        (bootstrap(values, values.len() as u64), "bootstrap")
    }
}

/// Paired difference `b − a` over the same examples, with its bootstrap interval.
pub fn paired_difference(a: &[f64], b: &[f64]) -> Interval {
    debug_assert_eq!(a.len(), b.len(), "a paired difference pairs every example");
    let diffs: Vec<f64> = a.iter().zip(b).map(|(x, y)| y - x).collect();
    bootstrap(&diffs, 7)
}

/// RLPrompt's stabilisation: z-scores of rewards across the prompts of one batch
/// (`(r − mean) / (std + 1e-4)`).
pub fn z_scores(rewards: &[f64]) -> Vec<f64> {
    if rewards.is_empty() {
        return Vec::new();
    }
    let n = rewards.len() as f64;
    let mean = rewards.iter().sum::<f64>() / n;
    let std = (rewards.iter().map(|r| (r - mean).powi(2)).sum::<f64>() / n).sqrt();
    rewards.iter().map(|r| (r - mean) / (std + 1e-4)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wilson_matches_hand_computation() {
        // 8 of 10: center (0.8 + 0.19208) / 1.38415 = 0.71678, half 0.22761 → [0.4902, 0.9433]
        let w = wilson(8.0, 10);
        assert!((w.low - 0.4902).abs() < 1e-3 && (w.high - 0.9433).abs() < 1e-3, "{w:?}");
        assert_eq!(wilson(0.0, 0).mean, 0.0);
    }

    #[test]
    fn z_scores_center_and_scale() {
        let z = z_scores(&[1.0, 2.0, 3.0]);
        // mean 2, population std sqrt(2/3) = 0.8165
        assert!((z[0] + 1.2245).abs() < 1e-3 && z[1].abs() < 1e-9 && (z[2] - 1.2245).abs() < 1e-3, "{z:?}");
    }

    #[test]
    fn bootstrap_is_reproducible_and_brackets_the_mean() {
        let values: Vec<f64> = (0..50).map(|i| (i % 7) as f64 / 3.0).collect();
        let a = bootstrap(&values, 1);
        assert_eq!(a, bootstrap(&values, 1));
        assert!(a.low <= a.mean && a.mean <= a.high && a.low < a.high);
    }
}
