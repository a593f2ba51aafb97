//! Pancake's webhook while Redis is away (issue 11): Pancake never
//! redelivers a refused event, so the message is stored and answered from
//! Postgres and acknowledged `200`; the bot's own echoes are recognised
//! from Postgres; an assignment pauses the bot there. Both stores down:
//! `503`, nothing written.
#![allow(clippy::unwrap_used)]

mod common;

use common::{
    TestEnv,
    pancake::{PancakeStub, Reply},
};
use http::StatusCode;
use serde_json::{Value, json};
use switchboard::App;

const SECRET: &str = "hook-secret";
const NO_REDIS: &str = "redis://127.0.0.1:1/0";
const PAGE: &str = "page_9";

fn event(conversation: &str, id: &str, from: &str, text: &str) -> Value {
    json!({
        "event_type": "messaging",
        "page_id": PAGE,
        "data": {
            "conversation": {"id": conversation, "from": {"id": "customer_7"}},
            "message": {"id": id, "conversation_id": conversation, "message": text, "type": "INBOX",
                        "from": {"id": from}, "page_id": PAGE}
        }
    })
}

async fn webhook(app: &App, event: &Value) -> (StatusCode, Value) {
    common::webhook_to(app, SECRET, event).await
}

/// An App with Redis unreachable and its breaker already open.
async fn redis_down(pancake: &PancakeStub) -> TestEnv {
    let env = TestEnv::with(
        &[
            ("REDIS_URL", NO_REDIS),
            ("REDIS_BREAKER_FAILURES", "1"),
            ("PANCAKE_WEBHOOK_SECRET", SECRET),
            ("PANCAKE_BASE_URL", &pancake.url()),
            ("PANCAKE_PAGE_ACCESS_TOKEN", "pt"),
        ],
        None,
    )
    .await;
    // One failed Redis call opens the breaker (a conversation event's).
    let update = json!({"event_type": "conversation", "page_id": PAGE,
                        "data": {"conversation": {"id": "warmup", "version": 1, "assignee_ids": []}}});
    let _ = webhook(&env.app, &update).await;
    assert!(env.app.store.breaker().is_open());
    env
}

#[tokio::test]
async fn with_redis_down_a_customer_message_is_stored_answered_and_acknowledged() {
    let pancake = PancakeStub::start(|_| Reply::Accept).await;
    let env = redis_down(&pancake).await;
    let (status, body) = webhook(&env.app, &event("c1", "m1", "customer_7", "shop ơi còn áo size M không?")).await;
    assert_eq!((status, body["status"].as_str()), (StatusCode::OK, Some("answered")), "{body}");
    assert_eq!(pancake.delivered().len(), 1, "the customer got the answer");
    let row = env.row("SELECT admitted_via, admit_outcome FROM messages WHERE message_id = 'm1'").await;
    assert_eq!((row.get::<_, String>(0), row.get::<_, String>(1)), ("postgres".into(), "admitted".into()));
    assert_eq!(env.count("SELECT COUNT(*) FROM ai_responses WHERE 'm1' = ANY(covered_message_ids)").await, 1);
    // Pancake's retry of the same event changes nothing.
    let (_, again) = webhook(&env.app, &event("c1", "m1", "customer_7", "shop ơi còn áo size M không?")).await;
    assert_eq!(again["status"], "duplicate");
    assert_eq!(pancake.delivered().len(), 1);
}

#[tokio::test]
async fn with_redis_down_the_bots_own_echo_is_recognised_from_postgres_and_a_human_still_pauses_the_bot() {
    let pancake = PancakeStub::start(|_| Reply::Accept).await;
    let env = redis_down(&pancake).await;
    webhook(&env.app, &event("c2", "m1", "customer_7", "xin chào")).await;
    let sent = pancake.delivered()[0].clone();
    // The echo of the bot's reply, with Pancake's id for it.
    let (_, echo) = webhook(&env.app, &event("c2", "pancake_msg_0", PAGE, &sent)).await;
    assert_eq!(echo["status"], "ignored_echo", "{echo}");
    let (_, next) = webhook(&env.app, &event("c2", "m2", "customer_7", "giá bao nhiêu?")).await;
    assert_eq!(next["status"], "answered", "the echo did not pause the bot: {next}");
    // The same words again, from the page: the one sent message is accounted
    // for, so this is a human.
    let (_, human) = webhook(&env.app, &event("c2", "agent_1", PAGE, &sent)).await;
    assert_eq!(human["status"], "human_replied_bot_paused", "{human}");
    let (_, after) = webhook(&env.app, &event("c2", "m3", "customer_7", "alo?")).await;
    assert_eq!(after["status"], "bot_paused", "{after}");
    assert_eq!(pancake.delivered().len(), 2);
}

