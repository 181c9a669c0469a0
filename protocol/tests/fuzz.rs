//! Property test of the parser: real prompts mutated at random never make it panic, and every
//! diagnostic it reports lies inside the document, on character boundaries.

use std::path::Path;

use proptest::prelude::*;
use reprompt_protocol::check::check_document;
use reprompt_protocol::render::{CompiledPrompt, DataArgument, EmptyEnvironment};
use reprompt_protocol::{LineIndex, parse_bytes};
use serde_json::Map;

const SEEDS: &[&str] = &[
    include_str!("../../examples/sentiment/sentiment.prompt"),
    include_str!("../../examples/gsm8k/gsm8k.prompt"),
    "---\ninput:\n  schema:\n    items(array): string\n    who?: string\n---\n{{#each items}}- {{this}} {{@index}}\n{{else}}none{{/each}}{{> part name=who}}{{json this indent=2}}",
    "# comment\n---\nconfig: {temperature: 0.5}\nreprompt.reward: {accuracy: 1.0, length: -0.01}\n---\n{{#ifEquals a b}}x{{else}}y{{/ifEquals}}{{media url=u}}{{section \"s\"}}{{history}}{{!-- c --}}",
];

/// Pieces that stress the grammar: delimiters, YAML structure, odd whitespace, non-ASCII,
/// invalid UTF-8.
const PIECES: &[&[u8]] = &[
    b"{{",
    b"}}",
    b"{{{",
    b"}}}",
    b"{{#if x}}",
    b"{{/if}}",
    b"{{/each}}",
    b"{{else}}",
    b"{{> p}}",
    b"{{!--",
    b"--}}",
    b"---\n",
    b"\n",
    b"\r\n",
    b"\t",
    b": ",
    b"- ",
    b"[",
    b"]",
    b"{",
    b"&a ",
    b"*a",
    b"\"",
    b"'",
    b"(",
    b")",
    b"~",
    b"@",
    b"reprompt.x: 1\n",
    b"\xef\xbb\xbf",
    "é😀".as_bytes(),
    b"\xff",
    b"\xc3",
    b"\x00",
    b"../",
    b"=",
];

#[derive(Debug, Clone)]
enum Edit {
    Insert(usize, usize),
    Delete(usize, usize),
    Replace(usize, usize),
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (any::<usize>(), 0..PIECES.len()).prop_map(|(at, p)| Edit::Insert(at, p)),
        (any::<usize>(), 1usize..8).prop_map(|(at, n)| Edit::Delete(at, n)),
        (any::<usize>(), 0..PIECES.len()).prop_map(|(at, p)| Edit::Replace(at, p)),
    ]
}

fn apply(mut bytes: Vec<u8>, edits: &[Edit]) -> Vec<u8> {
    for edit in edits {
        let len = bytes.len().max(1);
        match *edit {
            Edit::Insert(at, p) => {
                let at = at % (bytes.len() + 1);
                bytes.splice(at..at, PIECES[p].iter().copied());
            }
            Edit::Delete(at, n) => {
                let at = at % len;
                let end = (at + n).min(bytes.len());
                if at < end {
                    bytes.drain(at..end);
                }
            }
            Edit::Replace(at, p) => {
                let at = at % len;
                let end = (at + PIECES[p].len()).min(bytes.len());
                if at <= end {
                    bytes.splice(at..end, PIECES[p].iter().copied());
                }
            }
        }
    }
    bytes
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 600, ..ProptestConfig::default() })]

    #[test]
    fn mutated_prompts_never_panic_and_ranges_stay_inside(seed in 0..SEEDS.len(), edits in prop::collection::vec(edit(), 1..12)) {
        let bytes = apply(SEEDS[seed].as_bytes().to_vec(), &edits);
        let path = Path::new("/nonexistent/dir/x.prompt");
        let doc = parse_bytes(&bytes, Some(path));
        let diagnostics = check_document(&doc, path);
        let index = LineIndex::new(&doc.source);
        for d in &diagnostics {
            prop_assert!(d.span.start <= d.span.end, "{d:?}");
            prop_assert!(d.span.end <= doc.source.len(), "{d:?} beyond {}", doc.source.len());
            prop_assert!(doc.source.is_char_boundary(d.span.start) && doc.source.is_char_boundary(d.span.end), "{d:?}");
            let range = index.range(d.span);
            prop_assert!((range.end.line as usize) < index.line_count());
            for related in d.related.iter().filter(|r| r.path.is_none()) {
                prop_assert!(related.span.end <= doc.source.len());
            }
        }
        // Rendering a file without errors must not panic either.
        if !doc.has_errors()
            && let Ok(compiled) = CompiledPrompt::new(&doc, &EmptyEnvironment, &Map::new()) {
                let _ = compiled.render(&DataArgument::default());
            }
    }
}

#[test]
fn hostile_inputs_are_diagnosed_not_fatal() {
    let deep_yaml = format!("---\na: {}{}\n---\nx", "[".repeat(10_000), "]".repeat(10_000));
    let deep_blocks = "{{#if a}}".repeat(5_000) + &"{{/if}}".repeat(5_000);
    let deep_sub = format!("{{{{json {}x{}}}}}", "(lookup ".repeat(5_000), ")".repeat(5_000));
    let huge = "x".repeat(5 * 1024 * 1024);
    for input in [deep_yaml.as_str(), &deep_blocks, &deep_sub, &huge, "\u{feff}---\n---\n", "---", "---\n", "{{", "}}"]
    {
        let doc = parse_bytes(input.as_bytes(), None);
        for d in &doc.diagnostics {
            assert!(d.span.end <= doc.source.len());
        }
    }
    let doc = parse_bytes(&huge.into_bytes(), None);
    assert!(doc.diagnostics.iter().any(|d| d.code == reprompt_protocol::Code::FileTooLarge));
    let doc = parse_bytes(b"---\nname: \xff\n---\nhi", None);
    assert_eq!(doc.diagnostics[0].code, reprompt_protocol::Code::InvalidUtf8);
}
