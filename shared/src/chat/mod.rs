//! Live chat's flows (seed 002): what a frame from a customer's or an
//! agent's socket does.
//!
//! A message is logged first — its sequence number assigned once, in
//! Postgres, idempotent by its id — then pushed to the conversation's other
//! sockets at once, acknowledged to its sender with its number, and only
//! then admitted through the same admit → lock → answer pipeline as every
//! other message (dedupe, bursts, rate limits, pauses all hold). The
//! `messages` row, the system of record, is written by the consumer after
//! that, as for every message: nobody waits for it (seed 002's "send
//! first, save in the background").
//!
//! Nothing is lost or doubled by a resend: a message's id is derived from
//! the sender's `client_message_id`, so a resend finds its log entry (no
//! second push, the same number in its ack) and the admit script's dedupe
//! mark (no second answer), and a resend after a failure part-way (logged,
//! not admitted) admits it then.
//!
//! - a customer's message is answered; the answer reaches the customer's
//!   and the agents' sockets from wherever it is produced (`pipeline`);
//! - an agent's message pauses the bot (the admit script and the writer
//!   treat an `agent` message as a takeover), and a Pancake conversation's
//!   is sent to Pancake as the page, its echo recognised;
//! - `resumeBot` turns the bot back on, in Postgres and Redis.

use serde_json::{Map, Value, json};

use crate::{
    App,
    clock::now_epoch_seconds,
    connections::{Connection, Role},
    domain::{ConversationId, IncomingMessage, MessageId, SenderType},
    error::AppError,
    jobs::PersistMessage,
    pipeline::{self, Outcome},
    postgres::{self, chat},
};

/// What a sender is told about its message.
#[derive(Debug, Clone, PartialEq)]
pub struct Sent {
    pub ack: Value,
    /// Frames for the sender after the pipeline ran (rate limited, paused).
    pub notices: Vec<Value>,
}

/// Whether `connection` may read and post in `conversation`: a customer
/// only in the one its token opened, an agent in any.
pub fn may_use(connection: &Connection, conversation: &ConversationId) -> Result<(), AppError> {
    match connection.role {
        Role::Agent => Ok(()),
        Role::Customer if connection.conversation_id.as_deref() == Some(conversation.as_str()) => Ok(()),
        Role::Customer => Err(AppError::Forbidden),
    }
}

/// The message id a chat message gets: the sender's own id, scoped so a
/// customer's and an agent's can never collide.
pub fn message_id(connection: &Connection, client_message_id: &str) -> String {
    match connection.role {
        Role::Customer => format!("web:{client_message_id}"),
        Role::Agent => format!("agent:{}:{client_message_id}", connection.subject),
    }
}

/// A `sendMessage` from `connection`: logged, pushed, acknowledged, then
/// admitted and (a customer's) answered. `ack_now` sends the sender its
/// acknowledgement before the answer is produced (the socket's caller
/// passes a push to the sender itself).
pub async fn send(
    app: &App,
    connection: &Connection,
    conversation: &ConversationId,
    text: &str,
    client_message_id: &str,
    ack_now: impl AsyncFnOnce(&Value),
) -> Result<Sent, AppError> {
    may_use(connection, conversation)?;
    let message = incoming(connection, conversation, text, client_message_id)?;
    let entry = chat::message_entry(&PersistMessage::of(&message));
    let mut client = app.db.get().await?;
    let fresh = chat::append_committed(&mut client, std::slice::from_ref(&entry)).await?;
    let (seq, duplicate) = match fresh.first() {
        Some(logged) => (logged.seq, false),
        None => {
            let (seq, logged_text) = chat::logged(&**client, &entry.conversation_id, &entry.message_key)
                .await?
                .ok_or(AppError::Unavailable { dependency: "postgres" })?;
            // A resend is the same message: another text under the same id
            // is a client's mistake, refused rather than answered as the old one.
            if logged_text != text {
                return Err(AppError::Conflict(
                    "client_message_id was already used for another message; use a new id".into(),
                ));
            }
            (seq, true)
        }
    };
    drop(client);
    app.live.publish(&fresh, Some(&connection.connection_id)).await;
    let ack = json!({
        "type": "ack",
        "conversation_id": conversation.as_str(),
        "client_message_id": client_message_id,
        "message_id": entry.message_key,
        "seq": seq,
        "duplicate": duplicate,
    });
    // The ack means "admitted: never resend" — so it waits for admit (not
    // for the answer). A failure before it leaves the sender without one,
    // and its resend (same id: the log's entry, admit's dedupe) completes
    // the message exactly once.
    let (admitted, on_admit) = tokio::sync::oneshot::channel();
    let ack_after_admit = async {
        if on_admit.await.is_ok() {
            ack_now(&ack).await;
        }
    };
    let (handled, ()) = tokio::join!(pipeline::handle_signalled(app, &message, Some(admitted)), ack_after_admit);
    let (outcome, _) = handled?;
    let mut notices = Vec::new();
    match (&outcome, connection.role) {
        (Outcome::RateLimited { retry_after_secs, .. }, _) => notices.push(json!({
            "type": "rate_limited",
            "conversation_id": conversation.as_str(),
            "client_message_id": client_message_id,
            "retry_after": retry_after_secs,
            "will_be_answered": true,
        })),
        (Outcome::BotPaused, Role::Customer) => notices.push(json!({
            "type": "status", "conversation_id": conversation.as_str(), "bot_paused": true,
        })),
        // A resend is not sent to Pancake again (Pancake takes no
        // idempotency key): at most once, the log keeps the message.
        (Outcome::Duplicate, Role::Agent) => {}
        (_, Role::Agent) => {
            if let Some(delivery) = send_to_pancake(app, conversation, &message).await {
                notices.push(delivery);
            }
            // Everyone on the conversation learns the bot is paused.
            let status = json!({"type": "status", "conversation_id": conversation.as_str(), "bot_paused": true});
            app.live.push(conversation.as_str(), &status, Some(&connection.connection_id)).await;
            notices.push(status);
        }
        _ => {}
    }
    Ok(Sent { ack, notices })
}

