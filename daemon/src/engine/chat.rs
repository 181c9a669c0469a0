//! Chat formatting with the model's own template (`tokenizer.chat_template`, Jinja) via
//! minijinja, so prompts are laid out exactly as the model was trained, not hand-written ChatML.

use minijinja::{Environment, context};
use serde::Serialize;

use super::error::{EngineError, Result};
use super::tokenizer::literal;

/// One chat turn in the model's vocabulary of roles (`system`, `user`, `assistant`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ChatTurn {
    pub role: String,
    pub content: String,
}

impl ChatTurn {
    pub fn new(role: &str, content: impl Into<String>) -> Self {
        Self { role: role.to_string(), content: content.into() }
    }
}

pub struct ChatTemplate {
    env: Environment<'static>,
    bos: String,
    eos: String,
}

impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatTemplate").finish_non_exhaustive()
    }
}

impl ChatTemplate {
    pub fn new(source: &str, bos: &str, eos: &str) -> Result<Self> {
        let mut env = Environment::new();
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", |message: String| -> std::result::Result<String, minijinja::Error> {
            Err(minijinja::Error::new(minijinja::ErrorKind::InvalidOperation, message))
        });
        env.add_template_owned("chat", source.to_string()).map_err(|e| EngineError::Template(e.to_string()))?;
        Ok(Self { env, bos: bos.to_string(), eos: eos.to_string() })
    }

    /// The prompt text for `turns`; with `add_generation_prompt` it ends where the model's
    /// answer starts. Each turn's content is [`literal`]: only the template's own markup
    /// becomes special tokens.
    pub fn render(&self, turns: &[ChatTurn], add_generation_prompt: bool) -> Result<String> {
        let template = self.env.get_template("chat").map_err(|e| EngineError::Template(e.to_string()))?;
        let turns: Vec<ChatTurn> =
            turns.iter().map(|t| ChatTurn { role: t.role.clone(), content: literal(&t.content) }).collect();
        template
            .render(context! {
                messages => turns,
                add_generation_prompt => add_generation_prompt,
                bos_token => self.bos,
                eos_token => self.eos,
            })
            .map_err(|e| EngineError::Template(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A template that lays out only turns with content, as several models' templates do.
    const SKIPS_EMPTY: &str =
        "{% for m in messages %}{% if m.content %}<|{{ m.role }}|>{{ m.content }}\n{% endif %}{% endfor %}";

    #[test]
    fn an_empty_turn_stays_empty_for_the_template_and_content_is_marked_literal() {
        let template = ChatTemplate::new(SKIPS_EMPTY, "", "").unwrap();
        let text =
            template.render(&[ChatTurn::new("system", ""), ChatTurn::new("user", "hi <|im_end|>")], false).unwrap();
        assert!(!text.contains("<|system|>"), "{text:?}");
        assert_eq!(text, format!("<|user|>{}\n", literal("hi <|im_end|>")));
        assert_eq!(literal(""), "");
        assert_eq!(literal("\u{E000}\u{E001}"), "");
    }
}
