//! The background consumer of the `jobs` streams (DESIGN §6–7).
//!
//! A consumer group reads every job shard's stream (one, on a single node);
//! each read batch is written to Postgres in one transaction
//! ([`crate::postgres::writer`]) and acknowledged (`XACK`) only after the
//! commit. Side-effect jobs — answering a conversation in the background
//! (`process_conversation`, `redrive_conversation`) and retrying a Pancake
//! delivery (`deliver_action`) — run in tasks of their own (`parallel`), up
//! to `CONSUMER_CONCURRENCY` at once, each conversation's in stream order,
//! while reading and persisting go on; an entry is acknowledged when its
//! effect is done.
//!
//! Failure handling, judged by "can a message be lost or doubled here?":
//! - nothing is acknowledged before it is written, so a consumer that dies
//!   mid-batch loses nothing: its entries stay pending and another consumer
//!   reclaims them with `XAUTOCLAIM` once idle for `claim_idle`; the writes
//!   are idempotent, so a reclaimed batch that was in fact committed doubles
//!   nothing;
//! - Postgres unreachable: nothing is acknowledged and [`Consumer::run_until`]
//!   backs off; the backlog drains when it returns;
//! - an entry that fails stays pending and is retried after `claim_idle`
//!   (the retry backoff); after `max_deliveries` it moves to its shard's `jobs:dead` with
//!   its last error; an unparseable entry goes there at once and never blocks
//!   its batch;
//! - a batch that fails for one bad row is split and written entry by entry,
//!   so the others land.
//!
//! Two modes over the same code: *Lambda* (`background-consumer`, invoked by
//! a schedule, drains until its deadline) and *continuous* (the local gateway
//! runs it as a task).
//!
//! Here: the run loops. Beside it: `stream` (reads, claims, acks, dead
//! letters, trimming), `job` (parsing entries), `batch` (one read batch
//! into Postgres), `parallel` (effects in tasks), `effects` (background
//! answers and delivery retries), `sweep` (work nobody else will do).

mod batch;
mod effects;
mod job;
mod parallel;
mod stream;
mod sweep;

