//! Configuration: every environment variable the functions read, parsed once
//! per cold start into one typed struct.
//!
//! A missing required variable or a malformed value fails at start with the
//! variable's name ([`ConfigError`]), never at the first request. Secrets are
//! wrapped in [`Secret`] so that `Debug` (and therefore every log line that
//! prints the config) shows `[redacted]`.
//!
//! Names follow the seeds (`REDIS_HOST`, `POSTGRES_DB`, `AI_SERVICE_URL`, …);
//! the rest are ours and listed in README's configuration table. On AWS the
//! secret ones come from Secrets Manager ([`secrets`], `SECRET_IDS`), laid
//! over the environment by [`Config::load`].

mod chat;
mod consumer;
mod handoff;
pub mod integrations;
mod page_tokens;
pub mod secrets;
pub mod tls;

use std::{collections::HashMap, fmt, time::Duration};

pub use chat::ChatConfig;
pub use consumer::ConsumerConfig;
pub use handoff::HandoffConfig;
pub use integrations::{Auth, Integration};
pub use tls::{CaBundle, PostgresTls, SslMode};

/// A value that must never reach a log line or a response body.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }
    /// The secret itself; call only where it is sent or compared.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("missing required environment variable {0}")]
    Missing(&'static str),
    #[error("environment variable {name} is malformed: {reason}")]
    Malformed { name: &'static str, reason: String },
    /// A secret named in `SECRET_IDS` could not be read or parsed; the
    /// reason never quotes its value.
    #[error("secret {id} could not be read: {reason}")]
    Secret { id: String, reason: String },
}

/// Which AI provider answers (DESIGN §3).
#[derive(Debug, Clone, PartialEq)]
pub enum AiConfig {
    /// Deterministic rules, no outside service (no `AI_SERVICE_URL`).
    Embedded,
    /// `POST AI_SERVICE_URL` with the assistant and the context.
    Http { url: String },
    /// An OpenAI-compatible `chat/completions` endpoint.
    OpenAi { base_url: String, api_key: Secret, model: String },
}

#[derive(Debug, Clone)]
pub struct Config {
    /// `redis://`/`rediss://` URL built from `REDIS_URL` or `REDIS_HOST`/`PORT`/`DB`/`PASSWORD`.
    pub redis_url: Secret,
    /// `REDIS_CA_FILE`: the CA bundle a `rediss://` server's certificate must
    /// chain to (instead of the Mozilla roots).
    pub redis_ca: Option<CaBundle>,
    /// Redis Cluster mode: `REDIS_URL` lists several nodes, or
    /// `REDIS_CLUSTER=true` (one seed node, e.g. ElastiCache's configuration endpoint).
    pub redis_cluster: bool,
    /// Job shards (`REDIS_SHARDS`): conversations are spread over this many
    /// hash tags, each with its own `jobs` stream, so every script stays in
    /// one slot. 1 on a single node; 16 by default on a cluster.
    pub redis_shards: u16,
    /// Prepended to every key; lets tests and tenants share one Redis.
    pub redis_key_prefix: String,
    /// `postgres://` URL built from `DATABASE_URL` or the `POSTGRES_*` variables,
    /// without `sslmode`/`sslrootcert` (those are in `postgres_tls`).
    pub database_url: Secret,
    /// `sslmode` and the CA bundle (`POSTGRES_SSLMODE`, `POSTGRES_CA_FILE`).
    pub postgres_tls: PostgresTls,
    /// Optional schema set as `search_path` on every connection (tests use one each).
    pub postgres_schema: Option<String>,
    pub postgres_pool_size: usize,
    pub ai: AiConfig,
    pub ai_timeout: Duration,
    /// Sent when the AI times out or fails; the error is recorded beside it.
    pub ai_fallback_reply: String,
    pub pancake_base_url: Option<String>,
    /// The bearer token Pancake (or its integration) sends to
    /// `enhanced-handle-message`; unset refuses that route (`401`), so the
    /// functions that do not serve it need not read the Pancake secret.
    pub pancake_access_token: Option<Secret>,
    /// The `page_access_token` used for Pancake's page API (send message, assign).
    pub pancake_page_access_token: Option<Secret>,
    /// Per-page tokens (`PANCAKE_PAGE_ACCESS_TOKENS`); a page not listed uses the one above.
    pub pancake_page_access_tokens: std::collections::HashMap<String, Secret>,
    /// Reconciliation answers a customer message only if it is younger than this.
    pub reconcile_answer_within: Duration,
    /// Staff ids a `transfer_to_agent` assigns in Pancake; empty means pause only.
    pub pancake_assign_user_ids: Vec<String>,
    pub admin_access_token: Option<Secret>,
    pub lock_ttl: Duration,
    pub context_ttl: Duration,
    pub dedupe_ttl: Duration,
    /// How long a human takeover keeps the bot quiet when nobody resumes it.
    pub bot_pause_ttl: Duration,
    /// Messages kept in a conversation's Redis context (oldest dropped first).
    pub context_max_messages: usize,
    /// Bytes of context kept per conversation (the newest entry always
    /// stays; 0 = no byte bound): the whole context goes to the AI.
    pub context_max_bytes: usize,
    /// Largest response body read from the AI or an integration (bytes);
    /// a larger one is refused before parsing.
    pub max_response_bytes: usize,
    /// One deadline for delivering an answer's actions within the request;
    /// what has not started by then is handed to the consumer.
    pub delivery_budget: Duration,
    /// How long a send of unknown outcome (a timeout, a 5xx) is left alone
    /// before its retry looks for it in the conversation: Pancake may still
    /// be working on it, and a look-up too soon would miss it and resend.
    pub unknown_outcome_grace: Duration,
    /// Customer messages answered per conversation per window; more are stored, not answered.
    pub rate_limit_conversation_max: u32,
    /// Customer messages answered per page per window (0 = off).
    pub rate_limit_page_max: u32,
    pub rate_limit_window: Duration,
    /// Quiet period before the AI call so a burst settles (0 = off).
    pub debounce: Duration,
    /// Re-runs with a fuller context before the latest answer is delivered anyway.
    pub max_restarts: u32,
    /// Name of the Redis Stream the persistence jobs go to (after the prefix).
    pub jobs_stream: String,
    /// Largest accepted `message_content`, in bytes (413 above it).
    pub max_message_bytes: usize,
    /// The `?token=` Pancake's webhook URL carries; unset refuses every webhook.
    pub pancake_webhook_secret: Option<Secret>,
    pub consumer: ConsumerConfig,
    /// `HANDOFF`: `lambda` (with `PROCESS_FUNCTION_NAME`), `inline` or
    /// `none`; unset means `lambda` when `PROCESS_FUNCTION_NAME` is set, else `none`.
    pub handoff: HandoffConfig,
    /// Inline hand-offs answered at once by the local gateway
    /// (`HANDOFF_CONCURRENCY`; in AWS, `process-conversation`'s reserved concurrency).
    pub handoff_concurrency: usize,
    /// Consecutive Redis connection failures that open the circuit breaker.
    pub redis_breaker_failures: u32,
    /// How long an open breaker fails fast before probing Redis again.
    pub redis_breaker_cooldown: Duration,
    /// Degraded mode (Redis unreachable, breaker open): answer from Postgres
    /// with an advisory lock. Off, an open breaker answers `503`.
    pub degraded_mode: bool,
    /// `execute_api`'s allow-list (`INTEGRATIONS`, JSON); secrets redacted in `Debug`.
    pub integrations: std::collections::HashMap<String, integrations::Integration>,
    /// Live chat over WebSockets (`CONNECTIONS_TABLE`, `WS_ENDPOINT`, the tokens).
    pub chat: ChatConfig,
}

impl Config {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_env_with(&HashMap::new())
    }

    /// Reads the process environment with `overlay` (a secret's variables)
    /// over it: a variable in `overlay` wins.
    pub fn from_env_with(overlay: &HashMap<String, String>) -> Result<Self, ConfigError> {
        Self::from_lookup(|name| overlay.get(name).cloned().or_else(|| std::env::var(name).ok()))
    }

    /// Reads configuration through `lookup`, so tests can supply a map.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let env = Env(&lookup);
        let ai_timeout = seconds(&env, "AI_SERVICE_TIMEOUT", 30.0, MAX_TIMEOUT_SECS)?;
        let lock_ttl = Duration::from_millis(env.parse_or("LOCK_TTL_MS", 30_000u64)?);
        if lock_ttl < Duration::from_millis(30) || lock_ttl > Duration::from_secs(3_600) {
            return Err(malformed("LOCK_TTL_MS", "must be from 30 to 3600000"));
        }
        let redis_url = redis_url(&env)?;
        let redis_ca = tls::redis_ca(&redis_url, env.get("REDIS_CA_FILE"))?;
        let (database_url, postgres_tls) = database_url(&env)?;
        let redis_cluster = redis_url.contains(',') || env.parse_or("REDIS_CLUSTER", false)?;
        let redis_shards: u16 = env.parse_or("REDIS_SHARDS", if redis_cluster { 16u16 } else { 1 })?;
        if redis_shards == 0 || redis_shards > 1024 {
            return Err(malformed("REDIS_SHARDS", "must be between 1 and 1024"));
        }
        Ok(Self {
            redis_url: Secret::new(redis_url),
            redis_ca,
            redis_cluster,
            redis_shards,
            redis_key_prefix: env.get("REDIS_KEY_PREFIX").unwrap_or_default(),
            database_url: Secret::new(database_url),
            postgres_tls,
            postgres_schema: match env.get("POSTGRES_SCHEMA") {
                Some(s) if !s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') => {
                    return Err(malformed("POSTGRES_SCHEMA", "letters, digits and _ only"));
                }
                other => other,
            },
            postgres_pool_size: env.parse_or("POSTGRES_POOL_SIZE", 8usize)?,
            ai: ai_config(&env)?,
            ai_timeout,
            ai_fallback_reply: env.get("AI_FALLBACK_REPLY").unwrap_or_else(|| {
                "Xin lỗi, hệ thống đang bận. Nhân viên sẽ phản hồi bạn sớm nhất. / Sorry, we are busy right now; a member of our team will reply soon.".into()
            }),
            pancake_base_url: env.get("PANCAKE_BASE_URL").map(|u| u.trim_end_matches('/').to_owned()),
            pancake_access_token: env.get("PANCAKE_ACCESS_TOKEN").map(Secret::new),
            pancake_page_access_token: env.get("PANCAKE_PAGE_ACCESS_TOKEN").map(Secret::new),
            pancake_page_access_tokens: page_tokens::parse(env.get("PANCAKE_PAGE_ACCESS_TOKENS").as_deref())?,
            reconcile_answer_within: Duration::from_secs(env.parse_or("RECONCILE_ANSWER_WITHIN_SECS", 600u64)?),
            pancake_assign_user_ids: env
                .get("PANCAKE_ASSIGN_USER_IDS")
                .map(|v| v.split(',').map(str::trim).filter(|s| !s.is_empty()).map(String::from).collect())
                .unwrap_or_default(),
            admin_access_token: env.get("ADMIN_ACCESS_TOKEN").map(Secret::new),
            lock_ttl,
            context_ttl: Duration::from_secs(env.parse_or("CONTEXT_TTL_SECONDS", 7_200u64)?),
            dedupe_ttl: Duration::from_secs(env.parse_or("DEDUPE_TTL_SECONDS", 86_400u64)?),
            bot_pause_ttl: Duration::from_secs(env.parse_or("BOT_PAUSE_TTL_SECONDS", 86_400u64)?),
            context_max_messages: env.parse_or("CONTEXT_MAX_MESSAGES", 50usize)?.max(1),
            context_max_bytes: env.parse_or("CONTEXT_MAX_BYTES", 128 * 1024usize)?,
            max_response_bytes: env.parse_or("MAX_RESPONSE_BYTES", 1024 * 1024usize)?.max(1024),
            delivery_budget: Duration::from_millis(env.parse_or("DELIVERY_BUDGET_MS", 10_000u64)?.max(1)),
            unknown_outcome_grace: Duration::from_millis(env.parse_or("UNKNOWN_OUTCOME_GRACE_MS", 30_000u64)?),
            rate_limit_conversation_max: env.parse_or("RATE_LIMIT_CONVERSATION_MAX", 30u32)?,
            // Pancake accepts 5 sends per page per second; an answer is one or two.
            rate_limit_page_max: env.parse_or("RATE_LIMIT_PAGE_MAX", 240u32)?,
            rate_limit_window: Duration::from_secs(env.parse_or("RATE_LIMIT_WINDOW_SECONDS", 60u64)?.max(1)),
            debounce: Duration::from_millis(env.parse_or("DEBOUNCE_MS", 0u64)?),
            max_restarts: env.parse_or("MAX_RESTARTS", 2u32)?,
            jobs_stream: env.get("JOBS_STREAM").unwrap_or_else(|| "jobs".into()),
            max_message_bytes: 64 * 1024,
            pancake_webhook_secret: env.get("PANCAKE_WEBHOOK_SECRET").map(Secret::new),
            redis_breaker_failures: env.parse_or("REDIS_BREAKER_FAILURES", 3u32)?.max(1),
            redis_breaker_cooldown: Duration::from_millis(env.parse_or("REDIS_BREAKER_COOLDOWN_MS", 5_000u64)?),
            degraded_mode: env.parse_or("DEGRADED_MODE", true)?,
            handoff: handoff::from_env(&env)?,
            // 100: a burst of 100 conversations is answered in one AI call's
            // time; each waits on the AI, so the bound is the AI account's
            // concurrent-request limit, not this machine.
            handoff_concurrency: env.parse_or("HANDOFF_CONCURRENCY", 100usize)?.clamp(1, 10_000),
            integrations: integrations::parse_config(env.get("INTEGRATIONS").map(Secret::new).as_ref())?,
            consumer: ConsumerConfig::from_env(&env)?,
            chat: chat::from_env(&env)?,
        })
    }

    /// Heartbeats run at a third of the lock TTL so two can be missed before it lapses.
    pub fn heartbeat_interval(&self) -> Duration {
        self.lock_ttl / 3
    }

    /// How long a delivery owns an action's send mark (`sending:<until>`):
    /// the delivery budget, then the longest call that may still be in
    /// flight (Pancake's or the slowest integration's timeout), and a
    /// margin for recording the result. Past it, the owner is taken for
    /// dead and the outcome for unknown: the next attempt looks before it
    /// sends (a message) or records `unknown` (an unsafe integration call).
    /// 50 s with the defaults, well inside the sweep's `UNDELIVERED_AFTER_SECONDS`.
    pub fn delivery_window(&self) -> Duration {
        self.delivery_time() + DELIVERY_RECORD_MARGIN
    }

    /// How long delivering an answer can take at worst: the delivery budget,
    /// then the slowest call that may still be in flight (Pancake's or an
    /// integration's timeout).
    pub fn delivery_time(&self) -> Duration {
        let slowest_integration =
            self.integrations.values().map(|i| Duration::from_secs_f64(i.timeout_seconds)).max().unwrap_or_default();
        self.delivery_budget + PANCAKE_CALL_TIMEOUT.max(slowest_integration)
    }
}

