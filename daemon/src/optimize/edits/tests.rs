//! The edit space's tests: every edit kind on real `.prompt` texts, each result re-parsed.

use super::*;

const EXAMPLE: &str = include_str!("../../../../examples/sentiment/sentiment.prompt");

fn doc() -> PromptDocument {
    parse(EXAMPLE, None)
}

/// A training example of the example prompt: its sentence and label.
fn sentence_demo(sentence: &str, label: usize) -> DemoSource {
    let mut input = Map::new();
    input.insert("sentence".into(), Value::String(sentence.into()));
    DemoSource { input, label: Some(label), answer: None }
}

fn space() -> EditSpace {
    let demo = sentence_demo;
    EditSpace::builtin(vec![
        demo("a dull , lifeless film .", 0),
        demo("a joy to watch {{ even twice }} .", 1),
        demo("the cast is superb .", 1),
    ])
}

#[test]
fn a_crlf_file_keeps_its_line_endings() {
    let doc = parse("---\r\nreprompt.labels: [bad, good]\r\n---\r\nReview: {{x}}\r\nSentiment:\r\n", None);
    let space = EditSpace::builtin(Vec::new());
    for edit in [
        Edit::LabelBias(vec![0.0, -1.0]),
        Edit::AddDemo { at: doc.body_span.start, text: "Review: fine\nSentiment: good\n\n".into() },
    ] {
        let text = apply_checked(&doc, &edit, &space).unwrap();
        assert!(!text.replace("\r\n", "").contains('\n'), "{edit:?}: {text:?}");
        assert_ne!(text, doc.source);
    }
    assert_eq!(with_crlf("a\nb\r\nc\rd\n"), "a\r\nb\r\nc\r\nd\r\n");
    // A file of mixed line endings is left as it is.
    assert!(crlf_file("a\r\nb\r\n") && !crlf_file("a\r\nb\nc\r\n") && !crlf_file("a\nb\n"));
}

#[test]
fn label_and_format_edits_touch_only_their_values() {
    let (doc, space) = (doc(), space());
    let text = apply_checked(&doc, &Edit::Labels(vec!["negative".into(), "positive".into()]), &space).unwrap();
    assert!(text.contains("reprompt.labels: [\"negative\", \"positive\"]\n"), "{text}");
    // The instruction that names the labels follows them.
    assert!(text.contains("Is the sentiment of this review positive or negative?"), "{text}");
    let capital = parse("---\nreprompt.labels: [no, yes]\n---\nYes or no? Say yes. Notes: {{x}}", None);
    let relabelled = apply_checked(&capital, &Edit::Labels(vec!["bad".into(), "good".into()]), &space).unwrap();
    assert!(relabelled.ends_with("Good or bad? Say good. Notes: {{x}}"), "{relabelled}");
    assert_eq!(text.lines().count(), EXAMPLE.lines().count());
    let plain = apply_checked(&doc, &Edit::Format(Format::Plain), &space).unwrap();
    let reparsed = parse(&plain, None);
    assert_eq!(reparsed.settings.format, Format::Plain);
    assert_eq!(reparsed.template(), doc.template());
    // And back: the key now exists, so its value is replaced in place.
    let chat = apply_checked(&reparsed, &Edit::Format(Format::Chat), &space).unwrap();
    assert_eq!(parse(&chat, None).settings.format, Format::Chat);
    assert_eq!(chat.len(), plain.len() - "plain".len() + "chat".len());
}

#[test]
fn a_label_edit_leaves_the_authors_own_examples_alone_but_their_answers() {
    let doc = parse(
        "---\nreprompt.labels: [terrible, great]\n---\nGreat or terrible?\nReview: a great cast .\nSentiment: great\n\nReview: {{sentence}}\nSentiment:\n",
        None,
    );
    let text = apply_checked(&doc, &Edit::Labels(vec!["bad".into(), "good".into()]), &space()).unwrap();
    assert!(text.contains("Good or bad?\nReview: a great cast .\nSentiment: good\n"), "{text}");
    // A field-shaped instruction is not an example; an answer may end a sentence.
    let doc = parse(
        "---\nreprompt.labels: [terrible, great]\n---\nQuestion: great or terrible?\nReview: a great cast .\nSentiment: great.\n\nReview: {{sentence}}\nSentiment:\n",
        None,
    );
    let text = apply_checked(&doc, &Edit::Labels(vec!["bad".into(), "good".into()]), &space()).unwrap();
    assert!(text.contains("Question: good or bad?\nReview: a great cast .\nSentiment: good.\n"), "{text}");
    // The example's own line stays whole even when it is a label word and nothing else.
    let doc = parse(
        "---\nreprompt.labels: [terrible, great]\n---\nReview: Great!\nSentiment: great\n\nReview: {{sentence}}\nSentiment:\n",
        None,
    );
    let text = apply_checked(&doc, &Edit::Labels(vec!["bad".into(), "good".into()]), &space()).unwrap();
    assert!(text.contains("Review: Great!\nSentiment: good\n"), "{text}");
}

#[test]
fn a_block_two_training_examples_show_is_edited_once() {
    // The same sentence twice in the training data, even labelled both ways.
    let superb = "the cast is superb .";
    let space = EditSpace::builtin(vec![sentence_demo(superb, 0), sentence_demo(superb, 1)]);
    let doc = doc();
    let shown = demo_text(&doc, &space, &space.demos[1]).unwrap();
    let at = example_unit(&doc).unwrap().start;
    let with = parse(&apply_checked(&doc, &Edit::AddDemo { at, text: shown }, &space).unwrap(), None);
    let found = find_demos(&with, &space);
    assert_eq!(found.len(), 1, "one block");
    assert_eq!(found[0].source, 1, "the source whose answer it shows");
    let text = apply_checked(&with, &Edit::Labels(vec!["bad".into(), "good".into()]), &space).unwrap();
    assert!(text.contains("Review: the cast is superb .\nAnswer: good\n"), "{text}");
}

#[test]
fn labels_written_as_a_block_list_are_edited_too() {
    for yaml in ["reprompt.labels:\n- terrible\n- great\n", "reprompt.labels:\n  - terrible\n  - great\n"] {
        let doc =
            parse(&format!("---\n{yaml}reprompt.label_bias:\n- 0\n- 1\n---\nReview: {{{{x}}}}\nSentiment:\n"), None);
        assert!(doc.diagnostics.is_empty(), "{:?}", doc.diagnostics);
        let text = apply_checked(&doc, &Edit::Labels(vec!["bad".into(), "good".into()]), &space()).unwrap();
        assert_eq!(parse(&text, None).settings.labels.unwrap().value, ["bad", "good"], "{text}");
        let text = apply_checked(&doc, &Edit::LabelBias(vec![0.0, -0.5]), &space()).unwrap();
        assert_eq!(parse(&text, None).settings.label_bias.unwrap().value, [0.0, -0.5], "{text}");
    }
}

