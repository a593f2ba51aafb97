//! [`App`]: the clients a function builds once per cold start and shares
//! across invocations (Redis connection, Postgres pool, HTTP client, AI
//! provider, Pancake client). Nothing here connects eagerly: a cold start
//! succeeds while a dependency is down, and the first request that needs it
//! gets a `503`.
//!
//! One exception, [`App::check_stores`]: the entry points open one
//! connection to each store at start (which the first request then reuses).
//! A store that cannot be reached is only logged — it may come back — but a
//! store that answers wrongly (a certificate that does not verify, a
//! TLS-only server spoken to in plaintext, refused credentials) is a
//! configuration mistake no retry fixes, so the start fails, naming the store.

use std::sync::Arc;

use crate::{
    ai::{self, AiProvider},
    cache::Cache,
    config::Config,
    handoff::Handoff,
    integrations::Integrations,
    live::Live,
    pancake::Pancake,
    postgres::{self, AssistantDirectory, DbError},
    redis::ConversationStore,
};

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("redis client: {0}")]
    Redis(#[from] ::redis::RedisError),
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("http client: {0}")]
    Http(String),
    /// A store answered the first connection in a way no retry fixes.
    #[error("{store}: {reason}")]
    Store { store: &'static str, reason: String },
}

#[derive(Debug, Clone)]
pub struct App {
    pub config: Arc<Config>,
    pub store: ConversationStore,
    pub db: deadpool_postgres::Pool,
    pub assistants: Arc<AssistantDirectory>,
    pub cache: Arc<Cache>,
    pub integrations: Integrations,
    pub ai: Arc<dyn AiProvider>,
    pub pancake: Pancake,
    /// Where webhook messages are handed to be answered at once.
    pub handoff: Handoff,
    /// Live chat: the WebSocket connection registry and pushes.
    pub live: Live,
    /// The one outbound HTTP client (pooled connections), shared by the AI
    /// provider, Pancake, the integrations and the health probe.
    pub http: reqwest::Client,
}

impl App {
    /// Builds every client from the configuration.
    pub fn build(config: Config) -> Result<Self, StartupError> {
        let http = http_client()?;
        let ai = ai::provider(&config, http.clone());
        Self::with_ai(config, ai, http)
    }

    /// As [`App::build`] with a given AI provider (tests instrument it).
    pub fn with_ai(config: Config, ai: Arc<dyn AiProvider>, http: reqwest::Client) -> Result<Self, StartupError> {
        let store = ConversationStore::new(&config)?;
        let db = postgres::pool(&config)?;
        let cache = Arc::new(Cache::new(store.connection(), &config.redis_key_prefix));
        let integrations = Integrations::new(
            config.integrations.clone(),
            http.clone(),
            store.connection(),
            cache.clone(),
            &config.redis_key_prefix,
            config.max_response_bytes,
        );
        Ok(Self {
            integrations,
            assistants: Arc::new(AssistantDirectory::new(db.clone(), cache.clone())),
            cache,
            pancake: Pancake::new(&config, http.clone()),
            handoff: Handoff::from_config(&config.handoff),
            live: Live::from_config(&config.chat),
            http,
            config: Arc::new(config),
            store,
            db,
            ai,
        })
    }

    /// Opens one connection to each store (see the module comment): fails
    /// on a configuration mistake, logs and goes on when a store is down.
    pub async fn check_stores(&self) -> Result<(), StartupError> {
        let plaintext = !self.config.redis_url.expose().contains("rediss://");
        let redis = async {
            let mut conn = self.store.connection();
            let ping = redis::cmd("PING");
            let ping = ping.query_async::<String>(&mut conn);
            match tokio::time::timeout(STORE_CHECK_TIMEOUT, ping).await {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(e)) if redis_misconfigured(&e, plaintext) => {
                    Err(Fatal(StartupError::Store { store: "redis", reason: redis_reason(&e) }))
                }
                Ok(Err(e)) => Err(Unreachable(e.to_string())),
                Err(_) => Err(Unreachable("no answer in time".into())),
            }
        };
        let postgres = async {
            match tokio::time::timeout(STORE_CHECK_TIMEOUT, self.db.get()).await {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(e)) => postgres_failure(&e),
                Err(_) => Err(Unreachable("no answer in time".into())),
            }
        };
        let (redis, postgres) = tokio::join!(redis, postgres);
        for (store, result) in [("redis", redis), ("postgres", postgres)] {
            match result {
                Ok(()) => tracing::debug!(store, "store reachable at start"),
                Err(Unreachable(reason)) => {
                    tracing::warn!(store, %reason, "store unreachable at start; requests that need it answer 503 until it is back")
                }
                Err(Fatal(error)) => return Err(error),
            }
        }
        Ok(())
    }

    /// Creates live chat's connections table unless it exists (setup:
    /// `local-gateway migrate`; in AWS the template creates it). Returns
    /// whether it was created; nothing to do without `CONNECTIONS_TABLE`.
    pub async fn create_connections_table(&self) -> Result<bool, crate::error::AppError> {
        if !self.live.enabled() {
            return Ok(false);
        }
        self.live.registry().await?.create_table().await
    }

    /// Applies pending migrations (the local gateway and `scripts/dev` call this).
    pub async fn migrate(&self) -> Result<(), DbError> {
        postgres::migrate(&self.db, self.config.postgres_schema.as_deref()).await
    }
}

