//! A bot turn keeps its own time: the answer's `created_at` in Postgres is
//! the time its context entry got in Redis (after every message it
//! answered), not when the consumer or the degraded transaction wrote it,
//! so the history rebuilt from Postgres orders the conversation as it
//! happened.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{TestEnv, cid, drain, message};
use redis::AsyncCommands;
use serde_json::Value;
use switchboard::{clock::now_epoch_seconds, postgres::history};

/// The conversation's history rebuilt from Postgres, oldest first, as ids
/// (answers as `bot:<response id>`).
async fn history_ids(env: &TestEnv, conversation: &str) -> Vec<String> {
    let client = env.app.db.get().await.unwrap();
    let mut entries = history::load_history(&**client, &cid(conversation), 50, 0, &[]).await.unwrap();
    entries.sort_by(|a, b| a.timestamp.total_cmp(&b.timestamp));
    entries.into_iter().map(|e| e.message_id).collect()
}

fn bot(body: &Value) -> String {
    assert_eq!(body["result"]["status"], "completed", "{body}");
    format!("bot:{}", body["result"]["response_id"].as_str().unwrap())
}

#[tokio::test]
async fn an_answer_the_consumer_writes_after_later_messages_keeps_its_place_in_the_history() {
    let env = TestEnv::new().await;
    let start = now_epoch_seconds();
    let (_, _, first) = env.post(&message("late", "m1", "xin chào", start)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (_, _, second) = env.post(&message("late", "m2", "còn hàng không?", start + 0.3)).await;
    // Only now does the consumer run: m2 is stored in the same batch as the
    // answer to m1, and after that answer was given.
    tokio::time::sleep(Duration::from_millis(300)).await;
    drain(&env.consumer().await).await;
    assert_eq!(history_ids(&env, "late").await, ["m1".to_owned(), bot(&first), "m2".to_owned(), bot(&second)]);

    // Postgres and the Redis context agree on the answer's time.
    let mut conn = env.redis().await;
    let context: Vec<(String, f64)> =
        conn.zrange_withscores(env.keys().conversation(&cid("late")).context(), 0, -1).await.unwrap();
    let response_id = first["result"]["response_id"].as_str().unwrap();
    let in_redis = context.iter().find(|(entry, _)| entry.contains(response_id)).unwrap().1;
    let in_postgres: f64 = env
        .row(&format!("SELECT extract(epoch FROM created_at)::float8 FROM ai_responses WHERE id = '{response_id}'"))
        .await
        .get(0);
    assert!((in_redis - in_postgres).abs() < 0.001, "{in_redis} vs {in_postgres}");
}

#[tokio::test]
async fn an_answer_sorts_after_what_it_answered_when_the_senders_clock_runs_ahead() {
    let env = TestEnv::new().await;
    // The sender's clock is 5 s ahead of ours.
    let ahead = now_epoch_seconds() + 5.0;
    let (_, _, first) = env.post(&message("ahead", "m1", "xin chào", ahead)).await;
    let (_, _, second) = env.post(&message("ahead", "m2", "còn hàng không?", ahead + 0.5)).await;
    drain(&env.consumer().await).await;
    assert_eq!(history_ids(&env, "ahead").await, ["m1".to_owned(), bot(&first), "m2".to_owned(), bot(&second)]);
}

#[tokio::test]
async fn in_degraded_mode_an_answer_is_stored_at_its_own_time_not_the_transactions() {
    let env = TestEnv::with(&[("REDIS_URL", "redis://127.0.0.1:1/0"), ("REDIS_BREAKER_FAILURES", "1")], None).await;
    let ahead = now_epoch_seconds() + 5.0;
    let body = message("deg_ahead", "m1", "xin chào", ahead);
    // The first call fails and opens the breaker; the retry goes to Postgres.
    let mut first = Value::Null;
    for _ in 0..10 {
        first = env.post(&body).await.2;
        if first["error"]["message"] != "redis is unavailable" {
            break;
        }
    }
    let (_, _, second) = env.post(&message("deg_ahead", "m2", "còn hàng không?", ahead + 0.5)).await;
    assert_eq!(second["result"]["storage_backend"], "Postgres");
    assert_eq!(history_ids(&env, "deg_ahead").await, ["m1".to_owned(), bot(&first), "m2".to_owned(), bot(&second)]);
}
