//! `reprompt score` and `reprompt labels` as a user runs them: the real binary, the real model,
//! the example prompt and its data.

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::{reprompt, workspace};

use serde_json::{Value, json};

/// A private cache directory that shares the fetched model but not cached evaluations.
fn private_cache(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("reprompt-score-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    common::link_models(&dir);
    dir
}

#[test]
fn scoring_the_example_counts_its_correct_predictions_and_caches() {
    let cache = private_cache("example");
    let out = reprompt(&["score", "examples/sentiment/sentiment.prompt", "--json"], &cache);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let e: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let examples = e["examples"].as_array().expect("examples");
    assert_eq!(examples.len(), 32);
    assert_eq!(e["n"], 32);
    let correct = examples.iter().filter(|x| x["correct"] == true).count();
    for x in examples {
        assert_eq!(x["correct"] == true, x["prediction"] == x["gold"], "{x}");
        let p = x["label_probabilities"].as_array().expect("probabilities");
        let total: f64 = p.iter().map(|v| v.as_f64().unwrap_or(0.0)).sum();
        assert!((total - 1.0).abs() < 1e-6);
    }
    let accuracy = e["aggregate"]["mean"].as_f64().expect("mean");
    assert!((accuracy - correct as f64 / 32.0).abs() < 1e-12, "{accuracy} vs {correct}/32");
    assert!(e["aggregate"]["low"].as_f64() <= Some(accuracy) && Some(accuracy) <= e["aggregate"]["high"].as_f64());
    assert_eq!(e["evaluations"], 32);
    assert_eq!(e["cached"], false);

    let again = reprompt(&["score", "examples/sentiment/sentiment.prompt", "--json"], &cache);
    let again: Value = serde_json::from_slice(&again.stdout).expect("JSON");
    assert_eq!(again["cached"], true);
    assert_eq!(again["evaluations"], 0);
    assert_eq!(again["examples"], e["examples"]);

    let table = reprompt(&["score", "examples/sentiment/sentiment.prompt", "--show-failures", "2"], &cache);
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(table.contains(&format!("{accuracy:.4}")) && table.contains("from cache"), "{table}");
    assert_eq!(table.matches("    gold: ").count(), 2.min(32 - correct), "{table}");
    let _ = std::fs::remove_dir_all(&cache);
}

#[test]
fn the_generation_example_scores_numeric_answers() {
    let cache = private_cache("gsm8k");
    let out = reprompt(&["score", "examples/gsm8k/gsm8k.prompt", "--split", "test", "--limit", "2", "--json"], &cache);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let e: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(e["n"], 2);
    for x in e["examples"].as_array().expect("examples") {
        assert!(!x["prediction"].as_str().unwrap_or_default().is_empty(), "{x}");
        assert!(x["gold"].as_str().unwrap_or_default().contains("####"));
        assert!(x["components"]["numeric_match"].is_number());
    }
    // With consistency, 5 samples per example more, drawn the same on every run.
    let dir = cache.join("consistency");
    std::fs::create_dir_all(&dir).unwrap();
    let text = std::fs::read_to_string(workspace().join("examples/gsm8k/gsm8k.prompt"))
        .unwrap()
        .replace("reprompt.reward: numeric_match", "reprompt.reward: {numeric_match: 1, consistency: 0.5}")
        .replace("maxOutputTokens: 256", "maxOutputTokens: 96");
    let text = text.replace("data/", &format!("{}/", workspace().join("examples/gsm8k/data").display()));
    let file = dir.join("consistency.prompt");
    std::fs::write(&file, text).unwrap();
    let args = ["score", file.to_str().unwrap(), "--split", "test", "--limit", "2", "--no-cache", "--json"];
    let runs: Vec<Value> = (0..2)
        .map(|_| {
            let out = reprompt(&args, &cache);
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            serde_json::from_slice(&out.stdout).expect("JSON")
        })
        .collect();
    assert_eq!(runs[0]["evaluations"], 2 * (1 + 5));
    for x in runs[0]["examples"].as_array().expect("examples") {
        let agreement = x["components"]["consistency"].as_f64().expect("consistency");
        assert!((0.0..=1.0).contains(&agreement) && (agreement * 5.0).fract() == 0.0, "{x}");
    }
    assert_eq!(runs[0]["examples"], runs[1]["examples"]);
    let _ = std::fs::remove_dir_all(&cache);
}

#[test]
fn dataset_errors_are_listed_with_lines() {
    let cache = private_cache("bad");
    let out = reprompt(&["score", "daemon/tests/fixtures/baddata/bad.prompt"], &cache);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr).replace(&format!("{}/", workspace().display()), "");
    insta::assert_snapshot!(stderr);
    let _ = std::fs::remove_dir_all(&cache);
}

