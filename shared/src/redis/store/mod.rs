//! The conversation store: the scripts of DESIGN §6 behind typed calls, one
//! `impl ConversationStore` block per concern: `lifecycle` (admit, heartbeat,
//! complete, claim, cancel, release, conversation events, with `admit_args`
//! naming admit's arguments), `context`, `delivery` (send and echo marks,
//! delivery records), `streams` (job streams), `scans` (the sweep's and
//! operators' reads and cleanup), `security` (refused credentials), `ai_calls`
//! (AI calls in flight, across processes), `outage`
//! (the lazy rebuild after degraded mode), and `reply` (parsing script replies).
//!
//! Round trips on the message path: one `EVALSHA` to admit (dedupe, context,
//! state, rate limit, pause, lock, fencing number and the persistence job, all
//! atomic) and one to complete (token check, newer-message check, answer
//! recorded, lock released, answer job). Because the persistence job is
//! written inside the same script as the dedupe mark, a message can never be
//! marked seen without also being enqueued.

mod admit_args;
mod ai_calls;
mod context;
mod delivery;
mod lifecycle;
mod outage;
mod reply;
mod scans;
mod security;
mod streams;

use std::{sync::Arc, time::Duration};

use super::{
    breaker::{Breaker, BreakerConnection},
    connection::{RedisConnection, Timeouts},
    keys::KeySpace,
};
use crate::{
    config::Config,
    domain::{ContextEntry, OwedMessage, Snapshot},
    error::RateScope,
};

/// The lock, held: its random token and the fencing number taken with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub token: String,
    pub fence: i64,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Admission {
    Duplicate,
    /// A bot or system message: recorded, nothing to answer. In
    /// [`AdmitMode::Store`] also a customer's message, recorded unanswered
    /// (persisted with the outcome `unanswered`).
    Stored,
    BotPaused,
    RateLimited {
        retry_after_secs: u64,
        scope: RateScope,
    },
    /// Another invocation holds the conversation; this message joined its context.
    Locked,
    /// Deferred mode: owed, and a `process_conversation` job was enqueued.
    Queued,
    Acquired {
        lease: Lease,
        snapshot: Snapshot,
    },
}

/// How admit proceeds once a customer message is owed.
#[derive(Debug, Clone, Copy)]
pub enum AdmitMode<'a> {
    /// Try the lock now and answer within this request.
    Sync,
    /// Enqueue this `process_conversation` job instead (the webhook path).
    Defer { process_job: &'a str },
    /// Record it, never answer it (reconciliation's messages too old to
    /// answer now): a customer's is persisted `unanswered`, nothing is owed;
    /// a human's pauses the bot only for what is left of the pause counted
    /// from the message's own time.
    Store,
}

/// The outcome of claiming a conversation with no message in hand.
#[derive(Debug, Clone, PartialEq)]
pub enum Claim {
    Nothing,
    BotPaused,
    Locked,
    Acquired { lease: Lease, snapshot: Snapshot, page_id: Option<String>, assistant_id: Option<String> },
}

#[derive(Debug, Clone, PartialEq)]
pub enum Completion {
    /// The lock expired or another processor took it: the answer is discarded.
    Lost,
    /// A human took over during the AI call: the answer is discarded, the lock released.
    Paused,
    /// Newer customer messages arrived: re-run with this fuller snapshot; the lock is kept.
    Newer(Snapshot),
    /// Recorded and released; `still_owed` lists messages that arrived after
    /// the answer and are handed to the background re-drive.
    Done { still_owed: Vec<OwedMessage> },
}

/// What `complete` records with a final answer.
#[derive(Debug)]
pub struct AnswerRecord<'a> {
    pub context_entry: &'a ContextEntry,
    pub job: &'a str,
    pub redrive_job: &'a str,
    pub pause_bot: bool,
    /// Texts about to be sent to Pancake (their webhook echoes are ignored).
    pub echo_texts: &'a [String],
    /// Actions with an outside effect about to be delivered, marked `sending`.
    pub send_marks: &'a [uuid::Uuid],
}

