//! AI calls in flight, counted across every process (health's
//! `statistics.active_ai_tasks`): one sorted set, `{prefix}ai:in_flight`,
//! member a random id per call, score the time after which the call cannot
//! still be running (start + AI timeout + a margin). Counting reads only
//! members whose time is ahead, so a process that died mid-call (a Lambda
//! killed at its timeout) cannot keep the figure high; each start also drops
//! the expired members, and the key expires when no call starts.

use redis::AsyncCommands;

use super::ConversationStore;
use crate::{clock::now_ms, error::AppError};

impl ConversationStore {
    fn ai_calls_key(&self) -> String {
        format!("{}ai:in_flight", self.keys.prefix())
    }

    /// Registers call `id`, running at most until `until_ms` (one round trip).
    pub async fn ai_call_started(&self, id: &str, until_ms: u64) -> Result<(), AppError> {
        let key = self.ai_calls_key();
        let ttl_ms = until_ms.saturating_sub(now_ms()).max(1);
        let () = redis::pipe()
            .zrembyscore(&key, "-inf", now_ms())
            .ignore()
            .zadd(&key, id, until_ms)
            .ignore()
            // Every call has the same timeout, so the latest start always
            // sets the latest expiry: no other call's entry is cut short.
            .pexpire(&key, ttl_ms as i64)
            .ignore()
            .query_async(&mut self.conn.clone())
            .await?;
        Ok(())
    }

    /// Call `id` is over.
    pub async fn ai_call_finished(&self, id: &str) -> Result<(), AppError> {
        let _: i64 = self.conn.clone().zrem(self.ai_calls_key(), id).await?;
        Ok(())
    }

    /// AI calls running now, in every process.
    pub async fn ai_calls_in_flight(&self) -> Result<u64, AppError> {
        let now = format!("({}", now_ms());
        Ok(self.conn.clone().zcount(self.ai_calls_key(), now, "+inf").await?)
    }
}