fn incoming(
    connection: &Connection,
    conversation: &ConversationId,
    text: &str,
    client_message_id: &str,
) -> Result<IncomingMessage, AppError> {
    let mut metadata = Map::new();
    metadata.insert("client_message_id".into(), json!(client_message_id));
    metadata.insert("channel".into(), json!("web"));
    Ok(IncomingMessage {
        conversation_id: conversation.clone(),
        message_id: MessageId::parse(&message_id(connection, client_message_id))?,
        message_content: text.to_owned(),
        sender_id: connection.subject.clone(),
        sender_type: match connection.role {
            Role::Customer => SenderType::Customer,
            Role::Agent => SenderType::Agent,
        },
        timestamp: now_epoch_seconds(),
        metadata,
    })
}

/// An agent's message in a Pancake conversation goes to Pancake as the
/// page. Its echo is marked *before* the send (the text's echo counter, as
/// `complete` marks the bot's), and Pancake's id after it, so the webhook
/// ignores the echo whichever comes first rather than logging it again.
/// Returns a `delivery` frame for the agent (`delivered` true or false;
/// nothing for a web conversation). Not retried: Pancake takes no
/// idempotency key, and the agent, told, can say it again.
async fn send_to_pancake(app: &App, conversation: &ConversationId, message: &IncomingMessage) -> Option<Value> {
    if !app.pancake.enabled() || crate::domain::is_web_conversation(conversation) {
        return None;
    }
    let page = match app.db.get().await {
        Ok(client) => chat::page_of(&**client, conversation.as_str()).await.ok().flatten(),
        Err(_) => None,
    };
    let page = page?;
    let client_message_id = message.metadata.get("client_message_id").cloned().unwrap_or(Value::Null);
    let frame = |delivered: bool| {
        json!({"type": "delivery", "conversation_id": conversation.as_str(), "client_message_id": client_message_id,
               "channel": "pancake", "delivered": delivered})
    };
    if let Err(err) = app.store.mark_echo(conversation, &message.message_content).await {
        tracing::warn!(conversation_id = %conversation, error = %err, "agent send's echo not marked; it may be logged again");
    }
    match app.pancake.send_text(&page, conversation.as_str(), &message.message_content).await {
        Ok(sent) => {
            let ids: Vec<String> = sent.into_iter().collect();
            if let Err(err) = app.store.record_delivery(conversation, message.message_id.as_str(), &ids, &[], &[]).await
            {
                tracing::warn!(conversation_id = %conversation, error = %err, "agent send's id not recorded");
            }
            Some(frame(true))
        }
        Err(err) => {
            tracing::warn!(conversation_id = %conversation, error = %err, "agent message not sent to Pancake");
            Some(frame(false))
        }
    }
}

/// `resumeBot`: the bot answers again (Postgres first, then Redis, as the
/// admin route does: both idempotent).
pub async fn resume_bot(app: &App, connection: &Connection, conversation: &ConversationId) -> Result<Value, AppError> {
    if connection.role != Role::Agent {
        return Err(AppError::Forbidden);
    }
    postgres::admin::resume(&**app.db.get().await?, conversation.as_str()).await?;
    app.store.resume(conversation).await?;
    tracing::info!(conversation_id = %conversation, agent = connection.subject, "bot resumed by an agent");
    let status = json!({"type": "status", "conversation_id": conversation.as_str(), "bot_paused": false});
    app.live.push(conversation.as_str(), &status, Some(&connection.connection_id)).await;
    Ok(status)
}

/// `subscribe`: an agent watches a conversation (a customer may only
/// "subscribe" to its own, which it already watches). Returns the
/// conversation's newest number, from which the client catches up.
pub async fn subscribe(app: &App, connection: &Connection, conversation: &ConversationId) -> Result<Value, AppError> {
    may_use(connection, conversation)?;
    if connection.role == Role::Agent {
        app.live.registry().await?.watch(connection, conversation.as_str()).await?;
    }
    let last_seq = chat::last_seq(&**app.db.get().await?, conversation.as_str()).await?;
    Ok(json!({"type": "subscribed", "conversation_id": conversation.as_str(), "last_seq": last_seq}))
}

pub async fn unsubscribe(app: &App, connection: &Connection, conversation: &ConversationId) -> Result<Value, AppError> {
    may_use(connection, conversation)?;
    if connection.role == Role::Agent {
        app.live.registry().await?.unwatch(&connection.connection_id, conversation.as_str()).await?;
    }
    Ok(json!({"type": "unsubscribed", "conversation_id": conversation.as_str()}))
}

/// `typing`: relayed to the conversation's other sockets, never stored.
pub async fn typing(
    app: &App,
    connection: &Connection,
    conversation: &ConversationId,
    typing: bool,
) -> Result<(), AppError> {
    may_use(connection, conversation)?;
    let frame = json!({
        "type": "typing",
        "conversation_id": conversation.as_str(),
        "sender_type": connection.role.as_str(),
        "sender_id": connection.subject,
        "typing": typing,
    });
    app.live.push(conversation.as_str(), &frame, Some(&connection.connection_id)).await;
    Ok(())
}