#[test]
fn ranked_label_words_score_as_ranked() {
    let cache = private_cache("labels");
    let dir = cache.join("prompt");
    std::fs::create_dir_all(dir.join("data")).unwrap();
    for split in ["train.tsv", "dev.tsv"] {
        std::fs::copy(workspace().join("examples/sentiment/data").join(split), dir.join("data").join(split)).unwrap();
    }
    let prompt = |labels: &str| {
        format!(
            "---\nreprompt.format: plain\nreprompt.labels: [{labels}]\nreprompt.dataset: data/train.tsv\n\
             reprompt.validation: data/dev.tsv\n---\nReview: {{{{sentence}}}}\nSentiment:\n"
        )
    };
    let file = dir.join("plain.prompt");
    std::fs::write(&file, prompt("terrible, great")).unwrap();
    let out = reprompt(&["labels", file.to_str().unwrap(), "--keep", "4", "--json"], &cache);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let rows: Vec<Value> = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(rows.len(), 4);
    let accuracy = |r: &Value| r["train_accuracy"].as_f64().unwrap();
    assert!(rows.windows(2).all(|w| accuracy(&w[0]) >= accuracy(&w[1])), "{rows:?}");
    for row in &rows {
        let words: Vec<&str> = row["words"].as_array().unwrap().iter().map(|w| w.as_str().unwrap()).collect();
        assert_eq!(words.len(), 2);
        assert_ne!(words[0], words[1]);
        assert!(words.iter().all(|w| w.len() >= 3 && w.chars().all(|c| c.is_ascii_lowercase())), "{words:?}");
    }
    // The best set does what the ranking says when the evaluator scores it on train, and
    // beats the prompt's own words there.
    let own = reprompt(&["score", file.to_str().unwrap(), "--split", "train", "--json"], &cache);
    let own: Value = serde_json::from_slice(&own.stdout).expect("JSON");
    let words: Vec<&str> = rows[0]["words"].as_array().unwrap().iter().map(|w| w.as_str().unwrap()).collect();
    std::fs::write(&file, prompt(&words.join(", "))).unwrap();
    let best = reprompt(&["score", file.to_str().unwrap(), "--split", "train", "--json"], &cache);
    assert!(best.status.success(), "{}", String::from_utf8_lossy(&best.stderr));
    let best: Value = serde_json::from_slice(&best.stdout).expect("JSON");
    let mean = best["aggregate"]["mean"].as_f64().unwrap();
    assert!((mean - accuracy(&rows[0])).abs() < 1e-9, "{mean} vs {}", accuracy(&rows[0]));
    assert!(mean > own["aggregate"]["mean"].as_f64().unwrap(), "{mean} vs {own}");
    // Training examples are all it needs; a chat prompt's words are ranked after an added
    // cue, and the command says so.
    let train_only = prompt("terrible, great").replace("reprompt.validation: data/dev.tsv\n", "");
    std::fs::write(&file, train_only).unwrap();
    let out = reprompt(&["labels", file.to_str().unwrap(), "--keep", "2"], &cache);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("  1  ") && !stdout.contains("  3  "), "{stdout}");
    // And the group of words per label the optimizer offers, as a setting that parses.
    let line = stdout.lines().find(|l| l.starts_with("reprompt.labels: [[")).expect("a group line");
    let grouped = reprompt_protocol::parse(&format!("---\n{line}\n---\n{{{{x}}}}"), None);
    assert!(grouped.diagnostics.is_empty(), "{line}: {:?}", grouped.diagnostics);
    assert!(
        grouped.settings.label_words.len() == 2 && grouped.settings.label_words.iter().all(|g| g.len() >= 2),
        "{line}"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("added `Answer:` cue"));
    // Without a validation split, on the half `optimize` searches on: the words never see the
    // examples a run validates on.
    assert!(stdout.starts_with("label words ranked by the model on the training half of"), "{stdout}");
    assert!(stderr.contains("ranking on the 16 of its 32 training examples"), "{stderr}");
    std::fs::write(&file, prompt("terrible, great")).unwrap();
    // A training example the prompt does not fit the model's context with is left out, and
    // the command says so.
    let train = std::fs::read_to_string(dir.join("data/train.tsv")).unwrap();
    let long = format!("{train}{}\t1\n", "good ".repeat(9000).trim_end());
    std::fs::write(dir.join("data/train.tsv"), long).unwrap();
    let out = reprompt(&["labels", file.to_str().unwrap(), "--keep", "2"], &cache);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("1 training example was left out") && stderr.contains("(8192 tokens)"), "{stderr}");
    std::fs::write(dir.join("data/train.tsv"), train).unwrap();
    let chat = reprompt(&["labels", "examples/sentiment/sentiment.prompt", "--keep", "2"], &cache);
    assert!(chat.status.success(), "{}", String::from_utf8_lossy(&chat.stderr));
    assert!(String::from_utf8_lossy(&chat.stderr).contains("added `Answer:` cue"));
    // Below the groups, the words judged as `optimize` judges them: ranked and calibrated on
    // half of the examples, scored on the other, beside the built-in pairs.
    let stdout = String::from_utf8_lossy(&chat.stdout);
    let judged = stdout.lines().find(|l| l.starts_with("calibrated, out of sample on train"));
    let judged = judged.unwrap_or_else(|| panic!("no out-of-sample line: {stdout}"));
    assert!(judged.contains("the ranked words ") && judged.contains("negative / positive "), "{judged}");
    // A generation prompt has no label words to rank.
    let out = reprompt(&["labels", "examples/gsm8k/gsm8k.prompt"], &cache);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no label words to rank"));
    // Nor does a training split without examples of one label (refused before the model runs).
    let positives: String = std::fs::read_to_string(dir.join("data/train.tsv"))
        .unwrap()
        .lines()
        .enumerate()
        .filter(|(i, l)| *i == 0 || l.ends_with("\t1"))
        .map(|(_, l)| format!("{l}\n"))
        .collect();
    assert!(positives.lines().count() > 2, "{positives}");
    std::fs::write(dir.join("data/train.tsv"), positives).unwrap();
    std::fs::write(&file, prompt("terrible, great")).unwrap();
    let out = reprompt(&["labels", file.to_str().unwrap()], &cache);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("training examples of each"));
    let _ = std::fs::remove_dir_all(&cache);
}

