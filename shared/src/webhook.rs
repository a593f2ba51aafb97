//! `POST /api/v1/pancake/webhook?token=…`: Pancake's own webhook
//! (`../shared/reference/pancake/webhook.yaml`), acknowledged in milliseconds.
//!
//! Pancake suspends a webhook whose deliveries fail (non-2xx or slow), so this
//! handler does one Redis round trip and answers `200`; the answer itself is
//! produced by the background consumer (`process_conversation` job). Only a
//! wrong token (`401`) or a malformed payload (`400`, nothing stored) is
//! refused; a rate-limited or paused conversation is still a `200`.
//!
//! - `messaging` from a customer (INBOX): admitted with the same admit script
//!   as `enhanced-handle-message` (dedupe by Pancake's message id, so a
//!   re-delivered webhook changes nothing) and queued for an answer.
//! - `messaging` sent by the page: the echo of one of our replies is ignored
//!   (recognised by Pancake's message id, or by the text's digest when the
//!   echo outruns Pancake's answer to our send); anything else is a human
//!   agent replying, so the bot pauses for that conversation.
//! - `messaging` of type COMMENT: acknowledged and ignored (public comment
//!   replies are a different Pancake action, not built).
//! - `conversation`: assignment changes in `version` order (older versions
//!   ignored); assigned to a human pauses the bot, unassigned resumes it.
//! - other event types: acknowledged and ignored.

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use serde_json::{Map, Value, json};

use crate::{
    App,
    auth::secrets_match,
    clock::now_epoch_seconds,
    dates::parse_utc,
    domain::{ConversationId, IncomingMessage, MessageId, SenderType, check_id, check_not_ahead},
    error::{AppError, AuthFailure},
    jobs::UpdateConversation,
    pipeline,
    redis::Admission,
    response::json_response,
};

/// More assignees than any shop has staff on one conversation: refused.
const MAX_ASSIGNEES: usize = 100;

/// The `token` query parameter, percent-decoded.
fn query_token(request: &Request<Bytes>) -> Option<String> {
    let query = request.uri().query()?;
    let url = reqwest::Url::parse(&format!("http://localhost/?{query}")).ok()?;
    url.query_pairs().find(|(k, _)| k == "token").map(|(_, v)| v.into_owned())
}

pub async fn pancake_webhook(app: &App, request: &Request<Bytes>) -> Result<Response<Bytes>, AppError> {
    let refused = |reason| AppError::BadWebhookToken { reason };
    let expected = app.config.pancake_webhook_secret.as_ref().ok_or(refused(AuthFailure::NotConfigured))?;
    let given = query_token(request).ok_or(refused(AuthFailure::Missing))?;
    if !secrets_match(given.as_bytes(), expected.expose().as_bytes()) {
        return Err(refused(AuthFailure::Wrong));
    }
    let event = parse(request.body(), app.config.max_message_bytes)?;
    let (event_type, status) = match event {
        Event::Message(message) => ("messaging", messaging(app, *message).await?),
        Event::Conversation(update) => ("conversation", conversation(app, update).await?),
        Event::Ignored { event_type } => {
            crate::metrics::handled("ignored");
            return Ok(json_response(
                StatusCode::OK,
                &json!({ "success": true, "event_type": event_type, "status": "ignored" }),
            ));
        }
    };
    crate::metrics::handled(status);
    Ok(json_response(StatusCode::OK, &json!({ "success": true, "event_type": event_type, "status": status })))
}

/// A webhook payload, validated.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Message(Box<PageMessage>),
    Conversation(ConversationUpdate),
    /// Another event type: acknowledged, nothing to do.
    Ignored {
        event_type: String,
    },
}

/// A `messaging` event's message.
#[derive(Debug, Clone, PartialEq)]
pub struct PageMessage {
    pub page_id: String,
    pub message: IncomingMessage,
    /// Sent by the page (ours or a human agent's), not by the customer.
    pub sent_by_page: bool,
    pub message_type: String,
}

/// A `conversation` event.
#[derive(Debug, Clone, PartialEq)]
pub struct ConversationUpdate {
    pub page_id: String,
    pub conversation: ConversationId,
    pub version: i64,
    pub assignees: Vec<String>,
}

fn str_at<'a>(value: &'a Value, pointer: &str) -> Option<&'a str> {
    value.pointer(pointer).and_then(Value::as_str).filter(|s| !s.is_empty())
}

fn required<'a>(value: &'a Value, pointer: &str, field: &'static str) -> Result<&'a str, AppError> {
    match value.pointer(pointer) {
        Some(Value::String(s)) if !s.is_empty() => Ok(s),
        None | Some(Value::Null) => Err(AppError::invalid(field, "is required")),
        Some(_) => Err(AppError::invalid(field, "must be a non-empty string")),
    }
}

