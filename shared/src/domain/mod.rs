//! Validated domain types, built at the edge and trusted inside.
//!
//! [`IncomingMessage::parse`] turns a request body into a message or a `400`
//! naming the first bad field (`413` for oversized content). Nothing is written
//! anywhere before it succeeds, so a rejected request changes nothing.

mod action_status;
mod conversation;
mod frame;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

pub use action_status::ActionStatus;
pub use conversation::{ContextEntry, OwedMessage, Snapshot};
pub use frame::{Frame, FrameError, MAX_CLIENT_MESSAGE_ID_BYTES, MAX_FRAME_BYTES};

use crate::error::AppError;

/// Longest accepted identifier, in bytes: ids are Redis key parts and URL segments.
pub const MAX_ID_BYTES: usize = 256;

fn parse_id(field: &'static str, value: Option<&Value>) -> Result<String, AppError> {
    let s = match value {
        None | Some(Value::Null) => return Err(AppError::invalid(field, "is required")),
        Some(Value::String(s)) => s,
        // Only an integer JSON can carry exactly: a larger one arrives as a
        // float, and two different ids would round to the same one.
        Some(Value::Number(n)) if n.is_i64() || n.is_u64() => {
            return parse_id(field, Some(&Value::String(n.to_string())));
        }
        Some(Value::Number(_)) => {
            return Err(AppError::invalid(field, "must be a string (numbers only as exact integers up to 2^64)"));
        }
        Some(_) => return Err(AppError::invalid(field, "must be a string")),
    };
    if s.is_empty() {
        return Err(AppError::invalid(field, "must not be empty"));
    }
    if s.len() > MAX_ID_BYTES {
        return Err(AppError::invalid(field, format!("must be at most {MAX_ID_BYTES} bytes")));
    }
    if s.chars().any(char::is_control) {
        return Err(AppError::invalid(field, "must not contain control characters"));
    }
    // Ids are URL path segments (Pancake's API): a URL library drops these.
    if s == "." || s == ".." {
        return Err(AppError::invalid(field, "must not be . or .."));
    }
    Ok(s.clone())
}

/// `400` naming `field` unless `value` is a valid id (non-empty, at most
/// [`MAX_ID_BYTES`], no control characters, not `.` or `..`): the rule for
/// every id that becomes part of a key, a URL or a row.
pub fn check_id(field: &'static str, value: &str) -> Result<(), AppError> {
    parse_id(field, Some(&Value::String(value.to_owned()))).map(drop)
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $field:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// Non-empty, at most [`MAX_ID_BYTES`], no control characters.
            pub fn parse(value: &str) -> Result<Self, AppError> {
                parse_id($field, Some(&Value::String(value.to_owned()))).map(Self)
            }
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

id_type!(
    /// A Pancake conversation id; every Redis key of a conversation hashes on it.
    ConversationId,
    "conversation_id"
);
id_type!(
    /// A message id as the sender assigned it; the dedupe key.
    MessageId,
    "message_id"
);

/// Who wrote a message. Only customer messages are answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SenderType {
    /// Seed 001's name for the customer.
    User,
    Customer,
    /// A human agent of the shop: their message pauses the bot.
    Agent,
    Bot,
    System,
}

impl SenderType {
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "user" => Self::User,
            "customer" => Self::Customer,
            "agent" => Self::Agent,
            "bot" => Self::Bot,
            "system" => Self::System,
            _ => return None,
        })
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Self::User => "user",
            Self::Customer => "customer",
            Self::Agent => "agent",
            Self::Bot => "bot",
            Self::System => "system",
        }
    }
    /// Messages that ask for an answer.
    pub fn is_customer(self) -> bool {
        matches!(self, Self::User | Self::Customer)
    }
}

/// Web chat conversations (opened by `POST /api/v1/chat/sessions`) are
/// named `web-…`: they belong to no Pancake page.
pub const WEB_CONVERSATION_PREFIX: &str = "web-";

/// Whether a conversation is a web chat's (no page, nothing sent to Pancake).
pub fn is_web_conversation(conversation: &ConversationId) -> bool {
    conversation.as_str().starts_with(WEB_CONVERSATION_PREFIX)
}

