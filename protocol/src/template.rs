//! A Handlebars scanner with source spans: every mustache, block, variable and partial reference.
//!
//! Rendering is done by the `handlebars` crate; this scanner exists because diagnostics need what
//! a renderer throws away: where each expression is, which blocks are open, which variables a
//! template reads at the root scope, and which partials it includes. It never fails: problems
//! become diagnostics, and the scan is linear with bounded nesting so any input is safe.

use std::collections::HashMap;

use serde_json::Value;

use crate::diagnostic::{Code, Diagnostic, Severity};
use crate::span::Span;

/// Deepest block or subexpression nesting accepted (the renderer's parser recurses).
pub const MAX_NESTING: usize = 48;

/// Block and expression helpers that Handlebars itself provides.
pub const BUILTIN_HELPERS: &[&str] = &["if", "unless", "each", "with", "lookup", "log"];
/// Helpers that Dotprompt adds.
pub const DOTPROMPT_HELPERS: &[&str] = &["role", "history", "section", "media", "json", "ifEquals", "unlessEquals"];
/// `@` variables that Handlebars defines inside blocks.
pub const BUILTIN_DATA: &[&str] = &["index", "first", "last", "key", "root", "level", "partial-block"];
/// Roles a `{{role}}` may name.
pub const ROLES: &[&str] = &["system", "user", "model", "tool"];

pub fn is_known_helper(name: &str) -> bool {
    BUILTIN_HELPERS.contains(&name) || DOTPROMPT_HELPERS.contains(&name)
}

#[derive(Clone, Debug, PartialEq)]
pub enum Term {
    /// A path such as `name`, `a.b`, `../x`, `this`, `@index`, `@root.a`.
    Path {
        raw: String,
        span: Span,
    },
    Literal {
        value: Value,
        span: Span,
    },
    SubExpression {
        expr: Box<Expr>,
        span: Span,
    },
}

impl Term {
    pub fn span(&self) -> Span {
        match self {
            Term::Path { span, .. } | Term::Literal { span, .. } | Term::SubExpression { span, .. } => *span,
        }
    }

