//! Reconciliation (`POST /api/v1/admin/pages/{page_id}/reconcile`): with
//! the webhook "down", messages exist only in the Pancake stub's history;
//! reconciliation admits and persists them, answers only the recent ones,
//! lists the rest for the agents, and a second run changes nothing.
#![allow(clippy::unwrap_used)]

mod common;

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use bytes::Bytes;
use common::{Stub, TestEnv, drain, pancake::PancakeStub, pancake::Reply};
use http::{Method, Request, StatusCode};
use serde_json::{Value, json};

const ADMIN: &str = "test-admin-token";
const PAGE: &str = "page_1";
const SECRET: &str = "hook-secret";

/// An AI stand-in that records what it was asked.
async fn ai() -> (Stub, Arc<Mutex<Vec<Value>>>) {
    let asked: Arc<Mutex<Vec<Value>>> = Arc::default();
    let seen = asked.clone();
    let stub = Stub::start(move |request| {
        seen.lock().unwrap().push(request.body.clone());
        async {
            (StatusCode::OK, json!({"response_text": "Dạ shop còn hàng ạ", "intent": "stock", "confidence": 0.9}))
        }
    })
    .await;
    (stub, asked)
}

async fn env(pancake: &PancakeStub, ai: &Stub) -> TestEnv {
    env_with(pancake, ai, &[]).await
}

async fn env_with(pancake: &PancakeStub, ai: &Stub, extra: &[(&str, &str)]) -> TestEnv {
    let (url, tokens, ai) = (pancake.url(), format!("{PAGE}:page-one-token,page_2:other-token"), ai.url());
    let mut vars = vec![
        ("ADMIN_ACCESS_TOKEN", ADMIN),
        ("PANCAKE_WEBHOOK_SECRET", SECRET),
        ("PANCAKE_BASE_URL", url.as_str()),
        ("PANCAKE_PAGE_ACCESS_TOKENS", tokens.as_str()),
        ("AI_SERVICE_URL", ai.as_str()),
        ("CONSUMER_BLOCK_MS", "20"),
    ];
    vars.extend_from_slice(extra);
    TestEnv::with(&vars, None).await
}

async fn call(env: &TestEnv, method: Method, uri: &str, token: Option<&str>) -> (StatusCode, Value) {
    let mut request = Request::builder().method(method).uri(uri);
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    let response = switchboard::http::route(&env.app, request.body(Bytes::new()).unwrap()).await;
    (response.status(), serde_json::from_slice(response.body()).unwrap_or(Value::Null))
}

async fn reconcile(env: &TestEnv, query: &str) -> (StatusCode, Value) {
    call(env, Method::POST, &format!("/api/v1/admin/pages/{PAGE}/reconcile{query}"), Some(ADMIN)).await
}

/// A customer's webhook event for a message the stub's history also holds.
fn webhook_event(conversation: &str, customer: &str, id: &str, text: &str, secs_ago: i64) -> Value {
    let at = time::OffsetDateTime::now_utc() - time::Duration::seconds(secs_ago);
    let at = format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
        at.year(),
        u8::from(at.month()),
        at.day(),
        at.hour(),
        at.minute(),
        at.second()
    );
    json!({"event_type": "messaging", "page_id": PAGE, "data": {
        "conversation": {"id": conversation, "from": {"id": customer}},
        "message": {"id": id, "conversation_id": conversation, "message": text, "type": "INBOX",
                    "inserted_at": at, "from": {"id": customer}}}})
}

async fn outcomes(env: &TestEnv) -> Vec<(String, String)> {
    let client = env.app.db.get().await.unwrap();
    let rows = client.query("SELECT message_id, admit_outcome FROM messages ORDER BY message_id", &[]).await.unwrap();
    rows.iter().map(|r| (r.get(0), r.get(1))).collect()
}

