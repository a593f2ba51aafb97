//! Live chat's clients: the connection registry ([`Registry`], DynamoDB)
//! and pushes through API Gateway's management API (`PostToConnection` to
//! `WS_ENDPOINT`, the same calls against the local gateway's
//! `/@connections`). Built lazily (the SDK's configuration loads
//! asynchronously) and once per cold start ([`Live::prepare`]).
//!
//! Pushes are hints; the chat log in Postgres is the truth (a client that
//! misses one reads it back after its last sequence number). So a push
//! never fails the request that made it: each connection is tried on its
//! own, concurrently; a `410 Gone` deletes *that* connection's items (never
//! the sender's, unless it is the one gone); throttling
//! (`LimitExceededException`) is retried with backoff, a few times.

use std::{sync::Arc, time::Duration};

use aws_sdk_apigatewaymanagement::{error::DisplayErrorContext, primitives::Blob};
use futures::StreamExt;
use serde_json::{Value, json};
use tokio::sync::OnceCell;

use crate::{
    clock::now_epoch_seconds,
    config::ChatConfig,
    connections::{Connection, Registry},
    error::AppError,
    postgres::chat::ChatMessage,
};

/// A connection registered this recently is not forgotten on a `410`
/// (API Gateway's answer while its `$connect` runs).
const CONNECTING_GRACE_SECS: u64 = 30;
/// Longest DynamoDB or management-API call: a hung one must not hold an answer.
const AWS_CALL_TIMEOUT: Duration = Duration::from_secs(2);
/// Pushes in flight at once for one fan-out.
const PUSH_CONCURRENCY: usize = 32;
/// Tries of one push throttled by API Gateway (`LimitExceededException`).
const THROTTLED_TRIES: u32 = 4;
/// Longest wait for one push: a dead endpoint must not hold a request.
const PUSH_TIMEOUT: Duration = Duration::from_secs(3);

/// What became of one push.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    Sent,
    /// The connection is closed (`410`): its items were deleted.
    Gone,
    Failed,
}

/// Counts of one fan-out.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PushReport {
    pub sent: usize,
    pub gone: usize,
    pub failed: usize,
}

#[derive(Debug)]
struct Clients {
    registry: Registry,
    gateway: Option<aws_sdk_apigatewaymanagement::Client>,
}

/// Live chat, configured (`CONNECTIONS_TABLE`) or not.
#[derive(Debug, Clone)]
pub struct Live {
    table: Option<String>,
    endpoint: Option<String>,
    clients: Arc<OnceCell<Clients>>,
}

impl Live {
    pub fn from_config(config: &ChatConfig) -> Self {
        Self { table: config.connections_table.clone(), endpoint: config.endpoint.clone(), clients: Arc::default() }
    }

    /// Live chat with clients built by the caller (tests give moto's).
    pub fn with_clients(registry: Registry, gateway: Option<aws_sdk_apigatewaymanagement::Client>) -> Self {
        Self {
            table: Some(registry.table().to_owned()),
            endpoint: None,
            clients: Arc::new(OnceCell::new_with(Some(Clients { registry, gateway }))),
        }
    }

    /// Whether a connections table is configured.
    pub fn enabled(&self) -> bool {
        self.table.is_some()
    }

    /// Builds the clients now (cold start) rather than at the first push.
    pub async fn prepare(&self) {
        let _ = self.clients().await;
    }

    async fn clients(&self) -> Option<&Clients> {
        let table = self.table.as_ref()?;
        Some(
            self.clients
                .get_or_init(|| async {
                    let timeouts = aws_config::timeout::TimeoutConfig::builder()
                        .operation_timeout(AWS_CALL_TIMEOUT)
                        .connect_timeout(Duration::from_secs(1))
                        .build();
                    let shared = aws_config::defaults(aws_config::BehaviorVersion::latest())
                        .http_client(crate::config::secrets::http_client())
                        .timeout_config(timeouts)
                        .load()
                        .await;
                    let gateway = self.endpoint.as_ref().map(|endpoint| {
                        let config =
                            aws_sdk_apigatewaymanagement::config::Builder::from(&shared).endpoint_url(endpoint).build();
                        aws_sdk_apigatewaymanagement::Client::from_conf(config)
                    });
                    Clients { registry: Registry::new(aws_sdk_dynamodb::Client::new(&shared), table), gateway }
                })
                .await,
        )
    }

    /// The registry, or `503` when live chat is not configured.
    pub async fn registry(&self) -> Result<&Registry, AppError> {
        self.clients().await.map(|c| &c.registry).ok_or(AppError::Unavailable { dependency: "dynamodb" })
    }

