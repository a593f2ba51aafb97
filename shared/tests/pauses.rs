//! One pause, with an explicit end, in both stores: Postgres'
//! `paused_until` is written for every pausing event (its time plus
//! `BOT_PAUSE_TTL_SECONDS`), honoured by degraded mode only while it is
//! ahead, copied into Redis once Redis is back, and cleared by a resume or
//! an unassignment.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{TestEnv, cid, drain, message, redis_server::RedisServer};
use http::{Method, Request, StatusCode};
use redis::AsyncCommands;
use serde_json::{Value, json};
use switchboard::{clock::now_epoch_seconds, domain::MessageId};

const ADMIN: &str = "test-admin-token";
const NO_REDIS: &str = "redis://127.0.0.1:1/0";

fn agent(conversation: &str, id: &str, text: &str, ts: f64) -> Value {
    let mut m = message(conversation, id, text, ts);
    m["sender_type"] = json!("agent");
    m
}

/// Posts until the breaker has opened (each refused call counts one failure).
async fn trip(env: &TestEnv, body: &Value) -> Value {
    for _ in 0..10 {
        let (status, _, value) = env.post(body).await;
        if status != StatusCode::SERVICE_UNAVAILABLE || value["error"]["message"] != "redis is unavailable" {
            return value;
        }
    }
    panic!("the breaker never opened");
}

/// Postgres' pause of `conversation`: (bot_paused, paused_until in epoch seconds).
async fn pg_pause(env: &TestEnv, conversation: &str) -> (bool, Option<f64>) {
    let row = env
        .row(&format!(
            "SELECT bot_paused, extract(epoch FROM paused_until)::float8 FROM conversations
              WHERE conversation_id = '{conversation}'"
        ))
        .await;
    (row.get(0), row.get(1))
}

/// Redis' pause of `conversation` (`paused_until_ms`, 0 when unset) and its state hash's TTL in seconds.
async fn redis_pause(env: &TestEnv, conversation: &str) -> (i64, i64) {
    let mut conn = env.redis().await;
    let state = env.keys().conversation(&cid(conversation)).state();
    let until: Option<i64> = conn.hget(&state, "paused_until_ms").await.unwrap();
    let ttl: i64 = conn.ttl(&state).await.unwrap();
    (until.unwrap_or(0), ttl)
}

#[tokio::test]
async fn in_degraded_mode_a_pause_past_its_ttl_is_over_even_while_messages_keep_arriving() {
    let env = TestEnv::with(
        &[("REDIS_URL", NO_REDIS), ("REDIS_BREAKER_FAILURES", "1"), ("BOT_PAUSE_TTL_SECONDS", "2")],
        None,
    )
    .await;
    trip(&env, &message("warmup", "w1", "hello", 1.0)).await;
    let (_, _, body) = env.post(&agent("dg", "a1", "Dạ em là nhân viên shop", 1.0)).await;
    assert_eq!(body["result"]["status"], "bot_paused", "{body}");
    // The agent's message paused the bot from when it was taken: now + TTL.
    let (paused, until) = pg_pause(&env, "dg").await;
    let taken: f64 =
        env.row("SELECT extract(epoch FROM created_at)::float8 FROM messages WHERE message_id = 'a1'").await.get(0);
    assert!(paused);
    assert!((until.unwrap() - (taken + 2.0)).abs() < 0.5, "{until:?} vs {taken}");

    tokio::time::sleep(Duration::from_millis(1_000)).await;
    let (_, _, body) = env.post(&message("dg", "m1", "còn hàng không?", 2.0)).await;
    assert_eq!(body["result"]["status"], "bot_paused", "the human's pause is still in force: {body}");

    tokio::time::sleep(Duration::from_millis(1_500)).await;
    // m1 moved `updated_at` 1.5 s ago, well within the TTL; the pause itself
    // ended half a second ago, and with it the human's claim.
    let moved =
        "SELECT COUNT(*) FROM conversations WHERE conversation_id = 'dg' AND updated_at > now() - interval '2 s'";
    assert_eq!(env.count(moved).await, 1);
    let (_, _, body) = env.post(&message("dg", "m2", "shop ơi?", 3.0)).await;
    assert_eq!(body["result"]["status"], "completed", "{body}");
    assert_eq!(body["result"]["storage_backend"], "Postgres");
    assert_eq!(env.count("SELECT COUNT(*) FROM ai_responses WHERE conversation_id = 'dg'").await, 1);
}

