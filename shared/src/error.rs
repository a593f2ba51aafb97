//! The one error type every handler returns, and its one mapping to HTTP.
//!
//! Bodies are `{"success": false, "error": {"code", "message"[, "field"]}}`
//! (DESIGN §5). Internal details (driver errors, SQL, Redis replies) are
//! logged where the error is converted and never reach a response body: a
//! dependency failure is reported as `503` naming only the dependency.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use serde_json::json;

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("{field}: {message}")]
    InvalidField { field: &'static str, message: String },
    #[error("{field} is larger than {limit} bytes")]
    TooLarge { field: &'static str, limit: usize },
    #[error("missing or invalid bearer token")]
    Unauthorized { reason: AuthFailure },
    /// Pancake's webhook authenticates with a query secret, not a header.
    #[error("missing or invalid webhook token (the token query parameter)")]
    BadWebhookToken { reason: AuthFailure },
    /// A valid credential that does not open this resource (a customer
    /// token for another conversation).
    #[error("this token does not open that conversation")]
    Forbidden,
    #[error("too many requests")]
    TooManyRequests { retry_after_secs: u64 },
    #[error("not found")]
    NotFound,
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("{0}")]
    Conflict(String),
    #[error("{dependency} is unavailable")]
    Unavailable { dependency: &'static str },
    /// An outside service answered, but not usefully (refused the request,
    /// or sent something unreadable): retrying as it is will not help.
    #[error("{dependency} answered with an error")]
    BadGateway { dependency: &'static str },
    #[error("internal error")]
    Internal,
}

/// Why a credential was refused: logged and counted, never in a body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthFailure {
    Missing,
    Wrong,
    /// The route's secret is not configured: every call is refused.
    NotConfigured,
}

impl AuthFailure {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Missing => "missing",
            Self::Wrong => "wrong",
            Self::NotConfigured => "not_configured",
        }
    }
}

/// Which sliding window refused a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateScope {
    Conversation,
    Page,
}

impl std::fmt::Display for RateScope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Conversation => "conversation",
            Self::Page => "page",
        })
    }
}

impl AppError {
    /// Why authentication failed, if this is an authentication failure.
    pub fn auth_failure(&self) -> Option<AuthFailure> {
        match self {
            Self::Unauthorized { reason } | Self::BadWebhookToken { reason } => Some(*reason),
            _ => None,
        }
    }

    pub fn invalid(field: &'static str, message: impl Into<String>) -> Self {
        Self::InvalidField { field, message: message.into() }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Self::InvalidField { .. } => StatusCode::BAD_REQUEST,
            Self::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Unauthorized { .. } | Self::BadWebhookToken { .. } => StatusCode::UNAUTHORIZED,
            Self::Forbidden => StatusCode::FORBIDDEN,
            Self::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Self::BadGateway { .. } => StatusCode::BAD_GATEWAY,
            Self::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The error's code, as a body or an error frame names it.
    pub fn code(&self) -> &'static str {
        match self {
            Self::InvalidField { .. } => "invalid_request",
            Self::TooLarge { .. } => "payload_too_large",
            Self::Unauthorized { .. } | Self::BadWebhookToken { .. } => "unauthorized",
            Self::Forbidden => "forbidden",
            Self::TooManyRequests { .. } => "rate_limited",
            Self::NotFound => "not_found",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::Conflict(_) => "conflict",
            Self::Unavailable { .. } => "service_unavailable",
            Self::BadGateway { .. } => "bad_gateway",
            Self::Internal => "internal_error",
        }
    }

    /// The error as an HTTP response; the only place errors become HTTP.
    pub fn into_response(self) -> Response<Bytes> {
        let mut error = json!({ "code": self.code(), "message": self.to_string() });
        match &self {
            Self::InvalidField { field, .. } | Self::TooLarge { field, .. } => {
                error["field"] = json!(field);
            }
            _ => {}
        }
        let mut response = crate::response::json_response(self.status(), &json!({ "success": false, "error": error }));
        let headers = response.headers_mut();
        match &self {
            // Both stores down is transient by nature: tell the sender when to retry.
            Self::Unavailable { .. } => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
            }
            Self::Unauthorized { .. } => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            Self::TooManyRequests { retry_after_secs } => {
                if let Ok(value) = HeaderValue::from_str(&retry_after_secs.max(&1).to_string()) {
                    headers.insert(header::RETRY_AFTER, value);
                }
            }
            _ => {}
        }
        response
    }
}

/// The conversation the current request is about (`None` outside a request,
/// e.g. in the consumer), so a store failure names the conversation it hit.
fn current_conversation() -> Option<String> {
    crate::metrics::current_conversation()
}

impl From<::redis::RedisError> for AppError {
    fn from(err: ::redis::RedisError) -> Self {
        tracing::error!(error = %err, conversation_id = current_conversation().as_deref(), "redis call failed");
        Self::Unavailable { dependency: "redis" }
    }
}

impl From<deadpool_postgres::PoolError> for AppError {
    fn from(err: deadpool_postgres::PoolError) -> Self {
        tracing::error!(error = %err, conversation_id = current_conversation().as_deref(), "postgres pool failed");
        Self::Unavailable { dependency: "postgres" }
    }
}

impl From<tokio_postgres::Error> for AppError {
    /// Data errors are the caller's (400, 409); connection, resource and
    /// server errors are Postgres being unavailable (503).
    fn from(err: tokio_postgres::Error) -> Self {
        let code = err.code().map(|c| c.code().to_owned()).unwrap_or_default();
        if code.starts_with("22") {
            tracing::warn!(sqlstate = %code, conversation_id = current_conversation().as_deref(), "postgres refused the data");
            return Self::invalid("body", "contains a value the database cannot store");
        }
        if code == "23505" {
            tracing::warn!(sqlstate = %code, conversation_id = current_conversation().as_deref(), "unique key conflict");
            return Self::Conflict("a concurrent change conflicts with this one; retry".into());
        }
        tracing::error!(error = %err, conversation_id = current_conversation().as_deref(), "postgres query failed");
        Self::Unavailable { dependency: "postgres" }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internals_never_reach_the_body() {
        let response = AppError::Unavailable { dependency: "redis" }.into_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        let body: serde_json::Value = serde_json::from_slice(response.body()).unwrap();
        assert_eq!(body["error"]["message"], "redis is unavailable");
        assert_eq!(body["success"], false);
    }

    #[test]
    fn a_webhook_refusal_names_the_query_token_not_a_bearer_header() {
        let response = AppError::BadWebhookToken { reason: AuthFailure::Wrong }.into_response();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert!(response.headers().get(header::WWW_AUTHENTICATE).is_none());
        let body: serde_json::Value = serde_json::from_slice(response.body()).unwrap();
        assert!(body["error"]["message"].as_str().unwrap().contains("token query parameter"));
    }
}
