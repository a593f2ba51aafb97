//! The job streams outside the scripts: one job appended to its
//! conversation's shard (a replayed dead letter too), and the depth, pending
//! and dead-letter totals.

use redis::AsyncCommands;

use super::ConversationStore;
use crate::{domain::ConversationId, error::AppError};

impl ConversationStore {
    /// Appends one job of a conversation to its shard's stream (jobs that
    /// need no atomic partner).
    pub async fn enqueue(&self, conversation: &ConversationId, kind: &str, payload: &str) -> Result<(), AppError> {
        let jobs = self.keys.conversation(conversation).shard().jobs();
        let _: String = self.conn.clone().xadd(jobs, "*", &[("type", kind), ("payload", payload)]).await?;
        Ok(())
    }

    /// Appends a replayed dead letter's job to its conversation's shard:
    /// the same type and payload, and the admit outcome of a message. Returns
    /// the new entry's id.
    pub async fn enqueue_replay(
        &self,
        conversation: &ConversationId,
        kind: &str,
        payload: &str,
        outcome: Option<&str>,
    ) -> Result<String, AppError> {
        let jobs = self.keys.conversation(conversation).shard().jobs();
        let mut fields = vec![("type", kind), ("payload", payload)];
        if let Some(outcome) = outcome {
            fields.push(("outcome", outcome));
        }
        Ok(self.conn.clone().xadd(jobs, "*", &fields).await?)
    }

    /// The job streams summed over every shard: (entries, pending in
    /// `group`, dead letters). A group not created yet counts 0 pending.
    pub async fn queue_totals(&self, group: &str) -> Result<(u64, u64, u64), AppError> {
        let reads = self.keys.shards().map(|shard| {
            let mut conn = self.conn.clone();
            async move {
                let (depth, dead): (u64, u64) =
                    redis::pipe().xlen(shard.jobs()).xlen(shard.dead_letters()).query_async(&mut conn).await?;
                let pending: Result<redis::streams::StreamPendingReply, _> = conn.xpending(shard.jobs(), group).await;
                Ok::<_, redis::RedisError>((depth, pending.map(|r| r.count() as u64).unwrap_or(0), dead))
            }
        });
        let mut totals = (0, 0, 0);
        for shard in futures::future::join_all(reads).await {
            let (depth, pending, dead) = shard?;
            totals = (totals.0 + depth, totals.1 + pending, totals.2 + dead);
        }
        Ok(totals)
    }
}