/// Parses and validates a webhook body: `400` naming the field, `413` for
/// oversized text. Pure: nothing is read or written.
pub fn parse(body: &[u8], max_content_bytes: usize) -> Result<Event, AppError> {
    let payload: Value =
        serde_json::from_slice(body).map_err(|e| AppError::invalid("body", format!("malformed JSON: {e}")))?;
    if crate::domain::contains_nul(&payload) {
        return Err(AppError::invalid("body", "must not contain NUL characters"));
    }
    let event_type = payload
        .get("event_type")
        .and_then(Value::as_str)
        .ok_or_else(|| AppError::invalid("event_type", "is required"))?;
    match event_type {
        "messaging" => parse_message(&payload, max_content_bytes).map(|m| Event::Message(Box::new(m))),
        "conversation" => parse_conversation(&payload).map(Event::Conversation),
        other => Ok(Event::Ignored { event_type: other.to_owned() }),
    }
}

/// The event's page: an id like every other (it becomes a key and a URL segment).
fn page_id(payload: &Value) -> Result<&str, AppError> {
    let page_id = required(payload, "/page_id", "page_id")?;
    check_id("page_id", page_id)?;
    Ok(page_id)
}

fn parse_message(payload: &Value, max_content_bytes: usize) -> Result<PageMessage, AppError> {
    let page_id = page_id(payload)?;
    if !payload.pointer("/data/message").is_some_and(Value::is_object) {
        return Err(AppError::invalid("data.message", "is required"));
    }
    let message_id = MessageId::parse(required(payload, "/data/message/id", "data.message.id")?)
        .map_err(|_| AppError::invalid("data.message.id", "must be a valid id"))?;
    let conversation = str_at(payload, "/data/message/conversation_id")
        .or_else(|| str_at(payload, "/data/conversation/id"))
        .ok_or_else(|| AppError::invalid("data.message.conversation_id", "is required"))?;
    let conversation = ConversationId::parse(conversation)
        .map_err(|_| AppError::invalid("data.message.conversation_id", "must be a valid id"))?;
    let from = required(payload, "/data/message/from/id", "data.message.from.id")?;
    let text = match payload.pointer("/data/message/message") {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(_) => return Err(AppError::invalid("data.message.message", "must be a string")),
    };
    let attachments = payload.pointer("/data/message/attachments").and_then(Value::as_array).map_or(0, Vec::len);
    let content =
        if text.trim().is_empty() && attachments > 0 { format!("[{attachments} attachment(s)]") } else { text };
    if content.len() > max_content_bytes {
        return Err(AppError::TooLarge { field: "data.message.message", limit: max_content_bytes });
    }
    let timestamp = match payload.pointer("/data/message/inserted_at") {
        None | Some(Value::Null) => now_epoch_seconds(),
        Some(Value::String(s)) => parse_utc(s)
            .ok_or_else(|| AppError::invalid("data.message.inserted_at", "must be an ISO 8601 date-time"))?,
        Some(_) => return Err(AppError::invalid("data.message.inserted_at", "must be a string")),
    };
    check_not_ahead("data.message.inserted_at", timestamp)?;
    let message_type = str_at(payload, "/data/message/type").unwrap_or("INBOX").to_owned();
    let customer = str_at(payload, "/data/conversation/from/id");
    let sent_by_page = from == page_id
        || str_at(payload, "/data/message/page_id") == Some(from)
        || customer.is_some_and(|c| c != from);
    let mut metadata = Map::new();
    metadata.insert("page_id".into(), json!(page_id));
    metadata.insert("platform".into(), json!("pancake"));
    metadata.insert("message_type".into(), json!(message_type));
    if let Some(name) = str_at(payload, "/data/message/from/name") {
        metadata.insert("sender_name".into(), json!(name));
    }
    if let Some(id) = str_at(payload, "/data/message/from/page_customer_id") {
        metadata.insert("page_customer_id".into(), json!(id));
    }
    let sender_id =
        MessageId::parse(from).map_err(|_| AppError::invalid("data.message.from.id", "must be a valid id"))?;
    Ok(PageMessage {
        page_id: page_id.to_owned(),
        message: IncomingMessage {
            conversation_id: conversation,
            message_id,
            message_content: content,
            sender_id: sender_id.to_string(),
            sender_type: if sent_by_page { SenderType::Agent } else { SenderType::Customer },
            timestamp,
            metadata,
        },
        sent_by_page,
        message_type,
    })
}