#[test]
fn a_completion_keeps_its_cue_where_a_role_marker_ended_the_template() {
    let doc =
        parse("---\nreprompt.labels: [bad, good]\n---\n{{role \"user\"}}\nReview: {{x}}\n{{role \"model\"}}\n", None);
    let text = apply_checked(&doc, &Edit::Completion("Sentiment:".into()), &space()).unwrap();
    assert!(text.trim_end().ends_with("Review: {{x}}\nSentiment:"), "{text:?}");
}

#[test]
fn demonstrations_of_untrusted_text_stay_literal_and_never_panic() {
    let demo = |s: &str| sentence_demo(s, 1);
    // A match inside a longer line, right before a multi-byte character.
    let doc = parse("---\nreprompt.labels: [bad, good]\n---\nNote: éa\n\n{{sentence}}\nSentiment:\n", None);
    let space = EditSpace::builtin(vec![demo("éa")]);
    assert!(find_demos(&doc, &space).is_empty());
    // An escaped mustache in the data would come alive behind the escape's escape.
    let doc = parse("---\nreprompt.labels: [bad, good]\n---\nReview: {{sentence}}\nSentiment:\n", None);
    assert!(demo_text(&doc, &space, &demo(r"a \{{sentence}} b")).is_none());
    // Neighbouring values that make a mustache together.
    let pair = parse("---\nreprompt.labels: [bad, good]\n---\nPair: {{a}}{{b}}\nSentiment:\n", None);
    let mut input = Map::new();
    input.insert("a".into(), Value::String("x{".into()));
    input.insert("b".into(), Value::String("{y".into()));
    assert!(demo_text(&pair, &space, &DemoSource { input: input.clone(), label: Some(0), answer: None }).is_none());
    input.insert("b".into(), Value::String("y".into()));
    assert!(demo_text(&pair, &space, &DemoSource { input, label: Some(0), answer: None }).is_some());
    // An escape left open would run on over the template's own variables.
    assert!(demo_text(&doc, &space, &demo("a {{b")).is_none());
    // A brace at the end of a value is just text when plain text follows it.
    assert!(demo_text(&doc, &space, &demo("ends in {")).is_some());
    let shown = demo_text(&doc, &space, &demo("a {{b}} c")).unwrap();
    let unit = example_unit(&doc).unwrap();
    let text = apply_checked(
        &doc,
        &Edit::AddDemo { at: unit.start, text: shown },
        &EditSpace::builtin(vec![demo("a {{b}} c")]),
    )
    .unwrap();
    assert_eq!(parse(&text, None).scan.variables.len(), 1, "{text}");
}

#[test]
fn sentences_are_found_in_prose_and_edits_keep_variables() {
    let (doc, space) = (doc(), space());
    let found: Vec<&str> = sentences(&doc).iter().map(|s| &doc.source[s.start..s.end]).collect();
    assert_eq!(
        found,
        [
            "You are a helpful assistant that classifies the sentiment of movie reviews.",
            "Is the sentiment of this review great or terrible?",
            "Answer with one word."
        ]
    );
    let deleted = apply_checked(&doc, &Edit::DeleteSentence(sentences(&doc)[1]), &space).unwrap();
    assert!(deleted.contains("Review: {{sentence}}\nAnswer with one word."), "{deleted}");
    let at = insertion_points(&doc)[0];
    let inserted = apply_checked(&doc, &Edit::InsertPhrase { at, text: "Be accurate. ".into() }, &space).unwrap();
    assert!(inserted.contains("Be accurate. You are a helpful assistant"), "{inserted}");
    let s = sentences(&doc);
    let swapped = apply_checked(&doc, &Edit::SwapSentences(s[1], s[2]), &space).unwrap();
    assert!(swapped.contains("Answer with one word. Is the sentiment of this review great or terrible?"));
    let rewrite = Edit::Paraphrase { span: s[2], text: "Reply in a single word.".into() };
    assert!(apply_checked(&doc, &rewrite, &space).unwrap().contains("terrible? Reply in a single word.\n"));
}

#[test]
fn cues_and_roles_change_the_structure() {
    let (doc, space) = (doc(), space());
    let cued = apply_checked(&doc, &Edit::AnswerCue("Sentiment:".into()), &space).unwrap();
    assert!(cued.ends_with("Answer with one word.\nSentiment:\n"), "{cued:?}");
    // A second cue replaces the first instead of stacking.
    let recued = apply_checked(&parse(&cued, None), &Edit::AnswerCue("Answer:".into()), &space).unwrap();
    assert!(recued.ends_with("one word.\nAnswer:\n"), "{recued:?}");
    let completion = apply_checked(&doc, &Edit::Completion("Sentiment:".into()), &space).unwrap();
    let reparsed = parse(&completion, None);
    assert_eq!(reparsed.settings.format, Format::Plain);
    assert!(completion.ends_with("reviews.\nReview: {{sentence}}\nIs the sentiment of this review great or terrible? Answer with one word.\nSentiment:\n"), "{completion}");
    assert!(apply_checked(&reparsed, &Edit::Completion("Answer:".into()), &space).is_err(), "already plain");
    let system = sentences(&doc)[0];
    let deleted = apply_checked(&doc, &Edit::DeleteSentence(system), &space).unwrap();
    assert!(deleted.contains("{{role \"system\"}}\n{{role \"user\"}}"), "the emptied line goes: {deleted}");
    let flat = apply_checked(&doc, &Edit::DropRoles, &space).unwrap();
    assert!(!flat.contains("{{role"));
    assert!(flat.contains("---\nYou are a helpful assistant that classifies the sentiment of movie reviews.\nReview:"));
}

