//! Rewards, one small named function each, all pure and tested on hand-computed cases.
//!
//! Classification: `accuracy` and RLPrompt's gap reward. Generation: `exact_match` and token
//! `f1` (SQuAD normalisation), `numeric_match` (GSM8K `#### n`), `contains`, `regex`.
//! Likelihood: `logprob`, `perplexity`, `perplexity_f1`. Label-free: `json_schema`, `length`,
//! `consistency`. Weighted sums and z-score stabilisation live with the evaluation.

/// 1 if the predicted label is the gold one.
pub fn accuracy(predicted: usize, gold: usize) -> f64 {
    if predicted == gold { 1.0 } else { 0.0 }
}

/// Label probabilities normalised over the label words only, from their log-probabilities;
/// uniform where none has any probability (every log-probability −∞).
pub fn label_probabilities(logprobs: &[f32]) -> Vec<f64> {
    let max = logprobs.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    if max == f64::NEG_INFINITY {
        return vec![1.0 / logprobs.len() as f64; logprobs.len()];
    }
    let exps: Vec<f64> = logprobs.iter().map(|&l| (l as f64 - max).exp()).collect();
    let total: f64 = exps.iter().sum();
    exps.iter().map(|e| e / total).collect()
}

/// Each label's probability when labels have several answer words: the sum of its words'
/// probabilities (`probabilities` over all words, label by label, `sizes[k]` words for label `k`).
pub fn group_probabilities(probabilities: &[f64], sizes: &[usize]) -> Vec<f64> {
    let mut start = 0;
    sizes
        .iter()
        .map(|&n| {
            let p = probabilities[start..start + n].iter().sum();
            start += n;
            p
        })
        .collect()
}

/// Each label's probability from its words' log-probabilities (`sizes[k]` words for label
/// `k`, label by label); uniform over the labels where no word has any probability.
pub fn label_group_probabilities(logprobs: &[f32], sizes: &[usize]) -> Vec<f64> {
    if logprobs.iter().all(|&l| l == f32::NEG_INFINITY) {
        return vec![1.0 / sizes.len() as f64; sizes.len()];
    }
    group_probabilities(&label_probabilities(logprobs), sizes)
}

/// Label probabilities shifted by per-label log-probability offsets (`reprompt.label_bias`)
/// and normalised again: `q_k ∝ p_k · exp(b_k)`. Offsets beyond the labels are ignored, missing
/// ones count as 0.
pub fn biased_probabilities(probabilities: &[f64], bias: &[f64]) -> Vec<f64> {
    let top = bias.iter().copied().fold(f64::NEG_INFINITY, f64::max).max(0.0);
    let shifted: Vec<f64> =
        probabilities.iter().enumerate().map(|(k, p)| p * (bias.get(k).copied().unwrap_or(0.0) - top).exp()).collect();
    let total: f64 = shifted.iter().sum();
    if total > 0.0 && total.is_finite() { shifted.iter().map(|q| q / total).collect() } else { probabilities.to_vec() }
}

/// RLPrompt's reward: `Gap = P(gold) − max P(other)`, times 200 when correct (Gap > 0) and 180
/// otherwise (Deng et al. 2022, `fsc_reward.py`).
pub fn gap(probabilities: &[f64], gold: usize) -> f64 {
    let p_gold = probabilities[gold];
    let p_other = probabilities.iter().enumerate().filter(|(i, _)| *i != gold).map(|(_, p)| *p).fold(0.0, f64::max);
    let gap = p_gold - p_other;
    gap * if gap > 0.0 { 200.0 } else { 180.0 }
}

/// The label a model predicts: the most probable, the first of equals (a tie leans to no
/// label but the first).
pub fn predicted_label(probabilities: &[f64]) -> usize {
    let mut best = 0;
    for (k, p) in probabilities.iter().enumerate() {
        if p.total_cmp(&probabilities[best]).is_gt() {
            best = k;
        }
    }
    best
}

