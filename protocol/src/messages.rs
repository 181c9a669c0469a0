//! Rendered messages (role + content parts) and the marker splitting Dotprompt defines.
//!
//! Helpers such as `{{role "system"}}` render to markers (`<<<dotprompt:role:system>>>`); the
//! rendered text is then split into messages and parts exactly as the reference does: a role
//! marker starts a new message unless the current one is still blank, `{{history}}` inserts the
//! conversation so far, and history is otherwise placed before the last user message.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    System,
    User,
    Model,
    Tool,
}

impl Role {
    pub fn parse(text: &str) -> Option<Role> {
        match text {
            "system" => Some(Role::System),
            "user" => Some(Role::User),
            "model" => Some(Role::Model),
            "tool" => Some(Role::Tool),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::System => "system",
            Role::User => "user",
            Role::Model => "model",
            Role::Tool => "tool",
        }
    }
}

/// One content part. Parts this crate does not interpret (tool requests, custom parts) are kept
/// as they came.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Part {
    Text {
        text: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        metadata: Option<Map<String, Value>>,
    },
    Media {
        media: Media,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        metadata: Option<Map<String, Value>>,
    },
    /// A placeholder such as a `{{section}}` marker: metadata only.
    Pending {
        metadata: Map<String, Value>,
    },
    Other(Map<String, Value>),
}

impl Part {
    pub fn text(text: impl Into<String>) -> Self {
        Part::Text { text: text.into(), metadata: None }
    }