/// How long one Pancake call may take: it bounds how far a delivery already
/// in flight can run past `DELIVERY_BUDGET_MS`.
pub const PANCAKE_CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// Time allowed after a delivery's last call to record its result.
const DELIVERY_RECORD_MARGIN: Duration = Duration::from_secs(30);

/// The longest timeout any setting accepts (seconds): far above API
/// Gateway's 30 s, far below what would overflow a `Duration`.
pub const MAX_TIMEOUT_SECS: f64 = 900.0;

/// A duration in seconds (a float), greater than 0 and at most `max`.
fn seconds<F: Fn(&str) -> Option<String>>(
    env: &Env<'_, F>,
    name: &'static str,
    default: f64,
    max: f64,
) -> Result<Duration, ConfigError> {
    let value = env.parse_or(name, default)?;
    if !(value > 0.0 && value <= max) {
        return Err(malformed(name, format!("must be a number of seconds greater than 0 and at most {max}")));
    }
    Ok(Duration::from_secs_f64(value))
}

struct Env<'a, F: Fn(&str) -> Option<String>>(&'a F);

impl<F: Fn(&str) -> Option<String>> Env<'_, F> {
    /// A set, non-blank variable.
    fn get(&self, name: &str) -> Option<String> {
        (self.0)(name).filter(|v| !v.trim().is_empty())
    }
    fn require(&self, name: &'static str) -> Result<String, ConfigError> {
        self.get(name).ok_or(ConfigError::Missing(name))
    }
    fn parse_or<T: std::str::FromStr>(&self, name: &'static str, default: T) -> Result<T, ConfigError>
    where
        T::Err: fmt::Display,
    {
        match self.get(name) {
            None => Ok(default),
            Some(v) => v.trim().parse().map_err(|e: T::Err| malformed(name, e.to_string())),
        }
    }
}