#[test]
fn a_label_with_several_words_gets_their_summed_probability() {
    let cache = private_cache("groups");
    let dir = cache.join("prompt");
    std::fs::create_dir_all(dir.join("data")).unwrap();
    std::fs::copy(workspace().join("examples/sentiment/data/train.tsv"), dir.join("data/train.tsv")).unwrap();
    let score = |labels: &str| {
        let file = dir.join("p.prompt");
        std::fs::write(
            &file,
            format!(
                "---\nreprompt.format: plain\nreprompt.labels: {labels}\nreprompt.dataset: data/train.tsv\n\
                 ---\nReview: {{{{sentence}}}}\nSentiment:\n"
            ),
        )
        .unwrap();
        let out = reprompt(&["score", file.to_str().unwrap(), "--split", "train", "--json"], &cache);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice::<Value>(&out.stdout).expect("JSON")
    };
    let grouped = score("[[terrible, awful], [great, good]]");
    // The same four words as four labels: their probabilities, summed pairwise, are the
    // grouped labels'.
    let flat = score("[terrible, awful, great, good]");
    let probabilities = |x: &Value| -> Vec<f64> {
        x["label_probabilities"].as_array().unwrap().iter().map(|p| p.as_f64().unwrap()).collect()
    };
    let (grouped_examples, flat_examples) =
        (grouped["examples"].as_array().unwrap(), flat["examples"].as_array().unwrap());
    assert_eq!(grouped_examples.len(), 32);
    let mut right = 0;
    for (g, f) in grouped_examples.iter().zip(flat_examples) {
        let (pg, pf) = (probabilities(g), probabilities(f));
        assert_eq!(pg.len(), 2, "{g}");
        assert!((pg[0] - (pf[0] + pf[1])).abs() < 1e-6 && (pg[1] - (pf[2] + pf[3])).abs() < 1e-6, "{pg:?} {pf:?}");
        // Predictions and gold answers are the labels' names, their first words.
        let predicted = if pg[1] > pg[0] { "great" } else { "terrible" };
        assert_eq!(g["prediction"], predicted, "{g}");
        assert!(g["gold"] == "terrible" || g["gold"] == "great", "{g}");
        right += usize::from(g["prediction"] == g["gold"]);
    }
    let mean = grouped["aggregate"]["mean"].as_f64().unwrap();
    assert!((mean - right as f64 / 32.0).abs() < 1e-12);
    let _ = std::fs::remove_dir_all(&cache);
}

