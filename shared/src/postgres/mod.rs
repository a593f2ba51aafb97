//! Postgres: the connection pool, the project's own migrations (refinery,
//! embedded from `migrations/`), and every SQL statement of the library,
//! one concern per file, each taking a `GenericClient` (a pooled client or a
//! transaction) rather than the whole `App`:
//! - [`writer`]: the consumer's batched, idempotent writes of the `jobs` stream;
//! - [`history`]: context rebuilt from stored messages and answers;
//! - [`degraded`]: the statements of degraded mode (Redis unreachable);
//! - [`actions`]: undelivered actions for the consumer's sweep;
//! - [`dead_letters`]: the record of entries the consumer gave up on, listed
//!   and replayed by operators;
//! - [`admin`]: the operators' reads and writes of conversations, actions and
//!   figures;
//! - [`known`]: which Pancake messages are already stored (reconciliation);
//! - [`assistants`]: lookups through the cache ([`AssistantDirectory`]) and
//!   the operators' reads and writes of the table (`assistants::rows`).
//!
//! On the Redis path the message path never writes Postgres directly:
//! persistence goes through the `jobs` stream and the background consumer.
//!
//! TLS (RDS forces it) goes through rustls (`tokio-postgres-rustls`), as
//! `sslmode` and the CA bundle say ([`crate::config::PostgresTls`]).

pub mod actions;
pub mod admin;
pub mod assistants;
pub mod chat;
pub mod dead_letters;
pub mod degraded;
pub mod echoes;
pub mod history;
pub mod known;
pub mod writer;

pub use assistants::AssistantDirectory;

use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio_postgres::config::SslMode as DriverSslMode;
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::config::{Config, PostgresTls, SslMode};

mod embedded {
    refinery::embed_migrations!("../migrations");
}

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("invalid database configuration: {0}")]
    Config(String),
    #[error("postgres is unavailable: {0}")]
    Unavailable(String),
    #[error("migration failed: {0}")]
    Migration(String),
}

/// Builds the pool (no connection is opened until the first use).
pub fn pool(config: &Config) -> Result<Pool, DbError> {
    let mut pg: tokio_postgres::Config =
        config.database_url.expose().parse().map_err(|e: tokio_postgres::Error| DbError::Config(e.to_string()))?;
    pg.connect_timeout(Duration::from_secs(3));
    pg.application_name("switchboard");
    if let Some(schema) = &config.postgres_schema {
        // Validated as [A-Za-z0-9_]+ by the config.
        pg.options(format!("-c search_path={schema}"));
    }
    pg.ssl_mode(match config.postgres_tls.mode {
        SslMode::Disable => DriverSslMode::Disable,
        SslMode::Prefer => DriverSslMode::Prefer,
        SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => DriverSslMode::Require,
    });
    let manager = Manager::from_config(
        pg,
        connector(&config.postgres_tls)?,
        ManagerConfig { recycling_method: RecyclingMethod::Fast },
    );
    Pool::builder(manager)
        .max_size(config.postgres_pool_size.max(1))
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(Duration::from_secs(5)))
        .create_timeout(Some(Duration::from_secs(5)))
        .build()
        .map_err(|e| DbError::Config(e.to_string()))
}

/// The rustls connector for `tls` (also built for `disable`, where the
/// driver never calls it: one connector type keeps the pool's type one).
fn connector(tls: &PostgresTls) -> Result<MakeRustlsConnect, DbError> {
    crate::tls::install_default_provider();
    let ca = tls.ca.as_ref().map(|ca| ca.pem.as_slice());
    let config = crate::tls::client_config(ca, tls.mode.verify(ca.is_some()))
        .map_err(|e| DbError::Config(format!("POSTGRES_CA_FILE: {e}")))?;
    if matches!(tls.mode, SslMode::Require) && ca.is_none() {
        tracing::warn!(
            "postgres: sslmode=require without a CA bundle encrypts but does not check the server's \
             certificate; set POSTGRES_CA_FILE (on RDS, the global bundle) or use sslmode=verify-full"
        );
    }
    Ok(MakeRustlsConnect::new(config))
}

/// Applies pending migrations. Safe to run from many processes at once: an
/// advisory lock serialises them, and applied versions are recorded.
pub async fn migrate(pool: &Pool, schema: Option<&str>) -> Result<(), DbError> {
    let mut client = pool.get().await.map_err(|e| DbError::Unavailable(e.to_string()))?;
    if let Some(schema) = schema {
        client
            .batch_execute(&format!("CREATE SCHEMA IF NOT EXISTS {schema}"))
            .await
            .map_err(|e| DbError::Migration(e.to_string()))?;
    }
    const LOCK: i64 = 0x5377_6974_6368; // "Switch"
    client.execute("SELECT pg_advisory_lock($1)", &[&LOCK]).await.map_err(|e| DbError::Migration(e.to_string()))?;
    let result = embedded::migrations::runner().run_async(&mut **client).await;
    client.execute("SELECT pg_advisory_unlock($1)", &[&LOCK]).await.map_err(|e| DbError::Migration(e.to_string()))?;
    result.map(drop).map_err(|e| DbError::Migration(e.to_string()))
}
