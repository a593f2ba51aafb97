//! [`App`]: the clients a function builds once per cold start and shares
//! across invocations (Redis connection, Postgres pool, HTTP client, AI
//! provider, Pancake client). Nothing here connects eagerly: a cold start
//! succeeds while a dependency is down, and the first request that needs it
//! gets a `503`.

use std::sync::Arc;

use crate::{
    ai::{self, AiProvider},
    cache::Cache,
    config::Config,
    handoff::Handoff,
    integrations::Integrations,
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
            http,
            config: Arc::new(config),
            store,
            db,
            ai,
        })
    }

    /// Applies pending migrations (the local gateway and `scripts/dev` call this).
    pub async fn migrate(&self) -> Result<(), DbError> {
        postgres::migrate(&self.db, self.config.postgres_schema.as_deref()).await
    }
}

/// The outbound HTTP client (AI service, Pancake, integrations): rustls with
/// the ring provider, pooled connections, bounded connect time, no redirects.
pub fn http_client() -> Result<reqwest::Client, StartupError> {
    // A second install (several Apps in one process) is harmless.
    let _ = rustls::crypto::ring::default_provider().install_default();
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
