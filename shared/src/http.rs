//! The router every entry point calls: the Lambda adapter ([`crate::lambda`])
//! and the local gateway both hand it an `http::Request<Bytes>` through
//! [`serve`] and send back what it returns, so a route behaves, logs and
//! counts the same everywhere.

use std::time::Instant;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};

use crate::{App, admin, clock::elapsed_ms, error::AppError, handlers, metrics, response::json_response};

/// Bodies above this are refused before parsing (the largest valid message is
/// 64 KiB of content plus a little JSON).
pub const MAX_BODY_BYTES: usize = 256 * 1024;

pub use crate::auth::SourceIp;

/// One request from an entry point: routed inside a metrics scope, then
/// one log line (`request`: `request_id`, `method`, `route` — the path,
/// never the query, which holds the webhook's token —, `status`,
/// `latency_ms`, `conversation_id` where there is one, `cache_hits`,
/// `cache_misses`; `warn` for a 5xx) and its EMF documents. `request_id` is
/// Lambda's, or one the local gateway made up.
pub async fn serve(app: &App, request: Request<Bytes>, request_id: &str) -> Response<Bytes> {
    let started = Instant::now();
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    // Boxed: the routes' futures are too deep for the callers' to lay out inline.
    let (response, mut observed) = metrics::scope(Box::pin(route(app, request))).await;
    let status = response.status();
    let latency_ms = elapsed_ms(started.elapsed());
    // A message route that refused or failed still counts as handled, so a
    // failing sender shows in `MessagesHandled` too.
    if matches!(route_family(&path), "enhanced-handle-message" | "webhook") {
        if status.is_server_error() {
            observed.handled_if_unset("failed");
        } else if status.is_client_error() {
            observed.handled_if_unset("rejected");
        }
    }
    let (cache_hits, cache_misses) = observed.cache_totals();
    let conversation_id = observed.conversation_id();
    let status = status.as_u16();
    if status >= 500 {
        tracing::warn!(request_id, %method, route = path.as_str(), status, latency_ms, conversation_id,
            cache_hits, cache_misses, "request");
    } else {
        tracing::info!(request_id, %method, route = path.as_str(), status, latency_ms, conversation_id,
            cache_hits, cache_misses, "request");
    }
    observed.emit(Some(request_id));
    response
}

/// Dispatches one request. Never panics on input; every failure is an
/// [`AppError`] mapped to its status.
pub async fn route(app: &App, request: Request<Bytes>) -> Response<Bytes> {
    // The chat routes are called by a widget embedded on the shop's own
    // site (another origin): CORS, for any origin — they authenticate by
    // header (the widget key, a bearer token), never by cookie.
    let chat = request.uri().path().starts_with("/api/v1/chat/");
    if chat && request.method() == Method::OPTIONS {
        let mut response = Response::new(Bytes::new());
        *response.status_mut() = StatusCode::NO_CONTENT;
        let headers = response.headers_mut();
        headers.insert("access-control-allow-methods", http::HeaderValue::from_static("GET, POST, OPTIONS"));
        headers.insert(
            "access-control-allow-headers",
            http::HeaderValue::from_static("authorization, content-type, x-widget-key"),
        );
        headers.insert("access-control-max-age", http::HeaderValue::from_static("600"));
        headers.insert("access-control-allow-origin", http::HeaderValue::from_static("*"));
        return response;
    }
    let mut response = route_inner(app, request).await;
    if chat {
        response.headers_mut().insert("access-control-allow-origin", http::HeaderValue::from_static("*"));
    }
    response
}

async fn route_inner(app: &App, request: Request<Bytes>) -> Response<Bytes> {
    let result = if request.body().len() > MAX_BODY_BYTES {
        Err(AppError::TooLarge { field: "body", limit: MAX_BODY_BYTES })
    } else {
        dispatch(app, &request).await
    };
    if let Err(err) = &result
        && let Some(reason) = err.auth_failure()
    {
        refused(app, &request, reason).await;
    }
    result.unwrap_or_else(AppError::into_response)
}

/// A refused credential, made visible: one log line (route, source, reason;
/// never the token) and a count per route family in Redis, which
/// `GET /api/v1/admin/stats` reports, so brute force shows.
async fn refused(app: &App, request: &Request<Bytes>, reason: crate::error::AuthFailure) {
    let route = route_family(request.uri().path());
    let source = request.extensions().get::<SourceIp>().map_or("unknown", |s| s.0.as_str());
    tracing::warn!(route, method = %request.method(), source, reason = reason.as_str(), "authentication failed");
    if let Err(err) = app.store.count_auth_failure(route).await {
        tracing::warn!(error = %err, "authentication failure not counted");
    }
}

/// The family a path belongs to (a bounded set of labels for the counter).
fn route_family(path: &str) -> &'static str {
    if path.starts_with("/api/v1/admin") || path.starts_with("/admin/") {
        "admin"
    } else if path.starts_with("/api/cache") {
        "cache"
    } else if path.starts_with("/api/v1/pancake/webhook") {
        "webhook"
    } else if path.starts_with("/api/v1/enhanced-handle-message") {
        "enhanced-handle-message"
    } else if path.starts_with("/api/v1/chat") {
        "chat"
    } else {
        "other"
    }
}