/// The page a conversation's answers go to: `known`, else the assistant's
/// first page; `None` for a web chat conversation.
pub fn delivery_page(
    conversation: &ConversationId,
    known: Option<String>,
    assistant_pages: &[String],
) -> Option<String> {
    if is_web_conversation(conversation) {
        return None;
    }
    known.or_else(|| assistant_pages.first().cloned())
}

/// A message admitted at the edge: every field valid.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IncomingMessage {
    pub conversation_id: ConversationId,
    pub message_id: MessageId,
    pub message_content: String,
    pub sender_id: String,
    pub sender_type: SenderType,
    /// Float epoch seconds, as the sender stamped it (may arrive out of order).
    pub timestamp: f64,
    pub metadata: Map<String, Value>,
}

impl IncomingMessage {
    /// Parses and validates a seed-001 request body.
    pub fn parse(body: &[u8], max_content_bytes: usize) -> Result<Self, AppError> {
        let value: Value =
            serde_json::from_slice(body).map_err(|e| AppError::invalid("body", format!("malformed JSON: {e}")))?;
        let Value::Object(map) = value else {
            return Err(AppError::invalid("body", "must be a JSON object"));
        };
        let message_content = match map.get("message_content") {
            None | Some(Value::Null) => return Err(AppError::invalid("message_content", "is required")),
            Some(Value::String(s)) => s.clone(),
            Some(_) => return Err(AppError::invalid("message_content", "must be a string")),
        };
        if message_content.len() > max_content_bytes {
            return Err(AppError::TooLarge { field: "message_content", limit: max_content_bytes });
        }
        // Postgres text cannot hold NUL: refuse it here rather than fail in the consumer.
        if message_content.contains('\0') {
            return Err(AppError::invalid("message_content", "must not contain NUL characters"));
        }
        let conversation_id = ConversationId(parse_id("conversation_id", map.get("conversation_id"))?);
        let message_id = MessageId(parse_id("message_id", map.get("message_id"))?);
        let sender_id = parse_id("sender_id", map.get("sender_id"))?;
        let sender_type = match map.get("sender_type") {
            None | Some(Value::Null) => return Err(AppError::invalid("sender_type", "is required")),
            Some(Value::String(s)) => SenderType::parse(s)
                .ok_or_else(|| AppError::invalid("sender_type", "must be one of user, customer, agent, bot, system"))?,
            Some(_) => return Err(AppError::invalid("sender_type", "must be a string")),
        };
        let timestamp = match map.get("timestamp") {
            None | Some(Value::Null) => return Err(AppError::invalid("timestamp", "is required")),
            Some(Value::Number(n)) => n.as_f64().filter(|t| t.is_finite() && *t >= 0.0).ok_or_else(|| {
                AppError::invalid("timestamp", "must be a finite, non-negative number of epoch seconds")
            })?,
            Some(_) => return Err(AppError::invalid("timestamp", "must be a number of epoch seconds")),
        };
        check_not_ahead("timestamp", timestamp)?;
        let metadata = match map.get("metadata") {
            None | Some(Value::Null) => Map::new(),
            Some(Value::Object(m)) => m.clone(),
            Some(_) => return Err(AppError::invalid("metadata", "must be an object")),
        };
        if contains_nul(&Value::Object(metadata.clone())) {
            return Err(AppError::invalid("metadata", "must not contain NUL characters"));
        }
        for key in ["page_id", "assistant_id"] {
            match metadata.get(key) {
                None | Some(Value::Null) => {}
                Some(v) => {
                    parse_id(if key == "page_id" { "metadata.page_id" } else { "metadata.assistant_id" }, Some(v))?;
                }
            }
        }
        Ok(Self { conversation_id, message_id, message_content, sender_id, sender_type, timestamp, metadata })
    }

    /// `metadata.page_id`, the Pancake page this conversation belongs to.
    pub fn page_id(&self) -> Option<String> {
        metadata_id(&self.metadata, "page_id")
    }