    pub fn as_path(&self) -> Option<&str> {
        match self {
            Term::Path { raw, .. } => Some(raw),
            _ => None,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct HashArg {
    pub key: String,
    pub key_span: Span,
    pub value: Term,
}

/// The inside of a mustache: a head and its arguments.
#[derive(Clone, Debug, PartialEq)]
pub struct Expr {
    pub head: Term,
    pub params: Vec<Term>,
    pub hash: Vec<HashArg>,
    /// Names bound by `as |a b|`.
    pub block_params: Vec<String>,
}

impl Expr {
    pub fn head_name(&self) -> Option<&str> {
        self.head.as_path()
    }

    /// Whether the head is called as a helper (it has arguments or is a known helper).
    pub fn is_helper_call(&self) -> bool {
        !self.params.is_empty() || !self.hash.is_empty() || self.head_name().is_some_and(is_known_helper)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MustacheKind {
    /// `{{expr}}` or `{{&expr}}`.
    Expression,
    /// `{{{expr}}}`.
    Triple,
    /// `{{#helper …}}`.
    BlockOpen,
    /// `{{^name}}` as an inverted section.
    InverseOpen,
    /// `{{else}}`, `{{^}}` or `{{else if …}}`.
    Else,
    /// `{{/name}}`.
    BlockClose,
    /// `{{> name …}}`.
    Partial,
    /// `{{#> name}}` … `{{/name}}`.
    PartialBlockOpen,
    /// `{{! … }}` or `{{!-- … --}}`.
    Comment,
    /// `\{{ … }}`: literal text.
    Escaped,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Mustache {
    pub kind: MustacheKind,
    /// From the opening `{{` to the closing `}}` inclusive.
    pub span: Span,
    /// The parsed expression (absent for comments, escapes and a bare `{{else}}`).
    pub expr: Option<Expr>,
}

/// A block from its opening to its closing mustache.
#[derive(Clone, Debug, PartialEq)]
pub struct Block {
    pub name: String,
    pub open: Span,
    pub close: Option<Span>,
}

/// A variable read at the template's root scope: its first path segment and where.
#[derive(Clone, Debug, PartialEq)]
pub struct VariableRef {
    pub name: String,
    pub path: String,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub struct PartialRef {
    pub name: String,
    pub span: Span,
    /// Whether the partial is given its own context argument (then it does not see the input).
    pub has_context: bool,
    /// Hash keys passed (`{{> p name=x}}`): variables the partial sees in addition.
    pub hash_keys: Vec<String>,
    /// Whether the call is at the root scope (so the partial reads the input variables).
    pub at_root: bool,
}

/// Everything the scanner learned about one template.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TemplateScan {
    pub mustaches: Vec<Mustache>,
    pub blocks: Vec<Block>,
    pub variables: Vec<VariableRef>,
    pub partials: Vec<PartialRef>,
    /// `{{role "x"}}` calls with the role name and its span.
    pub roles: Vec<(String, Span)>,
    /// The template passes the whole root context somewhere (`{{json this}}`, `{{> p this}}`,
    /// `@root`), so every input variable counts as used.
    pub uses_whole_context: bool,
    pub diagnostics: Vec<Diagnostic>,
}

impl TemplateScan {
    pub fn has_errors(&self) -> bool {
        self.diagnostics.iter().any(|d| d.severity == Severity::Error)
    }
}

/// Scans `source`; spans are byte offsets into it.
pub fn scan(source: &str) -> TemplateScan {
    let mut scan = TemplateScan::default();
    lex_mustaches(source, &mut scan);
    analyze_blocks(&mut scan);
    scan
}

fn find_from(haystack: &str, needle: &str, from: usize) -> Option<usize> {
    haystack.get(from..)?.find(needle).map(|i| i + from)
}

fn lex_mustaches(source: &str, scan: &mut TemplateScan) {
    let bytes = source.as_bytes();
    let mut pos = 0;
    let mut text_start = 0;
    while let Some(open) = find_from(source, "{{", pos) {
        check_stray_close(source, text_start, open, scan);
        let escaped = open > 0 && bytes[open - 1] == b'\\' && !(open > 1 && bytes[open - 2] == b'\\');
        if escaped {
            // `\{{ … }}` renders literally: skip to the end of the would-be mustache, or to the
            // next `{{`, which opens a mustache of its own (as Handlebars reads it).
            let next = find_from(source, "{{", open + 2).unwrap_or(source.len());
            let end = source[open + 2..next].find("}}").map_or(next, |c| open + 2 + c + 2);
            scan.mustaches.push(Mustache { kind: MustacheKind::Escaped, span: Span::new(open - 1, end), expr: None });
            pos = end;
            text_start = end;
            continue;
        }
        // Raw blocks `{{{{raw}}}} … {{{{/raw}}}}` are literal text inside.
        if source[open..].starts_with("{{{{") {
            let end = find_from(source, "{{{{/", open + 4)
                .and_then(|close| find_from(source, "}}}}", close).map(|c| c + 4))
                .unwrap_or(source.len());
            scan.mustaches.push(Mustache { kind: MustacheKind::Escaped, span: Span::new(open, end), expr: None });
            pos = end;
            text_start = end;
            continue;
        }
        let after = &source[open + 2..];
        let after_tilde = after.strip_prefix('~').unwrap_or(after);
        let inner_start = open + 2 + (after.len() - after_tilde.len());
        if after_tilde.starts_with("!--") || after_tilde.starts_with('!') {
            let long = after_tilde.starts_with("!--");
            let terminator = if long { "--" } else { "" };
            let search_from = inner_start + if long { 3 } else { 1 };
            let end = find_comment_end(source, search_from, terminator);
            match end {
                Some(end) => {
                    scan.mustaches.push(Mustache {
                        kind: MustacheKind::Comment,
                        span: Span::new(open, end),
                        expr: None,
                    });
                    pos = end;
                }
                None => {
                    scan.diagnostics.push(Diagnostic::error(
                        Code::UnbalancedBrace,
                        Span::new(open, open + 2),
                        if long {
                            "comment `{{!--` is never closed with `--}}`"
                        } else {
                            "comment `{{!` is never closed with `}}`"
                        },
                    ));
                    pos = source.len();
                }
            }
            text_start = pos;
            continue;
        }
        // `{{{x}}}`, also with whitespace control: `{{~{x}~}}`.
        let triple = after_tilde.starts_with('{');
        let content_start = if triple { inner_start + 1 } else { open + 2 };
        // A mustache must close before the next one opens (delimiters inside string literals
        // do not count).
        let (close, closer) = if triple {
            [("}}}", find_close(source, content_start, "}}}")), ("}~}}", find_close(source, content_start, "}~}}"))]
                .into_iter()
                .filter_map(|(closer, at)| at.map(|at| (at, closer)))
                .min()
                .map_or((None, "}}}"), |(at, closer)| (Some(at), closer))
        } else {
            (find_close(source, content_start, "}}"), "}}")
        };
        let next_open = find_from(source, "{{", close.unwrap_or(content_start));
        let Some(close) = close else {
            let message = if triple { "`{{{` is never closed with `}}}`" } else { "`{{` is never closed with `}}`" };
            scan.diagnostics.push(Diagnostic::error(Code::UnbalancedBrace, Span::new(open, content_start), message));
            pos = next_open.unwrap_or(source.len());
            text_start = pos;
            continue;
        };
        let end = close + closer.len();
        let span = Span::new(open, end);
        let mut content = Span::new(content_start, close);
        // Strip whitespace-control tildes.
        if source[content.start..content.end].starts_with('~') {
            content.start += 1;
        }
        if content.end > content.start && source[content.start..content.end].ends_with('~') {
            content.end -= 1;
        }
        let mustache = classify(source, span, content, triple, scan);
        scan.mustaches.push(mustache);
        pos = end;
        text_start = end;
    }
    check_stray_close(source, text_start, source.len(), scan);
}

/// Most `{{` the string literals of one mustache may hold between them (`{{eq x "{{"}}`).
const STRING_OPENS: usize = 4;

/// The position of `closer` ending the mustache whose content starts at `from`, skipping
/// string literals (which may hold `}}`, and `{{` up to [`STRING_OPENS`] times); `None` if
/// another `{{` opens first or the text ends. It never looks past the `{{` after those, so a
/// scan stays linear in the text (every stretch between two `{{` is read by a bounded number
/// of mustaches).
fn find_close(source: &str, from: usize, closer: &str) -> Option<usize> {
    let bytes = source.as_bytes();
    let mut limit = source.len();
    let mut at = from;
    for _ in 0..=STRING_OPENS {
        match find_from(source, "{{", at) {
            Some(open) => {
                limit = open;
                at = open + 2;
            }
            None => {
                limit = source.len();
                break;
            }
        }
    }
    let region = &source[..limit];
    // A string holding `}}` is one only where the mustache can still close after it.
    let last_closer = region[from..].rfind(closer).map(|c| c + from);
    let mut i = from;
    while i < limit {
        match bytes[i] {
            q @ (b'"' | b'\'') => match region[i + 1..].find(q as char) {
                // An unterminated quote is not a string: the parser reports it.
                Some(len)
                    if !region[i + 1..i + 1 + len].contains("}}") || last_closer.is_some_and(|c| c >= i + 2 + len) =>
                {
                    i += len + 2;
                }
                _ => i += 1,
            },
            _ if bytes[i..].starts_with(closer.as_bytes()) => return Some(i),
            _ if bytes[i..].starts_with(b"{{") => return None,
            _ => i += 1,
        }
    }
    None
}

fn find_comment_end(source: &str, from: usize, terminator: &str) -> Option<usize> {
    let mut at = from;
    loop {
        let close = find_from(source, "}}", at)?;
        let before = &source[from..close];
        let before = before.strip_suffix('~').unwrap_or(before);
        if terminator.is_empty() || before.ends_with(terminator) {
            return Some(close + 2);
        }
        at = close + 2;
    }
}

fn check_stray_close(source: &str, from: usize, to: usize, scan: &mut TemplateScan) {
    if from >= to {
        return;
    }
    if let Some(i) = source[from..to].find("}}") {
        let at = from + i;
        scan.diagnostics.push(Diagnostic::warning(
            Code::UnbalancedBrace,
            Span::new(at, at + 2),
            "`}}` without a matching `{{` (it renders as literal text)",
        ));
    }
}

fn classify(source: &str, span: Span, content: Span, triple: bool, scan: &mut TemplateScan) -> Mustache {
    let text = &source[content.start..content.end];
    let trimmed_start = text.len() - text.trim_start().len();
    let body_start = content.start + trimmed_start;
    let body = &source[body_start..content.end];
    let (kind, skip) = if triple {
        (MustacheKind::Triple, 0)
    } else if body.starts_with("#>") {
        (MustacheKind::PartialBlockOpen, 2)
    } else if body.starts_with("#*") || body.starts_with('*') {
        // Decorators are not part of Dotprompt (and the renderer's parser recurses on their
        // blocks without a bound): refused here.
        scan.diagnostics.push(Diagnostic::error(
            Code::InvalidTemplate,
            span,
            "decorators (`{{#*…}}`, `{{*…}}`) are not part of Dotprompt",
        ));
        return Mustache { kind: MustacheKind::Expression, span, expr: None };
    } else if body.starts_with('#') {
        (MustacheKind::BlockOpen, 1)
    } else if body.starts_with('/') {
        (MustacheKind::BlockClose, 1)
    } else if body.starts_with('>') {
        (MustacheKind::Partial, 1)
    } else if body.starts_with('&') {
        (MustacheKind::Expression, 1)
    } else if let Some(rest) = body.strip_prefix('^') {
        if rest.trim().is_empty() { (MustacheKind::Else, 1) } else { (MustacheKind::InverseOpen, 1) }
    } else if body == "else" || body.starts_with("else ") || body.starts_with("else\n") || body.starts_with("else\t") {
        (MustacheKind::Else, 4)
    } else {
        (MustacheKind::Expression, 0)
    };
    let expr_span = Span::new(body_start + skip, content.end);
    let expr_text = &source[expr_span.start..expr_span.end];
    let expr = if expr_text.trim().is_empty() {
        if !matches!(kind, MustacheKind::Else) {
            scan.diagnostics.push(Diagnostic::error(
                Code::InvalidTemplate,
                span,
                "empty mustache: expected an expression",
            ));
        }
        None
    } else {
        let mut parser =
            ExprParser { source, pos: expr_span.start, end: expr_span.end, depth: 0, diagnostics: Vec::new() };
        let expr = parser.expression(kind == MustacheKind::Partial || kind == MustacheKind::PartialBlockOpen);
        let failed = !parser.diagnostics.is_empty();
        scan.diagnostics.append(&mut parser.diagnostics);
        if failed { None } else { expr }
    };
    Mustache { kind, span, expr }
}

struct ExprParser<'a> {
    source: &'a str,
    pos: usize,
    end: usize,
    depth: usize,
    diagnostics: Vec<Diagnostic>,
}

impl ExprParser<'_> {
    fn peek(&self) -> Option<u8> {
        (self.pos < self.end).then(|| self.source.as_bytes()[self.pos])
    }

    fn skip_ws(&mut self) {
        while self.peek().is_some_and(|b| b.is_ascii_whitespace()) {
            self.pos += 1;
        }
    }

    fn fail(&mut self, span: Span, message: String) {
        self.diagnostics.push(Diagnostic::error(Code::InvalidTemplate, span, message));
        self.pos = self.end;
    }

    /// `head params* hash* (as |x y|)?`, up to `self.end`.
    fn expression(&mut self, partial: bool) -> Option<Expr> {
        self.skip_ws();
        let head = if partial { self.partial_name()? } else { self.term()? };
        let mut params = Vec::new();
        let mut hash = Vec::new();
        let mut block_params = Vec::new();
        loop {
            self.skip_ws();
            let Some(b) = self.peek() else { break };
            if b == b')' {
                break;
            }
            let rest = &self.source[self.pos..self.end];
            if rest.starts_with("as |") || rest.starts_with("as|") {
                let bar = self.pos + rest.find('|').unwrap_or(0);
                let Some(close) = self.source[bar + 1..self.end].find('|') else {
                    self.fail(Span::new(self.pos, self.end), "block parameters `as |…|` are not closed".into());
                    return None;
                };
                block_params = self.source[bar + 1..bar + 1 + close].split_whitespace().map(str::to_string).collect();
                self.pos = bar + 2 + close;
                continue;
            }
            if let Some(key_len) = hash_key_len(rest) {
                let key_span = Span::new(self.pos, self.pos + key_len);
                let key = rest[..key_len].to_string();
                self.pos += key_len + 1;
                self.skip_ws();
                let value = self.term()?;
                hash.push(HashArg { key, key_span, value });
            } else {
                if !hash.is_empty() {
                    let start = self.pos;
                    self.fail(Span::new(start, self.end), "positional argument after `key=value` arguments".into());
                    return None;
                }
                params.push(self.term()?);
            }
        }
        Some(Expr { head, params, hash, block_params })
    }

    fn partial_name(&mut self) -> Option<Term> {
        let start = self.pos;
        if self.peek() == Some(b'(') {
            return self.term();
        }
        if let Some(q @ (b'"' | b'\'')) = self.peek() {
            return self.string(q);
        }
        while self.peek().is_some_and(|b| !b.is_ascii_whitespace() && b != b')') {
            self.pos += 1;
        }
        Some(Term::Path { raw: self.source[start..self.pos].to_string(), span: Span::new(start, self.pos) })
    }

    fn string(&mut self, quote: u8) -> Option<Term> {
        let start = self.pos;
        self.pos += 1;
        let mut value = String::new();
        loop {
            match self.peek() {
                None => {
                    self.fail(Span::new(start, self.end), "string literal is not closed".into());
                    return None;
                }
                Some(b) if b == quote => {
                    self.pos += 1;
                    break;
                }
                Some(b'\\') if self.source.as_bytes().get(self.pos + 1) == Some(&quote) => {
                    value.push(quote as char);
                    self.pos += 2;
                }
                Some(_) => {
                    let ch = self.source[self.pos..].chars().next().unwrap_or('\u{fffd}');
                    value.push(ch);
                    self.pos += ch.len_utf8();
                }
            }
        }
        Some(Term::Literal { value: Value::String(value), span: Span::new(start, self.pos) })
    }

    fn term(&mut self) -> Option<Term> {
        self.skip_ws();
        let start = self.pos;
        match self.peek() {
            None => {
                self.fail(Span::new(start, start), "expected a value".into());
                None
            }
            Some(b'(') => {
                self.depth += 1;
                if self.depth > MAX_NESTING {
                    self.diagnostics.push(Diagnostic::error(
                        Code::TooDeep,
                        Span::new(start, start + 1),
                        format!("subexpressions nested deeper than {MAX_NESTING} levels"),
                    ));
                    self.pos = self.end;
                    return None;
                }
                self.pos += 1;
                let expr = self.expression(false)?;
                self.skip_ws();
                if self.peek() != Some(b')') {
                    self.fail(Span::new(start, self.end), "subexpression `(` is not closed with `)`".into());
                    return None;
                }
                self.pos += 1;
                self.depth -= 1;
                Some(Term::SubExpression { expr: Box::new(expr), span: Span::new(start, self.pos) })
            }
            Some(q @ (b'"' | b'\'')) => self.string(q),
            Some(_) => {
                // A path or a number/boolean/null literal: up to whitespace, `)` or `=`,
                // keeping `[segment literals]` whole.
                while let Some(b) = self.peek() {
                    if b.is_ascii_whitespace() || b == b')' || b == b'(' {
                        break;
                    }
                    if b == b'[' {
                        match self.source[self.pos..self.end].find(']') {
                            Some(close) => self.pos += close + 1,
                            None => {
                                self.fail(
                                    Span::new(self.pos, self.end),
                                    "path segment `[` is not closed with `]`".into(),
                                );
                                return None;
                            }
                        }
                        continue;
                    }
                    self.pos += 1;
                }
                let raw = &self.source[start..self.pos];
                let span = Span::new(start, self.pos);
                if raw.is_empty() {
                    self.fail(span, "expected a value".into());
                    return None;
                }
                let literal = match raw {
                    "true" => Some(Value::Bool(true)),
                    "false" => Some(Value::Bool(false)),
                    "null" | "undefined" => Some(Value::Null),
                    _ if raw.starts_with(|c: char| c.is_ascii_digit() || c == '-') => {
                        raw.parse::<i64>().map(Value::from).ok().or_else(|| raw.parse::<f64>().ok().map(Value::from))
                    }
                    _ => None,
                };
                Some(match literal {
                    Some(value) => Term::Literal { value, span },
                    None => Term::Path { raw: raw.to_string(), span },
                })
            }
        }
    }
}

/// Length of `key` if `rest` starts with `key=` (a hash argument).
fn hash_key_len(rest: &str) -> Option<usize> {
    let len = rest.bytes().take_while(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'$')).count();
    (len > 0 && rest.as_bytes().get(len) == Some(&b'=')).then_some(len)
}

/// One open block on the stack while walking the mustaches.
struct OpenBlock {
    name: String,
    open: Span,
    /// Whether the block changes the context (`each`, `with`, unknown helpers): root variables
    /// are not visible inside without `@root` or `../`.
    changes_scope: bool,
    /// How many block parameters were in scope before this block's own.
    locals_from: usize,
    index: usize,
}

/// The block parameters in scope (`as |item i|` of every open block), kept as blocks open and
/// close instead of gathered again for every mustache, and looked up in constant time.
#[derive(Default)]
struct Locals<'a> {
    names: Vec<&'a str>,
    counts: HashMap<&'a str, usize>,
}

impl<'a> Locals<'a> {
    /// Brings `params` into scope; returns the mark to [`Locals::truncate`] to when the block closes.
    fn open(&mut self, params: &'a [String]) -> usize {
        let mark = self.names.len();
        for name in params {
            self.names.push(name);
            *self.counts.entry(name).or_default() += 1;
        }
        mark
    }

    fn truncate(&mut self, mark: usize) {
        for name in self.names.drain(mark.min(self.names.len())..) {
            if let Some(count) = self.counts.get_mut(name) {
                *count -= 1;
                if *count == 0 {
                    self.counts.remove(name);
                }
            }
        }
    }

    fn contains(&self, name: &str) -> bool {
        self.counts.contains_key(name)
    }
}

fn analyze_blocks(scan: &mut TemplateScan) {
    let mut stack: Vec<OpenBlock> = Vec::new();
    let mut blocks = Vec::new();
    let mut diagnostics = Vec::new();
    let mut refs = Refs::default();
    let mut locals = Locals::default();
    for mustache in &scan.mustaches {
        let scoped = stack.iter().filter(|b| b.changes_scope).count();
        match mustache.kind {
            MustacheKind::Comment | MustacheKind::Escaped => {}
            MustacheKind::Expression | MustacheKind::Triple => {
                if let Some(expr) = &mustache.expr {
                    refs.expression(expr, scoped, &locals, &mut diagnostics);
                }
            }
            MustacheKind::Partial => {
                if let Some(expr) = &mustache.expr {
                    refs.partial(expr, mustache.span, scoped, &locals, &mut diagnostics);
                }
            }
            MustacheKind::Else => {
                if stack.is_empty() {
                    diagnostics.push(Diagnostic::error(
                        Code::UnmatchedClosingBlock,
                        mustache.span,
                        "`{{else}}` outside of a block",
                    ));
                }
                // The inverse branch of `each`/`with` renders in the enclosing context.
                if let Some(top) = stack.last_mut()
                    && matches!(top.name.as_str(), "each" | "with")
                {
                    top.changes_scope = false;
                }
                let scoped = stack.iter().filter(|b| b.changes_scope).count();
                if let Some(expr) = &mustache.expr {
                    // `{{else if x}}`: the chained helper's arguments are read in the same scope.
                    for param in &expr.params {
                        refs.value(param, scoped, &locals, &mut diagnostics);
                    }
                }
            }
            MustacheKind::BlockOpen | MustacheKind::InverseOpen | MustacheKind::PartialBlockOpen => {
                let Some(expr) = &mustache.expr else { continue };
                let name = expr.head_name().unwrap_or("").to_string();
                if stack.len() >= MAX_NESTING {
                    diagnostics.push(Diagnostic::error(
                        Code::TooDeep,
                        mustache.span,
                        format!("blocks nested deeper than {MAX_NESTING} levels"),
                    ));
                    scan.blocks = blocks;
                    scan.diagnostics.append(&mut diagnostics);
                    refs.finish(scan);
                    return;
                }
                let changes_scope = match mustache.kind {
                    MustacheKind::PartialBlockOpen => {
                        refs.partial(expr, mustache.span, scoped, &locals, &mut diagnostics);
                        false
                    }
                    MustacheKind::InverseOpen => {
                        refs.value(&expr.head, scoped, &locals, &mut diagnostics);
                        false
                    }
                    _ if expr.params.is_empty() && expr.hash.is_empty() && !is_known_helper(&name) => {
                        // `{{#items}}` section: iterates or scopes into the value.
                        refs.value(&expr.head, scoped, &locals, &mut diagnostics);
                        true
                    }
                    _ => {
                        if !is_known_helper(&name) {
                            diagnostics.push(unknown_helper(&name, expr.head.span(), true));
                        }
                        for param in &expr.params {
                            refs.value(param, scoped, &locals, &mut diagnostics);
                        }
                        for arg in &expr.hash {
                            refs.value(&arg.value, scoped, &locals, &mut diagnostics);
                        }
                        matches!(name.as_str(), "each" | "with") || !is_known_helper(&name)
                    }
                };
                let index = blocks.len();
                blocks.push(Block { name: name.clone(), open: mustache.span, close: None });
                stack.push(OpenBlock {
                    name,
                    open: mustache.span,
                    changes_scope,
                    locals_from: locals.open(&expr.block_params),
                    index,
                });
            }
            MustacheKind::BlockClose => {
                let name = mustache.expr.as_ref().and_then(Expr::head_name).unwrap_or("").to_string();
                match stack.last() {
                    Some(open) if open.name == name => {
                        blocks[open.index].close = Some(mustache.span);
                        if let Some(open) = stack.pop() {
                            locals.truncate(open.locals_from);
                        }
                    }
                    Some(open) => {
                        let message =
                            format!("`{{{{/{name}}}}}` does not match the open block `{{{{#{}}}}}`", open.name);
                        diagnostics.push(
                            Diagnostic::error(Code::UnmatchedClosingBlock, mustache.span, message)
                                .with_related(open.open, format!("`{}` opened here", open.name)),
                        );
                        // Recover: close up to a matching block if there is one.
                        if let Some(depth) = stack.iter().rposition(|b| b.name == name) {
                            while stack.len() > depth + 1 {
                                if let Some(unclosed) = stack.pop() {
                                    report_unclosed(&unclosed, &mut diagnostics);
                                }
                            }
                            if let Some(open) = stack.pop() {
                                blocks[open.index].close = Some(mustache.span);
                                locals.truncate(open.locals_from);
                            }
                        }
                    }
                    None => diagnostics.push(Diagnostic::error(
                        Code::UnmatchedClosingBlock,
                        mustache.span,
                        format!("`{{{{/{name}}}}}` closes a block that was never opened"),
                    )),
                }
            }
        }
    }
    for open in stack.iter().rev() {
        report_unclosed(open, &mut diagnostics);
    }
    scan.blocks = blocks;
    scan.diagnostics.append(&mut diagnostics);
    refs.finish(scan);
}

fn unknown_helper(name: &str, span: Span, block: bool) -> Diagnostic {
    let what = if block { "block helper" } else { "helper" };
    let known = BUILTIN_HELPERS.iter().chain(DOTPROMPT_HELPERS).copied();
    Diagnostic::error(
        Code::UnknownHelper,
        span,
        format!("unknown {what} `{name}` (Dotprompt knows {})", known_helpers_list()),
    )
    .with_suggestion(crate::diagnostic::did_you_mean(name, known).map(str::to_string))
}

fn known_helpers_list() -> String {
    BUILTIN_HELPERS.iter().chain(DOTPROMPT_HELPERS).map(|h| format!("`{h}`")).collect::<Vec<_>>().join(", ")
}

fn report_unclosed(open: &OpenBlock, diagnostics: &mut Vec<Diagnostic>) {
    diagnostics.push(Diagnostic::error(
        Code::UnclosedBlock,
        open.open,
        format!("block `{{{{#{}}}}}` is never closed: add `{{{{/{}}}}}`", open.name, open.name),
    ));
}

#[derive(Default)]
struct Refs {
    variables: Vec<VariableRef>,
    partials: Vec<PartialRef>,
    roles: Vec<(String, Span)>,
    uses_whole_context: bool,
}

impl Refs {
    fn finish(self, scan: &mut TemplateScan) {
        scan.variables = self.variables;
        scan.partials = self.partials;
        scan.roles = self.roles;
        scan.uses_whole_context = self.uses_whole_context;
    }

    fn expression(&mut self, expr: &Expr, scoped: usize, locals: &Locals, diagnostics: &mut Vec<Diagnostic>) {
        if expr.is_helper_call() {
            let name = expr.head_name().unwrap_or("");
            if expr.head_name().is_some() && !is_known_helper(name) && !name.starts_with('@') {
                diagnostics.push(unknown_helper(name, expr.head.span(), false));
            }
            if name == "role" {
                match expr.params.first() {
                    Some(Term::Literal { value: Value::String(role), span }) => {
                        if !ROLES.contains(&role.as_str()) {
                            diagnostics.push(Diagnostic::error(
                                Code::InvalidRole,
                                *span,
                                format!("unknown role `{role}`: use \"system\", \"user\" or \"model\""),
                            ));
                        }
                        self.roles.push((role.clone(), *span));
                    }
                    Some(other) => self.value(other, scoped, locals, diagnostics),
                    None => diagnostics.push(Diagnostic::error(
                        Code::InvalidRole,
                        expr.head.span(),
                        "`{{role}}` needs a role name: {{role \"system\"}}",
                    )),
                }
                return;
            }
            if let Term::SubExpression { .. } = expr.head {
                self.value(&expr.head, scoped, locals, diagnostics);
            }
            for param in &expr.params {
                self.value(param, scoped, locals, diagnostics);
            }
            for arg in &expr.hash {
                self.value(&arg.value, scoped, locals, diagnostics);
            }
        } else {
            self.value(&expr.head, scoped, locals, diagnostics);
        }
    }

    fn partial(&mut self, expr: &Expr, span: Span, scoped: usize, locals: &Locals, diagnostics: &mut Vec<Diagnostic>) {
        if let Some(context) = expr.params.first() {
            self.value(context, scoped, locals, diagnostics);
        }
        for arg in &expr.hash {
            self.value(&arg.value, scoped, locals, diagnostics);
        }
        let name = match &expr.head {
            Term::Path { raw, .. } => raw.clone(),
            Term::Literal { value: Value::String(s), .. } => s.clone(),
            _ => return, // dynamic partial names cannot be resolved statically
        };
        self.partials.push(PartialRef {
            name,
            span,
            has_context: !expr.params.is_empty(),
            hash_keys: expr.hash.iter().map(|a| a.key.clone()).collect(),
            at_root: scoped == 0,
        });
    }

    fn value(&mut self, term: &Term, scoped: usize, locals: &Locals, diagnostics: &mut Vec<Diagnostic>) {
        match term {
            Term::Literal { .. } => {}
            Term::SubExpression { expr, .. } => self.expression(expr, scoped, locals, diagnostics),
            Term::Path { raw, span } => {
                if let Some(rest) = raw.strip_prefix("@root") {
                    let rest = rest.trim_start_matches(['.', '/']);
                    match first_segment(rest) {
                        Some(name) => self.variables.push(VariableRef { name, path: rest.to_string(), span: *span }),
                        None => self.uses_whole_context = true,
                    }
                    return;
                }
                if raw.starts_with('@') {
                    return; // data variables: @index, @state, @metadata, …
                }
                let (path, up) = strip_parents(raw);
                if up > 0 {
                    // `../x` climbs scopes; climbing out of every scope reads the input.
                    if up >= scoped
                        && let Some(name) = first_segment(path)
                    {
                        self.variables.push(VariableRef { name, path: path.to_string(), span: *span });
                    }
                    return;
                }
                let first = first_segment(path);
                match first {
                    None => {
                        if scoped == 0 {
                            self.uses_whole_context = true;
                        }
                    }
                    Some(name) => {
                        if scoped > 0 || locals.contains(&name) {
                            return;
                        }
                        self.variables.push(VariableRef { name, path: path.to_string(), span: *span });
                    }
                }
            }
        }
    }
}

/// Strips leading `../` segments; returns the rest and how many levels up.
fn strip_parents(raw: &str) -> (&str, usize) {
    let mut rest = raw;
    let mut up = 0;
    while let Some(r) = rest.strip_prefix("../") {
        rest = r;
        up += 1;
    }
    (rest, up)
}

/// The first named segment of a path (`this.a.b` → `a`, `this` → none).
fn first_segment(path: &str) -> Option<String> {
    let path = path.strip_prefix("this").map_or(path, |rest| {
        if rest.is_empty() || rest.starts_with(['.', '/']) { rest.trim_start_matches(['.', '/']) } else { path }
    });
    let path = path.strip_prefix("./").unwrap_or(path);
    if path.is_empty() || path == "." {
        return None;
    }
    let segment = if let Some(rest) = path.strip_prefix('[') {
        rest.split(']').next().unwrap_or(rest)
    } else {
        path.split(['.', '/']).next().unwrap_or(path)
    };
    (!segment.is_empty()).then(|| segment.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(scan: &TemplateScan) -> Vec<&str> {
        scan.variables.iter().map(|v| v.name.as_str()).collect()
    }

    #[test]
    fn finds_root_variables_but_not_scoped_or_data_ones() {
        let src = "{{role \"user\"}}Hi {{name}} {{user.age}}\n{{#each items as |it|}}{{it}} {{title}} {{@index}} {{@root.top}}{{/each}}\n{{#if flag}}{{other}}{{/if}}{{json (lookup map key)}}";
        let scan = scan(src);
        assert!(scan.diagnostics.is_empty(), "{:?}", scan.diagnostics);
        assert_eq!(names(&scan), ["name", "user", "items", "top", "flag", "other", "map", "key"]);
        assert_eq!(scan.roles, [("user".to_string(), Span::new(7, 13))]);
        assert!(!scan.uses_whole_context);
        assert_eq!(scan.blocks.len(), 2);
    }

    #[test]
    fn block_parameters_leave_scope_with_their_block_even_when_names_repeat() {
        // `{{else}}` of `each` reads the enclosing context, where only the block parameters
        // tell a local from an input variable.
        let src = "{{#each a as |x|}}{{else}}{{#each b as |x|}}{{else}}{{/each}}{{x}}{{/each}}{{x}}";
        let scan = scan(src);
        assert!(scan.diagnostics.is_empty(), "{:?}", scan.diagnostics);
        assert_eq!(names(&scan), ["a", "b", "x"]);
        assert_eq!(&src[scan.variables[2].span.start..], "x}}");
        // A block closed by recovering from a mismatched close takes its parameters along.
        let scan = super::scan("{{#each a as |y|}}{{else}}{{#if c}}{{y}}{{/each}}{{y}}");
        assert_eq!(names(&scan), ["a", "c", "y"]);
        assert!(scan.diagnostics.iter().any(|d| d.code == Code::UnclosedBlock));
        // Many parameters and many references: each looked up once.
        let params: Vec<String> = (0..3000).map(|i| format!("p{i}")).collect();
        let body: String = (0..3000).map(|i| format!("{{{{p{i}}}}}{{{{q{i}}}}}")).collect();
        let src = format!("{{{{#each a as |{}|}}}}{{{{else}}}}{body}{{{{/each}}}}", params.join(" "));
        let scan = super::scan(&src);
        assert_eq!(scan.variables.len(), 3001);
        assert!(scan.variables[1..].iter().all(|v| v.name.starts_with('q')));
    }

    #[test]
    fn spans_point_at_the_expression_text() {
        let src = "a {{~ name ~}} b {{{raw}}} {{! note }} {{!-- long }} --}}";
        let scan = scan(src);
        assert!(scan.diagnostics.is_empty(), "{:?}", scan.diagnostics);
        let kinds: Vec<_> = scan.mustaches.iter().map(|m| m.kind).collect();
        assert_eq!(
            kinds,
            [MustacheKind::Expression, MustacheKind::Triple, MustacheKind::Comment, MustacheKind::Comment]
        );
        let var = &scan.variables[0];
        assert_eq!(&src[var.span.start..var.span.end], "name");
        assert_eq!(&src[scan.mustaches[1].span.start..scan.mustaches[1].span.end], "{{{raw}}}");
    }

    #[test]
    fn reports_unclosed_unmatched_and_unbalanced() {
        let scan = scan("{{#if a}}x{{/each}}\n{{#each b}}\n{{name\n{{other}}");
        let codes: Vec<_> = scan.diagnostics.iter().map(|d| d.code).collect();
        assert!(codes.contains(&Code::UnmatchedClosingBlock), "{codes:?}");
        assert!(codes.contains(&Code::UnclosedBlock), "{codes:?}");
        assert!(codes.contains(&Code::UnbalancedBrace), "{codes:?}");
    }

    #[test]
    fn unknown_helpers_and_roles_are_errors() {
        let scan = scan("{{role \"assistant\"}}{{#iff x}}{{/iff}}{{upper name}}");
        let codes: Vec<_> = scan.diagnostics.iter().map(|d| d.code).collect();
        assert_eq!(codes, [Code::InvalidRole, Code::UnknownHelper, Code::UnknownHelper]);
        assert_eq!(scan.diagnostics[1].suggestion.as_deref(), Some("if"));
    }

    #[test]
    fn whole_context_and_partials() {
        let scan = scan("{{json this}}{{> greeting name=user}}{{#each xs}}{{> item this}}{{/each}}");
        assert!(scan.uses_whole_context);
        assert_eq!(scan.partials.len(), 2);
        assert!(scan.partials[0].at_root && !scan.partials[0].has_context);
        assert_eq!(scan.partials[0].hash_keys, ["name"]);
        assert!(!scan.partials[1].at_root && scan.partials[1].has_context);
    }

    #[test]
    fn strings_may_hold_braces_and_else_branches_read_the_outer_scope() {
        let scan = scan("{{#ifEquals x \"}}\"}}yes{{/ifEquals}} {{#each xs}}{{this}}{{else}}{{fallback}}{{/each}}");
        assert!(scan.diagnostics.is_empty(), "{:?}", scan.diagnostics);
        assert_eq!(names(&scan), ["x", "xs", "fallback"]);
        let scan = self::scan("{{#ifEquals x \"{{\"}}yes{{/ifEquals}} {{json \"{{a}} {{b}}\"}}");
        assert!(scan.diagnostics.is_empty(), "{:?}", scan.diagnostics);
        assert_eq!(names(&scan), ["x"]);
    }

    #[test]
    fn escapes_are_text() {
        let scan = scan("\\{{not a var}} {{real}}");
        assert_eq!(names(&scan), ["real"]);
        // An escape ends where the next mustache opens.
        let scan = self::scan("\\{{ {{name}}");
        assert_eq!(names(&scan), ["name"]);
    }

    #[test]
    fn triple_stashes_take_whitespace_control() {
        let scan = scan("{{~{name}~}} {{{other}~}} {{~{third}}}");
        assert!(scan.diagnostics.is_empty(), "{:?}", scan.diagnostics);
        assert_eq!(names(&scan), ["name", "other", "third"]);
        assert!(scan.mustaches.iter().all(|m| m.kind == MustacheKind::Triple));
    }

    #[test]
    fn decorators_are_refused() {
        for src in ["{{#*inline \"p\"}}x{{/inline}}", "{{*dec}}", &"{{#*x}}".repeat(100)] {
            let scan = scan(src);
            assert!(
                scan.has_errors() && scan.diagnostics[0].message.contains("decorators"),
                "{src}: {:?}",
                scan.diagnostics
            );
            assert!(scan.variables.is_empty(), "{src}");
        }
    }

    #[test]
    fn unclosed_triples_with_strings_are_each_reported_once() {
        // Each `{{{` looks only as far as the next `{{` for its end (the scan stays linear;
        // it read the whole rest of the text once per mustache).
        let n = 20_000;
        let scan = scan(&"{{{\"}}\"".repeat(n));
        let unclosed = scan.diagnostics.iter().filter(|d| d.message.contains("never closed")).count();
        assert_eq!(unclosed, n);
        let scan = self::scan(&format!("{{{{{{{}x}}}}}}", "\"}}\"'}}'".repeat(n)));
        assert_eq!(scan.mustaches.len(), 1, "{:?}", &scan.diagnostics[..1]);
        let scan = self::scan(&"\\{{".repeat(n));
        assert_eq!(scan.mustaches.len(), n);
    }

    #[test]
    fn deep_nesting_is_bounded() {
        let src = "{{#if a}}".repeat(500) + &"{{/if}}".repeat(500);
        let scan = scan(&src);
        assert!(scan.diagnostics.iter().any(|d| d.code == Code::TooDeep));
        let src = format!("{{{{json {}x{}}}}}", "(lookup ".repeat(300), ")".repeat(300));
        let scan = self::scan(&src);
        assert!(scan.diagnostics.iter().any(|d| d.code == Code::TooDeep));
    }
}