#[tokio::test]
async fn an_agent_message_taken_in_degraded_mode_keeps_the_bot_paused_in_redis_after_recovery() {
    let port = RedisServer::spare_port();
    let redis_server = RedisServer::start(port).await;
    let env = TestEnv::with(
        &[("REDIS_URL", &redis_server.url()), ("REDIS_BREAKER_FAILURES", "1"), ("REDIS_BREAKER_COOLDOWN_MS", "300")],
        None,
    )
    .await;
    let (_, _, body) = env.post(&message("taken", "m1", "xin chào", 1.0)).await;
    assert_eq!(body["result"]["status"], "completed", "{body}");

    // Redis goes away; a human answers the customer meanwhile.
    drop(redis_server);
    let body = trip(&env, &agent("taken", "a1", "Dạ em là nhân viên shop, em hỗ trợ ạ", 2.0)).await;
    assert_eq!(body["result"]["status"], "bot_paused", "{body}");
    assert_eq!(body["result"]["storage_backend"], "Postgres");
    let (_, pg_until) = pg_pause(&env, "taken").await;
    let pg_until_ms = (pg_until.unwrap() * 1000.0) as i64;

    // Redis is back, empty (a failover to a fresh node): it learns the pause
    // before it admits the customer's next message.
    let redis_server = RedisServer::start(port).await;
    tokio::time::sleep(Duration::from_millis(400)).await; // the cooldown
    let (_, _, body) = env.post(&message("taken", "m2", "vâng, cảm ơn", 3.0)).await;
    assert_eq!(body["result"]["status"], "bot_paused", "the bot must not talk over the human: {body}");
    assert_eq!(body["result"]["storage_backend"], "Redis");
    let (redis_until_ms, ttl) = redis_pause(&env, "taken").await;
    assert!((redis_until_ms - pg_until_ms).abs() <= 1, "{redis_until_ms} vs {pg_until_ms}");
    // The state hash outlives the pause (24 h), not just the context TTL (2 h).
    assert!(ttl > 86_400 - 60, "state TTL {ttl}");
    assert_eq!(env.count("SELECT COUNT(*) FROM ai_responses WHERE 'm2' = ANY(covered_message_ids)").await, 0);
    drop(redis_server);
}

#[tokio::test]
async fn restoring_a_pause_never_shortens_the_one_redis_has_and_a_pause_not_looked_up_stays_owed() {
    let env = TestEnv::new().await;
    let now_ms = (now_epoch_seconds() * 1000.0) as i64;
    let mut conn = env.redis().await;
    let longer = env.keys().conversation(&cid("longer")).state();
    let () = conn.hset(&longer, "paused_until_ms", now_ms + 36_000_000).await.unwrap();
    let () = conn.expire(&longer, 36_000).await.unwrap();
    let store = &env.app.store;
    for conversation in ["longer", "fresh", "later"] {
        store.remember_degraded(&cid(conversation), &MessageId::parse("m1").unwrap(), false);
    }
    // "later" was remembered after the pipeline's lookup: not in `pauses`.
    let pauses = [(cid("longer"), Some(now_ms + 3_600_000)), (cid("fresh"), Some(now_ms + 3_600_000))];
    store.restore_after_outage(&pauses).await;

    assert_eq!(redis_pause(&env, "longer").await.0, now_ms + 36_000_000, "never shortened");
    let (fresh_until, fresh_ttl) = redis_pause(&env, "fresh").await;
    assert_eq!(fresh_until, now_ms + 3_600_000);
    assert!((3_590..=3_600).contains(&fresh_ttl), "a new state hash lives as long as its pause: {fresh_ttl}");
    assert_eq!(store.pauses_to_restore(), vec![cid("later")]);
    // Its messages were restored all the same (dedupe marks).
    let seen: bool =
        conn.exists(env.keys().conversation(&cid("later")).seen(&MessageId::parse("m1").unwrap())).await.unwrap();
    assert!(seen);
}

async fn admin(env: &TestEnv, method: Method, uri: &str) -> (StatusCode, Value) {
    let request = Request::builder().method(method).uri(uri).header("authorization", format!("Bearer {ADMIN}"));
    let response = switchboard::http::route(&env.app, request.body(Bytes::new()).unwrap()).await;
    (response.status(), serde_json::from_slice(response.body()).unwrap_or(Value::Null))
}

