//! Label words the task model itself ranks highest (LM-BFF's automatic label search): from
//! the model's next-token distribution at the answer position of each training example, the
//! words most likely for each class (and more likely for it than for the others), then every
//! combination of them scored by training accuracy; the best sets join the edit space.

/// A label-word set with how it does on the examples it was ranked on.
#[derive(Clone, Debug, PartialEq)]
pub struct RankedLabels {
    /// One word per label id.
    pub words: Vec<String>,
    /// Fraction of the examples whose gold word is the most likely of the set.
    pub accuracy: f64,
    /// Mean log-probability margin of the gold word over the best other word of the set.
    pub margin: f64,
}

/// Most combinations of per-class candidates scored (the candidates per class shrink with
/// the number of classes to stay under it).
const MAX_COMBINATIONS: usize = 4096;
/// Weight of "more likely for this class than for the others" against "likely for this
/// class" when choosing each class's candidates. LM-BFF ranks by likelihood alone (0); on
/// SST-2 development splits (seeds 87/100, 95 sentences; not the benchmark's) the top four
/// sets of a plain `Review: … Sentiment:` prompt scored 66.6% (0), 71.8% (1), 78.4% (3) and
/// 70.8% (10) on average.
const DISCRIMINATION: f64 = 3.0;
/// Most candidates per class.
const MAX_PER_CLASS: usize = 16;

/// After a word whose next token is at least this likely to go on with the same word
/// (`apolog` → `ize`), the word is a fragment, not a label.
pub const FRAGMENT_MASS: f64 = 0.5;
/// What a candidate word is checked after ([`continuation_mass`]): a sentence it would end,
/// with no example text in it.
pub const FRAGMENT_FRAME: &str = "The answer is";

/// Function words: likely anywhere, they separate classes only by chance on few examples.
const FUNCTION_WORDS: &[&str] = &[
    "the", "and", "but", "for", "not", "this", "that", "these", "those", "with", "was", "were", "are", "has", "had",
    "have", "its", "his", "her", "our", "their", "you", "your", "she", "him", "they", "them", "who", "what", "how",
    "why", "when", "where", "which", "then", "than", "from", "into", "about", "there", "here", "also", "just", "all",
    "any", "some", "one", "can", "will", "would", "should", "could", "been", "being", "does", "did", "out", "too",
    "very", "more", "most", "such", "only", "own", "same", "other", "each", "both",
];

/// The label word a vocabulary token stands for, if it is one: three or more lower-case
/// letters, not a function word, after exactly one leading space when the answer follows a
/// word (`spaced`) and none otherwise. (Capitalised tokens are mostly name and word
/// fragments; the lower-case word says the same.)
pub fn label_word(token: &str, spaced: bool) -> Option<&str> {
    let word = if spaced { token.strip_prefix(' ')? } else { token };
    (word.len() >= 3 && word.chars().all(|c| c.is_ascii_lowercase()) && !FUNCTION_WORDS.contains(&word)).then_some(word)
}

/// The probability that the next token goes on with the word before it — a token that starts
/// with a letter, no space — from a next-token distribution (log-probabilities by token id;
/// `vocabulary[id]` the text of token `id`).
pub fn continuation_mass(log_probs: &[f32], vocabulary: &[String]) -> f64 {
    log_probs
        .iter()
        .zip(vocabulary)
        .filter(|(_, t)| t.chars().next().is_some_and(|c| c.is_ascii_alphabetic()))
        .map(|(lp, _)| f64::from(lp.exp()))
        .sum()
}

/// Candidates per class for `classes` classes: as many as keep the combinations within
/// [`MAX_COMBINATIONS`]; `None` when even two per class would not (13 classes or more: the
/// search over combinations does not scale to them).
pub(crate) fn per_class(classes: usize) -> Option<usize> {
    (2..=MAX_PER_CLASS).rev().find(|k| k.checked_pow(classes as u32).is_some_and(|n| n <= MAX_COMBINATIONS))
}

