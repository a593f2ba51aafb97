//! Effects in tasks of their own: answering and delivery jobs run at once,
//! up to `CONSUMER_CONCURRENCY`, while the loop goes on reading and
//! persisting. A batch's effects are grouped by conversation and each
//! group runs in stream order in one task, so one conversation's jobs never
//! overtake each other; different conversations run side by side.
//!
//! Lost or doubled? An entry is acknowledged only when its effect is done,
//! so a task cut off (the process dies, the Lambda is frozen) leaves it
//! pending for a reclaim. An entry reclaimed while its task still runs here
//! is skipped (`in_flight`); one reclaimed by another consumer meanwhile is
//! harmless: an answer starts by claiming the conversation's lock, a
//! delivery by taking the action's send mark. Each task carries the
//! invocation's deadline, so none starts a round it cannot finish, and
//! [`Consumer::finish`] waits for every task before a Lambda answers.

use std::collections::HashMap;

use redis::AsyncCommands;

use super::{Consumer, Summary, effects::EffectError, job::Job};
use crate::{deadline, domain::ConversationId, pipeline, redis::ShardKeys};

/// One effect entry waiting to run.
#[derive(Debug)]
pub(super) struct Pending {
    pub id: String,
    pub effect: Job,
    /// Times the entry has been delivered (1 on a first read).
    pub delivered: u64,
    /// Reclaimed after `claim_idle` rather than read new.
    pub claimed: bool,
}

/// Takes an entry off `in_flight` when its task is done with it, however
/// it ends (a panic or an abort included): made before the task is
/// spawned and moved into it.
struct InFlight(Consumer, String);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.lock().unwrap_or_else(|e| e.into_inner()).remove(&self.1);
    }
}

/// The `in_flight` key of an entry: ids repeat across shards' streams.
pub(super) fn flight_key(shard: &ShardKeys, id: &str) -> String {
    format!("{}:{id}", shard.index)
}

impl Consumer {
    /// Whether this entry's effect runs in a task here right now.
    pub(super) fn is_in_flight(&self, shard: &ShardKeys, id: &str) -> bool {
        self.in_flight.lock().unwrap_or_else(|e| e.into_inner()).contains(&flight_key(shard, id))
    }
}

impl Consumer {
    /// Starts `effects` (in stream order), one task per conversation; waits
    /// only for a free permit.
    pub(super) async fn start_effects(&self, shard: &ShardKeys, effects: Vec<Pending>) {
        let mut groups: Vec<Vec<Pending>> = Vec::new();
        let mut by_conversation: HashMap<String, usize> = HashMap::new();
        let mut guards: Vec<Vec<InFlight>> = Vec::new();
        for pending in effects {
            let key = flight_key(shard, &pending.id);
            if !self.in_flight.lock().unwrap_or_else(|e| e.into_inner()).insert(key.clone()) {
                // Its task here is still running: acknowledged when it ends.
                continue;
            }
            let guard = InFlight(self.clone(), key);
            let conversation = pending.effect.conversation_id().to_owned();
            match by_conversation.get(&conversation) {
                Some(&index) => {
                    groups[index].push(pending);
                    guards[index].push(guard);
                }
                None => {
                    by_conversation.insert(conversation, groups.len());
                    groups.push(vec![pending]);
                    guards.push(vec![guard]);
                }
            }
        }
        for (group, guards) in groups.into_iter().zip(guards) {
            let permit = self.permits.clone().acquire_owned().await;
            let this = self.clone();
            let shard = shard.clone();
            let task = deadline::within(deadline::current(), async move {
                let mut summary = Summary::default();
                let mut guards = guards.into_iter();
                for pending in group {
                    let _in_flight = guards.next();
                    this.settle(&shard, pending, &mut summary).await;
                }
                drop(permit);
                summary
            });
            self.tasks.lock().unwrap_or_else(|e| e.into_inner()).spawn(task);
        }
    }

