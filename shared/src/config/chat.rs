//! Live chat's settings: the WebSocket connection registry (`CONNECTIONS_TABLE`),
//! where pushes go (`WS_ENDPOINT`, API Gateway's management endpoint) and
//! what clients are told to connect to (`WS_PUBLIC_URL`), the secrets behind
//! the tokens (`CHAT_TOKEN_SECRET`, `WIDGET_KEY`, `AGENT_TOKENS`), and how
//! long a customer token lives.

use std::time::Duration;

use super::{ConfigError, Env, Secret, malformed};

/// Live chat, configured or not (`CONNECTIONS_TABLE` unset: no WebSocket
/// route works and nothing is pushed; the chat log is still written).
#[derive(Debug, Clone, Default)]
pub struct ChatConfig {
    /// The DynamoDB table of connections (`CONNECTIONS_TABLE`).
    pub connections_table: Option<String>,
    /// API Gateway's management endpoint, `https://{api}.execute-api.{region}.amazonaws.com/{stage}`
    /// or the local gateway's `http://127.0.0.1:8000` (`WS_ENDPOINT`).
    pub endpoint: Option<String>,
    /// The `wss://…` URL a session tells its client (`WS_PUBLIC_URL`;
    /// defaults to the endpoint with `ws`/`wss` for `http`/`https`).
    pub public_url: Option<String>,
    /// Signs customer tokens (`CHAT_TOKEN_SECRET`, at least 32 bytes).
    pub token_secret: Option<Secret>,
    /// The public key a website embeds to open sessions (`WIDGET_KEY`).
    pub widget_key: Option<Secret>,
    /// Named agent tokens (`AGENT_TOKENS`: `alice=token,bob=token`).
    pub agent_tokens: Vec<(String, Secret)>,
    /// A customer token's life (`CHAT_TOKEN_TTL_SECONDS`, default 1 h, at most 24 h).
    pub token_ttl: Duration,
    /// How long after its expiry a token still resumes its conversation
    /// through `POST /api/v1/chat/sessions` (`CHAT_RESUME_WINDOW_SECONDS`, 30 days).
    pub resume_window: Duration,
    /// Sessions opened with the widget key per source address per minute
    /// (`CHAT_SESSIONS_PER_MINUTE`, default 20; 0 = no limit).
    pub sessions_per_minute: u32,
}

pub(super) fn from_env<F: Fn(&str) -> Option<String>>(env: &Env<'_, F>) -> Result<ChatConfig, ConfigError> {
    let token_secret = env.get("CHAT_TOKEN_SECRET").map(Secret::new);
    if token_secret.as_ref().is_some_and(|s| s.expose().len() < 32) {
        return Err(malformed("CHAT_TOKEN_SECRET", "must be at least 32 bytes"));
    }
    let endpoint = env.get("WS_ENDPOINT").map(|u| u.trim_end_matches('/').to_owned());
    if endpoint.as_deref().is_some_and(|u| !(u.starts_with("http://") || u.starts_with("https://"))) {
        return Err(malformed("WS_ENDPOINT", "must be an http:// or https:// URL"));
    }
    let public_url = env.get("WS_PUBLIC_URL").or_else(|| {
        endpoint.as_deref().map(|e| match e.strip_prefix("https://") {
            Some(rest) => format!("wss://{rest}"),
            None => format!("ws://{}/ws", e.trim_start_matches("http://")),
        })
    });
    let token_ttl = Duration::from_secs(env.parse_or("CHAT_TOKEN_TTL_SECONDS", 3_600u64)?);
    if token_ttl.is_zero() || token_ttl > Duration::from_secs(86_400) {
        return Err(malformed("CHAT_TOKEN_TTL_SECONDS", "must be from 1 to 86400"));
    }
    Ok(ChatConfig {
        connections_table: env.get("CONNECTIONS_TABLE").filter(|t| !t.is_empty()),
        endpoint,
        public_url,
        token_secret,
        widget_key: env.get("WIDGET_KEY").filter(|k| !k.is_empty()).map(Secret::new),
        agent_tokens: agent_tokens(env.get("AGENT_TOKENS").as_deref())?,
        token_ttl,
        resume_window: Duration::from_secs(env.parse_or("CHAT_RESUME_WINDOW_SECONDS", 30 * 86_400u64)?),
        sessions_per_minute: env.parse_or("CHAT_SESSIONS_PER_MINUTE", 20u32)?,
    })
}

/// `name=token,name=token`: every agent message names who wrote it, so
/// each agent has a token of their own. Names are ids (no `=`, `,`, spaces).
fn agent_tokens(raw: Option<&str>) -> Result<Vec<(String, Secret)>, ConfigError> {
    let Some(raw) = raw else { return Ok(Vec::new()) };
    let mut tokens = Vec::new();
    for pair in raw.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (name, token) = pair
            .split_once('=')
            .ok_or_else(|| malformed("AGENT_TOKENS", "must be name=token pairs separated by commas"))?;
        let name = name.trim();
        if name.is_empty() || name.len() > 64 || !name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.@".contains(c))
        {
            return Err(malformed("AGENT_TOKENS", "agent names are 1-64 letters, digits, - _ . @"));
        }
        // `admin` is the admin token's agent name; names tell agents apart.
        if name == "admin" || tokens.iter().any(|(n, _): &(String, Secret)| n == name) {
            return Err(malformed("AGENT_TOKENS", "agent names are unique and not `admin`"));
        }
        if token.trim().len() < 16 {
            return Err(malformed("AGENT_TOKENS", "each agent token must be at least 16 characters"));
        }
        tokens.push((name.to_owned(), Secret::new(token.trim())));
    }
    Ok(tokens)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_tokens_are_named_pairs() {
        let tokens = agent_tokens(Some("alice=aaaaaaaaaaaaaaaa, bob=bbbbbbbbbbbbbbbb")).unwrap();
        assert_eq!(tokens.len(), 2);
        assert_eq!(tokens[1].0, "bob");
        assert!(agent_tokens(Some("alice")).is_err());
        assert!(agent_tokens(Some("alice=short")).is_err());
        assert!(agent_tokens(Some("a b=bbbbbbbbbbbbbbbb")).is_err());
    }
}
