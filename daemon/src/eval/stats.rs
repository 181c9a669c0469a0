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
    let means: Vec<f64> =
        (0..RESAMPLES).map(|_| (0..n).map(|_| values[rng.below(n)]).sum::<f64>() / n as f64).collect();
    percentiles(mean, means)
}

const RESAMPLES: usize = 1000;

/// The mean with the 2.5th and 97.5th percentiles of its resampled values.
fn percentiles(mean: f64, mut resampled: Vec<f64>) -> Interval {
    resampled.sort_by(f64::total_cmp);
    Interval { mean, low: resampled[RESAMPLES / 40], high: resampled[RESAMPLES - RESAMPLES / 40 - 1] }
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
    assert_eq!(a.len(), b.len(), "a paired difference pairs every example");
    let diffs: Vec<f64> = a.iter().zip(b).map(|(x, y)| y - x).collect();
    bootstrap(&diffs, 7)
}

/// Runs of two sides on one group of examples: `(a, b)`, each run one score per example.
pub type RunsOf<'a> = (&'a [Vec<f64>], &'a [Vec<f64>]);

/// The difference `b − a` of searches that were each run several times: per group, the mean
/// of b's runs minus the mean of a's, averaged over the groups, with a two-level bootstrap
/// interval. Each resample draws the examples once (every group scores the same examples, so
/// they are not independent across groups) and, in every group, each side's runs with
/// replacement; the groups themselves are fixed. The interval thus covers both how the
/// examples fall and how lucky each run was, where one level alone understates the
/// uncertainty. With one run per side everywhere it is `paired_difference` of the
/// group-averaged scores. A side's `m > 1` runs are resampled with their spread around their
/// mean widened by `√(m / (m − 1))`: drawn as they are, m runs show a spread of their mean
/// (m − 1)/m of the unbiased one, a third too little with three runs.
/// Every run scores the same `n > 0` examples and no side is empty.
pub fn paired_difference_over_runs(groups: &[RunsOf], seed: u64) -> Interval {
    let n = groups.first().and_then(|(a, _)| a.first()).map_or(0, Vec::len);
    let mut runs = groups.iter().flat_map(|(a, b)| a.iter().chain(b.iter()));
    let uneven = groups.iter().any(|(a, b)| a.is_empty() || b.is_empty()) || runs.any(|r| r.len() != n);
    assert!(n > 0 && !uneven, "every run of every side scores the same examples");
    let every: Vec<usize> = (0..n).collect();
    let mean = groups.iter().map(|(a, b)| side_mean(b, &every, None) - side_mean(a, &every, None)).sum::<f64>()
        / groups.len() as f64;
    let mut rng = Rng::new(seed);
    let resampled: Vec<f64> = (0..RESAMPLES)
        .map(|_| {
            let examples: Vec<usize> = (0..n).map(|_| rng.below(n)).collect();
            let mut total = 0.0;
            for (a, b) in groups {
                let a = side_mean(a, &examples, Some(&mut rng));
                total += side_mean(b, &examples, Some(&mut rng)) - a;
            }
            total / groups.len() as f64
        })
        .collect();
    percentiles(mean, resampled)
}

