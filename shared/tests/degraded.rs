//! Degraded mode: Redis unreachable, the circuit breaker open, messages
//! answered from Postgres; both stores down; Redis coming back.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{TestEnv, message, redis_server::RedisServer};
use http::{HeaderMap, Method, Request, StatusCode};
use redis::AsyncCommands;
use serde_json::Value;
use switchboard::App;

const ADMIN: &str = "test-admin-token";
const NO_REDIS: &str = "redis://127.0.0.1:1/0";

async fn call(
    app: &App,
    method: Method,
    uri: &str,
    token: &str,
    body: Option<&Value>,
) -> (StatusCode, HeaderMap, Value) {
    let request = Request::builder().method(method).uri(uri).header("authorization", format!("Bearer {token}"));
    let body = body.map(|b| Bytes::from(b.to_string())).unwrap_or_default();
    let response = switchboard::http::route(app, request.body(body).unwrap()).await;
    let (status, headers) = (response.status(), response.headers().clone());
    (status, headers, serde_json::from_slice(response.body()).unwrap_or(Value::Null))
}

async fn post(app: &App, body: &Value) -> (StatusCode, HeaderMap, Value) {
    call(app, Method::POST, "/api/v1/enhanced-handle-message", common::TOKEN, Some(body)).await
}

/// Posts until the breaker has opened (each refused call counts one failure).
async fn trip(app: &App, body: &Value) -> (StatusCode, Value) {
    for _ in 0..10 {
        let (status, _, value) = post(app, body).await;
        if status != StatusCode::SERVICE_UNAVAILABLE || value["error"]["message"] != "redis is unavailable" {
            return (status, value);
        }
    }
    panic!("the breaker never opened");
}

#[tokio::test]
async fn with_redis_unreachable_messages_are_answered_from_postgres_once_the_breaker_opens() {
    let env =
        TestEnv::with(&[("REDIS_URL", NO_REDIS), ("REDIS_BREAKER_FAILURES", "2"), ("ADMIN_ACCESS_TOKEN", ADMIN)], None)
            .await;
    let first = message("deg", "m1", "xin chào shop", 1.0);
    // The first failures are refused with 503 (a failed call may have run in
    // Redis); from the second on the breaker is open.
    let (status, _, body) = post(&env.app, &first).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    let (status, body) = trip(&env.app, &first).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["result"]["status"], "completed", "{body}");
    assert_eq!(body["result"]["storage_backend"], "Postgres");
    assert!(!body["result"]["ai_response"]["response_text"].as_str().unwrap().is_empty());

    let row = env.row("SELECT admitted_via, admit_outcome FROM messages WHERE message_id = 'm1'").await;
    assert_eq!((row.get::<_, String>(0), row.get::<_, String>(1)), ("postgres".into(), "admitted".into()));
    assert_eq!(env.count("SELECT COUNT(*) FROM ai_responses WHERE 'm1' = ANY(covered_message_ids)").await, 1);
    assert!(env.count("SELECT fence FROM conversations WHERE conversation_id = 'deg'").await > 0);

    // A retry is a duplicate and changes nothing.
    let before = env.pg_counts().await;
    let (status, _, body) = post(&env.app, &first).await;
    assert_eq!((status, body["result"]["status"].clone()), (StatusCode::OK, "duplicate".into()), "{body}");
    assert_eq!(env.pg_counts().await, before);

    // A human reply pauses the bot here too.
    let mut agent = message("deg", "a1", "Dạ em là nhân viên shop", 2.0);
    agent["sender_type"] = "agent".into();
    let (_, _, body) = post(&env.app, &agent).await;
    assert_eq!(body["result"]["status"], "bot_paused", "{body}");
    let (_, _, body) = post(&env.app, &message("deg", "m2", "còn hàng không?", 3.0)).await;
    assert_eq!(body["result"]["status"], "bot_paused", "{body}");

    let (status, _, health) = call(&env.app, Method::GET, "/api/v1/admin/health", ADMIN, None).await;
    assert_eq!(status, StatusCode::OK, "{health}");
    assert_eq!(health["status"], "degraded");
    assert_eq!(health["storage_backend"], "Postgres (degraded mode)");
    assert_eq!(health["circuit_breaker"]["state"], "open");
}

