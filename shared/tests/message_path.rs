//! The message path end to end, against the real Redis and Postgres.
#![allow(clippy::unwrap_used)]

mod common;

use std::{
    collections::{HashMap, HashSet},
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use common::{TestEnv, message, pancake_stub, seed_request};
use futures::{FutureExt, future::BoxFuture};
use http::StatusCode;
use serde_json::{Value, json};
use switchboard::{
    ai::{AiAnswer, AiError, AiProvider, AiRequest, embedded},
    domain::{ContextEntry, ConversationId, IncomingMessage},
    redis::{Admission, AnswerRecord, Completion},
};

/// The embedded AI, slowed down and instrumented: it records how many calls
/// run at once per conversation and which messages each call saw.
#[derive(Debug, Default)]
struct Instrumented {
    delay: Duration,
    in_flight: Mutex<HashMap<String, usize>>,
    max_overlap: AtomicUsize,
    calls: AtomicUsize,
    seen: Mutex<Vec<Vec<String>>>,
}

impl AiProvider for Instrumented {
    fn answer<'a>(&'a self, request: AiRequest<'a>) -> BoxFuture<'a, Result<AiAnswer, AiError>> {
        async move {
            let now = {
                let mut map = self.in_flight.lock().unwrap();
                let n = map.entry(request.conversation_id.to_owned()).or_default();
                *n += 1;
                *n
            };
            self.max_overlap.fetch_max(now, Ordering::SeqCst);
            self.calls.fetch_add(1, Ordering::SeqCst);
            self.seen.lock().unwrap().push(request.pending.iter().map(|m| m.message_id.clone()).collect());
            tokio::time::sleep(self.delay).await;
            *self.in_flight.lock().unwrap().get_mut(request.conversation_id).unwrap() -= 1;
            Ok(embedded::respond(&request.pending_text()))
        }
        .boxed()
    }
}

#[tokio::test]
async fn the_seed_example_returns_completed_with_every_field_of_the_seed_response() {
    let pancake = pancake_stub().await;
    let env =
        TestEnv::with(&[("PANCAKE_BASE_URL", &pancake.url()), ("PANCAKE_PAGE_ACCESS_TOKEN", "page-secret")], None)
            .await;
    let (status, _, body) = env.post(&seed_request()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["success"], true);
    assert!(body["timestamp"].as_f64().unwrap() > 0.0);
    assert!(body["processing_time_ms"].as_f64().is_some());
    let result = &body["result"];
    assert_eq!(result["status"], "completed");
    assert_eq!(result["message_id"], "msg_67890");
    assert_eq!(result["storage_backend"], "Redis");
    assert_eq!(result["distributed_lock_used"], true);
    let ai = &result["ai_response"];
    assert_eq!(ai["response_text"], "Tôi sẽ giúp bạn đặt lịch khám bệnh.");
    assert_eq!(ai["intent"], "book_appointment");
    assert_eq!(ai["confidence"], 0.95);
    assert_eq!(ai["entities"], json!({"service_type": "medical_checkup"}));
    assert!(ai["processing_time_ms"].as_f64().is_some());
    assert_eq!(ai["model_used"], "embedded-rules-v1");
    assert_eq!(
        result["extracted_actions"],
        json!([{"type": "send_message", "data": {"message": "Tôi sẽ giúp bạn đặt lịch khám bệnh."}}])
    );
    assert_eq!(result["pancake_result"]["status"], "success");
    assert_eq!(result["pancake_result"]["actions_executed"], 1);

    // Pancake received the real send-message call.
    let sent = pancake.requests();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].method, "POST");
    assert_eq!(sent[0].path, "/pages/page_1/conversations/conv_12345/messages");
    assert_eq!(sent[0].query, "page_access_token=page-secret");
    assert_eq!(sent[0].body, json!({"action": "reply_inbox", "message": "Tôi sẽ giúp bạn đặt lịch khám bệnh."}));

    // The message, the answer and the delivery result wait in the stream.
    let kinds: Vec<String> = env.stream().await.into_iter().map(|(kind, _, _)| kind).collect();
    assert_eq!(kinds, ["persist_message", "persist_answer", "action_results"]);
}

