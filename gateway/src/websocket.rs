//! `ws://127.0.0.1:$PORT/ws`: API Gateway's WebSocket API, emulated so the
//! handlers the `ws-*` functions run (`switchboard::ws::handle`) get the
//! same events and their answers have the same effects as in AWS:
//!
//! - the upgrade request is `$connect` (its query string, so the `token`,
//!   and headers); the handshake completes only if the handler answers
//!   2xx, else the client gets that status (a bad token: `401`), as API
//!   Gateway answers the upgrade with the integration's status;
//! - each text frame is one `MESSAGE` event, routed by
//!   `$request.body.action`, handled on its own task: API Gateway invokes
//!   the integration once per frame, concurrently, so a slow `sendMessage`
//!   (the AI answering) holds up nothing else on the socket. No route
//!   response is configured, so what the handler returns is not sent back:
//!   replies come through the management API, as in AWS;
//! - API Gateway's limits, with its close codes: a frame over 32 KB or a
//!   message over 128 KB closes the connection with `1009` ("Message too
//!   big": API Gateway never hands such a message to the integration, so
//!   the handler's own 128 KB check only matters elsewhere); a binary
//!   frame with `1003` (API Gateway takes text frames only); 10 minutes
//!   without a frame from the client, or 2 hours connected, with `1001`
//!   ("Going away"); `$connect` taking over 29 s answers `504`;
//! - when the socket closes, `$disconnect` with the close code and reason
//!   (`1005` when the client's close frame had none, `1006` when the
//!   connection dropped without one).
//!
//! WebSocket pings are answered with pongs by the WebSocket library.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicI64, Ordering},
    },
    time::Duration,
};

use aws_lambda_events::{apigw::ApiGatewayProxyResponse, encodings::Body};
use axum::{
    extract::{
        ConnectInfo, State, WebSocketUpgrade,
        ws::{CloseFrame, Message, WebSocket},
    },
    http::{HeaderMap, StatusCode, Uri, header},
    response::{IntoResponse, Response},
};
use futures::{SinkExt, StreamExt, stream::SplitSink};
use switchboard::{App, ws::Route};
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite;

use crate::{
    events::{self, Connection, Identity},
    sockets::{Gateway, Outbound},
};

