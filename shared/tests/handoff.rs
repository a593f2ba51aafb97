//! Pancake's webhook at scale (issue 13): many conversations are answered
//! in parallel, handed off at once (inline in the gateway, an asynchronous
//! Lambda invocation in AWS), with the `jobs` stream's entry as the safety
//! net — a hand-off that cannot be sent, or whose processor dies
//! mid-answer, is answered once by the consumer, never twice.
#![allow(clippy::unwrap_used)]

mod common;

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use axum::{Router, body::Bytes, extract::State};
use common::{
    Stub, TestEnv,
    pancake::{PancakeStub, Reply},
};
use http::{HeaderMap, StatusCode, Uri};
use lambda_http::LambdaEvent;
use serde_json::{Value, json};
use switchboard::{App, handoff::Handoff, jobs::Redrive};

const SECRET: &str = "hook-secret";
const PAGE: &str = "page_9";

/// An AI that takes `delay` per call and records the most calls in flight at once.
struct SlowAi {
    stub: Stub,
    max_in_flight: Arc<AtomicUsize>,
}

async fn slow_ai(delay: Duration) -> SlowAi {
    let (now, max) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (in_flight, most) = (now.clone(), max.clone());
    let stub = Stub::start(move |_| {
        let (in_flight, most) = (in_flight.clone(), most.clone());
        async move {
            let current = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
            most.fetch_max(current, Ordering::SeqCst);
            tokio::time::sleep(delay).await;
            in_flight.fetch_sub(1, Ordering::SeqCst);
            (StatusCode::OK, json!({"response_text": "Dạ shop còn hàng ạ", "intent": "stock", "confidence": 0.9}))
        }
    })
    .await;
    SlowAi { stub, max_in_flight: max }
}

fn event(conversation: &str, id: &str) -> Value {
    json!({
        "event_type": "messaging",
        "page_id": PAGE,
        "data": {
            "conversation": {"id": conversation, "from": {"id": "customer_7"}},
            "message": {"id": id, "conversation_id": conversation, "message": format!("{conversation}: còn áo size M không?"),
                        "type": "INBOX", "from": {"id": "customer_7"}, "page_id": PAGE}
        }
    })
}

async fn webhook(app: &App, event: &Value) -> (StatusCode, Value) {
    common::webhook_to(app, SECRET, event).await
}

async fn env_with(ai: &SlowAi, pancake: &PancakeStub, extra: &[(&str, &str)]) -> TestEnv {
    let mut vars = vec![
        ("AI_SERVICE_URL", ai.stub.url()),
        ("PANCAKE_WEBHOOK_SECRET", SECRET.into()),
        ("PANCAKE_BASE_URL", pancake.url()),
        ("PANCAKE_PAGE_ACCESS_TOKEN", "pt".into()),
        ("CONSUMER_BLOCK_MS", "20".into()),
        ("CONSUMER_CLAIM_IDLE_MS", "100".into()),
    ];
    vars.extend(extra.iter().map(|(k, v)| (*k, v.to_string())));
    let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
    TestEnv::with(&vars, None).await
}

/// Replies the customer of each conversation got.
fn replies(pancake: &PancakeStub) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for landed in pancake.landed.lock().unwrap().iter() {
        *counts.entry(landed.conversation_id.clone()).or_default() += 1;
    }
    counts
}