/// An App whose breaker is already open, with one customer message already
/// in Postgres as `admitted_via` says (`redis`: the consumer stored it).
async fn degraded_with_stored(conversation: &str, id: &str, text: &str, admitted_via: &str) -> TestEnv {
    let env = TestEnv::with(&[("REDIS_URL", NO_REDIS), ("REDIS_BREAKER_FAILURES", "1")], None).await;
    trip(&env.app, &message("warmup", "w1", "hello", 1.0)).await;
    env.app
        .db
        .get()
        .await
        .unwrap()
        .execute(
            "INSERT INTO messages (conversation_id, message_id, sender_id, sender_type, content, timestamp, admitted_via)
             VALUES ($1, $2, 'user_1', 'user', $3, 1, $4)",
            &[&conversation, &id, &text, &admitted_via],
        )
        .await
        .unwrap();
    env
}

#[tokio::test]
async fn a_message_stored_in_degraded_mode_but_never_answered_is_answered_on_retry() {
    // As if the first attempt stored the message and then lost Postgres.
    let env = degraded_with_stored("half", "h1", "giá bao nhiêu?", "postgres").await;
    let (status, _, body) = post(&env.app, &message("half", "h1", "giá bao nhiêu?", 1.0)).await;
    assert_eq!((status, body["result"]["status"].clone()), (StatusCode::OK, "completed".into()), "{body}");
    assert_eq!(env.count("SELECT COUNT(*) FROM messages WHERE message_id = 'h1'").await, 1);
    assert_eq!(env.count("SELECT COUNT(*) FROM ai_responses WHERE 'h1' = ANY(covered_message_ids)").await, 1);
}

#[tokio::test]
async fn a_message_admitted_through_redis_is_never_answered_again_from_postgres() {
    // Stored by the consumer before the outage; its answer belongs to Redis' path.
    let env = degraded_with_stored("before", "b1", "xin chào", "redis").await;
    let (_, _, body) = post(&env.app, &message("before", "b1", "xin chào", 1.0)).await;
    assert_eq!(body["result"]["status"], "duplicate", "{body}");
    assert_eq!(env.count("SELECT COUNT(*) FROM ai_responses WHERE conversation_id = 'before'").await, 0);
}

#[tokio::test]
async fn with_redis_and_postgres_both_down_the_request_gets_503_and_nothing_is_written() {
    let env = TestEnv::new().await;
    let down = env.app_with(&[
        ("REDIS_URL", NO_REDIS),
        ("REDIS_BREAKER_FAILURES", "1"),
        ("DATABASE_URL", "postgres://postgres@127.0.0.1:1/test"),
    ]);
    let before = env.pg_counts().await;
    let body = message("both", "m1", "xin chào", 1.0);
    let _ = post(&down, &body).await; // opens the breaker
    let (status, headers, value) = post(&down, &body).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{value}");
    assert_eq!(headers.get("retry-after").unwrap(), "5");
    assert_eq!(value["error"]["message"], "storage (redis and postgres) is unavailable");
    assert_eq!(env.pg_counts().await, before);
}