#[test]
fn a_label_bias_moves_the_choice_by_its_offsets() {
    let cache = private_cache("bias");
    let dir = cache.join("prompt");
    std::fs::create_dir_all(dir.join("data")).unwrap();
    std::fs::copy(workspace().join("examples/sentiment/data/train.tsv"), dir.join("data/train.tsv")).unwrap();
    let score = |bias: &str| {
        let file = dir.join("p.prompt");
        std::fs::write(
            &file,
            format!(
                "---\nreprompt.format: plain\nreprompt.labels: [terrible, great]\nreprompt.dataset: data/train.tsv\n\
                 {bias}---\nReview: {{{{sentence}}}}\nSentiment:\n"
            ),
        )
        .unwrap();
        let out = reprompt(&["score", file.to_str().unwrap(), "--split", "train", "--json"], &cache);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice::<Value>(&out.stdout).expect("JSON")
    };
    let probabilities = |e: &Value| -> Vec<Vec<f64>> {
        e["examples"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x["label_probabilities"].as_array().unwrap().iter().map(|p| p.as_f64().unwrap()).collect())
            .collect()
    };
    let plain = score("");
    let raw = probabilities(&plain);
    // The model leans to `great`: the median log-odds as the offset splits the examples in half.
    let mut odds: Vec<f64> = raw.iter().map(|p| (p[1] / p[0]).ln()).collect();
    odds.sort_by(f64::total_cmp);
    let offset = -(odds[15] + odds[16]) / 2.0;
    let biased = score(&format!("reprompt.label_bias: [0, {offset:.4}]\n"));
    let shifted = probabilities(&biased);
    let mut great = 0;
    for (p, q) in raw.iter().zip(&shifted) {
        // log q1/q0 = log p1/p0 + offset, and still a distribution.
        let expected = (p[1] / p[0]).ln() + (offset * 1e4).round() / 1e4;
        assert!(((q[1] / q[0]).ln() - expected).abs() < 1e-6, "{p:?} {q:?}");
        assert!((q[0] + q[1] - 1.0).abs() < 1e-9);
        great += usize::from(q[1] > q[0]);
    }
    assert_eq!(great, 16, "half the examples answer each label");
    let answered: Vec<&Value> = biased["examples"].as_array().unwrap().iter().map(|x| &x["prediction"]).collect();
    assert_eq!(answered.iter().filter(|a| **a == "great").count(), 16);
    // The optimizer scores a calibration from another calibration's results, without the
    // model (`calibrate::rebiased`): what the evaluator gives, both ways.
    let bias = [0.0, (offset * 1e4).round() / 1e4];
    for (p, q) in raw.iter().zip(&shifted) {
        let there = reprompt::optimize::calibrate::rebiased(p, &[], &bias).expect("positive");
        let back = reprompt::optimize::calibrate::rebiased(q, &bias, &[]).expect("positive");
        assert!(there.iter().zip(q).all(|(a, b)| (a - b).abs() < 1e-9), "{there:?} vs {q:?}");
        assert!(back.iter().zip(p).all(|(a, b)| (a - b).abs() < 1e-9), "{back:?} vs {p:?}");
    }
    // A bias of the wrong length is an error before any scoring.
    let file = dir.join("p.prompt");
    std::fs::write(&file, std::fs::read_to_string(&file).unwrap().replace("label_bias: [0,", "label_bias: [0, 0,"))
        .unwrap();
    let out = reprompt(&["score", file.to_str().unwrap(), "--split", "train", "--json"], &cache);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("label_bias"), "{}", String::from_utf8_lossy(&out.stderr));
    let _ = std::fs::remove_dir_all(&cache);
}