#[tokio::test]
async fn an_echo_of_a_send_made_while_redis_was_away_is_recognised_after_it_returns() {
    let pancake = PancakeStub::start(|_| Reply::Accept).await;
    let env = redis_down(&pancake).await;
    webhook(&env.app, &event("c3", "m1", "customer_7", "xin chào")).await;
    let sent = pancake.delivered()[0].clone();
    // Redis is back (another instance of the same deployment): it holds no
    // echo mark for that send, Postgres has the send.
    let up = env.app_with(&[("REDIS_URL", &common::redis_url())]);
    let (_, echo) = webhook(&up, &event("c3", "pancake_msg_0", PAGE, &sent)).await;
    assert_eq!(echo["status"], "ignored_echo", "{echo}");
}

#[tokio::test]
async fn with_redis_down_an_assignment_pauses_the_bot_in_postgres() {
    let pancake = PancakeStub::start(|_| Reply::Accept).await;
    let env = redis_down(&pancake).await;
    let assign = json!({"event_type": "conversation", "page_id": PAGE,
                        "data": {"conversation": {"id": "c4", "version": 3, "assignee_ids": ["staff_1"]}}});
    let (status, body) = webhook(&env.app, &assign).await;
    assert_eq!((status, body["status"].as_str()), (StatusCode::OK, Some("assigned_bot_paused")), "{body}");
    let (_, next) = webhook(&env.app, &event("c4", "m1", "customer_7", "alo")).await;
    assert_eq!(next["status"], "bot_paused", "{next}");
    assert!(pancake.delivered().is_empty());
}

#[tokio::test]
async fn with_redis_and_postgres_both_down_the_webhook_gets_503_and_nothing_is_written() {
    let pancake = PancakeStub::start(|_| Reply::Accept).await;
    let env = redis_down(&pancake).await;
    let down = env.app_with(&[("DATABASE_URL", "postgres://postgres@127.0.0.1:1/test")]);
    let before = env.pg_counts().await;
    let _ = webhook(&down, &event("c5", "m0", "customer_7", "hi")).await; // opens this app's breaker
    let (status, body) = webhook(&down, &event("c5", "m1", "customer_7", "hi")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    let (status, _) = webhook(&down, &event("c5", "e1", PAGE, "hi")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "an echo check that cannot run is not a human reply");
    assert_eq!(env.pg_counts().await, before);
}

#[tokio::test]
async fn an_assignment_taken_while_redis_was_away_pauses_the_bot_in_redis_once_it_returns() {
    use common::redis_server::RedisServer;
    let pancake = PancakeStub::start(|_| Reply::Accept).await;
    let port = RedisServer::spare_port();
    let server = RedisServer::start(port).await;
    let env = TestEnv::with(
        &[
            ("REDIS_URL", &server.url()),
            ("REDIS_BREAKER_FAILURES", "1"),
            ("REDIS_BREAKER_COOLDOWN_MS", "300"),
            ("PANCAKE_WEBHOOK_SECRET", SECRET),
            ("PANCAKE_BASE_URL", &pancake.url()),
            ("PANCAKE_PAGE_ACCESS_TOKEN", "pt"),
        ],
        None,
    )
    .await;
    drop(server);
    let assign = |version: i64| {
        json!({"event_type": "conversation", "page_id": PAGE,
               "data": {"conversation": {"id": "c6", "version": version, "assignee_ids": ["staff_1"]}}})
    };
    let _ = webhook(&env.app, &assign(1)).await; // opens the breaker
    let (_, body) = webhook(&env.app, &assign(2)).await;
    assert_eq!(body["status"], "assigned_bot_paused", "{body}");
    // Redis is back, empty: it learns the pause before it admits anything.
    let server = RedisServer::start(port).await;
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    let (_, next) = webhook(&env.app, &event("c6", "m1", "customer_7", "alo")).await;
    assert_eq!(next["status"], "bot_paused", "the bot must not talk over the assigned human: {next}");
    drop(server);
}
