//! `reprompt optimize` as a user runs it: the real binary and model on a copy of the example
//! prompt with a tiny budget — the budget holds, the report, plot and checkpoint are written,
//! the offered prompt is valid with the same variables, a second run resumes the first, a
//! refused command keeps it, and a run of other settings replaces its checkpoint; a bad test
//! split is found before the search; `pretrain` writes a policy that a later run starts from;
//! a generation prompt is searched end to end with the edits that fit generation.

mod common;

use std::path::PathBuf;

use common::{reprompt, workspace};

use serde_json::Value;

/// A scratch directory with the example prompt, its data, and a cache sharing the model.
fn scratch(name: &str) -> (PathBuf, PathBuf) {
    let dir = std::env::temp_dir().join(format!("reprompt-optimize-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let example = workspace().join("examples/sentiment");
    std::fs::create_dir_all(dir.join("data")).expect("scratch dir");
    std::fs::copy(example.join("sentiment.prompt"), dir.join("sentiment.prompt")).expect("copy prompt");
    for split in ["train.tsv", "dev.tsv", "test.tsv"] {
        std::fs::copy(example.join("data").join(split), dir.join("data").join(split)).expect("copy data");
    }
    let cache = dir.join("cache");
    common::link_models(&cache);
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
    let (dir, cache) = scratch("run");
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
    assert!(report["held_out"].is_null(), "its own validation split: {}", report["held_out"]);
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
    // The template step judged the ranked words and the built-in sets out of sample with the
    // real model; the words it started from were calibrated on train.
    let screen = report["search"]["template_screen"].as_array().expect("template screen");
    assert!(screen.len() >= 2, "{screen:?}");
    assert_eq!(screen.iter().filter(|s| s[2] == true).count(), 1, "one ranked labelling: {screen:?}");
    assert!(screen.iter().all(|s| s[1].as_f64().is_some_and(|a| (0.0..=1.0).contains(&a))), "{screen:?}");
    assert!(screen.iter().any(|s| s[0] == "negative / positive"), "{screen:?}");
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
    // A command refused before it starts (a budget below what the original's scores cost)
    // keeps the finished run it would have replaced.
    let state = std::fs::read(run_dir.join("checkpoint/search.json")).expect("checkpoint");
    let refused = reprompt(&["optimize", p, "--budget", "10", "--seed", "3", "--run-dir", r, "--json"], &cache);
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("cannot score even the original") && !stderr.contains("starting over"), "{stderr}");
    assert_eq!(std::fs::read(run_dir.join("checkpoint/search.json")).expect("checkpoint kept"), state);
    // Another seed is another run: it replaces the checkpoint instead of resuming it.
    let other = ["optimize", p, "--budget", "64", "--seed", "4", "--run-dir", r, "--no-test", "--json"];
    let replaced = reprompt(&other, &cache);
    assert!(replaced.status.success(), "{}", String::from_utf8_lossy(&replaced.stderr));
    assert!(String::from_utf8_lossy(&replaced.stderr).contains("starting over"));
    let third: Value = serde_json::from_slice(&replaced.stdout).expect("JSON report");
    assert_eq!(third["seed"], 4);
    assert!(third["evaluations"].as_u64().unwrap() <= 64);
    // 64 evaluations only score the original on train and validation. The original answers
    // one label to every example (50% on both), and its calibration fitted on train (its
    // twin) is scored from its results without the model on both splits: it wins, free.
    assert_eq!(third["improved"], true, "{}", third["best"]);
    let edits = third["edits"].as_array().unwrap();
    assert_eq!(edits.len(), 1, "{edits:?}");
    assert!(edits[0].as_str().unwrap().starts_with("calibrate the labels"), "{edits:?}");
    assert!(third["search"]["derived"].as_u64().unwrap() >= 64, "{}", third["search"]["derived"]);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_prompt_without_a_validation_split_holds_half_of_its_training_examples_out() {
    let (dir, cache) = scratch("heldout");
    let prompt = dir.join("sentiment.prompt");
    let text = std::fs::read_to_string(&prompt).unwrap();
    let text: String = text
        .lines()
        .filter(|l| !l.starts_with("reprompt.validation") && !l.starts_with("reprompt.test"))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&prompt, &text).unwrap();
    let run_dir = dir.join("run");
    let (p, r) = (prompt.to_str().unwrap(), run_dir.to_str().unwrap());
    // 32 evaluations score the original on its two halves of 16, and no more.
    let out = reprompt(&["optimize", p, "--budget", "32", "--seed", "1", "--run-dir", r], &cache);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("validation: 16 of the 32 examples in") && stdout.contains("used the other 16"),
        "{stdout}"
    );
    let report: Value = serde_json::from_slice(&std::fs::read(run_dir.join("report.json")).unwrap()).unwrap();
    assert_eq!(report["held_out"]["train"], 16, "{}", report["held_out"]);
    assert_eq!(report["held_out"]["validation"], 16, "{}", report["held_out"]);
    assert_eq!(report["search"]["validation_examples"], 16);
    assert!(report["evaluations"].as_u64().unwrap() <= 32, "{}", report["evaluations"]);
    // `score --split validation` scores the same held-out half: the run's figure checks out.
    let out = reprompt(&["score", p, "--split", "validation", "--json"], &cache);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("scoring the 16 of its 32 training examples"));
    let scored: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(scored["n"], 16);
    let (scored, reported) = (scored["aggregate"]["mean"].as_f64().unwrap(), report["original"]["validation"].as_f64());
    assert!(reported.is_some_and(|r| (r - scored).abs() < 1e-9), "score {scored}, report {reported:?}");

    // Too few examples to halve: refused before the model loads, saying what would do.
    let rows: Vec<String> =
        std::fs::read_to_string(dir.join("data/train.tsv")).unwrap().lines().take(4).map(String::from).collect();
    std::fs::write(dir.join("data/train.tsv"), rows.join("\n") + "\n").unwrap();
    let empty = dir.join("empty-cache");
    let out = reprompt(&["optimize", p, "--budget", "100"], &empty);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("add `reprompt.validation: <file>`") && stderr.contains("(it has 3)"), "{stderr}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn the_benchmark_prints_one_row_per_run_with_the_manual_baseline_once_per_split() {
    let (dir, cache) = scratch("bench");
    let work = dir.join("work");
    let w = work.to_str().expect("utf-8 path");
    let args = [
        "bench",
        "optimize",
        "--seeds",
        "13,21",
        "--repeats",
        "2",
        "--budget",
        "96",
        "--strategies",
        "random,ppo",
        "--test-limit",
        "8",
        "--paraphrases",
        "0",
        "--work",
        w,
        "--json",
    ];
    let out = reprompt(&args, &cache);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let table: Value = serde_json::from_slice(&out.stdout).expect("JSON table");
    let rows = table["rows"].as_array().expect("rows");
    let names: Vec<(String, u64, u64)> = rows
        .iter()
        .map(|r| {
            (
                r["strategy"].as_str().unwrap().to_string(),
                r["seed"].as_u64().unwrap(),
                r["search_seed"].as_u64().unwrap(),
            )
        })
        .collect();
    // Per split: the author's prompt once, then each strategy with the split's own search seed
    // and with a second one.
    let expected: Vec<(String, u64, u64)> = [13, 21]
        .into_iter()
        .flat_map(|s| {
            [("manual", s), ("random", s), ("ppo", s), ("random", s + 1000), ("ppo", s + 1000)]
                .into_iter()
                .map(move |(n, search)| (n.to_string(), s, search))
        })
        .collect();
    assert_eq!(names, expected);
    for row in rows {
        for key in ["train", "validation", "test", "evaluations", "seconds"] {
            assert!(row[key].is_number(), "{key} in {row}");
        }
        assert!(row["evaluations"].as_u64().unwrap() <= 96);
        let validation = row["validation"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&validation));
    }
    // The manual row is the author's prompt; a strategy never reports less on validation.
    let runs = |name: &str, seed: u64| -> Vec<Value> {
        rows.iter().filter(|r| r["strategy"] == name && r["seed"] == seed).cloned().collect()
    };
    for seed in [13, 21] {
        let manual = runs("manual", seed)[0]["validation"].as_f64().unwrap();
        for name in ["random", "ppo"] {
            assert!(runs(name, seed).iter().all(|r| r["validation"].as_f64().unwrap() >= manual));
        }
        // Each run kept its report in its own directory.
        for dir in ["random", "ppo", "random-search-", "ppo-search-"] {
            let dir = if dir.ends_with('-') { format!("{dir}{}", seed + 1000) } else { dir.to_string() };
            assert!(work.join(format!("sst-2-{seed}/runs/{dir}/report.json")).is_file(), "{dir}");
        }
    }
    // PPO against random, per split: the difference of the two strategies' mean test accuracy
    // over the split's runs.
    let paired = table["paired"].as_array().expect("paired");
    assert_eq!(paired.len(), 1, "{paired:?}");
    assert_eq!(paired[0]["strategy"], "random");
    let per_seed = paired[0]["per_seed"].as_array().expect("per_seed");
    assert_eq!(per_seed.len(), 2);
    for (i, seed) in [13, 21].into_iter().enumerate() {
        let test = |name: &str| {
            let r = runs(name, seed);
            r.iter().map(|r| r["test"].as_f64().unwrap()).sum::<f64>() / r.len() as f64
        };
        let difference = per_seed[i].as_f64().unwrap();
        assert!((difference - (test("ppo") - test("random"))).abs() < 1e-9, "{paired:?}");
    }
    let number = |key: &str| paired[0][key].as_f64().unwrap_or_else(|| panic!("{key} in {paired:?}"));
    let (low, mean, high) = (number("low"), number("mean"), number("high"));
    assert!(low <= mean && mean <= high, "{paired:?}");
    assert!(std::fs::read_to_string(work.join("curves.svg")).expect("plot").contains("<svg"));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn pretrain_writes_a_policy_that_optimize_starts_from() {
    let (dir, cache) = scratch("pretrain");
    let prompt = dir.join("sentiment.prompt");
    let p = prompt.to_str().expect("utf-8 path");
    let policy = dir.join("policy.safetensors");
    let work = dir.join("work");
    let args = [
        "pretrain",
        p,
        "--rounds",
        "2",
        "--budget",
        "300",
        "--paraphrases",
        "0",
        "--out",
        policy.to_str().unwrap(),
        "--work",
        work.to_str().unwrap(),
    ];
    let out = reprompt(&args, &cache);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.contains("| 1 |") && table.contains("| 2 |"), "{table}");
    assert!(table.contains("2 runs"), "{table}");
    // The second run started from the first run's policy.
    let second: Value = serde_json::from_slice(
        &std::fs::read(work.join("02-sentiment-2/checkpoint/search.json")).expect("second run's checkpoint"),
    )
    .unwrap();
    assert!(second["config"]["warm_start"].as_str().is_some_and(|d| d.len() == 16), "{}", second["config"]);
    let first: Value =
        serde_json::from_slice(&std::fs::read(work.join("01-sentiment-1/checkpoint/search.json")).unwrap()).unwrap();
    assert!(first["config"]["warm_start"].is_null());

    let run = |choice: &str| -> Value {
        let run_dir = dir.join(format!("run-{}", choice.len()));
        let args = [
            "optimize",
            p,
            "--budget",
            "200",
            "--paraphrases",
            "0",
            "--no-test",
            "--policy",
            choice,
            "--run-dir",
            run_dir.to_str().unwrap(),
            "--json",
        ];
        let out = reprompt(&args, &cache);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).expect("JSON report")
    };
    let warm = run(policy.to_str().unwrap());
    assert_eq!(warm["policy"].as_str(), policy.to_str());
    assert!(warm["evaluations"].as_u64().unwrap() <= 200);
    assert!(run("none")["policy"].is_null());
    // A file that is not a policy is a clear error.
    let bad = reprompt(&["optimize", p, "--policy", p, "--budget", "200"], &cache);
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("reading the policy"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_problem_in_the_test_split_is_found_before_the_search_spends_anything() {
    let (dir, cache) = scratch("badtest");
    // A row whose label is neither an id nor a label word, at the end of the test split.
    let test = dir.join("data/test.tsv");
    let mut rows = std::fs::read_to_string(&test).unwrap();
    rows.push_str("a review with an odd label .\tmaybe\n");
    let line = rows.lines().count();
    std::fs::write(&test, rows).unwrap();
    let prompt = dir.join("sentiment.prompt");
    let run_dir = dir.join("run");
    let args = ["optimize", prompt.to_str().unwrap(), "--run-dir", run_dir.to_str().unwrap(), "--budget"];
    let out = reprompt(&[&args[..], &["400"]].concat(), &cache);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&format!("test.tsv:{line}: unknown label `maybe`")), "{stderr}");
    assert!(!run_dir.join("checkpoint").exists(), "nothing was searched");
    // Without the test split the same prompt runs (the problem is the test split's alone).
    let limited = reprompt(&[&args[..], &["64", "--no-test", "--json"]].concat(), &cache);
    assert!(limited.status.success(), "{}", String::from_utf8_lossy(&limited.stderr));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_prompt_too_long_for_the_context_with_an_example_loses_instead_of_ending_the_run() {
    let (dir, cache) = scratch("toolong");
    // Eight training reviews and one of ~9000 tokens: no prompt fits the model's context with
    // it, the original included, so every prompt counts it as a wrong answer.
    // The header, four reviews of each class (the files list one class, then the other).
    let some = |path: &std::path::Path| -> String {
        let text = std::fs::read_to_string(path).unwrap();
        let rows: Vec<&str> = text.lines().collect();
        [&rows[..5], &rows[rows.len() - 4..]].concat().join("\n") + "\n"
    };
    let train = dir.join("data/train.tsv");
    let text = some(&train) + &format!("{}\t1\n", "good ".repeat(9000).trim_end());
    std::fs::write(&train, text).unwrap();
    let dev = dir.join("data/dev.tsv");
    std::fs::write(&dev, some(&dev)).unwrap();
    let prompt = dir.join("sentiment.prompt");
    let p = prompt.to_str().unwrap();
    let args = ["optimize", p, "--budget", "120", "--paraphrases", "0", "--ranked-labels", "0", "--no-test", "--json"];
    let out = reprompt(&args, &cache);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: Value = serde_json::from_slice(&out.stdout).expect("JSON report");
    assert_eq!(report["too_long"]["original"], true, "{}", report["too_long"]);
    assert_eq!(report["too_long"]["context"], 8192);
    assert!(report["too_long"]["prompts"].as_u64() >= Some(2), "{}", report["too_long"]);
    assert!(report["evaluations"].as_u64() <= Some(120));
    // The reviews that fit are scored as ever: only the long one counts as wrong.
    assert!(report["original"]["train"].as_f64() > Some(0.0), "{}", report["original"]);
    // The same command again resumes the finished run, scoring nothing, and says the same.
    let again = reprompt(&args, &cache);
    assert!(String::from_utf8_lossy(&again.stderr).contains("resuming"), "{}", String::from_utf8_lossy(&again.stderr));
    let again: Value = serde_json::from_slice(&again.stdout).expect("JSON report");
    assert_eq!(again["evaluations"], report["evaluations"]);
    assert_eq!(again["too_long"], report["too_long"]);
    // `score` names the example instead.
    let out = reprompt(&["score", p, "--split", "train", "--no-cache"], &cache);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("train.tsv:10: the prompt with this example and its answer take 9"), "{stderr}");
    assert!(stderr.contains("tokens, and the model's context holds 8192"), "{stderr}");
    // A test example the prompt as written does not fit is named before the search.
    std::fs::write(&train, some(&train)).unwrap();
    let test = dir.join("data/test.tsv");
    std::fs::write(&test, some(&test) + &format!("{}\t0\n", "bad ".repeat(9000).trim_end())).unwrap();
    let run_dir = dir.join("run-test");
    let args = ["optimize", p, "--budget", "120", "--run-dir", run_dir.to_str().unwrap()];
    let out = reprompt(&args, &cache);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("test.tsv:10: the prompt with this test example and its answer take 9"), "{stderr}");
    assert!(!run_dir.join("checkpoint").exists(), "nothing was searched");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn test_examples_the_optimized_prompt_does_not_fit_score_as_the_worst_answer() {
    use reprompt::eval::evaluate::load_split;
    use reprompt::eval::{Evaluator, PreparedPrompt, Split};
    let (dir, _cache) = scratch("testfit");
    // The test split: four short reviews and, third, one of ~8000 tokens that the prompt as
    // written fits the model's context with and a prompt ~600 tokens longer does not. The gap
    // reward, whose worst (−180) no real answer reaches here.
    let test = dir.join("data/test.tsv");
    let rows: Vec<String> = std::fs::read_to_string(&test).unwrap().lines().take(5).map(String::from).collect();
    let long = format!("{}\t1", "good ".repeat(8040).trim_end());
    let text = [&rows[..3], std::slice::from_ref(&long), &rows[3..]].concat().join("\n") + "\n";
    std::fs::write(&test, text).unwrap();
    let file = dir.join("sentiment.prompt");
    let original_text =
        std::fs::read_to_string(&file).unwrap().replace("reprompt.reward: accuracy", "reprompt.reward: gap");
    std::fs::write(&file, &original_text).unwrap();
    let longer_text = original_text
        .replace("Review: {{sentence}}", &format!("{}\nReview: {{{{sentence}}}}", "Read it closely. ".repeat(200)));
    let (original_doc, longer_doc) =
        (reprompt_protocol::parse(&original_text, Some(&file)), reprompt_protocol::parse(&longer_text, Some(&file)));
    let engine = reprompt::cli::score::open_engine(&original_doc, &file, reprompt::engine::DeviceChoice::Cpu).unwrap();
    let evaluator = Evaluator::new(engine, None);
    let data = load_split(&original_doc, &file, Split::Test).unwrap();
    let (original, longer) =
        (PreparedPrompt::new(&original_doc, &file).unwrap(), PreparedPrompt::new(&longer_doc, &file).unwrap());
    let (tokens, context) = evaluator.context_tokens(&original, &data.examples).unwrap();
    assert!(tokens[2] < context, "the original fits: {tokens:?}");
    let (tokens, _) = evaluator.context_tokens(&longer, &data.examples).unwrap();
    assert!(tokens[2] > context && tokens.iter().filter(|&&n| n >= context).count() == 1, "{tokens:?}");

    let (scores, too_long) = reprompt::cli::optimize::score_fitting_test(&evaluator, &longer, &data).unwrap();
    assert_eq!((scores.len(), too_long), (5, 1));
    assert_eq!(scores[2], -180.0, "{scores:?}");
    // The others are scored as they are on their own.
    let mut short = data.clone();
    short.examples.remove(2);
    short.hash = "the short reviews".into();
    let alone: Vec<f64> = evaluator
        .evaluate(&longer, &short, Split::Test, &mut |_, _| {})
        .unwrap()
        .examples
        .iter()
        .map(|e| e.score)
        .collect();
    assert_eq!([scores[0], scores[1], scores[3], scores[4]].to_vec(), alone);
    assert!(alone.iter().all(|&s| s > -180.0), "{alone:?}");
    // Scored whole, the split is an error that names the example: what ended a run before.
    let err = evaluator.evaluate(&longer, &data, Split::Test, &mut |_, _| {}).unwrap_err().to_string();
    assert!(err.contains("test.tsv:4: the prompt with this example and its answer take"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_test_example_whose_answer_passes_the_context_scores_as_the_worst_answer() {
    use reprompt::eval::evaluate::load_split;
    use reprompt::eval::{EvalError, Evaluator, PreparedPrompt, Split};
    let (dir, _cache) = scratch("answerfit");
    // Label words of several tokens are added to the prompt to be scored: with a review just
    // short of the context, the prompt fits and the prompt with an answer does not. The gap
    // reward, whose worst (−180) no real answer reaches here.
    let file = dir.join("long-labels.prompt");
    std::fs::write(
        &file,
        "---\nreprompt.format: plain\nreprompt.labels: [absolutely terrible in every way, absolutely wonderful in every way]\n\
         reprompt.dataset: data/train.tsv\nreprompt.test: data/test.tsv\nreprompt.reward: gap\n---\n\
         Review: {{sentence}}\nSentiment:",
    )
    .unwrap();
    let rows: Vec<String> =
        std::fs::read_to_string(dir.join("data/test.tsv")).unwrap().lines().take(3).map(String::from).collect();
    let write_test = |words: usize| {
        let long = format!("{}\t1", "good ".repeat(words).trim_end());
        std::fs::write(dir.join("data/test.tsv"), [&rows[..], std::slice::from_ref(&long)].concat().join("\n") + "\n")
            .unwrap();
    };
    write_test(8000);
    let doc = reprompt_protocol::parse(&std::fs::read_to_string(&file).unwrap(), Some(&file));
    let engine = reprompt::cli::score::open_engine(&doc, &file, reprompt::engine::DeviceChoice::Cpu).unwrap();
    let evaluator = Evaluator::new(engine, None);
    let prepared = PreparedPrompt::new(&doc, &file).unwrap();
    // The long review sized to 2 tokens short of the context (" good" is one token).
    let mut words = 8000;
    let mut tokens = Vec::new();
    let mut context = 0;
    for _ in 0..3 {
        write_test(words);
        let data = load_split(&doc, &file, Split::Test).unwrap();
        (tokens, context) = evaluator.context_tokens(&prepared, &data.examples).unwrap();
        words = (words + context).checked_sub(2 + tokens[2]).unwrap();
    }
    assert_eq!(tokens[2] + 2, context, "{tokens:?}");
    let data = load_split(&doc, &file, Split::Test).unwrap();

    let err = evaluator.evaluate(&prepared, &data, Split::Test, &mut |_, _| {}).unwrap_err();
    assert!(matches!(err, EvalError::TooLong(_)), "{err}");
    // As the prompt to optimize, it is refused before the search: its test score would end
    // the run. The longest row is the prompt with the longest label's words, its last token
    // predicted, not read.
    let (row, longest, limit) = evaluator.longest_row(&prepared, &data.examples).unwrap().unwrap();
    assert_eq!((longest.line, limit), (4, context));
    assert!(row > context && row < tokens[2] + 10, "{row} for {tokens:?}");
    let err = reprompt::cli::optimize::check_test_fits(&evaluator, &prepared, &data).unwrap_err().to_string();
    assert!(
        err.contains(&format!("test.tsv:4: the prompt with this test example and its answer take {row} tokens")),
        "{err}"
    );
    let mut short = data.clone();
    short.examples.truncate(2);
    reprompt::cli::optimize::check_test_fits(&evaluator, &prepared, &short).unwrap();
    let (scores, too_long) = reprompt::cli::optimize::score_fitting_test(&evaluator, &prepared, &data).unwrap();
    assert_eq!((scores.len(), too_long), (3, 1));
    assert_eq!(scores[2], -180.0, "{scores:?}");
    assert!(scores[..2].iter().all(|&s| s > -180.0), "{scores:?}");
    // Shortened until its longest row fills the context exactly, the review fits: the
    // engine scores it (a real answer), and the prompt is no longer refused.
    write_test(words - (row - context));
    let data = load_split(&doc, &file, Split::Test).unwrap();
    let (rows, _) = evaluator.row_tokens(&prepared, &data.examples).unwrap();
    assert_eq!(rows[2], context, "{rows:?}");
    reprompt::cli::optimize::check_test_fits(&evaluator, &prepared, &data).unwrap();
    let (scores, too_long) = reprompt::cli::optimize::score_fitting_test(&evaluator, &prepared, &data).unwrap();
    assert_eq!((scores.len(), too_long), (3, 0));
    assert!(scores.iter().all(|&s| s > -180.0), "{scores:?}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_generation_prompt_is_optimized_with_the_edits_that_fit_generation() {
    let dir = std::env::temp_dir().join(format!("reprompt-optimize-generate-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let cache = dir.join("cache");
    common::link_models(&cache);
    let sums = |pairs: &[(u32, u32)]| -> String {
        pairs
            .iter()
            .map(|(a, b)| format!("{{\"question\": \"What is {a} plus {b}?\", \"answer\": \"{}\"}}\n", a + b))
            .collect()
    };
    std::fs::write(
        dir.join("train.jsonl"),
        sums(&[(12, 6), (14, 3), (4, 19), (5, 13), (18, 8), (7, 9), (11, 2), (3, 16)]),
    )
    .unwrap();
    std::fs::write(dir.join("dev.jsonl"), sums(&[(6, 15), (17, 4), (9, 10), (2, 13)])).unwrap();
    let source = "---\nname: sums\nmodel: smollm2-135m-instruct\nconfig:\n  temperature: 0\n  maxOutputTokens: 12\n\
                  input:\n  schema:\n    question: string\nreprompt.task: generate\nreprompt.dataset: train.jsonl\n\
                  reprompt.validation: dev.jsonl\nreprompt.reward: numeric_match\n---\n{{role \"system\"}}\n\
                  You are a calculator.\n{{role \"user\"}}\n{{question}}\n";
    let prompt = dir.join("sums.prompt");
    std::fs::write(&prompt, source).unwrap();
    let run_dir = dir.join("run");
    // Seed 7: with the sentiment banks every prompt got before (17d0920) this run scored
    // prompts with "Answer with one word.", an opinion phrase and the Label:, Sentiment: and
    // Topic: cues.
    let r = run_dir.to_str().unwrap();
    let args = ["optimize", prompt.to_str().unwrap(), "--budget", "80", "--seed", "7", "--run-dir", r, "--json"];
    let out = reprompt(&args, &cache);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(!stderr.contains("split-overlap"), "{stderr}");
    let report: Value = serde_json::from_slice(&out.stdout).expect("JSON report");
    let evaluations = report["evaluations"].as_u64().unwrap();
    assert!((12..=80).contains(&evaluations), "spent {evaluations}");
    // Every prompt the search scored is a valid generation prompt with its variable, and none
    // carries a classifier's phrase or cue.
    let state: Value =
        serde_json::from_slice(&std::fs::read(run_dir.join("checkpoint/search.json")).unwrap()).expect("checkpoint");
    let records = state["records"].as_object().expect("records");
    assert!(records.len() >= 3, "{} prompts", records.len());
    for record in records.values() {
        let text = record["text"].as_str().unwrap();
        let doc = reprompt_protocol::parse(text, Some(&prompt));
        assert!(doc.diagnostics.is_empty(), "{:?}\n{text}", doc.diagnostics);
        assert_eq!(variables(text), ["question"]);
        for off_task in ["Answer with one word.", "opinion", "Sentiment:", "Label:", "Category:", "Topic:"] {
            assert!(!text.contains(off_task), "{off_task}: {text}");
        }
    }
    let text = report["text"].as_str().unwrap();
    let variant = dir.join("sums.optimized.prompt");
    if report["improved"] == true {
        assert!(report["best"]["validation"].as_f64() > report["original"]["validation"].as_f64());
        assert_eq!(std::fs::read_to_string(&variant).expect("variant written"), text);
        let check = reprompt(&["check", variant.to_str().unwrap()], &cache);
        assert!(check.status.success(), "{}", String::from_utf8_lossy(&check.stdout));
    } else {
        assert_eq!(text, source);
        assert!(!variant.exists());
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