#[tokio::test]
async fn twenty_concurrent_requests_for_one_conversation_never_overlap_and_all_are_covered() {
    let ai = Arc::new(Instrumented { delay: Duration::from_millis(40), ..Default::default() });
    // A budget above the burst size: every restart covers at least one more
    // message, so no message can be left owed when the burst ends.
    let env = Arc::new(TestEnv::with(&[("MAX_RESTARTS", "25")], Some(ai.clone())).await);
    let requests = (0..20).map(|i| {
        let env = env.clone();
        tokio::spawn(async move {
            env.post(&message("burst", &format!("m{i}"), &format!("tin nhắn {i}"), 1000.0 + i as f64)).await
        })
    });
    let mut covered = HashSet::new();
    let mut statuses = Vec::new();
    for r in futures::future::join_all(requests).await {
        let (status, _, body) = r.unwrap();
        assert_eq!(status, StatusCode::OK, "{body}");
        let result = &body["result"];
        statuses.push(result["status"].as_str().unwrap().to_owned());
        let answered = if result["status"] == "restart_needed" { &result["current_result"] } else { result };
        for id in answered["covered_message_ids"].as_array().into_iter().flatten() {
            assert!(covered.insert(id.as_str().unwrap().to_owned()), "{id} answered twice");
        }
    }
    assert_eq!(ai.max_overlap.load(Ordering::SeqCst), 1, "two AI calls for one conversation overlapped");
    let all: HashSet<String> = (0..20).map(|i| format!("m{i}")).collect();
    assert_eq!(covered, all, "statuses: {statuses:?}");
    eprintln!("statuses: {statuses:?}, AI calls: {}", ai.calls.load(Ordering::SeqCst));
    let stream = env.stream().await;
    let persisted: HashSet<String> = stream
        .iter()
        .filter(|(kind, _, _)| kind == "persist_message")
        .map(|(_, _, p)| p["message_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(persisted, all);
    assert_eq!(stream.iter().filter(|(kind, _, _)| kind == "persist_message").count(), 20);
}

#[tokio::test]
async fn a_repeated_message_id_returns_duplicate_and_enqueues_nothing_new() {
    let env = TestEnv::new().await;
    let (_, _, first) = env.post(&seed_request()).await;
    assert_eq!(first["result"]["status"], "completed");
    let before = env.stream().await.len();
    let (status, _, second) = env.post(&seed_request()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(second["result"]["status"], "duplicate");
    assert_eq!(env.stream().await.len(), before);
}

#[tokio::test]
async fn a_processor_paused_past_the_lock_ttl_cannot_complete_and_the_newer_fence_wins() {
    let env = TestEnv::with(&[("LOCK_TTL_MS", "200")], None).await;
    let store = &env.app.store;
    let conversation = ConversationId::parse("paused").unwrap();
    // Processor A takes the lock, then "pauses" (no heartbeats) past the TTL.
    let first = IncomingMessage::parse(message("paused", "a1", "xin chào", 1.0).to_string().as_bytes(), 65536).unwrap();
    let Admission::Acquired { lease: stale, snapshot } =
        store.admit(&first, "{}", switchboard::redis::AdmitMode::Sync).await.unwrap()
    else {
        panic!("first message should take the lock");
    };
    tokio::time::sleep(Duration::from_millis(350)).await;
    // Processor B (a full request) takes over with a newer fencing number.
    let (_, _, body) = env.post(&message("paused", "a2", "giá bao nhiêu", 2.0)).await;
    assert_eq!(body["result"]["status"], "completed", "{body}");
    let newer_fence = body["result"]["fence"].as_i64().unwrap();
    assert!(newer_fence > stale.fence);
    assert_eq!(body["result"]["covered_message_ids"], json!(["a1", "a2"]));
    // A wakes up: its result is discarded.
    let entry = ContextEntry {
        message_id: "bot:stale".into(),
        sender_type: "bot".into(),
        content: "stale".into(),
        timestamp: 3.0,
    };
    let record = AnswerRecord {
        context_entry: &entry,
        job: "{\"stale\":true}",
        redrive_job: "{}",
        pause_bot: false,
        echo_texts: &[],
        send_marks: &[],
    };
    let completion = store.complete(&conversation, &stale, snapshot.covered_seq(), true, &record).await.unwrap();
    assert_eq!(completion, Completion::Lost);
    let answers: Vec<Value> =
        env.stream().await.into_iter().filter(|(kind, _, _)| kind == "persist_answer").map(|(_, _, p)| p).collect();
    assert_eq!(answers.len(), 1, "only the newer holder's answer is enqueued");
    assert_eq!(answers[0]["fence"], newer_fence);
}

#[tokio::test]
async fn each_bad_input_gets_its_status_and_changes_nothing() {
    let env = TestEnv::new().await;
    // Some state exists already, so "unchanged" is a real comparison.
    env.post(&message("bad", "ok1", "xin chào", 1.0)).await;
    let redis_before = env.redis_dump().await;
    let stream_before = env.stream().await.len();
    let pg_before = env.pg_counts().await;

    let with = |key: &str, value: Value| {
        let mut body = message("bad", "new", "hi", 2.0);
        body[key] = value;
        body.to_string().into_bytes()
    };
    let without = |key: &str| {
        let mut body = message("bad", "new", "hi", 2.0);
        body.as_object_mut().unwrap().remove(key);
        body.to_string().into_bytes()
    };
    // (name, bearer token, body, expected status, field named in the error)
    type Case<'a> = (&'a str, Option<&'a str>, Vec<u8>, StatusCode, Option<&'a str>);
    let cases: Vec<Case> = vec![
        ("missing conversation_id", Some(common::TOKEN), without("conversation_id"), StatusCode::BAD_REQUEST, Some("conversation_id")),
        ("empty message_id", Some(common::TOKEN), with("message_id", json!("")), StatusCode::BAD_REQUEST, Some("message_id")),
        ("missing message_id", Some(common::TOKEN), without("message_id"), StatusCode::BAD_REQUEST, Some("message_id")),
        ("long id", Some(common::TOKEN), with("conversation_id", json!("c".repeat(257))), StatusCode::BAD_REQUEST, Some("conversation_id")),
        ("control character", Some(common::TOKEN), with("message_id", json!("m\u{7}1")), StatusCode::BAD_REQUEST, Some("message_id")),
        ("string timestamp", Some(common::TOKEN), with("timestamp", json!("now")), StatusCode::BAD_REQUEST, Some("timestamp")),
        ("overflowing timestamp", Some(common::TOKEN), br#"{"conversation_id":"bad","message_id":"n","message_content":"x","sender_id":"u","sender_type":"user","timestamp":1e999}"#.to_vec(), StatusCode::BAD_REQUEST, Some("body")),
        ("unknown sender_type", Some(common::TOKEN), with("sender_type", json!("martian")), StatusCode::BAD_REQUEST, Some("sender_type")),
        ("malformed JSON", Some(common::TOKEN), b"{\"conversation_id\": ".to_vec(), StatusCode::BAD_REQUEST, Some("body")),
        ("NUL in the content", Some(common::TOKEN), with("message_content", json!("a\u{0}b")), StatusCode::BAD_REQUEST, Some("message_content")),
        ("NUL in the metadata", Some(common::TOKEN), with("metadata", json!({"note": "x\u{0}"})), StatusCode::BAD_REQUEST, Some("metadata")),
        ("content over 64 KiB", Some(common::TOKEN), with("message_content", json!("x".repeat(64 * 1024 + 1))), StatusCode::PAYLOAD_TOO_LARGE, Some("message_content")),
        ("missing token", None, message("bad", "new", "hi", 2.0).to_string().into_bytes(), StatusCode::UNAUTHORIZED, None),
        ("wrong token", Some("test-pancake-tokem"), message("bad", "new", "hi", 2.0).to_string().into_bytes(), StatusCode::UNAUTHORIZED, None),
    ];
    for (name, token, body, expected, field) in cases {
        let (status, _, response) = env.post_raw(token, body).await;
        assert_eq!(status, expected, "{name}: {response}");
        assert_eq!(response["success"], false, "{name}");
        if let Some(field) = field {
            assert_eq!(response["error"]["field"], field, "{name}: {response}");
        }
    }
    assert_eq!(env.redis_dump().await, redis_before, "Redis changed");
    assert_eq!(env.stream().await.len(), stream_before, "the stream changed");
    assert_eq!(env.pg_counts().await, pg_before, "Postgres changed");
}