#[test]
fn a_cached_evaluation_names_the_file_it_scored_and_zero_counts_are_refused() {
    let cache = private_cache("copy");
    let first = reprompt(&["score", "examples/sentiment/sentiment.prompt", "--limit", "4", "--json"], &cache);
    assert!(first.status.success(), "{}", String::from_utf8_lossy(&first.stderr));
    let first: Value = serde_json::from_slice(&first.stdout).expect("JSON");
    assert_eq!(first["cached"], false);

    // The same prompt and content elsewhere: a cache hit that names the copy, not the original.
    let copy = cache.join("copy");
    std::fs::create_dir_all(copy.join("data")).unwrap();
    let example = workspace().join("examples/sentiment");
    std::fs::copy(example.join("sentiment.prompt"), copy.join("sentiment.prompt")).unwrap();
    for name in ["train.tsv", "dev.tsv", "test.tsv"] {
        std::fs::copy(example.join("data").join(name), copy.join("data").join(name)).unwrap();
    }
    let prompt = copy.join("sentiment.prompt");
    let again = reprompt(&["score", prompt.to_str().unwrap(), "--limit", "4", "--json"], &cache);
    assert!(again.status.success(), "{}", String::from_utf8_lossy(&again.stderr));
    let again: Value = serde_json::from_slice(&again.stdout).expect("JSON");
    assert_eq!(again["cached"], true);
    assert_eq!(again["examples"], first["examples"]);
    let dataset = again["dataset"].as_str().expect("dataset");
    assert!(dataset.starts_with(copy.to_str().unwrap()), "{dataset}");

    // A count of nothing is refused before anything runs, not answered with an empty table.
    for args in [
        &["score", "examples/sentiment/sentiment.prompt", "--limit", "0"][..],
        &["labels", "examples/sentiment/sentiment.prompt", "--keep", "0"],
        &["pretrain", "examples/sentiment/sentiment.prompt", "--out", "never.safetensors", "--rounds", "0"],
    ] {
        let zero = reprompt(args, &cache);
        assert_eq!(zero.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&zero.stderr);
        assert!(stderr.contains("at least 1") && zero.stdout.is_empty(), "{args:?}: {stderr}");
    }
    let _ = std::fs::remove_dir_all(&cache);
}

