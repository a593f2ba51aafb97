//! Pancake's own webhook: the real examples from `webhook.yaml`, echoes,
//! human takeover, versions, malformed payloads and replays.
#![allow(clippy::unwrap_used)]

mod common;

use common::{TestEnv, drain, pancake_stub};
use http::StatusCode;
use serde_json::{Value, json};

const SECRET: &str = "hook-secret";

/// The examples of `shared/reference/pancake/webhook.yaml`, copied verbatim
/// into `tests/fixtures/pancake/` so the suite runs from any checkout.
fn example(name: &str) -> Value {
    let path = format!("{}/tests/fixtures/pancake/webhook-{name}-example.json", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {path}: {e}"));
    serde_json::from_str(&text).unwrap()
}

/// A messaging event sent by the page (not the customer) in the example's conversation.
fn page_message(id: &str, text: &str) -> Value {
    let mut event = example("messaging");
    let page = event["page_id"].clone();
    event["data"]["message"]["id"] = json!(id);
    event["data"]["message"]["message"] = json!(text);
    event["data"]["message"]["from"] = json!({"id": page, "name": "nF store VN"});
    event
}

async fn env_with_pancake(pancake: &common::Stub) -> TestEnv {
    TestEnv::with(
        &[
            ("PANCAKE_WEBHOOK_SECRET", SECRET),
            ("PANCAKE_BASE_URL", &pancake.url()),
            ("PANCAKE_PAGE_ACCESS_TOKEN", "pt"),
            ("CONSUMER_BLOCK_MS", "20"),
        ],
        None,
    )
    .await
}

async fn post(env: &TestEnv, event: &Value) -> (StatusCode, Value) {
    env.post_webhook(Some(SECRET), event.to_string().as_bytes()).await
}

#[tokio::test]
async fn every_example_from_webhook_yaml_is_acknowledged() {
    let pancake = pancake_stub().await;
    let env = env_with_pancake(&pancake).await;
    for (name, status) in [
        ("messaging", "queued"),
        ("conversation", "assigned_bot_paused"),
        ("subscription", "ignored"),
        ("post", "ignored"),
        ("connect_status", "ignored"),
    ] {
        let (code, body) = post(&env, &example(name)).await;
        assert_eq!(code, StatusCode::OK, "{name}: {body}");
        assert_eq!(body["status"], status, "{name}: {body}");
    }
}

#[tokio::test]
async fn a_customer_message_is_answered_by_the_consumer_and_its_echo_is_ignored() {
    let pancake = pancake_stub().await;
    let env = env_with_pancake(&pancake).await;
    let event = example("messaging");
    let (_, body) = post(&env, &event).await;
    assert_eq!(body["status"], "queued");
    assert!(pancake.requests().is_empty(), "the webhook answers before any reply is sent");

    drain(&env.consumer().await).await;
    let sent = pancake.requests();
    assert_eq!(sent.len(), 1);
    assert_eq!(
        sent[0].path,
        "/pages/tt_6711731671916708866/conversations/tt_0:1:6570511458700967938:6711731671916708866/messages"
    );
    assert_eq!(sent[0].body["action"], "reply_inbox");
    assert_eq!(env.count("SELECT COUNT(*) FROM messages WHERE message_id = 'tt_7452304119832249857'").await, 1);
    assert_eq!(env.count("SELECT COUNT(*) FROM ai_responses").await, 1);

    // Pancake echoes our reply back as a page message with the id it returned.
    let reply_text = sent[0].body["message"].as_str().unwrap().to_owned();
    let (_, body) = post(&env, &page_message("pancake_msg_0", &reply_text)).await;
    assert_eq!(body["status"], "ignored_echo");
    // The bot is not paused by its own echo.
    let mut next = example("messaging");
    next["data"]["message"]["id"] = json!("tt_next");
    let (_, body) = post(&env, &next).await;
    assert_eq!(body["status"], "queued");
}

#[tokio::test]
async fn an_echo_arriving_before_pancakes_answer_is_recognised_by_its_text() {
    let pancake = pancake_stub().await;
    let env = env_with_pancake(&pancake).await;
    post(&env, &example("messaging")).await;
    drain(&env.consumer().await).await;
    let reply_text = pancake.requests()[0].body["message"].as_str().unwrap().to_owned();
    // An id we never recorded, but the text we just sent.
    let (_, body) = post(&env, &page_message("id_not_yet_known", &reply_text)).await;
    assert_eq!(body["status"], "ignored_echo");
}

#[tokio::test]
async fn a_page_message_not_sent_by_this_backend_pauses_the_bot() {
    let pancake = pancake_stub().await;
    let env = env_with_pancake(&pancake).await;
    let (_, body) = post(&env, &page_message("human_1", "Dạ em là nhân viên shop, em hỗ trợ chị ạ")).await;
    assert_eq!(body["status"], "human_replied_bot_paused");
    let (_, body) = post(&env, &example("messaging")).await;
    assert_eq!(body["status"], "bot_paused");
    drain(&env.consumer().await).await;
    assert!(pancake.requests().is_empty(), "no bot reply while a human handles the conversation");
    assert_eq!(env.count("SELECT COUNT(*) FROM messages").await, 2);
    assert_eq!(env.count("SELECT COUNT(*) FROM conversations WHERE bot_paused").await, 1);
}

#[tokio::test]
async fn a_conversation_event_with_a_lower_version_is_ignored() {
    let pancake = pancake_stub().await;
    let env = env_with_pancake(&pancake).await;
    let assigned = example("conversation");
    let (_, body) = post(&env, &assigned).await;
    assert_eq!(body["status"], "assigned_bot_paused");
    let mut older = assigned.clone();
    older["data"]["conversation"]["version"] = json!(305);
    older["data"]["conversation"]["assignee_ids"] = json!([]);
    let (_, body) = post(&env, &older).await;
    assert_eq!(body["status"], "ignored_stale_version");
    let mut unassigned = assigned.clone();
    unassigned["data"]["conversation"]["version"] = json!(307);
    unassigned["data"]["conversation"]["assignee_ids"] = json!([]);
    let (_, body) = post(&env, &unassigned).await;
    assert_eq!(body["status"], "unassigned_bot_resumed");
    drain(&env.consumer().await).await;
    let row = env.row("SELECT pancake_version, bot_paused, cardinality(assigned_to) FROM conversations").await;
    assert_eq!(row.get::<_, i64>(0), 307);
    assert!(!row.get::<_, bool>(1));
    assert_eq!(row.get::<_, i32>(2), 0);
}

#[tokio::test]
async fn each_malformed_payload_gets_400_and_nothing_is_stored() {
    let pancake = pancake_stub().await;
    let env = env_with_pancake(&pancake).await;
    let messaging = example("messaging");
    let conversation = example("conversation");
    let mut cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("not JSON", b"{\"event_type\":".to_vec(), "body"),
        ("no event_type", json!({"page_id": "p", "data": {}}).to_string().into_bytes(), "event_type"),
    ];
    let mut edit = |name: &'static str, base: &Value, pointer: &str, value: Option<Value>, field: &'static str| {
        let mut event = base.clone();
        let (parent, key) = pointer.rsplit_once('/').unwrap();
        let target = event.pointer_mut(parent).unwrap().as_object_mut().unwrap();
        match value {
            Some(v) => {
                target.insert(key.into(), v);
            }
            None => {
                target.remove(key);
            }
        }
        cases.push((name, event.to_string().into_bytes(), field));
    };
    edit("messaging without page_id", &messaging, "/page_id", None, "page_id");
    edit("messaging without message", &messaging, "/data/message", None, "data.message");
    edit("message without id", &messaging, "/data/message/id", None, "data.message.id");
    edit("message id not a string", &messaging, "/data/message/id", Some(json!({"x": 1})), "data.message.id");
    edit("message without sender", &messaging, "/data/message/from", None, "data.message.from.id");
    edit(
        "unparseable inserted_at",
        &messaging,
        "/data/message/inserted_at",
        Some(json!("yesterday")),
        "data.message.inserted_at",
    );
    edit(
        "conversation without version",
        &conversation,
        "/data/conversation/version",
        None,
        "data.conversation.version",
    );
    edit(
        "version not an integer",
        &conversation,
        "/data/conversation/version",
        Some(json!("306")),
        "data.conversation.version",
    );
    edit(
        "assignees not strings",
        &conversation,
        "/data/conversation/assignee_ids",
        Some(json!([1])),
        "data.conversation.assignee_ids",
    );
    edit("conversation without id", &conversation, "/data/conversation/id", None, "data.conversation.id");
    let redis_before = env.redis_dump().await;
    for (name, body, field) in cases {
        let (code, response) = env.post_webhook(Some(SECRET), &body).await;
        assert_eq!(code, StatusCode::BAD_REQUEST, "{name}: {response}");
        assert_eq!(response["error"]["field"], field, "{name}: {response}");
    }
    assert_eq!(env.redis_dump().await, redis_before, "a rejected webhook wrote to Redis");
}