/// SQuAD answer normalisation: lower case, ASCII punctuation removed (`U.S.` → `us`), no
/// articles, single spaces.
pub fn normalize_answer(text: &str) -> String {
    let lowered: String = text.to_lowercase().chars().filter(|c| !c.is_ascii_punctuation()).collect();
    lowered.split_whitespace().filter(|w| !matches!(*w, "a" | "an" | "the")).collect::<Vec<_>>().join(" ")
}

pub fn exact_match(prediction: &str, gold: &str) -> f64 {
    if normalize_answer(prediction) == normalize_answer(gold) { 1.0 } else { 0.0 }
}

/// SQuAD token F1 between normalised prediction and gold.
pub fn token_f1(prediction: &str, gold: &str) -> f64 {
    let p = normalize_answer(prediction);
    let g = normalize_answer(gold);
    let p: Vec<&str> = p.split_whitespace().collect();
    let g: Vec<&str> = g.split_whitespace().collect();
    if p.is_empty() || g.is_empty() {
        return if p.is_empty() && g.is_empty() { 1.0 } else { 0.0 };
    }
    let mut remaining = g.clone();
    let mut common = 0usize;
    for token in &p {
        if let Some(i) = remaining.iter().position(|t| t == token) {
            remaining.swap_remove(i);
            common += 1;
        }
    }
    if common == 0 {
        return 0.0;
    }
    let precision = common as f64 / p.len() as f64;
    let recall = common as f64 / g.len() as f64;
    2.0 * precision * recall / (precision + recall)
}

fn clean_number(text: &str) -> Option<f64> {
    let cleaned: String = text.chars().filter(|c| *c != ',' && *c != '$').collect();
    let cleaned = cleaned.trim_end_matches('.');
    cleaned.parse::<f64>().ok()
}

/// Numbers in `text` in order (`1,234.5`, `-3`, `$18`).
fn numbers(text: &str) -> Vec<f64> {
    let mut out = Vec::new();
    let mut current = String::new();
    let flush = |current: &mut String, out: &mut Vec<f64>| {
        if let Some(n) = clean_number(current) {
            out.push(n);
        }
        current.clear();
    };
    let chars: Vec<char> = text.chars().collect();
    let digit_at = |i: usize| chars.get(i).is_some_and(char::is_ascii_digit);
    for (i, &c) in chars.iter().enumerate() {
        // `1,234` groups thousands (exactly three digits follow); `1,2,3` is three numbers.
        let thousands = c == ',' && digit_at(i + 1) && digit_at(i + 2) && digit_at(i + 3) && !digit_at(i + 4);
        // A minus is a sign only at the start of a word (`-3`), not inside one (`COVID-19`);
        // so is a point that starts a number (`.5`).
        let starts_word = i == 0 || !chars[i - 1].is_alphanumeric();
        let point_digit = |j: usize| chars.get(j) == Some(&'.') && digit_at(j + 1);
        let sign = c == '-' && (digit_at(i + 1) || point_digit(i + 1)) && starts_word;
        let leading_point = point_digit(i) && starts_word && !(i > 0 && chars[i - 1] == '.');
        let continues = c.is_ascii_digit()
            || thousands && !current.is_empty()
            || c == '.' && !current.is_empty() && digit_at(i + 1)
            || (sign || leading_point) && current.is_empty();
        if continues {
            current.push(c);
        } else if !current.is_empty() {
            flush(&mut current, &mut out);
        }
    }
    if !current.is_empty() {
        flush(&mut current, &mut out);
    }
    out
}

/// The gold number of a GSM8K answer: what follows `####` (commas removed).
pub fn gsm8k_gold(answer: &str) -> Option<f64> {
    let after = answer.rsplit_once("####").map(|(_, a)| a)?;
    numbers(after).into_iter().next()
}

/// The number a model's output answers with: after its last `####` if it wrote one, else the
/// last number in the text.
pub fn predicted_number(output: &str) -> Option<f64> {
    if let Some((_, after)) = output.rsplit_once("####")
        && let Some(n) = numbers(after).into_iter().next()
    {
        return Some(n);
    }
    numbers(output).into_iter().last()
}

