//! Switchboard: the library every Lambda function and the local gateway share.
//!
//! A function's `main.rs` only wires telemetry, [`Config`], the clients built
//! once per cold start ([`App::build`]) and the Lambda runtime; everything a
//! request touches lives here, once.
//!
//! # Layout
//! - [`config`]: the typed configuration read once from the environment.
//! - [`error`]: the one error type and its one mapping to HTTP.
//! - [`domain`]: validated identifiers and the incoming message.
//! - [`auth`]: bearer tokens compared in constant time.
//! - [`http`]: the router every entry point (Lambda, local gateway) calls.
//! - [`lambda`]: the adapter from `lambda_http` events to [`http`].
//! - [`telemetry`]: JSON tracing for CloudWatch.
//! - [`app`]: the clients built once per cold start.
//! - [`cache`]: the versioned Redis cache (assistants, schemas, threads, answers) and its metrics.
//! - [`redis`]: the single-node/cluster connection, the circuit breaker, keys in
//!   job shards, Lua scripts and the conversation store (admit, heartbeat,
//!   complete, cancel) plus the sharded `jobs` streams.
//! - [`postgres`]: the pool, migrations and assistant lookups.
//! - [`ai`]: the AI provider trait and its embedded, HTTP and OpenAI providers.
//! - [`actions`]: extraction and validation of the seven action types.
//! - [`integrations`]: `execute_api`'s allow-listed HTTP integrations, OAuth
//!   tokens cached once across instances, GET responses cached.
//! - [`openapi`]: the OpenAPI 3.1 document of every route, at `/openapi.json`.
//! - [`pancake`]: the client for Pancake's send-message and assign APIs.
//! - [`jobs`]: the persistence jobs written to the stream.
//! - [`customer_info`]: phone, e-mail, name and address found in messages.
//! - [`consumer`]: the background consumer of the `jobs` stream (batched,
//!   idempotent Postgres writes, retries, dead letters, re-drives).
//! - [`pipeline`]: admit → process (AI, actions, complete, restarts) → deliver.
//! - [`degraded`]: the message path from Postgres while Redis is unreachable
//!   (advisory lock, direct writes), behind the circuit breaker.
//! - [`handlers`]: the HTTP handlers (`enhanced-handle-message`).
//! - [`webhook`]: Pancake's own webhook, acknowledged at once.
//! - [`admin`]: operator APIs: health, stats, control, assistants, cache.

pub mod actions;
pub mod admin;
pub mod ai;
pub mod app;
pub mod auth;
pub mod cache;
pub mod config;
pub mod consumer;
pub mod customer_info;
pub mod degraded;
pub mod domain;
pub mod error;
pub mod handlers;
pub mod http;
pub mod integrations;
pub mod jobs;
pub mod lambda;
pub mod openapi;
pub mod pancake;
pub mod pipeline;
pub mod postgres;
pub mod redis;
pub mod telemetry;
pub mod webhook;

pub use app::App;
pub use config::Config;
pub use error::AppError;

/// Seconds since the Unix epoch as a float, the timestamp format of seed 001.
pub fn now_epoch_seconds() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}