async fn dispatch(app: &App, request: &Request<Bytes>) -> Result<Response<Bytes>, AppError> {
    let path = request.uri().path().trim_end_matches('/');
    // Percent-decoded segments, so ids with reserved characters round-trip.
    let segments: Vec<String> = path
        .split('/')
        .skip(1)
        .map(|s| percent_decode(s).ok_or_else(|| AppError::invalid("path", "is not valid UTF-8 once decoded")))
        .collect::<Result<_, _>>()?;
    let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
    let method = request.method();
    let admin = |app: &App| admin::require_admin(app, request);
    match (segments.as_slice(), method) {
        (["api", "v1", "enhanced-handle-message"], &Method::POST) => {
            handlers::enhanced_handle_message(app, request).await
        }
        (["api", "v1", "pancake", "webhook"], &Method::POST) => crate::webhook::pancake_webhook(app, request).await,
        (["api", "v1", "chat", "sessions"], &Method::POST) => crate::chat_api::open_session(app, request).await,
        (["api", "v1", "chat", "conversations"], &Method::GET) => crate::chat_api::conversations(app, request).await,
        (["api", "v1", "chat", "conversations", id, "messages"], &Method::GET) => {
            crate::chat_api::history(app, id, request).await
        }
        (
            ["api", "v1", "chat", "sessions"]
            | ["api", "v1", "chat", "conversations"]
            | ["api", "v1", "chat", "conversations", _, "messages"],
            _,
        ) => Err(AppError::MethodNotAllowed),
        (["openapi.json"], &Method::GET) => Ok(json_response(StatusCode::OK, &crate::openapi::document())),
        // Seed 001 also names the cleanup route without the `/api/v1` prefix.
        (["admin", "system", "cleanup"], &Method::POST) => {
            admin(app)?;
            admin::control::cleanup(app, request).await
        }
        (["api", "v1", "admin", rest @ ..], _) => {
            admin(app)?;
            match (rest, method) {
                (["health"], &Method::GET) => admin::health::health(app).await,
                (["stats"], &Method::GET) => admin::stats::stats(app).await,
                (["conversations"], &Method::GET) => admin::stats::conversations(app, request).await,
                (["conversations", id, "cancel"], &Method::POST) => admin::control::cancel(app, id).await,
                (["conversations", id, "resume"], &Method::POST) => admin::control::resume(app, id).await,
                (["system", "cleanup"], &Method::POST) => admin::control::cleanup(app, request).await,
                (["assistants", id], &Method::GET) => admin::assistants::get(app, id).await,
                (["assistants", id], &Method::PUT) => admin::assistants::put(app, id, request).await,
                (["assistants", id], &Method::DELETE) => admin::assistants::delete(app, id).await,
                (["dead-letters"], &Method::GET) => admin::dead_letters::list(app, request).await,
                (["dead-letters", id, "replay"], &Method::POST) => admin::dead_letters::replay(app, id).await,
                (["actions"], &Method::GET) => admin::actions::list(app, request).await,
                (["pages", page_id, "reconcile"], &Method::POST) => {
                    admin::reconcile::reconcile(app, page_id, request).await
                }
                (
                    [
                        "health" | "stats" | "conversations" | "system" | "assistants" | "dead-letters" | "actions"
                        | "pages",
                        ..,
                    ],
                    _,
                ) => Err(known_path(rest)),
                _ => Err(AppError::NotFound),
            }
        }
        (["api", "cache", rest @ ..], _) => {
            admin(app)?;
            match (rest, method) {
                (["health"], &Method::GET) => admin::cache_api::health(app).await,
                (["metrics"], &Method::GET) => admin::cache_api::metrics(app).await,
                (["metrics"], &Method::POST) => admin::cache_api::metrics_action(app, request).await,
                (["invalidate"], &Method::POST) => admin::cache_api::invalidate(app, request).await,
                (["warmup"], &Method::POST) => admin::cache_api::warmup(app, request).await,
                (["health" | "metrics" | "invalidate" | "warmup"], _) => Err(AppError::MethodNotAllowed),
                _ => Err(AppError::NotFound),
            }
        }
        (["api", "v1", "enhanced-handle-message"] | ["api", "v1", "pancake", "webhook"], _) => {
            Err(AppError::MethodNotAllowed)
        }
        _ => Err(AppError::NotFound),
    }
}

/// A known admin path with the wrong method or shape.
fn known_path(rest: &[&str]) -> AppError {
    match rest {
        ["health"]
        | ["stats"]
        | ["conversations"]
        | ["conversations", _, "cancel" | "resume"]
        | ["system", "cleanup"]
        | ["assistants", _]
        | ["dead-letters"]
        | ["dead-letters", _, "replay"]
        | ["actions"]
        | ["pages", _, "reconcile"] => AppError::MethodNotAllowed,
        _ => AppError::NotFound,
    }
}

/// A path segment percent-decoded (`None` if not valid UTF-8 once decoded).
/// `%` not followed by two hex digits stays as it is, as browsers and
/// API Gateway leave it.
fn percent_decode(segment: &str) -> Option<String> {
    percent_encoding::percent_decode_str(segment).decode_utf8().ok().map(std::borrow::Cow::into_owned)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_sign_is_not_a_hex_digit() {
        assert_eq!(percent_decode("%+5").as_deref(), Some("%+5"));
        assert_eq!(percent_decode("a%3Ab").as_deref(), Some("a:b"));
        assert_eq!(percent_decode("%ff"), None);
    }

    proptest! {
        #[test]
        fn encoded_segments_round_trip(raw in "\\PC{0,16}") {
            let encoded = percent_encoding::utf8_percent_encode(&raw, percent_encoding::NON_ALPHANUMERIC).to_string();
            prop_assert_eq!(percent_decode(&encoded), Some(raw));
        }
    }
}