#[tokio::test]
async fn when_redis_returns_the_breaker_closes_and_redis_learns_what_postgres_handled() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let redis_server = RedisServer::start(port).await;
    let url = format!("redis://127.0.0.1:{}/0", redis_server.port);
    let env = TestEnv::with(
        &[("REDIS_URL", &url), ("REDIS_BREAKER_FAILURES", "1"), ("REDIS_BREAKER_COOLDOWN_MS", "300")],
        None,
    )
    .await;
    let (_, _, body) = post(&env.app, &message("back", "m1", "xin chào", 1.0)).await;
    assert_eq!(body["result"]["status"], "completed", "{body}");
    let redis_fence = body["result"]["fence"].as_i64();

    drop(redis_server);
    let (status, body) = trip(&env.app, &message("back", "m2", "shop ở đâu?", 2.0)).await;
    assert_eq!((status, body["result"]["status"].clone()), (StatusCode::OK, "completed".into()), "{body}");
    let degraded_fence: i64 =
        env.row("SELECT fence FROM ai_responses WHERE 'm2' = ANY(covered_message_ids)").await.get(0);

    // Redis is back (empty, as after a failover to a fresh node).
    let redis_server = RedisServer::start(port).await;
    tokio::time::sleep(Duration::from_millis(400)).await; // the cooldown
    let (_, _, body) = post(&env.app, &message("back", "m2", "shop ở đâu?", 2.0)).await;
    assert_eq!(body["result"]["status"], "duplicate", "a retry of a degraded message is not answered twice: {body}");
    let (_, _, body) = post(&env.app, &message("back", "m3", "cảm ơn", 3.0)).await;
    assert_eq!(body["result"]["status"], "completed", "{body}");
    assert_eq!(env.app.store.breaker().state(), switchboard::redis::BreakerState::Closed);

    // The thread was rebuilt from Postgres: the degraded turn is in the context.
    let mut conn = redis::Client::open(url.as_str()).unwrap().get_multiplexed_async_connection().await.unwrap();
    let context_key =
        env.app.store.keys().conversation(&switchboard::domain::ConversationId::parse("back").unwrap()).context();
    let context: Vec<String> = conn.zrange(&context_key, 0, -1).await.unwrap();
    assert!(context.iter().any(|c| c.contains("\"m2\"")), "{context:?}");
    // Fencing numbers keep growing across both switches.
    let answers = env.count("SELECT COUNT(*) FROM ai_responses WHERE conversation_id = 'back'").await;
    assert_eq!(answers, 1, "only the degraded answer is in Postgres before the consumer runs");
    let fences: Vec<i64> = [redis_fence.unwrap_or(0), degraded_fence].to_vec();
    assert!(fences[1] > fences[0], "{fences:?}");
    drop(redis_server);
}

