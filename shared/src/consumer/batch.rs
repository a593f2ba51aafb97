//! One read batch: entries parsed, the Postgres part written in one
//! transaction (entry by entry when one row is bad), acknowledged after the
//! commit; effects started after (`parallel`), each acknowledged when done.

use std::collections::HashMap;

use redis::{AsyncCommands, streams::StreamId};

use super::{Consumer, Summary, job::Job, parallel::Pending};
use crate::{
    error::AppError,
    postgres::writer::{self, Batch},
    redis::ShardKeys,
};

impl Consumer {
    pub(super) async fn process(
        &self,
        shard: &ShardKeys,
        entries: Vec<StreamId>,
        claimed: bool,
    ) -> Result<Summary, AppError> {
        let mut summary = Summary { batches: 1, read: entries.len() as u64, ..Default::default() };
        let deliveries = if claimed { self.deliveries(shard, &entries).await? } else { HashMap::new() };
        // The last error each claimed entry failed with. Only an entry that
        // keeps failing on its own goes to the dead letters: one that was
        // never processed (Postgres down, its consumer died) has no error
        // recorded and is retried for as long as it takes, never dropped.
        let errors: HashMap<String, String> = if claimed && !deliveries.is_empty() {
            let ids: Vec<&str> = entries.iter().map(|e| e.id.as_str()).collect();
            let values: Vec<Option<String>> =
                redis::cmd("HMGET").arg(shard.errors()).arg(&ids).query_async(&mut self.reader.clone()).await?;
            ids.iter().zip(values).filter_map(|(id, e)| e.map(|e| (id.to_string(), e))).collect()
        } else {
            HashMap::new()
        };
        let mut batch = Batch::default();
        let mut batch_ids = Vec::new();
        let mut effects = Vec::new();
        let mut acked = Vec::new();
        for entry in &entries {
            // Reclaimed while its task here still runs (longer than
            // `claim_idle`): that task settles it; never dead-letter it meanwhile.
            if claimed && self.is_in_flight(shard, &entry.id) {
                continue;
            }
            let delivered = deliveries.get(&entry.id).copied().unwrap_or(1);
            if delivered > self.settings.max_deliveries
                && let Some(error) = errors.get(&entry.id)
            {
                summary.dead_lettered += self.try_dead_letter(shard, entry, error, delivered).await;
                continue;
            }
            match Job::parse(entry) {
                Err(error) => {
                    tracing::error!(id = %entry.id, %error, "poison entry moved to the dead-letter stream");
                    summary.dead_lettered += self.try_dead_letter(shard, entry, &error, delivered).await;
                }
                Ok(job) => match job.into_batch(&mut batch) {
                    None => batch_ids.push(entry.id.clone()),
                    Some(effect) => effects.push((entry.id.clone(), effect)),
                },
            }
        }

        if !batch.is_empty() {
            let mut client = self.app.db.get().await?;
            match writer::write(&mut client, &batch, self.app.config.bot_pause_ttl).await {
                Ok(fresh) => {
                    summary.written += batch.len() as u64;
                    acked.append(&mut batch_ids);
                    // Messages logged here first (Pancake's, through the
                    // webhook) reach the conversation's watchers now.
                    self.app.live.publish(&fresh, None).await;
                }
                Err(err) if is_transient(&err) => {
                    // Nothing acknowledged: the whole batch is retried later.
                    return Err(AppError::from(err));
                }
                Err(err) => {
                    tracing::warn!(error = %err, "batch write failed; writing entry by entry");
                    drop(client);
                    self.write_one_by_one(shard, &entries, &batch_ids, &mut acked, &mut summary).await?;
                }
            }
        }

        // The batch's writes are committed: acknowledge them before the
        // effects start; each effect is acknowledged when its task is done
        // with it, so a consumer that dies (a Lambda past its deadline)
        // redoes as little as possible.
        self.ack(shard, &acked).await?;
        summary.acknowledged += acked.len() as u64;
        let effects = effects
            .into_iter()
            .map(|(id, effect)| Pending { delivered: deliveries.get(&id).copied().unwrap_or(1), id, effect, claimed })
            .collect();
        self.start_effects(shard, effects).await;
        Ok(summary)
    }

    /// Dead-letters one entry (1), or leaves it pending when that fails (0):
    /// with Postgres away the letter cannot be recorded, and the rest of
    /// the batch must not wait for it.
    async fn try_dead_letter(&self, shard: &ShardKeys, entry: &StreamId, error: &str, delivered: u64) -> u64 {
        match self.dead_letter(shard, entry, error, delivered).await {
            Ok(()) => 1,
            Err(err) => {
                tracing::warn!(id = %entry.id, error = %err, "dead letter not recorded yet; the entry stays pending");
                0
            }
        }
    }

    /// Isolates the entry that breaks a batch: each entry in its own transaction.
    pub(super) async fn write_one_by_one(
        &self,
        shard: &ShardKeys,
        entries: &[StreamId],
        ids: &[String],
        acked: &mut Vec<String>,
        summary: &mut Summary,
    ) -> Result<(), AppError> {
        let mut client = self.app.db.get().await?;
        for entry in entries.iter().filter(|e| ids.contains(&e.id)) {
            let mut single = Batch::default();
            let Ok(job) = Job::parse(entry) else { continue };
            job.into_batch(&mut single);
            match writer::write(&mut client, &single, self.app.config.bot_pause_ttl).await {
                Ok(fresh) => {
                    summary.written += 1;
                    self.app.live.publish(&fresh, None).await;
                    acked.push(entry.id.clone());
                }
                Err(err) if is_transient(&err) => return Err(AppError::from(err)),
                Err(err) => {
                    summary.failed += 1;
                    let message = err.as_db_error().map(|e| e.message().to_owned()).unwrap_or_else(|| err.to_string());
                    let _: () = self.reader.clone().hset(shard.errors(), &entry.id, message).await?;
                }
            }
        }
        Ok(())
    }
}

/// Whether a Postgres error means "unreachable / try the whole batch later"
/// rather than "this data is bad".
fn is_transient(err: &tokio_postgres::Error) -> bool {
    match err.code() {
        None => true,
        Some(code) => {
            let c = code.code();
            c.starts_with("08") || c.starts_with("53") || c.starts_with("57") || c.starts_with("40")
        }
    }
}