/// 1 if the output's number equals the gold answer's (GSM8K `#### n`, or the last number).
pub fn numeric_match(output: &str, gold: &str) -> f64 {
    let gold = gsm8k_gold(gold).or_else(|| numbers(gold).into_iter().last());
    match (predicted_number(output), gold) {
        (Some(p), Some(g)) if (p - g).abs() < 1e-6 * g.abs().max(1.0) => 1.0,
        _ => 0.0,
    }
}

/// 1 if the normalised output contains the normalised gold answer as whole words (`4` is not
/// in `40`, nor `paris` in `comparison`).
pub fn contains(output: &str, gold: &str) -> f64 {
    let gold = normalize_answer(gold);
    let output = normalize_answer(output);
    if !gold.is_empty() && format!(" {output} ").contains(&format!(" {gold} ")) { 1.0 } else { 0.0 }
}

pub fn regex_match(output: &str, pattern: &regex::Regex) -> f64 {
    if pattern.is_match(output) { 1.0 } else { 0.0 }
}

/// PRewrite's combined reward: F1 plus the gold answer's mean per-token probability
/// (`1 / perplexity`), both in [0, 1]; an unknown perplexity (NaN) adds nothing.
pub fn perplexity_f1(f1: f64, perplexity: f64) -> f64 {
    if perplexity.is_nan() { f1 } else { f1 + 1.0 / perplexity.max(1.0) }
}

/// 1 if `output` parses as JSON (a fenced ```json block is accepted) valid against `schema`.
pub fn json_schema_valid(output: &str, schema: &jsonschema::Validator) -> f64 {
    let text = output.trim();
    let text = text
        .strip_prefix("```json")
        .or_else(|| text.strip_prefix("```"))
        .and_then(|t| t.trim_end().strip_suffix("```"))
        .unwrap_or(text)
        .trim();
    match serde_json::from_str::<serde_json::Value>(text) {
        Ok(value) if schema.is_valid(&value) => 1.0,
        _ => 0.0,
    }
}

/// What a sampled output answers, as `consistency` compares samples: for a numeric task the
/// number it answers with ([`predicted_number`]), for a classification the label whose word
/// (normalised, whole) it begins with, else its normalised text; empty when it answers nothing.
/// `label_words` holds each label's words, the label's own first.
pub fn sample_answer(output: &str, numeric: bool, label_words: &[Vec<String>]) -> String {
    if numeric {
        // `-0` answers what `0` does.
        return predicted_number(output).map(|n| format!("{}", if n == 0.0 { 0.0 } else { n })).unwrap_or_default();
    }
    let text = normalize_answer(output);
    // The longest word first, so `not good` is not read as `not`.
    let mut words: Vec<(usize, String)> = label_words
        .iter()
        .enumerate()
        .flat_map(|(label, words)| words.iter().map(move |w| (label, normalize_answer(w))))
        .filter(|(_, w)| !w.is_empty())
        .collect();
    words.sort_by_key(|(_, w)| std::cmp::Reverse(w.len()));
    for (label, word) in words {
        if text == word || text.starts_with(&format!("{word} ")) {
            return label_words[label][0].clone();
        }
    }
    text
}

