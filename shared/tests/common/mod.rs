//! Test harness: a real App against the real Redis and Postgres of this
//! machine, with a fresh Postgres schema and a unique Redis key prefix per
//! test (dropped again when the test ends, pass or fail), plus small HTTP stub
//! servers standing in for the services that are not ours (AI, Pancake).
#![allow(dead_code, clippy::unwrap_used)]

pub mod redis_server;

use std::{
    collections::HashMap,
    future::Future,
    net::SocketAddr,
    pin::Pin,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{Router, body::Bytes, extract::State, http::Uri};
use http::{HeaderMap, Method, Request, StatusCode};
use redis::AsyncCommands;
use serde_json::{Value, json};
use switchboard::{
    App, Config,
    ai::AiProvider,
    app::http_client,
    domain::ConversationId,
    redis::{KeySpace, RedisConnection, ShardKeys, Timeouts},
};

pub mod moto;
pub mod pancake;
pub mod process;

pub const TOKEN: &str = "test-pancake-token";

pub fn database_url() -> String {
    std::env::var("TEST_DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// One node, or a Redis Cluster's node list (`scripts/test` runs the
/// message-path and consumer suites against a 3-master cluster this way).
pub fn redis_url() -> String {
    std::env::var("TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/0".into())
}

/// A connection to `url`, single node or cluster (a comma-separated list);
/// a `rediss://` one trusts `TEST_TLS_CA_FILE` (the CA `scripts/test` makes).
pub fn redis_at(url: &str) -> RedisConnection {
    let timeouts = Timeouts { connect: Duration::from_secs(2), response: Duration::from_secs(5) };
    let ca = std::env::var("TEST_TLS_CA_FILE")
        .ok()
        .filter(|_| url.starts_with("rediss://"))
        .map(|path| std::fs::read(&path).unwrap_or_else(|e| panic!("TEST_TLS_CA_FILE {path}: {e}")));
    RedisConnection::open(url, url.contains(','), ca.as_deref(), timeouts).unwrap()
}

/// Parses a conversation id (test shorthand).
pub fn cid(id: &str) -> ConversationId {
    ConversationId::parse(id).unwrap()
}

/// The seed-001 example request.
pub fn seed_request() -> Value {
    json!({
        "conversation_id": "conv_12345",
        "message_id": "msg_67890",
        "message_content": "Tôi muốn đặt lịch khám bệnh",
        "sender_id": "user_123",
        "sender_type": "user",
        "timestamp": 1699123456.789,
        "metadata": {"platform": "web", "user_agent": "Mozilla/5.0...", "page_id": "page_1"}
    })
}

pub fn message(conversation: &str, id: &str, text: &str, ts: f64) -> Value {
    json!({"conversation_id": conversation, "message_id": id, "message_content": text,
           "sender_id": "customer_1", "sender_type": "user", "timestamp": ts, "metadata": {"page_id": "page_1"}})
}

/// Posts a Pancake webhook `event` to `app` through the router, with `secret` as its `?token=`.
pub async fn webhook_to(app: &App, secret: &str, event: &Value) -> (StatusCode, Value) {
    let request = Request::builder()
        .method(Method::POST)
        .uri(format!("/api/v1/pancake/webhook?token={secret}"))
        .body(Bytes::from(event.to_string()))
        .unwrap();
    let response = switchboard::http::route(app, request).await;
    (response.status(), serde_json::from_slice(response.body()).unwrap_or(Value::Null))
}

/// Steps `consumer` until two consecutive steps find nothing (bounded).
pub async fn drain(consumer: &switchboard::consumer::Consumer) -> switchboard::consumer::Summary {
    let mut total = switchboard::consumer::Summary::default();
    let mut idle = 0;
    for _ in 0..500 {
        let step = consumer.step().await.expect("consumer step");
        if step.read == 0 && step.reclaimed == 0 {
            idle += 1;
            if idle >= 2 {
                break;
            }
        } else {
            idle = 0;
        }
        total += step;
    }
    total
}

pub struct TestEnv {
    pub app: App,
    pub schema: String,
    pub prefix: String,
    pub env: HashMap<String, String>,
}

impl TestEnv {
    pub async fn new() -> Self {
        Self::with(&[], None).await
    }

    /// `vars` override the defaults; `ai` replaces the configured provider.
    pub async fn with(vars: &[(&str, &str)], ai: Option<Arc<dyn AiProvider>>) -> Self {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let schema = format!("t_{id}");
        let prefix = format!("test:{id}:");
        let mut env: HashMap<String, String> = [
            ("PANCAKE_ACCESS_TOKEN", TOKEN.to_string()),
            ("DATABASE_URL", database_url()),
            ("REDIS_URL", redis_url()),
            ("POSTGRES_SCHEMA", schema.clone()),
            ("REDIS_KEY_PREFIX", prefix.clone()),
            ("POSTGRES_POOL_SIZE", "4".into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        for (k, v) in vars {
            env.insert(k.to_string(), v.to_string());
        }
        // A test may bring its own (unique) prefix; its keys are removed all the same.
        let prefix = env["REDIS_KEY_PREFIX"].clone();
        let config = Config::from_lookup(|k| env.get(k).cloned()).expect("test config");
        let app = match ai {
            Some(ai) => App::with_ai(config, ai, http_client().unwrap()).unwrap(),
            None => App::build(config).unwrap(),
        };
        let env_ = Self { app, schema, prefix, env };
        env_.app.migrate().await.expect("migrations apply");
        env_
    }

    /// Another App over this test's schema and key prefix, with overrides
    /// (a second instance, or one pointed at an unreachable Postgres).
    pub fn app_with(&self, vars: &[(&str, &str)]) -> App {
        let mut env = self.env.clone();
        for (k, v) in vars {
            env.insert(k.to_string(), v.to_string());
        }
        let config = Config::from_lookup(|k| env.get(k).cloned()).expect("test config");
        App::build(config).unwrap()
    }

    pub async fn consumer(&self) -> switchboard::consumer::Consumer {
        switchboard::consumer::Consumer::connect(self.app.clone(), "test-consumer").await.unwrap()
    }

    pub fn keys(&self) -> &KeySpace {
        self.app.store.keys()
    }

    /// The first job shard (the only one on a single node): raw entries go here.
    pub fn shard0(&self) -> ShardKeys {
        self.keys().shard(0)
    }

    /// Appends one raw entry to the (first shard's) jobs stream.
    pub async fn xadd(&self, fields: &[(&str, &str)]) {
        let mut conn = self.redis().await;
        let _: String = conn.xadd(self.shard0().jobs(), "*", fields).await.unwrap();
    }

    pub async fn post_webhook(&self, token: Option<&str>, body: &[u8]) -> (StatusCode, Value) {
        let uri = match token {
            Some(t) => format!("/api/v1/pancake/webhook?token={t}"),
            None => "/api/v1/pancake/webhook".into(),
        };
        let request = Request::builder().method(Method::POST).uri(uri).body(Bytes::copy_from_slice(body)).unwrap();
        let response = switchboard::http::route(&self.app, request).await;
        (response.status(), serde_json::from_slice(response.body()).unwrap_or(Value::Null))
    }

    /// The one row `sql` returns.
    pub async fn row(&self, sql: &str) -> tokio_postgres::Row {
        self.app.db.get().await.unwrap().query_one(sql, &[]).await.unwrap()
    }

    pub async fn count(&self, sql: &str) -> i64 {
        self.app.db.get().await.unwrap().query_one(sql, &[]).await.unwrap().get(0)
    }

    pub async fn post(&self, body: &Value) -> (StatusCode, HeaderMap, Value) {
        self.post_raw(Some(TOKEN), body.to_string().into_bytes()).await
    }

    pub async fn post_raw(&self, token: Option<&str>, body: Vec<u8>) -> (StatusCode, HeaderMap, Value) {
        let mut request = Request::builder().method(Method::POST).uri("/api/v1/enhanced-handle-message");
        if let Some(token) = token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        let response = switchboard::http::route(&self.app, request.body(Bytes::from(body)).unwrap()).await;
        let status = response.status();
        let headers = response.headers().clone();
        let value = serde_json::from_slice(response.body()).unwrap_or(Value::Null);
        (status, headers, value)
    }

    /// A connection to this test's Redis (one node or a cluster).
    pub async fn redis(&self) -> RedisConnection {
        redis_at(self.env.get("REDIS_URL").map(String::as_str).unwrap_or(&redis_url()))
    }

    /// Every entry of every job shard as (type, outcome, payload), in id
    /// (time) order.
    pub async fn stream(&self) -> Vec<(String, Option<String>, Value)> {
        let mut conn = self.redis().await;
        let mut entries = Vec::new();
        for shard in self.keys().shards() {
            let reply: redis::streams::StreamRangeReply = conn.xrange_all(shard.jobs()).await.unwrap();
            entries.extend(reply.ids);
        }
        let order = |id: &str| {
            let (ms, seq) = id.split_once('-').unwrap_or((id, "0"));
            (ms.parse::<u64>().unwrap_or(0), seq.parse::<u64>().unwrap_or(0))
        };
        entries.sort_by_key(|e| order(&e.id));
        entries
            .into_iter()
            .map(|entry| {
                let get = |k: &str| entry.get::<String>(k);
                (get("type").unwrap(), get("outcome"), serde_json::from_str(&get("payload").unwrap()).unwrap())
            })
            .collect()
    }

    /// Every key under this test's prefix with its value dumped, to compare
    /// "before" and "after" a rejected request.
    /// Every key of this test and its value, except the refused-credential
    /// counter: a metric that a refused request is meant to move, not state.
    pub async fn redis_dump(&self) -> Vec<(String, Vec<u8>)> {
        let mut conn = self.redis().await;
        let mut keys = scan_keys(&mut conn, &self.prefix).await;
        keys.retain(|k| *k != self.app.store.keys().auth_failures());
        keys.sort();
        let mut out = Vec::new();
        for key in keys {
            let dump: Vec<u8> = redis::cmd("DUMP").arg(&key).query_async(&mut conn).await.unwrap_or_default();
            out.push((key, dump));
        }
        out
    }

    pub async fn pg_counts(&self) -> Vec<i64> {
        let client = self.app.db.get().await.unwrap();
        let mut counts = Vec::new();
        for table in ["conversations", "messages", "ai_responses", "message_actions", "customers", "assistants"] {
            let row = client.query_one(&format!("SELECT COUNT(*) FROM {table}"), &[]).await.unwrap();
            counts.push(row.get(0));
        }
        counts
    }
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        let schema = self.schema.clone();
        let prefix = self.prefix.clone();
        let url = self.env.get("REDIS_URL").cloned().unwrap_or_else(redis_url);
        // Drop runs outside async context guarantees: clean up on a thread
        // with its own runtime so it works whether or not the test panicked.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async move {
                if let Ok((client, conn)) = tokio_postgres::connect(&database_url(), tokio_postgres::NoTls).await {
                    tokio::spawn(conn);
                    let _ = client.batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE")).await;
                }
                let mut conn = redis_at(&url);
                let keys = scan_keys(&mut conn, &prefix).await;
                for key in keys {
                    let _: Result<(), _> = conn.del(key).await;
                }
            });
        })
        .join();
    }
}

