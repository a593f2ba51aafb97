//! Live chat's inbound WebSocket frames, validated: JSON objects naming an
//! `action` (API Gateway's route selection is `$request.body.action`) and,
//! for every action but `ping`, a `conversation_id`. [`Frame::parse`]
//! never panics: anything else is a [`FrameError`] the sender gets back as
//! an error frame, and the connection stays open.

use serde_json::{Map, Value};

use super::{ConversationId, check_id};

/// API Gateway refuses WebSocket frames above 128 KB; so do we.
pub const MAX_FRAME_BYTES: usize = 128 * 1024;
/// A `client_message_id` is part of a message id (`web:<id>`), so shorter than an id.
pub const MAX_CLIENT_MESSAGE_ID_BYTES: usize = 128;

/// One valid inbound frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// `message` is the text; `client_message_id` makes a resend a duplicate.
    SendMessage {
        conversation_id: ConversationId,
        message: String,
        client_message_id: String,
    },
    Subscribe {
        conversation_id: ConversationId,
    },
    Unsubscribe {
        conversation_id: ConversationId,
    },
    ResumeBot {
        conversation_id: ConversationId,
    },
    Typing {
        conversation_id: ConversationId,
        typing: bool,
    },
    Ping,
}

/// Why a frame was refused: sent back as `{"type": "error", "code", "message", "field"}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameError {
    pub code: &'static str,
    pub field: Option<&'static str>,
    pub message: String,
}

impl FrameError {
    fn invalid(field: &'static str, message: impl Into<String>) -> Self {
        Self { code: "invalid_frame", field: Some(field), message: message.into() }
    }
}

impl Frame {
    /// Parses one frame; `max_text_bytes` bounds a message's text (64 KiB,
    /// as for every other message).
    pub fn parse(body: &[u8], max_text_bytes: usize) -> Result<Self, FrameError> {
        if body.len() > MAX_FRAME_BYTES {
            return Err(FrameError {
                code: "payload_too_large",
                field: None,
                message: format!("frames are limited to {MAX_FRAME_BYTES} bytes"),
            });
        }
        let value: Value = serde_json::from_slice(body).map_err(|_| FrameError {
            code: "invalid_frame",
            field: None,
            message: "a frame is a JSON object".into(),
        })?;
        let Value::Object(object) = value else {
            return Err(FrameError { code: "invalid_frame", field: None, message: "a frame is a JSON object".into() });
        };
        let action = match object.get("action") {
            Some(Value::String(action)) => action.as_str(),
            Some(_) => return Err(FrameError::invalid("action", "must be a string")),
            None => return Err(FrameError::invalid("action", "is required")),
        };
        match action {
            "ping" => Ok(Self::Ping),
            "sendMessage" => {
                let message = text(&object, "message", max_text_bytes)?;
                let client_message_id = match object.get("client_message_id") {
                    Some(Value::String(id)) if id.len() <= MAX_CLIENT_MESSAGE_ID_BYTES => {
                        check_id("client_message_id", id)
                            .map_err(|_| FrameError::invalid("client_message_id", "must be a valid id"))?;
                        id.clone()
                    }
                    Some(Value::String(_)) => {
                        return Err(FrameError::invalid(
                            "client_message_id",
                            format!("must be at most {MAX_CLIENT_MESSAGE_ID_BYTES} bytes"),
                        ));
                    }
                    Some(_) => return Err(FrameError::invalid("client_message_id", "must be a string")),
                    None => {
                        return Err(FrameError::invalid(
                            "client_message_id",
                            "is required (it makes a resend harmless)",
                        ));
                    }
                };
                Ok(Self::SendMessage { conversation_id: conversation(&object)?, message, client_message_id })
            }
            "subscribe" => Ok(Self::Subscribe { conversation_id: conversation(&object)? }),
            "unsubscribe" => Ok(Self::Unsubscribe { conversation_id: conversation(&object)? }),
            "resumeBot" => Ok(Self::ResumeBot { conversation_id: conversation(&object)? }),
            "typing" => {
                let typing = match object.get("typing") {
                    None => true,
                    Some(Value::Bool(typing)) => *typing,
                    Some(_) => return Err(FrameError::invalid("typing", "must be true or false")),
                };
                Ok(Self::Typing { conversation_id: conversation(&object)?, typing })
            }
            _ => Err(FrameError {
                code: "unknown_action",
                field: Some("action"),
                message: "must be sendMessage, subscribe, unsubscribe, resumeBot, typing or ping".into(),
            }),
        }
    }