    /// The page an answer to this message is delivered to: its own, else
    /// the assistant's first — never for a web chat conversation, which
    /// lives on no page (its answers reach the customer's socket only).
    pub fn delivery_page(&self, assistant_pages: &[String]) -> Option<String> {
        delivery_page(&self.conversation_id, self.page_id(), assistant_pages)
    }

    pub fn assistant_id(&self) -> Option<String> {
        metadata_id(&self.metadata, "assistant_id")
    }
}

/// How far ahead of the server's clock a message may be stamped. Older
/// timestamps are accepted (seed 001's own example is from 2023; a late
/// message is placed in the context by its time), but a future one would
/// stay the conversation's "last message" and push every answer after it.
pub const MAX_AHEAD_SECS: f64 = 24.0 * 3600.0;

/// `400` naming `field` for a timestamp more than [`MAX_AHEAD_SECS`] ahead.
pub fn check_not_ahead(field: &'static str, timestamp: f64) -> Result<(), AppError> {
    if timestamp > crate::clock::now_epoch_seconds() + MAX_AHEAD_SECS {
        return Err(AppError::invalid(field, "must not be more than one day ahead of the server's clock"));
    }
    Ok(())
}

/// Whether any string (or key) in `value` holds a NUL character, which
/// Postgres `text` and `jsonb` refuse.
pub fn contains_nul(value: &Value) -> bool {
    match value {
        Value::String(s) => s.contains('\0'),
        Value::Array(items) => items.iter().any(contains_nul),
        Value::Object(map) => map.iter().any(|(k, v)| k.contains('\0') || contains_nul(v)),
        _ => false,
    }
}

/// `value` with every NUL character removed (for what outside services send us).
pub fn strip_nul(value: Value) -> Value {
    match value {
        Value::String(s) if s.contains('\0') => Value::String(s.replace('\0', "")),
        Value::Array(items) => Value::Array(items.into_iter().map(strip_nul).collect()),
        Value::Object(map) => {
            Value::Object(map.into_iter().map(|(k, v)| (k.replace('\0', ""), strip_nul(v))).collect())
        }
        other => other,
    }
}

fn metadata_id(metadata: &Map<String, Value>, key: &str) -> Option<String> {
    match metadata.get(key)? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// An assistant's configuration (Postgres `assistants`): what the AI is told
/// and which pages it serves.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Assistant {
    pub id: String,
    pub name: String,
    pub system_prompt: String,
    pub model: String,
    pub temperature: f32,
    pub page_ids: Vec<String>,
    /// Fields `collect_info` gathers (the assistant's schema).
    pub collect_info_fields: Vec<String>,
    pub answer_cache_enabled: bool,
    pub config_version: i64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn parse(v: Value) -> Result<IncomingMessage, AppError> {
        IncomingMessage::parse(v.to_string().as_bytes(), 64 * 1024)
    }

    fn valid() -> Value {
        json!({"conversation_id": "c", "message_id": "m", "message_content": "hi",
               "sender_id": "u", "sender_type": "user", "timestamp": 1.5})
    }

    fn field_of(err: AppError) -> &'static str {
        match err {
            AppError::InvalidField { field, .. } | AppError::TooLarge { field, .. } => field,
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn each_bad_field_is_named() {
        let cases: Vec<(&str, Value, &str)> = vec![
            ("conversation_id", json!(""), "conversation_id"),
            ("message_id", Value::Null, "message_id"),
            ("message_id", json!("a".repeat(257)), "message_id"),
            ("conversation_id", json!("bad\nid"), "conversation_id"),
            ("sender_type", json!("robot"), "sender_type"),
            ("timestamp", json!("yesterday"), "timestamp"),
            ("metadata", json!([1]), "metadata"),
        ];
        for (key, value, field) in cases {
            let mut body = valid();
            body[key] = value;
            assert_eq!(field_of(parse(body).unwrap_err()), field, "{key}");
        }
    }

    #[test]
    fn oversized_content_is_too_large() {
        let mut body = valid();
        body["message_content"] = json!("x".repeat(64 * 1024 + 1));
        assert!(matches!(parse(body).unwrap_err(), AppError::TooLarge { field: "message_content", .. }));
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = IncomingMessage::parse(&bytes, 64 * 1024);
        }
    }
}