fn malformed(name: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Malformed { name, reason: reason.into() }
}

fn redis_url<F: Fn(&str) -> Option<String>>(env: &Env<'_, F>) -> Result<String, ConfigError> {
    if let Some(url) = env.get("REDIS_URL") {
        // A comma-separated list is a Redis Cluster's seed nodes.
        if url.split(',').any(|u| !(u.trim().starts_with("redis://") || u.trim().starts_with("rediss://"))) {
            return Err(malformed("REDIS_URL", "must start with redis:// or rediss:// (each node of a list)"));
        }
        return Ok(url);
    }
    let host = env.get("REDIS_HOST").unwrap_or_else(|| "127.0.0.1".into());
    let port: u16 = env.parse_or("REDIS_PORT", 6379)?;
    let db: u32 = env.parse_or("REDIS_DB", 0)?;
    let scheme = if env.parse_or("REDIS_TLS", false)? { "rediss" } else { "redis" };
    // ElastiCache RBAC: a user and its password; AUTH alone: the password only.
    let user = env.get("REDIS_USERNAME").map(|u| url_escape(&u)).unwrap_or_default();
    Ok(match env.get("REDIS_PASSWORD") {
        Some(password) => format!("{scheme}://{user}:{}@{host}:{port}/{db}", url_escape(&password)),
        None if !user.is_empty() => return Err(malformed("REDIS_USERNAME", "set without REDIS_PASSWORD")),
        None => format!("{scheme}://{host}:{port}/{db}"),
    })
}