#[test]
fn a_file_that_is_not_a_model_is_one_line_of_error_even_with_backtraces_on() {
    // candle attaches a backtrace to its errors where RUST_BACKTRACE is set (as many a Rust
    // developer's shell has it): the user reads what is wrong, not thirty stack frames.
    let dir = private_cache("not-a-model");
    std::fs::create_dir_all(dir.join("data")).unwrap();
    std::fs::write(dir.join("junk.gguf"), "this is not a model\n").unwrap();
    std::fs::write(dir.join("data/dev.tsv"), "sentence\tlabel\na gem\t1\n").unwrap();
    let prompt = dir.join("p.prompt");
    std::fs::write(
        &prompt,
        "---\nmodel: junk.gguf\nreprompt.labels: [terrible, great]\nreprompt.validation: data/dev.tsv\n---\n\
         Review: {{sentence}}\nSentiment:",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_reprompt"))
        .args(["score", prompt.to_str().unwrap()])
        .env("REPROMPT_CACHE_DIR", &dir)
        .env("RUST_BACKTRACE", "1")
        .env_remove("RUST_LIB_BACKTRACE")
        .output()
        .expect("reprompt runs");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("junk.gguf is not a usable GGUF model: unknown magic"), "{stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The example prompt rewritten by `edit`, saved as `name` in a directory under `cache` that
/// holds only its training file (`data/train.tsv`).
fn example_on_train(cache: &std::path::Path, name: &str, edit: impl Fn(&str) -> String) -> std::path::PathBuf {
    let dir = cache.join("prompt");
    std::fs::create_dir_all(dir.join("data")).expect("prompt dir");
    std::fs::copy(workspace().join("examples/sentiment/data/train.tsv"), dir.join("data/train.tsv"))
        .expect("copy train");
    let example = std::fs::read_to_string(workspace().join("examples/sentiment/sentiment.prompt")).expect("example");
    let prompt = dir.join(name);
    std::fs::write(&prompt, edit(&example)).expect("write prompt");
    prompt
}

#[test]
fn scoring_a_split_that_is_not_held_out_says_so() {
    let cache = private_cache("overlap");
    let prompt = example_on_train(&cache, "same.prompt", |example| {
        example.replace("data/dev.tsv", "data/train.tsv").replace("reprompt.test: data/test.tsv\n", "")
    });
    let out = reprompt(&["score", prompt.to_str().unwrap(), "--limit", "2"], &cache);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("warning[split-overlap]: `reprompt.validation` names the same file as `reprompt.dataset`"),
        "{stderr}"
    );
    // The training split is what it is: nothing to warn of.
    let out = reprompt(&["score", prompt.to_str().unwrap(), "--limit", "2", "--split", "train"], &cache);
    assert!(out.status.success() && !String::from_utf8_lossy(&out.stderr).contains("split-overlap"));
    let _ = std::fs::remove_dir_all(&cache);
}

#[test]
fn a_prompt_without_a_validation_split_is_scored_on_train_or_its_held_out_half() {
    let cache = private_cache("noval");
    let prompt = example_on_train(&cache, "noval.prompt", |example| {
        example
            .lines()
            .filter(|l| !l.starts_with("reprompt.validation") && !l.starts_with("reprompt.test"))
            .map(|l| format!("{l}\n"))
            .collect()
    });
    let p = prompt.to_str().unwrap();
    let out = reprompt(&["score", p, "--limit", "2", "--json"], &cache);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let evaluation: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON evaluation");
    assert_eq!(evaluation["split"], "train", "{evaluation}");
    assert!(evaluation["held_out"].is_null(), "{evaluation}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("names no `reprompt.validation`: scoring its training split")
    );
    // Its validation split is the half of its training examples optimizing holds out: 8 of
    // each label, named so in the table.
    let out = reprompt(&["score", p, "--split", "validation", "--show-failures", "32"], &cache);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("Validation split · held-out half of") && stdout.contains("  n 16 · "), "{stdout}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("scoring the 16 of its 32 training examples that `reprompt optimize` holds out"));
    // The JSON says so too: the split is validation, its examples a held-out half of the
    // training file, the halves named as `optimize`'s report names them (the cached figures
    // of the table's run).
    let out = reprompt(&["score", p, "--split", "validation", "--json"], &cache);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let evaluation: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON evaluation");
    assert_eq!((&evaluation["split"], &evaluation["n"]), (&"validation".into(), &16.into()), "{evaluation}");
    let halves = &evaluation["held_out"];
    assert_eq!((&halves["train"], &halves["validation"]), (&16.into(), &16.into()), "{evaluation}");
    assert!(halves["dataset"].as_str().is_some_and(|d| d.ends_with("train.tsv")), "{evaluation}");
    assert!(evaluation["dataset"].as_str().is_some_and(|d| d.ends_with("train.tsv")), "{evaluation}");
    // Too few training examples to halve: an error saying what would do.
    let train = prompt.parent().unwrap().join("data/train.tsv");
    let rows: Vec<String> = std::fs::read_to_string(&train).unwrap().lines().take(4).map(String::from).collect();
    std::fs::write(&train, rows.join("\n") + "\n").unwrap();
    let out = reprompt(&["score", p, "--split", "validation"], &cache);
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("its 3 training examples are too few") && stderr.contains("add `reprompt.validation"));
    let _ = std::fs::remove_dir_all(&cache);
}

