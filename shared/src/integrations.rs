//! `execute_api` (seed 003): an allow-list of named HTTP integrations from
//! `INTEGRATIONS` (JSON), each with a base URL, its auth and a GET cache TTL.
//!
//! - **OAuth client credentials**: the token is cached in Redis until 60 s
//!   before it expires. A missing or expired token is fetched by exactly one
//!   caller across every instance: the first takes a short refresh lock
//!   (`SET NX PX`), the others wait for the token to appear (and take over if
//!   the refresher dies). Tokens and secrets never reach a log line.
//! - **GET responses** are cached per integration (its `cache_ttl_seconds`) in
//!   the `api` cache kind, invalidated per integration by generation.
//! - Only paths under the integration's base URL are called (no scheme, no
//!   `..`), so an AI-proposed action cannot reach elsewhere.
//!
//! Errors are returned as text and recorded on the action.

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

use redis::AsyncCommands;

use crate::redis::BreakerConnection;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use crate::{
    body_cap::read_capped,
    cache::{Cache, CacheKind},
    config::{Auth, Integration},
};

/// Refuses a `data.path` that could leave the integration's base path once
/// decoded — however many times a server decodes it (`%252e%252e` is `..`
/// after two) — or smuggle a scheme, a query, a fragment, a backslash or a
/// `;` path parameter (`..;/x` is `../x` to some servers).
fn safe_path(path: &str) -> Result<(), String> {
    let refused = || "data.path must stay under the integration's base URL".to_owned();
    let mut decoded = path.to_owned();
    for _ in 0..4 {
        let next = percent_encoding::percent_decode_str(&decoded).decode_utf8().map_err(|_| refused())?.into_owned();
        if next == decoded {
            break;
        }
        decoded = next;
    }
    let escapes = decoded.contains('%')
        || decoded.contains("://")
        || decoded.contains(['\\', '?', '#', ';'])
        || decoded.chars().any(char::is_control)
        || decoded.split('/').any(|s| s == "." || s.starts_with(".."));
    if escapes { Err(refused()) } else { Ok(()) }
}

/// Whether `path` is `base` or below it, on a segment boundary (`/v1x` is
/// not under `/v1`).
fn under_base(path: &str, base: &str) -> bool {
    path.strip_prefix(base.trim_end_matches('/')).is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// The first `max` bytes of `text` (on a character boundary), marked as cut.
fn cut(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… [cut at {max} bytes]", &text[..end])
}

/// A token is treated as expired this long before the provider says.
const EXPIRY_MARGIN: Duration = Duration::from_secs(60);
/// How long a refresher may hold the refresh lock.
const REFRESH_LOCK: Duration = Duration::from_secs(10);
/// Responses larger than this are cut when stored on the action.
const MAX_STORED_RESPONSE: usize = 16 * 1024;

/// Why an `execute_api` call failed, and whether the integration may have
/// acted on it anyway (the request left and no definite answer came back:
/// a timeout, a cut connection, a 5xx). An unsafe call with an unknown
/// outcome is recorded `unknown` and never retried blindly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IntegrationError {
    pub message: String,
    pub outcome_unknown: bool,
}

impl From<String> for IntegrationError {
    fn from(message: String) -> Self {
        Self { message, outcome_unknown: false }
    }
}

impl From<&str> for IntegrationError {
    fn from(message: &str) -> Self {
        Self { message: message.to_owned(), outcome_unknown: false }
    }
}

impl std::fmt::Display for IntegrationError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// An `execute_api` action's HTTP method, upper-cased (`GET` unless it says otherwise).
pub fn method_of(data: &Map<String, Value>) -> String {
    data.get("method").and_then(Value::as_str).unwrap_or("GET").to_ascii_uppercase()
}

/// Whether `method` may be repeated without a second effect.
pub fn is_safe_method(method: &str) -> bool {
    matches!(method.to_ascii_uppercase().as_str(), "GET" | "HEAD" | "OPTIONS")
}

#[derive(Clone)]
pub struct Integrations {
    map: Arc<HashMap<String, Integration>>,
    client: reqwest::Client,
    conn: BreakerConnection,
    cache: Arc<Cache>,
    prefix: String,
    /// Largest response body read (`MAX_RESPONSE_BYTES`).
    max_body: usize,
}

impl std::fmt::Debug for Integrations {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Integrations").field("names", &self.map.keys().collect::<Vec<_>>()).finish_non_exhaustive()
    }
}

