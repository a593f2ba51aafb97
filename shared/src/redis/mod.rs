//! Redis: the conversation store (admit, heartbeat, complete, cancel) and the
//! `jobs` stream.
//!
//! One reconnecting multiplexed connection ([`redis::aio::ConnectionManager`])
//! per cold start, created lazily so a function starts even while Redis is
//! away, behind the circuit breaker ([`breaker`]). Scripts are hashed once; `EVALSHA` falls back to loading the script
//! on `NOSCRIPT` (after a Redis restart or failover).

pub mod breaker;
pub mod connection;
mod keys;
mod scripts;
mod store;

pub(crate) use store::now_ms;

pub use breaker::{Breaker, BreakerConnection, BreakerState};
pub use connection::{RedisConnection, Timeouts};
pub use keys::{ConversationKeys, KeySpace, ShardKeys};
pub use store::{
    Admission, AdmitMode, AnswerRecord, Claim, Completion, ContextEntry, ConversationStore, Lease, OwedMessage,
    SendMark, Snapshot,
};
