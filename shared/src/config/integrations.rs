//! `INTEGRATIONS`: the allow-list of `execute_api`'s HTTP integrations (seed
//! 003), as configuration: each integration's base URL, auth, GET cache TTL
//! and timeout. The client that calls them is [`crate::integrations`].

use std::collections::HashMap;

use serde::Deserialize;

use super::{ConfigError, Secret};

#[derive(Clone, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Auth {
    None,
    Bearer { token: String },
    OauthClientCredentials { token_url: String, client_id: String, client_secret: String, scope: Option<String> },
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::None => f.write_str("None"),
            Self::Bearer { .. } => f.write_str("Bearer([redacted])"),
            Self::OauthClientCredentials { token_url, client_id, .. } => f
                .debug_struct("OauthClientCredentials")
                .field("token_url", token_url)
                .field("client_id", client_id)
                .field("client_secret", &"[redacted]")
                .finish(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct Integration {
    pub base_url: String,
    #[serde(default = "no_auth")]
    pub auth: Auth,
    /// GET responses are cached this long (0 = not cached).
    #[serde(default)]
    pub cache_ttl_seconds: u64,
    #[serde(default = "default_timeout")]
    pub timeout_seconds: f64,
}

fn no_auth() -> Auth {
    Auth::None
}

fn default_timeout() -> f64 {
    10.0
}

/// Parses `INTEGRATIONS` (a JSON object of name → integration).
pub fn parse_config(json: Option<&Secret>) -> Result<HashMap<String, Integration>, ConfigError> {
    let Some(json) = json else { return Ok(HashMap::new()) };
    let map: HashMap<String, Integration> =
        serde_json::from_str(json.expose()).map_err(|e| ConfigError::Malformed {
            name: "INTEGRATIONS",
            // Where, never what: serde's message can quote a value, and a
            // secret in the wrong field would land in the start-up log.
            reason: format!(
                "is not a valid integration list ({} error at line {}, column {}; see README)",
                match e.classify() {
                    serde_json::error::Category::Syntax | serde_json::error::Category::Eof => "JSON syntax",
                    _ => "a missing, unknown or mistyped field",
                },
                e.line(),
                e.column()
            ),
        })?;
    for (name, integration) in &map {
        let malformed =
            |reason: &str| ConfigError::Malformed { name: "INTEGRATIONS", reason: format!("{name}: {reason}") };
        if !(integration.base_url.starts_with("https://") || integration.base_url.starts_with("http://")) {
            return Err(malformed("base_url must be http(s)"));
        }
        if !(integration.timeout_seconds > 0.0 && integration.timeout_seconds <= super::MAX_TIMEOUT_SECS) {
            return Err(malformed("timeout_seconds must be greater than 0 and at most 900"));
        }
    }
    Ok(map)
}
