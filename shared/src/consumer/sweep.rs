//! The sweep: work nobody else will do — conversations whose lock holder
//! died with messages owed, actions never delivered — and stream trimming.

use std::time::Instant;

use super::{Consumer, Summary};
use crate::{
    clock::now_ms,
    domain::ConversationId,
    error::AppError,
    jobs, pipeline,
    postgres::{actions as undelivered_actions, dead_letters},
};

impl Consumer {
    pub(super) fn sweep_due(&self) -> bool {
        let Ok(mut last) = self.last_sweep.lock() else { return false };
        match *last {
            Some(at) if at.elapsed() < self.settings.sweep_interval => false,
            _ => {
                *last = Some(Instant::now());
                true
            }
        }
    }

    /// Finds work nobody else will do: conversations with owed messages and
    /// no live lock holder (a holder died), and answers whose actions were
    /// never delivered (the holder died between `complete` and delivery).
    /// Also trims acknowledged entries off the stream. Waits for the
    /// re-drives it starts (the run loops do not: [`Consumer::sweep_started`]).
    pub async fn sweep(&self) -> Result<Summary, AppError> {
        let started = self.sweep_started().await;
        self.and_finished(started).await
    }

    /// A sweep whose re-drives may still be running.
    pub(super) async fn sweep_started(&self) -> Result<Summary, AppError> {
        let mut summary = Summary::default();
        let lock_ttl = crate::clock::millis(self.app.config.lock_ttl);
        // Re-drives start only with time for a round (the next sweep retries).
        let room = crate::deadline::allows(pipeline::min_round_time(&self.app));
        let stranded = if room {
            self.app.store.owed_conversations(now_ms().saturating_sub(lock_ttl), 50).await?
        } else {
            Vec::new()
        };
        let stranded = stranded.iter().filter_map(|id| ConversationId::parse(id).ok()).collect();
        self.start_redrives(stranded).await;
        summary += self.sweep_undelivered().await?;
        for shard in &self.shards {
            self.trim(shard).await?;
        }
        self.expire_dead_letters().await?;
        Ok(summary)
    }

    /// With Pancake delivery off there are still `execute_api` actions to
    /// settle (messages are recorded `not_sent`, never `pending`).
    pub(super) async fn sweep_undelivered(&self) -> Result<Summary, AppError> {
        let client = self.app.db.get().await?;
        let seconds = self.settings.undelivered_after.as_secs_f64();
        // Enqueue first, then flip to `retrying`: a crash in between leaves
        // rows `pending` (found again next sweep), never stranded. Two sweeps
        // racing may both enqueue one action; its send mark lets one deliver.
        let mut ids = Vec::new();
        for job in undelivered_actions::undelivered(&**client, seconds, 500).await? {
            let Ok(conversation) = ConversationId::parse(&job.conversation_id) else { continue };
            let payload = serde_json::to_string(&job).map_err(|_| AppError::Internal)?;
            self.app.store.enqueue(&conversation, jobs::DELIVER_ACTION, &payload).await?;
            ids.push(job.action.action_id);
        }
        undelivered_actions::mark_retrying(&**client, &ids).await?;
        Ok(Summary::default())
    }

    /// Dead letters older than the retention go, from Postgres and from the
    /// dead-letter streams alike (they can hold personal data).
    pub(super) async fn expire_dead_letters(&self) -> Result<(), AppError> {
        let retention = self.settings.dead_letter_retention;
        dead_letters::expire(&**self.app.db.get().await?, retention.as_secs_f64()).await?;
        let oldest_kept = now_ms().saturating_sub(crate::clock::millis(retention));
        for shard in &self.shards {
            let _: i64 = redis::cmd("XTRIM")
                .arg(shard.dead_letters())
                .arg("MINID")
                .arg(format!("{oldest_kept}-0"))
                .query_async(&mut self.reader.clone())
                .await?;
        }
        Ok(())
    }
}
