//! The background consumer's settings (`CONSUMER_*` and the dead letters').

use std::time::Duration;

use super::{ConfigError, Env};

/// The background consumer of the `jobs` stream.
#[derive(Debug, Clone)]
pub struct ConsumerConfig {
    pub group: String,
    /// Entries per read (and per Postgres transaction).
    pub batch_size: usize,
    /// How long one `XREADGROUP` waits for new entries.
    pub block: Duration,
    /// An entry pending this long is retried (its consumer failed it, or died).
    pub claim_idle: Duration,
    /// Deliveries after which an entry moves to the dead-letter stream.
    pub max_deliveries: u64,
    /// How often stranded bursts and undelivered actions are looked for.
    pub sweep_interval: Duration,
    /// Lambda mode stops reading this long before the invocation's deadline.
    pub safety_margin: Duration,
    /// Answering and delivery jobs run at once (`CONSUMER_CONCURRENCY`),
    /// each conversation's in order.
    pub concurrency: usize,
    /// An action still `pending` this long after its answer was never delivered.
    pub undelivered_after: Duration,
    /// Entries each shard's dead-letter stream keeps (exactly; every
    /// dead letter is also in Postgres' `dead_letters`).
    pub dead_letter_stream_max: usize,
    /// How long dead letters are kept, in the streams and in Postgres.
    pub dead_letter_retention: Duration,
}

impl ConsumerConfig {
    pub(super) fn from_env<F: Fn(&str) -> Option<String>>(env: &Env<'_, F>) -> Result<Self, ConfigError> {
        Ok(Self {
            group: env.get("CONSUMER_GROUP").unwrap_or_else(|| "persist".into()),
            batch_size: env.parse_or("CONSUMER_BATCH_SIZE", 500usize)?.clamp(1, 10_000),
            block: Duration::from_millis(env.parse_or("CONSUMER_BLOCK_MS", 1_000u64)?),
            claim_idle: Duration::from_millis(env.parse_or("CONSUMER_CLAIM_IDLE_MS", 15_000u64)?),
            max_deliveries: env.parse_or("CONSUMER_MAX_DELIVERIES", 5u64)?.max(1),
            sweep_interval: Duration::from_millis(env.parse_or("CONSUMER_SWEEP_MS", 10_000u64)?),
            safety_margin: Duration::from_millis(env.parse_or("CONSUMER_SAFETY_MARGIN_MS", 5_000u64)?),
            // Each job is mostly waiting on the AI or Pancake: 32 keeps
            // a 1 s AI at ~30 answers/s per consumer while staying under
            // a typical AI account's concurrent-request limit and far
            // under the Redis/Postgres connection budgets.
            concurrency: env.parse_or("CONSUMER_CONCURRENCY", 32usize)?.clamp(1, 1_024),
            undelivered_after: Duration::from_secs(env.parse_or("UNDELIVERED_AFTER_SECONDS", 120u64)?),
            dead_letter_stream_max: env.parse_or("DEAD_LETTER_STREAM_MAX", 1_000usize)?.max(1),
            dead_letter_retention: Duration::from_secs(
                env.parse_or("DEAD_LETTER_RETENTION_DAYS", 30u64)?.clamp(1, 3_650) * 86_400,
            ),
        })
    }
}
