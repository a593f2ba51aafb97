//! What operators see: the one log line per request (through the same
//! `http::serve` the Lambda adapter and the local gateway call), EMF
//! documents that CloudWatch can parse for a handled message and a dead
//! letter, and health's count of AI calls in flight.
#![allow(clippy::unwrap_used)]

mod common;

use std::{
    io::Write,
    sync::{Arc, Mutex},
};

use bytes::Bytes;
use common::{Stub, TOKEN, TestEnv, message};
use http::{Method, Request, StatusCode};
use serde_json::{Value, json};
use switchboard::{
    App, metrics,
    telemetry::{self, LogFormat, LogSettings},
};

const WEBHOOK_SECRET: &str = "obs-webhook-secret-4711";
const ADMIN_TOKEN: &str = "obs-admin-token-0815";

/// Log output kept in memory.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

fn request(method: Method, uri: &str, bearer: Option<&str>, body: Vec<u8>) -> Request<Bytes> {
    let mut builder = Request::builder().method(method).uri(uri);
    if let Some(token) = bearer {
        builder = builder.header("authorization", format!("Bearer {token}"));
    }
    builder.body(Bytes::from(body)).unwrap()
}

fn webhook_example() -> Value {
    let path = format!("{}/tests/fixtures/pancake/webhook-messaging-example.json", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// The request lines of one request id.
fn request_lines(output: &str, request_id: &str) -> Vec<Value> {
    output
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|line| line["message"] == "request" && line["request_id"] == request_id)
        .collect()
}

#[tokio::test]
async fn each_request_logs_one_line_with_route_status_latency_conversation_and_request_id_and_no_secret() {
    let env =
        TestEnv::with(&[("PANCAKE_WEBHOOK_SECRET", WEBHOOK_SECRET), ("ADMIN_ACCESS_TOKEN", ADMIN_TOKEN)], None).await;
    let captured = Captured::default();
    let writer = captured.clone();
    // Debug level: even the most verbose lines must not carry a secret.
    let settings = LogSettings { format: LogFormat::Json, directives: "debug".into() };
    let _guard = tracing::subscriber::set_default(telemetry::subscriber(&settings, move || writer.clone()));

    let body = message("conv_obs", "m1", "Xin chào", 1_700_000_000.0).to_string().into_bytes();
    let handled = switchboard::http::serve(
        &env.app,
        request(Method::POST, "/api/v1/enhanced-handle-message", Some(TOKEN), body),
        "req-message",
    )
    .await;
    assert_eq!(handled.status(), StatusCode::OK);
    let event = webhook_example();
    let conversation = event["data"]["conversation"]["id"].as_str().unwrap().to_owned();
    let hook = format!("/api/v1/pancake/webhook?token={WEBHOOK_SECRET}");
    let hooked = switchboard::http::serve(
        &env.app,
        request(Method::POST, &hook, None, event.to_string().into_bytes()),
        "req-webhook",
    )
    .await;
    assert_eq!(hooked.status(), StatusCode::OK);
    let health = request(Method::GET, "/api/v1/admin/health", Some(ADMIN_TOKEN), Vec::new());
    switchboard::http::serve(&env.app, health, "req-health").await;
    let refused = request(Method::GET, "/api/v1/admin/stats", Some("not-the-admin-token"), Vec::new());
    assert_eq!(switchboard::http::serve(&env.app, refused, "req-refused").await.status(), StatusCode::UNAUTHORIZED);

    let output = captured.text();
    for (request_id, route, status, conversation) in [
        ("req-message", "/api/v1/enhanced-handle-message", 200, Some("conv_obs")),
        ("req-webhook", "/api/v1/pancake/webhook", 200, Some(conversation.as_str())),
        ("req-health", "/api/v1/admin/health", 200, None),
        ("req-refused", "/api/v1/admin/stats", 401, None),
    ] {
        let lines = request_lines(&output, request_id);
        assert_eq!(lines.len(), 1, "one line for {request_id}:\n{output}");
        let line = &lines[0];
        assert_eq!(line["route"], route, "{line}");
        assert_eq!(line["status"], status, "{line}");
        assert!(line["latency_ms"].as_f64().is_some_and(|ms| ms >= 0.0), "{line}");
        assert_eq!(line["conversation_id"].as_str(), conversation, "{line}");
        assert!(line["timestamp"].is_string(), "timestamped: {line}");
    }
    // The message line also says how the caches did (seed 004's logs).
    let message_line = &request_lines(&output, "req-message")[0];
    assert!(message_line["cache_hits"].is_u64() && message_line["cache_misses"].as_u64() >= Some(1));
    assert!(output.contains("\"cache miss\""), "each read at debug:\n{output}");
    for secret in [TOKEN, WEBHOOK_SECRET, ADMIN_TOKEN] {
        assert!(!output.contains(secret), "a configured secret reached the logs:\n{output}");
    }
}

/// Checks the structure CloudWatch requires of an EMF document: a
/// `_aws` object with a millisecond `Timestamp` and `CloudWatchMetrics`
/// directives (namespace, dimension sets naming top-level string members,
/// metrics naming top-level numbers or arrays of numbers).
fn assert_valid_emf(document: &Value) {
    let aws = &document["_aws"];
    assert!(aws["Timestamp"].is_u64(), "{document}");
    let directives = aws["CloudWatchMetrics"].as_array().unwrap();
    assert!(!directives.is_empty(), "{document}");
    for directive in directives {
        assert_eq!(directive["Namespace"], metrics::NAMESPACE);
        for set in directive["Dimensions"].as_array().unwrap() {
            let set = set.as_array().unwrap();
            assert!(!set.is_empty() && set.len() <= 30);
            for dimension in set {
                assert!(document[dimension.as_str().unwrap()].is_string(), "dimension {dimension}: {document}");
            }
        }
        for metric in directive["Metrics"].as_array().unwrap() {
            let name = metric["Name"].as_str().unwrap();
            assert!(["Count", "Milliseconds"].contains(&metric["Unit"].as_str().unwrap()));
            let value = &document[name];
            let numeric = value.is_number()
                || value.as_array().is_some_and(|values| {
                    !values.is_empty() && values.len() <= 100 && values.iter().all(Value::is_number)
                });
            assert!(numeric, "metric {name} has no value: {document}");
        }
    }
}

fn documents(captured: &metrics::Captured, field: &str, value: &str) -> Vec<Value> {
    let documents: Vec<Value> = captured
        .lines()
        .iter()
        .map(|line| serde_json::from_str::<Value>(line).expect("an EMF line is one JSON object"))
        .filter(|document| document[field] == value)
        .collect();
    documents.iter().for_each(assert_valid_emf);
    documents
}

#[tokio::test]
async fn a_handled_message_prints_valid_emf_with_its_status_ai_latency_and_cache_counts() {
    let captured = metrics::capture().expect("metrics captured in memory");
    let env = TestEnv::new().await;
    let body = message("conv_emf", "m1", "Xin chào", 1_700_000_000.0).to_string().into_bytes();
    let request = request(Method::POST, "/api/v1/enhanced-handle-message", Some(TOKEN), body);
    assert_eq!(switchboard::http::serve(&env.app, request, "req-emf").await.status(), StatusCode::OK);

    let documents = documents(&captured, "request_id", "req-emf");
    let handled = documents.iter().find(|d| d["MessagesHandled"] == 1).expect("MessagesHandled");
    assert_eq!(handled["Status"], "completed");
    assert_eq!(handled["Function"], metrics::LOCAL_FUNCTION);
    assert_eq!(handled["conversation_id"], "conv_emf");
    assert_eq!(handled["AiLatency"].as_array().map(Vec::len), Some(1), "one AI call: {handled}");
    let kinds: Vec<&str> = documents.iter().filter_map(|d| d["Kind"].as_str()).collect();
    assert!(kinds.contains(&"assistant"), "cache kinds read: {kinds:?}");
    for document in documents.iter().filter(|d| d["Kind"].is_string()) {
        assert!(document["CacheHits"].as_u64().unwrap() + document["CacheMisses"].as_u64().unwrap() >= 1);
    }
}

#[tokio::test]
async fn a_dead_letter_prints_valid_emf_with_dead_letters_and_queue_lag() {
    let captured = metrics::capture().expect("metrics captured in memory");
    let env = TestEnv::new().await;
    // A job type nobody knows: dead-lettered at once.
    env.xadd(&[("type", "launch_rocket"), ("payload", r#"{"conversation_id": "conv_dead"}"#)]).await;
    let consumer = env.consumer().await;
    let summary = switchboard::lambda::observed("inv-dead", common::drain(&consumer)).await;
    assert_eq!(summary.dead_lettered, 1);

    let documents = documents(&captured, "request_id", "inv-dead");
    let invocation = documents.iter().find(|d| d["DeadLetters"].is_u64()).expect("DeadLetters");
    assert_eq!(invocation["DeadLetters"], 1);
    let lags = invocation["QueueLag"].as_array().expect("QueueLag of the batch");
    assert!(lags.iter().all(|lag| lag.as_f64().is_some_and(|ms| ms >= 0.0)));
}

/// An AI service that holds every answer until released.
async fn slow_ai(gate: Arc<tokio::sync::Semaphore>) -> Stub {
    Stub::start(move |recorded| {
        let gate = gate.clone();
        async move {
            if recorded.method == "POST" {
                let _ = gate.acquire().await.unwrap();
            }
            (StatusCode::OK, json!({"response_text": "Dạ, em chào anh/chị", "intent": "greeting", "confidence": 0.9}))
        }
    })
    .await
}

async fn active_ai_tasks(app: &App) -> u64 {
    let health = request(Method::GET, "/api/v1/admin/health", Some(ADMIN_TOKEN), Vec::new());
    let response = switchboard::http::route(app, health).await;
    let body: Value = serde_json::from_slice(response.body()).unwrap();
    body["statistics"]["active_ai_tasks"].as_u64().unwrap()
}

#[tokio::test]
async fn health_counts_the_ai_call_in_flight_while_the_ai_answers_and_none_after() {
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let ai = slow_ai(gate.clone()).await;
    let env = TestEnv::with(&[("AI_SERVICE_URL", &ai.url()), ("ADMIN_ACCESS_TOKEN", ADMIN_TOKEN)], None).await;
    assert_eq!(active_ai_tasks(&env.app).await, 0);

    let app = env.app.clone();
    let body = message("conv_slow", "m1", "Xin chào", 1_700_000_000.0).to_string().into_bytes();
    let asking = tokio::spawn(async move {
        switchboard::http::route(&app, request(Method::POST, "/api/v1/enhanced-handle-message", Some(TOKEN), body))
            .await
    });
    // Until the AI has the question (bounded: the stub records it first).
    let mut seen = 0;
    for _ in 0..1000 {
        if ai.requests().iter().any(|r| r.method == "POST") {
            seen = active_ai_tasks(&env.app).await;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert!(seen >= 1, "the call the AI is answering counts");

    gate.add_permits(1);
    let answered = asking.await.unwrap();
    assert_eq!(answered.status(), StatusCode::OK);
    assert_eq!(active_ai_tasks(&env.app).await, 0, "an answered call no longer counts");
}