/// Ranks label-word sets for a classification prompt. `log_probs[i]` is the next-token
/// distribution (log-probabilities by token id) at the answer position of example `i`,
/// `gold[i]` its label id, `vocabulary[id]` the text of token `id` as it decodes alone;
/// `spaced` says whether answers start with a space (see [`label_word`]). Returns up to
/// `keep` sets, best first (training accuracy, then margin), none when a class has no
/// example, the vocabulary offers too few words or there are too many classes
/// ([`per_class`]). Words with a non-finite log-probability anywhere are left out, and so
/// are the words in `skip` (fragments, see [`continuation_mass`]).
pub fn rank_label_sets(
    log_probs: &[Vec<f32>],
    gold: &[usize],
    classes: usize,
    vocabulary: &[String],
    spaced: bool,
    keep: usize,
    skip: &[String],
) -> Vec<RankedLabels> {
    if classes < 2 || log_probs.len() != gold.len() || gold.iter().any(|&g| g >= classes) {
        return Vec::new();
    }
    let counts: Vec<usize> = (0..classes).map(|c| gold.iter().filter(|&&g| g == c).count()).collect();
    if counts.contains(&0) {
        return Vec::new();
    }
    let words: Vec<(usize, String)> = vocabulary
        .iter()
        .enumerate()
        .filter_map(|(id, t)| label_word(t, spaced).map(|w| (id, w.to_string())))
        .filter(|(_, w)| !skip.contains(w))
        .filter(|(id, _)| log_probs.iter().all(|lp| lp.get(*id).is_some_and(|v| v.is_finite())))
        .collect();
    // Mean log-probability of each word on each class's examples.
    let mut class_means = vec![vec![0.0f64; words.len()]; classes];
    for (lp, &g) in log_probs.iter().zip(gold) {
        for (w, (id, _)) in words.iter().enumerate() {
            class_means[g][w] += f64::from(lp[*id]) / counts[g] as f64;
        }
    }
    let Some(k) = per_class(classes) else { return Vec::new() };
    // Per class: likely for it, and above all more likely for it than for the other classes.
    let candidates: Vec<Vec<usize>> = (0..classes)
        .map(|c| {
            let score = |w: usize| {
                let own = class_means[c][w];
                let others =
                    (0..classes).filter(|&o| o != c).map(|o| class_means[o][w]).sum::<f64>() / (classes - 1) as f64;
                own + DISCRIMINATION * (own - others)
            };
            let mut order: Vec<usize> = (0..words.len()).collect();
            order.sort_by(|&a, &b| score(b).total_cmp(&score(a)).then(a.cmp(&b)));
            order.truncate(k);
            order
        })
        .collect();
    if candidates.iter().any(Vec::is_empty) {
        return Vec::new();
    }
    let mut ranked: Vec<RankedLabels> = Vec::new();
    let mut pick = vec![0usize; classes];
    loop {
        let set: Vec<usize> = pick.iter().enumerate().map(|(c, &p)| candidates[c][p]).collect();
        // Token texts are unique, so distinct tokens are distinct words.
        let distinct = (1..set.len()).all(|i| !set[..i].contains(&set[i]));
        if distinct {
            let (mut right, mut margin) = (0usize, 0.0f64);
            for (lp, &g) in log_probs.iter().zip(gold) {
                let value = |c: usize| f64::from(lp[words[set[c]].0]);
                let best_other = (0..classes).filter(|&c| c != g).map(value).fold(f64::NEG_INFINITY, f64::max);
                // A tie counts as wrong here (the evaluator would answer the first label): the
                // ranking looks for words that separate the labels.
                if value(g) > best_other {
                    right += 1;
                }
                margin += value(g) - best_other;
            }
            ranked.push(RankedLabels {
                words: set.iter().map(|&w| words[w].1.clone()).collect(),
                accuracy: right as f64 / gold.len() as f64,
                margin: margin / gold.len() as f64,
            });
        }
        // Next combination (odometer over the per-class candidates).
        let mut c = 0;
        while c < classes {
            pick[c] += 1;
            if pick[c] < candidates[c].len() {
                break;
            }
            pick[c] = 0;
            c += 1;
        }
        if c == classes {
            break;
        }
    }
    ranked.sort_by(|a, b| {
        b.accuracy.total_cmp(&a.accuracy).then(b.margin.total_cmp(&a.margin)).then_with(|| a.words.cmp(&b.words))
    });
    ranked.truncate(keep);
    ranked
}

