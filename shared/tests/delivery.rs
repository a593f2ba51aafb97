//! Delivery when it goes wrong (issue 11): a holder that dies after
//! `complete`, a send whose outcome is unknown, an unsafe integration call
//! that may have run, echoes of retried sends, and script calls a client
//! re-sends. Real Redis and Postgres; Pancake and the integrations are stub
//! servers (Pancake's lists what landed, so a look-up sees what the customer
//! saw).

#![allow(clippy::unwrap_used)]

mod common;

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use common::{
    Stub, TestEnv, cid, drain,
    pancake::{PancakeStub, Reply},
};
use http::StatusCode;
use redis::AsyncCommands;
use serde_json::{Value, json};
use switchboard::{
    domain::IncomingMessage,
    jobs::PersistMessage,
    redis::{Admission, AdmitMode, Claim},
};
use tokio::sync::Notify;

async fn with_pancake(pancake: &PancakeStub, vars: &[(&str, &str)]) -> TestEnv {
    let url = pancake.url();
    let mut all = vec![
        ("PANCAKE_BASE_URL", url.as_str()),
        ("PANCAKE_PAGE_ACCESS_TOKEN", "page-token"),
        ("CONSUMER_BLOCK_MS", "20"),
        ("CONSUMER_CLAIM_IDLE_MS", "50"),
        ("UNDELIVERED_AFTER_SECONDS", "0"),
        ("UNKNOWN_OUTCOME_GRACE_MS", "0"),
    ];
    all.extend_from_slice(vars);
    TestEnv::with(&all, None).await
}

fn message(conversation: &str, id: &str) -> Value {
    common::message(conversation, id, "xin chào, shop còn hàng không?", 1.0)
}