#[tokio::test]
async fn an_operators_resume_clears_the_pause_in_postgres_and_in_redis() {
    let env = TestEnv::with(&[("ADMIN_ACCESS_TOKEN", ADMIN)], None).await;
    assert_eq!(env.post(&message("res", "m1", "xin chào", 1.0)).await.2["result"]["status"], "completed");
    assert_eq!(env.post(&agent("res", "a1", "để em hỗ trợ", 2.0)).await.2["result"]["status"], "bot_paused");
    drain(&env.consumer().await).await;
    let ttl = env.app.config.bot_pause_ttl.as_secs_f64();
    let (paused, until) = pg_pause(&env, "res").await;
    assert!(paused);
    assert!((until.unwrap() - (now_epoch_seconds() + ttl)).abs() < 60.0, "{until:?}");
    assert!(redis_pause(&env, "res").await.0 > 0);

    let (code, body) = admin(&env, Method::POST, "/api/v1/admin/conversations/res/resume").await;
    assert_eq!((code, body["bot_paused"].clone()), (StatusCode::OK, json!(false)), "{body}");
    assert_eq!(pg_pause(&env, "res").await, (false, None));
    assert_eq!(redis_pause(&env, "res").await.0, 0);
    assert_eq!(env.post(&message("res", "m2", "alo?", 3.0)).await.2["result"]["status"], "completed");
}

fn assignment(version: i64, assignees: &[&str]) -> Value {
    json!({"event_type": "conversation", "page_id": "page_1",
           "data": {"conversation": {"id": "asg", "assignee_ids": assignees, "version": version}}})
}

#[tokio::test]
async fn an_assignment_pauses_from_now_and_an_unassignment_clears_the_pause_in_postgres() {
    let env = TestEnv::with(&[("PANCAKE_WEBHOOK_SECRET", "hook")], None).await;
    let consumer = env.consumer().await;
    let (_, body) = env.post_webhook(Some("hook"), assignment(7, &["staff_1"]).to_string().as_bytes()).await;
    assert_eq!(body["status"], "assigned_bot_paused", "{body}");
    drain(&consumer).await;
    let (paused, until) = pg_pause(&env, "asg").await;
    let ttl = env.app.config.bot_pause_ttl.as_secs_f64();
    assert!(paused);
    assert!((until.unwrap() - (now_epoch_seconds() + ttl)).abs() < 60.0, "{until:?}");

    let (_, body) = env.post_webhook(Some("hook"), assignment(8, &[]).to_string().as_bytes()).await;
    assert_eq!(body["status"], "unassigned_bot_resumed", "{body}");
    drain(&consumer).await;
    assert_eq!(pg_pause(&env, "asg").await, (false, None));
}

#[tokio::test]
async fn the_consumer_dates_each_pause_from_its_event_not_from_when_it_writes() {
    let env = TestEnv::new().await;
    let ttl = env.app.config.bot_pause_ttl.as_secs_f64();
    let now = now_epoch_seconds();
    // Both written an hour late (a Postgres outage, a backlog).
    let (received_at, created_at) = (now - 3_600.0, now - 3_000.0);
    let agent_job = json!({"conversation_id": "late_agent", "message_id": "a1", "sender_id": "staff",
        "sender_type": "agent", "content": "để em hỗ trợ", "timestamp": received_at, "metadata": {},
        "page_id": "page_1", "received_at": received_at});
    env.xadd(&[("type", "persist_message"), ("outcome", "bot_paused"), ("payload", &agent_job.to_string())]).await;
    let transfer = json!({"response_id": uuid::Uuid::new_v4(), "conversation_id": "late_transfer", "fence": 1,
        "page_id": "page_1", "assistant_id": "default", "covered_message_ids": ["m1"],
        "ai_response": {"response_text": "Em chuyển chị sang nhân viên ạ", "intent": "handover", "confidence": 0.9,
                        "entities": {}, "processing_time_ms": 1.0, "model_used": "embedded"},
        "actions": [], "rejected_actions": [], "bot_paused": true, "created_at": created_at});
    env.xadd(&[("type", "persist_answer"), ("payload", &transfer.to_string())]).await;
    drain(&env.consumer().await).await;

    let (paused, until) = pg_pause(&env, "late_agent").await;
    assert!(paused);
    assert!((until.unwrap() - (received_at + ttl)).abs() < 0.01, "{until:?}");
    let (paused, until) = pg_pause(&env, "late_transfer").await;
    assert!(paused);
    assert!((until.unwrap() - (created_at + ttl)).abs() < 0.01, "{until:?}");
}