#[test]
fn a_bare_completion_keeps_only_the_example_lines_demonstrations_and_the_cue() {
    let space = space();
    let front = |text: &str| text[..parse(text, None).body_span.start].to_string();
    let body = |text: &str| text[parse(text, None).body_span.start..].to_string();
    let bare_body = |text: &str, cue: &str, space: &EditSpace| {
        body(&apply_checked(&parse(text, None), &Edit::Bare(cue.into()), space).unwrap())
    };
    // The example (chat, instructions around the input line): roles and sentences go.
    let bare = apply_checked(&doc(), &Edit::Bare("Sentiment:".into()), &space).unwrap();
    assert_eq!(body(&bare), "Review: {{sentence}}\nSentiment:\n");
    assert_eq!(parse(&bare, None).settings.format, Format::Plain);
    assert_eq!(front(&bare), front(&apply_checked(&doc(), &Edit::Format(Format::Plain), &space).unwrap()));
    // A plain prompt ending in a cue: the cue is replaced, the demonstration stays and
    // answers after the new cue.
    let plain = "---\nreprompt.format: plain\nreprompt.labels: [terrible, great]\n---\nBe brief. Think.\n\
                 Review: a joy to watch \\{{ even twice }} .\nAnswer: great\n\nReview: {{sentence}}\n\
                 Answer with one word.\nAnswer:\n";
    let doc = parse(plain, None);
    assert_eq!(find_demos(&doc, &space).len(), 1);
    let bare = apply_checked(&doc, &Edit::Bare("Sentiment:".into()), &space).unwrap();
    assert_eq!(
        body(&bare),
        "Review: a joy to watch \\{{ even twice }} .\nSentiment: great\n\nReview: {{sentence}}\nSentiment:\n"
    );
    // Same cue: only the sentences go. With nothing left to delete it is no edit.
    let same = apply_checked(&doc, &Edit::Bare("Answer:".into()), &space).unwrap();
    assert!(same.ends_with("Review: {{sentence}}\nAnswer:\n"), "{same}");
    let err = apply_checked(&parse(&same, None), &Edit::Bare("Answer:".into()), &space);
    assert!(matches!(err, Err(EditError::NotApplicable(_))), "{err:?}");
    assert!(!candidates(&doc, &space, &mut Rng::new(1)).iter().any(|e| matches!(e, Edit::Bare(_))), "off");
    let space = EditSpace { bare: true, ..space };
    assert!(!candidates(&parse(&same, None), &space, &mut Rng::new(1)).iter().any(|e| matches!(e, Edit::Bare(_))));
    assert!(candidates(&doc, &space, &mut Rng::new(1)).contains(&Edit::Bare("Sentiment:".into())));
    // A last line of sentences goes with the line break before it, so the cue follows the
    // input line.
    let last = "---\nreprompt.format: plain\n---\nText: {{x}}\nIs it good? Say yes or no.\n";
    assert_eq!(bare_body(last, "Answer:", &space), "Text: {{x}}\nAnswer:\n");
    // A sentence sharing the input's line goes with the spaces after it (text after a
    // variable continues the variable's sentence and stays).
    let mixed = "---\nreprompt.format: plain\n---\nBe brief.\nClassify it.  Text: {{x}} ?\nAnswer:\n";
    assert_eq!(bare_body(mixed, "Answer:", &space), "Text: {{x}} ?\nAnswer:\n");
    // Several instruction lines at the end go without leaving a blank line; CRLF files
    // keep their line endings and still get the cue.
    let trailing = "---\nreprompt.format: plain\n---\nText: {{x}}\nBe brief.\nSay yes or no.\n";
    assert_eq!(bare_body(trailing, "Answer:", &space), "Text: {{x}}\nAnswer:\n");
    let crlf = "---\r\nreprompt.format: plain\r\n---\r\nText: {{x}}\r\nSay yes or no.\r\n";
    assert_eq!(bare_body(crlf, "Answer:", &space), "Text: {{x}}\r\nAnswer:\r\n");
    // The last instructions right after a role marker go too, and a sentence on the cue
    // line goes with the cue it replaces.
    let roles = "---\nreprompt.labels: [terrible, great]\n---\n{{role \"system\"}}\nReview: {{sentence}}\n\
                 {{role \"user\"}}\nIs it great or terrible? Answer with one word.\n";
    assert_eq!(bare_body(roles, "Sentiment:", &space), "Review: {{sentence}}\nSentiment:\n");
    let cue_line = "---\nreprompt.format: plain\n---\nBe brief.\nText: {{x}}\nAnswer with one word. Sentiment:\n";
    assert_eq!(bare_body(cue_line, "Answer:", &space), "Text: {{x}}\nAnswer:\n");
    // The author's own examples (lines opening with a field name) are not instructions.
    let own = "---\nreprompt.format: plain\n---\nBe brief.\nReview: I loved it.\nSentiment: great\n\n\
               Review: {{x}}\nSentiment:\n";
    assert_eq!(
        bare_body(own, "Sentiment:", &space),
        "Review: I loved it.\nSentiment: great\n\nReview: {{x}}\nSentiment:\n"
    );
    let err = apply_checked(&parse(own, None), &Edit::Bare("Two\nlines:".into()), &space);
    assert!(matches!(err, Err(EditError::NotApplicable(_))), "{err:?}");
    assert_eq!(Edit::Bare("Answer:".into()).kind(), Edit::Completion("Answer:".into()).kind());
}

#[test]
fn demonstrations_are_added_found_relabelled_and_removed() {
    let space = space();
    let doc = parse(&apply_checked(&doc(), &Edit::AnswerCue("Sentiment:".into()), &space).unwrap(), None);
    let text = demo_text(&doc, &space, &space.demos[1]).unwrap();
    assert_eq!(text, "Review: a joy to watch \\{{ even twice }} .\nSentiment: great\n\n");
    let at = example_unit(&doc).unwrap().start;
    let one = parse(&apply_checked(&doc, &Edit::AddDemo { at, text }, &space).unwrap(), None);
    assert!(one.diagnostics.is_empty(), "{:?}", one.diagnostics);
    let two_text = demo_text(&one, &space, &space.demos[0]).unwrap();
    let at = example_unit(&one).unwrap().start;
    let two = parse(&apply_checked(&one, &Edit::AddDemo { at, text: two_text }, &space).unwrap(), None);
    let found = find_demos(&two, &space);
    assert_eq!(found.iter().map(|d| d.source).collect::<Vec<_>>(), [1, 0]);
    // Relabelling rewrites the demonstrations' answers.
    let relabelled = apply_checked(&two, &Edit::Labels(vec!["negative".into(), "positive".into()]), &space).unwrap();
    assert!(relabelled.contains("twice }} .\nSentiment: positive\n\nReview: a dull , lifeless film .\nSentiment: negative\n\nReview: {{sentence}}"), "{relabelled}");
    assert_eq!(find_demos(&parse(&relabelled, None), &space).len(), 2);
    // A new answer cue is the demonstrations' cue too.
    let recued = apply_checked(&two, &Edit::AnswerCue("Answer:".into()), &space).unwrap();
    assert!(
        recued.contains(
            "twice }} .\nAnswer: great\n\nReview: a dull , lifeless film .\nAnswer: terrible\n\nReview: {{sentence}}\n"
        ),
        "{recued}"
    );
    assert!(recued.ends_with("one word.\nAnswer:\n"), "{recued}");
    assert!(!recued.contains("Sentiment:"), "{recued}");
    assert_eq!(find_demos(&parse(&recued, None), &space).len(), 2);
    // A prompt that ends with the cue but shows a demonstration under another one (written
    // by hand) gets only the demonstration's cue; once all agree there is nothing to do.
    let mixed = parse(&two.source.replacen("Sentiment: great", "Verdict: great", 1), None);
    let fixed = apply_checked(&mixed, &Edit::AnswerCue("Sentiment:".into()), &space).unwrap();
    assert_eq!(fixed, two.source);
    assert!(apply_checked(&two, &Edit::AnswerCue("Sentiment:".into()), &space).is_err());
    // A cue with ": " inside is one cue, in the demonstrations as at the end.
    let qa = parse(&apply_checked(&two, &Edit::AnswerCue("Q: Answer:".into()), &space).unwrap(), None);
    let found_qa = find_demos(&qa, &space);
    assert_eq!(found_qa.len(), 2);
    let cue = found_qa[0].cue.expect("a cue");
    assert_eq!(&qa.source[cue.start..cue.end], "Q: Answer:");
    assert_eq!(&qa.source[found_qa[0].answer.start..found_qa[0].answer.end], "great");
    let back = apply_checked(&qa, &Edit::AnswerCue("Sentiment:".into()), &space).unwrap();
    assert_eq!(back, two.source);
    let removed = apply_checked(&two, &Edit::RemoveDemo(found[0].span), &space).unwrap();
    // Described with its lines apart, as it was added.
    assert_eq!(
        Edit::RemoveDemo(found[0].span).describe(&two.source),
        r#"remove example "Review: a joy to watch \{{ even twice }} . | Sentiment: great""#
    );
    assert_eq!(find_demos(&parse(&removed, None), &space).iter().map(|d| d.source).collect::<Vec<_>>(), [0]);
    // The rendered prompt shows the escaped example literally.
    let mut input = Map::new();
    input.insert("sentence".into(), Value::String("x".into()));
    let data = reprompt_protocol::render::DataArgument { input, ..Default::default() };
    let env = reprompt_protocol::render::MapEnvironment::default();
    let messages = reprompt_protocol::render::render(&two, &data, &env).unwrap().messages;
    let rendered: String = messages.iter().map(|m| m.text()).collect();
    assert!(rendered.contains("a joy to watch {{ even twice }} ."), "{rendered}");
}

