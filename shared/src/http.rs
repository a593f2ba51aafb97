//! The router every entry point calls: the Lambda adapter ([`crate::lambda`])
//! and the local gateway both hand it an `http::Request<Bytes>` and send back
//! what it returns, so a route behaves the same everywhere.

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use serde::Serialize;

use crate::{App, error::AppError, handlers};

/// Bodies above this are refused before parsing (the largest valid message is
/// 64 KiB of content plus a little JSON).
pub const MAX_BODY_BYTES: usize = 256 * 1024;

/// Every HTTP route this crate serves, as `(method, path)`; the gateway and
/// README list these.
pub const ROUTES: &[(&str, &str)] = &[("POST", "/api/v1/enhanced-handle-message"), ("POST", "/api/v1/pancake/webhook")];

/// Dispatches one request. Never panics on input; every failure is an
/// [`AppError`] mapped to its status.
pub async fn route(app: &App, request: Request<Bytes>) -> Response<Bytes> {
    let path = request.uri().path().trim_end_matches('/').to_owned();
    let result = if request.body().len() > MAX_BODY_BYTES {
        Err(AppError::TooLarge { field: "body", limit: MAX_BODY_BYTES })
    } else {
        match (request.method(), path.as_str()) {
            (&Method::POST, "/api/v1/enhanced-handle-message") => {
                handlers::enhanced_handle_message(app, &request).await
            }
            (&Method::POST, "/api/v1/pancake/webhook") => crate::webhook::pancake_webhook(app, &request).await,
            (_, "/api/v1/enhanced-handle-message" | "/api/v1/pancake/webhook") => Err(AppError::MethodNotAllowed),
            _ => Err(AppError::NotFound),
        }
    };
    result.unwrap_or_else(AppError::into_response)
}

/// A JSON response with the given status.
pub fn json_response(status: StatusCode, body: &impl Serialize) -> Response<Bytes> {
    let bytes = serde_json::to_vec(body).map(Bytes::from).unwrap_or_else(|_| Bytes::from_static(b"{}"));
    let mut response = Response::new(bytes);
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}
