//! Reads across conversations for the sweep and the operators (owed
//! conversations, lock and context state), an operator's resume, and the
//! cleanup of idle conversations' Redis state.

use redis::AsyncCommands;

use super::ConversationStore;
use crate::redis::{
    keys::{glob_escape, id_of_key_part},
    scripts,
};
use crate::{clock::now_ms, domain::ConversationId, error::AppError};

impl ConversationStore {
    /// Conversations that have owed messages since before `older_than_ms`,
    /// oldest first, from every shard's owed index.
    pub async fn owed_conversations(&self, older_than_ms: u64, limit: usize) -> Result<Vec<String>, AppError> {
        Ok(self.owed_since(older_than_ms, limit).await?.into_iter().map(|(id, _)| id).collect())
    }

    async fn owed_since(&self, older_than_ms: u64, limit: usize) -> Result<Vec<(String, f64)>, AppError> {
        let reads = self.keys.shards().map(|shard| {
            let mut conn = self.conn.clone();
            async move {
                conn.zrangebyscore_limit_withscores::<_, _, _, Vec<(String, f64)>>(
                    shard.owed_index(),
                    "-inf",
                    older_than_ms,
                    0,
                    limit as isize,
                )
                .await
            }
        });
        let mut owed: Vec<(String, f64)> = Vec::new();
        for shard in futures::future::join_all(reads).await {
            owed.extend(shard?);
        }
        owed.sort_by(|a, b| a.1.total_cmp(&b.1));
        owed.truncate(limit);
        Ok(owed)
    }

    /// Conversations owed answers since before `older_than_ms`, with that time
    /// and whether a lock is held (a live, slow holder) or not (a dead one).
    pub async fn owed_with_locks(
        &self,
        older_than_ms: u64,
        limit: usize,
    ) -> Result<Vec<(String, f64, bool)>, AppError> {
        let owed = self.owed_since(older_than_ms, limit).await?;
        // EXISTS over many keys: the cluster client splits it by slot.
        let checks = owed.iter().map(|(id, _)| {
            let key = ConversationId::parse(id).map(|c| self.keys.conversation(&c).lock()).unwrap_or_default();
            let mut conn = self.conn.clone();
            async move { conn.exists::<_, bool>(key).await }
        });
        let locks = futures::future::join_all(checks).await.into_iter().collect::<Result<Vec<bool>, _>>()?;
        Ok(owed.into_iter().zip(locks).map(|((id, since), locked)| (id, since, locked)).collect())
    }

    /// Per conversation: lock held, context size, owed count (admin listing).
    pub async fn conversation_states(&self, ids: &[String]) -> Result<Vec<(bool, u64, u64)>, AppError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        // One pipeline per conversation (one slot each), sent together.
        let reads =
            ids.iter().map(|id| {
                let keys = ConversationId::parse(id).map(|c| self.keys.conversation(&c)).ok();
                let (lock, ctx, owed) = keys.map(|k| (k.lock(), k.context(), k.owed())).unwrap_or_default();
                let mut conn = self.conn.clone();
                async move {
                    redis::pipe().exists(lock).zcard(ctx).zcard(owed).query_async::<(bool, u64, u64)>(&mut conn).await
                }
            });
        Ok(futures::future::join_all(reads).await.into_iter().collect::<Result<Vec<_>, _>>()?)
    }

    /// Bot back on: the pause and the assignment flag are cleared.
    pub async fn resume(&self, conversation: &ConversationId) -> Result<(), AppError> {
        let key = self.keys.conversation(conversation).state();
        let _: () = self.conn.clone().hset_multiple(&key, &[("paused_until_ms", "0"), ("assigned", "0")]).await?;
        let _: () = self.conn.clone().expire(&key, self.context_ttl.as_secs().max(1) as i64).await?;
        Ok(())
    }

    /// Drops the Redis state of conversations idle since before `cutoff_ms`
    /// that nobody needs (no lock, nothing owed, no pause in force), with
    /// their owed-index entries; admin cleanup, Postgres is never touched.
    /// Returns (state keys scanned, conversations removed, keys removed).
    pub async fn cleanup(&self, cutoff_ms: u64) -> Result<(u64, u64, u64), AppError> {
        self.cleanup_observed(cutoff_ms, |_| std::future::ready(())).await
    }

    /// [`Self::cleanup`], calling `after_each` with every removed
    /// conversation as soon as its removal returned. The seam a test uses to
    /// admit a message exactly there: where the owed-index entry used to be
    /// removed by a command of its own, which then took the new message's
    /// entry with it.
    #[doc(hidden)]
    pub async fn cleanup_observed<F, Fut>(&self, cutoff_ms: u64, mut after_each: F) -> Result<(u64, u64, u64), AppError>
    where
        F: FnMut(ConversationId) -> Fut,
        Fut: std::future::Future<Output = ()>,
    {
        // The prefix is matched literally: it may hold glob metacharacters.
        let pattern = format!("{}conv:{{s*}}:*:state", glob_escape(self.keys.prefix()));
        let mut conn = self.conn.clone();
        // Every primary of a cluster is scanned (a plain SCAN sees one node).
        let states: Vec<String> = self.conn.inner().scan_keys(&pattern).await?;
        let (mut removed, mut keys_removed) = (0u64, 0u64);
        let now = now_ms();
        for state in &states {
            // The id follows the shard's hash tag: `…conv:{sN}:<id>:state`.
            // The prefix is the deployment's own and may hold anything: skip it first.
            let Some(base) = state.strip_prefix(self.keys.prefix()).and_then(|k| k.strip_suffix(":state")) else {
                continue;
            };
            let Some(close) = base.find("}:") else { continue };
            let Some(id) = id_of_key_part(&base[close + 2..]) else { continue };
            let Ok(conversation) = ConversationId::parse(&id) else { continue };
            let keys = self.keys.conversation(&conversation);
            if keys.state() != *state {
                continue; // a key that only looks like a state key
            }
            // One script, owed-index entry included: see `cleanup.lua`.
            let deleted: u64 = scripts::CLEANUP
                .key(keys.state())
                .key(keys.lock())
                .key(keys.context())
                .key(keys.owed())
                .key(keys.shard().owed_index())
                .arg(cutoff_ms)
                .arg(now)
                .arg(conversation.as_str())
                .invoke_async(&mut conn)
                .await?;
            if deleted > 0 {
                removed += 1;
                keys_removed += deleted;
                after_each(conversation).await;
            }
        }
        Ok((states.len() as u64, removed, keys_removed))
    }
}
