//! Stream mechanics on one job shard: read new entries or claim idle ones,
//! delivery counts, acknowledgements, dead letters (recorded in Postgres,
//! then moved atomically with their ack to a bounded stream), and trimming
//! what every group member has acknowledged.

use std::{collections::HashMap, time::Duration};

use redis::{
    AsyncCommands,
    streams::{
        StreamAutoClaimReply, StreamId, StreamMaxlen, StreamPendingCountReply, StreamReadOptions, StreamReadReply,
    },
};

use super::{Consumer, Summary};
use crate::{
    error::AppError,
    postgres::dead_letters::{self, DeadLetter},
    redis::ShardKeys,
};

impl Consumer {
    /// Retries what is due on one shard (idle pending entries), else reads
    /// its new entries (blocking up to `block` when given).
    pub(super) async fn step_shard(&self, shard: &ShardKeys, block: Option<Duration>) -> Result<Summary, AppError> {
        let mut summary = Summary::default();
        let mut conn = self.reader.clone();
        let claimed: StreamAutoClaimReply = redis::cmd("XAUTOCLAIM")
            .arg(shard.jobs())
            .arg(&self.settings.group)
            .arg(&self.name)
            .arg(crate::clock::millis(self.settings.claim_idle))
            .arg("0-0")
            .arg("COUNT")
            .arg(self.settings.batch_size)
            .query_async(&mut conn)
            .await?;
        if !claimed.claimed.is_empty() {
            crate::metrics::queue_lag(claimed.claimed.iter().map(|entry| entry.id.as_str()));
            summary.reclaimed = claimed.claimed.len() as u64;
            summary += self.process(shard, claimed.claimed, true).await?;
        } else {
            let mut options =
                StreamReadOptions::default().group(&self.settings.group, &self.name).count(self.settings.batch_size);
            if let Some(block) = block {
                options = options.block(block.as_millis().max(1) as usize);
            }
            let read: Option<StreamReadReply> = conn.xread_options(&[shard.jobs()], &[">"], &options).await?;
            let entries: Vec<StreamId> = read.into_iter().flat_map(|r| r.keys).flat_map(|k| k.ids).collect();
            if !entries.is_empty() {
                crate::metrics::queue_lag(entries.iter().map(|entry| entry.id.as_str()));
                summary += self.process(shard, entries, false).await?;
            }
        }
        Ok(summary)
    }

    /// Delivery counts of claimed entries (from `XPENDING`).
    pub(super) async fn deliveries(
        &self,
        shard: &ShardKeys,
        entries: &[StreamId],
    ) -> Result<HashMap<String, u64>, AppError> {
        let (Some(first), Some(last)) = (entries.first(), entries.last()) else { return Ok(HashMap::new()) };
        let pending: StreamPendingCountReply = self
            .reader
            .clone()
            .xpending_count(shard.jobs(), &self.settings.group, &first.id, &last.id, entries.len() * 2 + 10)
            .await?;
        Ok(pending.ids.into_iter().map(|p| (p.id, p.times_delivered as u64)).collect())
    }

    /// Moves one entry to its shard's dead letters with its error, atomically
    /// with its ack (the same slot).
    pub(super) async fn dead_letter(
        &self,
        shard: &ShardKeys,
        entry: &StreamId,
        error: &str,
        deliveries: u64,
    ) -> Result<(), AppError> {
        // Postgres first: the Redis stream below is bounded and trimmed by
        // age, so the row is what keeps the letter. If Postgres is away the
        // entry is not acknowledged and comes back later.
        let field = |name: &str| entry.map.get(name).and_then(|v| redis::from_redis_value_ref::<String>(v).ok());
        let letter = DeadLetter {
            shard: i32::from(shard.index),
            stream_id: entry.id.clone(),
            job_type: field("type"),
            payload: field("payload"),
            // A replay puts a message back with the outcome its admit gave it.
            outcome: field("outcome"),
            error: error.to_owned(),
            deliveries: i32::try_from(deliveries).unwrap_or(i32::MAX),
        };
        dead_letters::record(&**self.app.db.get().await?, &letter).await?;
        let mut fields: Vec<(String, String)> = vec![
            ("original_id".into(), entry.id.clone()),
            ("error".into(), error.to_owned()),
            ("deliveries".into(), deliveries.to_string()),
        ];
        for (k, v) in &entry.map {
            if let Ok(text) = redis::from_redis_value_ref::<String>(v) {
                fields.push((k.clone(), text));
            }
        }
        let () = redis::pipe()
            .atomic()
            .xadd_maxlen(shard.dead_letters(), StreamMaxlen::Equals(self.settings.dead_letter_stream_max), "*", &fields)
            .ignore()
            .xack(shard.jobs(), &self.settings.group, &[&entry.id])
            .ignore()
            .hdel(shard.errors(), &entry.id)
            .ignore()
            .query_async(&mut self.reader.clone())
            .await?;
        let conversation_id = letter.payload.as_deref().and_then(crate::jobs::conversation_of);
        tracing::error!(shard = shard.index, stream_id = %entry.id, job_type = letter.job_type.as_deref(),
            conversation_id = conversation_id.as_deref(), deliveries, error, "dead-lettered");
        crate::metrics::dead_letter();
        Ok(())
    }

    pub(super) async fn ack(&self, shard: &ShardKeys, ids: &[String]) -> Result<(), AppError> {
        if ids.is_empty() {
            return Ok(());
        }
        let () = redis::pipe()
            .xack(shard.jobs(), &self.settings.group, ids)
            .ignore()
            .hdel(shard.errors(), ids)
            .ignore()
            .query_async(&mut self.reader.clone())
            .await?;
        Ok(())
    }

    /// Drops entries every group member has acknowledged (older than the
    /// oldest pending entry and than the group's read position).
    pub(super) async fn trim(&self, shard: &ShardKeys) -> Result<(), AppError> {
        let mut conn = self.reader.clone();
        let stream = shard.jobs();
        let groups: Vec<HashMap<String, redis::Value>> =
            redis::cmd("XINFO").arg("GROUPS").arg(&stream).query_async(&mut conn).await.unwrap_or_default();
        let mut floor: Option<String> = None;
        for group in groups {
            let Some(last) = group.get("last-delivered-id").and_then(|v| redis::from_redis_value_ref::<String>(v).ok())
            else {
                return Ok(());
            };
            let name =
                group.get("name").and_then(|v| redis::from_redis_value_ref::<String>(v).ok()).unwrap_or_default();
            let pending: redis::streams::StreamPendingReply = conn.xpending(&stream, &name).await?;
            let candidate = match pending {
                redis::streams::StreamPendingReply::Data(data) => data.start_id,
                _ => next_id(&last),
            };
            floor = Some(match floor {
                Some(f) if stream_id_lt(&f, &candidate) => f,
                _ => candidate,
            });
        }
        if let Some(floor) = floor {
            let _: i64 = redis::cmd("XTRIM").arg(&stream).arg("MINID").arg(&floor).query_async(&mut conn).await?;
        }
        Ok(())
    }
}

fn parse_id(id: &str) -> (u64, u64) {
    let (ms, seq) = id.split_once('-').unwrap_or((id, "0"));
    (ms.parse().unwrap_or(0), seq.parse().unwrap_or(0))
}

fn stream_id_lt(a: &str, b: &str) -> bool {
    parse_id(a) < parse_id(b)
}

/// The smallest id after `id`.
fn next_id(id: &str) -> String {
    let (ms, seq) = parse_id(id);
    format!("{ms}-{}", seq + 1)
}