fn database_url<F: Fn(&str) -> Option<String>>(env: &Env<'_, F>) -> Result<(String, PostgresTls), ConfigError> {
    let (sslmode, ca_file) = (env.get("POSTGRES_SSLMODE"), env.get("POSTGRES_CA_FILE"));
    if let Some(url) = env.get("DATABASE_URL") {
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            return Err(malformed("DATABASE_URL", "must start with postgres://"));
        }
        return tls::postgres(&url, "DATABASE_URL", sslmode, ca_file);
    }
    let host = env.get("POSTGRES_HOST").unwrap_or_else(|| "127.0.0.1".into());
    let port: u16 = env.parse_or("POSTGRES_PORT", 5432)?;
    let db = env.get("POSTGRES_DB").unwrap_or_else(|| "switchboard".into());
    let user = env.get("POSTGRES_USER").unwrap_or_else(|| "postgres".into());
    let auth = match env.get("POSTGRES_PASSWORD") {
        Some(p) => format!("{}:{}", url_escape(&user), url_escape(&p)),
        None => url_escape(&user),
    };
    tls::postgres(&format!("postgres://{auth}@{host}:{port}/{db}"), "POSTGRES_SSLMODE", sslmode, ca_file)
}

fn ai_config<F: Fn(&str) -> Option<String>>(env: &Env<'_, F>) -> Result<AiConfig, ConfigError> {
    let provider = match env.get("AI_PROVIDER") {
        Some(p) => p.to_ascii_lowercase(),
        None if env.get("AI_SERVICE_URL").is_some() => "http".into(),
        None if env.get("OPENAI_BASE_URL").is_some() => "openai".into(),
        None => "embedded".into(),
    };
    match provider.as_str() {
        "embedded" => Ok(AiConfig::Embedded),
        "http" => Ok(AiConfig::Http { url: env.require("AI_SERVICE_URL")? }),
        "openai" => Ok(AiConfig::OpenAi {
            base_url: env.require("OPENAI_BASE_URL")?.trim_end_matches('/').to_owned(),
            api_key: Secret::new(env.get("OPENAI_API_KEY").unwrap_or_default()),
            model: env.get("OPENAI_MODEL").unwrap_or_else(|| "gpt-4o-mini".into()),
        }),
        _ => Err(malformed("AI_PROVIDER", "one of embedded, http, openai")),
    }
}

