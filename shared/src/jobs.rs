//! The persistence jobs the message path appends to the Redis Stream `jobs`
//! and the background consumer writes to Postgres. Each stream entry has a
//! `type` field (one of the constants below) and a JSON `payload`; admitted
//! messages also carry their admit `outcome`.
//!
//! Every payload carries the keys its Postgres writer conflicts on
//! (`(conversation_id, message_id)`, `response_id`, `action_id`), so
//! re-delivering an entry changes nothing.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::{
    actions::{Action, RejectedAction},
    domain::{ActionStatus, IncomingMessage, OwedMessage},
};

pub const PERSIST_MESSAGE: &str = "persist_message";
pub const PERSIST_ANSWER: &str = "persist_answer";
pub const ACTION_RESULTS: &str = "action_results";
pub const REDRIVE_CONVERSATION: &str = "redrive_conversation";
pub const PROCESS_CONVERSATION: &str = "process_conversation";
pub const UPDATE_CONVERSATION: &str = "update_conversation";
pub const DELIVER_ACTION: &str = "deliver_action";

/// The conversation a job's payload names (every job type has a top-level
/// `conversation_id`), for log lines about an entry that failed; `None` if
/// the payload does not parse that far.
pub fn conversation_of(payload: &str) -> Option<String> {
    #[derive(Deserialize)]
    struct Named {
        conversation_id: String,
    }
    serde_json::from_str::<Named>(payload).ok().map(|named| named.conversation_id)
}

/// One admitted message, whatever its admit outcome.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PersistMessage {
    pub conversation_id: String,
    pub message_id: String,
    pub sender_id: String,
    pub sender_type: String,
    pub content: String,
    pub timestamp: f64,
    pub metadata: Map<String, Value>,
    pub page_id: Option<String>,
    /// When this server took the message (epoch seconds): an agent's message
    /// pauses the bot from then, in Redis (admit) and in Postgres (writer).
    pub received_at: f64,
}

impl PersistMessage {
    /// The persistence job of an admitted message.
    pub fn of(message: &IncomingMessage) -> Self {
        Self {
            conversation_id: message.conversation_id.to_string(),
            message_id: message.message_id.to_string(),
            sender_id: message.sender_id.clone(),
            sender_type: message.sender_type.as_str().to_owned(),
            content: message.message_content.clone(),
            timestamp: message.timestamp,
            metadata: message.metadata.clone(),
            page_id: message.page_id(),
            received_at: crate::clock::now_epoch_seconds(),
        }
    }
}

/// Seed 001's `ai_response` object (plus the error when the fallback was used).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AiResponseView {
    pub response_text: String,
    pub intent: String,
    pub confidence: f64,
    pub entities: Map<String, Value>,
    pub processing_time_ms: f64,
    pub model_used: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub error: Option<String>,
    /// Served from the answer cache (omitted when not).
    #[serde(skip_serializing_if = "std::ops::Not::not", default)]
    pub cached: bool,
}

/// An action as persisted, with its delivery status.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActionJob {
    #[serde(flatten)]
    pub action: Action,
    /// `pending` (delivery follows) or `not_sent` (delivery disabled).
    pub status: ActionStatus,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub last_error: Option<String>,
}

/// One answer, written by the lock holder's `complete` step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PersistAnswer {
    pub response_id: Uuid,
    pub conversation_id: String,
    /// The lock's fencing number: Postgres ignores writes older than the newest.
    pub fence: i64,
    pub page_id: Option<String>,
    pub assistant_id: String,
    pub covered_message_ids: Vec<String>,
    pub ai_response: AiResponseView,
    pub actions: Vec<ActionJob>,
    pub rejected_actions: Vec<RejectedAction>,
    /// The bot was paused by a `transfer_to_agent` in this answer (until
    /// `created_at` plus the pause TTL).
    pub bot_paused: bool,
    /// The answer's time (epoch seconds), the same as its context entry's:
    /// after every message it answers, even when the sender's clock runs
    /// ahead. Stored as `ai_responses.created_at`, so the history rebuilt
    /// from Postgres orders it where the Redis context did.
    pub created_at: f64,
}

/// What happened when an answer's actions were delivered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActionResult {
    pub action_id: Uuid,
    pub action_type: String,
    /// `sent`, `done` (no Pancake call needed), `failed`, `not_sent`.
    pub status: ActionStatus,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub pancake_message_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub error: Option<String>,
    /// A failed delivery worth retrying from the stream (Pancake 429/5xx, network).
    #[serde(default)]
    pub retryable: bool,
    /// 0 for the lock holder's delivery, then 1, 2… for the consumer's retries.
    #[serde(default)]
    pub attempt: u32,
    /// What an `execute_api` integration answered (cut at 16 KiB).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub response: Option<Value>,
    /// The call may have landed although it failed (a timeout, a 5xx): its
    /// retry looks in the conversation before it sends again.
    #[serde(skip_serializing_if = "std::ops::Not::not", default)]
    pub outcome_unknown: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActionResults {
    pub response_id: Uuid,
    pub conversation_id: String,
    pub fence: i64,
    pub results: Vec<ActionResult>,
}

/// A conversation with owed messages to answer in the background: the
/// restart budget was spent (`redrive_conversation`), a webhook message
/// arrived (`process_conversation`), or a lock holder died (the sweep).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Redrive {
    pub conversation_id: String,
    pub page_id: Option<String>,
    pub assistant_id: Option<String>,
    /// Why: `restart_budget_spent`, `webhook`, `stranded`, `deadline`.
    pub reason: String,
    /// A hand-off (`HANDOFF`) carries this conversation to a processing
    /// function at once; the stream entry is the safety net, run by the
    /// consumer only once it has been pending `CONSUMER_CLAIM_IDLE_MS`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub handed_off: bool,
}

/// A conversation's assignment and pause, from Pancake's `conversation`
/// webhook (applied in `version` order) or an admin action.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UpdateConversation {
    pub conversation_id: String,
    pub page_id: Option<String>,
    pub pancake_version: i64,
    pub assignee_ids: Vec<String>,
    /// `Some(true)` paused, `Some(false)` resumed, `None` unchanged.
    pub bot_paused: Option<bool>,
}

/// One action whose delivery failed with a retryable error, delivered again
/// by the consumer (the action id is the idempotency key).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeliverAction {
    pub response_id: Uuid,
    pub conversation_id: String,
    pub page_id: Option<String>,
    pub fence: i64,
    pub action: Action,
    pub attempt: u32,
    /// When the answer was made (epoch seconds): a message looked for in
    /// the conversation must be at least this recent.
    #[serde(default)]
    pub answered_at: Option<f64>,
    /// Queued by the sweep for an answer whose holder may have died mid-send:
    /// with no send mark to say otherwise, the outcome counts as unknown.
    #[serde(default)]
    pub holder_may_have_sent: bool,
}

/// Owed messages as the API reports them (`newer_messages`).
pub fn newer_messages(owed: &[OwedMessage]) -> Value {
    serde_json::to_value(owed).unwrap_or(Value::Array(vec![]))
}
