//! The `.prompt` format (Google's Dotprompt) with source spans, diagnostics and rendering.
//!
//! No ML and no async runtime: the daemon and the language server both build on this crate.
//! - [`document::parse`] reads a file into metadata, settings and a template scan, with every
//!   finding that needs only the text as a [`diagnostic::Diagnostic`];
//! - [`check`] adds what needs the file system (partials, datasets, model files);
//! - [`render::CompiledPrompt`] renders messages exactly as the Dotprompt spec says;
//! - [`hash::content_hash`] keys evaluations by content.

pub mod check;
pub mod dataset;
pub mod diagnostic;
pub mod document;
pub mod hash;
pub mod messages;
pub mod picoschema;
pub mod render;
pub mod settings;
pub mod span;
pub mod template;
pub mod yaml;

pub use diagnostic::{Code, Diagnostic, Severity};
pub use document::{PromptDocument, parse, parse_bytes};
pub use span::{LineIndex, Position, Range, Span};