#[tokio::test]
async fn reconciliation_admits_what_the_webhook_missed_answers_only_recent_messages_and_a_rerun_changes_nothing() {
    let pancake = PancakeStub::start(|_| Reply::Accept).await;
    let (ai, asked) = ai().await;
    let env = env(&pancake, &ai).await;
    // The webhook was down: these exist only in Pancake.
    pancake.write(PAGE, "c_recent", "cust_a", "m_recent", "Còn hàng không shop?", 120.0);
    pancake.write(PAGE, "c_old", "cust_b", "m_old", "Shop ơi, size M còn không?", 3.0 * 3600.0);
    pancake.write(PAGE, "c_human", "cust_c", "m_asked", "Giao hàng mấy ngày?", 2.0 * 3600.0);
    pancake.write(PAGE, "c_human", PAGE, "m_human", "Dạ 2-3 ngày ạ", 1.5 * 3600.0);
    // Outside the default window (the last 24 hours), and another page's.
    pancake.write(PAGE, "c_last_week", "cust_d", "m_last_week", "alo", 7.0 * 86_400.0);
    pancake.write("page_2", "c_other_page", "cust_e", "m_other_page", "alo", 60.0);

    let (code, body) = reconcile(&env, "").await;
    assert_eq!(code, StatusCode::OK, "{body}");
    let report = &body["report"];
    assert_eq!(report["conversations_seen"], 3, "{body}");
    assert_eq!(report["messages_found"], 4, "{body}");
    assert_eq!(report["admitted"], 4, "{body}");
    assert_eq!(report["answered"], 1, "{body}");
    assert_eq!(report["stored_unanswered"], 2, "{body}");
    assert_eq!(report["from_page"], 1, "{body}");
    assert_eq!(report["complete"], true, "{body}");
    // One conversation listing and one message page per conversation.
    assert_eq!(report["pages_fetched"], 4, "{body}");
    assert!(pancake.stub.requests().iter().all(|r| r.query.contains("page_access_token=page-one-token")));

    drain(&env.consumer().await).await;
    // Only the recent question reached the AI, and only it was answered.
    let asked: Vec<Value> = asked.lock().unwrap().clone();
    assert_eq!(asked.len(), 1, "{asked:?}");
    assert_eq!(asked[0]["conversation_id"], "c_recent");
    assert_eq!(pancake.sends(), 1);
    assert_eq!(pancake.landed.lock().unwrap()[0].conversation_id, "c_recent");
    assert_eq!(
        outcomes(&env).await,
        [
            ("m_asked".to_owned(), "unanswered".to_owned()),
            ("m_human".into(), "bot_paused".into()),
            ("m_old".into(), "unanswered".into()),
            ("m_recent".into(), "admitted".into()),
        ]
    );
    // The agents' list: the conversation nobody has answered (a human
    // answered c_human in Pancake).
    let (code, listed) = call(&env, Method::GET, "/api/v1/admin/conversations?status=unanswered", Some(ADMIN)).await;
    assert_eq!(code, StatusCode::OK, "{listed}");
    let ids: Vec<&str> =
        listed["conversations"].as_array().unwrap().iter().map(|c| c["conversation_id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["c_old"], "{listed}");

    // A second run finds nothing new (the bot's reply is known too) and changes nothing.
    let (pg_before, redis_before) = (env.pg_counts().await, env.redis_dump().await);
    let (code, body) = reconcile(&env, "").await;
    assert_eq!(code, StatusCode::OK, "{body}");
    assert_eq!(body["report"]["messages_found"], 0, "{body}");
    assert_eq!(body["report"]["admitted"], 0, "{body}");
    assert_eq!(env.redis_dump().await, redis_before);
    drain(&env.consumer().await).await;
    assert_eq!(env.pg_counts().await, pg_before);
    assert_eq!(asked.len(), 1);
    assert_eq!(pancake.sends(), 1);
}

#[tokio::test]
async fn messages_the_webhook_delivered_are_not_admitted_twice_and_the_gap_between_them_is_found() {
    let pancake = PancakeStub::start(|_| Reply::Accept).await;
    let (ai, asked) = ai().await;
    let env = env(&pancake, &ai).await;
    pancake.write(PAGE, "c1", "cust_a", "m1", "Shop ơi", 300.0);
    pancake.write(PAGE, "c1", "cust_a", "m2", "Áo này còn size M không?", 200.0);
    pancake.write(PAGE, "c1", "cust_a", "m3", "Trả lời em với", 100.0);
    // The webhook delivered m1, missed m2, and came back for m3.
    for (id, text, ago) in [("m1", "Shop ơi", 300), ("m3", "Trả lời em với", 100)] {
        let event = webhook_event("c1", "cust_a", id, text, ago);
        let (code, body) = env.post_webhook(Some(SECRET), event.to_string().as_bytes()).await;
        assert_eq!((code, body["status"].as_str()), (StatusCode::OK, Some("queued")), "{body}");
    }

    let (code, body) = reconcile(&env, "").await;
    assert_eq!(code, StatusCode::OK, "{body}");
    assert_eq!(body["report"]["messages_found"], 1, "{body}");
    assert_eq!(body["report"]["admitted"], 1, "{body}");
    assert_eq!(body["report"]["answered"], 1, "{body}");

    // The webhook delivering m2 late is a duplicate now.
    let event = webhook_event("c1", "cust_a", "m2", "Áo này còn size M không?", 200);
    let (_, late) = env.post_webhook(Some(SECRET), event.to_string().as_bytes()).await;
    assert_eq!(late["status"], "duplicate", "{late}");

    drain(&env.consumer().await).await;
    assert_eq!(env.count("SELECT COUNT(*) FROM messages").await, 3);
    assert_eq!(env.count("SELECT COUNT(DISTINCT message_id) FROM messages").await, 3);
    // One answer covers the three owed messages; nothing is answered twice.
    assert_eq!(asked.lock().unwrap().len(), 1);
    assert_eq!(pancake.sends(), 1);
}

#[tokio::test]
async fn a_human_reply_older_than_the_pause_does_not_keep_the_bot_from_answering_what_came_after() {
    let pancake = PancakeStub::start(|_| Reply::Accept).await;
    let (ai, asked) = ai().await;
    let env = env_with(&pancake, &ai, &[("BOT_PAUSE_TTL_SECONDS", "3600")]).await;
    pancake.write(PAGE, "c1", "cust_a", "m1", "Shop ơi", 2.0 * 3600.0);
    pancake.write(PAGE, "c1", PAGE, "m2", "Dạ em nghe ạ", 1.5 * 3600.0);
    pancake.write(PAGE, "c1", "cust_a", "m3", "Còn size M không?", 60.0);
    let (code, body) = reconcile(&env, "").await;
    assert_eq!(code, StatusCode::OK, "{body}");
    assert_eq!(
        (&body["report"]["answered"], &body["report"]["stored_unanswered"], &body["report"]["from_page"]),
        (&json!(1), &json!(1), &json!(1)),
        "{body}"
    );
    drain(&env.consumer().await).await;
    assert_eq!(asked.lock().unwrap().len(), 1);
    assert_eq!(pancake.sends(), 1);
    assert_eq!(
        outcomes(&env).await,
        [("m1".to_owned(), "unanswered".to_owned()), ("m2".into(), "stored".into()), ("m3".into(), "admitted".into())]
    );
}

#[tokio::test]
async fn a_bad_window_or_page_id_is_refused_naming_the_field_before_pancake_is_asked() {
    let pancake = PancakeStub::start(|_| Reply::Accept).await;
    let (ai, _) = ai().await;
    let env = env(&pancake, &ai).await;
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let month_and_a_day = now - 31 * 86_400;
    for (query, field) in [
        ("?since=yesterday".to_owned(), "since"),
        ("?until=1.5".into(), "until"),
        ("?since=-1".into(), "since"),
        (format!("?since={now}&until={}", now - 60), "until"),
        (format!("?since={}", now + 3600), "since"),
        (format!("?since={month_and_a_day}"), "since"),
    ] {
        let (code, body) = reconcile(&env, &query).await;
        assert_eq!(code, StatusCode::BAD_REQUEST, "{query}: {body}");
        assert_eq!(body["error"]["field"], field, "{query}: {body}");
    }
    let (code, body) = call(&env, Method::POST, "/api/v1/admin/pages/bad%01page/reconcile", Some(ADMIN)).await;
    assert_eq!((code, body["error"]["field"].as_str()), (StatusCode::BAD_REQUEST, Some("page_id")), "{body}");
    assert_eq!(pancake.listings(), 0);
}

#[tokio::test]
async fn reconciliation_refuses_a_missing_or_wrong_admin_token() {
    let pancake = PancakeStub::start(|_| Reply::Accept).await;
    let (ai, _) = ai().await;
    let env = env(&pancake, &ai).await;
    pancake.write(PAGE, "c1", "cust_a", "m1", "alo", 60.0);
    for token in [None, Some("not-the-admin-token"), Some(common::TOKEN)] {
        let (code, _) = call(&env, Method::POST, &format!("/api/v1/admin/pages/{PAGE}/reconcile"), token).await;
        assert_eq!(code, StatusCode::UNAUTHORIZED, "{token:?}");
    }
    assert_eq!(pancake.listings(), 0);
    assert_eq!(env.stream().await.len(), 0);
}

#[tokio::test]
async fn a_failing_pancake_is_a_503_a_refusing_one_a_502_and_no_body_carries_a_token() {
    let pancake = PancakeStub::start(|_| Reply::Accept).await;
    let (ai, _) = ai().await;
    let env = env(&pancake, &ai).await;
    pancake.write(PAGE, "c1", "cust_a", "m1", "alo", 60.0);
    for (status, expected) in [(500, StatusCode::SERVICE_UNAVAILABLE), (403, StatusCode::BAD_GATEWAY)] {
        pancake.fail_listings(Some(status));
        let (code, body) = reconcile(&env, "").await;
        assert_eq!(code, expected, "{body}");
        assert_eq!(body["error"]["message"].as_str().unwrap().split(' ').next(), Some("pancake"), "{body}");
        assert!(!body.to_string().contains("token"), "{body}");
    }
    assert_eq!(env.stream().await.len(), 0);
    // Pancake back: the same call does the work.
    pancake.fail_listings(None);
    let (code, body) = reconcile(&env, "").await;
    assert_eq!((code, body["report"]["admitted"].as_u64()), (StatusCode::OK, Some(1)), "{body}");

    // Without the page API configured, nothing can be walked: a 409 naming the setting.
    let unconfigured = env.app_with(&[("PANCAKE_BASE_URL", "")]);
    let request = Request::builder()
        .method(Method::POST)
        .uri(format!("/api/v1/admin/pages/{PAGE}/reconcile"))
        .header("authorization", format!("Bearer {ADMIN}"))
        .body(Bytes::new())
        .unwrap();
    let response = switchboard::http::route(&unconfigured, request).await;
    assert_eq!(response.status(), StatusCode::CONFLICT);
    assert!(String::from_utf8_lossy(response.body()).contains("PANCAKE_BASE_URL"));
}

#[tokio::test]
async fn a_walk_with_no_time_left_admits_nothing_and_says_where_to_resume() {
    let pancake = PancakeStub::start(|_| Reply::Accept).await;
    let (ai, _) = ai().await;
    let env = env(&pancake, &ai).await;
    pancake.write(PAGE, "c1", "cust_a", "m1", "alo", 60.0);
    // An invocation about to end: no Pancake call may start.
    let deadline = Some(Instant::now() + Duration::from_secs(1));
    let (code, body) = switchboard::deadline::within(deadline, reconcile(&env, "?since=1000&until=5000")).await;
    assert_eq!(code, StatusCode::OK, "{body}");
    assert_eq!(body["report"]["complete"], false, "{body}");
    assert_eq!(body["report"]["resume_until"], 5000, "{body}");
    assert_eq!(body["report"]["admitted"], 0, "{body}");
    assert_eq!(pancake.listings(), 0);
}