#[tokio::test]
async fn a_missing_or_wrong_token_gets_401() {
    let pancake = pancake_stub().await;
    let env = env_with_pancake(&pancake).await;
    let body = example("messaging").to_string();
    assert_eq!(env.post_webhook(None, body.as_bytes()).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(env.post_webhook(Some("hook-secreT"), body.as_bytes()).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(env.stream().await.len(), 0);
}

#[tokio::test]
async fn a_webhook_log_replayed_three_times_stores_once_and_replies_once() {
    let pancake = pancake_stub().await;
    let env = env_with_pancake(&pancake).await;
    let mut log = Vec::new();
    for i in 0..5 {
        let mut event = example("messaging");
        event["data"]["message"]["id"] = json!(format!("tt_msg_{i}"));
        event["data"]["conversation"]["id"] = json!(format!("tt_conv_{i}"));
        event["data"]["message"]["conversation_id"] = json!(format!("tt_conv_{i}"));
        log.push(event);
    }
    let consumer = env.consumer().await;
    for _ in 0..3 {
        for event in &log {
            let (code, _) = post(&env, event).await;
            assert_eq!(code, StatusCode::OK);
        }
        drain(&consumer).await;
    }
    assert_eq!(env.count("SELECT COUNT(*) FROM messages").await, 5);
    assert_eq!(env.count("SELECT COUNT(*) FROM ai_responses").await, 5);
    assert_eq!(pancake.requests().len(), 5, "one reply per customer message");
}
