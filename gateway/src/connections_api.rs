//! API Gateway's management API for WebSocket connections, on the gateway's
//! own port: what `aws-sdk-apigatewaymanagement` calls when `WS_ENDPOINT`
//! is the local gateway. `POST /@connections/{id}` sends its body to the
//! socket (`PostToConnection`), `GET` describes the connection, `DELETE`
//! closes it. A closed or unknown connection is a real `410 Gone` with the
//! `x-amzn-ErrorType: GoneException` the SDK reads the error from (its
//! status alone would be an unhandled error), so `Live::post` forgets that
//! connection exactly as it does in AWS; a body over 128 KB is `413`
//! (`PayloadTooLargeException`). Requests are SigV4-signed by the SDK; the
//! signature is not checked here.

use axum::{
    Json,
    body::Bytes,
    extract::{Path, State},
    http::{HeaderName, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
};
use serde_json::json;

use crate::{
    events::{self, iso8601},
    sockets::{Gateway, Posted},
    websocket::MAX_MESSAGE_BYTES,
};

/// An error as API Gateway's management API answers it.
fn error(status: StatusCode, kind: &'static str, message: String) -> Response {
    let mut response = (status, Json(json!({"message": message}))).into_response();
    let headers = response.headers_mut();
    headers.insert(HeaderName::from_static("x-amzn-errortype"), HeaderValue::from_static(kind));
    with_request_id(response)
}

fn with_request_id(mut response: Response) -> Response {
    if let Ok(id) = HeaderValue::from_str(&events::new_id()) {
        response.headers_mut().insert(HeaderName::from_static("x-amzn-requestid"), id);
    }
    response
}

fn gone(id: &str) -> Response {
    error(StatusCode::GONE, "GoneException", format!("connection {id} is gone"))
}

/// `PostToConnection`.
pub async fn post(State(gateway): State<Gateway>, Path(id): Path<String>, body: Bytes) -> Response {
    if body.len() > MAX_MESSAGE_BYTES {
        let message = format!("the message is {} bytes; at most {MAX_MESSAGE_BYTES}", body.len());
        return error(StatusCode::PAYLOAD_TOO_LARGE, "PayloadTooLargeException", message);
    }
    match gateway.sockets.post(&id, body).await {
        Posted::Sent => with_request_id(StatusCode::OK.into_response()),
        Posted::Gone => gone(&id),
        Posted::Stuck => {
            tracing::warn!(connection_id = id, "push not written in time: the client is not reading");
            error(StatusCode::INTERNAL_SERVER_ERROR, "InternalServerErrorException", "push timed out".into())
        }
    }
}

/// `GetConnection`.
pub async fn get(State(gateway): State<Gateway>, Path(id): Path<String>) -> Response {
    let Some(info) = gateway.sockets.info(&id) else { return gone(&id) };
    let mut identity = json!({"sourceIp": info.identity.source_ip});
    if let Some(agent) = info.identity.user_agent {
        identity["userAgent"] = json!(agent);
    }
    let body = json!({
        "connectedAt": iso8601(info.connected_at),
        "identity": identity,
        "lastActiveAt": iso8601(info.last_active_at),
    });
    with_request_id((StatusCode::OK, Json(body)).into_response())
}

/// `DeleteConnection`: the socket gets a normal close frame (`1000`).
pub async fn delete(State(gateway): State<Gateway>, Path(id): Path<String>) -> Response {
    if gateway.sockets.close(&id, 1000, "") {
        with_request_id(StatusCode::NO_CONTENT.into_response())
    } else {
        gone(&id)
    }
}
