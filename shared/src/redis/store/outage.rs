//! The lazy rebuild after degraded mode: what Postgres handled while Redis
//! was away is remembered per process and restored in Redis at the first
//! message once it answers again.

use super::{ConversationStore, DEGRADED_MEMORY, KNOWN_TTL_SECS};
use crate::{
    domain::{ConversationId, MessageId},
    error::AppError,
};

impl ConversationStore {
    /// Notes a message the degraded path handled, for the lazy rebuild.
    /// `answered`: a degraded answer covers it (only those are forgotten in
    /// Redis' owed set; a message Redis admitted and the degraded path only
    /// found stored is still Redis' to answer).
    pub fn remember_degraded(&self, conversation: &ConversationId, message: &MessageId, answered: bool) {
        let mut list = self.degraded.lock().unwrap_or_else(|e| e.into_inner());
        if list.len() < DEGRADED_MEMORY {
            list.push((conversation.clone(), message.clone(), answered));
        }
    }

    /// The lazy rebuild after a degraded period, once Redis answers again:
    /// the messages Postgres handled get their dedupe marks (a retry of one
    /// is a `duplicate`, not a second answer) and their conversations lose
    /// their Redis context while keeping the `known` mark, so the next
    /// message rebuilds the thread from Postgres, degraded turns included;
    /// and a message Redis still owes but Postgres answered (its admit ran
    /// but the reply was lost, the retry went degraded) is forgotten, so the
    /// sweep does not answer it again. Runs once, all commands concurrently;
    /// on failure the list is kept for the next request (every step is
    /// idempotent).
    pub async fn restore_after_outage(&self) {
        let pending = std::mem::take(&mut *self.degraded.lock().unwrap_or_else(|e| e.into_inner()));
        if pending.is_empty() {
            return;
        }
        let mut conversations: Vec<&ConversationId> = Vec::new();
        for (conversation, _, _) in &pending {
            if !conversations.contains(&conversation) {
                conversations.push(conversation);
            }
        }
        // One pipeline and one script per conversation (each within its
        // slot), all sent at once.
        let steps = conversations.iter().map(|conversation| {
            let keys = self.keys.conversation(conversation);
            let messages: Vec<(&MessageId, bool)> =
                pending.iter().filter(|(c, _, _)| c == *conversation).map(|(_, m, answered)| (m, *answered)).collect();
            let mut pipe = redis::pipe();
            for (message, _) in &messages {
                let dedupe = self.dedupe_ttl.as_secs().max(1);
                pipe.cmd("SET").arg(keys.seen(message)).arg("1").arg("NX").arg("EX").arg(dedupe).ignore();
            }
            pipe.del(keys.context()).ignore();
            pipe.cmd("SET").arg(keys.known()).arg("1").arg("EX").arg(KNOWN_TTL_SECS).ignore();
            let answered: Vec<String> =
                messages.iter().filter(|(_, answered)| *answered).map(|(m, _)| m.as_str().to_owned()).collect();
            let mut conn = self.conn.clone();
            async move {
                let () = pipe.query_async(&mut conn).await?;
                if answered.is_empty() { Ok(()) } else { self.forget_answered(conversation, &answered).await.map(drop) }
            }
        });
        let restored = futures::future::join_all(steps).await.into_iter().collect::<Result<Vec<()>, AppError>>();
        match restored {
            Ok(_) => tracing::info!(
                messages = pending.len(),
                conversations = conversations.len(),
                "redis state restored after a degraded period"
            ),
            Err(err) => {
                tracing::warn!(error = %err, "redis state not restored yet; retrying with the next message");
                self.degraded.lock().unwrap_or_else(|e| e.into_inner()).extend(pending);
            }
        }
    }
}
