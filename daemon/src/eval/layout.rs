//! From rendered messages to the text the model reads: through the model's chat template
//! (`reprompt.format: chat`, roles as turns) or as plain text (`reprompt.format: plain`).
//!
//! A trailing `model` message is an answer prefix: the text the model's turn starts with.

use reprompt_protocol::messages::{Message, Role};
use reprompt_protocol::settings::Format;

use crate::engine::tokenizer::{LITERAL_CLOSE, LITERAL_OPEN, literal};
use crate::engine::{ChatTurn, Runtime};

/// The model's turns for Dotprompt messages (`model` is the model's `assistant`), each text
/// trimmed, plus the answer prefix if the last message is the model's.
pub fn chat_turns(messages: &[Message]) -> (Vec<ChatTurn>, Option<String>) {
    let mut turns: Vec<ChatTurn> = messages
        .iter()
        .map(|m| {
            let role = match m.role {
                Role::System => "system",
                Role::User => "user",
                Role::Model => "assistant",
                Role::Tool => "tool",
            };
            ChatTurn::new(role, m.text().trim())
        })
        .collect();
    let prefix = match messages.last() {
        Some(m) if m.role == Role::Model && messages.len() > 1 => turns.pop().map(|t| t.content),
        _ => None,
    };
    (turns, prefix)
}

/// The model input for one rendered prompt. The prompt's text is [`literal`]: written by the
/// author and the data, it never spells a special token (only the chat template does).
pub fn model_text(runtime: &Runtime, messages: &[Message], format: Format) -> crate::engine::Result<String> {
    match format {
        Format::Plain => Ok(literal(&messages.iter().map(Message::text).collect::<String>())),
        Format::Chat => {
            let (turns, prefix) = chat_turns(messages);
            let mut text = runtime.chat_prompt(&turns, true)?;
            if let Some(prefix) = prefix {
                text.push_str(&literal(&prefix));
            }
            Ok(text)
        }
    }
}

/// The continuation as the model would write it after `context`: a word after text that ends
/// in a non-space character gets a leading space.
pub fn answer_after(context: &str, answer: &str) -> String {
    let context = context.trim_end_matches([LITERAL_OPEN, LITERAL_CLOSE]);
    if context.is_empty() || context.ends_with(char::is_whitespace) || answer.starts_with(char::is_whitespace) {
        answer.to_string()
    } else {
        format!(" {answer}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reprompt_protocol::messages::Part;

    fn message(role: Role, text: &str) -> Message {
        Message { role, content: vec![Part::text(text)], metadata: None }
    }

    #[test]
    fn roles_map_to_turns_and_a_last_model_message_is_a_prefix() {
        let (turns, prefix) = chat_turns(&[
            message(Role::System, "\nBe brief.\n"),
            message(Role::User, "Hi"),
            message(Role::Model, "Answer:"),
        ]);
        assert_eq!(turns, [ChatTurn::new("system", "Be brief."), ChatTurn::new("user", "Hi")]);
        assert_eq!(prefix.as_deref(), Some("Answer:"));
    }

    #[test]
    fn answers_get_a_space_after_words() {
        assert_eq!(answer_after("Sentiment:", "great"), " great");
        assert_eq!(answer_after("assistant\n", "great"), "great");
        // Literal marks are not text: what counts is the last character the model reads.
        assert_eq!(answer_after(&literal("Sentiment:\n"), "great"), "great");
        assert_eq!(answer_after(&literal("Sentiment:"), "great"), " great");
        assert_eq!(answer_after(&literal(""), "great"), "great");
    }
}