#[test]
fn several_words_per_label_are_written_as_lists_and_named_by_their_first() {
    let space = space();
    let words = |w: &[&str]| w.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let groups = vec![words(&["harsh", "poor"]), words(&["sweet", "hopeful", "warm"])];
    let edit = Edit::LabelGroups(groups.clone());
    assert_eq!(edit.kind(), Edit::Labels(Vec::new()).kind());
    assert_eq!(edit.describe(""), "label words harsh, poor / sweet, hopeful, warm");
    let cued = parse(&apply_checked(&doc(), &Edit::AnswerCue("Sentiment:".into()), &space).unwrap(), None);
    let at = example_unit(&cued).unwrap().start;
    let demo = demo_text(&cued, &space, &space.demos[1]).unwrap();
    let with_demo = parse(&apply_checked(&cued, &Edit::AddDemo { at, text: demo }, &space).unwrap(), None);
    let text = apply_checked(&with_demo, &edit, &space).unwrap();
    assert!(text.contains("reprompt.labels: [[\"harsh\", \"poor\"], [\"sweet\", \"hopeful\", \"warm\"]]\n"), "{text}");
    // The demonstration answers and the instruction use each label's first word.
    assert!(text.contains("Sentiment: sweet\n\nReview: {{sentence}}"), "{text}");
    assert!(text.contains("Is the sentiment of this review sweet or harsh?"), "{text}");
    let reparsed = parse(&text, None);
    assert!(reparsed.diagnostics.is_empty(), "{:?}", reparsed.diagnostics);
    assert_eq!(reparsed.settings.label_words, groups);
    assert_eq!(find_demos(&reparsed, &space).len(), 1);
    // Offered when the space holds groups, not again once the prompt has them; a single
    // set is offered to a prompt with groups even when it is their first words.
    let mut offering = space.clone();
    offering.label_groups = vec![groups.clone()];
    offering.label_sets = vec![words(&["harsh", "sweet"])];
    let mut rng = Rng::new(1);
    assert!(candidates(&with_demo, &offering, &mut rng).contains(&edit));
    let offered = candidates(&reparsed, &offering, &mut rng);
    assert!(!offered.contains(&edit), "{offered:?}");
    assert!(offered.contains(&Edit::Labels(words(&["harsh", "sweet"]))), "{offered:?}");
    // Back to one word each.
    let single = apply_checked(&reparsed, &Edit::Labels(words(&["bad", "good"])), &space).unwrap();
    assert_eq!(parse(&single, None).settings.label_words, [words(&["bad"]), words(&["good"])]);
    assert!(apply_checked(&with_demo, &Edit::LabelGroups(vec![words(&["bad"]), vec![]]), &space).is_err());
}

#[test]
fn edits_that_break_the_prompt_are_refused() {
    let (doc, space) = (doc(), space());
    assert!(matches!(apply_checked(&doc, &Edit::Labels(vec!["one".into()]), &space), Err(EditError::NotApplicable(_))));
    assert!(apply_checked(&doc, &Edit::DeleteSentence(Span::new(0, 3)), &space).is_err());
    assert!(apply_checked(&doc, &Edit::InsertPhrase { at: 1, text: "x".into() }, &space).is_err());
    assert!(apply_checked(&doc, &Edit::AddDemo { at: 1, text: "x".into() }, &space).is_err());
    let s = sentences(&doc)[0];
    assert!(apply_checked(&doc, &Edit::Paraphrase { span: s, text: "{{evil}}".into() }, &space).is_err());
    // A phrase that removes a variable is refused by the variable check.
    let tricky = parse("---\ninput:\n  schema: {a: string}\n---\nSay {{a}}. Done.", None);
    let found: Vec<&str> = sentences(&tricky).iter().map(|s| &tricky.source[s.start..s.end]).collect();
    assert_eq!(found, ["Done."], "the fragment after the variable is not a sentence of its own");
}

#[test]
fn random_edit_walks_keep_every_prompt_valid() {
    let prompts = [
        EXAMPLE,
        include_str!("../../../../examples/gsm8k/gsm8k.prompt"),
        include_str!("../../../../bench/sst2-variants/v3-plain-posneg.prompt"),
        include_str!("../../../../bench/sst2-variants/v7-plain-4demos.prompt"),
    ];
    let mut space = space();
    space.demos.push(DemoSource {
        input: [("question".to_string(), Value::String("What is {{2}} + 2?\nThink.".into()))].into_iter().collect(),
        label: None,
        answer: Some("2 + 2 = 4\n#### 4".into()),
    });
    space.paraphrases.insert("Answer with one word.".into(), vec!["Reply with a single word.".into()]);
    space.bare = true;
    for (p, prompt) in prompts.iter().enumerate() {
        let names = variables(&parse(prompt, None));
        for seed in 0..40 {
            let mut rng = Rng::new(seed);
            let mut text = prompt.to_string();
            for _ in 0..8 {
                let doc = parse(&text, None);
                let all = candidates(&doc, &space, &mut rng);
                if all.is_empty() {
                    break;
                }
                let edit = &all[rng.below(all.len())];
                text = apply_checked(&doc, edit, &space)
                    .unwrap_or_else(|e| panic!("prompt {p} seed {seed}: {edit:?}: {e}"));
                let edited = parse(&text, None);
                assert!(
                    edited.diagnostics.iter().all(|d| d.severity != Severity::Error),
                    "prompt {p} seed {seed} after {edit:?}: {:?}\n{text}",
                    edited.diagnostics
                );
                assert_eq!(variables(&edited), names, "prompt {p} seed {seed} after {edit:?}");
                assert!(find_demos(&edited, &space).len() <= space.max_demos);
            }
        }
    }
}