/// Every key under `prefix` (on every primary of a cluster), the prefix
/// matched literally.
pub async fn scan_keys(conn: &mut RedisConnection, prefix: &str) -> Vec<String> {
    conn.scan_keys(&format!("{}*", switchboard::redis::glob_escape(prefix))).await.unwrap_or_default()
}

/// One request a stub server received.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub query: String,
    pub body: Value,
}

type Responder = Arc<dyn Fn(Recorded) -> Pin<Box<dyn Future<Output = (StatusCode, Value)> + Send>> + Send + Sync>;

/// A loopback HTTP server that records every request and answers with `respond`.
pub struct Stub {
    pub addr: SocketAddr,
    pub received: Arc<Mutex<Vec<Recorded>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Stub {
    pub async fn start<F, Fut>(respond: F) -> Self
    where
        F: Fn(Recorded) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = (StatusCode, Value)> + Send + 'static,
    {
        let received = Arc::new(Mutex::new(Vec::new()));
        let responder: Responder = Arc::new(move |r| Box::pin(respond(r)));
        let state = (received.clone(), responder);
        let router = Router::new().fallback(handle).with_state(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            axum::serve(listener, router).await.unwrap();
        });
        Self { addr, received, task }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.received.lock().unwrap().clone()
    }
}

impl Drop for Stub {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn handle(
    State((received, respond)): State<(Arc<Mutex<Vec<Recorded>>>, Responder)>,
    method: Method,
    uri: Uri,
    body: Bytes,
) -> (StatusCode, axum::Json<Value>) {
    let recorded = Recorded {
        method: method.to_string(),
        path: uri.path().to_string(),
        query: uri.query().unwrap_or_default().to_string(),
        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
    };
    received.lock().unwrap().push(recorded.clone());
    let (status, value) = respond(recorded).await;
    (status, axum::Json(value))
}

/// A Pancake stub that accepts every send and returns a message id.
pub async fn pancake_stub() -> Stub {
    let counter = Arc::new(std::sync::atomic::AtomicU64::new(0));
    Stub::start(move |_| {
        let n = counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        async move { (StatusCode::OK, json!({"success": true, "id": format!("pancake_msg_{n}")})) }
    })
    .await
}
