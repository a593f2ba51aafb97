//! The lazy rebuild after degraded mode: what Postgres handled while Redis
//! was away is remembered per process and restored in Redis at the first
//! message once it answers again. That includes the conversations' pauses:
//! a store does not read another store, so the pipeline reads them from
//! Postgres ([`ConversationStore::pauses_to_restore`] says which) and hands
//! them to [`ConversationStore::restore_after_outage`].

use std::collections::{HashMap, HashSet};

use super::{ConversationStore, DEGRADED_MEMORY, KNOWN_TTL_SECS};
use crate::{
    clock::now_ms,
    domain::{ConversationId, MessageId},
    error::AppError,
    redis::scripts,
};

/// What the degraded path handled since Redis was last reachable.
#[derive(Debug, Default)]
pub(super) struct Remembered {
    /// (conversation, message, answered by the degraded path).
    messages: Vec<(ConversationId, MessageId, bool)>,
    /// Conversations whose Postgres pause Redis has not learnt yet. Kept
    /// apart from `messages`: a pause whose lookup failed is retried with the
    /// next message without redoing (and re-dropping contexts for) the rest.
    pauses: HashSet<ConversationId>,
}

impl ConversationStore {
    /// Notes a message the degraded path handled, for the lazy rebuild.
    /// `answered`: a degraded answer covers it (only those are forgotten in
    /// Redis' owed set; a message Redis admitted and the degraded path only
    /// found stored is still Redis' to answer).
    pub fn remember_degraded(&self, conversation: &ConversationId, message: &MessageId, answered: bool) {
        let mut remembered = self.degraded.lock().unwrap_or_else(|e| e.into_inner());
        if remembered.messages.len() < DEGRADED_MEMORY {
            remembered.messages.push((conversation.clone(), message.clone(), answered));
            remembered.pauses.insert(conversation.clone());
        }
    }

    /// Notes a conversation whose pause changed in Postgres while Redis was
    /// away with no message of its own (a Pancake assignment taken in
    /// degraded mode): Redis learns the pause on restore.
    pub fn remember_degraded_pause(&self, conversation: &ConversationId) {
        let mut remembered = self.degraded.lock().unwrap_or_else(|e| e.into_inner());
        if remembered.pauses.len() < DEGRADED_MEMORY {
            remembered.pauses.insert(conversation.clone());
        }
    }

    /// The conversations whose pause Redis must learn from Postgres before
    /// it admits anything else: empty unless a degraded period just ended
    /// (then the caller looks their pauses up and passes them to
    /// [`Self::restore_after_outage`]).
    pub fn pauses_to_restore(&self) -> Vec<ConversationId> {
        self.degraded.lock().unwrap_or_else(|e| e.into_inner()).pauses.iter().cloned().collect()
    }

    /// The lazy rebuild after a degraded period, once Redis answers again:
    /// the messages Postgres handled get their dedupe marks (a retry of one
    /// is a `duplicate`, not a second answer) and their conversations lose
    /// their Redis context while keeping the `known` mark, so the next
    /// message rebuilds the thread from Postgres, degraded turns included;
    /// a message Redis still owes but Postgres answered (its admit ran but
    /// the reply was lost, the retry went degraded) is forgotten, so the
    /// sweep does not answer it again; and a pause in force in Postgres
    /// (`pauses`: epoch ms per conversation looked up, `None` = not paused)
    /// becomes the Redis pause when it ends later than Redis' own, so a
    /// human who took over during the outage is not talked over. A
    /// conversation left out of `pauses` (remembered after the lookup, or
    /// the lookup failed) keeps its pause owed for the next call. Runs once,
    /// all commands concurrently; on failure everything is kept for the next
    /// request (every step is idempotent).
    pub async fn restore_after_outage(&self, pauses: &[(ConversationId, Option<i64>)]) {
        let (pending, due) = {
            let mut remembered = self.degraded.lock().unwrap_or_else(|e| e.into_inner());
            let pending = std::mem::take(&mut remembered.messages);
            let mut due: HashMap<ConversationId, i64> = HashMap::new();
            for (conversation, until_ms) in pauses {
                if remembered.pauses.remove(conversation)
                    && let Some(until_ms) = until_ms
                {
                    due.insert(conversation.clone(), *until_ms);
                }
            }
            (pending, due)
        };
        if pending.is_empty() && due.is_empty() {
            return;
        }
        // Each conversation's messages, in the order they were handled.
        let mut conversations: Vec<(&ConversationId, Vec<(&MessageId, bool)>)> = Vec::new();
        let mut slot: HashMap<&ConversationId, usize> = HashMap::new();
        for (conversation, message, answered) in &pending {
            let at = *slot.entry(conversation).or_insert_with(|| {
                conversations.push((conversation, Vec::new()));
                conversations.len() - 1
            });
            conversations[at].1.push((message, *answered));
        }
        for conversation in due.keys() {
            if !slot.contains_key(conversation) {
                conversations.push((conversation, Vec::new()));
            }
        }
        let now = now_ms();
        // One pipeline and up to two scripts per conversation (each within
        // its slot), all sent at once.
        let steps = conversations.iter().map(|(conversation, messages)| {
            let keys = self.keys.conversation(conversation);
            let mut pipe = redis::pipe();
            for (message, _) in messages {
                let dedupe = self.dedupe_ttl.as_secs().max(1);
                pipe.cmd("SET").arg(keys.seen(message)).arg("1").arg("NX").arg("EX").arg(dedupe).ignore();
            }
            pipe.del(keys.context()).ignore();
            pipe.cmd("SET").arg(keys.known()).arg("1").arg("EX").arg(KNOWN_TTL_SECS).ignore();
            let answered: Vec<String> =
                messages.iter().filter(|(_, answered)| *answered).map(|(m, _)| m.as_str().to_owned()).collect();
            let pause = due.get(*conversation).map(|until_ms| {
                let mut script = scripts::RESTORE_PAUSE.key(keys.state());
                script.arg(*until_ms).arg(now);
                script
            });
            let mut conn = self.conn.clone();
            let has_messages = !messages.is_empty();
            async move {
                if has_messages {
                    let () = pipe.query_async(&mut conn).await?;
                }
                if !answered.is_empty() {
                    self.forget_answered(conversation, &answered).await?;
                }
                if let Some(pause) = pause {
                    let _: i64 = pause.invoke_async(&mut conn).await?;
                }
                Ok(())
            }
        });
        let restored = futures::future::join_all(steps).await.into_iter().collect::<Result<Vec<()>, AppError>>();
        match restored {
            Ok(_) => tracing::info!(
                messages = pending.len(),
                conversations = conversations.len(),
                pauses = due.len(),
                "redis state restored after a degraded period"
            ),
            Err(err) => {
                tracing::warn!(error = %err, "redis state not restored yet; retrying with the next message");
                let mut remembered = self.degraded.lock().unwrap_or_else(|e| e.into_inner());
                remembered.messages.extend(pending);
                remembered.pauses.extend(due.into_keys());
            }
        }
    }
}
