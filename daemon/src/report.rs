//! Compiler-style rendering of diagnostics: `file:line:col`, severity, code, message, and the
//! source line with carets under the span; plus the JSON shape `reprompt check --json` prints.

use std::fmt::Write as _;

use reprompt_protocol::{Diagnostic, LineIndex, Span};
use serde::Serialize;

/// A 1-based line and column (columns count Unicode scalar values), as compilers print them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Location {
    pub line: u32,
    pub column: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct LocatedRange {
    pub start: Location,
    pub end: Location,
}

pub fn locate(index: &LineIndex, span: Span) -> LocatedRange {
    let range = index.range(span);
    let one = |p: reprompt_protocol::Position| Location { line: p.line + 1, column: p.column + 1 };
    LocatedRange { start: one(range.start), end: one(range.end) }
}

/// One diagnostic in `--json` output.
#[derive(Debug, Serialize)]
pub struct JsonDiagnostic<'a> {
    pub code: &'a str,
    pub severity: &'a str,
    pub message: &'a str,
    /// 1-based lines and columns.
    pub range: LocatedRange,
    /// Byte offsets into the file.
    pub span: Span,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub related: Vec<JsonRelated<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub suggestion: Option<&'a str>,
}

#[derive(Debug, Serialize)]
pub struct JsonRelated<'a> {
    pub message: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub range: Option<LocatedRange>,
}

pub fn to_json<'a>(index: &LineIndex, diagnostic: &'a Diagnostic) -> JsonDiagnostic<'a> {
    JsonDiagnostic {
        code: diagnostic.code.as_str(),
        severity: diagnostic.severity.as_str(),
        message: &diagnostic.message,
        range: locate(index, diagnostic.span),
        span: diagnostic.span,
        related: diagnostic
            .related
            .iter()
            .map(|r| JsonRelated {
                message: &r.message,
                path: r.path.as_deref(),
                range: r.path.is_none().then(|| locate(index, r.span)),
            })
            .collect(),
        suggestion: diagnostic.suggestion.as_deref(),
    }
}

/// `text` safe to print on a terminal: prompt, dataset and model text is untrusted, and an
/// escape sequence in it could move the cursor, rewrite lines already printed or set the
/// clipboard, and a bidi override could make it read as other text. Each control character
/// but line feed and tab becomes one visible character (C0 its Unicode control picture, `␛`
/// for escape; DEL, C1 and bidi controls `�`), so columns still line up. A carriage return
/// that ends a line (CRLF files) is a line end, not shown.
pub fn printable(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        out.push(match c {
            '\r' if chars.peek() == Some(&'\n') => continue,
            '\n' | '\t' => c,
            '\u{0}'..='\u{1f}' => char::from_u32(0x2400 + c as u32).unwrap_or('\u{fffd}'),
            '\u{7f}'..='\u{9f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' => '\u{fffd}',
            c => c,
        });
    }
    out
}

/// Renders one diagnostic like a compiler does (made [`printable`]).
pub fn render(path: &str, source: &str, index: &LineIndex, diagnostic: &Diagnostic) -> String {
    let mut out = String::new();
    let at = locate(index, diagnostic.span);
    let _ = writeln!(out, "{}[{}]: {}", diagnostic.severity.as_str(), diagnostic.code.as_str(), diagnostic.message);
    let gutter = (at.end.line.max(at.start.line)).to_string().len();
    let pad = " ".repeat(gutter);
    let _ = writeln!(out, "{pad}--> {path}:{}:{}", at.start.line, at.start.column);
    if !source.is_empty() {
        snippet(&mut out, index, diagnostic.span, &pad, '^');
    }
    for related in &diagnostic.related {
        match &related.path {
            Some(other) => {
                let _ = writeln!(out, "{pad} = note: {} ({other})", related.message);
            }
            None => {
                let loc = locate(index, related.span);
                let _ = writeln!(
                    out,
                    "{pad} = note: {} at {path}:{}:{}",
                    related.message, loc.start.line, loc.start.column
                );
            }
        }
    }
    if let Some(suggestion) = &diagnostic.suggestion
        && !diagnostic.message.contains(&format!("`{suggestion}`"))
    {
        let _ = writeln!(out, "{pad} = help: did you mean `{suggestion}`?");
    }
    printable(&out)
}

/// The first line of `span` with carets under it (a multi-line span is marked to the line end).
fn snippet(out: &mut String, index: &LineIndex, span: Span, pad: &str, mark: char) {
    let start = index.position(span.start);
    let line = start.line as usize;
    let text = index.line_text(line);
    let end_col =
        if index.line_of(span.end) == line { index.position(span.end).column } else { text.chars().count() as u32 };
    let width = end_col.saturating_sub(start.column).max(1) as usize;
    let display: String = text.chars().map(|c| if c == '\t' { ' ' } else { c }).collect();
    let _ = writeln!(out, "{pad} |");
    let _ = writeln!(out, "{:>w$} | {display}", line + 1, w = pad.len());
    let _ = writeln!(out, "{pad} | {}{}", " ".repeat(start.column as usize), mark.to_string().repeat(width));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_sequences_and_bidi_overrides_never_reach_the_terminal() {
        assert_eq!(printable("a\u{1b}[2Jb\r\u{7}\tc\n"), "a\u{241b}[2Jb\u{240d}\u{2407}\tc\n");
        assert_eq!(printable("x\u{9b}1A\u{202e}evil\u{2066}"), "x\u{fffd}1A\u{fffd}evil\u{fffd}");
        assert_eq!(printable("Résumé — ok"), "Résumé — ok");
        // CRLF line ends read as line ends; a lone carriage return (it rewrites the line) shows.
        assert_eq!(printable("- a\r\n+ b\r\n\rc"), "- a\n+ b\n\u{240d}c");
        // A diagnostic on a line that holds an escape: one visible character each, so the
        // carets still sit under the span.
        let source = "\u{1b}]52;c;aGk=\u{7} {{#if x}}\n";
        let doc = reprompt_protocol::parse(source, None);
        let index = LineIndex::new(source);
        let rendered: String = doc.diagnostics.iter().map(|d| render("p.prompt", source, &index, d)).collect();
        assert!(!rendered.chars().any(|c| c.is_control() && c != '\n' && c != '\t'), "{rendered:?}");
        let lines: Vec<&str> = rendered.lines().collect();
        let shown = lines.iter().position(|l| l.contains("{{#if x}}")).expect("the source line");
        let column = |line: &str, pattern: char| line.chars().position(|c| c == pattern);
        let open = lines[shown].chars().position(|c| c == '{');
        assert_eq!(column(lines[shown + 1], '^'), open, "{rendered}");
    }
}
