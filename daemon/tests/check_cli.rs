//! `reprompt check` and `reprompt render` as a user runs them: the real binary on real files.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root").to_path_buf()
}

fn reprompt(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_reprompt")).args(args).current_dir(workspace()).output().expect("reprompt runs")
}

#[test]
fn the_examples_are_clean() {
    let out = reprompt(&["check", "examples"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    // The two shipped examples, plus any `*.optimized.prompt` the README's main job wrote.
    let checked: usize = stdout
        .strip_prefix("checked ")
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(checked >= 2 && stdout.contains("files: 0 errors, 0 warnings"), "{stdout}");
}

#[test]
fn a_directory_without_prompts_is_said_to_be_one() {
    let out = reprompt(&["check", "daemon/tests/fixtures/baddata/data"]);
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout), "checked 0 files: 0 errors, 0 warnings\n");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr, "warning: no .prompt files found in daemon/tests/fixtures/baddata/data\n");
}

#[test]
fn five_planted_faults_are_each_reported_where_they_are() {
    let out = reprompt(&["check", "--json", "daemon/tests/fixtures/faults/faults.prompt"]);
    assert_eq!(out.status.code(), Some(1), "errors must exit 1");
    let report: Value = serde_json::from_slice(&out.stdout).expect("--json prints JSON");
    let found: Vec<(String, u64, u64, u64)> = report["files"][0]["diagnostics"]
        .as_array()
        .expect("a diagnostics list")
        .iter()
        .map(|d| {
            (
                d["code"].as_str().unwrap_or_default().to_string(),
                d["range"]["start"]["line"].as_u64().unwrap_or(0),
                d["range"]["start"]["column"].as_u64().unwrap_or(0),
                d["range"]["end"]["column"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    // (code, line, start column, end column): 1-based, the end exclusive
    let expected = [
        ("unknown-setting", 7, 1, 16),      // reprompt.lables
        ("missing-dataset", 8, 19, 35),     // data/missing.tsv
        ("unclosed-block", 13, 1, 17),      // {{#if sentence}}
        ("undefined-variable", 14, 11, 19), // sentance
        ("missing-partial", 15, 1, 13),     // {{> footer}}
    ];
    let expected: Vec<_> = expected.iter().map(|(c, l, s, e)| (c.to_string(), *l, *s, *e)).collect();
    assert_eq!(found, expected);
    assert_eq!(report["errors"], 4);
    assert_eq!(report["warnings"], 1);
}

#[test]
fn bad_dataset_rows_are_reported_at_the_setting_that_names_the_file() {
    // The same rows `reprompt score` refuses at load, found without a model.
    let out = reprompt(&["check", "--json", "daemon/tests/fixtures/baddata/bad.prompt"]);
    assert_eq!(out.status.code(), Some(1), "errors must exit 1");
    let report: Value = serde_json::from_slice(&out.stdout).expect("--json prints JSON");
    let diagnostics = report["files"][0]["diagnostics"].as_array().expect("a diagnostics list");
    let found: Vec<(&str, u64, u64, &str)> = diagnostics
        .iter()
        .map(|d| {
            (
                d["code"].as_str().unwrap_or_default(),
                d["range"]["start"]["line"].as_u64().unwrap_or(0),
                d["range"]["start"]["column"].as_u64().unwrap_or(0),
                d["message"].as_str().unwrap_or_default(),
            )
        })
        .collect();
    let lines = [
        "dev.tsv:3: expected 2 tab-separated columns",
        "dev.tsv:4: `sentence` is empty",
        "dev.tsv:5: unknown label `2`",
    ];
    assert_eq!(found.len(), lines.len(), "{found:?}");
    for ((code, line, column, message), expected) in found.iter().zip(lines) {
        // `reprompt.validation: data/dev.tsv`, the value
        assert_eq!((*code, *line, *column), ("invalid-dataset", 9, 22), "{message}");
        assert!(message.starts_with("`reprompt.validation`: ") && message.contains(expected), "{message}");
    }
}

#[test]
fn faults_print_like_a_compiler() {
    let out = reprompt(&["check", "daemon/tests/fixtures/faults/faults.prompt"]);
    insta::assert_snapshot!(String::from_utf8_lossy(&out.stdout));
}

#[test]
fn render_prints_dotprompt_messages() {
    let dir = tempdir("render");
    let data = dir.join("data.json");
    std::fs::write(&data, r#"{"input": {"sentence": "a gem of a film"}}"#).expect("write data");
    let out =
        reprompt(&["render", "examples/sentiment/sentiment.prompt", "--data", data.to_str().expect("utf-8 path")]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let rendered: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(rendered["messages"][0]["role"], "system");
    assert_eq!(rendered["messages"][1]["role"], "user");
    let user = rendered["messages"][1]["content"][0]["text"].as_str().unwrap_or_default();
    assert!(user.contains("Review: a gem of a film\n"), "{user}");
    assert_eq!(rendered["config"]["maxOutputTokens"], 4);
    assert_eq!(rendered["ext"]["reprompt"]["labels"][1], "great");
    assert!(out.stderr.is_empty(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn render_names_data_that_misses_or_misspells_a_variable() {
    let dir = tempdir("render-typos");
    let data = dir.join("data.json");
    std::fs::write(&data, r#"{"inputs": {}, "input": {"sentense": "a gem of a film"}}"#).expect("write data");
    let out =
        reprompt(&["render", "examples/sentiment/sentiment.prompt", "--data", data.to_str().expect("utf-8 path")]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let user = serde_json::from_slice::<Value>(&out.stdout).expect("JSON")["messages"][1]["content"][0]["text"].clone();
    assert!(user.as_str().unwrap_or_default().contains("Review: \n"), "{user}");
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "warning: `inputs` is not a field of the data argument (input, context, messages, docs): ignored (did you \
         mean `input`?)\n\
         warning: the data's `input` has no `sentence`, which the input schema requires: it renders empty\n\
         warning: `sentense` in the data's `input` is not declared by the input schema (did you mean `sentence`?)\n"
    );
}

#[test]
fn render_refuses_a_broken_file_with_its_diagnostics() {
    let out = reprompt(&["render", "daemon/tests/fixtures/faults/faults.prompt"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("error[unclosed-block]"), "{stderr}");
}

fn tempdir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("reprompt-test-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}
