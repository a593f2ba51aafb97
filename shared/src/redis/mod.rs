//! Redis: the conversation store (admit, heartbeat, complete, cancel), the
//! job streams, and the connection every other module shares.
//!
//! One reconnecting multiplexed connection per cold start — a single node's
//! connection manager or a cluster client ([`connection`]) — created lazily
//! so a function starts even while Redis is away, behind the circuit breaker
//! ([`breaker`]). Keys are laid out in job shards so every script stays in
//! one cluster slot ([`keys`]). Scripts are hashed once; `EVALSHA` falls
//! back to loading the script on `NOSCRIPT` (after a restart or failover).

pub mod breaker;
pub mod connection;
mod keys;
mod scripts;
mod store;

pub use breaker::{Breaker, BreakerConnection, BreakerState};
pub use connection::{RedisConnection, Timeouts};
pub use keys::{ConversationKeys, KeySpace, ShardKeys, glob_escape, key_part};
pub use store::{Admission, AdmitMode, AnswerRecord, Claim, Completion, ConversationStore, Lease, MarkAfter, SendMark};