#[test]
fn every_candidate_of_the_example_applies_cleanly() {
    let (doc, space) = (doc(), space());
    let all = candidates(&doc, &space, &mut Rng::new(1));
    for kind in [0, 1, 2, 3, 4, 6, 7, 8, 12] {
        assert!(all.iter().any(|e| e.kind() == kind), "no edit of kind {kind}");
    }
    assert_eq!(all.iter().filter(|e| matches!(e, Edit::DeleteSentence(_))).count(), 3);
    for edit in &all {
        let text = apply_checked(&doc, edit, &space).unwrap();
        assert_ne!(text, EXAMPLE, "{edit:?} changed nothing");
        assert!(!edit.describe(&doc.source).is_empty());
    }
    assert_eq!(candidates(&doc, &space, &mut Rng::new(1)), all, "seeded");
}

#[test]
fn a_calibration_is_written_replaced_and_dropped_with_new_label_words() {
    let calibrated = apply_checked(&doc(), &Edit::LabelBias(vec![0.0, -1.25]), &space()).unwrap();
    let d = parse(&calibrated, None);
    assert!(d.diagnostics.is_empty(), "{:?}", d.diagnostics);
    assert!(calibrated.contains("reprompt.label_bias: [0, -1.25]\n---"), "{calibrated}");
    assert_eq!(d.settings.label_bias.as_ref().map(|b| b.value.clone()), Some(vec![0.0, -1.25]));
    assert_eq!(Edit::LabelBias(vec![0.0, -1.25]).describe(""), "calibrate the labels: label bias [0, -1.25]");
    // Set again: the value is replaced where it is written.
    let again = apply_checked(&d, &Edit::LabelBias(vec![0.0, 0.5]), &space()).unwrap();
    assert_eq!(again, calibrated.replace("[0, -1.25]", "[0, 0.5]"));
    // New label words drop the calibration fitted to the old ones, line and all.
    let relabelled = apply_checked(&d, &Edit::Labels(vec!["bad".into(), "good".into()]), &space()).unwrap();
    let r = parse(&relabelled, None);
    assert!(r.diagnostics.is_empty() && r.settings.label_bias.is_none(), "{relabelled}");
    assert!(!relabelled.contains("label_bias") && relabelled.contains("reprompt.reward: accuracy\n---"));
    // One offset per label id, finite.
    assert!(apply_checked(&doc(), &Edit::LabelBias(vec![0.0]), &space()).is_err());
    assert!(apply_checked(&doc(), &Edit::LabelBias(vec![0.0, f64::NAN]), &space()).is_err());
    assert_eq!(Edit::LabelBias(Vec::new()).kind(), Edit::KINDS - 1);
    // Every calibration of a prompt shares its text without the entry: the prompt itself.
    let plain = doc().source.clone();
    assert_eq!(without_label_bias(&doc()).as_deref(), Some(plain.as_str()));
    assert_eq!(without_label_bias(&d).as_deref(), Some(plain.as_str()));
    assert_eq!(without_label_bias(&parse(&again, None)).as_deref(), Some(plain.as_str()));
}

#[test]
fn new_label_words_keep_the_names_the_data_reads_its_labels_by() {
    let named = |groups: &[&[&str]]| -> Vec<Vec<String>> {
        groups.iter().map(|g| g.iter().map(|w| w.to_string()).collect()).collect()
    };
    let space = EditSpace { data_labels: Some(named(&[&["terrible"], &["great"]])), ..space() };
    let calibrated = parse(&apply_checked(&doc(), &Edit::LabelBias(vec![0.0, -1.0]), &space).unwrap(), None);
    let relabelled = apply_checked(&calibrated, &Edit::Labels(vec!["bad".into(), "good".into()]), &space).unwrap();
    assert!(
        relabelled.contains("reprompt.labels: [\"bad\", \"good\"]\nreprompt.data_labels: [\"terrible\", \"great\"]\n"),
        "{relabelled}"
    );
    let r = parse(&relabelled, None);
    assert!(r.diagnostics.is_empty() && r.settings.label_bias.is_none(), "{:?}", r.diagnostics);
    let spec = reprompt_protocol::dataset::DatasetSpec::for_document(&r);
    assert_eq!(spec.data_labels, named(&[&["terrible"], &["great"]]));
    // Once written, the names stay as they are: a second relabelling adds no line.
    let twice = apply_checked(&r, &Edit::LabelGroups(named(&[&["poor", "dull"], &["fine"]])), &space).unwrap();
    assert_eq!(twice.matches("reprompt.data_labels").count(), 1, "{twice}");
    assert!(twice.contains("reprompt.data_labels: [\"terrible\", \"great\"]\n"), "{twice}");
    // Several names for an id are written as a list; data read by id needs none of this.
    let grouped = EditSpace { data_labels: Some(named(&[&["terrible", "awful"], &["great"]])), ..space.clone() };
    let text = apply_checked(&doc(), &Edit::Labels(vec!["bad".into(), "good".into()]), &grouped).unwrap();
    assert!(text.contains("reprompt.data_labels: [[\"terrible\", \"awful\"], [\"great\"]]\n"), "{text}");
    let text = apply_checked(&doc(), &Edit::Labels(vec!["bad".into(), "good".into()]), &self::space()).unwrap();
    assert!(!text.contains("data_labels"), "{text}");
    // Nor does anything but a relabelling.
    let text = apply_checked(&doc(), &Edit::Format(Format::Plain), &space).unwrap();
    assert!(!text.contains("data_labels"), "{text}");
    // A calibration on the next line goes, the names come; block-style labels and CRLF
    // files alike.
    let layouts = [
        EXAMPLE.replace(
            "reprompt.labels: [terrible, great]\n",
            "reprompt.labels: [terrible, great]\nreprompt.label_bias: [0, 1]\n",
        ),
        EXAMPLE.replace("reprompt.labels: [terrible, great]\n", "reprompt.labels:\n- terrible\n- great\n"),
        EXAMPLE.replace('\n', "\r\n"),
    ];
    for layout in layouts {
        let text =
            apply_checked(&parse(&layout, None), &Edit::Labels(vec!["bad".into(), "good".into()]), &space).unwrap();
        let r = parse(&text, None);
        assert!(r.diagnostics.is_empty(), "{:?}\n{text}", r.diagnostics);
        assert_eq!(r.settings.labels.map(|l| l.value), Some(vec!["bad".to_string(), "good".into()]), "{text}");
        assert_eq!(r.settings.data_labels.map(|d| d.value), Some(named(&[&["terrible"], &["great"]])), "{text}");
        assert!(r.settings.label_bias.is_none() && !text.contains("label_bias"), "{text}");
        assert_eq!(layout.contains('\r'), text.contains("data_labels: [\"terrible\", \"great\"]\r\n"), "{text}");
    }
    // Data read by id changes nothing a checkpoint records: the space's JSON has no such key.
    let json = serde_json::to_string(&self::space()).unwrap();
    assert!(!json.contains("data_labels"), "{json}");
}