/// The statuses of the answer's actions of `kind`.
async fn statuses(env: &TestEnv, kind: &str) -> Vec<String> {
    let client = env.app.db.get().await.unwrap();
    client
        .query("SELECT status FROM message_actions WHERE action_type = $1 ORDER BY created_at", &[&kind])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// Posts `body` in a task, waits until `started` says the holder is inside
/// its outside call, then kills the holder there (a Lambda timeout, a
/// process killed mid-send).
async fn kill_holder_mid_call(env: &TestEnv, body: Value, started: impl Fn() -> bool) {
    let app = env.app.clone();
    let holder = tokio::spawn(async move {
        let request = http::Request::builder()
            .method(http::Method::POST)
            .uri("/api/v1/enhanced-handle-message")
            .header("authorization", format!("Bearer {}", common::TOKEN))
            .header("content-type", "application/json")
            .body(bytes::Bytes::from(body.to_string()))
            .unwrap();
        switchboard::http::route(&app, request).await
    });
    for _ in 0..200 {
        if started() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(started(), "the holder reached its outside call");
    holder.abort();
    let _ = holder.await;
}

/// The dead holder's ownership of its send marks ends (the delivery window,
/// 50 s with the defaults), and so does an unknown outcome's grace — both
/// moved into the past instead of waited for.
async fn end_mark_windows(env: &TestEnv) {
    let mut conn = env.redis().await;
    for key in common::scan_keys(&mut conn, &env.prefix).await {
        if key.contains(":action:") {
            let value: Option<String> = conn.get(&key).await.unwrap();
            if let Some(kind) = value.as_deref().and_then(|v| v.split_once(':')).map(|(kind, _)| kind.to_owned()) {
                let _: () = conn.set_ex(&key, format!("{kind}:1"), 3600).await.unwrap();
            }
        }
    }
}

/// Persists what the holder left, then sweeps and lets the consumer work
/// for a bounded number of steps (a delivery waiting on a busy mark is put
/// back again and again, so "until idle" would only end with the mark's
/// window).
async fn settle(env: &TestEnv) {
    let consumer = env.consumer().await;
    drain(&consumer).await;
    consumer.sweep().await.unwrap();
    for _ in 0..40 {
        consumer.step().await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_send_pancake_took_but_answered_with_an_error_reaches_the_customer_once() {
    let pancake = PancakeStub::start(|n| if n == 0 { Reply::LandThenFail(503) } else { Reply::Accept }).await;
    let env = with_pancake(&pancake, &[]).await;
    let (status, _, body) = env.post(&message("unsure", "m1")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["result"]["pancake_result"]["results"][0]["outcome_unknown"], true, "{body}");
    settle(&env).await;
    assert_eq!(pancake.delivered().len(), 1, "the customer got the reply once");
    assert_eq!(pancake.sends(), 1, "never resent: the look-up found it");
    assert_eq!(pancake.lookups(), 1);
    assert_eq!(statuses(&env, "send_message").await, ["sent"]);
}

#[tokio::test]
async fn a_send_of_unknown_outcome_is_not_looked_for_before_its_grace_ends() {
    let pancake = PancakeStub::start(|n| if n == 0 { Reply::LandThenFail(504) } else { Reply::Accept }).await;
    let env = with_pancake(&pancake, &[("UNKNOWN_OUTCOME_GRACE_MS", "30000")]).await;
    env.post(&message("grace", "m1")).await;
    settle(&env).await;
    // Pancake may still be working on it: no look-up, no resend, no failure counted.
    assert_eq!((pancake.lookups(), pancake.sends()), (0, 1));
    assert_eq!(env.count("SELECT COUNT(*) FROM dead_letters").await, 0);
    end_mark_windows(&env).await;
    settle(&env).await;
    assert_eq!((pancake.lookups(), pancake.sends(), pancake.delivered().len()), (1, 1, 1));
    assert_eq!(statuses(&env, "send_message").await, ["sent"]);
}

#[tokio::test]
async fn a_send_that_never_landed_is_resent_after_looking_and_one_refused_for_certain_without() {
    // 503 without landing: unknown, so the retry looks, finds nothing, sends.
    let pancake = PancakeStub::start(|n| if n == 0 { Reply::Refuse(503) } else { Reply::Accept }).await;
    let env = with_pancake(&pancake, &[]).await;
    env.post(&message("unlanded", "m1")).await;
    settle(&env).await;
    assert_eq!((pancake.delivered().len(), pancake.sends(), pancake.lookups()), (1, 2, 1));
    assert_eq!(statuses(&env, "send_message").await, ["sent"]);

    // 429 is definite (Pancake did nothing): resent without a look-up.
    let pancake = PancakeStub::start(|n| if n == 0 { Reply::Refuse(429) } else { Reply::Accept }).await;
    let env = with_pancake(&pancake, &[]).await;
    env.post(&message("refused", "m1")).await;
    settle(&env).await;
    assert_eq!((pancake.delivered().len(), pancake.sends(), pancake.lookups()), (1, 2, 0));
}

#[tokio::test]
async fn an_answer_whose_holder_died_mid_send_is_delivered_exactly_once() {
    // The send landed, then the holder was killed waiting for Pancake's reply.
    let pancake = PancakeStub::start(|n| if n == 0 { Reply::LandThenHang } else { Reply::Accept }).await;
    let env = with_pancake(&pancake, &[]).await;
    kill_holder_mid_call(&env, message("died-sent", "m1"), || pancake.sends() == 1).await;
    settle(&env).await;
    assert_eq!(pancake.sends(), 1, "nothing sent while the dead holder still owned the mark");
    end_mark_windows(&env).await;
    settle(&env).await;
    pancake.release();
    assert_eq!(pancake.delivered().len(), 1, "delivered once: found, not resent");
    assert_eq!(pancake.sends(), 1);
    assert_eq!(statuses(&env, "send_message").await, ["sent"]);
    let dead: i64 = env.count("SELECT COUNT(*) FROM dead_letters").await;
    assert_eq!(dead, 0, "waiting for the dead holder's mark never dead-letters");
}

#[tokio::test]
async fn an_answer_whose_holder_died_before_its_send_landed_is_delivered_exactly_once() {
    let pancake = PancakeStub::start(|n| if n == 0 { Reply::Hang } else { Reply::Accept }).await;
    let env = with_pancake(&pancake, &[]).await;
    kill_holder_mid_call(&env, message("died-unsent", "m1"), || pancake.sends() == 1).await;
    end_mark_windows(&env).await;
    settle(&env).await;
    pancake.release();
    assert_eq!(pancake.delivered().len(), 1, "delivered once, by the sweep, after looking");
    assert_eq!((pancake.sends(), pancake.lookups()), (2, 1));
    assert_eq!(statuses(&env, "send_message").await, ["sent"]);
}

/// An AI that answers with one `execute_api` call to `crm` with `method`.
async fn integration_ai(method: &'static str) -> Stub {
    Stub::start(move |_| async move {
        (
            StatusCode::OK,
            json!({"response_text": "Đã ghi nhận", "intent": "order", "confidence": 0.9,
                   "actions": [{"type": "execute_api", "data": {"integration": "crm", "method": method, "path": "/orders"}}]}),
        )
    })
    .await
}

async fn with_integration(ai: &Stub, crm: &Stub) -> TestEnv {
    let integrations = json!({"crm": {"base_url": crm.url(), "timeout_seconds": 5}}).to_string();
    TestEnv::with(
        &[
            ("AI_SERVICE_URL", &ai.url()),
            ("INTEGRATIONS", &integrations),
            ("CONSUMER_BLOCK_MS", "20"),
            ("CONSUMER_CLAIM_IDLE_MS", "50"),
            ("UNDELIVERED_AFTER_SECONDS", "0"),
        ],
        None,
    )
    .await
}

#[tokio::test]
async fn an_unsafe_integration_call_of_unknown_outcome_is_recorded_unknown_and_never_repeated() {
    let ai = integration_ai("POST").await;
    let crm = Stub::start(|_| async { (StatusCode::BAD_GATEWAY, json!({"error": "upstream timeout"})) }).await;
    let env = with_integration(&ai, &crm).await;
    let (_, _, body) = env.post(&message("order-5xx", "m1")).await;
    // The reply text comes first (not sent: Pancake delivery is off here).
    assert_eq!(body["result"]["pancake_result"]["results"][1]["status"], "unknown", "{body}");
    settle(&env).await;
    end_mark_windows(&env).await;
    settle(&env).await;
    assert_eq!(crm.requests().len(), 1, "a POST that may have run is never repeated");
    assert_eq!(statuses(&env, "execute_api").await, ["unknown"]);
}

#[tokio::test]
async fn an_unsafe_integration_call_whose_holder_died_is_not_run_again_and_a_safe_one_is() {
    for (method, calls, status) in [("POST", 1, "unknown"), ("GET", 2, "sent")] {
        let ai = integration_ai(method).await;
        let first = Arc::new(Notify::new());
        let (seen, gate) = (Arc::new(AtomicUsize::new(0)), first.clone());
        let counted = seen.clone();
        let crm = Stub::start(move |_| {
            let (n, gate) = (counted.fetch_add(1, Ordering::SeqCst), gate.clone());
            async move {
                if n == 0 {
                    // The holder dies while the call is in flight.
                    gate.notified().await;
                }
                (StatusCode::OK, json!({"order_id": 7}))
            }
        })
        .await;
        let env = with_integration(&ai, &crm).await;
        kill_holder_mid_call(&env, message(&format!("order-died-{method}"), "m1"), || seen.load(Ordering::SeqCst) == 1)
            .await;
        settle(&env).await;
        assert_eq!(seen.load(Ordering::SeqCst), 1, "{method}: nothing repeated while the holder's mark holds");
        end_mark_windows(&env).await;
        settle(&env).await;
        first.notify_waiters();
        assert_eq!(crm.requests().len(), calls, "{method}");
        assert_eq!(statuses(&env, "execute_api").await, [status], "{method}");
    }
}

#[tokio::test]
async fn echo_marks_outlive_every_retry_of_the_send() {
    let pancake = PancakeStub::start(|_| Reply::Accept).await;
    let env = with_pancake(&pancake, &[]).await;
    env.post(&message("echo-ttl", "m1")).await;
    let mut conn = env.redis().await;
    let echo = common::scan_keys(&mut conn, &env.prefix).await.into_iter().find(|k| k.contains(":echo:")).unwrap();
    let ttl: i64 = conn.ttl(&echo).await.unwrap();
    let settings = &env.app.config.consumer;
    let retry_window = settings.undelivered_after
        + settings.claim_idle * settings.max_deliveries as u32
        + env.app.config.delivery_window();
    assert!(ttl as u64 >= retry_window.as_secs(), "echo mark {ttl} s, retries run for {retry_window:?}");
}

fn incoming(conversation: &str, id: &str) -> IncomingMessage {
    IncomingMessage::parse(message(conversation, id).to_string().as_bytes(), 65_536).unwrap()
}

#[tokio::test]
async fn admit_re_sent_after_a_dropped_connection_answers_as_the_first_run_did() {
    let env = TestEnv::new().await;
    let store = &env.app.store;
    let first = incoming("resent", "m1");
    let job = serde_json::to_string(&PersistMessage::of(&first)).unwrap();
    let taken = store.admit_as(&first, &job, AdmitMode::Sync, "call-1").await.unwrap();
    let again = store.admit_as(&first, &job, AdmitMode::Sync, "call-1").await.unwrap();
    let (Admission::Acquired { lease: a, snapshot: s1 }, Admission::Acquired { lease: b, snapshot: s2 }) =
        (&taken, &again)
    else {
        panic!("{taken:?} then {again:?}");
    };
    assert_eq!((a, s1.owed.len()), (b, s2.owed.len()), "the same lock, fence and owed messages");
    // Another call with the same message is a duplicate, as before.
    let other = store.admit_as(&first, &job, AdmitMode::Sync, "call-2").await.unwrap();
    assert_eq!(other, Admission::Duplicate);
    // A message that found the lock held says `locked` again, not `duplicate`.
    let second = incoming("resent", "m2");
    let job2 = serde_json::to_string(&PersistMessage::of(&second)).unwrap();
    for _ in 0..2 {
        assert_eq!(store.admit_as(&second, &job2, AdmitMode::Sync, "call-3").await.unwrap(), Admission::Locked);
    }
    let persisted = env.stream().await.iter().filter(|(k, _, _)| k == "persist_message").count();
    assert_eq!(persisted, 2, "each message enqueued once");
}

#[tokio::test]
async fn complete_and_claim_re_sent_after_a_dropped_connection_answer_as_the_first_run_did() {
    let env = TestEnv::new().await;
    let store = &env.app.store;
    let conversation = cid("resent-complete");
    let first = incoming("resent-complete", "m1");
    let job = serde_json::to_string(&PersistMessage::of(&first)).unwrap();
    store.admit(&first, &job, AdmitMode::Defer { process_job: "{}" }).await.unwrap();
    let Claim::Acquired { lease, snapshot, .. } = store.claim_as(&conversation, "claim-1").await.unwrap() else {
        panic!("claimed");
    };
    let Claim::Acquired { lease: again, .. } = store.claim_as(&conversation, "claim-1").await.unwrap() else {
        panic!("a re-sent claim finds the lock its first run took");
    };
    assert_eq!(lease, again);
    let entry = switchboard::domain::ContextEntry {
        message_id: "bot:1".into(),
        sender_type: "bot".into(),
        content: "Dạ còn ạ".into(),
        timestamp: 2.0,
    };
    let record = switchboard::redis::AnswerRecord {
        context_entry: &entry,
        job: "{}",
        redrive_job: "{}",
        pause_bot: false,
        echo_texts: &[],
        send_marks: &[],
    };
    let done = store.complete(&conversation, &lease, snapshot.covered_seq(), false, &record).await.unwrap();
    let redone = store.complete(&conversation, &lease, snapshot.covered_seq(), false, &record).await.unwrap();
    assert_eq!(done, redone, "done twice, never `lost` (which would drop an answer owed delivery)");
    let answers = env.stream().await.iter().filter(|(k, _, _)| k == "persist_answer").count();
    assert_eq!(answers, 1, "recorded once");
}

#[tokio::test]
async fn a_retrying_action_whose_delivery_job_was_lost_is_queued_again_by_the_sweep() {
    let pancake = PancakeStub::start(|n| if n == 0 { Reply::Refuse(429) } else { Reply::Accept }).await;
    let env = with_pancake(&pancake, &[]).await;
    env.post(&message("lost-retry", "m1")).await;
    // The answer and its `retrying` action reach Postgres; the retry job is lost.
    let mut conn = env.redis().await;
    let shard = env.keys().shard(env.keys().shard_of(&cid("lost-retry")));
    let consumer = env.consumer().await;
    consumer.step().await.unwrap();
    let _: () = redis::cmd("DEL").arg(shard.jobs()).query_async(&mut conn).await.unwrap();
    drop(consumer);
    assert_eq!(statuses(&env, "send_message").await, ["retrying"]);
    env.app
        .db
        .get()
        .await
        .unwrap()
        .execute("UPDATE message_actions SET updated_at = now() - interval '2 hours'", &[])
        .await
        .unwrap();
    settle(&env).await;
    assert_eq!(pancake.delivered().len(), 1, "delivered by the job the sweep queued again");
    assert_eq!(statuses(&env, "send_message").await, ["sent"]);
}

#[tokio::test]
async fn an_earlier_send_of_the_same_words_is_not_taken_for_a_send_that_never_landed() {
    let pancake = PancakeStub::start(|n| if n == 1 { Reply::Refuse(503) } else { Reply::Accept }).await;
    let env = with_pancake(&pancake, &[]).await;
    env.post(&message("same-words", "m1")).await;
    drain(&env.consumer().await).await; // the first send and its Pancake id reach Postgres
    env.post(&message("same-words", "m2")).await;
    settle(&env).await;
    let delivered = pancake.delivered();
    assert_eq!(delivered.len(), 2, "the second reply reached the customer: {delivered:?}");
    assert_eq!(delivered[0], delivered[1], "the same words twice (the case under test)");
    assert_eq!(statuses(&env, "send_message").await, ["sent", "sent"]);
}
