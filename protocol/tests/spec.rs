//! Conformance: every case of the Dotprompt spec suite (`tests/spec/**/*.yaml`, copied from
//! google/dotprompt with its license headers; see `tests/spec/SOURCE.md`) must render exactly
//! the expected messages and metadata, compared the way the reference runner compares them.

use std::path::{Path, PathBuf};

use reprompt_protocol::render::{CompiledPrompt, DataArgument, MapEnvironment};
use reprompt_protocol::{parse, yaml};
use serde_json::{Map, Value, json};

fn spec_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("spec dir readable") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            spec_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "yaml") {
            out.push(path);
        }
    }
}

fn object(value: Option<&Value>) -> Map<String, Value> {
    value.and_then(Value::as_object).cloned().unwrap_or_default()
}

/// The expected object with the reference runner's defaults for `ext`, `config`, `metadata`.
fn with_defaults(mut expected: Map<String, Value>, drop: &[&str]) -> Value {
    for key in drop {
        expected.remove(*key);
    }
    for key in ["ext", "config", "metadata"] {
        expected.entry(key).or_insert_with(|| json!({}));
    }
    Value::Object(expected)
}

fn run_case(suite: &Map<String, Value>, case: &Map<String, Value>) -> Result<(), String> {
    let template = suite.get("template").and_then(Value::as_str).unwrap_or_default();
    let mut env = MapEnvironment::default();
    for key in ["partials", "resolverPartials"] {
        for (name, source) in object(suite.get(key)) {
            env.partials.insert(name, source.as_str().unwrap_or_default().to_string());
        }
    }
    for (name, schema) in object(suite.get("schemas")) {
        env.schemas.insert(name, schema);
    }
    let mut data = object(suite.get("data"));
    data.extend(object(case.get("data")));
    let data: DataArgument = serde_json::from_value(Value::Object(data)).map_err(|e| format!("bad data: {e}"))?;
    let options = object(case.get("options"));
    let expect = object(case.get("expect"));

    let doc = parse(template, None);
    let compiled = CompiledPrompt::new(&doc, &env, &options).map_err(|e| format!("compile: {e}"))?;
    let rendered = compiled.render(&data).map_err(|e| format!("render: {e}"))?;
    let mut result = serde_json::to_value(&rendered).map_err(|e| e.to_string())?;
    let raw = result.as_object_mut().and_then(|r| r.remove("raw"));
    let expected = with_defaults(expect.clone(), &["raw", "input"]);
    if result != expected {
        return Err(format!("render\n  got:      {result}\n  expected: {expected}"));
    }
    if let Some(expected_raw) = expect.get("raw")
        && raw.as_ref() != Some(expected_raw)
    {
        return Err(format!("raw\n  got:      {raw:?}\n  expected: {expected_raw}"));
    }
    let mut metadata = compiled.metadata().clone();
    metadata.remove("raw");
    let expected = with_defaults(expect, &["messages", "raw"]);
    if Value::Object(metadata.clone()) != expected {
        return Err(format!("metadata\n  got:      {}\n  expected: {expected}", Value::Object(metadata)));
    }
    Ok(())
}

#[test]
fn dotprompt_spec_suite_passes() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/spec");
    let mut files = Vec::new();
    spec_files(&root, &mut files);
    files.sort();
    let mut total = 0;
    let mut failures = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).expect("spec file readable");
        let suites = yaml::to_json(&text).unwrap_or_else(|e| panic!("{}: {e:?}", file.display()));
        for suite in suites.as_array().expect("a spec file is a list of suites") {
            let suite = suite.as_object().expect("a suite is a mapping");
            let suite_name = suite.get("name").and_then(Value::as_str).unwrap_or("?");
            for case in suite.get("tests").and_then(Value::as_array).expect("a suite has tests") {
                let case = case.as_object().expect("a test is a mapping");
                total += 1;
                if let Err(why) = run_case(suite, case) {
                    let desc = case.get("desc").and_then(Value::as_str).unwrap_or("?");
                    let rel = file.strip_prefix(&root).unwrap_or(file).display();
                    failures.push(format!("{rel} / {suite_name} / {desc}: {why}"));
                }
            }
        }
    }
    eprintln!("spec cases run: {total}, failed: {}", failures.len());
    assert!(failures.is_empty(), "{} of {total} spec cases failed:\n{}", failures.len(), failures.join("\n\n"));
    assert_eq!(total, 117, "the suite has 117 cases; a changed count means files went missing");
}
