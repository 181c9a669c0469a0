//! Calibration of a classification prompt's label prior: the per-label log-probability offsets
//! (`reprompt.label_bias`) under which the prompt's answers on its training examples spread
//! over the labels as the gold answers do (prior matching, Saerens et al. 2002).
//!
//! A small model often leans towards one label whatever the input (the example prompt answers
//! `great` for nearly every review): the ranking of the inputs can be good while the answers
//! are not. Offsets fitted on the training examples move the decision point back; on SST-2
//! development sentences they lifted every label pair tried, by 0.4 to 17 points, to within a
//! point of the best offset chosen in hindsight (BENCHMARKS.md).

/// Fewest examples a calibration is fitted on.
pub const MIN_EXAMPLES: usize = 8;

/// Largest offset written (a prompt this lopsided is not saved by calibration).
const MAX_OFFSET: f64 = 20.0;

/// The offsets, first label's 0 and rounded to two decimals, that make each label's mean
/// probability over `examples` (each: the label probabilities the prompt gave, its `current`
/// offsets applied, and the gold label) equal to its share of the gold labels (add-one
/// smoothed). `None` with fewer than [`MIN_EXAMPLES`] examples, fewer than two labels, or
/// probabilities of the wrong length.
pub fn prior_bias(examples: &[(&[f64], usize)], current: &[f64]) -> Option<Vec<f64>> {
    let classes = examples.first()?.0.len();
    if examples.len() < MIN_EXAMPLES
        || classes < 2
        || examples.iter().any(|(p, gold)| p.len() != classes || *gold >= classes)
        || (!current.is_empty() && current.len() != classes)
    {
        return None;
    }
    let offset = |k: usize| current.get(k).copied().unwrap_or(0.0);
    // The model's own log-probabilities, up to a constant per example.
    let raw: Vec<Vec<f64>> = examples
        .iter()
        .map(|(p, _)| p.iter().enumerate().map(|(k, &q)| q.max(1e-12).ln() - offset(k)).collect())
        .collect();
    let n = examples.len() as f64;
    let target: Vec<f64> = (0..classes)
        .map(|k| (examples.iter().filter(|(_, g)| *g == k).count() as f64 + 1.0) / (n + classes as f64))
        .collect();
    let mut bias = vec![0.0; classes];
    for _ in 0..500 {
        let mut mean = vec![0.0; classes];
        for row in &raw {
            let top = row.iter().zip(&bias).map(|(l, b)| l + b).fold(f64::NEG_INFINITY, f64::max);
            let e: Vec<f64> = row.iter().zip(&bias).map(|(l, b)| (l + b - top).exp()).collect();
            let total: f64 = e.iter().sum();
            for (m, x) in mean.iter_mut().zip(&e) {
                *m += x / total / n;
            }
        }
        let steps: Vec<f64> = target.iter().zip(&mean).map(|(t, m)| (t / m.max(1e-300)).ln()).collect();
        for (b, s) in bias.iter_mut().zip(&steps) {
            *b = (*b + s).clamp(-2.0 * MAX_OFFSET, 2.0 * MAX_OFFSET);
        }
        if steps.iter().all(|s| s.abs() < 1e-7) {
            break;
        }
    }
    let first = bias[0];
    Some(bias.iter().map(|b| ((b - first).clamp(-MAX_OFFSET, MAX_OFFSET) * 100.0).round() / 100.0 + 0.0).collect())
}

/// The label probabilities a prompt gives under offsets `to`, from those it gave under offsets
/// `from` (`q_k ∝ p_k · exp(to_k − from_k)`, missing offsets 0): the offsets act after the
/// model, so a prompt that differs from a scored one only in its `reprompt.label_bias` needs
/// no model call. `None` where a probability is zero or not finite (the model's own value is
/// lost there).
pub fn rebiased(probabilities: &[f64], from: &[f64], to: &[f64]) -> Option<Vec<f64>> {
    if probabilities.is_empty() || probabilities.iter().any(|p| !p.is_finite() || *p <= 0.0) {
        return None;
    }
    let at = |b: &[f64], k: usize| b.get(k).copied().unwrap_or(0.0);
    let delta: Vec<f64> = (0..probabilities.len()).map(|k| at(to, k) - at(from, k)).collect();
    Some(crate::eval::rewards::biased_probabilities(probabilities, &delta))
}