/// Percent-encodes everything but unreserved characters (userinfo, forms).
pub(crate) fn url_escape(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn config(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let map: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Config::from_lookup(|k| map.get(k).cloned())
    }

    #[test]
    fn a_function_without_the_pancake_token_starts_and_refuses_only_the_message_route() {
        assert_eq!(config(&[]).unwrap().pancake_access_token, None);
    }

    #[test]
    fn a_malformed_number_fails_naming_the_variable() {
        let err = config(&[("PANCAKE_ACCESS_TOKEN", "t"), ("LOCK_TTL_MS", "soon")]).unwrap_err();
        assert!(matches!(err, ConfigError::Malformed { name: "LOCK_TTL_MS", .. }));
    }

    #[test]
    fn out_of_range_durations_are_configuration_errors_not_panics() {
        for value in ["-1", "0", "1e30", "NaN", "inf"] {
            let err = config(&[("PANCAKE_ACCESS_TOKEN", "t"), ("AI_SERVICE_TIMEOUT", value)]).unwrap_err();
            assert!(matches!(err, ConfigError::Malformed { name: "AI_SERVICE_TIMEOUT", .. }), "{value}");
        }
        for timeout in ["-1", "0", "1e30"] {
            let integrations =
                format!(r#"{{"crm": {{"base_url": "https://crm.example", "timeout_seconds": {timeout}}}}}"#);
            let err = config(&[("PANCAKE_ACCESS_TOKEN", "t"), ("INTEGRATIONS", &integrations)]).unwrap_err();
            assert!(matches!(err, ConfigError::Malformed { name: "INTEGRATIONS", .. }), "{timeout}");
        }
    }

    #[test]
    fn a_malformed_integration_list_never_echoes_its_values() {
        for json in [
            r#"{"crm": {"base_url": "https://crm.example", "timeout_seconds": "hunter2-secret"}}"#,
            r#"{"crm": {"base_url": "https://crm.example", "auth": {"type": "hunter2-secret"}}}"#,
            r#"{"crm": {"base_url": "hunter2-secret"#,
        ] {
            let err = config(&[("PANCAKE_ACCESS_TOKEN", "t"), ("INTEGRATIONS", json)]).unwrap_err();
            assert!(!err.to_string().contains("hunter2"), "{err}");
        }
    }

    #[test]
    fn secrets_are_redacted_in_debug_output() {
        let c = config(&[
            ("PANCAKE_ACCESS_TOKEN", "hunter2-token"),
            ("REDIS_PASSWORD", "p@ss"),
            ("POSTGRES_PASSWORD", "pgpass"),
        ])
        .unwrap();
        let printed = format!("{c:?}");
        assert!(!printed.contains("hunter2-token"));
        assert!(!printed.contains("pgpass"));
        assert!(!printed.contains("p%40ss"));
        assert_eq!(c.redis_url.expose(), "redis://:p%40ss@127.0.0.1:6379/0");
    }

    #[test]
    fn the_provider_follows_the_variables_that_are_set() {
        let base = [("PANCAKE_ACCESS_TOKEN", "t")];
        assert_eq!(config(&base).unwrap().ai, AiConfig::Embedded);
        let http = config(&[base[0], ("AI_SERVICE_URL", "http://127.0.0.1:9/ai")]).unwrap();
        assert_eq!(http.ai, AiConfig::Http { url: "http://127.0.0.1:9/ai".into() });
        let openai = config(&[base[0], ("OPENAI_BASE_URL", "http://127.0.0.1:9/v1/")]).unwrap();
        assert!(matches!(openai.ai, AiConfig::OpenAi { ref base_url, .. } if base_url == "http://127.0.0.1:9/v1"));
        assert!(config(&[base[0], ("AI_PROVIDER", "magic")]).is_err());
    }

    #[test]
    fn postgres_variables_build_the_database_url() {
        let c = config(&[
            ("PANCAKE_ACCESS_TOKEN", "t"),
            ("POSTGRES_HOST", "db"),
            ("POSTGRES_DB", "chat"),
            ("POSTGRES_USER", "app"),
        ])
        .unwrap();
        assert_eq!(c.database_url.expose(), "postgres://app@db:5432/chat");
        assert_eq!(c.postgres_tls, PostgresTls { mode: SslMode::Prefer, ca: None });
    }
}
