//! Key names. Every key of one conversation carries the hash tag
//! `{conversation_id}`, so a script touching them runs on one Redis Cluster
//! slot; the prefix lets tests and tenants share one server.

use crate::domain::{ConversationId, MessageId};

/// The key prefix of one deployment (or one test).
#[derive(Debug, Clone)]
pub struct KeySpace {
    prefix: String,
    jobs_stream: String,
}

impl KeySpace {
    pub fn new(prefix: &str, jobs_stream: &str) -> Self {
        Self { prefix: prefix.to_owned(), jobs_stream: format!("{prefix}{jobs_stream}") }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The Redis Stream of persistence jobs.
    pub fn jobs(&self) -> &str {
        &self.jobs_stream
    }

    /// Sorted set of conversations with owed messages (score: first owed, ms),
    /// swept for stranded bursts.
    pub fn owed_index(&self) -> String {
        format!("{}owed_index", self.prefix)
    }

    /// One page's sliding rate window (a hash).
    pub fn page_rate(&self, page_id: &str) -> String {
        format!("{}rl:page:{{{page_id}}}", self.prefix)
    }

    /// The dead-letter stream: entries that failed too often or cannot be parsed.
    pub fn dead_letters(&self) -> String {
        format!("{}:dead", self.jobs_stream)
    }

    pub fn conversation(&self, id: &ConversationId) -> ConversationKeys {
        ConversationKeys { base: format!("{}conv:{{{}}}", self.prefix, id.as_str()) }
    }
}

/// The keys of one conversation, all in one hash slot.
#[derive(Debug, Clone)]
pub struct ConversationKeys {
    base: String,
}

impl ConversationKeys {
    /// Dedupe mark of one message id (24 h).
    pub fn seen(&self, message_id: &MessageId) -> String {
        format!("{}:seen:{}", self.base, message_id.as_str())
    }
    /// Hash: sequence, last message, pause, rate window, fencing number, processing flag.
    pub fn state(&self) -> String {
        format!("{}:state", self.base)
    }
    /// Sorted set of context entries scored by message timestamp.
    pub fn context(&self) -> String {
        format!("{}:ctx", self.base)
    }
    /// Sorted set of customer messages not yet covered by an answer, scored by arrival.
    pub fn owed(&self) -> String {
        format!("{}:owed", self.base)
    }
    /// The processing lock: a random token, `PX` the lock TTL.
    pub fn lock(&self) -> String {
        format!("{}:lock", self.base)
    }
    /// Set while the conversation is known (30 days): tells a brand-new
    /// conversation from one whose Redis context merely expired.
    pub fn known(&self) -> String {
        format!("{}:known", self.base)
    }
    /// A Pancake message id this backend sent (its webhook echo is ignored).
    pub fn sent(&self, pancake_message_id: &str) -> String {
        format!("{}:sent:{pancake_message_id}", self.base)
    }
    /// An action's delivery mark: `sending` while it is being delivered,
    /// `sent` once Pancake accepted it (so nothing sends it twice).
    pub fn send_mark(&self, action_id: &uuid::Uuid) -> String {
        format!("{}:action:{action_id}", self.base)
    }
    /// A text about to be sent, by digest: recognises the echo that can
    /// arrive before Pancake's answer (and its message id) does.
    pub fn echo(&self, text: &str) -> String {
        use sha2::{Digest, Sha256};
        let digest = Sha256::digest(text.trim().as_bytes());
        let hex: String = digest.iter().take(12).map(|b| format!("{b:02x}")).collect();
        format!("{}:echo:{hex}", self.base)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_of_a_conversation_shares_its_hash_tag() {
        let keys = KeySpace::new("t1:", "jobs").conversation(&ConversationId::parse("conv_1").unwrap());
        let m = MessageId::parse("m").unwrap();
        for key in [keys.seen(&m), keys.state(), keys.context(), keys.owed(), keys.lock()] {
            assert!(key.starts_with("t1:conv:{conv_1}:"), "{key}");
        }
    }
}