#[test]
fn the_built_in_banks_fit_the_task() {
    const GSM8K: &str = include_str!("../../../../examples/gsm8k/gsm8k.prompt");
    let news = "---\nreprompt.labels: [world, sports, business, technology]\n---\n{{role \"user\"}}\nArticle: {{text}}\nIs this article about world, sports, business or technology?\n";
    let topic_pair = "---\nreprompt.labels: [ham, spam]\n---\n{{role \"user\"}}\nMessage: {{text}}\nIs it spam?\n";
    let yes_no = "---\nreprompt.labels: [no, yes]\n---\nMessage: {{text}}\nIs it spam?\n";
    // Sentiment by its labels (in any order and case) or by its words.
    let named = "---\nreprompt.labels: [Great, Terrible]\n---\nReview: {{sentence}}\nVerdict:\n";
    let five = "---\nreprompt.labels: [a, b, c, d, e]\n---\nThe sentiment of {{sentence}} is\n";
    // A scale between a pair's poles is sentiment too; one pole alone is not.
    let scale =
        "---\nreprompt.labels: [terrible, bad, okay, good, great]\n---\nYou rate movie reviews.\n{{sentence}}\n";
    let three = "---\nreprompt.labels: [Negative, neutral, positive]\n---\nTweet: {{text}}\nLabel:\n";
    let one_pole = "---\nreprompt.labels: [bad, spam, ham]\n---\nMessage: {{text}}\nLabel:\n";
    let asked_upper = yes_no.replace("[no, yes]", "[Yes, No]");
    let three_answers = yes_no.replace("[no, yes]", "[no, yes, maybe]");
    for (text, banks) in [
        (EXAMPLE, Banks::Sentiment),
        (named, Banks::Sentiment),
        (five, Banks::Sentiment),
        (scale, Banks::Sentiment),
        (three, Banks::Sentiment),
        (one_pole, Banks::Classification),
        (news, Banks::Classification),
        (topic_pair, Banks::Classification),
        (yes_no, Banks::Question),
        (asked_upper.as_str(), Banks::Question),
        (three_answers.as_str(), Banks::Classification),
        (GSM8K, Banks::Generation),
    ] {
        assert_eq!(Banks::of(&parse(text, None)), banks, "{text}");
    }

    let offered = |text: &str| {
        let doc = parse(text, None);
        candidates(&doc, &EditSpace::for_prompt(&doc, Vec::new()), &mut Rng::new(1))
    };
    let relabels = |edits: &[Edit], words: [&str; 2]| edits.iter().any(|e| matches!(e, Edit::Labels(w) if w == &words));
    let inserts = |edits: &[Edit], phrase: &str| {
        edits.iter().any(|e| matches!(e, Edit::InsertPhrase { text, .. } if text.trim_end() == phrase))
    };
    let cue = |edits: &[Edit], cue: &str| {
        edits.iter().any(|e| matches!(e, Edit::AnswerCue(c) | Edit::Completion(c) if c == cue))
    };
    let sentiment = offered(EXAMPLE);
    assert!(inserts(&sentiment, "Ignore details that do not express an opinion."));
    assert!(cue(&sentiment, "Sentiment:"));
    assert!(relabels(&sentiment, ["negative", "positive"]) && !relabels(&sentiment, ["positive", "negative"]));
    // A prompt that names its positive label first gets the built-in sets the same way round:
    // as they are, each would swap its labels' meanings.
    let turned_round = offered(named);
    assert!(relabels(&turned_round, ["positive", "negative"]) && relabels(&turned_round, ["yes", "no"]));
    assert!(!relabels(&turned_round, ["negative", "positive"]), "{turned_round:?}");
    for (labels, turned) in [
        ("[Great, Terrible]", true),
        ("[excellent, bad]", true),
        ("[[good, fine], [awful, poor]]", true),
        ("[fine, negative]", true),
        ("[yes, no]", true),
        ("[terrible, great]", false),
        ("[no, yes]", false),
        ("[happy, sad]", true),
        ("[sad, happy]", false),
        ("[True, False]", true),
        ("[false, true]", false),
        ("[correct, incorrect]", true),
        ("[like, dislike]", true),
        // Words that say both (label 0 a positive word, label 1 too): as they are.
        ("[great, yes]", false),
        ("[great, okay, terrible]", false),
    ] {
        let doc = parse(&format!("---\nreprompt.labels: {labels}\n---\nReview: {{{{sentence}}}}\nSentiment:\n"), None);
        assert_eq!(positive_first(&doc), turned, "{labels}");
    }
    let topic = parse(topic_pair, None);
    assert_eq!(EditSpace::for_prompt(&topic, Vec::new()).label_sets, [["no", "yes"]]);
    let asked = parse(&yes_no.replace("[no, yes]", "[yes, no]"), None);
    assert_eq!(EditSpace::for_prompt(&asked, Vec::new()).label_sets, [["yes", "no"]]);
    // A fact check labelled true first: `no / yes` as written would call the true claims no.
    let fact = parse(&topic_pair.replace("[ham, spam]", "[true, false]"), None);
    assert_eq!(EditSpace::for_prompt(&fact, Vec::new()).label_sets, [["yes", "no"]]);

    for text in [news, topic_pair] {
        let edits = offered(text);
        // Two labels keep no / yes, to judge the model's ranked words against.
        let yes_no = edits.iter().any(|e| matches!(e, Edit::Labels(w) if w == &["no", "yes"]));
        assert_eq!(yes_no, text == topic_pair, "{edits:?}");
        assert!(inserts(&edits, "Answer with one word.") && cue(&edits, "Category:"), "{edits:?}");
        assert!(!inserts(&edits, "Ignore details that do not express an opinion."), "{edits:?}");
        assert!(!inserts(&edits, "Think about the overall opinion of the reviewer."), "{edits:?}");
        assert!(!cue(&edits, "Sentiment:"), "{edits:?}");
        assert!(!edits.iter().any(|e| matches!(e, Edit::Labels(w) if w != &["no", "yes"])), "{edits:?}");
    }

    // A yes-or-no question is answered, not sorted into a topic (`Topic: yes`).
    let question = offered(yes_no);
    assert!(cue(&question, "Answer:") && cue(&question, "Label:"), "{question:?}");
    assert!(!cue(&question, "Category:") && !cue(&question, "Topic:"), "{question:?}");
    assert!(inserts(&question, "Answer with one word."), "{question:?}");

    let math = offered(GSM8K);
    assert!(inserts(&math, "Let's think step by step.") && cue(&math, "Solution:"), "{math:?}");
    assert!(!inserts(&math, "Answer with one word."), "{math:?}");
    assert!(!cue(&math, "Sentiment:") && !cue(&math, "Label:"), "{math:?}");
}

#[test]
fn the_sentiment_banks_are_the_ones_the_benchmark_ran_with() {
    // A checkpoint's digest hashes the banks: the example's (and the benchmark's) are those of
    // 17d0920, from before banks were chosen by task (the hash of its constants serialized),
    // so its checkpoints resume.
    let banks = serde_json::to_string(&EditSpace::with_banks(Banks::of(&doc()), Vec::new())).unwrap();
    assert_eq!(
        reprompt_protocol::hash::sha256_hex(banks.as_bytes()),
        "fa1e23a26d4c7ac1bdd5cdc8b6a69f913ede9a0b12685cd94ce78d61d0543e3b"
    );
}