use std::{
    collections::HashSet,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use tokio::{sync::Semaphore, task::JoinSet};

use redis::AsyncCommands;
use serde::Serialize;

use crate::{
    App,
    clock::now_ms,
    config::ConsumerConfig,
    error::AppError,
    redis::{RedisConnection, ShardKeys, Timeouts},
};

/// Whether the consumer can run a job of type `kind` with this `payload`
/// (a dead letter an operator wants to replay): the conversation it belongs
/// to, or why not (an unknown type, a payload that does not parse as it).
pub fn replayable(kind: &str, payload: &str) -> Result<String, String> {
    job::Job::from_fields(kind, payload, None).map(|job| job.conversation_id().to_owned())
}

/// The idle sleep between passes over several shards: from this…
const MIN_IDLE: Duration = Duration::from_millis(5);
/// …doubling up to this (or `CONSUMER_BLOCK_MS`, if lower).
const MAX_IDLE: Duration = Duration::from_millis(250);

/// How long one invocation drains when its deadline is unusable (local emulators).
const LOCAL_DRAIN_BUDGET: Duration = Duration::from_secs(3);

/// What one step, one invocation or one run did.
#[derive(Debug, Default, Clone, PartialEq, Serialize)]
pub struct Summary {
    pub batches: u64,
    pub read: u64,
    pub reclaimed: u64,
    pub written: u64,
    pub acknowledged: u64,
    pub failed: u64,
    pub dead_lettered: u64,
    pub conversations_processed: u64,
    pub actions_redelivered: u64,
    pub stranded_redriven: u64,
}

impl std::ops::AddAssign for Summary {
    fn add_assign(&mut self, o: Self) {
        self.batches += o.batches;
        self.read += o.read;
        self.reclaimed += o.reclaimed;
        self.written += o.written;
        self.acknowledged += o.acknowledged;
        self.failed += o.failed;
        self.dead_lettered += o.dead_lettered;
        self.conversations_processed += o.conversations_processed;
        self.actions_redelivered += o.actions_redelivered;
        self.stranded_redriven += o.stranded_redriven;
    }
}

/// The consumer: cheap to clone (its effect tasks hold a clone).
#[derive(Clone, Debug)]
pub struct Consumer(Arc<Inner>);

impl std::ops::Deref for Consumer {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

/// What a [`Consumer`] holds.
pub struct Inner {
    app: App,
    /// A connection of its own: `XREADGROUP … BLOCK` would stall every other
    /// command multiplexed on a shared one. Reconnecting (a manager, or the
    /// cluster client), so a Redis restart or failover costs a failed step,
    /// not the consumer.
    reader: RedisConnection,
    settings: ConsumerConfig,
    name: String,
    /// The job shards (one stream each); read in turn.
    shards: Vec<ShardKeys>,
    /// How long the next idle pass over several shards sleeps (grows while idle).
    idle: Mutex<Duration>,
    last_sweep: Mutex<Option<Instant>>,
    /// Effect tasks started and not yet collected, with what each did.
    tasks: Mutex<JoinSet<Summary>>,
    /// Entries whose effect runs in a task here: a claim that hands one
    /// back to us while it runs must not start it twice.
    in_flight: Mutex<HashSet<String>>,
    /// One permit per effect task (`CONSUMER_CONCURRENCY`).
    permits: Arc<Semaphore>,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consumer").field("name", &self.name).field("shards", &self.shards.len()).finish_non_exhaustive()
    }
}

impl Consumer {
    /// Connects the reader and creates the consumer group if needed. The
    /// group starts at `0`, so entries enqueued before any consumer existed
    /// are consumed too.
    pub async fn connect(app: App, name: impl Into<String>) -> Result<Self, AppError> {
        let settings = app.config.consumer.clone();
        let reader = RedisConnection::open(
            app.config.redis_url.expose(),
            app.config.redis_cluster,
            app.config.redis_ca.as_ref().map(|ca| ca.pem.as_slice()),
            Timeouts { connect: Duration::from_secs(3), response: settings.block + Duration::from_secs(5) },
        )?;
        let consumer = Self(Arc::new(Inner {
            shards: app.store.keys().shards().collect(),
            idle: Mutex::new(MIN_IDLE),
            name: name.into(),
            permits: Arc::new(Semaphore::new(settings.concurrency)),
            settings,
            reader,
            app,
            last_sweep: Mutex::new(None),
            tasks: Mutex::new(JoinSet::new()),
            in_flight: Mutex::new(HashSet::new()),
        }));
        consumer.ensure_group().await?;
        Ok(consumer)
    }

    /// A consumer name unique to this process (a Lambda instance, a gateway).
    pub fn instance_name(kind: &str) -> String {
        format!("{kind}-{}", uuid::Uuid::new_v4().simple())
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub(super) async fn ensure_group(&self) -> Result<(), AppError> {
        for shard in &self.shards {
            let created: Result<(), redis::RedisError> =
                self.reader.clone().xgroup_create_mkstream(shard.jobs(), &self.settings.group, "0").await;
            match created {
                Err(e) if e.code() == Some("BUSYGROUP") => {}
                other => other?,
            }
        }
        Ok(())
    }

    /// One step: retry what is due (idle pending entries), else read new
    /// entries (blocking up to `block`); then sweep when due; then wait for
    /// the effects it started (the run loops do not wait).
    pub async fn step(&self) -> Result<Summary, AppError> {
        let started = self.step_started().await;
        self.and_finished(started).await
    }

    /// `started`'s summary with what its tasks did, once they are all done.
    pub(super) async fn and_finished(&self, started: Result<Summary, AppError>) -> Result<Summary, AppError> {
        let finished = self.finish().await;
        started.map(|mut summary| {
            summary += finished;
            summary
        })
    }

    /// A step whose effects may still be running.
    async fn step_started(&self) -> Result<Summary, AppError> {
        match self.step_once().await {
            Err(AppError::Unavailable { dependency: "redis" }) => {
                // A Redis that lost its data (no persistence, a fresh replica)
                // also lost the group: recreate it so the new entries flow.
                let _ = self.ensure_group().await;
                Err(AppError::Unavailable { dependency: "redis" })
            }
            other => other,
        }
    }

    pub(super) async fn step_once(&self) -> Result<Summary, AppError> {
        let mut summary = Summary::default();
        if let [shard] = self.shards.as_slice() {
            // One stream: wait for new entries on the server (`BLOCK`).
            summary += self.step_shard(shard, Some(self.settings.block)).await?;
        } else {
            // Several (a cluster's job shards, in different slots, cannot be
            // read by one `XREADGROUP`): one non-blocking pass over all of
            // them, then a short sleep that grows while they stay empty, so
            // an idle consumer costs a few commands per second and a busy
            // one never waits.
            for shard in &self.shards {
                summary += self.step_shard(shard, None).await?;
            }
            let pause = {
                let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
                if summary.read > 0 {
                    *idle = MIN_IDLE;
                    Duration::ZERO
                } else {
                    let pause = *idle;
                    *idle = (*idle * 2).min(self.settings.block.min(MAX_IDLE));
                    pause
                }
            };
            tokio::time::sleep(pause).await;
        }
        if self.sweep_due() {
            summary += self.sweep_started().await?;
        }
        Ok(summary)
    }

    /// Steps until `deadline`, backing off while a dependency is down.
    /// Effects started near the end may still run when it returns:
    /// [`Consumer::finish`] waits for them.
    pub async fn run_until(&self, deadline: Instant) -> Summary {
        let mut summary = Summary::default();
        let mut backoff = Duration::from_millis(100);
        while Instant::now() + self.settings.block < deadline {
            summary += self.collect();
            match self.step_started().await {
                Ok(s) => {
                    summary += s;
                    backoff = Duration::from_millis(100);
                }
                Err(err) => {
                    tracing::warn!(error = %err, backoff_ms = backoff.as_millis() as u64, "consumer step failed; backing off");
                    let remaining = deadline.saturating_duration_since(Instant::now());
                    tokio::time::sleep(backoff.min(remaining)).await;
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                }
            }
        }
        summary
    }

    /// Drains for one Lambda invocation whose deadline is `deadline_epoch_ms`.
    pub async fn drain(&self, deadline_epoch_ms: u64) -> Summary {
        let remaining = Duration::from_millis(deadline_epoch_ms.saturating_sub(now_ms()));
        let margin = self.settings.safety_margin;
        let round = crate::pipeline::min_round_time(&self.app);
        // Reading stops early enough for a round started on the last entries
        // read to end before the work deadline below (the overlapping next
        // invocation reads meanwhile): a job read later could only wait, held
        // by this consumer, for the claim idle time. Real Lambda always sends
        // a future deadline; a local emulator (cargo lambda's) may send none
        // usable: then drain for a fixed few seconds.
        let budget = if remaining.is_zero() {
            LOCAL_DRAIN_BUDGET
        } else if remaining > margin + round {
            remaining - margin - round
        } else {
            remaining.saturating_sub(margin)
        };
        tracing::info!(remaining_ms = remaining.as_millis() as u64, budget_ms = budget.as_millis() as u64, "draining");
        let deadline = Instant::now() + budget;
        // Every scheduled run sweeps at least once (stranded bursts within one period).
        if let Ok(mut last) = self.last_sweep.lock() {
            *last = None;
        }
        // Work (a re-drive's AI rounds, a delivery) ends by the invocation's
        // real end less the margin (none from a local emulator), so the
        // invocation returns before Lambda stops it.
        let work_end = crate::deadline::from_epoch_ms(deadline_epoch_ms, now_ms()).map(|end| end - margin);
        if work_end.is_some() && remaining < margin + round {
            tracing::warn!(
                remaining_ms = remaining.as_millis() as u64,
                "the invocation is shorter than one answering round: no conversation is answered in it"
            );
        }
        // A Lambda is frozen once it answers: every effect started in this
        // invocation ends in it (each respects the deadline).
        crate::deadline::within(work_end, async {
            let mut summary = self.run_until(deadline).await;
            summary += self.finish().await;
            summary
        })
        .await
    }

    /// Runs until `shutdown` resolves (continuous mode).
    pub async fn run(&self, shutdown: impl std::future::Future<Output = ()>) {
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => return,
                _ = self.run_until(Instant::now() + Duration::from_secs(60)) => {}
            }
        }
    }
}