    /// Sends one frame to one connection.
    pub async fn post(&self, connection_id: &str, frame: &Value) -> Pushed {
        let Some(clients) = self.clients().await else { return Pushed::Failed };
        let Some(gateway) = &clients.gateway else {
            tracing::warn!("WS_ENDPOINT is not set: nothing can be pushed");
            return Pushed::Failed;
        };
        let data = Blob::new(serde_json::to_vec(frame).unwrap_or_default());
        for attempt in 1..=THROTTLED_TRIES {
            let sent = gateway.post_to_connection().connection_id(connection_id).data(data.clone()).send();
            let error = match tokio::time::timeout(PUSH_TIMEOUT, sent).await {
                Ok(Ok(_)) => return Pushed::Sent,
                Ok(Err(error)) => error,
                Err(_) => {
                    tracing::warn!(connection_id, "push timed out");
                    return Pushed::Failed;
                }
            };
            let service = error.as_service_error();
            if service.is_some_and(|e| e.is_gone_exception()) {
                // That connection is gone, no other: forget it alone — unless
                // it registered moments ago: API Gateway answers 410 to a
                // push while a connection's `$connect` is still running, and
                // forgetting it then would orphan a live socket.
                let young = match clients.registry.get(connection_id).await {
                    Ok(Some(c)) => now_epoch_seconds() as u64 <= c.connected_at + CONNECTING_GRACE_SECS,
                    _ => false,
                };
                if !young && let Err(err) = clients.registry.forget(connection_id).await {
                    tracing::warn!(connection_id, error = %err, "gone connection not forgotten (its ttl will)");
                }
                return Pushed::Gone;
            }
            if service.is_some_and(|e| e.is_limit_exceeded_exception()) && attempt < THROTTLED_TRIES {
                tokio::time::sleep(Duration::from_millis(50 << attempt)).await;
                continue;
            }
            tracing::warn!(connection_id, error = %DisplayErrorContext(&error), "push failed");
            return Pushed::Failed;
        }
        Pushed::Failed
    }

    /// Sends `frame` to every connection in `to`, concurrently.
    pub async fn post_all(&self, to: &[Connection], frame: &Value) -> PushReport {
        // The pushes collected first: a stream holding a closure over
        // borrowed connections makes this future `Send` for one lifetime
        // only (a rustc limitation), and the local gateway spawns it.
        let pushes: Vec<_> = to.iter().map(|connection| self.post(&connection.connection_id, frame)).collect();
        let results: Vec<Pushed> = futures::stream::iter(pushes).buffer_unordered(PUSH_CONCURRENCY).collect().await;
        let mut report = PushReport::default();
        for result in results {
            match result {
                Pushed::Sent => report.sent += 1,
                Pushed::Gone => report.gone += 1,
                Pushed::Failed => report.failed += 1,
            }
        }
        report
    }

    /// Sends `frame` to every connection watching `conversation` but `except`.
    pub async fn push(&self, conversation: &str, frame: &Value, except: Option<&str>) -> PushReport {
        if !self.enabled() {
            return PushReport::default();
        }
        let watchers = match self.registry().await {
            Ok(registry) => registry.watchers(conversation).await,
            Err(err) => Err(err),
        };
        let mut watchers = match watchers {
            Ok(watchers) => watchers,
            Err(err) => {
                tracing::warn!(conversation_id = conversation, error = %err, "watchers not read; nothing pushed");
                return PushReport::default();
            }
        };
        watchers.retain(|c| Some(c.connection_id.as_str()) != except);
        self.post_all(&watchers, frame).await
    }

    /// Pushes freshly logged messages to their conversations' watchers
    /// (`except`: the connection that sent them): one look-up of watchers
    /// per conversation; to each connection its messages in order; the
    /// connections and the conversations concurrently.
    pub async fn publish(&self, fresh: &[ChatMessage], except: Option<&str>) {
        if !self.enabled() || fresh.is_empty() {
            return;
        }
        let mut conversations: Vec<(&str, Vec<&ChatMessage>)> = Vec::new();
        for message in fresh {
            let conversation = message.entry.conversation_id.as_str();
            match conversations.iter_mut().find(|(c, _)| *c == conversation) {
                Some((_, messages)) => messages.push(message),
                None => conversations.push((conversation, vec![message])),
            }
        }
        futures::stream::iter(conversations)
            .for_each_concurrent(8, |(conversation, messages)| async move {
                let watchers = match self.registry().await {
                    Ok(registry) => registry.watchers(conversation).await,
                    Err(err) => Err(err),
                };
                let watchers = match watchers {
                    Ok(watchers) => watchers,
                    Err(err) => {
                        tracing::warn!(conversation_id = conversation, error = %err, "watchers not read; nothing pushed");
                        return;
                    }
                };
                let targets = watchers.iter().filter(|c| Some(c.connection_id.as_str()) != except);
                futures::stream::iter(targets)
                    .for_each_concurrent(PUSH_CONCURRENCY, |connection| {
                        let messages = &messages;
                        async move {
                            for message in messages.iter() {
                                if self.post(&connection.connection_id, &message_frame(message)).await == Pushed::Gone {
                                    break;
                                }
                            }
                        }
                    })
                    .await;
            })
            .await;
    }
}

/// A logged message as pushed (and as the history returns it).
pub fn message_frame(message: &ChatMessage) -> Value {
    let mut frame = serde_json::to_value(message).unwrap_or_else(|_| json!({}));
    frame["type"] = json!("message");
    frame
}