/// The `reprompt.label_bias` value for `bias`: `[0, 0.85]`.
pub fn bias_value(bias: &[f64]) -> String {
    let number = |b: &f64| {
        let s = format!("{b:.2}");
        let s = s.trim_end_matches('0').trim_end_matches('.');
        if s == "-0" { "0".to_string() } else { s.to_string() }
    };
    format!("[{}]", bias.iter().map(number).collect::<Vec<_>>().join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two-label probabilities with log-odds `x` for the second label.
    fn two(x: f64) -> Vec<f64> {
        let p = 1.0 / (1.0 + (-x).exp());
        vec![1.0 - p, p]
    }

    fn accuracy(rows: &[(Vec<f64>, usize)], bias: &[f64]) -> f64 {
        let right = rows
            .iter()
            .filter(|(p, g)| {
                let q = crate::eval::rewards::biased_probabilities(p, bias);
                (q[1] > q[0]) == (*g == 1)
            })
            .count();
        right as f64 / rows.len() as f64
    }

    #[test]
    fn probabilities_under_other_offsets_are_the_models_under_those_offsets() {
        // What the evaluator gives with offsets written, from the model's own probabilities.
        let model = [vec![0.7, 0.2, 0.1], vec![0.05, 0.15, 0.8], vec![0.3, 0.3, 0.4]];
        let (from, to) = (vec![0.0, 1.25, -0.5], vec![0.0, -2.0, 3.0]);
        for p in &model {
            let under_from = crate::eval::rewards::biased_probabilities(p, &from);
            let want = crate::eval::rewards::biased_probabilities(p, &to);
            let got = rebiased(&under_from, &from, &to).expect("positive probabilities");
            assert!(got.iter().zip(&want).all(|(g, w)| (g - w).abs() < 1e-12), "{got:?} vs {want:?}");
            // No offsets at all is offsets of 0; missing ones count as 0.
            let plain = rebiased(&under_from, &from, &[]).unwrap();
            assert!(plain.iter().zip(p).all(|(g, w)| (g - w).abs() < 1e-12), "{plain:?} vs {p:?}");
        }
        // The answer moves with the offsets: label 0 wins as the model gave it, label 2 under `to`.
        let q = rebiased(&model[0], &[], &to).unwrap();
        assert!(q[2] > q[0] && q[2] > q[1], "{q:?}");
        // A probability that underflowed cannot be undone.
        assert_eq!(rebiased(&[1.0, 0.0], &[], &[0.0, 5.0]), None);
        assert_eq!(rebiased(&[], &[], &[]), None);
    }

    #[test]
    fn a_prompt_that_leans_to_one_label_is_moved_back() {
        // Gold 1 inputs have log-odds 3..5, gold 0 inputs 1..3: the prompt answers label 1
        // for everything (50%); the fitted offset splits the two groups (100%).
        let rows: Vec<(Vec<f64>, usize)> = (0..20)
            .map(|i| {
                let gold = i % 2;
                (two(1.0 + 2.0 * gold as f64 + f64::from(i as u32 % 5) * 0.4), gold)
            })
            .collect();
        let view: Vec<(&[f64], usize)> = rows.iter().map(|(p, g)| (p.as_slice(), *g)).collect();
        assert_eq!(accuracy(&rows, &[]), 0.5);
        let bias = prior_bias(&view, &[]).expect("fitted");
        assert_eq!(bias[0], 0.0);
        assert!(bias[1] < -2.0 && bias[1] > -5.0, "{bias:?}");
        assert_eq!(accuracy(&rows, &bias), 1.0, "{bias:?}");
        // Fitting again on the calibrated probabilities gives the same offsets: the current
        // bias is taken out first.
        let calibrated: Vec<(Vec<f64>, usize)> =
            rows.iter().map(|(p, g)| (crate::eval::rewards::biased_probabilities(p, &bias), *g)).collect();
        let view: Vec<(&[f64], usize)> = calibrated.iter().map(|(p, g)| (p.as_slice(), *g)).collect();
        let again = prior_bias(&view, &bias).expect("fitted");
        assert!(again.iter().zip(&bias).all(|(a, b)| (a - b).abs() <= 0.011), "{again:?} vs {bias:?}");
    }

    #[test]
    fn each_label_gets_its_share_of_three() {
        // Three labels, the model always favouring label 2 by a constant: the offsets undo it.
        let rows: Vec<(Vec<f64>, usize)> = (0..30)
            .map(|i| {
                let gold = i % 3;
                let mut logits = [0.0, 0.0, 2.5];
                logits[gold] += 1.5;
                let total: f64 = logits.iter().map(|l: &f64| l.exp()).sum();
                (logits.iter().map(|l| l.exp() / total).collect(), gold)
            })
            .collect();
        let view: Vec<(&[f64], usize)> = rows.iter().map(|(p, g)| (p.as_slice(), *g)).collect();
        let bias = prior_bias(&view, &[]).expect("fitted");
        assert!(bias[1].abs() < 0.05 && bias[2] < -2.0, "{bias:?}");
        let right = rows
            .iter()
            .filter(|(p, g)| {
                let q = crate::eval::rewards::biased_probabilities(p, &bias);
                (0..3).max_by(|&a, &b| q[a].total_cmp(&q[b])) == Some(*g)
            })
            .count();
        assert_eq!(right, 30);
    }

    #[test]
    fn too_few_or_mismatched_examples_fit_nothing() {
        let p = two(1.0);
        let few: Vec<(&[f64], usize)> = (0..MIN_EXAMPLES - 1).map(|i| (p.as_slice(), i % 2)).collect();
        assert_eq!(prior_bias(&few, &[]), None);
        let q = [0.2, 0.3, 0.5];
        let mixed: Vec<(&[f64], usize)> =
            (0..10).map(|i| if i == 3 { (&q[..], 0) } else { (p.as_slice(), i % 2) }).collect();
        assert_eq!(prior_bias(&mixed, &[]), None);
        let bad_gold: Vec<(&[f64], usize)> = (0..10).map(|i| (p.as_slice(), 2 + i % 2)).collect();
        assert_eq!(prior_bias(&bad_gold, &[]), None);
    }

    #[test]
    fn offsets_are_written_short() {
        assert_eq!(bias_value(&[0.0, -0.85]), "[0, -0.85]");
        assert_eq!(bias_value(&[0.0, 1.5, -0.0, 2.0]), "[0, 1.5, 0, 2]");
    }
}