/// The mean score of a side's runs on `examples`: each run once, or as many runs drawn with
/// replacement, their mean's distance from all runs' mean widened by `√(m / (m − 1))` (a
/// lone run is kept without a draw, so one run per side resamples as `paired_difference` does).
fn side_mean(runs: &[Vec<f64>], examples: &[usize], rng: Option<&mut Rng>) -> f64 {
    let m = runs.len();
    let scores: Vec<f64> =
        runs.iter().map(|run| examples.iter().map(|&i| run[i]).sum::<f64>() / examples.len() as f64).collect();
    let all = scores.iter().sum::<f64>() / m as f64;
    match rng {
        Some(rng) if m > 1 => {
            let drawn = (0..m).map(|_| scores[rng.below(m)]).sum::<f64>() / m as f64;
            all + (m as f64 / (m - 1) as f64).sqrt() * (drawn - all)
        }
        _ => all,
    }
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
    fn one_run_a_side_resamples_as_the_paired_difference_of_the_averaged_groups() {
        let run = |seed: u64| -> Vec<f64> {
            let mut rng = Rng::new(seed);
            (0..40).map(|_| if rng.below(10) < 7 { 1.0 } else { 0.0 }).collect()
        };
        let (a1, b1, a2, b2) = (vec![run(1)], vec![run(2)], vec![run(3)], vec![run(4)]);
        let over_runs = paired_difference_over_runs(&[(&a1, &b1), (&a2, &b2)], 7);
        let average = |x: &[f64], y: &[f64]| x.iter().zip(y).map(|(p, q)| (p + q) / 2.0).collect::<Vec<f64>>();
        let plain = paired_difference(&average(&a1[0], &a2[0]), &average(&b1[0], &b2[0]));
        for (x, y) in [(over_runs.mean, plain.mean), (over_runs.low, plain.low), (over_runs.high, plain.high)] {
            assert!((x - y).abs() < 1e-12, "{over_runs:?} {plain:?}");
        }
    }

    #[test]
    fn runs_that_disagree_widen_the_interval_beyond_the_examples_alone() {
        let n = 200;
        let hits = |k: usize| (0..n).map(|i| if i < k { 1.0 } else { 0.0 }).collect::<Vec<f64>>();
        // b's runs average 0.75 either way; a's are all 0.70. Steady runs know the difference
        // up to the examples; runs at 0.65, 0.65 and 0.95 could have gone either way.
        let a = vec![hits(140), hits(140), hits(140)];
        let (steady_runs, spread_runs) = (vec![hits(150), hits(150), hits(150)], vec![hits(130), hits(130), hits(190)]);
        let steady = paired_difference_over_runs(&[(&a, &steady_runs)], 3);
        let spread = paired_difference_over_runs(&[(&a, &spread_runs)], 3);
        assert!((steady.mean - 0.05).abs() < 1e-12 && (spread.mean - 0.05).abs() < 1e-12);
        assert!(steady.low > 0.0, "the same 10 extra examples in every run: {steady:?}");
        assert!(spread.high - spread.low > 3.0 * (steady.high - steady.low), "{steady:?} {spread:?}");
        assert!(spread.low < 0.0 && spread.high > 0.1, "{spread:?}");
        assert_eq!(spread, paired_difference_over_runs(&[(&a, &spread_runs)], 3), "seeded: reproducible");
    }

    #[test]
    fn three_runs_are_resampled_with_their_unbiased_spread() {
        // Runs that score 0.6, 0.7 and 0.8 on every example: only the runs move the mean.
        // Their mean's unbiased spread is √(1.5) times what drawing them as they are shows, so
        // the extreme draws (all three 0.6, or all 0.8: 1 in 27 each, about the 2.5th
        // percentile) lie 0.1·√1.5 from the mean, not 0.1: the interval is wider than ±0.1,
        // the most that drawing the runs as they are could give.
        let n = 50;
        let a: Vec<Vec<f64>> = [0.6, 0.7, 0.8].iter().map(|&x| vec![x; n]).collect();
        let b = vec![vec![0.7; n]];
        let d = paired_difference_over_runs(&[(&a, &b)], 11);
        let widened = 0.1 * 1.5f64.sqrt();
        assert!(d.mean.abs() < 1e-12, "{d:?}");
        assert!(d.low >= -widened - 1e-9 && d.high <= widened + 1e-9, "{d:?}");
        assert!((d.high - widened).abs() < 1e-9 || (d.low + widened).abs() < 1e-9, "{d:?}");
        assert!(d.high - d.low > 0.2, "{d:?}");
    }

    #[test]
    #[should_panic(expected = "same examples")]
    fn runs_of_different_lengths_are_refused() {
        let a = vec![vec![1.0; 5]];
        let b = vec![vec![1.0; 4]];
        paired_difference_over_runs(&[(&a, &b)], 1);
    }

    #[test]
    fn bootstrap_is_reproducible_and_brackets_the_mean() {
        let values: Vec<f64> = (0..50).map(|i| (i % 7) as f64 / 3.0).collect();
        let a = bootstrap(&values, 1);
        assert_eq!(a, bootstrap(&values, 1));
        assert!(a.low <= a.mean && a.mean <= a.high && a.low < a.high);
    }
}