impl Integrations {
    pub fn new(
        map: HashMap<String, Integration>,
        client: reqwest::Client,
        conn: BreakerConnection,
        cache: Arc<Cache>,
        prefix: &str,
        max_body: usize,
    ) -> Self {
        Self { map: Arc::new(map), client, conn, cache, prefix: prefix.to_owned(), max_body }
    }

    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.map.keys().cloned().collect();
        names.sort();
        names
    }

    fn get(&self, name: &str) -> Result<&Integration, String> {
        self.map.get(name).ok_or_else(|| format!("integration {name:?} is not in the allow-list (INTEGRATIONS)"))
    }

    /// Runs an `execute_api` action: `{integration, method?, path?, query?, body?}`.
    pub async fn execute(&self, data: &Map<String, Value>) -> Result<Value, IntegrationError> {
        let name = data.get("integration").and_then(Value::as_str).ok_or("data.integration is required")?;
        let integration = self.get(name)?;
        let method = method_of(data);
        if !matches!(method.as_str(), "GET" | "POST") {
            return Err(format!("method {method} is not allowed (GET or POST)").into());
        }
        let path = data.get("path").and_then(Value::as_str).unwrap_or("");
        safe_path(path)?;
        let base = format!("{}/{}", integration.base_url.trim_end_matches('/'), path.trim_start_matches('/'));
        let query: Vec<(String, String)> = match data.get("query") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Object(q)) => q
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().map(String::from).unwrap_or_else(|| v.to_string())))
                .collect(),
            Some(_) => return Err("data.query must be an object".into()),
        };
        let mut url = reqwest::Url::parse(&base).map_err(|e| format!("{name}: bad URL: {e}"))?;
        // The normalised URL must still be the integration's origin and path.
        let root = reqwest::Url::parse(&integration.base_url).map_err(|e| format!("{name}: bad base URL: {e}"))?;
        if url.origin() != root.origin() || !under_base(url.path(), root.path()) {
            return Err("data.path must stay under the integration's base URL".into());
        }
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(&query);
        }
        let url = url.to_string();
        let cacheable = method == "GET" && integration.cache_ttl_seconds > 0;
        let cache_key = {
            let digest = Sha256::digest(json!([url]).to_string().as_bytes());
            digest.iter().take(16).map(|b| format!("{b:02x}")).collect::<String>()
        };
        let mut stamp = None;
        if cacheable {
            match self.cache.get(CacheKind::Api, name, &cache_key).await {
                Ok((Some(hit), _)) => {
                    return Ok(serde_json::from_str(&hit).unwrap_or(Value::String(hit)));
                }
                Ok((None, s)) => stamp = Some(s),
                Err(_) => {}
            }
        }
        let mut retried = false;
        let response = loop {
            let mut request = match method.as_str() {
                "POST" => self.client.post(&url).json(data.get("body").unwrap_or(&Value::Null)),
                _ => self.client.get(&url),
            }
            .timeout(Duration::from_secs_f64(integration.timeout_seconds.max(0.1)));
            if let Some(token) = self.bearer(name, integration).await? {
                request = request.bearer_auth(token);
            }
            let response = request.send().await.map_err(|e| {
                // A request that connected may have been acted on.
                let outcome_unknown = !(e.is_connect() || e.is_builder());
                IntegrationError { message: format!("{name}: {}", e.without_url()), outcome_unknown }
            })?;
            // A token revoked early: forget it and fetch a new one, once.
            if response.status() == reqwest::StatusCode::UNAUTHORIZED
                && matches!(integration.auth, Auth::OauthClientCredentials { .. })
                && !retried
            {
                let _: Result<(), _> = self.conn.clone().del(self.token_key(name)).await;
                retried = true;
                continue;
            }
            break response;
        };
        let status = response.status();
        if status.is_redirection() {
            // Never followed (see `app::http_client`): recorded as the result.
            return Err(format!("{name} answered HTTP {status} (a redirect, not followed)").into());
        }
        // The status decides the outcome, whatever happens to the body: a
        // 5xx may have done the work, a 2xx did.
        let bytes = match read_capped(response, self.max_body).await {
            Ok(bytes) => bytes,
            Err(e) if status.is_success() && !is_safe_method(&method) => {
                // The call ran; its answer is too large (or cut) to keep.
                return Ok(Value::String(format!("{name} answered HTTP {status}; the response was not read: {e}")));
            }
            Err(e) => {
                return Err(IntegrationError {
                    message: format!("{name} answered HTTP {status}; the response was not read: {e}"),
                    outcome_unknown: status.is_server_error(),
                });
            }
        };
        let text = String::from_utf8_lossy(&bytes);
        if !status.is_success() {
            return Err(IntegrationError {
                message: format!("{name} answered HTTP {status}: {}", text.chars().take(300).collect::<String>()),
                // A 5xx may come after the work was done (a timeout behind a proxy).
                outcome_unknown: status.is_server_error(),
            });
        }
        // What is stored on the action, cached and returned is cut to
        // MAX_STORED_RESPONSE: whole when small, a cut text otherwise.
        let body: Value = match serde_json::from_str::<Value>(&text) {
            Ok(value) if text.len() <= MAX_STORED_RESPONSE => value,
            _ => Value::String(cut(&text, MAX_STORED_RESPONSE)),
        };
        if let Some(stamp) = stamp {
            let ttl = Duration::from_secs(integration.cache_ttl_seconds);
            let _ = self.cache.put_for(CacheKind::Api, name, &cache_key, &body.to_string(), &stamp, ttl).await;
        }
        Ok(body)
    }

    /// Drops an integration's cached GET responses.
    pub async fn invalidate(&self, name: &str) -> Result<(), String> {
        self.get(name)?;
        self.cache.invalidate_scope(CacheKind::Api, name).await.map_err(|e| e.to_string())
    }

    fn token_key(&self, name: &str) -> String {
        format!("{}oauth:{{{name}}}:token", self.prefix)
    }

    async fn bearer(&self, name: &str, integration: &Integration) -> Result<Option<String>, String> {
        match &integration.auth {
            Auth::None => Ok(None),
            Auth::Bearer { token } => Ok(Some(token.clone())),
            Auth::OauthClientCredentials { .. } => self.token(name).await.map(Some),
        }
    }

    /// The integration's OAuth token: from Redis, or fetched by exactly one
    /// caller across all instances while the others wait for it.
    pub async fn token(&self, name: &str) -> Result<String, String> {
        let integration = self.get(name)?;
        let Auth::OauthClientCredentials { token_url, client_id, client_secret, scope } = &integration.auth else {
            return Err(format!("{name} does not use OAuth"));
        };
        let token_key = self.token_key(name);
        let lock_key = format!("{}oauth:{{{name}}}:refresh", self.prefix);
        let mut conn = self.conn.clone();
        let started = Instant::now();
        loop {
            let cached: Option<String> = conn.get(&token_key).await.map_err(|e| format!("redis: {e}"))?;
            if let Some(token) = cached {
                return Ok(token);
            }
            let owner = uuid::Uuid::new_v4().to_string();
            let acquired: bool = redis::cmd("SET")
                .arg(&lock_key)
                .arg(&owner)
                .arg("NX")
                .arg("PX")
                .arg(REFRESH_LOCK.as_millis() as u64)
                .query_async::<Option<String>>(&mut conn)
                .await
                .map_err(|e| format!("redis: {e}"))?
                .is_some();
            if acquired {
                let fetched = self.fetch_token(token_url, client_id, client_secret, scope.as_deref()).await;
                let result = match fetched {
                    Ok((token, expires_in)) => {
                        let ttl =
                            Duration::from_secs(expires_in).saturating_sub(EXPIRY_MARGIN).max(Duration::from_secs(1));
                        let _: () =
                            conn.set_ex(&token_key, &token, ttl.as_secs()).await.map_err(|e| format!("redis: {e}"))?;
                        Ok(token)
                    }
                    Err(e) => Err(format!("{name}: token request failed: {e}")),
                };
                let _: Result<(), _> = conn.del(&lock_key).await;
                return result;
            }
            if started.elapsed() > REFRESH_LOCK + Duration::from_secs(2) {
                return Err(format!("{name}: timed out waiting for another instance's token refresh"));
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    async fn fetch_token(
        &self,
        token_url: &str,
        client_id: &str,
        client_secret: &str,
        scope: Option<&str>,
    ) -> Result<(String, u64), String> {
        let mut form =
            vec![("grant_type", "client_credentials"), ("client_id", client_id), ("client_secret", client_secret)];
        if let Some(scope) = scope {
            form.push(("scope", scope));
        }
        let body =
            form.iter().map(|(k, v)| format!("{k}={}", crate::config::url_escape(v))).collect::<Vec<_>>().join("&");
        let response = self
            .client
            .post(token_url)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .map_err(|e| e.without_url().to_string())?;
        let status = response.status();
        if !status.is_success() {
            return Err(format!("HTTP {status}"));
        }
        let body = read_capped(response, self.max_body).await.map_err(|e| e.to_string())?;
        let value: Value = serde_json::from_slice(&body).map_err(|_| "the token response is not JSON".to_owned())?;
        let token = value["access_token"].as_str().ok_or("no access_token in the response")?.to_owned();
        Ok((token, value["expires_in"].as_u64().unwrap_or(3600)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_that_leave_the_base_once_decoded_are_refused() {
        for path in [
            "../admin",
            "a/../../b",
            "..;/x",
            "%2e%2e/x",
            "%252e%252e/x",
            "%25252e%25252e/x",
            "a%2f..%2fb",
            "x;jsessionid=1",
            "http://evil/x",
            "a\\b",
            "a?b=1",
            "a#b",
            "./x",
            "%00",
            "%ff",
        ] {
            assert!(safe_path(path).is_err(), "{path}");
        }
        for path in ["", "orders/42", "/orders", "search/a%20b", "v1.2/items", "a..b"] {
            assert!(safe_path(path).is_ok(), "{path}");
        }
    }

    #[test]
    fn the_base_path_ends_on_a_segment_boundary() {
        assert!(under_base("/v1", "/v1"));
        assert!(under_base("/v1/orders", "/v1/"));
        assert!(!under_base("/v1x/orders", "/v1"));
        assert!(!under_base("/v2", "/v1"));
        assert!(under_base("/anything", "/"));
    }

    #[test]
    fn stored_responses_are_cut_on_a_character_boundary() {
        let text = "é".repeat(20);
        let stored = cut(&text, 7);
        assert!(stored.starts_with("ééé…"), "{stored}");
        assert_eq!(cut("short", 100), "short");
    }
}