/// How long the start waits for each store's first connection: short,
/// because API Gateway's 30 s also covers a cold start's init.
const STORE_CHECK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);

/// What one store's first connection told.
enum CheckFailure {
    /// Down or away: the start goes on.
    Unreachable(String),
    /// Misconfigured: the start fails.
    Fatal(StartupError),
}
use CheckFailure::{Fatal, Unreachable};

/// Only what no retry will mend stops a start: a certificate that does not
/// verify, credentials refused, or (a `redis://` URL) a connection cut off
/// or answered with garbage, which is what a TLS-only server does to a
/// plaintext client. Anything passing — refused, timed out, `LOADING`, a
/// failover's `CLUSTERDOWN`/`MASTERDOWN`/`TRYAGAIN`, a reset on a TLS
/// connection — is a store that is away: the start goes on and requests
/// that need it answer `503` until it is back.
fn redis_misconfigured(e: &::redis::RedisError, plaintext: bool) -> bool {
    const AWAY: [&str; 5] =
        ["Connection refused", "timed out", "No route to host", "Network is unreachable", "failed to lookup address"];
    const PASSING: [&str; 5] = ["LOADING", "CLUSTERDOWN", "TRYAGAIN", "MASTERDOWN", "BUSY"];
    const CONFIGURATION: [&str; 7] = [
        "certificate",
        "Certificate",
        "WRONGPASS",
        "NOAUTH",
        "invalid password",
        "invalid username",
        // REDIS_CLUSTER=true against a node that is not a cluster's.
        "cluster support disabled",
    ];
    let text = e.to_string();
    if e.is_connection_refusal() || e.is_timeout() || AWAY.iter().any(|away| text.contains(away)) {
        return false;
    }
    if e.kind() == ::redis::ErrorKind::AuthenticationFailed || CONFIGURATION.iter().any(|sign| text.contains(sign)) {
        return true;
    }
    plaintext && !PASSING.iter().any(|sign| text.contains(sign))
}

/// A Redis error with what to check (never the URL: it may hold a password).
fn redis_reason(e: &::redis::RedisError) -> String {
    let text = e.to_string();
    if text.contains("certificate") || text.contains("Certificate") {
        format!("{text} (the server's certificate does not verify: REDIS_CA_FILE must name the CA that signed it)")
    } else if e.is_connection_dropped() {
        format!("{text} (the server closed the connection without answering: a TLS-only server needs a rediss:// URL)")
    } else {
        text
    }
}

/// Sorts a failed first Postgres connection: a certificate, TLS or
/// authentication failure (SQLSTATE class 28, which also covers a
/// plaintext connection `pg_hba.conf` refuses) is configuration and stops
/// the start; anything else — refused, timed out, too many clients, a
/// server starting or shutting down in a failover, a reset — is a store
/// that is away.
fn postgres_failure(e: &deadpool_postgres::PoolError) -> Result<(), CheckFailure> {
    let deadpool_postgres::PoolError::Backend(error) = e else {
        return Err(Unreachable(e.to_string()));
    };
    let io = std::error::Error::source(error).and_then(|s| s.downcast_ref::<std::io::Error>());
    if io.is_some_and(|io| {
        matches!(
            io.kind(),
            std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::TimedOut | std::io::ErrorKind::NotFound
        )
    }) || error.to_string().contains("timeout")
    {
        return Err(Unreachable(error.to_string()));
    }
    let text = match error.as_db_error() {
        Some(db) => db.message().to_owned(),
        None => with_causes(error),
    };
    let auth = error.as_db_error().is_some_and(|db| db.code().code().starts_with("28"));
    let hint = if text.contains("certificate") || text.contains("Certificate") {
        " (the server's certificate does not verify: POSTGRES_CA_FILE must name the CA that signed it; on RDS, the global bundle)"
    } else if text.contains("no encryption") {
        " (the server requires TLS: set sslmode=require or verify-full)"
    } else if text.contains("does not support TLS") || text.contains("server does not support") {
        " (the server does not offer TLS: use sslmode=disable or prefer, or turn ssl on)"
    } else if auth || text.contains("TLS") || text.contains("tls") || text.contains("handshake") {
        ""
    } else {
        return Err(Unreachable(text));
    };
    Err(Fatal(StartupError::Store { store: "postgres", reason: format!("{text}{hint}") }))
}

/// `error: cause: cause…` (the driver's own text is only the outermost step,
/// "error performing TLS handshake", the reason is in its causes).
fn with_causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut next = error.source();
    while let Some(cause) = next {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text = format!("{text}: {cause_text}");
        }
        next = cause.source();
    }
    text
}

/// The outbound HTTP client (AI service, Pancake, integrations): rustls with
/// the ring provider, pooled connections, bounded connect time, no redirects.
pub fn http_client() -> Result<reqwest::Client, StartupError> {
    crate::tls::install_default_provider();
    reqwest::Client::builder()
        // Never follow a redirect: an integration's 302 to another host (or
        // outside its base path) would carry its credentials there. A 3xx is
        // an answer like any other, recorded as the call's result.
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(std::time::Duration::from_secs(3))
        .timeout(std::time::Duration::from_secs(60))
        .pool_idle_timeout(std::time::Duration::from_secs(50))
        .build()
        .map_err(|e| StartupError::Http(e.to_string()))
}