fn parse_conversation(payload: &Value) -> Result<ConversationUpdate, AppError> {
    let page_id = page_id(payload)?;
    let id = required(payload, "/data/conversation/id", "data.conversation.id")?;
    let conversation =
        ConversationId::parse(id).map_err(|_| AppError::invalid("data.conversation.id", "must be a valid id"))?;
    let version = payload
        .pointer("/data/conversation/version")
        .and_then(Value::as_i64)
        .ok_or_else(|| AppError::invalid("data.conversation.version", "must be an integer"))?;
    let assignees: Vec<String> = match payload.pointer("/data/conversation/assignee_ids") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| v.as_str().map(String::from))
            .collect::<Option<_>>()
            .ok_or_else(|| AppError::invalid("data.conversation.assignee_ids", "must be an array of strings"))?,
        Some(_) => return Err(AppError::invalid("data.conversation.assignee_ids", "must be an array of strings")),
    };
    if assignees.len() > MAX_ASSIGNEES {
        return Err(AppError::invalid(
            "data.conversation.assignee_ids",
            format!("must hold at most {MAX_ASSIGNEES} ids"),
        ));
    }
    for assignee in &assignees {
        check_id("data.conversation.assignee_ids", assignee)?;
    }
    Ok(ConversationUpdate { page_id: page_id.to_owned(), conversation, version, assignees })
}

async fn messaging(app: &App, event: PageMessage) -> Result<&'static str, AppError> {
    let PageMessage { page_id, message, sent_by_page, message_type } = event;
    crate::metrics::conversation(message.conversation_id.as_str());
    if !sent_by_page && message_type != "INBOX" {
        return Ok("ignored_comment");
    }
    if app.store.breaker().is_open() {
        // Pancake never redelivers a refused event: with Redis away the
        // message is stored (and answered) from Postgres, not refused.
        if !app.config.degraded_mode {
            return Err(AppError::Unavailable { dependency: "redis" });
        }
        return pipeline::page::degraded_message(app, &message, sent_by_page).await;
    }
    pipeline::degraded::restore_redis(app).await;
    if sent_by_page && pipeline::page::is_echo(app, &message).await? {
        return Ok("ignored_echo");
    }
    let answer = pipeline::page::Answer::Yes { reason: "webhook" };
    Ok(match pipeline::page::admit(app, &page_id, &message, answer).await? {
        Admission::Duplicate => "duplicate",
        Admission::BotPaused if sent_by_page => "human_replied_bot_paused",
        Admission::BotPaused => "bot_paused",
        Admission::RateLimited { .. } => "rate_limited",
        Admission::Stored => "stored",
        Admission::Queued | Admission::Locked | Admission::Acquired { .. } => "queued",
    })
}

async fn conversation(app: &App, update: ConversationUpdate) -> Result<&'static str, AppError> {
    crate::metrics::conversation(update.conversation.as_str());
    let job = UpdateConversation {
        conversation_id: update.conversation.to_string(),
        page_id: Some(update.page_id),
        pancake_version: update.version,
        bot_paused: (!update.assignees.is_empty()).then_some(true),
        assignee_ids: update.assignees,
    };
    let assigned = !job.assignee_ids.is_empty();
    if app.store.breaker().is_open() && app.config.degraded_mode {
        // Redis away: the event goes straight to Postgres (an assignment
        // pauses the bot there, and degraded mode honours it).
        pipeline::page::degraded_update(app, &job).await?;
        return Ok(if assigned { "assigned_bot_paused" } else { "applied" });
    }
    let job_json = serde_json::to_string(&job).map_err(|_| AppError::Internal)?;
    let applied = app.store.conversation_event(&update.conversation, update.version, assigned, &job_json).await?;
    Ok(match applied.as_str() {
        "stale" => "ignored_stale_version",
        "paused" => "assigned_bot_paused",
        "resumed" => "unassigned_bot_resumed",
        _ => "applied",
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic_the_parser(bytes in proptest::collection::vec(any::<u8>(), 0..1024)) {
            let _ = parse(&bytes, 65_536);
        }

        #[test]
        fn arbitrary_json_shapes_never_panic_the_parser(
            event_type in prop_oneof![
                Just("messaging".to_owned()),
                Just("conversation".to_owned()),
                Just("post".to_owned()),
                ".*"
            ],
            id in ".{0,300}",
            text in ".{0,64}",
            version in any::<i64>(),
            inserted in ".{0,40}",
        ) {
            let body = json!({
                "event_type": event_type, "page_id": id,
                "data": {"message": {"id": id, "conversation_id": id, "message": text, "inserted_at": inserted,
                                     "from": {"id": text}},
                         "conversation": {"id": id, "version": version, "assignee_ids": [text]}}
            });
            let _ = parse(body.to_string().as_bytes(), 65_536);
        }
    }

    #[test]
    fn the_reference_examples_parse() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/pancake");
        for name in ["messaging", "conversation", "post", "subscription", "connect_status"] {
            let body = std::fs::read(format!("{dir}/webhook-{name}-example.json")).unwrap();
            assert!(parse(&body, 65_536).is_ok(), "{name}");
        }
    }
}