/// A chat generation prompt whose last turn, the user's, holds the example.
const CITY: &str = "---\nreprompt.task: generate\nreprompt.reward: exact_match\ninput:\n  schema:\n    text: string\n---\n\
                    {{role \"system\"}}\nYou extract information from text.\n{{role \"user\"}}\n\
                    Which city is mentioned? Reply with the city name only.\n{{text}}\n";

fn city_space() -> EditSpace {
    let demo = |text: &str, city: &str| DemoSource {
        input: [("text".to_string(), Value::String(text.into()))].into_iter().collect(),
        label: None,
        answer: Some(city.into()),
    };
    EditSpace::with_banks(Banks::Generation, vec![demo("I flew to Oslo.", "Oslo"), demo("Lima was hot.", "Lima")])
}

#[test]
fn a_chat_generation_prompt_shows_demonstrations_as_turns_that_follow_its_own() {
    use reprompt_protocol::messages::Role;
    use reprompt_protocol::render::{DataArgument, EmptyEnvironment, render};
    let (doc, space) = (parse(CITY, None), city_space());
    assert!(matches!(layout(&doc, &space), Some(Layout::Turns { .. })), "{:?}", layout(&doc, &space));
    let marker = CITY.rfind("{{role \"user\"}}").unwrap();
    let add = candidates(&doc, &space, &mut Rng::new(1))
        .into_iter()
        .find(|e| matches!(e, Edit::AddDemo { text, .. } if text.contains("Oslo")))
        .expect("a demonstration offered");
    assert!(matches!(&add, Edit::AddDemo { at, .. } if *at == marker), "{add:?}");
    assert_eq!(
        add.describe(CITY),
        "add example \"Which city is mentioned? Reply with the city name only. | I flew to Oslo. | Oslo\""
    );
    let one = apply_checked(&doc, &add, &space).unwrap();
    let turn = "Which city is mentioned? Reply with the city name only.\n";
    let shown = format!(
        "{{{{role \"user\"}}}}\n{turn}I flew to Oslo.\n{{{{role \"model\"}}}}\nOslo\n{{{{role \"user\"}}}}\n{turn}{{{{text}}}}\n"
    );
    assert!(one.ends_with(&shown), "{one}");
    // A conversation: the demonstration's question and answer, then the example's question.
    let data = DataArgument {
        input: [("text".into(), Value::String("Rome is old.".into()))].into_iter().collect(),
        ..Default::default()
    };
    let rendered = render(&parse(&one, None), &data, &EmptyEnvironment).unwrap();
    let roles: Vec<Role> = rendered.messages.iter().map(|m| m.role).collect();
    assert_eq!(roles, [Role::System, Role::User, Role::Model, Role::User], "{rendered:?}");
    assert_eq!(rendered.messages[2].text().trim(), "Oslo");
    assert_eq!(rendered.messages[3].text().trim(), format!("{turn}Rome is old.").trim());
    let edited = parse(&one, None);
    let found = find_demos(&edited, &space);
    assert_eq!(found.len(), 1);
    assert_eq!((&one[found[0].answer.start..found[0].answer.end], found[0].cue), ("Oslo", None));
    // An edit of the example's turn is carried into the demonstration's copy of it.
    let phrase = candidates(&edited, &space, &mut Rng::new(1))
        .into_iter()
        .find(|e| matches!(e, Edit::InsertPhrase { at, text } if *at > found[0].span.end && text.starts_with("Be accurate.")))
        .expect("a phrase offered in the example's turn");
    let followed = apply_checked(&edited, &phrase, &space).unwrap();
    assert_eq!(followed.matches("Be accurate.").count(), 2, "{followed}");
    assert_eq!(find_demos(&parse(&followed, None), &space).len(), 1, "{followed}");
    let cued = apply_checked(&edited, &Edit::AnswerCue("City:".into()), &space).unwrap();
    assert_eq!(cued.matches("\nCity:\n").count(), 2, "{cued}");
    assert_eq!(find_demos(&parse(&cued, None), &space).len(), 1, "{cued}");
    // Removed, the prompt is as it was; replaced, by the other example.
    assert_eq!(apply_checked(&edited, &Edit::RemoveDemo(found[0].span), &space).unwrap(), CITY);
    let other = demo_text(&edited, &space, &space.demos[1]).unwrap();
    let replaced = apply_checked(&edited, &Edit::ReplaceDemo { span: found[0].span, text: other }, &space).unwrap();
    assert!(replaced.contains("Lima was hot.\n{{role \"model\"}}\nLima\n") && !replaced.contains("Oslo"), "{replaced}");
}

#[test]
fn demonstrations_are_turns_only_where_the_example_is_the_last_user_turn_of_a_chat_generation() {
    let lines = |text: &str| matches!(layout(&parse(text, None), &city_space()), Some(Layout::Lines { .. }));
    // A classification's answer is read from the label words after the prompt: lines, as ever.
    assert!(lines(EXAMPLE));
    // Laid out as plain text, the turns are gone.
    assert!(lines(&CITY.replace("reprompt.task: generate\n", "reprompt.task: generate\nreprompt.format: plain\n")));
    // The example outside the last turn, or a last turn that is not the user's.
    let in_system = CITY.replace("You extract information from text.", "Text: {{text}}").replace("\n{{text}}\n", "\n");
    assert!(lines(&in_system), "{in_system}");
    assert!(lines(&format!("{CITY}{{{{role \"model\"}}}}\n")));
    // A block around the example: no demonstrations at all.
    assert_eq!(layout(&parse(&CITY.replace("{{text}}", "{{#if text}}{{text}}{{/if}}"), None), &city_space()), None);
}