/// Waits (bounded) until `n` replies have landed.
async fn until_replies(pancake: &PancakeStub, n: usize) {
    for _ in 0..600 {
        if pancake.delivered().len() >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Lets every safety-net entry come due, then drains: each finds nothing owed.
async fn run_the_safety_net(env: &TestEnv) {
    let consumer = env.consumer().await;
    common::drain(&consumer).await;
    tokio::time::sleep(Duration::from_millis(250)).await;
    common::drain(&consumer).await;
    let pending: redis::streams::StreamPendingReply =
        redis::AsyncCommands::xpending(&mut env.redis().await, env.shard0().jobs(), "persist").await.unwrap();
    assert_eq!(pending.count(), 0, "every entry, the safety nets included, is acknowledged");
}

fn conversations(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("fan_{i}")).collect()
}

#[tokio::test]
async fn many_webhook_conversations_at_once_are_answered_in_parallel_through_the_inline_hand_off() {
    let ai = slow_ai(Duration::from_millis(800)).await;
    let pancake = PancakeStub::start(|_| Reply::Accept).await;
    let env = env_with(&ai, &pancake, &[]).await;
    let (handoff, jobs) = Handoff::inline();
    let mut app = env.app.clone();
    app.handoff = handoff;
    tokio::spawn(switchboard::pipeline::handoff::serve_inline(app.clone(), jobs));

    let ids = conversations(20);
    let sent = futures::future::join_all(ids.iter().map(|c| {
        let app = app.clone();
        async move { webhook(&app, &event(c, &format!("{c}_m1"))).await }
    }))
    .await;
    assert!(sent.iter().all(|(status, body)| *status == StatusCode::OK && body["status"] == "queued"), "{sent:?}");
    until_replies(&pancake, ids.len()).await;

    let most = ai.max_in_flight.load(Ordering::SeqCst);
    assert!(most > ids.len() / 2, "the AI calls overlapped: {most} at most in flight");
    run_the_safety_net(&env).await;
    let counts = replies(&pancake);
    assert!(ids.iter().all(|c| counts.get(c) == Some(&1)), "one reply per conversation: {counts:?}");
    assert_eq!(env.count("SELECT COUNT(*) FROM ai_responses").await, ids.len() as i64);
}

#[tokio::test]
async fn without_a_hand_off_the_consumer_answers_many_conversations_in_parallel() {
    let ai = slow_ai(Duration::from_millis(800)).await;
    let pancake = PancakeStub::start(|_| Reply::Accept).await;
    let env = env_with(&ai, &pancake, &[]).await;
    assert!(!env.app.handoff.is_on());
    let ids = conversations(20);
    for c in &ids {
        let (status, body) = webhook(&env.app, &event(c, &format!("{c}_m1"))).await;
        assert_eq!((status, body["status"].as_str()), (StatusCode::OK, Some("queued")));
    }
    let consumer = env.consumer().await;
    common::drain(&consumer).await;

    let most = ai.max_in_flight.load(Ordering::SeqCst);
    assert!(most > ids.len() / 2, "the consumer ran the answers side by side: {most} at most in flight");
    let counts = replies(&pancake);
    assert!(ids.iter().all(|c| counts.get(c) == Some(&1)), "one reply per conversation: {counts:?}");
}

/// A stand-in for Lambda's Invoke API that records each invocation (its
/// path, invocation type and payload) and accepts it as AWS does (`202`).
struct LambdaApi {
    addr: std::net::SocketAddr,
    invocations: Arc<Mutex<Vec<(String, String, Value)>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for LambdaApi {
    fn drop(&mut self) {
        self.task.abort();
    }
}

type Invocations = Arc<Mutex<Vec<(String, String, Value)>>>;

async fn record_invocation(
    State(invocations): State<Invocations>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let kind = headers.get("x-amz-invocation-type").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    invocations.lock().unwrap().push((uri.path().to_owned(), kind, serde_json::from_slice(&body).unwrap_or_default()));
    StatusCode::ACCEPTED
}

async fn lambda_api() -> LambdaApi {
    let invocations: Invocations = Arc::default();
    let router = Router::new().fallback(record_invocation).with_state(invocations.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    LambdaApi { addr, invocations, task }
}

/// A Lambda client for `endpoint`, as the function's role would give one.
fn lambda_client(endpoint: &str) -> aws_sdk_lambda::Client {
    let config = aws_sdk_lambda::Config::builder()
        .behavior_version(aws_sdk_lambda::config::BehaviorVersion::latest())
        .region(aws_sdk_lambda::config::Region::new("ap-southeast-1"))
        .credentials_provider(aws_sdk_lambda::config::Credentials::for_tests())
        .endpoint_url(endpoint)
        .http_client(switchboard::config::secrets::http_client())
        .build();
    aws_sdk_lambda::Client::from_conf(config)
}

#[tokio::test]
async fn a_lambda_hand_off_is_an_asynchronous_invocation_and_its_retry_answers_nothing_twice() {
    let ai = slow_ai(Duration::from_millis(10)).await;
    let pancake = PancakeStub::start(|_| Reply::Accept).await;
    let env = env_with(&ai, &pancake, &[]).await;
    let api = lambda_api().await;
    let mut app = env.app.clone();
    app.handoff = Handoff::lambda("process-conversation", lambda_client(&format!("http://{}", api.addr)));

    let (status, body) = webhook(&app, &event("lam_1", "lam_1_m1")).await;
    assert_eq!((status, body["status"].as_str()), (StatusCode::OK, Some("queued")));
    let invocations = api.invocations.lock().unwrap().clone();
    assert_eq!(invocations.len(), 1);
    let (path, kind, payload) = &invocations[0];
    assert_eq!(path, "/2015-03-31/functions/process-conversation/invocations");
    assert_eq!(kind, "Event", "asynchronous: the webhook never waits for the answer");
    assert_eq!((payload["conversation_id"].as_str(), payload["handed_off"].as_bool()), (Some("lam_1"), Some(true)));

    // What the `process-conversation` function does with it, then Lambda's retry of it.
    let job: Redrive = serde_json::from_value(payload.clone()).unwrap();
    let first =
        switchboard::lambda::process(&app, LambdaEvent::new(serde_json::to_value(&job).unwrap(), Default::default()))
            .await
            .unwrap();
    assert_eq!(first["result"], "answered");
    let retry =
        switchboard::lambda::process(&app, LambdaEvent::new(serde_json::to_value(&job).unwrap(), Default::default()))
            .await
            .unwrap();
    assert_eq!(retry["result"], "nothing_to_do");
    run_the_safety_net(&env).await;
    assert_eq!(replies(&pancake).get("lam_1"), Some(&1), "answered once");
}

#[tokio::test]
async fn a_hand_off_that_cannot_be_sent_is_answered_once_by_the_consumer_at_once() {
    let ai = slow_ai(Duration::from_millis(10)).await;
    let pancake = PancakeStub::start(|_| Reply::Accept).await;
    let env = env_with(&ai, &pancake, &[("CONSUMER_CLAIM_IDLE_MS", "600000")]).await;
    let mut app = env.app.clone();
    app.handoff = Handoff::lambda("process-conversation", lambda_client("http://127.0.0.1:1"));

    let (status, body) = webhook(&app, &event("lost_1", "lost_1_m1")).await;
    assert_eq!((status, body["status"].as_str()), (StatusCode::OK, Some("queued")), "acknowledged all the same");
    // No claim-idle wait (it is ten minutes here): the fallback entry runs at once.
    common::drain(&env.consumer().await).await;
    assert_eq!(replies(&pancake).get("lost_1"), Some(&1));
}

#[tokio::test]
async fn a_hand_off_whose_processor_dies_mid_answer_is_answered_once_by_the_safety_net() {
    let ai = slow_ai(Duration::from_millis(10)).await;
    let pancake = PancakeStub::start(|_| Reply::Accept).await;
    // The safety net is the flagged entry (after the claim idle time) or,
    // when that came while the dead holder's lock still stood, the sweep
    // (after the lock's TTL): either answers, and only once.
    let env = env_with(&ai, &pancake, &[("LOCK_TTL_MS", "1000"), ("CONSUMER_SWEEP_MS", "100")]).await;
    let api = lambda_api().await;
    let mut app = env.app.clone();
    app.handoff = Handoff::lambda("process-conversation", lambda_client(&format!("http://{}", api.addr)));
    let (status, _) = webhook(&app, &event("dies_1", "dies_1_m1")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(api.invocations.lock().unwrap().len(), 1);

    // The invoked function takes the conversation's lock and is killed.
    let claim = env.app.store.claim(&common::cid("dies_1")).await.unwrap();
    assert!(matches!(claim, switchboard::redis::Claim::Acquired { .. }));
    drop(claim);
    let consumer = env.consumer().await;
    consumer.step().await.unwrap();
    assert!(pancake.delivered().is_empty(), "the safety net waits for the hand-off first");

    // Past the lock's TTL and the claim idle time: the safety net answers it.
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    common::drain(&consumer).await;
    tokio::time::sleep(Duration::from_millis(250)).await;
    common::drain(&consumer).await;
    assert_eq!(replies(&pancake).get("dies_1"), Some(&1), "answered once");
}

#[tokio::test]
async fn a_hand_off_event_that_can_never_succeed_is_ignored_rather_than_failed_for_retries() {
    let ai = slow_ai(Duration::from_millis(10)).await;
    let pancake = PancakeStub::start(|_| Reply::Accept).await;
    let env = env_with(&ai, &pancake, &[]).await;
    for payload in [json!({"nothing": "here"}), json!({"conversation_id": "", "reason": "webhook"}), json!(42)] {
        let done = switchboard::lambda::process(&env.app, LambdaEvent::new(payload.clone(), Default::default()))
            .await
            .unwrap_or_else(|e| panic!("{payload}: failed for Lambda to retry: {e}"));
        assert_eq!(done["result"], "invalid", "{payload}");
    }
    assert!(ai.stub.requests().is_empty() && pancake.delivered().is_empty(), "nothing answered");
}