/// Words per label in the groups [`word_groups`] makes for the search. On SST-2 development
/// splits (seeds 87/100, 63 held-out sentences each, not the benchmark's) a bare `Review: …
/// Sentiment:` prompt scored 73.0 / 71.4% with the best ranked pair of words and, with each
/// label's probability the sum of its first k words', 76.2 / 73.0 (k = 2), 76.2 / 73.0 (4),
/// 81.0 / 74.6 (6), 84.1 / 81.0 (8) and 74.6 / 60.3 (12): one word's chance fit to 32
/// examples averages out over several, until words likely everywhere tip the balance.
pub const GROUP_WORDS: usize = 8;
/// Ranked sets the groups are read from.
pub const GROUP_SETS: usize = 64;

/// Several answer words per label from ranked sets (best first): each label's words in the
/// order they first appear, at most `per_label`, a word in one label's group only (the first
/// to take it: each class's candidates are chosen apart, so a word may be ranked for two);
/// `None` unless every label has two.
pub fn word_groups(sets: &[Vec<String>], per_label: usize) -> Option<Vec<Vec<String>>> {
    let labels = sets.first()?.len();
    let mut groups: Vec<Vec<String>> = vec![Vec::new(); labels];
    for set in sets.iter().filter(|s| s.len() == labels) {
        for (label, word) in set.iter().enumerate() {
            if groups[label].len() < per_label && !groups.iter().any(|g| g.contains(word)) {
                groups[label].push(word.clone());
            }
        }
    }
    groups.iter().all(|g| g.len() >= 2).then_some(groups)
}

/// Answer words per label id.
pub type Labelling = Vec<Vec<String>>;

/// A labelling the search may start from, with how it does out of sample on the training
/// examples (see [`cross_fitted`]).
#[derive(Clone, Debug, PartialEq)]
pub struct Screened {
    /// Answer words per label id (one each for a fixed set).
    pub words: Vec<Vec<String>>,
    /// Whether the words were ranked on the examples (the ranking's group or best set) rather
    /// than given.
    pub ranked: bool,
    /// Mean held-out accuracy over [`SCREEN_SPLITS`] two-fold splits of the examples, the
    /// words ranked (when `ranked`) and the label offsets fitted
    /// ([`super::calibrate::prior_bias`]) on the other fold.
    pub accuracy: f64,
    /// The offsets fitted on all the examples.
    pub bias: Vec<f64>,
    /// Per example, the share of the splits in which it was answered right while held out
    /// (their mean is `accuracy`): what [`clearly_better`] pairs.
    pub hits: Vec<f64>,
}

impl Screened {
    /// The labelling as a run records it: its words (`negative / positive`; several per label
    /// joined by commas), its held-out accuracy, whether ranked.
    pub fn record(&self) -> (String, f64, bool) {
        let words: Vec<String> = self.words.iter().map(|g| g.join(", ")).collect();
        (words.join(" / "), self.accuracy, self.ranked)
    }
}

/// How many random two-fold splits [`cross_fitted`] averages over: one split of 32 examples
/// moves a labelling's estimate by several points (which half a hard example falls in), and
/// ranking and scoring cost no model calls, so many splits are nearly free.
pub const SCREEN_SPLITS: usize = 8;

