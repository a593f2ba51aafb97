//! The router every entry point calls: the Lambda adapter ([`crate::lambda`])
//! and the local gateway both hand it an `http::Request<Bytes>` and send back
//! what it returns, so a route behaves the same everywhere.

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};

use crate::{App, admin, error::AppError, handlers, response::json_response};

/// Bodies above this are refused before parsing (the largest valid message is
/// 64 KiB of content plus a little JSON).
pub const MAX_BODY_BYTES: usize = 256 * 1024;

/// Dispatches one request. Never panics on input; every failure is an
/// [`AppError`] mapped to its status.
pub async fn route(app: &App, request: Request<Bytes>) -> Response<Bytes> {
    let result = if request.body().len() > MAX_BODY_BYTES {
        Err(AppError::TooLarge { field: "body", limit: MAX_BODY_BYTES })
    } else {
        dispatch(app, &request).await
    };
    result.unwrap_or_else(AppError::into_response)
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
        (["openapi.json"], &Method::GET) => Ok(json_response(StatusCode::OK, &crate::openapi::document())),
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
                (["health" | "stats" | "conversations" | "system" | "assistants", ..], _) => Err(known_path(rest)),
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
        | ["assistants", _] => AppError::MethodNotAllowed,
        _ => AppError::NotFound,
    }
}

fn percent_decode(segment: &str) -> Option<String> {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}
