//! The context sorted set outside the scripts: read as a snapshot after a
//! debounce, filled back from Postgres, dropped by a `thread` invalidation.

use redis::{AsyncCommands, Value};

use super::{
    ConversationStore,
    reply::{snapshot, to_json},
};
use crate::{
    domain::{ContextEntry, ConversationId, Snapshot},
    error::AppError,
};

impl ConversationStore {
    /// The current context and owed messages (used after a debounce window).
    pub async fn snapshot(&self, conversation: &ConversationId) -> Result<Snapshot, AppError> {
        let keys = self.keys.conversation(conversation);
        let (ctx, owed): (Value, Value) = redis::pipe()
            .zrange(keys.context(), 0, -1)
            .zrange_withscores(keys.owed(), 0, -1)
            .query_async(&mut self.conn.clone())
            .await?;
        snapshot(Some(ctx), Some(owed))
    }

    /// Adds entries rebuilt from Postgres to a conversation's context.
    pub async fn add_context(&self, conversation: &ConversationId, entries: &[ContextEntry]) -> Result<(), AppError> {
        if entries.is_empty() {
            return Ok(());
        }
        let key = self.keys.conversation(conversation).context();
        let mut pipe = redis::pipe();
        for entry in entries {
            pipe.zadd(&key, to_json(entry), entry.timestamp).ignore();
        }
        pipe.expire(&key, self.context_ttl.as_secs().max(1) as i64).ignore();
        let () = pipe.query_async(&mut self.conn.clone()).await?;
        Ok(())
    }

    /// Drops a conversation's context (thread invalidation): the next answer
    /// rebuilds it from Postgres.
    pub async fn clear_context(&self, conversation: &ConversationId) -> Result<bool, AppError> {
        let removed: i64 = self.conn.clone().del(self.keys.conversation(conversation).context()).await?;
        Ok(removed == 1)
    }
}