    pub fn as_text(&self) -> Option<&str> {
        match self {
            Part::Text { text, .. } => Some(text),
            _ => None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Media {
    pub url: String,
    #[serde(default, rename = "contentType", skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Message {
    pub role: Role,
    pub content: Vec<Part>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Map<String, Value>>,
}

impl Message {
    /// The concatenated text parts.
    pub fn text(&self) -> String {
        self.content.iter().filter_map(Part::as_text).collect()
    }
}

pub const ROLE_MARKER: &str = "<<<dotprompt:role:";
pub const HISTORY_MARKER: &str = "<<<dotprompt:history>>>";
pub const MEDIA_MARKER: &str = "<<<dotprompt:media:url";
pub const SECTION_MARKER: &str = "<<<dotprompt:section";

/// Splits `text` at markers starting with one of `prefixes` and ending at the next `>>>`.
/// Yields (is_marker, piece); pieces that are only whitespace are dropped, as the reference does.
/// Each prefix's next place is remembered and searched again only once the split has passed
/// it, so the text is scanned once per prefix however many markers it holds.
fn split_markers<'a>(text: &'a str, prefixes: &[&str], mut emit: impl FnMut(bool, &'a str)) {
    let mut push = |is_marker: bool, piece: &'a str| {
        if !piece.trim().is_empty() {
            emit(is_marker, piece);
        }
    };
    let mut start = 0;
    let mut next: Vec<Option<usize>> = prefixes.iter().map(|p| text.find(p)).collect();
    loop {
        for (at, prefix) in next.iter_mut().zip(prefixes) {
            if at.is_some_and(|i| i < start) {
                *at = text[start..].find(prefix).map(|i| start + i);
            }
        }
        let earliest = next.iter().zip(prefixes).filter_map(|(at, p)| at.map(|i| (i, *p))).min_by_key(|(i, _)| *i);
        let Some((at, prefix)) = earliest else {
            push(false, &text[start..]);
            return;
        };
        let Some(close) = text[at + prefix.len()..].find(">>>") else {
            push(false, &text[start..]);
            return;
        };
        let end = at + prefix.len() + close;
        push(false, &text[start..at]);
        push(true, &text[at..end]);
        start = end + 3;
    }
}

struct Source {
    role: Role,
    text: String,
    content: Option<Vec<Part>>,
    metadata: Option<Map<String, Value>>,
}

/// Turns rendered text into messages, inserting `history` as the reference does.
pub fn to_messages(rendered: &str, history: &[Message]) -> Vec<Message> {
    let mut sources = vec![Source { role: Role::User, text: String::new(), content: None, metadata: None }];
    split_markers(rendered, &[ROLE_MARKER, HISTORY_MARKER.trim_end_matches(">>>")], |is_marker, piece| {
        if is_marker && piece.starts_with(ROLE_MARKER) {
            let role = Role::parse(&piece[ROLE_MARKER.len()..]).unwrap_or(Role::User);
            let current = sources.last_mut().expect("sources start non-empty");
            if current.content.is_none() && current.text.trim().is_empty() {
                current.role = role;
            } else {
                sources.push(Source { role, text: String::new(), content: None, metadata: None });
            }
        } else if is_marker {
            for message in history {
                let mut metadata = message.metadata.clone().unwrap_or_default();
                metadata.insert("purpose".into(), json!("history"));
                sources.push(Source {
                    role: message.role,
                    text: String::new(),
                    content: Some(message.content.clone()),
                    metadata: Some(metadata),
                });
            }
            sources.push(Source { role: Role::Model, text: String::new(), content: None, metadata: None });
        } else if let Some(current) = sources.last_mut() {
            current.text.push_str(piece);
        }
    });
    let messages: Vec<Message> = sources
        .into_iter()
        .filter(|s| s.content.is_some() || !s.text.is_empty())
        .map(|s| Message {
            role: s.role,
            content: s.content.unwrap_or_else(|| to_parts(&s.text)),
            metadata: s.metadata,
        })
        .collect();
    insert_history(messages, history)
}

fn insert_history(mut messages: Vec<Message>, history: &[Message]) -> Vec<Message> {
    let has_history =
        messages.iter().any(|m| m.metadata.as_ref().and_then(|m| m.get("purpose")) == Some(&json!("history")));
    if history.is_empty() || has_history {
        return messages;
    }
    if messages.is_empty() {
        return history.to_vec();
    }
    if messages.last().is_some_and(|m| m.role == Role::User) {
        let last = messages.pop().expect("checked non-empty");
        messages.extend(history.iter().cloned());
        messages.push(last);
    } else {
        messages.extend(history.iter().cloned());
    }
    messages
}

/// Splits one message's text into text, media and section parts.
pub fn to_parts(text: &str) -> Vec<Part> {
    let mut parts = Vec::new();
    split_markers(text, &[MEDIA_MARKER, SECTION_MARKER], |is_marker, piece| {
        if !is_marker {
            parts.push(Part::text(piece));
        } else if let Some(rest) = piece.strip_prefix(MEDIA_MARKER) {
            let mut fields = rest.split(' ').filter(|f| !f.is_empty());
            let url = fields.next().unwrap_or_default().to_string();
            let content_type = fields.next().map(str::to_string);
            parts.push(Part::Media { media: Media { url, content_type }, metadata: None });
        } else if let Some(rest) = piece.strip_prefix(SECTION_MARKER) {
            let name = rest.split(' ').find(|f| !f.is_empty()).unwrap_or_default();
            let mut metadata = Map::new();
            metadata.insert("purpose".into(), json!(name));
            metadata.insert("pending".into(), json!(true));
            parts.push(Part::Pending { metadata });
        }
    });
    parts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_markers_split_messages_and_blank_ones_retarget() {
        let messages = to_messages("<<<dotprompt:role:system>>>sys\n<<<dotprompt:role:user>>>hi", &[]);
        assert_eq!(messages.len(), 2);
        assert_eq!(messages[0].role, Role::System);
        assert_eq!(messages[0].text(), "sys\n");
        assert_eq!(messages[1].text(), "hi");
    }

    #[test]
    fn history_goes_before_the_last_user_message() {
        let history = vec![Message { role: Role::Model, content: vec![Part::text("earlier")], metadata: None }];
        let messages = to_messages("<<<dotprompt:role:system>>>s<<<dotprompt:role:user>>>u", &history);
        let roles: Vec<_> = messages.iter().map(|m| m.role).collect();
        assert_eq!(roles, [Role::System, Role::Model, Role::User]);
    }

    /// The split as first written: every prefix searched again from each marker on.
    fn split_by_rescanning(text: &str, prefixes: &[&str]) -> Vec<(bool, String)> {
        let mut out = Vec::new();
        let mut rest = text;
        let mut push = |m: bool, p: &str| {
            if !p.trim().is_empty() {
                out.push((m, p.to_string()));
            }
        };
        loop {
            let next = prefixes.iter().filter_map(|p| rest.find(p).map(|i| (i, *p))).min_by_key(|(i, _)| *i);
            let Some((at, prefix)) = next else { break push(false, rest) };
            let Some(close) = rest[at + prefix.len()..].find(">>>") else { break push(false, rest) };
            let end = at + prefix.len() + close;
            push(false, &rest[..at]);
            push(true, &rest[at..end]);
            rest = &rest[end + 3..];
        }
        out
    }

    #[test]
    fn markers_split_as_a_fresh_search_from_each_marker_would() {
        // Markers inside markers, unclosed ones, one prefix far behind the other, blank pieces.
        let pieces = [
            "<<<dotprompt:role:user>>>",
            "<<<dotprompt:history>>>",
            "<<<dotprompt:role:<<<dotprompt:history>>>",
            "text ",
            " ",
            ">>>",
            "<<<dotprompt:role:",
            "<<<dotprompt:history",
        ];
        let prefixes = [ROLE_MARKER, HISTORY_MARKER.trim_end_matches(">>>")];
        let mut state = 7u64;
        for _ in 0..400 {
            let mut text = String::new();
            for _ in 0..(state % 12) {
                state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                text.push_str(pieces[(state >> 33) as usize % pieces.len()]);
            }
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let mut split = Vec::new();
            split_markers(&text, &prefixes, |m, p| split.push((m, p.to_string())));
            assert_eq!(split, split_by_rescanning(&text, &prefixes), "{text:?}");
        }
        // Thousands of role markers and a history marker only at the end.
        let text = format!("{}<<<dotprompt:history>>>", "<<<dotprompt:role:user>>>x".repeat(5000));
        let messages = to_messages(&text, &[]);
        assert_eq!(messages.len(), 5000);
        assert!(messages.iter().all(|m| m.role == Role::User && m.text() == "x"));
    }

    #[test]
    fn media_and_sections_become_parts() {
        let parts = to_parts("a<<<dotprompt:media:url http://x/y.png image/png>>>b<<<dotprompt:section out>>>");
        assert_eq!(parts.len(), 4);
        assert!(matches!(&parts[1], Part::Media { media, .. } if media.content_type.as_deref() == Some("image/png")));
        assert!(matches!(&parts[3], Part::Pending { metadata } if metadata["purpose"] == "out"));
    }
}
