//! The operator APIs (seed 001's admin endpoints, seed 004's cache
//! endpoints): health, statistics, conversation control, assistants, the
//! cache, dead letters (listed and replayed), actions by status, and a
//! page's reconciliation with Pancake after a missed stretch of webhooks. Every
//! route requires `Authorization: Bearer $ADMIN_ACCESS_TOKEN` (constant-time);
//! with no admin token configured every call is refused.

pub mod actions;
pub mod assistants;
pub mod cache_api;
pub mod control;
pub mod dead_letters;
pub mod health;
pub mod reconcile;
pub mod stats;

use bytes::Bytes;
use http::Request;
use serde_json::Value;

use crate::{
    App,
    auth::require_bearer,
    error::{AppError, AuthFailure},
};

/// `Ok` for a request carrying the admin token.
pub fn require_admin(app: &App, request: &Request<Bytes>) -> Result<(), AppError> {
    let expected =
        app.config.admin_access_token.as_ref().ok_or(AppError::Unauthorized { reason: AuthFailure::NotConfigured })?;
    require_bearer(request.headers(), expected)
}

/// A JSON object body (an empty body reads as `{}`).
pub(crate) fn json_body(request: &Request<Bytes>) -> Result<serde_json::Map<String, Value>, AppError> {
    if request.body().iter().all(u8::is_ascii_whitespace) {
        return Ok(serde_json::Map::new());
    }
    match serde_json::from_slice(request.body()) {
        Ok(Value::Object(map)) if crate::domain::contains_nul(&Value::Object(map.clone())) => {
            Err(AppError::invalid("body", "must not contain NUL characters"))
        }
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(AppError::invalid("body", "must be a JSON object")),
        Err(e) => Err(AppError::invalid("body", format!("malformed JSON: {e}"))),
    }
}

/// One query parameter, percent-decoded.
pub(crate) fn query_param(request: &Request<Bytes>, name: &str) -> Option<String> {
    let query = request.uri().query()?;
    let url = reqwest::Url::parse(&format!("http://localhost/?{query}")).ok()?;
    url.query_pairs().find(|(k, _)| k == name).map(|(_, v)| v.into_owned())
}

/// The `limit` of a paged listing: 1 to 500, 50 when absent.
pub(crate) fn page_limit(request: &Request<Bytes>) -> Result<i64, AppError> {
    match query_param(request, "limit") {
        None => Ok(50),
        Some(v) => v
            .parse()
            .ok()
            .filter(|n| (1..=500).contains(n))
            .ok_or_else(|| AppError::invalid("limit", "must be 1 to 500")),
    }
}