/// Whether an action may be delivered now (see `send_mark.lua`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendMark {
    AlreadySent,
    /// Another delivery owns the mark: wait (never counted as a failure).
    Busy,
    /// The mark is ours and nothing was attempted, or the last attempt
    /// failed for certain: deliver.
    Go,
    /// The mark is ours, but an earlier attempt may have landed (its owner
    /// died, or it timed out): look before sending, never send blindly.
    Unknown,
}

/// What a delivery left on an action's send mark (see `record_delivery.lua`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MarkAfter {
    /// Delivered: never again.
    Sent,
    /// Definitely not delivered (a definite failure, or never started).
    Free,
    /// Outcome unknown: the next attempt looks before it sends.
    Unknown,
}

/// How long a send mark (and what it says) is kept.
pub(super) const SENT_TTL_SECS: u64 = 7 * 24 * 3600;

#[derive(Clone)]
pub struct ConversationStore {
    conn: BreakerConnection,
    /// Messages and pauses handled by the degraded path since Redis was last
    /// reachable (see [`ConversationStore::restore_after_outage`]).
    degraded: Arc<std::sync::Mutex<outage::Remembered>>,
    keys: KeySpace,
    lock_ttl: Duration,
    context_ttl: Duration,
    dedupe_ttl: Duration,
    pause_ttl: Duration,
    context_max: usize,
    context_max_bytes: usize,
    rate_max: u32,
    page_rate_max: u32,
    rate_window: Duration,
    /// How long a delivery owns a send mark (`Config::delivery_window`).
    mark_window: Duration,
    /// How long an `unknown` mark holds off the look-up (`UNKNOWN_OUTCOME_GRACE_MS`).
    unknown_grace: Duration,
}

impl std::fmt::Debug for ConversationStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConversationStore").field("keys", &self.keys).finish_non_exhaustive()
    }
}

impl ConversationStore {
    /// Builds the store without connecting: the first command connects, and a
    /// lost connection is re-established in the background.
    pub fn new(config: &Config) -> Result<Self, redis::RedisError> {
        let conn = RedisConnection::open(
            config.redis_url.expose(),
            config.redis_cluster,
            config.redis_ca.as_ref().map(|ca| ca.pem.as_slice()),
            Timeouts { connect: Duration::from_secs(2), response: Duration::from_secs(3) },
        )?;
        let breaker = Arc::new(Breaker::new(config.redis_breaker_failures, config.redis_breaker_cooldown));
        let conn = BreakerConnection::new(conn, breaker);
        Ok(Self {
            conn,
            degraded: Arc::default(),
            keys: KeySpace::new(&config.redis_key_prefix, &config.jobs_stream, config.redis_shards),
            lock_ttl: config.lock_ttl,
            context_ttl: config.context_ttl,
            dedupe_ttl: config.dedupe_ttl,
            pause_ttl: config.bot_pause_ttl,
            context_max: config.context_max_messages,
            context_max_bytes: config.context_max_bytes,
            rate_max: config.rate_limit_conversation_max,
            page_rate_max: config.rate_limit_page_max,
            rate_window: config.rate_limit_window,
            mark_window: config.delivery_window(),
            unknown_grace: config.unknown_outcome_grace,
        })
    }

    pub fn keys(&self) -> &KeySpace {
        &self.keys
    }

    /// A clone of the shared connection, for callers with their own commands.
    pub fn connection(&self) -> BreakerConnection {
        self.conn.clone()
    }

    /// The circuit breaker every command of this process goes through.
    pub fn breaker(&self) -> &Arc<Breaker> {
        self.conn.breaker()
    }
}

/// Messages remembered for the lazy rebuild (a degraded period longer than
/// this many messages per process rebuilds the rest's threads only when
/// their Redis context expires).
pub(super) const DEGRADED_MEMORY: usize = 100_000;
/// How long a conversation counts as known after its last message.
pub(super) const KNOWN_TTL_SECS: u64 = 30 * 24 * 3600;

/// How long the echo of a sent text is recognised by its digest alone:
/// longer than a delivery can still be retried (the sweep after
/// `UNDELIVERED_AFTER_SECONDS`, busy waits, `CONSUMER_MAX_DELIVERIES`
/// attempts), so a retried send's late echo never passes for a human.
pub(super) const ECHO_TTL_SECS: u64 = 3600;