#[tokio::test]
async fn a_message_owed_in_redis_is_answered_once_whether_or_not_postgres_answered_it_meanwhile() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let redis_server = RedisServer::start(port).await;
    let url = format!("redis://127.0.0.1:{}/0", redis_server.port);
    let env = TestEnv::with(
        &[
            ("REDIS_URL", &url),
            ("REDIS_BREAKER_FAILURES", "1"),
            ("REDIS_BREAKER_COOLDOWN_MS", "300"),
            ("LOCK_TTL_MS", "1000"),
        ],
        None,
    )
    .await;
    // m1's admit ran in Redis (owed there, its lock held by a request that
    // died), but its reply never reached the sender.
    // So did k1's, and the consumer had already stored k1 in Postgres.
    let (m1, k1) = (message("lost", "m1", "xin chào", 1.0), message("kept", "k1", "xin chào", 1.0));
    for owed in [&m1, &k1] {
        let incoming = switchboard::domain::IncomingMessage::parse(owed.to_string().as_bytes(), 65_536).unwrap();
        let job = serde_json::to_string(&switchboard::jobs::PersistMessage::of(&incoming)).unwrap();
        let admitted = env.app.store.admit(&incoming, &job, switchboard::redis::AdmitMode::Sync).await.unwrap();
        assert!(matches!(admitted, switchboard::redis::Admission::Acquired { .. }));
    }
    let insert = "INSERT INTO messages (conversation_id, message_id, sender_id, sender_type, content, timestamp)
                  VALUES ('kept', 'k1', 'customer_1', 'user', 'xin chào', 1)";
    env.app.db.get().await.unwrap().execute(insert, &[]).await.unwrap();
    // Redis stops answering (paused clients time out): the breaker opens and
    // the sender's retry of m1 is answered from Postgres.
    let mut admin = redis::Client::open(url.as_str()).unwrap().get_multiplexed_async_connection().await.unwrap();
    let () = redis::cmd("CLIENT").arg("PAUSE").arg(4_000).arg("ALL").query_async(&mut admin).await.unwrap();
    let (status, body) = trip(&env.app, &m1).await;
    assert_eq!((status, body["result"]["status"].clone()), (StatusCode::OK, "completed".into()), "{body}");
    assert_eq!(body["result"]["storage_backend"], "Postgres");
    // k1's retry finds it stored by Redis' path: not answered here.
    let (_, _, body) = post(&env.app, &k1).await;
    assert_eq!(body["result"]["status"], "duplicate", "{body}");

    // Back: the next message is answered through Redis, covering itself only.
    tokio::time::sleep(Duration::from_millis(4_500)).await;
    let (_, _, body) = post(&env.app, &message("lost", "m2", "còn hàng không?", 2.0)).await;
    assert_eq!(body["result"]["status"], "completed", "{body}");
    assert_eq!(body["result"]["storage_backend"], "Redis");
    assert_eq!(body["result"]["covered_message_ids"], serde_json::json!(["m2"]), "m1 was answered already");
    assert_eq!(env.count("SELECT COUNT(*) FROM ai_responses WHERE 'm1' = ANY(covered_message_ids)").await, 1);
    // k1 is still owed in Redis (it was never answered): the next answer covers it.
    let (_, _, body) = post(&env.app, &message("kept", "k2", "còn hàng không?", 2.0)).await;
    assert_eq!(body["result"]["covered_message_ids"], serde_json::json!(["k1", "k2"]), "{body}");
    drop(redis_server);
}

#[tokio::test]
async fn an_unreachable_redis_cluster_opens_the_breaker_too() {
    let env = TestEnv::with(
        &[("REDIS_URL", "redis://127.0.0.1:1,redis://127.0.0.1:2"), ("REDIS_BREAKER_FAILURES", "1")],
        None,
    )
    .await;
    assert!(env.app.config.redis_cluster);
    let (status, body) = trip(&env.app, &message("cl", "m1", "xin chào", 1.0)).await;
    assert_eq!((status, body["result"]["status"].clone()), (StatusCode::OK, "completed".into()), "{body}");
    assert_eq!(body["result"]["storage_backend"], "Postgres");
}

#[tokio::test]
async fn the_sweep_never_answers_again_a_message_postgres_answered_while_redis_was_away() {
    let env = TestEnv::new().await;
    // Owed in Redis (admitted, its answer never recorded there)…
    let owed = message("swept", "s1", "xin chào", 1.0);
    let incoming = switchboard::domain::IncomingMessage::parse(owed.to_string().as_bytes(), 65_536).unwrap();
    let job = serde_json::to_string(&switchboard::jobs::PersistMessage::of(&incoming)).unwrap();
    let defer = switchboard::redis::AdmitMode::Defer { process_job: "{}" };
    let admitted = env.app.store.admit(&incoming, &job, defer).await.unwrap();
    assert_eq!(admitted, switchboard::redis::Admission::Queued);
    // …and answered by a degraded holder in some other process.
    let answer = "INSERT INTO ai_responses (id, conversation_id, fence, covered_message_ids, response_text, intent,
                                            confidence, model_used, processing_time_ms)
                  VALUES (gen_random_uuid(), 'swept', 1, '{s1}', 'Xin chào!', 'greeting', 0.9, 'embedded', 1)";
    env.app.db.get().await.unwrap().execute(answer, &[]).await.unwrap();

    let outcome = switchboard::pipeline::redrive(&env.app, &common::cid("swept"), None, None).await.unwrap();
    assert!(outcome.is_none(), "nothing left to answer: {outcome:?}");
    assert_eq!(env.count("SELECT COUNT(*) FROM ai_responses WHERE conversation_id = 'swept'").await, 1);
    let mut conn = env.redis().await;
    let still_owed: u64 = conn.zcard(env.keys().conversation(&common::cid("swept")).owed()).await.unwrap();
    assert_eq!(still_owed, 0);
    let lock: bool = conn.exists(env.keys().conversation(&common::cid("swept")).lock()).await.unwrap();
    assert!(!lock, "the lock was given back");
}