/// Agreement of sampled outputs, each read by [`sample_answer`]: the share of samples giving
/// the most common non-empty answer; answering nothing agrees with nothing (else silence would
/// score best).
pub fn consistency(answers: &[String]) -> f64 {
    if answers.is_empty() {
        return 0.0;
    }
    let best =
        answers.iter().filter(|s| !s.is_empty()).map(|s| answers.iter().filter(|t| *t == s).count()).max().unwrap_or(0);
    best as f64 / answers.len() as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn gap_reward_matches_rlprompt() {
        // P = [0.7, 0.3], gold 0: gap 0.4 × 200 = 80; gold 1: gap −0.4 × 180 = −72.
        assert!(close(gap(&[0.7, 0.3], 0), 80.0));
        assert!(close(gap(&[0.7, 0.3], 1), -72.0));
        // three labels: gold 2 with P = [0.2, 0.5, 0.3]: gap 0.3 − 0.5 = −0.2 × 180 = −36
        assert!(close(gap(&[0.2, 0.5, 0.3], 2), -36.0));
    }

    #[test]
    fn a_label_with_several_words_has_their_summed_probability() {
        let p = label_probabilities(&[0.1f32.ln(), 0.2f32.ln(), 0.3f32.ln(), 0.4f32.ln()]);
        let g = group_probabilities(&p, &[1, 3]);
        assert!((g[0] - 0.1).abs() < 1e-6 && (g[1] - 0.9).abs() < 1e-6, "{g:?}");
        // Two words of 0.3 and 0.2 beat one of 0.4: the label, not the word, is predicted.
        let g = group_probabilities(
            &label_probabilities(&[0.4f32.ln(), 0.3f32.ln(), 0.2f32.ln(), 0.1f32.ln()]),
            &[1, 2, 1],
        );
        assert!(g[1] > g[0] && (g.iter().sum::<f64>() - 1.0).abs() < 1e-6, "{g:?}");
        assert_eq!(group_probabilities(&p, &[1, 1, 1, 1]), p);
    }

    #[test]
    fn a_label_bias_shifts_log_probabilities_and_renormalises() {
        // log q = log p + b − log Z: [0.8, 0.2] with b = [0, ln 4] → [0.5, 0.5].
        let q = biased_probabilities(&[0.8, 0.2], &[0.0, 4f64.ln()]);
        assert!(close(q[0], 0.5) && close(q[1], 0.5), "{q:?}");
        // The choice flips once the offset outweighs the ratio; the gap follows.
        let q = biased_probabilities(&[0.8, 0.2], &[0.0, 2.0]);
        assert!(q[1] > q[0] && gap(&q, 1) > 0.0, "{q:?}");
        // Large offsets stay finite; no bias and a common offset change nothing.
        let q = biased_probabilities(&[0.5, 0.5], &[800.0, 0.0]);
        assert!(q.iter().all(|x| x.is_finite()) && q[0] > 0.999, "{q:?}");
        assert_eq!(biased_probabilities(&[0.3, 0.7], &[]), [0.3, 0.7]);
        let q = biased_probabilities(&[0.3, 0.7], &[1.5, 1.5]);
        assert!(close(q[0], 0.3) && close(q[1], 0.7), "{q:?}");
    }

    #[test]
    fn label_probabilities_normalise_over_labels() {
        let p = label_probabilities(&[(0.2f32).ln(), (0.6f32).ln()]);
        assert!((p[0] - 0.25).abs() < 1e-6 && (p[1] - 0.75).abs() < 1e-6, "{p:?}");
    }

    #[test]
    fn squad_normalisation_em_and_f1() {
        assert_eq!(normalize_answer("The  Eiffel Tower!"), "eiffel tower");
        assert!(close(exact_match("the Eiffel tower.", "Eiffel Tower"), 1.0));
        // prediction "eiffel tower paris" vs gold "eiffel tower": P = 2/3, R = 1, F1 = 0.8
        assert!(close(token_f1("Eiffel Tower, Paris", "the Eiffel Tower"), 0.8));
        assert!(close(token_f1("London", "Paris"), 0.0));
    }

    #[test]
    fn gsm8k_numbers() {
        assert_eq!(gsm8k_gold("She makes 9 * 2 = $<<9*2=18>>18.\n#### 18"), Some(18.0));
        assert_eq!(gsm8k_gold("#### 1,234"), Some(1234.0));
        assert!(close(numeric_match("so the answer is 18.", "#### 18"), 1.0));
        assert!(close(numeric_match("#### 1,234\nextra 5", "#### 1234"), 1.0));
        assert!(close(numeric_match("It is -3 degrees", "#### -3"), 1.0));
        assert!(close(numeric_match("about 17 or 19", "#### 18"), 0.0));
        assert!(close(numeric_match("no number", "#### 18"), 0.0));
        assert_eq!(numbers("1,2,3 and 1,234.5"), [1.0, 2.0, 3.0, 1234.5]);
        assert_eq!(numbers("COVID-19 cases: -4"), [19.0, -4.0]);
        // A point may start a number, not split a word from one.
        assert!(close(numeric_match("It takes .5 hours", "#### 0.5"), 1.0));
        assert_eq!(numbers("v.2 costs $.75, or 3.25."), [2.0, 0.75, 3.25]);
        assert_eq!(numbers("-.5 and wait...5, or ...-5"), [-0.5, 5.0, -5.0]);
    }

    #[test]
    fn squad_removes_ascii_punctuation_and_keeps_words_whole() {
        // SQuAD deletes punctuation (`string.punctuation`), it does not split words at it.
        assert_eq!(normalize_answer("U.S."), "us");
        assert!(close(exact_match("U.S.", "US"), 1.0));
        assert!(close(token_f1("it's", "its"), 1.0));
        assert_eq!(normalize_answer("a.m. — «café»"), "am — «café»");
        // Whole words only.
        assert!(close(contains("The answer is 40", "4"), 0.0));
        assert!(close(contains("a comparison", "paris"), 0.0));
        assert!(close(contains("It is 4.", "4"), 1.0));
    }

    #[test]
    fn degenerate_scores() {
        // Silence agrees with nothing; an unknown perplexity adds nothing.
        assert!(close(consistency(&vec![String::new(); 5]), 0.0));
        assert!(close(consistency(&["".into(), "".into(), "".into(), "yes".into()]), 0.25));
        assert!(close(perplexity_f1(0.5, f64::NAN), 0.5));
        // No probability anywhere: uniform, and ties predict the first label.
        let p = label_probabilities(&[f32::NEG_INFINITY; 2]);
        assert_eq!(p, [0.5, 0.5]);
        assert_eq!(predicted_label(&p), 0);
        assert_eq!(predicted_label(&[0.2, 0.4, 0.4]), 1);
        assert_eq!(predicted_label(&[0.2, 0.5, 0.3]), 1);
        // Uniform over labels, not over their words.
        assert_eq!(label_group_probabilities(&[f32::NEG_INFINITY; 3], &[2, 1]), [0.5, 0.5]);
        let p = label_group_probabilities(&[0.5f32.ln(), 0.25f32.ln(), 0.25f32.ln()], &[2, 1]);
        assert!(close(p[0], 0.75) && close(p[1], 0.25), "{p:?}");
    }

    #[test]
    fn samples_agree_on_what_they_answer_not_on_their_words() {
        // Three reasonings that end at 18 agree, however they get there; one without a number
        // answers nothing.
        let math = [
            "16 - 3 - 4 = 9 eggs, 9 * 2 = 18.\n#### 18",
            "She sells 9 eggs at $2: 9 × 2 = 18 dollars",
            "#### 18.00",
            "I cannot tell.",
            "#### -18",
        ];
        let answers: Vec<String> = math.iter().map(|s| sample_answer(s, true, &[])).collect();
        assert_eq!(answers, ["18", "18", "18", "", "-18"]);
        assert!(close(consistency(&answers), 0.6));
        // A classification's sample answers the label whose word it begins with.
        let words = vec![vec!["negative".to_string(), "not good".into()], vec!["positive".into(), "not".into()]];
        let read = |s: &str| sample_answer(s, false, &words);
        assert_eq!(read("Negative. The film drags."), "negative");
        assert_eq!(read("not good at all"), "negative");
        assert_eq!(read("Not bad"), "positive");
        assert_eq!(read("positive"), "positive");
        assert_eq!(read("positively great"), "positively great");
        assert_eq!(read("The review is positive"), "review is positive");
    }

    #[test]
    fn contains_regex_json_consistency_and_perplexity_f1() {
        assert!(close(contains("I think it is Paris, France", "paris"), 1.0));
        assert!(close(regex_match("Answer: 42", &regex::Regex::new(r"^Answer: \d+$").unwrap()), 1.0));
        let schema = jsonschema::validator_for(&serde_json::json!({"type": "object", "required": ["a"]})).unwrap();
        assert!(close(json_schema_valid("```json\n{\"a\": 1}\n```", &schema), 1.0));
        assert!(close(json_schema_valid("{\"b\": 1}", &schema), 0.0));
        let read = |samples: &[&str]| -> Vec<String> { samples.iter().map(|s| sample_answer(s, false, &[])).collect() };
        assert!(close(consistency(&read(&["Yes", "yes.", "no", "yes"])), 0.75));
        assert!(close(perplexity_f1(0.5, 4.0), 0.75));
    }
}
