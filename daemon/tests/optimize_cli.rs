//! `reprompt optimize` as a user runs it: the real binary and model on a copy of the example
//! prompt with a tiny budget — the budget holds, the report, plot and checkpoint are written,
//! the offered prompt is valid with the same variables, and a second run resumes the first.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root").to_path_buf()
}

fn reprompt(args: &[&str], cache: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_reprompt"))
        .args(args)
        .current_dir(workspace())
        .env("REPROMPT_CACHE_DIR", cache)
        .output()
        .expect("reprompt runs")
}

/// A scratch directory with the example prompt, its data, and a cache sharing the model.
fn scratch() -> (PathBuf, PathBuf) {
    let dir = std::env::temp_dir().join(format!("reprompt-optimize-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let example = workspace().join("examples/sentiment");
    std::fs::create_dir_all(dir.join("data")).expect("scratch dir");
    std::fs::copy(example.join("sentiment.prompt"), dir.join("sentiment.prompt")).expect("copy prompt");
    for split in ["train.tsv", "dev.tsv", "test.tsv"] {
        std::fs::copy(example.join("data").join(split), dir.join("data").join(split)).expect("copy data");
    }
    let cache = dir.join("cache");
    std::fs::create_dir_all(cache.join("models")).expect("cache dir");
    let shared = reprompt::engine::store::models_dir();
    for entry in std::fs::read_dir(&shared).expect("run `reprompt models fetch` first (scripts/test.sh does)") {
        let entry = entry.expect("entry");
        if entry.path().extension().is_some_and(|e| e == "gguf") {
            std::os::unix::fs::symlink(entry.path(), cache.join("models").join(entry.file_name())).expect("link");
        }
    }
    (dir, cache)
}

fn variables(text: &str) -> Vec<String> {
    let doc = reprompt_protocol::parse(text, None);
    let mut names: Vec<String> = doc.scan.variables.iter().map(|v| v.name.clone()).collect();
    names.sort();
    names.dedup();
    names
}

#[test]
fn a_tiny_budget_run_stays_in_budget_writes_a_valid_prompt_and_resumes() {
    let (dir, cache) = scratch();
    let prompt = dir.join("sentiment.prompt");
    let run_dir = dir.join("run");
    let p = prompt.to_str().expect("utf-8 path");
    let r = run_dir.to_str().expect("utf-8 path");
    let args = [
        "optimize",
        p,
        "--budget",
        "400",
        "--seed",
        "3",
        "--paraphrases",
        "1",
        "--test-limit",
        "16",
        "--run-dir",
        r,
        "--json",
    ];
    let out = reprompt(&args, &cache);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: Value = serde_json::from_slice(&out.stdout).expect("JSON report");
    let evaluations = report["evaluations"].as_u64().expect("evaluations");
    assert!((64..=400).contains(&evaluations), "spent {evaluations}");
    assert_eq!(report["test_examples"], 16);
    let text = report["text"].as_str().expect("text");
    let original = std::fs::read_to_string(&prompt).expect("original");
    assert_eq!(original, std::fs::read_to_string(workspace().join("examples/sentiment/sentiment.prompt")).unwrap());
    let doc = reprompt_protocol::parse(text, Some(&prompt));
    assert!(doc.diagnostics.is_empty(), "{:?}", doc.diagnostics);
    assert_eq!(variables(text), ["sentence"]);
    let variant = dir.join("sentiment.optimized.prompt");
    let (original_val, best_val) =
        (report["original"]["validation"].as_f64().unwrap(), report["best"]["validation"].as_f64().unwrap());
    if report["improved"] == true {
        assert!(best_val > original_val);
        assert_eq!(std::fs::read_to_string(&variant).expect("variant written"), text);
        let check = reprompt(&["check", variant.to_str().unwrap()], &cache);
        assert!(check.status.success(), "{}", String::from_utf8_lossy(&check.stdout));
        assert!(!report["edits"].as_array().unwrap().is_empty());
    } else {
        assert_eq!(best_val, original_val);
        assert_eq!(text, original);
        assert!(!variant.exists(), "nothing is written when nothing beats the original");
    }
    let svg = std::fs::read_to_string(run_dir.join("curve.svg")).expect("plot");
    assert!(svg.contains("<svg") && svg.contains("best train"));
    assert!(run_dir.join("report.json").is_file() && run_dir.join("checkpoint/search.json").is_file());

    // The same command again resumes the finished run: same result, nothing new spent.
    let again = reprompt(&args, &cache);
    assert!(again.status.success(), "{}", String::from_utf8_lossy(&again.stderr));
    assert!(String::from_utf8_lossy(&again.stderr).contains("resuming"));
    let second: Value = serde_json::from_slice(&again.stdout).expect("JSON report");
    let timeless = |v: &Value| {
        let mut v = v.clone();
        v["seconds"] = Value::Null;
        v
    };
    assert_eq!(timeless(&second["search"]), timeless(&report["search"]));
    assert_eq!(second["search"]["seconds"], report["search"]["seconds"], "a finished run's time is kept");
    // Another seed refuses the checkpoint of this one unless told to start over.
    let other = ["optimize", p, "--budget", "400", "--seed", "4", "--run-dir", r, "--no-test"];
    let refused = reprompt(&other, &cache);
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("another run"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