    /// Re-drives conversations whose lock holder died (the sweep's find),
    /// each in a task like an effect; one still running from an earlier
    /// sweep is not started again.
    pub(super) async fn start_redrives(&self, conversations: Vec<ConversationId>) {
        for conversation in conversations {
            let key = format!("stranded:{conversation}");
            if !self.in_flight.lock().unwrap_or_else(|e| e.into_inner()).insert(key.clone()) {
                continue;
            }
            let in_flight = InFlight(self.clone(), key);
            let permit = self.permits.clone().acquire_owned().await;
            let this = self.clone();
            let task = deadline::within(deadline::current(), async move {
                let _in_flight = in_flight;
                let mut summary = Summary::default();
                match pipeline::redrive(&this.app, &conversation, None, None).await {
                    Ok(Some(_)) => summary.stranded_redriven += 1,
                    Ok(None) => {}
                    Err(err) => {
                        tracing::warn!(conversation_id = %conversation, error = %err, "re-drive failed; retried next sweep")
                    }
                }
                drop(permit);
                summary
            });
            self.tasks.lock().unwrap_or_else(|e| e.into_inner()).spawn(task);
        }
    }

    /// Runs one effect and acknowledges, defers or fails its entry.
    async fn settle(&self, shard: &ShardKeys, pending: Pending, summary: &mut Summary) {
        let Pending { id, effect, delivered, claimed } = pending;
        let conversation_id = effect.conversation_id().to_owned();
        let settled = match self.run_effect(effect, summary, delivered, claimed).await {
            Ok(()) => {
                let acked = self.ack(shard, std::slice::from_ref(&id)).await;
                if acked.is_ok() {
                    summary.acknowledged += 1;
                }
                acked
            }
            // Left pending with no error recorded and its delivery count put
            // back (each claim raised it), so it is claimed again after
            // `claim_idle`, and waiting never spends its retry budget nor
            // dead-letters it.
            Err(EffectError::Busy) => redis::pipe()
                .hdel(shard.errors(), &id)
                .ignore()
                .cmd("XCLAIM")
                .arg(shard.jobs())
                .arg(&self.settings.group)
                .arg(&self.name)
                .arg(0)
                .arg(&id)
                .arg("RETRYCOUNT")
                .arg(delivered.saturating_sub(1))
                .arg("JUSTID")
                .ignore()
                .query_async::<()>(&mut self.reader.clone())
                .await
                .map_err(Into::into),
            Err(EffectError::Failed(error)) => {
                summary.failed += 1;
                self.reader.clone().hset::<_, _, _, ()>(shard.errors(), &id, error).await.map_err(Into::into)
            }
        };
        if let Err(err) = settled {
            // The entry stays pending and is reclaimed: every effect is safe to redo.
            tracing::warn!(id = %id, conversation_id = %conversation_id, error = %err, "effect entry not settled; it will be retried");
        }
    }

    /// What the finished effect tasks did (without waiting for the others).
    pub(super) fn collect(&self) -> Summary {
        let mut summary = Summary::default();
        let mut tasks = self.tasks.lock().unwrap_or_else(|e| e.into_inner());
        while let Some(done) = tasks.try_join_next() {
            summary += task_summary(done);
        }
        summary
    }

    /// Waits for every effect task started so far: a Lambda invocation calls
    /// it before it answers (it is frozen after), [`Consumer::step`] after
    /// each step.
    pub async fn finish(&self) -> Summary {
        let mut tasks = std::mem::take(&mut *self.tasks.lock().unwrap_or_else(|e| e.into_inner()));
        let mut summary = Summary::default();
        while let Some(done) = tasks.join_next().await {
            summary += task_summary(done);
        }
        summary
    }
}

fn task_summary(done: Result<Summary, tokio::task::JoinError>) -> Summary {
    done.unwrap_or_else(|err| {
        // Its entries stay pending (never acknowledged) and are reclaimed.
        tracing::error!(error = %err, "an effect task ended abnormally");
        Summary::default()
    })
}
