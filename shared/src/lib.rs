//! Switchboard: the library every Lambda function and the local gateway share.
//!
//! A function's `main.rs` only wires telemetry, [`Config`], the clients built
//! once per cold start ([`App::build`]) and the Lambda runtime; everything a
//! request touches lives here, once.
//!
//! # Layout: floors, imports only downward
//! Each module sits on a floor and imports only from its own floor or below,
//! with no cycle (`tests/layers.rs` checks it on every run; README's
//! "Architecture" walks a message through them).
//! 1. **Leaves** — [`error`] (the one error type and its one mapping to
//!    HTTP), [`response`] (the JSON response helper), [`body_cap`] (outside
//!    services' bodies read up to a cap), [`clock`] (time),
//!    [`config`] (every setting, the integrations' included), [`domain`]
//!    (validated ids, the incoming message, context and owed messages,
//!    action statuses), [`customer_info`] (phone, e-mail, name, address found
//!    in messages), [`telemetry`] (tracing set up for CloudWatch and
//!    locally), [`metrics`] (CloudWatch Embedded Metric Format lines,
//!    aggregated per request), [`tls`] (rustls settings of the store
//!    clients: one provider, CA bundles).
//! 2. **Vocabulary** — [`ai`] (the provider trait and its embedded, HTTP and
//!    OpenAI providers), [`actions`] (the seven action types), [`jobs`] (the
//!    persistence jobs of the streams), [`auth`] (secrets compared in
//!    constant time).
//! 3. **Stores** — [`redis`] (connection, circuit breaker, keys in job shards,
//!    the Lua scripts behind the conversation store), [`cache`] (the
//!    versioned Redis cache and its metrics), [`postgres`] (pool, migrations,
//!    and every SQL statement).
//! 4. **Clients** — [`pancake`] (send and assign), [`integrations`]
//!    (`execute_api`'s allow-listed HTTP calls), [`app`] (the clients built
//!    once per cold start).
//! 5. **Flows** — [`pipeline`] (admit → answer → complete → deliver, on Redis
//!    or degraded on Postgres) and [`consumer`] (the `jobs` streams into
//!    Postgres, background answers, retries, sweeps).
//! 6. **HTTP** — [`http`] (the router), [`handlers`] (`enhanced-handle-message`),
//!    [`webhook`] (Pancake's webhook), [`admin`] (operator APIs), [`openapi`]
//!    (the route table and its OpenAPI document).
//! 7. **Entry points** — [`lambda`] (the adapter from `lambda_http` events to
//!    the router); `functions/`, `gateway/` and `bench/` live outside the crate.

// Leaves.
pub mod body_cap;
pub mod clock;
pub mod config;
pub mod customer_info;
pub mod dates;
pub mod deadline;
pub mod domain;
pub mod error;
pub mod metrics;
pub mod response;
pub mod telemetry;
pub mod tls;

// Vocabulary.
pub mod actions;
pub mod ai;
pub mod auth;
pub mod chat_token;
pub mod jobs;

// Stores.
pub mod cache;
pub mod connections;
pub mod postgres;
pub mod redis;

// Clients.
pub mod app;
pub mod handoff;
pub mod integrations;
pub mod live;
pub mod pancake;

// Flows.
pub mod chat;
pub mod consumer;
pub mod pipeline;

// HTTP.
pub mod admin;
pub mod chat_api;
pub mod handlers;
pub mod http;
pub mod openapi;
pub mod webhook;
pub mod ws;

// Entry points.
pub mod lambda;

pub use app::App;
pub use config::Config;
pub use error::AppError;