#[test]
fn turn_demonstrations_keep_their_answers_their_line_endings_and_their_layout() {
    let space = city_space();
    let with_turn = |source: &str| {
        let doc = parse(source, None);
        let text = demo_text(&doc, &space, &space.demos[0]).unwrap();
        let at = demo_point(&doc, &space).unwrap();
        parse(&apply_checked(&doc, &Edit::AddDemo { at, text }, &space).unwrap(), None)
    };
    let phrase = |doc: &PromptDocument| {
        let at = doc.source.rfind("Which city").unwrap();
        apply_checked(doc, &Edit::InsertPhrase { at, text: "Be accurate. ".into() }, &space).unwrap()
    };
    // A CRLF file: found (the answer without its CR), followed, removed.
    let crlf = CITY.replace('\n', "\r\n");
    let one = with_turn(&crlf);
    assert!(!one.source.replace("\r\n", "").contains('\n'), "{:?}", one.source);
    let found = find_demos(&one, &space);
    assert_eq!(found.len(), 1, "{:?}", one.source);
    assert_eq!(&one.source[found[0].answer.start..found[0].answer.end], "Oslo");
    let followed = phrase(&one);
    assert_eq!(followed.matches("Be accurate. Which city").count(), 2, "{followed:?}");
    assert_eq!(find_demos(&parse(&followed, None), &space).len(), 1);
    assert_eq!(apply_checked(&one, &Edit::RemoveDemo(found[0].span), &space).unwrap(), crlf);
    // An answer written by hand stays as it is when the turn is edited.
    let one = with_turn(CITY);
    let by_hand = parse(&one.source.replace("\nOslo\n", "\nOslo, Norway\n"), None);
    assert_eq!(find_demos(&by_hand, &space).len(), 1);
    let followed = phrase(&by_hand);
    assert!(followed.contains("Be accurate. Which city") && followed.contains("\nOslo, Norway\n"), "{followed}");
    // Laid out otherwise, turns would be no demonstrations at all: refused while it has them.
    for edit in [Edit::Format(Format::Plain), Edit::DropRoles, Edit::Completion("Answer:".into())] {
        assert!(matches!(apply_checked(&one, &edit, &space), Err(EditError::NotApplicable(_))), "{edit:?}");
        assert!(apply_checked(&parse(CITY, None), &edit, &space).is_ok(), "{edit:?}");
    }
    assert!(!candidates(&one, &space, &mut Rng::new(3)).iter().any(|e| matches!(e, Edit::Format(_) | Edit::DropRoles)));
    // Demonstrations written as lines inside the turn (as before turns were offered) keep the
    // prompt laid out in lines: found, and no turn offered beside them.
    let lines = parse(&CITY.replace("{{text}}", "I flew to Oslo.\nAnswer: Oslo\n\n{{text}}"), None);
    assert!(matches!(layout(&lines, &space), Some(Layout::Lines { .. })));
    assert_eq!(find_demos(&lines, &space).len(), 1);
    let offered = demo_text(&lines, &space, &space.demos[1]).unwrap();
    assert_eq!(offered, "Lima was hot.\nAnswer: Lima\n\n");
}

#[test]
fn a_generated_answer_is_stopped_at_its_line_end_through_the_prompts_own_config() {
    let city = city_space();
    let stops = |text: &str| {
        let doc = parse(text, None);
        assert!(doc.diagnostics.iter().all(|d| d.severity != Severity::Error), "{text}");
        doc.reserved.get("config").and_then(|c| c.get("stopSequences")).cloned()
    };
    let stopped = |text: &str| apply_checked(&parse(text, None), &Edit::StopAtLineEnd, &city);
    // Offered to a generation prompt, last; the result says so in its config.
    let offered = candidates(&parse(CITY, None), &city, &mut Rng::new(1));
    assert_eq!(offered.last(), Some(&Edit::StopAtLineEnd));
    assert_eq!(Edit::StopAtLineEnd.describe(CITY), "stop the answer at the end of its line");
    let one = stopped(CITY).unwrap();
    assert!(
        one.starts_with("---\nreprompt.task: generate\n") && one.contains("config:\n  stopSequences: [\"\\n\"]\n---\n")
    );
    assert_eq!(stops(&one), Some(serde_json::json!(["\n"])));
    // Once it stops there, not offered again.
    assert!(!candidates(&parse(&one, None), &city, &mut Rng::new(1)).contains(&Edit::StopAtLineEnd));
    assert!(matches!(stopped(&one), Err(EditError::NotApplicable(_))));
    // A config of its own: a line after its last entry, indented as its entries; stop
    // sequences already written kept, the line end added (flow list or block list).
    let with_config = |config: &str| CITY.replacen("---\n", &format!("---\n{config}"), 1);
    let block = with_config("config:\n    temperature: 0\n    maxOutputTokens: 8\n");
    let one = stopped(&block).unwrap();
    assert!(one.contains("    maxOutputTokens: 8\n    stopSequences: [\"\\n\"]\nreprompt.task"), "{one}");
    let one = stopped(&with_config("config:\n  stopSequences: [\"###\"]\n  temperature: 0\n")).unwrap();
    assert_eq!(stops(&one), Some(serde_json::json!(["###", "\n"])), "{one}");
    let one = stopped(&with_config("config:\n  stopSequences:\n  - \"###\"\n")).unwrap();
    assert_eq!(stops(&one), Some(serde_json::json!(["###", "\n"])), "{one}");
    let one = stopped(&with_config("config: {temperature: 0}\n")).unwrap();
    assert!(one.contains("config: {temperature: 0, stopSequences: [\"\\n\"]}\n"), "{one}");
    let one = stopped(&with_config("config: {temperature: 0,}\n")).unwrap();
    assert!(one.contains("config: {temperature: 0, stopSequences: [\"\\n\"]}\n"), "{one}");
    let one = stopped(&with_config("config: { maxOutputTokens: 8, temperature: 0 }\n")).unwrap();
    assert!(one.contains("config: { maxOutputTokens: 8, temperature: 0, stopSequences: [\"\\n\"]}\n"), "{one}");
    assert_eq!(stops(&stopped(&with_config("config: { }\n")).unwrap()), Some(serde_json::json!(["\n"])));
    assert_eq!(stops(&stopped(&with_config("config: {}\n")).unwrap()), Some(serde_json::json!(["\n"])));
    // A CRLF file stays CRLF.
    let crlf = stopped(&block.replace('\n', "\r\n")).unwrap();
    assert!(crlf.contains("    stopSequences: [\"\\n\"]\r\n") && !crlf.replace("\r\n", "").contains('\n'), "{crlf:?}");
    // What it cannot extend, it leaves alone.
    for config in [
        "config: fast\n",
        "config:\n  stopSequences: \"###\"\n",
        "config:\n  stopSequences: [1]\n",
        "config: {\n  temperature: 0 # cold\n}\n",
    ] {
        assert!(matches!(stopped(&with_config(config)), Err(EditError::NotApplicable(_))), "{config}");
    }
    // Where the YAML would not read it (after the `...` that ends its document), refused.
    let ended = CITY.replacen("\n---\n{{role", "\n...\n---\n{{role", 1);
    assert!(parse(&ended, None).diagnostics.iter().all(|d| d.severity != Severity::Error), "{ended}");
    assert!(matches!(stopped(&ended), Err(EditError::Invalid(_))), "{ended}");
    // Answers of several lines (a worked solution ending in its answer's line) would be cut.
    let mut worked = city.clone();
    worked.demos[0].answer = Some("She flew there.\n#### Oslo".into());
    let refused = apply_checked(&parse(CITY, None), &Edit::StopAtLineEnd, &worked);
    assert!(matches!(refused, Err(EditError::NotApplicable(_))), "{refused:?}");
    assert!(!candidates(&parse(CITY, None), &worked, &mut Rng::new(1)).contains(&Edit::StopAtLineEnd));
    // A classification reads its answer from the label words: never offered, refused.
    let example = parse(EXAMPLE, None);
    assert!(!candidates(&example, &space(), &mut Rng::new(1)).contains(&Edit::StopAtLineEnd));
    assert!(matches!(apply_checked(&example, &Edit::StopAtLineEnd, &space()), Err(EditError::NotApplicable(_))));
}
