//! What the conversation's lock holder works from: the context the AI sees
//! and the customer messages no answer covers yet. Both stores produce it —
//! Redis' scripts and, in degraded mode, Postgres — so it lives here.

use serde::{Deserialize, Serialize};

/// One message as the AI sees it, stored in the context sorted set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContextEntry {
    pub message_id: String,
    pub sender_type: String,
    pub content: String,
    pub timestamp: f64,
}

/// A customer message that no answer covers yet.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OwedMessage {
    pub message_id: String,
    pub timestamp: f64,
    /// Arrival order within the conversation (not part of the member).
    #[serde(skip)]
    pub seq: i64,
}

/// What the lock holder works from: the context in timestamp order and the
/// messages it must cover, in arrival order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    pub context: Vec<ContextEntry>,
    pub owed: Vec<OwedMessage>,
    /// The conversation existed before these messages (its history may be
    /// in Postgres); false for a brand-new conversation.
    pub returning: bool,
}

impl Snapshot {
    /// Highest arrival number the snapshot covers; `complete` clears up to it.
    pub fn covered_seq(&self) -> i64 {
        self.owed.iter().map(|m| m.seq).max().unwrap_or(0)
    }
}