/// API Gateway's WebSocket frame size quota.
pub const MAX_FRAME_BYTES: usize = 32 * 1024;
/// API Gateway's message payload size quota.
pub const MAX_MESSAGE_BYTES: usize = 128 * 1024;
/// API Gateway closes a connection idle this long…
const IDLE_TIMEOUT: Duration = Duration::from_secs(10 * 60);
/// …and any connection this old.
const MAX_DURATION: Duration = Duration::from_secs(2 * 3600);
/// The integration timeout of `$connect`.
const INTEGRATION_TIMEOUT: Duration = Duration::from_secs(29);
/// How long a socket the gateway closes may take to answer its close frame.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// `GET /ws`: `$connect`, then the upgrade if it was accepted.
pub async fn upgrade(
    State(gateway): State<Gateway>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    uri: Uri,
    headers: HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Response {
    let source_ip = peer.ip().to_string();
    let user_agent = headers.get(header::USER_AGENT).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let connection = Connection {
        id: events::new_id(),
        connected_at: events::now_ms(),
        headers: events::headers(&headers, &source_ip, gateway.port),
        identity: Identity { source_ip, user_agent },
    };
    let event = events::connect(&connection, uri.query());
    let answer =
        tokio::time::timeout(INTEGRATION_TIMEOUT, switchboard::ws::handle(&gateway.app, Route::Connect, event));
    let Ok(answer) = answer.await else {
        return (StatusCode::GATEWAY_TIMEOUT, axum::Json(serde_json::json!({"message": "Endpoint request timed out"})))
            .into_response();
    };
    if !(200..300).contains(&answer.status_code) {
        return refusal(answer);
    }
    // Listed before the handshake completes: a push in between waits for it.
    let (outbox, last_active) =
        gateway.sockets.open(&connection.id, connection.connected_at, connection.identity.clone());
    let failed = (gateway.clone(), connection.clone());
    upgrade
        .max_frame_size(MAX_FRAME_BYTES)
        .max_message_size(MAX_MESSAGE_BYTES)
        .on_failed_upgrade(move |error| {
            let (gateway, connection) = failed;
            tracing::debug!(connection_id = connection.id, %error, "websocket upgrade failed");
            gateway.sockets.remove(&connection.id);
            tokio::spawn(
                async move { disconnect(&gateway.app, &connection, 1006, "Connection closed abnormally").await },
            );
        })
        .on_upgrade(move |socket| serve(gateway, connection, socket, outbox, last_active))
}

/// The handshake refused with the handler's status and body.
fn refusal(answer: ApiGatewayProxyResponse) -> Response {
    let status = u16::try_from(answer.status_code)
        .ok()
        .and_then(|s| StatusCode::from_u16(s).ok())
        .unwrap_or(StatusCode::BAD_GATEWAY);
    let body = match answer.body {
        Some(Body::Text(text)) => text.into_bytes(),
        Some(Body::Binary(bytes)) => bytes,
        _ => Vec::new(),
    };
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// One connection, from its upgrade to its `$disconnect`.
async fn serve(
    gateway: Gateway,
    connection: Connection,
    socket: WebSocket,
    outbox: mpsc::UnboundedReceiver<Outbound>,
    last_active: Arc<AtomicI64>,
) {
    tracing::debug!(connection_id = connection.id, "websocket open");
    let (sink, mut stream) = socket.split();
    let (closed, mut closing) = oneshot::channel();
    let writer = tokio::spawn(write(sink, outbox, closed));
    let started = tokio::time::Instant::now();
    let mut closing_started = false;
    let (code, reason) = loop {
        tokio::select! {
            // The gateway closed it (its close frame is sent): the client's
            // answer is awaited briefly, unless what it sent cannot be read on.
            closed = &mut closing => {
                let (code, reason) = closed.unwrap_or((1006, "Connection closed abnormally".into()));
                if code != 1009 && code != 1002 && code != 1007 {
                    let _ = tokio::time::timeout(CLOSE_GRACE, drain(&mut stream)).await;
                }
                break (code, reason);
            }
            _ = tokio::time::sleep_until(started + MAX_DURATION), if !closing_started => {
                closing_started = gateway.sockets.close(&connection.id, 1001, "Going away");
            }
            next = tokio::time::timeout(IDLE_TIMEOUT, stream.next()), if !closing_started => {
                let next = match next {
                    Ok(next) => next,
                    Err(_) => {
                        closing_started = gateway.sockets.close(&connection.id, 1001, "Going away");
                        continue;
                    }
                };
                last_active.store(events::now_ms(), Ordering::Relaxed);
                match next {
                    Some(Ok(Message::Text(text))) => {
                        let event = events::message(&connection, text.as_str());
                        let app = gateway.app.clone();
                        let id = connection.id.clone();
                        tokio::spawn(async move {
                            let answer = switchboard::ws::handle(&app, Route::Message, event).await;
                            tracing::debug!(connection_id = id, status = answer.status_code, "websocket frame handled");
                        });
                    }
                    Some(Ok(Message::Binary(_))) => {
                        closing_started = gateway.sockets.close(&connection.id, 1003, "Binary frames are not supported");
                    }
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                    Some(Ok(Message::Close(frame))) => break client_close(frame),
                    Some(Err(error)) => match close_for(error) {
                        Some((code, reason)) => closing_started = gateway.sockets.close(&connection.id, code, reason),
                        None => break (1006, "Connection closed abnormally".into()),
                    },
                    None => break (1006, "Connection closed abnormally".into()),
                }
            }
        }
    };
    gateway.sockets.remove(&connection.id);
    // The writer ends with its queue: nobody can push to this socket now.
    let _ = writer.await;
    tracing::debug!(connection_id = connection.id, code, reason, "websocket closed");
    disconnect(&gateway.app, &connection, code, &reason).await;
}

/// Writes the socket's frames in order; a close frame ends it.
async fn write(
    mut sink: SplitSink<WebSocket, Message>,
    mut outbox: mpsc::UnboundedReceiver<Outbound>,
    closed: oneshot::Sender<(u16, String)>,
) {
    while let Some(outbound) = outbox.recv().await {
        match outbound {
            Outbound::Frame(frame, written) => {
                let ok = sink.send(frame).await.is_ok();
                let _ = written.send(ok);
                if !ok {
                    break;
                }
            }
            Outbound::Close(code, reason) => {
                let frame = CloseFrame { code, reason: reason.clone().into() };
                let _ = sink.send(Message::Close(Some(frame))).await;
                let _ = closed.send((code, reason));
                break;
            }
        }
    }
    // Whatever is still queued finds the socket gone.
    outbox.close();
    while let Some(outbound) = outbox.recv().await {
        if let Outbound::Frame(_, written) = outbound {
            let _ = written.send(false);
        }
    }
}

/// Reads until the client's close frame (or the end).
async fn drain(stream: &mut futures::stream::SplitStream<WebSocket>) {
    while let Some(Ok(message)) = stream.next().await {
        if matches!(message, Message::Close(_)) {
            break;
        }
    }
}

/// The code and reason `$disconnect` reports for the client's close frame.
fn client_close(frame: Option<CloseFrame>) -> (u16, String) {
    match frame {
        Some(frame) => (frame.code, frame.reason.as_str().to_owned()),
        None => (1005, "Client-side close frame status not set".into()),
    }
}

/// The close frame a read error calls for; `None`: the connection is gone.
fn close_for(error: axum::Error) -> Option<(u16, &'static str)> {
    let error = error.into_inner();
    match error.downcast_ref::<tungstenite::Error>()? {
        tungstenite::Error::Capacity(_) => Some((1009, "Message too big")),
        tungstenite::Error::Utf8(_) => Some((1007, "Invalid frame payload data")),
        tungstenite::Error::Protocol(_) => Some((1002, "Protocol error")),
        _ => None,
    }
}

async fn disconnect(app: &App, connection: &Connection, code: u16, reason: &str) {
    let event = events::disconnect(connection, code, reason);
    let answer = switchboard::ws::handle(app, Route::Disconnect, event).await;
    if !(200..300).contains(&answer.status_code) {
        tracing::warn!(connection_id = connection.id, status = answer.status_code, "$disconnect failed");
    }
}