#[tokio::test]
async fn in_degraded_mode_a_rate_limited_message_asks_for_a_resend_which_is_answered_once_the_window_allows() {
    let env = TestEnv::with(
        &[
            ("REDIS_URL", NO_REDIS),
            ("REDIS_BREAKER_FAILURES", "1"),
            ("RATE_LIMIT_CONVERSATION_MAX", "1"),
            ("RATE_LIMIT_WINDOW_SECONDS", "1"),
        ],
        None,
    )
    .await;
    trip(&env.app, &message("warm", "w1", "hi", 1.0)).await;
    let (_, _, first) = post(&env.app, &message("rl", "m1", "xin chào", 1.0)).await;
    assert_eq!(first["result"]["status"], "completed", "{first}");
    let (status, _, limited) = post(&env.app, &message("rl", "m2", "giá bao nhiêu?", 2.0)).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{limited}");
    // No sweep runs while Redis is away: the sender is told to resend.
    assert_eq!(
        (limited["result"]["will_be_answered"].clone(), limited["result"]["resend"].clone()),
        (false.into(), true.into())
    );
    let (status, _, again) = post(&env.app, &message("rl", "m2", "giá bao nhiêu?", 2.0)).await;
    assert_eq!((status, again["result"]["status"].as_str()), (StatusCode::ACCEPTED, Some("rate_limited")), "{again}");
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let (_, _, resent) = post(&env.app, &message("rl", "m2", "giá bao nhiêu?", 2.0)).await;
    assert_eq!(resent["result"]["status"], "completed", "the resend after the window is answered: {resent}");
    assert_eq!(env.count("SELECT COUNT(*) FROM messages WHERE message_id = 'm2'").await, 1);
    assert_eq!(env.count("SELECT COUNT(*) FROM ai_responses WHERE 'm2' = ANY(covered_message_ids)").await, 1);
    let (_, _, late) = post(&env.app, &message("rl", "m2", "giá bao nhiêu?", 2.0)).await;
    assert_eq!(late["result"]["status"], "duplicate");
}

#[tokio::test]
async fn a_message_rate_limited_in_degraded_mode_is_answered_when_resent_after_redis_returns() {
    let port = RedisServer::spare_port();
    let server = RedisServer::start(port).await;
    let env = TestEnv::with(
        &[
            ("REDIS_URL", &server.url()),
            ("REDIS_BREAKER_FAILURES", "1"),
            ("REDIS_BREAKER_COOLDOWN_MS", "300"),
            ("RATE_LIMIT_CONVERSATION_MAX", "1"),
        ],
        None,
    )
    .await;
    drop(server);
    trip(&env.app, &message("rl-back", "m1", "xin chào", 1.0)).await;
    let (status, _, limited) = post(&env.app, &message("rl-back", "m2", "giá bao nhiêu?", 2.0)).await;
    assert_eq!((status, limited["result"]["resend"].clone()), (StatusCode::ACCEPTED, true.into()), "{limited}");
    // Redis is back: the resend is admitted there, not taken for a duplicate.
    let server = RedisServer::start(port).await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    let (_, _, resent) = post(&env.app, &message("rl-back", "m2", "giá bao nhiêu?", 2.0)).await;
    assert_eq!(resent["result"]["status"], "completed", "{resent}");
    assert_eq!(resent["result"]["storage_backend"], "Redis");
    drop(server);
}
