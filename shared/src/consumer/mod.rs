//! The background consumer of the `jobs` streams (DESIGN §6–7).
//!
//! A consumer group reads every job shard's stream (one, on a single node); each read batch is written to Postgres
//! in one transaction ([`writer`]) and acknowledged (`XACK`) only after the
//! commit. Side-effect jobs — answering a conversation in the background
//! (`process_conversation`, `redrive_conversation`) and retrying a Pancake
//! delivery (`deliver_action`) — run one by one after the batch.
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

pub mod writer;

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use redis::{
    AsyncCommands,
    streams::{StreamAutoClaimReply, StreamId, StreamPendingCountReply, StreamReadOptions, StreamReadReply},
};
use serde::Serialize;
use serde_json::Value;

use crate::{
    App,
    config::ConsumerConfig,
    domain::ConversationId,
    error::AppError,
    jobs::{self, ActionResults, DeliverAction, PersistAnswer, PersistMessage, Redrive, UpdateConversation},
    pipeline,
    redis::{RedisConnection, SendMark, ShardKeys, Timeouts, now_ms},
};
use writer::{Batch, MessageRow};

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

/// One parsed stream entry.
#[derive(Debug)]
enum Job {
    Message(MessageRow),
    Answer(Box<PersistAnswer>),
    Results(ActionResults),
    Update(UpdateConversation),
    Process(Redrive),
    Deliver(Box<DeliverAction>),
}

impl Job {
    fn parse(entry: &StreamId) -> Result<Self, String> {
        let field = |name: &str| -> Option<String> { entry.get::<String>(name) };
        let kind = field("type").ok_or("the entry has no type field")?;
        let payload = field("payload").ok_or("the entry has no payload field")?;
        fn de<T: serde::de::DeserializeOwned>(payload: &str) -> Result<T, String> {
            serde_json::from_str(payload).map_err(|e| format!("unparseable payload: {e}"))
        }
        Ok(match kind.as_str() {
            jobs::PERSIST_MESSAGE => Job::Message(MessageRow {
                job: de::<PersistMessage>(&payload)?,
                outcome: field("outcome").unwrap_or_else(|| "admitted".into()),
            }),
            jobs::PERSIST_ANSWER => Job::Answer(Box::new(de(&payload)?)),
            jobs::ACTION_RESULTS => Job::Results(de(&payload)?),
            jobs::UPDATE_CONVERSATION => Job::Update(de(&payload)?),
            jobs::REDRIVE_CONVERSATION | jobs::PROCESS_CONVERSATION => Job::Process(de(&payload)?),
            jobs::DELIVER_ACTION => Job::Deliver(Box::new(de(&payload)?)),
            other => return Err(format!("unknown job type {other:?}")),
        })
    }