    /// The action's name, as clients send it.
    pub fn action(&self) -> &'static str {
        match self {
            Self::SendMessage { .. } => "sendMessage",
            Self::Subscribe { .. } => "subscribe",
            Self::Unsubscribe { .. } => "unsubscribe",
            Self::ResumeBot { .. } => "resumeBot",
            Self::Typing { .. } => "typing",
            Self::Ping => "ping",
        }
    }
}

fn conversation(object: &Map<String, Value>) -> Result<ConversationId, FrameError> {
    match object.get("conversation_id") {
        Some(Value::String(id)) => {
            ConversationId::parse(id).map_err(|_| FrameError::invalid("conversation_id", "must be a valid id"))
        }
        Some(_) => Err(FrameError::invalid("conversation_id", "must be a string")),
        None => Err(FrameError::invalid("conversation_id", "is required")),
    }
}

fn text(object: &Map<String, Value>, field: &'static str, max_bytes: usize) -> Result<String, FrameError> {
    match object.get(field) {
        Some(Value::String(text)) if text.trim().is_empty() => Err(FrameError::invalid(field, "must not be empty")),
        Some(Value::String(text)) if text.len() > max_bytes => Err(FrameError {
            code: "payload_too_large",
            field: Some(field),
            message: format!("must be at most {max_bytes} bytes"),
        }),
        Some(Value::String(text)) if text.contains('\0') => Err(FrameError::invalid(field, "must not contain NUL")),
        Some(Value::String(text)) => Ok(text.clone()),
        Some(_) => Err(FrameError::invalid(field, "must be a string")),
        None => Err(FrameError::invalid(field, "is required")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn parse(value: Value) -> Result<Frame, FrameError> {
        Frame::parse(&serde_json::to_vec(&value).unwrap(), 64 * 1024)
    }

    #[test]
    fn a_send_names_its_conversation_text_and_client_id() {
        let frame = parse(
            json!({"action": "sendMessage", "conversation_id": "c1", "message": "hi", "client_message_id": "m1"}),
        );
        assert_eq!(
            frame,
            Ok(Frame::SendMessage {
                conversation_id: ConversationId::parse("c1").unwrap(),
                message: "hi".into(),
                client_message_id: "m1".into()
            })
        );
    }

    #[test]
    fn each_bad_field_is_named() {
        let field = |v: Value| parse(v).unwrap_err().field;
        assert_eq!(field(json!({"conversation_id": "c"})), Some("action"));
        assert_eq!(field(json!({"action": "subscribe"})), Some("conversation_id"));
        assert_eq!(
            field(json!({"action": "sendMessage", "conversation_id": "c", "client_message_id": "m"})),
            Some("message")
        );
        assert_eq!(
            field(json!({"action": "sendMessage", "conversation_id": "c", "message": "x"})),
            Some("client_message_id")
        );
        assert_eq!(parse(json!({"action": "dance"})).unwrap_err().code, "unknown_action");
        assert_eq!(parse(json!([1])).unwrap_err().code, "invalid_frame");
    }

    #[test]
    fn frames_over_128_kb_are_refused_before_parsing() {
        let body = vec![b' '; MAX_FRAME_BYTES + 1];
        assert_eq!(Frame::parse(&body, 64 * 1024).unwrap_err().code, "payload_too_large");
    }

    proptest! {
        #[test]
        fn any_bytes_parse_or_give_an_error_frame(body in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = Frame::parse(&body, 64 * 1024);
        }

        #[test]
        fn any_json_object_parses_or_names_a_field(
            action in prop_oneof![Just("sendMessage".to_owned()), Just("subscribe".to_owned()), Just("typing".to_owned()), Just("ping".to_owned()), "\\PC{0,12}"],
            conversation in proptest::option::of("\\PC{0,300}"),
            message in proptest::option::of("\\PC{0,64}"),
            client in proptest::option::of("\\PC{0,200}"),
        ) {
            let mut object = json!({"action": action});
            if let Some(c) = &conversation { object["conversation_id"] = json!(c); }
            if let Some(m) = &message { object["message"] = json!(m); }
            if let Some(c) = &client { object["client_message_id"] = json!(c); }
            match parse(object) {
                Ok(frame) => prop_assert_eq!(frame.action(), action.as_str()),
                Err(error) => prop_assert!(!error.message.is_empty()),
            }
        }

        #[test]
        fn a_valid_send_round_trips(conversation in "[a-z0-9-]{1,64}", text in "\\PC{1,200}", client in "[a-z0-9]{1,64}") {
            prop_assume!(!text.trim().is_empty());
            let frame = parse(json!({"action": "sendMessage", "conversation_id": conversation, "message": text, "client_message_id": client})).unwrap();
            prop_assert_eq!(frame, Frame::SendMessage {
                conversation_id: ConversationId::parse(&conversation).unwrap(), message: text, client_message_id: client });
        }
    }
}
