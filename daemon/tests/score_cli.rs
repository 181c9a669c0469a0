//! `reprompt score` as a user runs it: the real binary, the real model, the example prompt.

mod common;

use std::path::PathBuf;

use common::{reprompt, workspace};

use serde_json::Value;

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
