//! The WebSocket API's three routes, on `aws_lambda_events`' API Gateway
//! WebSocket types — what `ws-connect`, `ws-disconnect` and `ws-message`
//! run in Lambda, and what the local gateway calls with the same events.
//!
//! - `$connect`: the `token` query parameter (browsers cannot set headers
//!   on a WebSocket) names an agent, the admin, or a customer and its one
//!   conversation; the connection is registered. A bad token is refused
//!   with `401` and nothing is registered.
//! - `$disconnect`: the connection's items are deleted.
//! - `$default` and the named routes (route selection
//!   `$request.body.action`): one frame ([`Frame`]) each. Replies go back
//!   to the sender through the management API (`PostToConnection`), as
//!   every push does; a bad frame gets an error frame and the connection
//!   stays open.

use aws_lambda_events::{
    apigw::{ApiGatewayProxyResponse, ApiGatewayWebsocketProxyRequest},
    encodings::Body,
};
use serde_json::{Value, json};

use crate::{
    App, chat, chat_api,
    clock::now_epoch_seconds,
    connections::Connection,
    domain::{Frame, FrameError},
    error::AppError,
};

/// Which of the WebSocket API's routes an event came through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    Connect,
    Disconnect,
    Message,
}

impl Route {
    pub fn name(self) -> &'static str {
        match self {
            Self::Connect => "$connect",
            Self::Disconnect => "$disconnect",
            Self::Message => "$default",
        }
    }
}

fn response(status: u16, body: Option<Value>) -> ApiGatewayProxyResponse {
    let mut response = ApiGatewayProxyResponse::default();
    response.status_code = i64::from(status);
    response.body = body.map(|b| Body::Text(b.to_string()));
    response
}

/// Handles one event of `route`. Never panics on input; the status is
/// what API Gateway acts on (a `$connect` answered other than 2xx refuses
/// the handshake).
pub async fn handle(app: &App, route: Route, event: ApiGatewayWebsocketProxyRequest) -> ApiGatewayProxyResponse {
    let Some(connection_id) = event.request_context.connection_id.clone() else {
        return response(400, Some(json!({"message": "no connection id in the event"})));
    };
    let request_id = event.request_context.request_id.clone().unwrap_or_default();
    // Boxed: the answering future is too deep to lay out inline.
    let (result, observed) = crate::metrics::scope(Box::pin(async {
        match route {
            Route::Connect => connect(app, &connection_id, &event).await,
            Route::Disconnect => disconnect(app, &connection_id).await,
            Route::Message => message(app, &connection_id, &event).await,
        }
    }))
    .await;
    observed.emit(Some(&request_id));
    match result {
        Ok(()) => response(200, None),
        Err(error) => {
            if let Some(reason) = error.auth_failure() {
                let source = event.request_context.identity.source_ip.as_deref().unwrap_or("unknown");
                tracing::warn!(route = route.name(), source, reason = reason.as_str(), "authentication failed");
                if let Err(err) = app.store.count_auth_failure("websocket").await {
                    tracing::debug!(error = %err, "authentication failure not counted");
                }
            } else {
                tracing::warn!(route = route.name(), connection_id, error = %error, "websocket event failed");
            }
            let status = error.status().as_u16();
            response(status, Some(json!({"message": error.to_string()})))
        }
    }
}

async fn connect(app: &App, connection_id: &str, event: &ApiGatewayWebsocketProxyRequest) -> Result<(), AppError> {
    let token = event
        .query_string_parameters
        .first("token")
        .ok_or(AppError::Unauthorized { reason: crate::error::AuthFailure::Missing })?;
    let caller = chat_api::authenticate(app, token)?;
    let connection = Connection {
        connection_id: connection_id.to_owned(),
        role: caller.role,
        subject: caller.subject,
        conversation_id: caller.conversation_id,
        connected_at: now_epoch_seconds() as u64,
    };
    app.live.registry().await?.register(&connection).await?;
    tracing::info!(connection_id, role = connection.role.as_str(), "websocket connected");
    Ok(())
}