/// Whether labelling `a` does better out of sample than `b` by more than one standard error of
/// their paired per-example difference (the one-standard-error rule: where two labellings
/// cannot be told apart on these examples, the simpler — a given set over ranked words — is
/// kept). False when the two were not screened on the same examples.
pub fn clearly_better(a: &Screened, b: &Screened) -> bool {
    let n = a.hits.len();
    if n < 2 || b.hits.len() != n {
        return false;
    }
    let d: Vec<f64> = a.hits.iter().zip(&b.hits).map(|(x, y)| x - y).collect();
    let mean = d.iter().sum::<f64>() / n as f64;
    let var = d.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
    mean > 0.0 && mean > (var / n as f64).sqrt()
}

/// Compares, honestly, the ranking's words with fixed label sets at one prompt: a ranked set
/// is chosen among thousands of combinations on the very examples it is judged on, so its
/// training accuracy flatters it; here every labelling is judged on examples it was not
/// chosen or calibrated on. [`SCREEN_SPLITS`] seeded two-fold splits, stratified by label; on
/// each fold the ranking ([`rank_label_sets`], then [`word_groups`] of its best [`GROUP_SETS`]
/// sets, else its best set) runs on the other fold, and every labelling's offsets are fitted
/// on the other fold.
/// Returns the ranking's labelling (ranked on all examples) first, then each of `fixed`
/// whose words are all in the vocabulary, with their cross-fitted accuracies; empty where
/// nothing can be ranked or scored. Arguments as for [`rank_label_sets`].
pub fn cross_fitted(
    log_probs: &[Vec<f32>],
    gold: &[usize],
    classes: usize,
    vocabulary: &[String],
    spaced: bool,
    skip: &[String],
    fixed: &[Vec<String>],
) -> Vec<Screened> {
    if log_probs.len() != gold.len() {
        return Vec::new();
    }
    // Ranked words are [`label_word`]s; a built-in set's may be any token (`no / yes`).
    let ids: std::collections::HashMap<&str, usize> = vocabulary
        .iter()
        .enumerate()
        .filter_map(|(id, t)| if spaced { t.strip_prefix(' ') } else { Some(t.as_str()) }.map(|w| (w, id)))
        .collect();
    let rank = |rows: &[usize]| -> Option<Vec<Vec<String>>> {
        let lp: Vec<Vec<f32>> = rows.iter().map(|&i| log_probs[i].clone()).collect();
        let g: Vec<usize> = rows.iter().map(|&i| gold[i]).collect();
        let sets: Vec<Vec<String>> = rank_label_sets(&lp, &g, classes, vocabulary, spaced, GROUP_SETS, skip)
            .into_iter()
            .map(|r| r.words)
            .collect();
        word_groups(&sets, GROUP_WORDS).or_else(|| sets.first().map(|s| s.iter().map(|w| vec![w.clone()]).collect()))
    };
    // Each label's probability: its words' summed, normalised over the labels.
    let probabilities = |words: &[Vec<String>], i: usize| -> Option<Vec<f64>> {
        let mut logs = Vec::with_capacity(words.len());
        for group in words {
            let values: Vec<f64> = group
                .iter()
                .map(|w| ids.get(w.as_str()).and_then(|&id| log_probs[i].get(id)).map(|&l| f64::from(l)))
                .collect::<Option<_>>()?;
            let top = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            if !top.is_finite() {
                return None;
            }
            logs.push(top + values.iter().map(|v| (v - top).exp()).sum::<f64>().ln());
        }
        let top = logs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let e: Vec<f64> = logs.iter().map(|l| (l - top).exp()).collect();
        let total: f64 = e.iter().sum();
        Some(e.iter().map(|x| x / total).collect())
    };
    let fit = |words: &[Vec<String>], rows: &[usize]| -> Option<Vec<f64>> {
        let probs: Vec<Vec<f64>> = rows.iter().map(|&i| probabilities(words, i)).collect::<Option<_>>()?;
        let view: Vec<(&[f64], usize)> = probs.iter().zip(rows).map(|(p, &i)| (p.as_slice(), gold[i])).collect();
        super::calibrate::prior_bias(&view, &[])
    };
    let right = |words: &[Vec<String>], bias: &[f64], rows: &[usize]| -> Option<usize> {
        let mut n = 0;
        for &i in rows {
            let q = crate::eval::rewards::biased_probabilities(&probabilities(words, i)?, bias);
            let predicted = crate::eval::rewards::predicted_label(&q);
            n += usize::from(predicted == gold[i]);
        }
        Some(n)
    };
    let all: Vec<usize> = (0..gold.len()).collect();
    // Stratified halves: each label's examples shuffled (seeded) and dealt alternately.
    let mut rng = super::rng::Rng::new(0x5C4E_E75D);
    let splits: Vec<[Vec<usize>; 2]> = (0..SCREEN_SPLITS)
        .map(|_| {
            let mut halves = [Vec::new(), Vec::new()];
            for c in 0..classes {
                let mut own: Vec<usize> = all.iter().copied().filter(|&i| gold[i] == c).collect();
                rng.shuffle(&mut own);
                for (k, i) in own.into_iter().enumerate() {
                    halves[k % 2].push(i);
                }
            }
            halves
        })
        .collect();
    // A labelling's per-example held-out hit rates; `choose` picks its words on the fitting fold.
    let judge = |choose: &dyn Fn(&[usize]) -> Option<Labelling>| -> Option<Vec<f64>> {
        let mut hits = vec![0.0; gold.len()];
        for split in &splits {
            for f in 0..2 {
                let (held, fitting) = (&split[f], &split[1 - f]);
                let words = choose(fitting)?;
                let bias = fit(&words, fitting)?;
                for &i in held {
                    if right(&words, &bias, &[i])? == 1 {
                        hits[i] += 1.0 / SCREEN_SPLITS as f64;
                    }
                }
            }
        }
        Some(hits)
    };
    let screened = |words: Labelling, ranked: bool, hits: Vec<f64>, bias: Vec<f64>| Screened {
        words,
        ranked,
        accuracy: hits.iter().sum::<f64>() / hits.len() as f64,
        bias,
        hits,
    };
    let mut out = Vec::new();
    if let Some(words) = rank(&all)
        && let (Some(hits), Some(bias)) = (judge(&|rows| rank(rows)), fit(&words, &all))
    {
        out.push(screened(words, true, hits, bias));
    }
    for set in fixed.iter().filter(|s| s.len() == classes) {
        let words: Vec<Vec<String>> = set.iter().map(|w| vec![w.clone()]).collect();
        if let (Some(hits), Some(bias)) = (judge(&|_| Some(words.clone())), fit(&words, &all)) {
            out.push(screened(words, false, hits, bias));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vocab(words: &[&str]) -> Vec<String> {
        words.iter().map(|w| w.to_string()).collect()
    }

    #[test]
    fn built_in_sets_of_short_words_are_judged_too() {
        // ` no` / ` yes` are no candidates of a ranking (too short), but a built-in set they
        // make is compared like any other.
        let gold: Vec<usize> = (0..32).map(|i| i % 2).collect();
        let rows: Vec<Vec<f32>> = gold
            .iter()
            .map(|&g| if g == 0 { vec![-0.5, -2.0, -1.0, -1.2] } else { vec![-2.0, -0.5, -1.2, -1.0] })
            .collect();
        let fixed = [vocab(&["no", "yes"]), vocab(&["bad", "good"])];
        let screened = cross_fitted(&rows, &gold, 2, &vocab(&[" no", " yes", " bad", " good"]), true, &[], &fixed);
        let yes_no = screened.iter().find(|s| s.words == [vec!["no".to_string()], vec!["yes".to_string()]]);
        assert_eq!(yes_no.map(|s| s.accuracy), Some(1.0), "{screened:?}");
        assert!(screened.iter().any(|s| s.words == [vec!["bad".to_string()], vec!["good".to_string()]]));
        assert!(screened.iter().filter(|s| s.ranked).all(|s| s.words.iter().flatten().all(|w| w.len() >= 3)));
    }

    #[test]
    fn screening_rows_shorter_than_the_vocabulary_or_the_labels_is_no_panic() {
        let gold: Vec<usize> = (0..16).map(|i| i % 2).collect();
        let short: Vec<Vec<f32>> = (0..16).map(|_| vec![-1.0]).collect();
        let fixed = [vocab(&["bad", "good"])];
        let screened = cross_fitted(&short, &gold, 2, &vocab(&[" bad", " good"]), true, &[], &fixed);
        assert!(screened.iter().all(|s| s.words != [vec!["bad".to_string()], vec!["good".to_string()]]));
        assert!(cross_fitted(&short[..4], &gold, 2, &vocab(&[" bad", " good"]), true, &[], &fixed).is_empty());
    }

    #[test]
    fn label_words_are_plain_words_with_the_right_spacing() {
        assert_eq!(label_word(" great", true), Some("great"));
        assert_eq!(label_word("great", true), None);
        assert_eq!(label_word(" great", false), None);
        assert_eq!(label_word("great", false), Some("great"));
        assert_eq!(label_word("Great", false), None);
        assert_eq!(label_word(" the", true), None);
        assert_eq!(label_word(" no", true), None);
        assert_eq!(label_word(" 42", true), None);
        assert_eq!(label_word(" don't", true), None);
        assert_eq!(per_class(2), Some(16));
        assert_eq!(per_class(4), Some(8));
        assert_eq!(per_class(12), Some(2));
        assert_eq!(per_class(13), None);
        for classes in 2..=12 {
            assert!(per_class(classes).unwrap().pow(classes as u32) <= MAX_COMBINATIONS);
        }
    }

    #[test]
    fn the_words_that_separate_the_classes_win() {
        // Token 0 is likely everywhere (says nothing), 1 marks class 0, 2 marks class 1 but
        // is wrong on one example, 3 is a special token, 4 is not a word.
        let v = vocab(&[" the", " bad", " good", "", " xx1"]);
        let lp = |a: f32, b: f32| vec![-0.5, a, b, -0.1, -0.2];
        let log_probs = vec![lp(-2.0, -4.0), lp(-2.5, -3.0), lp(-4.0, -1.0), lp(-3.0, -3.5)];
        let gold = [0, 0, 1, 1];
        let ranked = rank_label_sets(&log_probs, &gold, 2, &v, true, 3, &[]);
        assert_eq!(ranked[0].words, ["bad", "good"]);
        assert_eq!(ranked[0].accuracy, 0.75);
        assert!(ranked.iter().all(|r| r.words[0] != r.words[1]), "{ranked:?}");
        assert!(ranked.iter().all(|r| !r.words.iter().any(|w| w == "xx1" || w.is_empty())), "{ranked:?}");
        assert!(ranked.windows(2).all(|w| w[0].accuracy >= w[1].accuracy));
        // Nor is a word the caller found to be a fragment.
        let with_fine = vocab(&[" the", " bad", " good", "", " xx1", " fine"]);
        let lp_fine: Vec<Vec<f32>> = log_probs.iter().map(|lp| [lp.as_slice(), &[-3.0]].concat()).collect();
        assert!(rank_label_sets(&lp_fine, &gold, 2, &with_fine, true, 3, &[]).iter().any(|r| r.words[0] == "bad"));
        let skipped = rank_label_sets(&lp_fine, &gold, 2, &with_fine, true, 3, &["bad".to_string()]);
        assert!(!skipped.is_empty() && skipped.iter().all(|r| !r.words.contains(&"bad".to_string())), "{skipped:?}");
        // A word whose log-probability is missing or not finite is never offered.
        let mut holes = log_probs.clone();
        holes[0][2] = f32::NEG_INFINITY;
        assert!(rank_label_sets(&holes, &gold, 2, &v, true, 3, &[]).iter().all(|r| r.words[1] != "good"));
        let short: Vec<Vec<f32>> = log_probs.iter().map(|lp| lp[..2].to_vec()).collect();
        assert!(rank_label_sets(&short, &gold, 2, &v, true, 3, &[]).is_empty(), "only one word left");
        // Too many classes to search their combinations: none.
        let many: Vec<usize> = (0..13).collect();
        let flat: Vec<Vec<f32>> = many.iter().map(|_| vec![-1.0; 5]).collect();
        assert!(rank_label_sets(&flat, &many, 13, &v, true, 3, &[]).is_empty());
        // Unspaced answers see none of these tokens; a class without examples gives nothing.
        assert!(rank_label_sets(&log_probs, &gold, 2, &v, false, 3, &[]).is_empty());
        assert!(rank_label_sets(&log_probs, &[0, 0, 0, 0], 2, &v, true, 3, &[]).is_empty());
    }

    #[test]
    fn groups_take_each_labels_words_in_ranked_order() {
        let sets: Vec<Vec<String>> = [["harsh", "sweet"], ["harsh", "hopeful"], ["poor", "sweet"], ["rude", "warm"]]
            .iter()
            .map(|s| vocab(s))
            .collect();
        let groups = word_groups(&sets, 2).unwrap();
        assert_eq!(groups, [vocab(&["harsh", "poor"]), vocab(&["sweet", "hopeful"])]);
        assert_eq!(word_groups(&sets, 8).unwrap()[0], vocab(&["harsh", "poor", "rude"]));
        // A label with one word has no group; nor do no sets.
        assert_eq!(word_groups(&sets[..2], 8), None);
        assert_eq!(word_groups(&[], 8), None);
        // A word ranked for two labels joins the first group to take it.
        let shared: Vec<Vec<String>> =
            [["bad", "fine"], ["fine", "good"], ["poor", "nice"]].iter().map(|s| vocab(s)).collect();
        assert_eq!(word_groups(&shared, 8).unwrap(), [vocab(&["bad", "poor"]), vocab(&["fine", "good", "nice"])]);
        assert_eq!(word_groups(&shared[..2], 8), None, "label 0 keeps only `bad`");
    }

    #[test]
    fn continuation_is_the_mass_of_tokens_that_go_on_with_the_word() {
        let v = vocab(&["ize", " great", ".", "ies", "", "\n", "Apolog"]);
        let lp: Vec<f32> = [0.5f32, 0.1, 0.05, 0.2, 0.05, 0.05, 0.05].iter().map(|p| p.ln()).collect();
        assert!((continuation_mass(&lp, &v) - 0.75).abs() < 1e-6);
        assert_eq!(continuation_mass(&lp[..2], &v), f64::from(0.5f32.ln().exp()));
    }

    #[test]
    fn four_classes() {
        let v = vocab(&["world", "sports", "worlds", "business", "tech", "the"]);
        let mut log_probs = Vec::new();
        let mut gold = Vec::new();
        for c in 0..4 {
            for _ in 0..2 {
                let mut lp = vec![-6.0f32; 6];
                lp[5] = -0.3;
                let id = [0, 1, 3, 4][c];
                lp[id] = -0.5;
                if c == 0 {
                    lp[2] = -0.6;
                }
                log_probs.push(lp);
                gold.push(c);
            }
        }
        let ranked = rank_label_sets(&log_probs, &gold, 4, &v, false, 5, &[]);
        assert_eq!(ranked[0].words, ["world", "sports", "business", "tech"]);
        assert_eq!(ranked[0].accuracy, 1.0);
        // The function word "the" is likely everywhere but never a label.
        assert!(!ranked.iter().any(|r| r.words.iter().any(|w| w == "the")), "{ranked:?}");
        assert!(ranked.iter().any(|r| r.words[0] == "worlds"), "{ranked:?}");
    }

    #[test]
    fn only_a_difference_beyond_one_standard_error_counts_as_clearly_better() {
        let screened = |hits: Vec<f64>| Screened {
            words: vec![vocab(&["bad"]), vocab(&["good"])],
            ranked: false,
            accuracy: hits.iter().sum::<f64>() / hits.len() as f64,
            bias: vec![0.0, 0.0],
            hits,
        };
        let base = screened((0..32).map(|i| f64::from(u8::from(i < 24))).collect());
        // Three more examples right and none fewer: clearly better, and not the other way round.
        let more = screened((0..32).map(|i| f64::from(u8::from(i < 27))).collect());
        assert!(clearly_better(&more, &base) && !clearly_better(&base, &more));
        // Equal, or one more right on balance out of seven that differ: not clearly better.
        assert!(!clearly_better(&base, &base));
        let mixed = screened((0..32).map(|i| f64::from(u8::from(i < 20 || (24..28).contains(&i)))).collect());
        assert!((mixed.accuracy - base.accuracy).abs() < 1e-12);
        assert!(!clearly_better(&mixed, &base) && !clearly_better(&base, &mixed));
        let one_up = screened((0..32).map(|i| f64::from(u8::from(i < 21 || (24..28).contains(&i)))).collect());
        assert!(one_up.accuracy > base.accuracy && !clearly_better(&one_up, &base));
        // Screened on other examples: never comparable.
        assert!(!clearly_better(&more, &screened(vec![1.0; 31])));
    }

    #[test]
    fn cross_fitting_sees_through_words_that_fit_the_training_examples_by_chance() {
        // 16 examples, two classes. `bad`/`good` carry the class on 12 of them; each `w*` word
        // is likely on exactly one example, so the ranking's groups take them in and fit the
        // examples they were ranked on, while saying nothing about any other example.
        let mut v = vocab(&[" bad", " good"]);
        v.extend((0..16).map(|i| format!(" wx{}", (b'a' + i as u8) as char)));
        let mut log_probs = Vec::new();
        let mut gold = Vec::new();
        for i in 0..16 {
            let g = i / 8;
            let flipped = i % 8 < 2;
            let mut lp = vec![-9.0f32; v.len()];
            lp[0] = if (g == 0) != flipped { -1.0 } else { -1.6 };
            lp[1] = if (g == 1) != flipped { -1.0 } else { -1.6 };
            lp[2 + i] = -0.2;
            log_probs.push(lp);
            gold.push(g);
        }
        let fixed = vec![vocab(&["bad", "good"]), vocab(&["nope", "good"])];
        let screened = cross_fitted(&log_probs, &gold, 2, &v, true, &[], &fixed);
        assert_eq!(screened.len(), 2, "{screened:?}: `nope` is not in the vocabulary");
        let (ranked, given) = (&screened[0], &screened[1]);
        assert!(ranked.ranked && !given.ranked);
        assert_eq!(given.words, [vocab(&["bad"]), vocab(&["good"])]);
        assert!(ranked.words.iter().all(|g| g.len() > 2), "{ranked:?}");
        // On the examples it was ranked on, the ranked labelling looks far better than it is.
        let index = |w: &str| v.iter().position(|t| t.trim() == w).unwrap();
        let in_sample = (0..16)
            .filter(|&i| {
                let mass = |g: &Vec<String>| g.iter().map(|w| f64::from(log_probs[i][index(w)]).exp()).sum::<f64>();
                let (p0, p1) =
                    (mass(&ranked.words[0]) * ranked.bias[0].exp(), mass(&ranked.words[1]) * ranked.bias[1].exp());
                (p1 > p0) == (gold[i] == 1)
            })
            .count() as f64
            / 16.0;
        assert!(in_sample >= 0.85, "{in_sample}");
        assert!(ranked.accuracy <= 0.8, "{ranked:?}");
        assert!(given.accuracy >= 0.6 && given.bias.len() == 2, "{given:?}");
    }
}