#[test]
fn an_error_that_quotes_the_data_carries_no_terminal_escapes() {
    // A dataset is untrusted text: a label that sets the terminal's clipboard (OSC 52) and
    // clears the screen must reach the user's terminal as visible characters.
    let dir = private_cache("escapes");
    std::fs::write(dir.join("train.tsv"), "sentence\tlabel\na gem\t\u{1b}]52;c;ZXZpbA==\u{7}\u{1b}[2Jgreat\n").unwrap();
    let prompt = dir.join("p.prompt");
    std::fs::write(
        &prompt,
        "---\nreprompt.labels: [terrible, great]\nreprompt.dataset: train.tsv\n---\nReview: {{sentence}}\n",
    )
    .unwrap();
    let out = reprompt(&["score", prompt.to_str().unwrap(), "--split", "train"], &dir);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("train.tsv:2: unknown label `␛]52;c;ZXZpbA==␇␛[2Jgreat`"), "{stderr}");
    assert!(!stderr.chars().any(|c| c.is_control() && c != '\n'), "{stderr:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn answers_right_on_their_first_line_that_go_on_past_it_get_a_note_naming_the_stop() {
    // A completion prompt with one demonstration: SmolLM2-135M answers and goes on to write
    // the next example ("Geneva⏎⏎Sentence: …").
    let dir = private_cache("stop-note");
    std::fs::create_dir_all(dir.join("data")).unwrap();
    let rows = [
        ("After three years abroad, Chen finally returned home to Geneva.", "Geneva"),
        ("Our flight to Milan was delayed, so Liam missed the meeting.", "Milan"),
        ("Our flight to Havana was delayed, so Lena missed the meeting.", "Havana"),
    ];
    let data: String =
        rows.iter().map(|(text, answer)| format!("{}\n", json!({"text": text, "answer": answer}))).collect();
    std::fs::write(dir.join("data/train.jsonl"), data).unwrap();
    let prompt = |config: &str| {
        format!(
            "---\nconfig:\n  temperature: 0\n  maxOutputTokens: 8\n{config}input:\n  schema:\n    text: string\n\
             reprompt.task: generate\nreprompt.dataset: data/train.jsonl\nreprompt.reward: exact_match\n\
             reprompt.format: plain\n---\nWhich city is mentioned in this sentence?\n\
             Sentence: The conference where Hana gave a talk was held in Amsterdam this year.\nAnswer: Amsterdam\n\n\
             Sentence: {{{{text}}}}\nAnswer:\n"
        )
    };
    let score = |name: &str, text: String| {
        let file = dir.join(name);
        std::fs::write(&file, text).unwrap();
        let out = reprompt(&["score", file.to_str().unwrap(), "--json"], &dir);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let e: Value = serde_json::from_slice(&out.stdout).expect("JSON");
        (e, String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let (e, stderr) = score("city.prompt", prompt(""));
    let right_first = e["examples"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|x| {
            let p = x["prediction"].as_str().unwrap();
            p.contains('\n') && p.lines().next().unwrap().trim() == x["gold"].as_str().unwrap()
        })
        .count();
    assert!(right_first > 0, "{e}");
    let note = format!("note: {right_first} of the 3 failing answers are right on their first line and go on past it");
    assert!(stderr.contains(&note) && stderr.contains("`stopSequences: [\"\\n\"]` under `config`"), "{stderr}");
    // Stopped at the line end, those answers are right, and the note is gone.
    let (stopped, stderr) = score("stopped.prompt", prompt("  stopSequences: [\"\\n\"]\n"));
    let correct = stopped["examples"].as_array().unwrap().iter().filter(|x| x["correct"] == true).count();
    assert_eq!(correct, right_first, "{stopped}");
    assert!(!stderr.contains("right on their first line"), "{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}
