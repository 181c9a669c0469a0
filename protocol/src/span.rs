//! Byte spans into a `.prompt` file and conversion to line/column positions.
//!
//! Every diagnostic and every front-matter key, value and template expression carries a [`Span`]
//! of byte offsets into the whole file. [`LineIndex`] turns offsets into 0-based lines and
//! columns counted in Unicode scalar values (for terminals) or UTF-16 code units (for LSP).

use serde::{Deserialize, Serialize};

/// A half-open byte range `start..end` into the source text.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Span {
    pub start: usize,
    pub end: usize,
}

impl Span {
    pub const fn new(start: usize, end: usize) -> Self {
        Self { start, end }
    }

    /// An empty span at `offset`.
    pub const fn at(offset: usize) -> Self {
        Self { start: offset, end: offset }
    }

    pub const fn len(&self) -> usize {
        self.end.saturating_sub(self.start)
    }

    pub const fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// This span moved right by `delta` bytes (for spans computed on a slice of the file).
    pub const fn shifted(self, delta: usize) -> Self {
        Self { start: self.start + delta, end: self.end + delta }
    }

    /// The smallest span covering both.
    pub fn cover(self, other: Span) -> Self {
        Self { start: self.start.min(other.start), end: self.end.max(other.end) }
    }
}

/// A 0-based line and column.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Position {
    pub line: u32,
    pub column: u32,
}

/// Start and end positions of a span.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Range {
    pub start: Position,
    pub end: Position,
}

/// Where each line of `text` starts. Lines end at `\n`, `\r\n` or a lone `\r` (the three
/// line endings of LSP).
pub fn line_starts(text: &str) -> Vec<usize> {
    let bytes = text.as_bytes();
    let mut starts = vec![0];
    for (i, &b) in bytes.iter().enumerate() {
        if b == b'\n' || (b == b'\r' && bytes.get(i + 1) != Some(&b'\n')) {
            starts.push(i + 1);
        }
    }
    starts
}

/// Line starts of a text, for offset → position conversion.
#[derive(Clone, Debug)]
pub struct LineIndex<'a> {
    text: &'a str,
    line_starts: Vec<usize>,
}

impl<'a> LineIndex<'a> {
    pub fn new(text: &'a str) -> Self {
        Self { text, line_starts: line_starts(text) }
    }

    pub fn line_count(&self) -> usize {
        self.line_starts.len()
    }

    /// Clamps `offset` into the text and back onto a char boundary.
    fn clamp(&self, offset: usize) -> usize {
        let mut offset = offset.min(self.text.len());
        while !self.text.is_char_boundary(offset) {
            offset -= 1;
        }
        offset
    }

    /// 0-based line of a byte offset.
    pub fn line_of(&self, offset: usize) -> usize {
        let offset = self.clamp(offset);
        match self.line_starts.binary_search(&offset) {
            Ok(line) => line,
            Err(next) => next - 1,
        }
    }

    /// Byte range of a 0-based line, without its line terminator.
    pub fn line_span(&self, line: usize) -> Span {
        let start = self.line_starts.get(line).copied().unwrap_or(self.text.len());
        let mut end = self.line_starts.get(line + 1).map_or(self.text.len(), |next| next - 1);
        if end > start && self.text.as_bytes()[end - 1] == b'\r' {
            end -= 1;
        }
        Span::new(start, end.max(start))
    }

    /// The text of a 0-based line, without its line terminator.
    pub fn line_text(&self, line: usize) -> &'a str {
        let span = self.line_span(line);
        &self.text[span.start..span.end]
    }

    /// Position with the column counted in Unicode scalar values.
    pub fn position(&self, offset: usize) -> Position {
        let offset = self.clamp(offset);
        let line = self.line_of(offset);
        let start = self.line_starts[line];
        let column = self.text[start..offset].chars().count();
        Position { line: line as u32, column: column as u32 }
    }

    /// Position with the column counted in UTF-16 code units (the LSP default encoding).
    pub fn position_utf16(&self, offset: usize) -> Position {
        let offset = self.clamp(offset);
        let line = self.line_of(offset);
        let start = self.line_starts[line];
        let column: usize = self.text[start..offset].chars().map(char::len_utf16).sum();
        Position { line: line as u32, column: column as u32 }
    }

    pub fn range(&self, span: Span) -> Range {
        Range { start: self.position(span.start), end: self.position(span.end) }
    }

    pub fn range_utf16(&self, span: Span) -> Range {
        Range { start: self.position_utf16(span.start), end: self.position_utf16(span.end) }
    }

    /// Byte offset of a position whose column counts Unicode scalar values; clamps to the line.
    pub fn offset(&self, position: Position) -> usize {
        let line = (position.line as usize).min(self.line_starts.len() - 1);
        let span = self.line_span(line);
        let text = &self.text[span.start..span.end];
        let within = text.char_indices().nth(position.column as usize).map_or(text.len(), |(i, _)| i);
        span.start + within
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_count_chars_and_utf16_units() {
        let text = "ab\nçé😀x\r\nlast";
        let index = LineIndex::new(text);
        let x = text.find('x').unwrap();
        assert_eq!(index.position(x), Position { line: 1, column: 3 });
        assert_eq!(index.position_utf16(x), Position { line: 1, column: 4 });
        assert_eq!(index.line_text(1), "çé😀x");
        assert_eq!(index.line_text(2), "last");
        assert_eq!(index.offset(Position { line: 1, column: 3 }), x);
        // offsets past the end or inside a char clamp instead of panicking
        assert_eq!(index.position(10_000), Position { line: 2, column: 4 });
        assert_eq!(index.position(x - 1).line, 1);
    }

    #[test]
    fn a_lone_carriage_return_ends_a_line() {
        let index = LineIndex::new("a\rb\r\nc\r\rd");
        assert_eq!(index.line_count(), 5);
        assert_eq!(index.position(2), Position { line: 1, column: 0 });
        assert_eq!([0, 1, 2, 3, 4].map(|l| index.line_text(l)), ["a", "b", "c", "", "d"]);
    }
}