    fn into_batch(self, batch: &mut Batch) -> Option<Job> {
        match self {
            Job::Message(m) => batch.messages.push(m),
            Job::Answer(a) => batch.answers.push(*a),
            Job::Results(r) => batch.results.push(r),
            Job::Update(u) => batch.updates.push(u),
            effect => return Some(effect),
        }
        None
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

pub struct Consumer {
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
}

impl std::fmt::Debug for Consumer {
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
            Timeouts { connect: Duration::from_secs(3), response: settings.block + Duration::from_secs(5) },
        )?;
        let consumer = Self {
            shards: app.store.keys().shards().collect(),
            idle: Mutex::new(MIN_IDLE),
            name: name.into(),
            settings,
            reader,
            app,
            last_sweep: Mutex::new(None),
        };
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

    async fn ensure_group(&self) -> Result<(), AppError> {
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
    /// entries (blocking up to `block`); then sweep when due.
    pub async fn step(&self) -> Result<Summary, AppError> {
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

    async fn step_once(&self) -> Result<Summary, AppError> {
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
            summary += self.sweep().await?;
        }
        Ok(summary)
    }

    /// Retries what is due on one shard (idle pending entries), else reads
    /// its new entries (blocking up to `block` when given).
    async fn step_shard(&self, shard: &ShardKeys, block: Option<Duration>) -> Result<Summary, AppError> {
        let mut summary = Summary::default();
        let mut conn = self.reader.clone();
        let claimed: StreamAutoClaimReply = redis::cmd("XAUTOCLAIM")
            .arg(shard.jobs())
            .arg(&self.settings.group)
            .arg(&self.name)
            .arg(self.settings.claim_idle.as_millis() as u64)
            .arg("0-0")
            .arg("COUNT")
            .arg(self.settings.batch_size)
            .query_async(&mut conn)
            .await?;
        if !claimed.claimed.is_empty() {
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
                summary += self.process(shard, entries, false).await?;
            }
        }
        Ok(summary)
    }

    /// Steps until `deadline` (Lambda mode), backing off while a dependency is down.
    pub async fn run_until(&self, deadline: Instant) -> Summary {
        let mut summary = Summary::default();
        let mut backoff = Duration::from_millis(100);
        while Instant::now() + self.settings.block < deadline {
            match self.step().await {
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
        // Real Lambda always sends a future deadline; a local emulator (cargo
        // lambda's) may send none usable. Then drain for a fixed few seconds.
        let budget = if remaining.is_zero() {
            LOCAL_DRAIN_BUDGET
        } else {
            remaining.saturating_sub(self.settings.safety_margin)
        };
        tracing::info!(remaining_ms = remaining.as_millis() as u64, budget_ms = budget.as_millis() as u64, "draining");
        let deadline = Instant::now() + budget;
        // Every scheduled run sweeps at least once (stranded bursts within one period).
        if let Ok(mut last) = self.last_sweep.lock() {
            *last = None;
        }
        self.run_until(deadline).await
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

    async fn process(&self, shard: &ShardKeys, entries: Vec<StreamId>, claimed: bool) -> Result<Summary, AppError> {
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
            let delivered = deliveries.get(&entry.id).copied().unwrap_or(1);
            if delivered > self.settings.max_deliveries
                && let Some(error) = errors.get(&entry.id)
            {
                self.dead_letter(shard, entry, error, delivered).await?;
                summary.dead_lettered += 1;
                continue;
            }
            match Job::parse(entry) {
                Err(error) => {
                    tracing::error!(id = %entry.id, %error, "poison entry moved to the dead-letter stream");
                    self.dead_letter(shard, entry, &error, delivered).await?;
                    summary.dead_lettered += 1;
                }
                Ok(job) => match job.into_batch(&mut batch) {
                    None => batch_ids.push(entry.id.clone()),
                    Some(effect) => effects.push((entry.id.clone(), effect)),
                },
            }
        }

        if !batch.is_empty() {
            let mut client = self.app.db.get().await?;
            match writer::write(&mut client, &batch).await {
                Ok(()) => {
                    summary.written += batch.len() as u64;
                    acked.append(&mut batch_ids);
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
        // effects run, and each effect as soon as it is done, so a consumer
        // that dies (a Lambda past its deadline) redoes as little as possible.
        self.ack(shard, &acked).await?;
        summary.acknowledged += acked.len() as u64;
        for (id, effect) in effects {
            match self.run_effect(effect, &mut summary, deliveries.get(&id).copied().unwrap_or(1)).await {
                Ok(()) => {
                    self.ack(shard, std::slice::from_ref(&id)).await?;
                    summary.acknowledged += 1;
                }
                Err(error) => {
                    summary.failed += 1;
                    let _: () = self.reader.clone().hset(shard.errors(), &id, error).await?;
                }
            }
        }
        Ok(summary)
    }

    /// Isolates the entry that breaks a batch: each entry in its own transaction.
    async fn write_one_by_one(
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
            match writer::write(&mut client, &single).await {
                Ok(()) => {
                    summary.written += 1;
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

    async fn run_effect(&self, effect: Job, summary: &mut Summary, delivered: u64) -> Result<(), String> {
        match effect {
            Job::Process(job) => {
                let conversation = ConversationId::parse(&job.conversation_id).map_err(|e| e.to_string())?;
                pipeline::redrive(&self.app, &conversation, job.page_id.as_deref(), job.assistant_id.as_deref())
                    .await
                    .map_err(|e| e.to_string())?;
                summary.conversations_processed += 1;
                Ok(())
            }
            Job::Deliver(job) => {
                let conversation = ConversationId::parse(&job.conversation_id).map_err(|e| e.to_string())?;
                let attempt = job.attempt.max(delivered as u32);
                let result = match self.app.store.send_mark(&conversation, &job.action.action_id).await {
                    Err(e) => return Err(e.to_string()),
                    // Pancake already has it (the holder's results were lost): record, never resend.
                    Ok(SendMark::AlreadySent) => crate::jobs::ActionResult {
                        action_id: job.action.action_id,
                        action_type: job.action.action_type.clone(),
                        status: "sent".into(),
                        pancake_message_id: None,
                        error: None,
                        retryable: false,
                        attempt,
                        response: None,
                    },
                    Ok(SendMark::Busy) => return Err("a delivery of this action is under way".into()),
                    Ok(SendMark::Go) => {
                        pipeline::execute(&self.app, &conversation, job.page_id.as_deref(), &job.action, attempt).await
                    }
                };
                let failed_retryable = result.status == "failed" && result.retryable;
                let final_failure = failed_retryable && delivered >= self.settings.max_deliveries;
                let mut recorded = result.clone();
                if final_failure {
                    recorded.retryable = false;
                }
                let results = ActionResults {
                    response_id: job.response_id,
                    conversation_id: job.conversation_id.clone(),
                    fence: job.fence,
                    results: vec![recorded],
                };
                let sent: Vec<String> = result.pancake_message_id.clone().into_iter().collect();
                let payload = serde_json::to_string(&results).map_err(|e| e.to_string())?;
                let marks = [(job.action.action_id, result.status == "sent")];
                self.app
                    .store
                    .record_delivery(&conversation, &sent, &payload, &[], &marks)
                    .await
                    .map_err(|e| e.to_string())?;
                summary.actions_redelivered += 1;
                if failed_retryable {
                    // Stays pending: retried after `claim_idle`; past the
                    // delivery budget it moves to the dead-letter stream (its
                    // action already recorded as finally `failed`).
                    Err(result.error.unwrap_or_else(|| "delivery failed".into()))
                } else {
                    Ok(())
                }
            }
            _ => Ok(()),
        }
    }

    /// Delivery counts of claimed entries (from `XPENDING`).
    async fn deliveries(&self, shard: &ShardKeys, entries: &[StreamId]) -> Result<HashMap<String, u64>, AppError> {
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
    async fn dead_letter(
        &self,
        shard: &ShardKeys,
        entry: &StreamId,
        error: &str,
        deliveries: u64,
    ) -> Result<(), AppError> {
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
            .xadd(shard.dead_letters(), "*", &fields)
            .ignore()
            .xack(shard.jobs(), &self.settings.group, &[&entry.id])
            .ignore()
            .hdel(shard.errors(), &entry.id)
            .ignore()
            .query_async(&mut self.reader.clone())
            .await?;
        Ok(())
    }

    async fn ack(&self, shard: &ShardKeys, ids: &[String]) -> Result<(), AppError> {
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

    fn sweep_due(&self) -> bool {
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
    /// Also trims acknowledged entries off the stream.
    pub async fn sweep(&self) -> Result<Summary, AppError> {
        let mut summary = Summary::default();
        let lock_ttl = self.app.config.lock_ttl.as_millis() as u64;
        let stranded = self.app.store.owed_conversations(now_ms().saturating_sub(lock_ttl), 50).await?;
        for id in stranded {
            let Ok(conversation) = ConversationId::parse(&id) else { continue };
            match pipeline::redrive(&self.app, &conversation, None, None).await {
                Ok(Some(_)) => summary.stranded_redriven += 1,
                Ok(None) => {}
                Err(err) => tracing::warn!(conversation_id = %id, error = %err, "re-drive failed; retried next sweep"),
            }
        }
        summary += self.sweep_undelivered().await?;
        for shard in &self.shards {
            self.trim(shard).await?;
        }
        Ok(summary)
    }

    async fn sweep_undelivered(&self) -> Result<Summary, AppError> {
        if !self.app.pancake.enabled() {
            return Ok(Summary::default());
        }
        let client = self.app.db.get().await?;
        let seconds = self.settings.undelivered_after.as_secs_f64();
        // Enqueue first, then flip to `retrying`: a crash in between leaves
        // rows `pending` (found again next sweep), never stranded. Two sweeps
        // racing may both enqueue one action; its send mark lets one deliver.
        let rows = client
            .query(
                "SELECT m.id, m.response_id, m.conversation_id, m.action_type, m.action_data, c.page_id, r.fence
                   FROM message_actions m JOIN ai_responses r ON r.id = m.response_id
                   LEFT JOIN conversations c ON c.conversation_id = r.conversation_id
                  WHERE m.status = 'pending' AND m.created_at < now() - make_interval(secs => $1)
                  LIMIT 500",
                &[&seconds],
            )
            .await?;
        let mut ids = Vec::new();
        for row in rows {
            let data: Value = row.get(4);
            let job = DeliverAction {
                response_id: row.get(1),
                conversation_id: row.get(2),
                page_id: row.get(5),
                fence: row.get(6),
                action: crate::actions::Action {
                    action_id: row.get(0),
                    action_type: row.get(3),
                    data: data.as_object().cloned().unwrap_or_default(),
                },
                attempt: 1,
            };
            let Ok(conversation) = ConversationId::parse(&job.conversation_id) else { continue };
            let payload = serde_json::to_string(&job).map_err(|_| AppError::Internal)?;
            self.app.store.enqueue(&conversation, jobs::DELIVER_ACTION, &payload).await?;
            ids.push(job.action.action_id);
        }
        if !ids.is_empty() {
            client
                .execute(
                    "UPDATE message_actions SET status = 'retrying', updated_at = now() WHERE id = ANY($1) AND status = 'pending'",
                    &[&ids],
                )
                .await?;
        }
        Ok(Summary { actions_redelivered: 0, ..Default::default() })
    }

    /// Drops entries every group member has acknowledged (older than the
    /// oldest pending entry and than the group's read position).
    async fn trim(&self, shard: &ShardKeys) -> Result<(), AppError> {
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