async fn disconnect(app: &App, connection_id: &str) -> Result<(), AppError> {
    app.live.registry().await?.forget(connection_id).await?;
    tracing::info!(connection_id, "websocket disconnected");
    Ok(())
}

/// One frame. Its replies (and errors) go to the sender as frames; the
/// event itself only fails when the sender cannot even be looked up.
async fn message(app: &App, connection_id: &str, event: &ApiGatewayWebsocketProxyRequest) -> Result<(), AppError> {
    let body = event.body.as_deref().unwrap_or_default();
    let connection = app.live.registry().await?.get(connection_id).await?;
    let Some(connection) = connection else {
        // Registered connections only: an expired item, or a `$connect`
        // that never completed. The client reconnects.
        app.live
            .post(
                connection_id,
                &error_frame(None, "unknown_connection", None, "reconnect: this connection is not registered"),
            )
            .await;
        return Ok(());
    };
    let frame = match Frame::parse(body.as_bytes(), app.config.max_message_bytes) {
        Ok(frame) => frame,
        Err(FrameError { code, field, message }) => {
            app.live.post(connection_id, &error_frame(action_of(body), code, field, &message)).await;
            return Ok(());
        }
    };
    let action = frame.action();
    let replies = match dispatch(app, &connection, frame).await {
        Ok(replies) => replies,
        Err((error, client_message_id)) => {
            let mut frame = error_frame(Some(action), error.code(), error_field(&error), &error.to_string());
            if let Some(id) = client_message_id {
                frame["client_message_id"] = json!(id);
            }
            vec![frame]
        }
    };
    for reply in &replies {
        app.live.post(connection_id, reply).await;
    }
    Ok(())
}

type Failed = (AppError, Option<String>);

async fn dispatch(app: &App, connection: &Connection, frame: Frame) -> Result<Vec<Value>, Failed> {
    let plain = |e: AppError| (e, None);
    match frame {
        Frame::Ping => Ok(vec![json!({"type": "pong", "at": now_epoch_seconds()})]),
        Frame::SendMessage { conversation_id, message, client_message_id } => {
            let ack_now = async |ack: &Value| {
                app.live.post(&connection.connection_id, ack).await;
            };
            chat::send(app, connection, &conversation_id, &message, &client_message_id, ack_now)
                .await
                .map(|sent| sent.notices)
                .map_err(|e| (e, Some(client_message_id)))
        }
        Frame::Subscribe { conversation_id } => {
            chat::subscribe(app, connection, &conversation_id).await.map(|f| vec![f]).map_err(plain)
        }
        Frame::Unsubscribe { conversation_id } => {
            chat::unsubscribe(app, connection, &conversation_id).await.map(|f| vec![f]).map_err(plain)
        }
        Frame::ResumeBot { conversation_id } => {
            chat::resume_bot(app, connection, &conversation_id).await.map(|f| vec![f]).map_err(plain)
        }
        Frame::Typing { conversation_id, typing } => {
            chat::typing(app, connection, &conversation_id, typing).await.map(|()| Vec::new()).map_err(plain)
        }
    }
}

fn error_field(error: &AppError) -> Option<&'static str> {
    match error {
        AppError::InvalidField { field, .. } | AppError::TooLarge { field, .. } => Some(field),
        _ => None,
    }
}

/// `{"type": "error", "code", "message"[, "field"][, "action"]}`.
pub fn error_frame(action: Option<&str>, code: &str, field: Option<&str>, message: &str) -> Value {
    let mut frame = json!({"type": "error", "code": code, "message": message});
    if let Some(field) = field {
        frame["field"] = json!(field);
    }
    if let Some(action) = action {
        frame["action"] = json!(action);
    }
    frame
}

/// The `action` of a frame that did not parse, when it names a known one.
fn action_of(body: &str) -> Option<&'static str> {
    if body.len() > crate::domain::MAX_FRAME_BYTES {
        return None;
    }
    let value: Value = serde_json::from_str(body).ok()?;
    const ACTIONS: [&str; 6] = ["sendMessage", "subscribe", "unsubscribe", "resumeBot", "typing", "ping"];
    ACTIONS.into_iter().find(|a| value.get("action").and_then(Value::as_str) == Some(a))
}
